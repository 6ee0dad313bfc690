"""Data engine: sharp face videos (and sharp stills) -> cached blurry/sharp training windows -> datasets.

Pipeline for videos (CFMD-GAN §5.1.1 and the authors' data code; Chrysos et al. §3.4):

1. stream the frames, drop repeated frames (clips converted from another frame rate repeat frames);
2. track 68-point landmarks (any :class:`~facedeblur.data.landmarks.LandmarkDetector`);
3. windows of N consecutive kept frames, N in {5, 7, 9, 11, 13}, also at temporal stride 2-3 for stronger
   motion, with the exposure span ``(N-1)*stride+1`` kept within 13 frames (physically plausible, <= 0.5 s);
4. crop each window at its window-averaged landmark box, enlarged by 0.5x width/height on each side, squared,
   resized to the face size (area interpolation when shrinking, so high-resolution clips give crisp faces);
5. keep windows whose frames are all sharp (Laplacian variance of every crop >= a threshold);
6. order the window's frames by FMR (left-eye x, then y, then time) and store them (uint8 .npy, no pickles);
7. split train/validation by identity group (``clips.csv``), never by clip.

Sharp stills (e.g. aligned face crops) are blurred on the fly along random camera-shake trajectories
(:mod:`facedeblur.data.blur`), which gives crisp sources and exactly known moments.

Everything is deterministic given the seed; prepared windows are cached on disk and reused.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import CapabilityError, DataError, InputError
from ..metrics.severity import SEVERITY_BINS, severity_bin
from .crops import crop as _crop, crop_box as _crop_box, dedup as _dedup, sharpness as _sharpness
from .blur import average_frames, fmr_order, psnr_uint8, render_trajectory, shake_trajectory
from .landmarks import LandmarkDetector, default_detector, left_eye, track_faces
from .sources import Clip, find_clips, iter_frames
from .strong import (InterleavedSet, MixedTrainSet, SharpPool, SynthClipSet, SynthClipValSet, SynthTrainSet,
                     SynthValSet, UnpairedSet, split_stills)
from .synth import SynthConfig, format_histogram, severity_histogram
from .vla import VLAConfig, clip_vla_windows

__all__ = ["PrepConfig", "prepare_windows", "prepare_vla_windows", "load_manifest", "WindowTrainSet", "WindowValSet", "build_datasets",
           "severity_bin", "SEVERITY_BINS", "default_cache_dir"]

@dataclass(frozen=True)
class PrepConfig:
    """How windows are cut from videos. The defaults follow CFMD-GAN's data code where it has one."""

    face_size: int = 256
    frame_counts: tuple[int, ...] = (5, 7, 9, 11, 13)
    strides: tuple[int, ...] = (1, 2, 3)
    max_span: int = 13
    start_step: int = 3
    windows_per_clip: int = 30
    enlarge: float = 0.5
    min_sharpness: float = 50.0
    duplicate_threshold: float = 0.3  # mean abs difference (grey levels, 64-px thumbnails) below which a frame repeats
    val_percent: int = 20
    seed: int = 0

    def combos(self) -> list[tuple[int, int]]:
        return [(n, s) for n in self.frame_counts for s in self.strides if (n - 1) * s + 1 <= self.max_span]

    def digest(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def default_cache_dir() -> Path:
    return Path(os.environ.get("FACEDEBLUR_CACHE", Path.home() / ".cache" / "facedeblur")) / "data"


def _is_val(identity: str, cfg: PrepConfig) -> bool:
    return zlib.crc32(f"{cfg.seed}:{identity}".encode()) % 100 < cfg.val_percent


def _prepare_clip(clip: Clip, out_dir: Path, cfg: PrepConfig, detector: LandmarkDetector) -> list[dict[str, Any]]:
    kept: list[int] = []
    faces = list(track_faces(_dedup(iter_frames(clip), cfg.duplicate_threshold, kept), detector))
    rng = np.random.default_rng([cfg.seed, zlib.crc32(clip.name.encode())])
    combos = cfg.combos()
    windows = []
    for start in range(0, len(kept), cfg.start_step):
        n, stride = combos[rng.integers(len(combos))]
        pos = list(range(start, start + (n - 1) * stride + 1, stride))
        if pos[-1] >= len(kept) or any(faces[p] is None for p in pos):
            continue
        windows.append((n, stride, pos))
    if len(windows) > cfg.windows_per_clip:
        pick = sorted(rng.choice(len(windows), cfg.windows_per_clip, replace=False))
        windows = [windows[i] for i in pick]
    if not windows:
        return []
    boxes = [_crop_box(np.array([faces[p].landmark_box() for p in pos]), cfg.enlarge) for _, _, pos in windows]
    need: dict[int, list[int]] = {}
    for w, (_, _, pos) in enumerate(windows):
        for p in pos:
            need.setdefault(kept[p], []).append(w)
    crops: dict[tuple[int, int], np.ndarray] = {}
    for i, rgb in enumerate(iter_frames(clip)):
        for w in need.get(i, ()):
            crops[(w, i)] = _crop(rgb, *boxes[w], cfg.face_size)
        if i >= max(need):
            break
    records = []
    for w, (n, stride, pos) in enumerate(windows):
        frames = np.stack([crops[(w, kept[p])] for p in pos])
        if min(_sharpness(f) for f in frames) < cfg.min_sharpness:
            continue
        cx, cy, side = boxes[w]
        scale = cfg.face_size / side
        eyes = np.array([(left_eye(faces[p]) - (cx - side / 2, cy - side / 2)) * scale for p in pos])
        order = fmr_order(eyes)
        frames = frames[order]
        blurry = average_frames(frames)
        fname = f"{clip.name}_{w:03d}.npy"
        np.save(out_dir / fname, frames)
        records.append({
            "file": fname, "clip": clip.name, "identity": clip.identity, "n": n, "stride": stride,
            "start_frame": kept[pos[0]], "fmr_order": [int(o) for o in order],
            "severity": psnr_uint8(blurry, frames[(n - 1) // 2]),
            "severity_temporal_centre": psnr_uint8(blurry, crops[(w, kept[pos[(n - 1) // 2]])]),
            "split": "val" if _is_val(clip.identity, cfg) else "train"})
    return records


def _prepare_cached(data_dir: Path, out: Path, config: Any, what: str,
                    per_clip: Callable[[Clip, LandmarkDetector], list[dict[str, Any]]], empty: str,
                    detector: LandmarkDetector | None, progress: bool) -> Path:
    """The clip-by-clip cache both window kinds share: refuse two clips of one name (files are keyed by clip name)
    and a cache prepared from another data folder, reuse finished clips (``clips/<name>.json``), prepare the others
    with ``per_clip(clip, detector)`` (the default landmark detector is built only when a clip needs it), then
    write ``manifest.json`` (config, data folder, records). Returns the manifest path."""
    from tqdm.auto import tqdm

    root = data_dir / "videos" if (data_dir / "videos").is_dir() else data_dir
    clips = find_clips(root)
    seen: dict[str, Path] = {}
    for clip in clips:  # cache files are named by clip name: two clips of one name would overwrite each other
        if clip.name in seen:
            raise DataError(f"two clips are both named {clip.name!r} ({seen[clip.name]} and {clip.path}); the "
                            f"{what} cache is keyed by clip name, so rename one of them")
        seen[clip.name] = clip.path
    manifest = out / "manifest.json"
    if manifest.exists():  # cached clips are keyed by name: never reuse another data folder's windows
        try:
            prev_dir = json.loads(manifest.read_text()).get("data_dir")
        except (ValueError, AttributeError):
            prev_dir = None
        if prev_dir is not None and prev_dir != str(data_dir.resolve()):
            raise DataError(f"the {what} cache {out} was prepared from {prev_dir}, not {data_dir.resolve()}; "
                            "pass another cache_dir (or delete that folder to prepare it again)")
    (out / "clips").mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    bar = tqdm(clips, desc=f"preparing {what}s", unit="clip", disable=not progress)
    for clip in bar:
        done = out / "clips" / f"{clip.name}.json"
        if done.exists():
            records += json.loads(done.read_text())
            continue
        bar.set_postfix_str(clip.name)
        detector = detector or default_detector()  # only built when a clip still needs landmarks
        recs = per_clip(clip, detector)
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps(recs))
        os.replace(tmp, done)
        records += recs
    if not records:
        raise DataError(f"no usable {what}s in {root}: {empty}")
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps({"config": config, "data_dir": str(data_dir.resolve()), "windows": records}, indent=1))
    os.replace(tmp, manifest)
    return manifest


def prepare_windows(data_dir: str | Path, cache_dir: str | Path | None = None, cfg: PrepConfig = PrepConfig(),
                    detector: LandmarkDetector | None = None, progress: bool = True) -> Path:
    """Cut, crop, filter and FMR-order windows from every clip under ``data_dir``; returns the manifest path.

    Clips already prepared with the same config are skipped, so an interrupted run resumes.
    """
    out = Path(cache_dir or default_cache_dir()) / f"windows-{cfg.digest()}"
    return _prepare_cached(Path(data_dir), out, asdict(cfg), "window",
                           lambda clip, det: _prepare_clip(clip, out, cfg, det),
                           f"no faces found or every window failed the sharpness filter (min_sharpness="
                           f"{cfg.min_sharpness})", detector, progress)


def prepare_vla_windows(data_dir: str | Path, cache_dir: str | Path | None = None, cfg: PrepConfig = PrepConfig(),
                        vla: VLAConfig = VLAConfig(), per_clip: int = 20, detector: LandmarkDetector | None = None,
                        progress: bool = True) -> Path:
    """Variable-length averaging windows (Chrysos et al. §3.4, :mod:`facedeblur.data.vla`) of every clip under
    ``data_dir``: up to ``per_clip`` per clip, the same crop, sharpness filter, FMR order, identity split and
    record fields as :func:`prepare_windows` (``stride`` 1, ``n`` the grown length), plus ``kind: "vla"``, the
    ``centre_frame``, its FMR position ``centre_index`` and the ``stop`` reason. Cached apart from the fixed-length
    windows (``vla-<digest>`` under ``cache_dir``), so recipes without VLA windows never build them; an
    interrupted run resumes by clip. Returns the manifest path (read it with :func:`load_manifest`).
    """
    if per_clip < 1:
        raise InputError(f"per_clip must be >= 1, got {per_clip}")
    key = {"prep": asdict(cfg), "vla": asdict(vla), "per_clip": per_clip}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    out = Path(cache_dir or default_cache_dir()) / f"vla-{digest}"

    def clip_records(clip: Clip, det: LandmarkDetector) -> list[dict[str, Any]]:
        recs = []
        for win in clip_vla_windows(clip, det, vla, per_clip=per_clip, face_size=cfg.face_size,
                                    enlarge=cfg.enlarge, min_sharpness=cfg.min_sharpness,
                                    duplicate_threshold=cfg.duplicate_threshold):
            fname = f"{clip.name}_{win.centre_frame:06d}.npy"
            np.save(out / fname, win.frames)
            blurry = average_frames(win.frames)
            recs.append({
                "file": fname, "kind": "vla", "clip": clip.name, "identity": clip.identity, "n": win.length,
                "stride": 1, "start_frame": win.start_frame, "centre_frame": win.centre_frame,
                "fmr_order": win.order, "centre_index": win.centre_index, "stop": win.stop,
                "severity": psnr_uint8(blurry, win.frames[(win.length - 1) // 2]),
                "severity_temporal_centre": psnr_uint8(blurry, win.frames[win.centre_index]),
                "split": "val" if _is_val(clip.identity, cfg) else "train"})
        return recs

    return _prepare_cached(Path(data_dir), out, key, "VLA window", clip_records,
                           f"no faces found, every window was shorter than min_len={vla.min_len} or failed the "
                           f"sharpness filter (min_sharpness={cfg.min_sharpness})", detector, progress)


def load_manifest(manifest: str | Path) -> tuple[Path, list[dict[str, Any]]]:
    manifest = Path(manifest)
    if not manifest.exists():
        raise DataError(f"no prepared windows at {manifest}; run facedeblur.data.prepare_windows first")
    return manifest.parent, json.loads(manifest.read_text())["windows"]


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.require(img, requirements=("C", "W"))).permute(2, 0, 1).float().div_(255.0)


def _scale_crop(imgs: list[np.ndarray], crop: int, scale_range: tuple[float, float]) -> list[np.ndarray]:
    """Random up-scale (bicubic) in ``scale_range`` then one random ``crop`` x ``crop`` window for all images
    (CFMD-GAN §5.1.2). Uses torch's global RNG so a resumed run restores it exactly."""
    import cv2

    s = float(scale_range[0] + (scale_range[1] - scale_range[0]) * torch.rand(()).item())
    h, w = imgs[0].shape[:2]
    nh, nw = max(crop, round(h * s)), max(crop, round(w * s))
    if (nh, nw) != (h, w):
        imgs = [cv2.resize(im, (nw, nh), interpolation=cv2.INTER_CUBIC) for im in imgs]
    y = int(torch.randint(0, nh - crop + 1, ()).item())
    x = int(torch.randint(0, nw - crop + 1, ()).item())
    return [im[y:y + crop, x:x + crop] for im in imgs]


@dataclass
class StillsSource:
    """Sharp stills blurred on the fly along camera-shake trajectories."""

    paths: list[Path]
    extent_range: tuple[float, float] = (1.0, 14.0)
    frame_counts: tuple[int, ...] = (5, 7, 9, 11, 13)

    def sample(self, index: int, centre_fraction: float = 0.0) -> tuple[np.ndarray, np.ndarray, float]:
        """(blurry, one FMR-ordered sharp frame, its u); the FMR-middle frame with probability
        ``centre_fraction``, else a uniformly drawn one."""
        import cv2

        path = self.paths[index % len(self.paths)]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(f"cannot read still image {path}")
        img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        seed = int(torch.randint(0, 2 ** 31 - 1, ()).item())
        rng = np.random.default_rng(seed)
        n = int(rng.choice(self.frame_counts))
        lo, hi = np.log(self.extent_range[0]), np.log(self.extent_range[1])
        traj = shake_trajectory(rng, n, float(np.exp(rng.uniform(lo, hi))))
        frames = render_trajectory(img, traj)
        # FMR on the pose of a point at the image-left eye of an aligned face (trajectory order by x, y, time)
        h, w = img.shape[:2]
        eye = np.array([0.35 * w, 0.4 * h])
        eyes = []
        for dx, dy, ang in traj:
            t = np.deg2rad(-ang)
            c = np.array([w / 2, h / 2])
            rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
            eyes.append(rot @ (eye - c) + c + (dx, dy))
        order = fmr_order(np.array(eyes) * 4)  # quarter-pixel grid: sub-pixel paths still order cleanly
        frames = frames[order]
        i = _pick_frame(rng.random(), n, centre_fraction, int(rng.integers(n)))
        return average_frames(frames), frames[i], i / (n - 1)


def _pick_frame(r: float, n: int, centre_fraction: float, uniform: int) -> int:
    """The FMR-middle index (n - 1) // 2 when ``r < centre_fraction``, else ``uniform``."""
    return (n - 1) // 2 if r < centre_fraction else uniform


class WindowTrainSet(torch.utils.data.Dataset):
    """Training samples (CFMD-GAN §4.1/§5.1.2): a window's blurry average, one FMR-ordered sharp frame and its
    u = i/(N-1); plus identity pairs (a sharp frame as its own input, so sharp faces are left alone) and
    stills blurred along random trajectories. Random up-scale 1.0-1.5 and crop.

    The frame is drawn uniformly (the paper), except that with probability ``centre_fraction`` it is the
    FMR-middle frame (u = 0.5 for odd N). Not in the paper: for a model that does not yet use u the best
    uniform-u prediction is the blurry input itself (the frames average to it), so early training has almost
    no signal; extra centre-moment targets give the network a deblurring task from the first step.

    With probability ``static_fraction`` (not in the paper) a sample is a *still exposure*: the face did not move,
    so the N frames are one sharp frame captured N times with independent noise (Gaussian, sigma
    ``static_noise`` grey levels, drawn per sample, rounded to 8 bits), the input is their average and the target
    one of them. Validation showed such windows (blurry input 45-55 dB: the frames differ only by compression
    noise) are where a network that sharpens every input loses most; identity pairs (input = target, MSE 0) teach
    the same but, under a per-sample PSNR loss, outweigh everything else (see the stage-2 notes in the model
    card), while the noise here keeps the pair's MSE at a real static window's level.

    With probability ``vla_fraction`` a window sample comes from ``vla_windows`` (variable-length averaging,
    Chrysos et al. §3.4; :func:`prepare_vla_windows`) instead: same FMR-ordered frames, so the same targets."""

    def __init__(self, root: Path, windows: list[dict[str, Any]], *, crop: int, scale_range: tuple[float, float],
                 epoch_samples: int, identity_fraction: float = 0.1, stills: StillsSource | None = None,
                 stills_fraction: float = 0.3, centre_fraction: float = 0.0, static_fraction: float = 0.0,
                 static_noise: tuple[float, float] = (0.3, 1.2), vla_root: Path | None = None,
                 vla_windows: list[dict[str, Any]] | None = None, vla_fraction: float = 0.0) -> None:
        if not windows:
            raise DataError("no training windows")
        if not 0.0 <= vla_fraction <= 1.0:
            raise DataError(f"vla_fraction must lie in [0, 1], got {vla_fraction}")
        if vla_fraction > 0 and (vla_root is None or not vla_windows):
            raise DataError("vla_fraction > 0 needs VLA windows (facedeblur.data.engine.prepare_vla_windows); none "
                            "were given, or no VLA window of a training identity passed the filters")
        self.vla_root, self.vla_windows, self.vla_fraction = vla_root, list(vla_windows or []), float(vla_fraction)
        fractions = {"identity_fraction": identity_fraction, "stills_fraction": stills_fraction,
                     "static_fraction": static_fraction, "centre_fraction": centre_fraction}
        used_stills = stills_fraction if stills is not None and stills.paths else 0.0
        bad = {k: v for k, v in fractions.items() if not 0.0 <= v <= 1.0}
        if bad or identity_fraction + used_stills + static_fraction > 1.0:
            raise DataError(f"sample fractions must lie in [0, 1] and identity + stills + static must not exceed 1; "
                            f"got {fractions}")
        if not 0.0 <= static_noise[0] <= static_noise[1]:
            raise DataError(f"static_noise must be (low, high) grey levels with 0 <= low <= high, got {static_noise}")
        self.static_fraction, self.static_noise = static_fraction, (float(static_noise[0]), float(static_noise[1]))
        self.root, self.windows, self.crop, self.scale_range = root, windows, crop, tuple(scale_range)
        self.epoch_samples = epoch_samples
        self.identity_fraction = identity_fraction
        self.stills = stills
        self.stills_fraction = stills_fraction if stills is not None and stills.paths else 0.0
        self.centre_fraction = centre_fraction

    def __len__(self) -> int:
        return self.epoch_samples

    def _frames(self, w: int) -> np.ndarray:
        return np.load(self.root / self.windows[w]["file"], mmap_mode="r", allow_pickle=False)

    def _static_pair(self, sharp: np.ndarray, n: int, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(average of n noisy captures of ``sharp``, capture i): a still exposure (see the class doc)."""
        lo, hi = self.static_noise
        sigma = lo + (hi - lo) * float(torch.rand(()).item())
        gen = np.random.default_rng(int(torch.randint(0, 2 ** 31 - 1, ()).item()))
        captures = np.clip(np.rint(sharp[None].astype(np.float32) + gen.normal(0.0, sigma, (n, *sharp.shape))),
                           0, 255).astype(np.uint8)
        return average_frames(captures), captures[i]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        r = float(torch.rand(()).item())
        if r >= 1.0 - self.static_fraction:  # a still exposure (never when static_fraction is 0: r < 1)
            w = int(torch.randint(0, len(self.windows), ()).item())
            frames = self._frames(w)
            n = len(frames)
            i = int(torch.randint(0, n, ()).item())
            (sharp,) = _scale_crop([np.asarray(frames[i])], self.crop, self.scale_range)
            blurry, sharp = self._static_pair(np.ascontiguousarray(sharp), n, i)
            return self._item(blurry, sharp, i / (n - 1))
        if r < self.stills_fraction:
            blurry, sharp, u = self.stills.sample(int(torch.randint(0, 2 ** 31 - 1, ()).item()), self.centre_fraction)
        else:
            root, windows = self.root, self.windows
            if self.vla_fraction > 0 and float(torch.rand(()).item()) < self.vla_fraction:
                root, windows = self.vla_root, self.vla_windows  # type: ignore[assignment]
            w = int(torch.randint(0, len(windows), ()).item())
            frames = np.load(root / windows[w]["file"], mmap_mode="r", allow_pickle=False)
            n = len(frames)
            i = _pick_frame(float(torch.rand(()).item()), n, self.centre_fraction,
                            int(torch.randint(0, n, ()).item()))
            sharp = np.asarray(frames[i])
            if r < self.stills_fraction + self.identity_fraction:
                blurry = sharp
            else:
                blurry = average_frames(frames)
            u = i / (n - 1)
        blurry, sharp = _scale_crop([blurry, sharp], self.crop, self.scale_range)
        return self._item(blurry, sharp, u)

    @staticmethod
    def _item(blurry: np.ndarray, sharp: np.ndarray, u: float) -> dict[str, torch.Tensor]:
        sev = psnr_uint8(blurry, sharp)
        return {"blurry": _to_tensor(blurry), "sharp": _to_tensor(sharp), "u": torch.tensor(u, dtype=torch.float32),
                "severity": torch.tensor(min(sev, 100.0), dtype=torch.float32)}


class WindowValSet(torch.utils.data.Dataset):
    """Validation samples: full face crops, u = 0.5, ground truth = the FMR-middle frame (CFMD-GAN protocol:
    validation on the centre moment). ``frames(i)`` gives all FMR-ordered frames for the Table 4 protocol."""

    def __init__(self, root: Path, windows: list[dict[str, Any]]) -> None:
        if not windows:
            raise DataError("no validation windows (no identity group fell into the validation split)")
        self.root, self.windows = root, windows

    def __len__(self) -> int:
        return len(self.windows)

    def frames(self, index: int) -> np.ndarray:
        return np.load(self.root / self.windows[index]["file"], allow_pickle=False)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        frames = self.frames(index)
        n = len(frames)
        blurry, sharp = average_frames(frames), frames[(n - 1) // 2]
        return {"blurry": _to_tensor(blurry), "sharp": _to_tensor(sharp),
                "u": torch.tensor(((n - 1) // 2) / (n - 1), dtype=torch.float32),
                "severity": torch.tensor(psnr_uint8(blurry, sharp), dtype=torch.float32)}


def _find_stills(data_dir: Path, min_sharpness: float = 100.0) -> list[Path]:
    import csv

    folder = data_dir / "faces" / "utkface"
    if not folder.is_dir():
        return []
    table = data_dir / "faces" / "utkface_sharpness.csv"
    if table.exists():
        with open(table, newline="") as fh:
            return [folder / r["file"] for r in csv.DictReader(fh)
                    if float(r["laplacian_var_center128"]) >= min_sharpness and (folder / r["file"]).exists()]
    return sorted(folder.glob("*.jpg"))


def build_datasets(data_dir: str | Path, card: Any = None, *, seed: int = 0, cache_dir: str | Path | None = None,
                   progress: bool = True, prep: PrepConfig | None = None, max_val: int | None = None,
                   recipe: dict[str, Any] | None = None, kind: str = "moments"
                   ) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """(train, val) datasets for ``card``'s training recipe from a folder of videos (and ``faces/`` stills).

    Items are dicts {"blurry", "sharp": float [3,H,W] in [0,1], "u": scalar, "severity": blurry-input PSNR (dB)}.
    The split is by identity group; windows are prepared once and cached under ``cache_dir``. Without ``prep``,
    faces are prepared at the card's ``input.face_size`` (a separate cache per size).

    ``kind``: the sample kind the training wrapper consumes (``facedeblur train`` passes it). ``"clip"`` gives
    strong-blur clips instead (:class:`~facedeblur.data.strong.SynthClipSet` / ``SynthClipValSet``: the card's
    ``frame_window`` consecutive exposures of one motion of a sharp face of the same pool and split, with the recipe's
    ``synth`` schedule; ``synth_val_count`` validation clips); ``"unpaired"`` gives sharp faces against real
    low-quality faces of ``DATA/real_lq`` (:func:`facedeblur.data.real.real_faces`) with the video windows as paired
    validation; any other kind gets the moment data above.
    """
    data_dir = Path(data_dir)
    if prep is None:  # faces at the card's face size (128 px for DFPGnet), so training crops are inference crops
        face_size = getattr(getattr(card, "input", None), "face_size", None)
        prep = PrepConfig(seed=seed, face_size=int(face_size) if face_size else PrepConfig.face_size)
    training = dict(getattr(card, "training", {}) or {})
    training.update(recipe or {})
    root, windows = load_manifest(prepare_windows(data_dir, cache_dir, prep, progress=progress))
    train_w = [w for w in windows if w["split"] == "train"]
    val_w = [w for w in windows if w["split"] == "val"]
    # a seeded shuffle, so that "the first K validation items" is a fair sample across identities
    val_w = [val_w[i] for i in np.random.default_rng(seed).permutation(len(val_w))][:max_val]
    # stills are split by file name (UTKFace has no identity labels); the kernel benchmark draws from the val side
    train_stills, val_stills = split_stills(_find_stills(data_dir), seed=prep.seed, val_percent=prep.val_percent)
    if kind == "clip":
        return _clip_datasets(training, card, prep, root, windows, train_stills, val_stills, seed)
    if kind == "unpaired":
        return _unpaired_datasets(data_dir, training, card, prep, root, train_w, train_stills, val_w, cache_dir, seed,
                                  progress)
    crop = int(training.get("crop", 256))
    scale_aug = tuple(training.get("scale_aug", (1.0, 1.5)))
    epoch_samples = int(training.get("epoch_samples", 12000))
    synth_fraction = float(training.get("synth_fraction", 0.0))
    stills_src = StillsSource(train_stills) if train_stills and synth_fraction == 0 else None
    vla_fraction = float(training.get("vla_fraction", 0.0))
    vla_root, vla_train, vla_val = None, None, None
    if vla_fraction > 0:
        vla_opts = dict(training.get("vla") or {})
        per_clip = int(vla_opts.pop("per_clip", 20))
        try:
            vla_cfg = VLAConfig(**vla_opts)
        except TypeError as exc:
            raise DataError(f"training recipe 'vla': {exc}; keys are per_clip and the fields of "
                            "facedeblur.data.vla.VLAConfig") from None
        except InputError as exc:
            raise DataError(f"training recipe 'vla': {exc}") from None
        vla_root, vla_w = load_manifest(prepare_vla_windows(data_dir, cache_dir, prep, vla_cfg, per_clip,
                                                            progress=progress))
        vla_train = [w for w in vla_w if w["split"] == "train"]
        vla_val = [w for w in vla_w if w["split"] == "val"]
        vla_val = [vla_val[i] for i in np.random.default_rng(seed).permutation(len(vla_val))][:max_val]
        lengths = np.bincount([w["n"] for w in vla_train], minlength=vla_cfg.max_len + 1)
        print(f"[facedeblur data] VLA windows (Chrysos et al. §3.4): {len(vla_train)} training, {len(vla_val)} "
              f"validation; {vla_fraction:.0%} of video-window samples; lengths "
              + ", ".join(f"{n}: {int(c)}" for n, c in enumerate(lengths) if c))
    windows_train = WindowTrainSet(root, train_w, crop=crop, scale_range=scale_aug, epoch_samples=epoch_samples,
                                   identity_fraction=float(training.get("identity_fraction", 0.1)), stills=stills_src,
                                   stills_fraction=float(training.get("stills_fraction", 0.3)),
                                   centre_fraction=float(training.get("centre_fraction", 0.0)),
                                   static_fraction=float(training.get("static_fraction", 0.0)),
                                   static_noise=tuple(training.get("static_noise", (0.3, 1.2))),
                                   vla_root=vla_root, vla_windows=vla_train, vla_fraction=vla_fraction)
    windows_val = WindowValSet(root, val_w)
    val_sets: list[torch.utils.data.Dataset] = [windows_val]
    val_names = ["video"]
    if vla_val:
        val_sets.append(WindowValSet(vla_root, vla_val))  # type: ignore[arg-type]
        val_names.append("vla")
    if synth_fraction == 0:
        return windows_train, (windows_val if len(val_sets) == 1 else InterleavedSet(val_sets, val_names))
    try:
        cfg = SynthConfig.from_mapping({"face_size": prep.face_size, **dict(training.get("synth") or {})})
    except InputError as exc:
        raise DataError(f"training recipe 'synth': {exc}") from None
    frames = float(training.get("synth_frames", 0.4))
    pool = SharpPool(train_stills, root, train_w, face_size=prep.face_size, frame_fraction=frames)
    val_pool = SharpPool(val_stills, root, [w for w in windows if w["split"] == "val"], face_size=prep.face_size,
                         frame_fraction=frames)
    hist = severity_histogram(pool.sample_images(64, seed), cfg, samples=300, seed=seed)
    # printed whatever ``progress`` says: the schedule a run trains on belongs in its console log
    print(f"[facedeblur data] strong-blur engine: {len(train_stills)} training stills, {len(train_w)} training "
          f"windows ({frames:.0%} of sharp faces are video frames); {synth_fraction:.0%} of samples synthetic, "
          f"the rest video windows")
    print(format_histogram(hist))
    synth = SynthTrainSet(pool, cfg, crop=crop, scale_range=scale_aug, epoch_samples=epoch_samples)
    train = MixedTrainSet([(synth, synth_fraction), (windows_train, 1.0 - synth_fraction)], epoch_samples)
    train.summary = {"synth_fraction": synth_fraction, "synth_frames": frames, "train_stills": len(train_stills),
                     "train_windows": len(train_w), "val_stills": len(val_stills), "severity_histogram": hist}
    # validation scores every synthetic input against the clean face: with identity_sharp a sharp item's target
    # would be its own input (PSNR capped at 100 dB), and any 8-bit change would swamp the >=36 dB bin's mean
    val_cfg = dataclasses.replace(cfg, identity_sharp=False)
    val_synth = SynthValSet(val_pool, val_cfg, int(training.get("synth_val_count", 200)), seed=seed)
    if vla_train is not None:
        train.summary.update({"vla_fraction": vla_fraction, "vla_train_windows": len(vla_train)})
    return train, InterleavedSet([val_synth, *val_sets], ["synth", *val_names])


def _unpaired_datasets(data_dir: Path, training: dict[str, Any], card: Any, prep: PrepConfig, root: Path,
                       train_w: list[dict[str, Any]], train_stills: list[Path], val_w: list[dict[str, Any]],
                       cache_dir: str | Path | None, seed: int, progress: bool
                       ) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """``unpaired`` (train, val) sets of :func:`build_datasets` (the CycleGAN stage): sharp faces of the training
    side (stills and video frames) against real low-quality faces (:func:`facedeblur.data.real.real_faces`);
    validation on the paired video windows of the validation identities (how close the learned blur comes to real
    frame-averaging blur)."""
    from ..faces.align import crop_style_for
    from .real import real_faces

    try:
        style = crop_style_for(card) if card is not None else "cfmd-256-loose"
    except CapabilityError:  # a card that names no known crop: the data engine's own
        style = "cfmd-256-loose"
    real = real_faces(data_dir, cache_dir or default_cache_dir(), face_size=prep.face_size, style=style,
                      progress=progress)
    pool = SharpPool(train_stills, root, train_w, face_size=prep.face_size,
                     frame_fraction=float(training.get("synth_frames", 0.4)))
    train = UnpairedSet(pool, real, crop=int(training.get("crop", 256)),
                        epoch_samples=int(training.get("epoch_samples", 12000)))
    train.summary = {"train_stills": len(train_stills), "train_windows": len(train_w), "real_faces": len(real)}
    return train, WindowValSet(root, val_w)


def _clip_datasets(training: dict[str, Any], card: Any, prep: PrepConfig, root: Path, windows: list[dict[str, Any]],
                   train_stills: list[Path], val_stills: list[Path], seed: int
                   ) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """``clip`` (train, val) sets of :func:`build_datasets`: strong-blur clips from the split sharp pools."""
    try:
        cfg = SynthConfig.from_mapping({"face_size": prep.face_size, **dict(training.get("synth") or {})})
    except InputError as exc:
        raise DataError(f"training recipe 'synth': {exc}") from None
    frames = int(getattr(getattr(card, "capabilities", None), "frame_window", 0) or 5)
    share = float(training.get("synth_frames", 0.4))
    pool = SharpPool(train_stills, root, [w for w in windows if w["split"] == "train"], face_size=prep.face_size,
                     frame_fraction=share)
    val_pool = SharpPool(val_stills, root, [w for w in windows if w["split"] == "val"], face_size=prep.face_size,
                         frame_fraction=share)
    hist = severity_histogram(pool.sample_images(64, seed), cfg, samples=300, seed=seed)
    print(f"[facedeblur data] strong-blur clips of {frames} exposures: {len(train_stills)} training stills, "
          f"{len(pool.windows)} training windows ({share:.0%} of sharp faces are video frames); per-exposure severity:")
    print(format_histogram(hist))
    train = SynthClipSet(pool, cfg, frames=frames, crop=int(training.get("crop", 256)),
                         epoch_samples=int(training.get("epoch_samples", 12000)))
    val_cfg = dataclasses.replace(cfg, identity_sharp=False)  # validation scores against the clean face
    val = SynthClipValSet(val_pool, val_cfg, int(training.get("synth_val_count", 200)), frames=frames, seed=seed)
    return train, val
