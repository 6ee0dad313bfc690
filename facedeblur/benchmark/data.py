"""Benchmark sets, built deterministically from a folder of videos / stills / real images, and their manifest.

Four sets (see ``docs/benchmark.md`` for every convention):

* ``pravg`` -- predefined averaging (Chrysos et al. §5.2 "PrAvg"; CFMD-GAN §5.1.1): the data engine's windows
  (:func:`facedeblur.data.prepare_windows`, default :class:`~facedeblur.data.PrepConfig`): N in {5, 7, 9, 11, 13}
  consecutive de-duplicated frames, also at temporal stride 2 and 3 with the exposure span (N-1)*stride+1 <= 13,
  256x256 face crops, all N frames kept (FMR-ordered) for continuous models. Blurry = the uint8 mean of the
  frames. GT = the temporal centre frame (``gt="centre"``) or the FMR-middle frame (``gt="fmr-middle"``).
* ``vla`` -- variable-length averaging (Chrysos et al. §3.4): around evenly spaced centre frames, the window
  grows by one frame on each side while the three stop conditions of the paper hold, made concrete in
  :func:`vla_length`. GT = the centre frame.
* ``kernel`` -- sharp stills convolved with random camera-shake kernels of several sizes
  (:func:`trajectory_kernel`); the kernel is kept, so the "oracle PSF" baselines can use it.
* ``real`` -- real blurry images without ground truth (image files as they are; faces cropped from videos).

Every sample with ground truth carries its severity (the blurry input's PSNR against the GT) and bin. The
**manifest** lists every sample with a sha256 of its content (blurry, GT, frames, kernel); its own sha256 is
computed over the (id, sample sha256) list. Building twice from the same data and options gives the same
manifest; loading a sample re-checks its hash, and :func:`check_manifest` refuses a different manifest.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..data.blur import average_frames, shake_trajectory
from ..data.sources import IMAGE_EXTS, VIDEO_EXTS
from ..errors import DataError, InputError
from ..metrics.fidelity import psnr
from ..metrics.severity import severity_bin

__all__ = ["SETS", "BuildConfig", "Sources", "SampleData", "ManifestMismatchError", "find_sources", "build_manifest",
           "check_manifest", "write_manifest", "read_manifest", "load_sample", "content_sha256", "manifest_sha256",
           "vla_length", "trajectory_kernel", "convolve_kernel", "MANIFEST_FORMAT"]

SETS: tuple[str, ...] = ("pravg", "vla", "kernel", "real")
MANIFEST_FORMAT = "facedeblur-bench-manifest/1"


class ManifestMismatchError(DataError):
    """The samples built now (or loaded, or compared) differ from a manifest: results would not compare."""


@dataclass(frozen=True)
class BuildConfig:
    """How the benchmark sets are built. Everything that changes a sample is here (and in the engine's
    :class:`~facedeblur.data.PrepConfig`, made from ``face_size`` and ``seed``)."""

    sets: tuple[str, ...] = SETS
    split: str = "val"  # video sets: "val" / "train" identities of the data engine's split, or "all"
    gt: str = "centre"  # pravg: "centre" (temporal centre frame) or "fmr-middle"
    max_samples: int | None = None  # per set
    seed: int = 0
    face_size: int = 256
    vla_per_clip: int = 8
    vla_min_len: int = 5
    vla_max_len: int = 13
    vla_min_iou: float = 0.5
    vla_min_psnr: float = 22.0
    vla_min_straightness: float = 0.5
    vla_static_motion: float = 0.05
    kernel_count: int = 200
    kernel_sizes: tuple[int, ...] = (9, 15, 21, 27)
    stills_min_sharpness: float = 100.0
    real_frame_step: int = 25
    real_per_video: int = 8

    def __post_init__(self) -> None:
        bad = [s for s in self.sets if s not in SETS]
        if bad or not self.sets:
            raise InputError(f"unknown benchmark set(s) {bad or '(none)'}; choose from {', '.join(SETS)}")
        if self.split not in ("val", "train", "all"):
            raise InputError(f"split must be 'val', 'train' or 'all', not {self.split!r}")
        if self.gt not in ("centre", "fmr-middle"):
            raise InputError(f"gt must be 'centre' or 'fmr-middle', not {self.gt!r}")
        if self.max_samples is not None and self.max_samples < 1:
            raise InputError(f"max_samples must be >= 1, got {self.max_samples}")
        if self.vla_min_len < 3 or self.vla_min_len % 2 == 0 or self.vla_max_len % 2 == 0 \
                or self.vla_max_len < self.vla_min_len:
            raise InputError("VLA lengths must be odd with 3 <= min_len <= max_len")
        if any(k < 3 or k % 2 == 0 for k in self.kernel_sizes) or not self.kernel_sizes:
            raise InputError(f"kernel sizes must be odd and >= 3, got {self.kernel_sizes}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BuildConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise DataError(f"manifest build config has unknown keys {sorted(unknown)} "
                            "(written by a newer facedeblur?)")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def vla(self):
        """The VLA stop conditions (:class:`facedeblur.data.vla.VLAConfig`) of the ``vla_*`` fields."""
        from ..data.vla import VLAConfig

        return VLAConfig(min_len=self.vla_min_len, max_len=self.vla_max_len, min_iou=self.vla_min_iou,
                         min_psnr=self.vla_min_psnr, min_straightness=self.vla_min_straightness,
                         static_motion=self.vla_static_motion)

    def prep(self):
        """The data engine's configuration for the ``pravg`` windows (and the identity split of ``vla``)."""
        from ..data.engine import PrepConfig

        return PrepConfig(face_size=self.face_size, seed=self.seed)


@dataclass(frozen=True)
class Sources:
    """Where each set's source media are: ``data_dir`` (the engine's key for the pravg windows), videos, stills,
    real blurry media. None = not available."""

    data_dir: Path | None = None
    videos: Path | None = None
    stills: Path | None = None
    real: Path | None = None

    def for_set(self, name: str) -> Path | None:
        return {"pravg": self.videos, "vla": self.videos, "kernel": self.stills, "real": self.real}[name]

    def to_dict(self) -> dict[str, str | None]:
        return {k: None if v is None else str(v) for k, v in asdict(self).items()}


def find_sources(data_dir: str | os.PathLike | None = None, *, videos: str | os.PathLike | None = None,
                 stills: str | os.PathLike | None = None, real: str | os.PathLike | None = None) -> Sources:
    """Sources under ``data_dir``: ``videos/`` (else ``data_dir`` itself), ``faces/`` (stills) and ``real_lq/``
    (real blurry media), each overridable."""
    d = None if data_dir is None else Path(data_dir)
    if d is not None and not d.is_dir():
        raise DataError(f"data folder {d} does not exist or is not a folder")

    def sub(explicit: Any, name: str) -> Path | None:
        if explicit is not None:
            p = Path(explicit)
            if not p.is_dir():
                raise DataError(f"{name} folder {p} does not exist or is not a folder")
            return p
        if d is not None and (d / name).is_dir():
            return d / name
        return None

    v = sub(videos, "videos")
    if v is None and videos is None and d is not None and not any((d / n).is_dir() for n in ("faces", "real_lq")):
        v = d  # a plain folder of videos
    return Sources(d, v, sub(stills, "faces"), sub(real, "real_lq"))


# ------------------------------------------------------------------------------------------ samples and hashes


@dataclass
class SampleData:
    """A loaded sample: RGB uint8 blurry input, GT (None for real images), FMR-ordered sharp frames (video sets),
    the true blur kernel (kernel set)."""

    blurry: np.ndarray
    gt: np.ndarray | None = None
    frames: np.ndarray | None = None
    kernel: np.ndarray | None = None


def content_sha256(data: SampleData) -> str:
    """sha256 over every array of a sample (name, dtype, shape, bytes): the sample's identity in a manifest."""
    h = hashlib.sha256()
    for name in ("blurry", "gt", "frames", "kernel"):
        a = getattr(data, name)
        if a is None:
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def manifest_sha256(samples: Iterable[dict[str, Any]]) -> str:
    """sha256 of the ordered (id, content sha256) list: equal exactly when the samples are equal."""
    pairs = [[s["id"], s["sha256"]] for s in samples]
    return hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _square_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, then resize to ``size`` (area when shrinking, bicubic when enlarging)."""
    import cv2

    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    if s == size:
        return np.ascontiguousarray(img)
    interp = cv2.INTER_AREA if s > size else cv2.INTER_CUBIC
    return cv2.resize(img, (size, size), interpolation=interp)


def _sharpness(rgb: np.ndarray) -> float:
    from ..data.crops import sharpness

    return sharpness(rgb)


def trajectory_kernel(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random camera-shake blur kernel of odd ``size``: a smooth random-walk trajectory of 8*size points
    (:func:`facedeblur.data.shake_trajectory`, no rotation) centred on its centroid, scaled so its farthest
    point is (size-1)/2 - 1 px from the centre, splatted bilinearly into a size x size grid and normalised. The
    centroid at the centre means the blurry image is not shifted against the sharp one."""
    from .baselines import _splat

    if size < 3 or size % 2 == 0:
        raise InputError(f"kernel size must be odd and >= 3, got {size}")
    path = shake_trajectory(rng, 8 * size, 1.0, max_angle_deg=0.0)[:, :2].astype(np.float64)
    path -= path.mean(axis=0)
    r = float(np.abs(path).max())
    path *= ((size - 1) / 2 - 1) / max(r, 1e-9)
    k = np.zeros((size, size), dtype=np.float64)
    c = size // 2
    _splat(k, c + path[:, 0], c + path[:, 1])
    return k / k.sum()


def convolve_kernel(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``img`` (uint8 RGB) convolved with ``kernel`` (true convolution, reflect-101 borders), rounded to uint8."""
    import cv2

    out = cv2.filter2D(img.astype(np.float32), -1, np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32),
                       borderType=cv2.BORDER_REFLECT_101)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _kernel_data(source: dict[str, Any]) -> SampleData:
    sharp = _square_resize(_read_rgb(Path(source["path"])), int(source["face_size"]))
    kernel = trajectory_kernel(np.random.default_rng(source["seed"]), int(source["size"]))
    return SampleData(convolve_kernel(sharp, kernel), sharp, None, kernel)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise DataError(f"benchmark sample file {path} is missing; build the sets again (same options) to restore it")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_sample(sample: dict[str, Any], verify: bool = True) -> SampleData:
    """The arrays of a manifest sample; with ``verify`` the content sha256 must match the manifest's."""
    src = sample["source"]
    kind = src["kind"]
    if kind == "window":
        frames = np.load(src["path"], allow_pickle=False)
        data = SampleData(average_frames(frames), frames[int(sample["gt_index"])], frames, None)
    elif kind == "npz":
        z = _load_npz(Path(src["path"]))
        if "frames" in z:
            frames = z["frames"]
            data = SampleData(average_frames(frames), frames[int(sample["gt_index"])], frames, None)
        else:
            data = SampleData(z["blurry"], z.get("gt"), None, z.get("kernel"))
    elif kind == "kernel":
        data = _kernel_data(src)
    elif kind == "image":
        data = SampleData(_square_resize(_read_rgb(Path(src["path"])), int(src["face_size"])))
    else:
        raise DataError(f"sample {sample.get('id')!r}: unknown source kind {kind!r}")
    if verify:
        got = content_sha256(data)
        if got != sample["sha256"]:
            raise ManifestMismatchError(
                f"sample {sample['id']!r} differs from the manifest (sha256 {got[:12]} vs {sample['sha256'][:12]}): "
                f"its source {src.get('path')} changed since the manifest was written; results would not compare. "
                "Rebuild the sets into a new --out folder, or restore the original data")
    return data


def _record(sample_id: str, set_name: str, data: SampleData, source: dict[str, Any], **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": sample_id, "set": set_name}
    if data.gt is not None:
        sev = psnr(data.blurry, data.gt)
        rec["severity"] = sev
        rec["bin"] = severity_bin(sev)
    else:
        rec["severity"] = None
        rec["bin"] = None
    rec.update(extra)
    rec["sha256"] = content_sha256(data)
    rec["source"] = source
    return rec


def _subsample(items: list[Any], k: int | None, seed: int, salt: int) -> list[Any]:
    """The first ``k`` of a seeded permutation, returned in their original order (all when k is None)."""
    if k is None or len(items) <= k:
        return list(items)
    pick = np.random.default_rng([seed, salt]).permutation(len(items))[:k]
    return [items[i] for i in sorted(pick)]


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz")
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_json_atomic(path: Path, obj: Any) -> None:
    from .plots import write_text_atomic

    write_text_atomic(path, json.dumps(obj, indent=1, default=str))


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _in_split(identity: str, cfg: BuildConfig) -> bool:
    from ..data.engine import _is_val

    if cfg.split == "all":
        return True
    return _is_val(identity, cfg.prep()) == (cfg.split == "val")


# ------------------------------------------------------------------------------------------ pravg


def _engine_windows(sources: Sources, cfg: BuildConfig, cache_dir: str | os.PathLike | None, detector: Any,
                    progress: bool) -> tuple[Path, list[dict[str, Any]]]:
    """The data engine's prepared windows, read without touching the cache when it is complete."""
    from ..data.engine import default_cache_dir, load_manifest, prepare_windows
    from ..data.sources import find_clips

    prep = cfg.prep()
    assert sources.videos is not None
    engine_dir = sources.data_dir if (sources.data_dir is not None and sources.videos == sources.data_dir / "videos") \
        else sources.videos
    out = Path(cache_dir or default_cache_dir()) / f"windows-{prep.digest()}"
    manifest = out / "manifest.json"
    if manifest.exists():
        try:
            meta = json.loads(manifest.read_text())
        except ValueError:
            meta = {}
        same = meta.get("config") == json.loads(json.dumps(asdict(prep))) \
            and meta.get("data_dir") == str(Path(engine_dir).resolve())
        if same and all((out / "clips" / f"{c.name}.json").exists() for c in find_clips(sources.videos)):
            return load_manifest(manifest)
    return load_manifest(prepare_windows(engine_dir, cache_dir, prep, detector=detector, progress=progress))


def build_pravg(sources: Sources, cfg: BuildConfig, cache_dir: str | os.PathLike | None = None,
                detector: Any = None, progress: bool = True) -> list[dict[str, Any]]:
    """The ``pravg`` samples: the engine's windows of the chosen split (see the module docstring)."""
    from tqdm.auto import tqdm

    root, windows = _engine_windows(sources, cfg, cache_dir, detector, progress)
    wins = _subsample([w for w in windows if _in_split(w["identity"], cfg)], cfg.max_samples, cfg.seed, 1)
    out = []
    for w in tqdm(wins, desc="pravg samples", unit="window", disable=not progress):
        path = root / w["file"]
        frames = np.load(path, allow_pickle=False)
        n = len(frames)
        gt_index = list(w["fmr_order"]).index((n - 1) // 2) if cfg.gt == "centre" else (n - 1) // 2
        data = SampleData(average_frames(frames), frames[gt_index], frames, None)
        out.append(_record(f"pravg/{Path(w['file']).stem}", "pravg", data, {"kind": "window", "path": str(path)},
                           clip=w["clip"], identity=w["identity"], n=n, stride=w["stride"],
                           start_frame=w["start_frame"], fmr_order=w["fmr_order"], gt_index=gt_index))
    return out


# ------------------------------------------------------------------------------------------ VLA


def vla_length(crops: list[np.ndarray | None], boxes: list[tuple[float, float, float, float] | None],
               cfg: BuildConfig = BuildConfig(), points: np.ndarray | None = None) -> tuple[int, str]:
    """:func:`facedeblur.data.vla.vla_length` with the stop conditions of a :class:`BuildConfig` (its ``vla_*``
    fields)."""
    from ..data.vla import vla_length as _vla_length

    return _vla_length(crops, boxes, cfg.vla(), points)


def _vla_clip(clip: Any, out: Path, cfg: BuildConfig, detector: Any) -> list[dict[str, Any]]:
    from ..data.vla import clip_vla_windows

    prep = cfg.prep()
    records: list[dict[str, Any]] = []
    for win in clip_vla_windows(clip, detector, cfg.vla(), per_clip=cfg.vla_per_clip, face_size=cfg.face_size,
                                enlarge=prep.enlarge, min_sharpness=prep.min_sharpness,
                                duplicate_threshold=prep.duplicate_threshold):
        h = (win.length - 1) // 2
        gt_index = win.centre_index if cfg.gt == "centre" else h
        path = out / f"{clip.name}_{win.centre_frame:06d}.npz"
        _save_npz(path, frames=win.frames)
        data = SampleData(average_frames(win.frames), win.frames[gt_index], win.frames, None)
        records.append(_record(f"vla/{clip.name}_{win.centre_frame:06d}", "vla", data, {"kind": "npz", "path": str(path)},
                               clip=clip.name, identity=clip.identity, n=win.length, stride=1,
                               start_frame=win.start_frame, centre_frame=win.centre_frame, fmr_order=win.order,
                               gt_index=gt_index, stop=win.stop))
    return records


def build_vla(sources: Sources, cfg: BuildConfig, bench_cache: str | os.PathLike, detector: Any = None,
              progress: bool = True) -> list[dict[str, Any]]:
    """The ``vla`` samples: up to ``vla_per_clip`` per clip of the split, clips in a seeded order; with
    ``max_samples`` the first that many (clips are processed until there are enough). Cached per clip."""
    from tqdm.auto import tqdm

    from ..data.landmarks import default_detector
    from ..data.sources import find_clips

    assert sources.videos is not None
    clips = [c for c in find_clips(sources.videos) if _in_split(c.identity, cfg)]
    clips = [clips[i] for i in np.random.default_rng([cfg.seed, 2]).permutation(len(clips))]
    keys = {k: v for k, v in cfg.to_dict().items() if k.startswith("vla_") or k in ("seed", "face_size", "gt")}
    out = Path(bench_cache) / f"vla-{_digest({'cfg': keys, 'videos': str(Path(sources.videos).resolve())})}"
    samples: list[dict[str, Any]] = []
    bar = tqdm(clips, desc="vla samples", unit="clip", disable=not progress)
    for clip in bar:
        done = out / "clips" / f"{clip.name}.json"
        if done.exists():
            recs = json.loads(done.read_text())
        else:
            bar.set_postfix_str(clip.name)
            detector = detector or default_detector()
            recs = _vla_clip(clip, out, cfg, detector)
            _write_json_atomic(done, recs)
        samples += recs
        if cfg.max_samples is not None and len(samples) >= cfg.max_samples:
            break
    bar.close()
    return samples[:cfg.max_samples] if cfg.max_samples is not None else samples


# ------------------------------------------------------------------------------------------ kernel


def _files(root: Path, exts: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def build_kernel(sources: Sources, cfg: BuildConfig, progress: bool = True) -> list[dict[str, Any]]:
    """The ``kernel`` samples: stills in a seeded order whose Laplacian variance (after resizing to the face
    size) is >= ``stills_min_sharpness``, each blurred with a new random kernel; sizes cycle through
    ``kernel_sizes``. ``kernel_count`` samples (or ``max_samples`` if smaller).

    ``split`` "val" / "train" keeps the stills of that side of the data engine's still split
    (:func:`facedeblur.data.strong.still_is_val`, by file name), so models trained by ``facedeblur train`` on
    the train side are scored on stills they never saw; "all" keeps every still (a held-out test folder)."""
    from tqdm.auto import tqdm

    from ..data.strong import still_is_val

    assert sources.stills is not None
    paths = _files(sources.stills, IMAGE_EXTS)
    if cfg.split != "all":
        prep = cfg.prep()
        paths = [p for p in paths if still_is_val(p.name, prep.seed, prep.val_percent) == (cfg.split == "val")]
    if not paths:
        raise DataError(f"no still images ({', '.join(IMAGE_EXTS)}) under {sources.stills}")
    count = min(cfg.kernel_count, cfg.max_samples or cfg.kernel_count)
    samples: list[dict[str, Any]] = []
    bar = tqdm(total=count, desc="kernel samples", unit="img", disable=not progress)
    for i in np.random.default_rng([cfg.seed, 3]).permutation(len(paths)):
        if len(samples) >= count:
            break
        sharp = _square_resize(_read_rgb(paths[i]), cfg.face_size)
        if _sharpness(sharp) < cfg.stills_min_sharpness:
            continue
        k = len(samples)
        size = cfg.kernel_sizes[k % len(cfg.kernel_sizes)]
        source = {"kind": "kernel", "path": str(paths[i]), "size": size, "seed": [cfg.seed, 4, k],
                  "face_size": cfg.face_size}
        rel = paths[i].relative_to(sources.stills).as_posix()
        samples.append(_record(f"kernel/{rel}#k{size}", "kernel", _kernel_data(source), source, kernel_size=size))
        bar.update(1)
    bar.close()
    return samples


# ------------------------------------------------------------------------------------------ real


def build_real(sources: Sources, cfg: BuildConfig, bench_cache: str | os.PathLike, detector: Any = None,
               progress: bool = True) -> list[dict[str, Any]]:
    """The ``real`` samples (no GT): image files (centre-cropped square, resized to the face size) and faces
    cropped from videos (every ``real_frame_step``-th frame with a detected face, at most ``real_per_video``
    per video; crop = landmark box enlarged 0.5x on each side, squared, as the data engine crops)."""
    from tqdm.auto import tqdm

    from ..data.crops import crop as _crop, crop_box as _crop_box
    from ..data.landmarks import default_detector
    from ..data.sources import iter_frames

    assert sources.real is not None
    root = sources.real
    samples: list[dict[str, Any]] = []
    for p in _files(root, IMAGE_EXTS):
        source = {"kind": "image", "path": str(p), "face_size": cfg.face_size}
        data = SampleData(_square_resize(_read_rgb(p), cfg.face_size))
        samples.append(_record(f"real/{p.relative_to(root).as_posix()}", "real", data, source))
    videos = _files(root, VIDEO_EXTS)
    key = {"root": str(root.resolve()), "step": cfg.real_frame_step, "per": cfg.real_per_video, "size": cfg.face_size}
    out = Path(bench_cache) / f"real-{_digest(key)}"
    prep = cfg.prep()
    for v in tqdm(videos, desc="real video faces", unit="video", disable=not progress):
        rel = v.relative_to(root).as_posix()
        done = out / (rel.replace("/", "__") + ".json")
        if done.exists():
            samples += json.loads(done.read_text())
            continue
        detector = detector or default_detector()
        recs = []
        for i, rgb in enumerate(iter_frames(v)):
            if len(recs) >= cfg.real_per_video:
                break
            if i % cfg.real_frame_step:
                continue
            found = detector.detect(rgb)
            if not found:
                continue
            cx, cy, side = _crop_box(np.array([found[0].landmark_box()]), prep.enlarge)
            crop = _crop(rgb, cx, cy, side, cfg.face_size)
            path = out / f"{rel.replace('/', '__')}_{i:06d}.npz"
            _save_npz(path, blurry=crop)
            recs.append(_record(f"real/{rel}@{i:06d}", "real", SampleData(crop), {"kind": "npz", "path": str(path)},
                                frame=i))
        _write_json_atomic(done, recs)
        samples += recs
    return _subsample(samples, cfg.max_samples, cfg.seed, 5)


# ------------------------------------------------------------------------------------------ manifest


def build_manifest(sources: Sources, cfg: BuildConfig = BuildConfig(), *, cache_dir: str | os.PathLike | None = None,
                   bench_cache: str | os.PathLike | None = None, detector: Any = None, progress: bool = True,
                   strict: bool = False) -> dict[str, Any]:
    """Build every set of ``cfg.sets`` (a set without a source is skipped with a note, or an error if
    ``strict``) and return the manifest (a JSON-able dict; see the module docstring).

    ``cache_dir``: the data engine's window cache (read when complete, else prepared there).
    ``bench_cache``: where the VLA windows and real-video crops are stored (default ``<cache_dir>/bench``).
    """
    from ..data.engine import default_cache_dir

    bench_cache = Path(bench_cache) if bench_cache is not None else Path(cache_dir or default_cache_dir()) / "bench"
    samples: list[dict[str, Any]] = []
    notes: list[str] = []
    counts: dict[str, int] = {}
    for name in cfg.sets:
        if sources.for_set(name) is None:
            folder = {"pravg": "videos", "vla": "videos", "kernel": "faces", "real": "real_lq"}[name]
            msg = f"{name}: no source folder ({folder} under the data folder)"
            if strict:
                raise DataError(f"cannot build benchmark set {msg}; pass its folder explicitly")
            notes.append(msg + "; skipped")
            continue
        if name == "pravg":
            got = build_pravg(sources, cfg, cache_dir, detector, progress)
        elif name == "vla":
            got = build_vla(sources, cfg, bench_cache, detector, progress)
        elif name == "kernel":
            got = build_kernel(sources, cfg, progress)
        else:
            got = build_real(sources, cfg, bench_cache, detector, progress)
        counts[name] = len(got)
        if not got:
            msg = f"{name}: no sample passed the filters (see docs/benchmark.md: faces found, sharpness thresholds)"
            if strict:
                raise DataError(f"benchmark set {msg}")
            notes.append(msg)
        samples += got
    if not samples:
        raise DataError("no benchmark samples were built: " + ("; ".join(notes) or "every set came out empty"))
    return {"format": MANIFEST_FORMAT, "sha256": manifest_sha256(samples), "config": cfg.to_dict(),
            "engine_config": asdict(cfg.prep()), "sources": sources.to_dict(), "counts": counts, "notes": notes,
            "samples": samples}


def check_manifest(built: dict[str, Any], expected: dict[str, Any], what: str = "the manifest") -> None:
    """Raise :class:`ManifestMismatchError` unless ``built`` has exactly the samples of ``expected``."""
    if built["sha256"] == expected["sha256"]:
        return
    a = {s["id"]: s["sha256"] for s in built["samples"]}
    b = {s["id"]: s["sha256"] for s in expected["samples"]}
    only_new, only_old = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    changed = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    detail = []
    if only_new:
        detail.append(f"{len(only_new)} sample(s) not in {what} (e.g. {only_new[0]})")
    if only_old:
        detail.append(f"{len(only_old)} sample(s) of {what} missing (e.g. {only_old[0]})")
    if changed:
        detail.append(f"{len(changed)} sample(s) with different content (e.g. {changed[0]})")
    if not detail:
        detail.append("the same samples in a different order")
    raise ManifestMismatchError(
        f"the benchmark samples (manifest {built['sha256'][:12]}) differ from {what} ({expected['sha256'][:12]}): "
        + "; ".join(detail) + ". Results measured on different samples do not compare: use the same data and "
        "options (see the manifest's 'config'), or write to a new --out folder")


def write_manifest(path: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    path = Path(path)
    _write_json_atomic(path, manifest)
    return path


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no benchmark manifest at {path}")
    try:
        m = json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path} is not a valid manifest (JSON error: {exc})") from exc
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT or "samples" not in m:
        raise DataError(f"{path} is not a facedeblur benchmark manifest (format {MANIFEST_FORMAT})")
    if manifest_sha256(m["samples"]) != m.get("sha256"):
        raise ManifestMismatchError(f"{path}: the sha256 field does not match its samples (edited by hand?)")
    return m
