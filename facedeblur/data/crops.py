"""Face crops from video frames, shared by the data engine, the VLA windows and the benchmark sets.

The crop is the one the face pipeline's training data uses: the (window-averaged) 68-landmark box, enlarged by
0.5x its width/height on each side, squared, resized to the face size.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

__all__ = ["thumb", "dedup", "crop_box", "crop", "sharpness"]


def thumb(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)


def dedup(frames: Iterator[np.ndarray], threshold: float, kept: list[int]) -> Iterator[np.ndarray]:
    """Drop repeated frames (clips converted from another frame rate repeat them): a frame whose 64-px grey
    thumbnail differs from the last kept one by less than ``threshold`` grey levels (mean abs) is skipped; the
    indices of the kept frames are appended to ``kept``."""
    last = None
    for i, rgb in enumerate(frames):
        th = thumb(rgb)
        if last is not None and float(np.abs(th - last).mean()) < threshold:
            continue
        last = th
        kept.append(i)
        yield rgb


def crop_box(boxes: np.ndarray, enlarge: float) -> tuple[float, float, float]:
    """Window-averaged landmark box -> enlarged square (cx, cy, side)."""
    x0, y0, x1, y1 = boxes.mean(axis=0)
    w, h = x1 - x0, y1 - y0
    x0, y0, x1, y1 = x0 - enlarge * w, y0 - enlarge * h, x1 + enlarge * w, y1 + enlarge * h
    return (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)


def crop(rgb: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """The square ``side`` x ``side`` box centred on (cx, cy), resized to ``size`` x ``size``.

    Geometry (both branches, and the landmark transform of :func:`facedeblur.data.engine._prepare_clip`): a source point p (pixel-centre
    coordinates, as landmarks are) lands at crop coordinate ``(p - (c - side/2)) * size/side``. Pixels outside
    the image repeat the border.
    """
    import cv2

    scale = size / side
    if scale < 1:  # shrink with area averaging: crisp, alias-free faces from high-resolution clips
        # patch with a margin of a few source pixels (so the area filter never sees the replicated border of
        # the patch itself), area-resized by exactly ``scale``, then shifted by the sub-pixel remainder.
        # INTER_AREA maps pixel edges to pixel edges: x_small + 0.5 = scale * (x_patch + 0.5).
        margin = int(np.ceil(1 / scale)) + 1
        x0, y0 = int(np.floor(cx - side / 2)) - margin, int(np.floor(cy - side / 2)) - margin
        s = int(np.ceil(side)) + 2 * margin + 1
        pad = max(0, -x0, -y0, x0 + s - rgb.shape[1], y0 + s - rgb.shape[0])
        src = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else rgb
        patch = src[y0 + pad:y0 + pad + s, x0 + pad:x0 + pad + s]
        small = cv2.resize(patch, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        # wanted: x_dst = scale * (x_src - cx + side/2) with x_src = x_patch + x0
        off_x = scale * (cx - side / 2 - x0 + 0.5) - 0.5
        off_y = scale * (cy - side / 2 - y0 + 0.5) - 0.5
        m = np.array([[1, 0, -off_x], [0, 1, -off_y]], dtype=np.float64)
        return cv2.warpAffine(small, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    m = np.array([[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]], dtype=np.float64)
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def sharpness(rgb: np.ndarray) -> float:
    import cv2

    return float(cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())
