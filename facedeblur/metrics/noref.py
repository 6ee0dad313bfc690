"""No-reference sharpness scores, for real blurry images that have no sharp ground truth (higher = sharper).

Both work on the BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` on the 0-255 scale, in float64 (uint8 input, or
float input in [0, 1] scaled by 255), with reflect-101 borders (OpenCV's default). Both depend on image size
and content: compare methods on the same images at the same resolution, never across datasets.

* :func:`laplacian_variance`: variance of the 3x3 Laplacian ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]`` over all
  pixels (Pech-Pacheco et al. 2000; ``cv2.Laplacian(grey, cv2.CV_64F).var()``).
* :func:`tenengrad`: mean of the squared 3x3 Sobel gradient magnitude ``Gx^2 + Gy^2`` over all pixels
  (Tenenbaum's gradient focus measure, no threshold).
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ._common import as_image

__all__ = ["laplacian_variance", "tenengrad", "luma255", "LAPLACIAN_VARIANCE_CONVENTION", "TENENGRAD_CONVENTION"]

LAPLACIAN_VARIANCE_CONVENTION = ("sharpness = variance of the 3x3 Laplacian of BT.601 luma (0-255 scale, float64, "
                                 "reflect-101 border); higher = sharper; same resolution only")
TENENGRAD_CONVENTION = ("sharpness = mean squared 3x3 Sobel gradient magnitude of BT.601 luma (0-255 scale, float64, "
                        "reflect-101 border); higher = sharper; same resolution only")


def luma255(img: np.ndarray) -> np.ndarray:
    """BT.601 luma on the 0-255 scale, float64 HxW, from uint8 or float [0, 1] RGB (or grey) input."""
    img = as_image(img)
    if img.dtype == np.uint16:
        raise InputError("sharpness scores take uint8 or float [0, 1] images, got uint16; convert to uint8")
    x = img.astype(np.float64)
    if np.issubdtype(img.dtype, np.floating):
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"float images must lie in [0, 1] (found [{lo:.4g}, {hi:.4g}]); scale them first")
        x = x * 255.0
    if x.ndim == 3:
        x = x[..., 0] if x.shape[2] == 1 else x @ np.array([0.299, 0.587, 0.114])
    if min(x.shape) < 3:
        raise InputError(f"sharpness scores need images of at least 3x3, got {x.shape}")
    return x


def laplacian_variance(img: np.ndarray) -> float:
    """Variance of the Laplacian of the luma (see the module docstring)."""
    from scipy.ndimage import correlate

    k = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    return float(correlate(luma255(img), k, mode="mirror").var())


def tenengrad(img: np.ndarray) -> float:
    """Mean squared Sobel gradient magnitude of the luma (see the module docstring)."""
    from scipy.ndimage import correlate

    y = luma255(img)
    kx = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    gx, gy = correlate(y, kx, mode="mirror"), correlate(y, kx.T, mode="mirror")
    return float(np.mean(gx * gx + gy * gy))
