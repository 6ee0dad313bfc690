"""Sample kinds: the one contract between the data engine and every method's training wrapper (issue #12 A).

A dataset declares its kind in a ``kind`` attribute; a training wrapper declares the kind it consumes, and the
trainer checks both and every item against this table. Images are float32 tensors in [0, 1], (3, H, W); clips
are (T, 3, H, W). ``severity`` (blurry-input PSNR, dB) is optional on paired kinds and drives the validation bins.

============  =========================================================================================
kind          item keys
============  =========================================================================================
``pair``      ``blurry``, ``sharp``                        (Chrysos et al., DFPGnet, SRN: one sharp target)
``moments``   ``blurry``, ``sharp``, ``u``                 (CFMD-GAN: the sharp moment at u in [0, 1])
``clip``      ``blurry``, ``sharp`` as (T, 3, H, W)        (FineNet: T consecutive frames)
``unpaired``  ``sharp``, ``real_blurry``                   (CycleGAN stage: unrelated sharp / real blurry)
============  =========================================================================================

A ``moments`` item is also a valid ``pair`` (drop u): a pair method can train on moment data, whose sharp
target is then the centroid moment when u = 0.5.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..errors import DataError

__all__ = ["SAMPLE_KINDS", "check_kind", "check_item", "dataset_kind", "compatible"]

#: kind -> (required keys, image rank of each image key: 3 = (C, H, W), 4 = (T, C, H, W))
SAMPLE_KINDS: dict[str, dict[str, int]] = {
    "pair": {"blurry": 3, "sharp": 3},
    "moments": {"blurry": 3, "sharp": 3, "u": 0},
    "clip": {"blurry": 4, "sharp": 4},
    "unpaired": {"sharp": 3, "real_blurry": 3},
}

#: which dataset kinds can feed a wrapper that consumes a kind (the key)
_FEEDS: dict[str, tuple[str, ...]] = {"pair": ("pair", "moments"), "moments": ("moments",), "clip": ("clip",),
                                      "unpaired": ("unpaired",)}


def check_kind(kind: str) -> str:
    """``kind`` if it is a known sample kind, else a :class:`DataError` listing them."""
    if kind not in SAMPLE_KINDS:
        raise DataError(f"unknown sample kind {kind!r}; known kinds: {sorted(SAMPLE_KINDS)}")
    return kind


def compatible(dataset_kind_: str, wrapper_kind: str) -> bool:
    """Whether items of ``dataset_kind_`` can train a wrapper consuming ``wrapper_kind``."""
    return dataset_kind_ in _FEEDS[check_kind(wrapper_kind)]


def dataset_kind(ds: Any, default: str = "moments") -> str:
    """A dataset's declared ``kind`` (datasets from before the contract are ``moments``: CFMD-GAN windows)."""
    return check_kind(str(getattr(ds, "kind", default)))


def check_item(kind: str, item: Mapping[str, Any], where: str = "dataset item") -> None:
    """Raise :class:`DataError` naming the problem if ``item`` (batched or not) is not a ``kind`` sample."""
    spec = SAMPLE_KINDS[check_kind(kind)]
    if not isinstance(item, Mapping):
        raise DataError(f"{where}: a {kind!r} sample must be a dict with keys {sorted(spec)}, got {type(item).__name__}")
    missing = [k for k in spec if k not in item]
    if missing:
        raise DataError(f"{where}: a {kind!r} sample needs keys {sorted(spec)}; missing {missing}")
    for key, rank in spec.items():
        v = item[key]
        if not isinstance(v, torch.Tensor):
            raise DataError(f"{where}: {key!r} must be a torch.Tensor, got {type(v).__name__}")
        if rank and v.dim() not in (rank, rank + 1):
            raise DataError(f"{where}: {key!r} must have {rank} dims (or {rank + 1} batched), got shape "
                            f"{tuple(v.shape)}")
        if rank and v.shape[-3 if rank == 3 else -3] != 3:
            raise DataError(f"{where}: {key!r} must have 3 (RGB) channels, got shape {tuple(v.shape)}")
