"""Blur synthesis and facial-motion-based reordering (FMR).

* Frame averaging (CFMD-GAN §4.1 Eq. 5, Chrysos et al. §3.4): ``b = mean(s[1..N])``; the camera response
  g is taken as identity, as in the authors' data code (uint8 mean of the frames).
* FMR (CFMD-GAN §4.1): sort the sharp frames by the left-eye position — x ascending, then y ascending,
  then time — and give the i-th frame (0-based) u = i / (N - 1).
* Camera-shake trajectories for stills: a smooth random 2-D path (with a small rotation) along which the
  sharp image is rendered at N sub-pixel positions and averaged, i.e. the exposure integral of the motion.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["average_frames", "fmr_order", "fmr_u", "shake_trajectory", "render_trajectory", "psnr_uint8"]


def average_frames(frames: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """Arithmetic mean of uint8 frames (N, H, W, 3), rounded to the nearest uint8 (CFMD-GAN §4.1 Eq. 5, g = id)."""
    stack = np.asarray(frames, dtype=np.float32)
    if stack.ndim != 4 or len(stack) == 0:
        raise InputError(f"average_frames needs a non-empty stack of HxWxC frames (N, H, W, C); got shape "
                         f"{stack.shape}")
    return np.clip(np.rint(stack.mean(axis=0)), 0, 255).astype(np.uint8)


def fmr_order(eyes: np.ndarray) -> list[int]:
    """Indices of frames in FMR order given left-eye positions (N, 2) as (x, y) in pixels.

    Positions are compared as integers (pixel grid, as in the authors' code); ties keep temporal order.
    """
    eyes = np.asarray(eyes, dtype=np.float64)
    if eyes.ndim != 2 or eyes.shape[1] != 2 or not np.isfinite(eyes).all():
        raise InputError(f"fmr_order needs finite left-eye positions of shape (N, 2) as (x, y); got {eyes.shape}")
    eyes = np.rint(eyes).astype(np.int64)
    return sorted(range(len(eyes)), key=lambda t: (int(eyes[t, 0]), int(eyes[t, 1]), t))


def fmr_u(n: int) -> np.ndarray:
    """u of the i-th frame in FMR order: i / (N - 1), covering [0, 1] inclusive (N >= 2)."""
    if n < 2:
        raise InputError(f"FMR needs at least 2 frames for u = i/(N-1); got N={n}")
    return np.arange(n, dtype=np.float32) / (n - 1)


def shake_trajectory(rng: np.random.Generator, n: int, extent: float, max_angle_deg: float = 1.0) -> np.ndarray:
    """A smooth random camera-shake path: (n, 3) rows of (dx, dy, angle_deg), centred on zero.

    A random walk with momentum (DeblurGAN-style), rescaled so its longest axis spans ``extent`` pixels.
    """
    vel = rng.normal(size=2)
    vel /= np.linalg.norm(vel) + 1e-9
    pts = [np.zeros(2)]
    for _ in range(n - 1):
        vel = 0.7 * vel + 0.3 * rng.normal(size=2)
        vel /= np.linalg.norm(vel) + 1e-9
        pts.append(pts[-1] + vel)
    path = np.array(pts)
    path -= path.mean(axis=0)
    span = np.ptp(path, axis=0).max()
    path *= extent / max(span, 1e-9)
    angles = np.linspace(-1, 1, n) * rng.uniform(-max_angle_deg, max_angle_deg)
    return np.column_stack([path, angles]).astype(np.float32)


def render_trajectory(img: np.ndarray, traj: np.ndarray) -> np.ndarray:
    """The image seen at each pose of ``traj`` (n, H, W, 3) uint8, by sub-pixel affine warps (reflect border)."""
    import cv2

    h, w = img.shape[:2]
    out = []
    for dx, dy, ang in traj:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), float(ang), 1.0)
        m[:, 2] += (dx, dy)
        out.append(cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101))
    return np.stack(out)


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two uint8 images over all channels, data range 255 (inf for identical images);
    :func:`facedeblur.metrics.psnr` with its defaults."""
    from ..metrics.fidelity import psnr

    return psnr(a, b)
