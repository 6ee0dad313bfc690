"""Strong-blur datasets: sharp faces (stills and video frames, split by identity) blurred on the fly.

:class:`SharpPool` holds the sharp sources: still face crops (e.g. sharpness-filtered UTKFace, resized to the
face size) and single frames of the prepared video windows (the data engine's crop, the face pipeline's
``cfmd-256-loose`` style). :class:`SynthTrainSet` draws a face, a random zoom and a crop, and blurs it with
:mod:`facedeblur.data.synth` (camera shake, rigid head motion, degradations, the severity schedule);
:class:`SynthValSet` is the seeded, fixed counterpart on validation faces (full crops, the centroid moment).
:class:`MixedTrainSet` mixes datasets by weight; :class:`InterleavedSet` interleaves validation sets so that the
first K items (``--val-max``) sample every set.

Splits: video frames follow the data engine's identity split (``clips.csv``). UTKFace has no identity labels, so
its split is by file (crc32 of the name, the data engine's rule): the same person may appear on both sides, a
weaker split than the videos'; the ``kernel`` benchmark set draws from the validation side only.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import DataError
from .blur import psnr_uint8
from .synth import SynthConfig, clip_sample, synth_sample

__all__ = ["still_is_val", "split_stills", "SharpPool", "SynthTrainSet", "SynthValSet", "SynthClipSet",
           "SynthClipValSet", "UnpairedSet", "MixedTrainSet", "InterleavedSet"]


def still_is_val(name: str, seed: int = 0, val_percent: int = 20) -> bool:
    """Whether the still named ``name`` (its file name) is on the validation side (crc32 rule of the engine)."""
    return zlib.crc32(f"{seed}:still:{name}".encode()) % 100 < val_percent


def split_stills(paths: Sequence[Path], seed: int = 0, val_percent: int = 20) -> tuple[list[Path], list[Path]]:
    """(train, val) stills by :func:`still_is_val` of each file name."""
    train, val = [], []
    for p in paths:
        (val if still_is_val(Path(p).name, seed, val_percent) else train).append(Path(p))
    return train, val


def _read_face(path: Path, size: int) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"cannot read still image {path}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if rgb.shape[:2] != (size, size):
        interp = cv2.INTER_AREA if min(rgb.shape[:2]) > size else cv2.INTER_CUBIC
        rgb = cv2.resize(rgb, (size, size), interpolation=interp)
    return rgb


class SharpPool:
    """Sharp face images: ``stills`` (files, resized to ``face_size``) and frames of prepared ``windows``
    (``root``/file, FMR-ordered uint8 stacks). :meth:`draw` takes a frame with probability
    ``frame_fraction`` (when there are windows), else a still."""

    def __init__(self, stills: Sequence[Path], root: Path | None = None, windows: Sequence[dict[str, Any]] = (), *,
                 face_size: int = 256, frame_fraction: float = 0.4) -> None:
        if not stills and not windows:
            raise DataError("the sharp pool is empty: no still images and no prepared video windows")
        if not 0.0 <= frame_fraction <= 1.0:
            raise DataError(f"frame_fraction must be in [0, 1], got {frame_fraction}")
        self.stills, self.root, self.windows = list(stills), root, list(windows)
        self.face_size = face_size
        self.frame_fraction = frame_fraction if self.windows else 0.0
        if not self.stills:
            self.frame_fraction = 1.0

    def __len__(self) -> int:
        return len(self.stills) + len(self.windows)

    def frame(self, w: int, i: int | None = None) -> np.ndarray:
        """Frame ``i`` (default: the middle one) of window ``w``."""
        assert self.root is not None
        frames = np.load(self.root / self.windows[w]["file"], mmap_mode="r", allow_pickle=False)
        img = np.array(frames[(len(frames) - 1) // 2 if i is None else i % len(frames)])  # a writable copy
        if img.shape[:2] != (self.face_size, self.face_size):
            import cv2

            img = cv2.resize(img, (self.face_size, self.face_size), interpolation=cv2.INTER_AREA)
        return img

    def still(self, i: int) -> np.ndarray:
        return _read_face(self.stills[i % len(self.stills)], self.face_size)

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """(a sharp face, where it came from)."""
        if rng.random() < self.frame_fraction:
            w = int(rng.integers(len(self.windows)))
            return self.frame(w, int(rng.integers(1 << 30))), f"window:{self.windows[w]['file']}"
        i = int(rng.integers(len(self.stills)))
        return self.still(i), f"still:{self.stills[i].name}"

    def sample_images(self, k: int, seed: int = 0) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        return [self.draw(rng)[0] for _ in range(k)]


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)


def _item(blurry: np.ndarray, sharp: np.ndarray, u: float) -> dict[str, torch.Tensor]:
    return {"blurry": _to_tensor(blurry), "sharp": _to_tensor(sharp), "u": torch.tensor(u, dtype=torch.float32),
            "severity": torch.tensor(min(psnr_uint8(blurry, sharp), 100.0), dtype=torch.float32)}


class _PoolSamples(torch.utils.data.Dataset):
    """Samples drawn from a :class:`SharpPool` with a per-item numpy RNG seeded from torch's RNG (so the
    trainer's per-sample seeding makes runs reproducible); ``epoch_samples`` items per epoch."""

    def __init__(self, pool: SharpPool, crop: int, epoch_samples: int, min_side: float) -> None:
        if crop > min_side:
            raise DataError(f"crop {crop} is larger than the smallest face it is cut from ({min_side:g} px)")
        self.pool, self.crop, self.epoch_samples = pool, int(crop), int(epoch_samples)

    def __len__(self) -> int:
        return self.epoch_samples

    def _draw(self) -> tuple[np.random.Generator, np.ndarray]:
        rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, ()).item()))
        return rng, self.pool.draw(rng)[0]

    def _window(self, rng: np.random.Generator, h: int, w: int) -> tuple[slice, slice]:
        y, x = int(rng.integers(0, h - self.crop + 1)), int(rng.integers(0, w - self.crop + 1))
        return slice(y, y + self.crop), slice(x, x + self.crop)


class SynthTrainSet(_PoolSamples):
    """``moments`` samples: a sharp face, a random zoom (``scale_range``), blurred by ``cfg`` at that zoom, then
    one random ``crop`` x ``crop`` window of the blurry input and its sharp moment. Seeds come from torch's RNG, so
    the trainer's per-sample seeding makes runs reproducible and resumable."""

    kind = "moments"

    def __init__(self, pool: SharpPool, cfg: SynthConfig, *, crop: int, scale_range: tuple[float, float],
                 epoch_samples: int) -> None:
        super().__init__(pool, crop, epoch_samples, pool.face_size * scale_range[0])
        self.cfg, self.scale_range = cfg, tuple(scale_range)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        import cv2

        rng, img = self._draw()
        s = float(rng.uniform(*self.scale_range))
        if abs(s - 1.0) > 1e-3:
            side = max(self.crop, round(img.shape[0] * s))
            img = cv2.resize(img, (side, side), interpolation=cv2.INTER_CUBIC)
        if rng.random() < 0.5:
            img = np.ascontiguousarray(img[:, ::-1])
        blurry, sharp, u, _ = synth_sample(rng, img, self.cfg, u=None)
        ys, xs = self._window(rng, *img.shape[:2])
        return _item(blurry[ys, xs], sharp[ys, xs], u)


class SynthValSet(torch.utils.data.Dataset):
    """``moments`` validation samples: ``count`` seeded faces of ``pool`` (full crops), blurred by ``cfg``, scored
    on the centroid moment (u = 0.5). Item i is the same in every run with the same seed."""

    kind = "moments"

    def __init__(self, pool: SharpPool, cfg: SynthConfig, count: int, seed: int = 0) -> None:
        self.pool, self.cfg, self.count, self.seed = pool, cfg, int(count), seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, 12, index])
        img, _ = self.pool.draw(rng)
        blurry, sharp, u, _ = synth_sample(rng, img, self.cfg, u=0.5)
        return _item(blurry, sharp, u)


class SynthClipSet(_PoolSamples):
    """``clip`` samples (FineNet's kind): ``frames`` consecutive blurry exposures of one continuous motion of a
    sharp face and their sharp frames (:func:`facedeblur.data.synth.clip_sample`), one random ``crop`` of all
    frames. ``severity`` is the mean blurry-input PSNR of the frames."""

    kind = "clip"

    def __init__(self, pool: SharpPool, cfg: SynthConfig, *, frames: int, crop: int,
                 epoch_samples: int, duty: float = 1.0) -> None:
        super().__init__(pool, crop, epoch_samples, pool.face_size)
        self.cfg, self.frames, self.duty = cfg, int(frames), float(duty)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng, img = self._draw()
        blurry, sharp, _ = clip_sample(rng, img, self.cfg, self.frames, self.duty)
        ys, xs = self._window(rng, *img.shape[:2])
        b, s = blurry[:, ys, xs], sharp[:, ys, xs]
        sev = float(np.mean([min(psnr_uint8(bi, si), 100.0) for bi, si in zip(b, s)]))
        return {"blurry": torch.stack([_to_tensor(f) for f in b]), "sharp": torch.stack([_to_tensor(f) for f in s]),
                "severity": torch.tensor(sev, dtype=torch.float32)}


class SynthClipValSet(torch.utils.data.Dataset):
    """``clip`` validation samples: ``count`` seeded faces of ``pool`` (full crops), each a clip of ``frames``
    exposures (:func:`facedeblur.data.synth.clip_sample`); item i is the same in every run with the same seed."""

    kind = "clip"

    def __init__(self, pool: SharpPool, cfg: SynthConfig, count: int, *, frames: int, seed: int = 0,
                 duty: float = 1.0) -> None:
        self.pool, self.cfg, self.count, self.frames = pool, cfg, int(count), int(frames)
        self.seed, self.duty = seed, float(duty)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, 13, index])
        img, _ = self.pool.draw(rng)
        blurry, sharp, _ = clip_sample(rng, img, self.cfg, self.frames, self.duty)
        sev = float(np.mean([min(psnr_uint8(b, s), 100.0) for b, s in zip(blurry, sharp)]))
        return {"blurry": torch.stack([_to_tensor(f) for f in blurry]),
                "sharp": torch.stack([_to_tensor(f) for f in sharp]),
                "severity": torch.tensor(sev, dtype=torch.float32)}


class UnpairedSet(_PoolSamples):
    """``unpaired`` samples (the CycleGAN stage of CycleGAN->SRN): a random sharp face of ``pool`` and an
    unrelated real blurry face crop from ``real`` (image files, resized to the pool's face size), one random
    ``crop`` of each, flipped at random."""

    kind = "unpaired"

    def __init__(self, pool: SharpPool, real: Sequence[Path], *, crop: int, epoch_samples: int) -> None:
        if not real:
            raise DataError("UnpairedSet needs real blurry face images (e.g. DATA/real_lq/codeformer_crops)")
        super().__init__(pool, crop, epoch_samples, pool.face_size)
        self.real = [Path(p) for p in real]

    def _crop(self, rng: np.random.Generator, img: np.ndarray) -> torch.Tensor:
        out = img[self._window(rng, *img.shape[:2])]
        return _to_tensor(out[:, ::-1] if rng.random() < 0.5 else out)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng, sharp = self._draw()
        real = _read_face(self.real[int(rng.integers(len(self.real)))], self.pool.face_size)
        return {"sharp": self._crop(rng, sharp), "real_blurry": self._crop(rng, real)}


class MixedTrainSet(torch.utils.data.Dataset):
    """Each item from one of ``parts`` (datasets of one kind) with probability proportional to its weight."""

    def __init__(self, parts: Sequence[tuple[torch.utils.data.Dataset, float]], epoch_samples: int) -> None:
        parts = [(d, float(w)) for d, w in parts if w > 0]
        if not parts:
            raise DataError("MixedTrainSet needs at least one part with a weight > 0")
        kinds = {getattr(d, "kind", "moments") for d, _ in parts}
        if len(kinds) != 1:
            raise DataError(f"MixedTrainSet parts must share one sample kind, got {sorted(kinds)}")
        self.kind = kinds.pop()
        self.parts = [d for d, _ in parts]
        total = sum(w for _, w in parts)
        self.cum = np.cumsum([w / total for _, w in parts])
        self.epoch_samples = epoch_samples
        self.summary: dict[str, Any] | None = None  # what the builder says of the mix (logged by the trainer)

    def __len__(self) -> int:
        return self.epoch_samples

    def __getitem__(self, index: int) -> Any:
        r = float(torch.rand(()).item())
        k = min(int(np.searchsorted(self.cum, r, side="right")), len(self.parts) - 1)
        return self.parts[k][int(torch.randint(0, len(self.parts[k]), ()).item())]  # type: ignore[arg-type]


class InterleavedSet(torch.utils.data.Dataset):
    """Items of ``sets`` taken in turn (a0, b0, a1, b1, ...; a set that runs out is skipped), so the first K items
    sample every set. ``source(i)`` names the set of item i."""

    def __init__(self, sets: Sequence[torch.utils.data.Dataset], names: Sequence[str]) -> None:
        self.sets, self.names = list(sets), list(names)
        kinds = {getattr(d, "kind", "moments") for d in self.sets}
        if len(kinds) != 1:
            raise DataError(f"InterleavedSet parts must share one sample kind, got {sorted(kinds)}")
        self.kind = kinds.pop()
        self.index: list[tuple[int, int]] = []
        lens = [len(d) for d in self.sets]  # type: ignore[arg-type]
        for j in range(max(lens, default=0)):
            self.index.extend((k, j) for k in range(len(self.sets)) if j < lens[k])

    def __len__(self) -> int:
        return len(self.index)

    def source(self, i: int) -> str:
        return self.names[self.index[i][0]]

    def __getitem__(self, i: int) -> Any:
        k, j = self.index[i]
        return self.sets[k][j]
