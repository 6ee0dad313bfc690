"""Paste restored face crops back into the photo: inverse warp, feathered mask, optional colour matching.

Blending (PEERS §9 item 7, "visible box / seams"): every crop gets a soft square mask, 1 inside and falling to 0
at the crop border over a band of ``feather`` x the crop side (a smoothstep ramp), so the band is proportional to
the face size in the photo. The mask is warped into the photo with the inverse similarity transform; only pixels
inside a crop's footprint can change, the rest are returned bit-exact.

By default the **residual** is pasted: ``out = in + blend * mask * warp^-1(restored - crop)``. Resampling then
only touches what the model changed (an identity model returns the photo exactly, a large face keeps the detail of
the original beyond the crop's resolution). ``mode="replace"`` pastes the restored pixels themselves
(``out = in + blend * mask * (warp^-1(restored) - in)``), as GFPGAN/facexlib do. Where crops overlap their
corrections are averaged with the mask weights (never added twice).

Colour matching (PEERS §9 item 8): Reinhard, Ashikhmin, Gooch & Shirley, "Color Transfer between Images", IEEE
CG&A 21(5), 2001 -- per channel of CIE L*a*b*, ``(x - mean_restored) / std_restored * std_input + mean_input``,
the statistics taken over the crop weighted by its paste mask; ``"lab-mean"`` shifts the means only (keeps the
restored contrast, e.g. sharpened detail).
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np

from ..errors import InputError
from .align import invert_affine

__all__ = ["crop_mask", "footprint", "face_mask", "color_match", "paste_back", "COLOR_MATCH_MODES"]

COLOR_MATCH_MODES = ("lab-mean-std", "lab-mean")


def _check_feather(feather: float) -> float:
    if isinstance(feather, bool) or not isinstance(feather, (int, float)) or not 0.0 <= feather <= 0.5 \
            or math.isnan(feather):
        raise InputError(f"feather={feather!r}: the feather band is a fraction of the crop side in [0, 0.5] "
                         "(default 0.1; 0 = hard edge)")
    return float(feather)


def crop_mask(size: int, feather: float = 0.1) -> np.ndarray:
    """(size, size) float32 paste mask in crop coordinates: 1 inside, a smoothstep ramp to exactly 0 on the outer
    pixel ring over ``feather * size`` px at each border (``feather=0``: all ones, a hard edge)."""
    feather = _check_feather(feather)
    if feather == 0.0:
        return np.ones((size, size), np.float32)
    i = np.arange(size, dtype=np.float64)
    d = np.minimum(i, size - 1 - i)  # distance to the outer pixel ring
    t = np.clip(d / (feather * size), 0.0, 1.0)
    r = t * t * (3.0 - 2.0 * t)
    return np.outer(r, r).astype(np.float32)


def footprint(m: np.ndarray, size: int, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """The pixel box (x0, y0, x1, y1), clipped to an image of ``shape``, that a ``size`` crop taken with affine
    ``m`` (image -> crop) covers when warped back (one pixel of margin for interpolation); None if off-image."""
    inv = invert_affine(m)
    corners = np.array([[-1, -1, 1], [size, -1, 1], [-1, size, 1], [size, size, 1]], dtype=np.float64) @ inv.T
    h, w = shape[:2]
    x0, y0 = np.floor(corners.min(0)).astype(int).tolist()
    x1, y1 = (np.ceil(corners.max(0)).astype(int) + 1).tolist()
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _warp_back(src: np.ndarray, m: np.ndarray, box: tuple[int, int, int, int], interp: int) -> np.ndarray:
    """``src`` (crop coordinates) resampled onto the image pixels of ``box``; zero outside the crop."""
    import cv2

    x0, y0, x1, y1 = box
    a, t = np.asarray(m, dtype=np.float64)[:, :2], np.asarray(m, dtype=np.float64)[:, 2]
    m_box = np.hstack([a, (a @ np.array([x0, y0], dtype=np.float64) + t)[:, None]])  # box pixel -> crop
    out = cv2.warpAffine(src, m_box, (x1 - x0, y1 - y0), flags=interp | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if src.ndim == 3 and out.ndim == 2:
        out = out[..., None]
    return out


def face_mask(m: np.ndarray, size: int, shape: tuple[int, ...], feather: float = 0.1) -> np.ndarray:
    """The HxW float32 paste mask of one face in image coordinates (0 outside its crop footprint)."""
    import cv2

    full = np.zeros(shape[:2], np.float32)
    box = footprint(m, size, shape)
    if box is not None:
        x0, y0, x1, y1 = box
        full[y0:y1, x0:x1] = _warp_back(crop_mask(size, feather), m, box, cv2.INTER_LINEAR)
    return full


def color_match(restored: np.ndarray, reference: np.ndarray, weights: np.ndarray | None = None,
                mode: str = "lab-mean-std") -> np.ndarray:
    """Reinhard colour transfer in CIE L*a*b*: ``restored`` (HxWx3 float RGB in [0, 1]) gets the per-channel
    mean (and, for ``"lab-mean-std"``, standard deviation) of ``reference``, weighted by ``weights`` (HxW)."""
    import cv2

    if mode not in COLOR_MATCH_MODES:
        raise InputError(f"color_match={mode!r}: use True / 'lab-mean-std' (mean and spread) or 'lab-mean'")
    lab_r = cv2.cvtColor(np.ascontiguousarray(restored, dtype=np.float32), cv2.COLOR_RGB2Lab).astype(np.float64)
    lab_i = cv2.cvtColor(np.ascontiguousarray(reference, dtype=np.float32), cv2.COLOR_RGB2Lab).astype(np.float64)
    w = np.ones(lab_r.shape[:2]) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / max(float(w.sum()), 1e-12)
    mu_r = np.tensordot(w, lab_r, axes=([0, 1], [0, 1]))
    mu_i = np.tensordot(w, lab_i, axes=([0, 1], [0, 1]))
    out = lab_r - mu_r
    if mode == "lab-mean-std":
        sd_r = np.sqrt(np.tensordot(w, (lab_r - mu_r) ** 2, axes=([0, 1], [0, 1])))
        sd_i = np.sqrt(np.tensordot(w, (lab_i - mu_i) ** 2, axes=([0, 1], [0, 1])))
        # a flat channel (e.g. a/b of a gray face) has no spread to match: keep it (ratio 1)
        ratio = np.where(sd_r > 1e-3, sd_i / np.maximum(sd_r, 1e-3), 1.0)
        out = out * ratio
    out = (out + mu_i).astype(np.float32)
    rgb = cv2.cvtColor(out, cv2.COLOR_Lab2RGB)
    return np.clip(rgb, 0.0, 1.0)


def paste_back(img: np.ndarray, faces: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], *,
               feather: float = 0.1, blend: float = 1.0,
               mode: Literal["residual", "replace"] = "residual") -> np.ndarray:
    """Blend restored crops into ``img`` (HxWx3 float32 RGB in [0, 1]; not modified); returns a new array.

    ``faces``: (affine image -> crop (2x3), input crop (SxSx3), restored crop (SxSx3)) per face. ``blend`` in
    [0, 1]: 0 returns ``img`` unchanged, 1 the full restoration. Work is limited to each crop's footprint."""
    import cv2

    feather = _check_feather(feather)
    if mode not in ("residual", "replace"):
        raise InputError(f"paste mode {mode!r}: use 'residual' (default) or 'replace'")
    out = np.array(img, dtype=np.float32, copy=True)
    if blend == 0.0 or not faces:
        return out
    acc = np.zeros_like(out)
    wsum = np.zeros(out.shape[:2], np.float32)
    masks: dict[int, np.ndarray] = {}
    for m, crop, restored in faces:
        size = int(restored.shape[0])
        box = footprint(m, size, out.shape)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        if size not in masks:
            masks[size] = crop_mask(size, feather)
        mask = _warp_back(masks[size], m, box, cv2.INTER_LINEAR)
        if mode == "residual":
            delta = _warp_back(np.ascontiguousarray(restored - crop, dtype=np.float32), m, box, cv2.INTER_CUBIC)
        else:
            delta = _warp_back(np.ascontiguousarray(restored, dtype=np.float32), m, box, cv2.INTER_CUBIC) \
                - img[y0:y1, x0:x1]
        acc[y0:y1, x0:x1] += mask[..., None] * delta
        wsum[y0:y1, x0:x1] += mask
    changed = wsum > 0
    out[changed] += float(blend) * acc[changed] / np.maximum(wsum[changed], 1.0)[:, None]
    return np.clip(out, 0.0, 1.0, out=out)
