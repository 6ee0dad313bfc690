"""Full-reference fidelity: PSNR and SSIM on numpy images, with every convention explicit.

Inputs are HxW or HxWx3 **RGB** numpy arrays, channels last, both of the same shape and dtype. The data range
is 255 for uint8, 65535 for uint16 and 1 for float (float images must lie in [0, 1]) unless ``data_range`` is
given. Everything is computed in float64.

* ``crop_border``: pixels removed from each of the four borders before the metric (BasicSR's convention).
* ``test_y_channel``: compare only the luma Y of ITU-R BT.601 as MATLAB's ``rgb2ycbcr`` computes it (and
  BasicSR's ``test_y_channel``): ``Y = 16 + (65.481 R + 128.553 G + 24.966 B)`` on R, G, B in [0, 1], i.e.
  Y in [16, 235] on the 255 scale (scaled to the input's data range). Note that pyiqa's "Y" is YIQ instead.
* PSNR: ``10 log10(data_range^2 / MSE)``, MSE over all pixels and channels; ``inf`` for identical images
  (scikit-image and BasicSR agree).
* SSIM, two conventions that give different numbers:

  - ``"skimage"``: scikit-image's default ``structural_similarity`` (7x7 uniform window, sample covariance
    N/(N-1), K1 = 0.01, K2 = 0.03, reflect padding then mean over the region (win-1)/2 px from the border,
    mean over channels). Matches ``skimage.metrics.structural_similarity(ref, img, data_range=R,
    channel_axis=-1)`` to 1e-10 on float64 (skimage computes float32 inputs in float32).
  - ``"matlab"``: Wang et al. 2004 ``ssim.m`` as BasicSR's ``calculate_ssim`` ports it (11x11 Gaussian,
    sigma 1.5, population statistics, C1 = (0.01 R)^2, C2 = (0.03 R)^2, "valid" region only, i.e. 5 px lost at
    each border, per-channel SSIM averaged for RGB). Like BasicSR and pyiqa there is no automatic
    downsampling (``ssim.m`` downsamples images larger than 256 px by round(min(H, W) / 256)).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import InputError
from ._common import check_pair

__all__ = ["psnr", "ssim", "rgb_to_y", "describe", "PSNR", "SSIM", "SSIM_CONVENTIONS"]

SSIMConvention = Literal["skimage", "matlab"]
SSIM_CONVENTIONS: dict[str, str] = {
    "skimage": "SSIM scikit-image default (7x7 uniform window, sample covariance, K1=0.01, K2=0.03, channel mean)",
    "matlab": "SSIM MATLAB/Wang et al. as BasicSR (11x11 Gaussian sigma=1.5, K1=0.01, K2=0.03, valid region, "
              "channel mean, no downsampling)",
}

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def rgb_to_y(img: np.ndarray, data_range: float) -> np.ndarray:
    """BT.601 luma (MATLAB ``rgb2ycbcr``) of an HxWx3 RGB array on the scale of ``data_range``, float64, HxW."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"test_y_channel needs RGB images of shape HxWx3, got {img.shape}; "
                         "a grey image is already a luma channel: use test_y_channel=False")
    rgb = img.astype(np.float64) / data_range
    return (16.0 / 255.0 + rgb @ _Y_WEIGHTS / 255.0) * data_range


def _prepare(img: object, ref: object, crop_border: int, test_y_channel: bool, data_range: float | None
             ) -> tuple[np.ndarray, np.ndarray, float]:
    a, b, rng = check_pair(img, ref, data_range)
    if not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise InputError(f"crop_border must be an int >= 0, got {crop_border!r}")
    if crop_border:
        if 2 * crop_border >= min(a.shape[:2]):
            raise InputError(f"crop_border={crop_border} removes the whole {a.shape[0]}x{a.shape[1]} image")
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel:
        return rgb_to_y(a, rng), rgb_to_y(b, rng), rng
    a, b = a.astype(np.float64), b.astype(np.float64)
    if a.ndim == 3 and a.shape[2] == 1:
        a, b = a[..., 0], b[..., 0]
    return a, b, rng


def psnr(img: np.ndarray, ref: np.ndarray, *, crop_border: int = 0, test_y_channel: bool = False,
         data_range: float | None = None) -> float:
    """PSNR (dB) of ``img`` against ``ref``; ``inf`` for identical images. See the module docstring."""
    a, b, rng = _prepare(img, ref, crop_border, test_y_channel, data_range)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0.0 else float(10.0 * np.log10(rng * rng / mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _ssim_channel_skimage(x: np.ndarray, y: np.ndarray, rng: float, win: int = 7) -> float:
    from scipy.ndimage import uniform_filter

    n = win * win
    cov_norm = n / (n - 1.0)

    def f(t: np.ndarray) -> np.ndarray:
        return uniform_filter(t, size=win, mode="reflect")

    ux, uy = f(x), f(y)
    vx = cov_norm * (f(x * x) - ux * ux)
    vy = cov_norm * (f(y * y) - uy * uy)
    vxy = cov_norm * (f(x * y) - ux * uy)
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean(dtype=np.float64))


def _ssim_channel_matlab(x: np.ndarray, y: np.ndarray, rng: float) -> float:
    from scipy.ndimage import correlate1d

    g = _gaussian_window(11, 1.5)

    def f(t: np.ndarray) -> np.ndarray:  # separable 11x11 Gaussian, keep the valid region only
        return correlate1d(correlate1d(t, g, axis=0, mode="nearest"), g, axis=1, mode="nearest")[5:-5, 5:-5]

    ux, uy = f(x), f(y)
    vx = f(x * x) - ux * ux
    vy = f(y * y) - uy * uy
    vxy = f(x * y) - ux * uy
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return float(s.mean(dtype=np.float64))


def ssim(img: np.ndarray, ref: np.ndarray, *, crop_border: int = 0, test_y_channel: bool = False,
         data_range: float | None = None, convention: SSIMConvention = "matlab") -> float:
    """SSIM of ``img`` against ``ref`` in the given ``convention`` ("matlab" = BasicSR, or "skimage").

    Images must be at least 7x7 ("skimage") or 11x11 ("matlab") after ``crop_border``. See the module docstring.
    """
    if convention not in SSIM_CONVENTIONS:
        raise InputError(f"unknown SSIM convention {convention!r}; use one of {sorted(SSIM_CONVENTIONS)}")
    a, b, rng = _prepare(img, ref, crop_border, test_y_channel, data_range)
    need = 7 if convention == "skimage" else 11
    if min(a.shape[:2]) < need:
        raise InputError(f"SSIM ({convention}) needs images of at least {need}x{need} after crop_border, "
                         f"got {a.shape[0]}x{a.shape[1]}")
    fn = _ssim_channel_skimage if convention == "skimage" else _ssim_channel_matlab
    if a.ndim == 2:
        return fn(a, b, rng)
    return float(np.mean([fn(a[..., c], b[..., c], rng) for c in range(a.shape[2])]))


def describe(metric: Literal["psnr", "ssim"] = "psnr", *, crop_border: int = 0, test_y_channel: bool = False,
             convention: SSIMConvention = "matlab") -> str:
    """The convention of a PSNR/SSIM setting in one line, for report headers."""
    space = "Y (BT.601, MATLAB rgb2ycbcr)" if test_y_channel else "RGB"
    tail = f"{space}, crop {crop_border} px, float64, data range 255 (uint8) / 1 (float)"
    if metric == "psnr":
        return f"PSNR dB: {tail}, inf if identical"
    if metric == "ssim":
        if convention not in SSIM_CONVENTIONS:
            raise InputError(f"unknown SSIM convention {convention!r}; use one of {sorted(SSIM_CONVENTIONS)}")
        return f"{SSIM_CONVENTIONS[convention]}: {tail}"
    raise InputError(f"describe: unknown metric {metric!r}; use 'psnr' or 'ssim'")


@dataclass(frozen=True)
class PSNR:
    """A PSNR setting as an object: ``PSNR(crop_border=4, test_y_channel=True)(img, ref)``."""

    crop_border: int = 0
    test_y_channel: bool = False

    @property
    def convention(self) -> str:
        return describe("psnr", crop_border=self.crop_border, test_y_channel=self.test_y_channel)

    def __call__(self, img: np.ndarray, ref: np.ndarray) -> float:
        return psnr(img, ref, crop_border=self.crop_border, test_y_channel=self.test_y_channel)


@dataclass(frozen=True)
class SSIM:
    """An SSIM setting as an object: ``SSIM(convention="matlab")(img, ref)``."""

    crop_border: int = 0
    test_y_channel: bool = False
    convention_name: SSIMConvention = "matlab"

    @property
    def convention(self) -> str:
        return describe("ssim", crop_border=self.crop_border, test_y_channel=self.test_y_channel,
                        convention=self.convention_name)

    def __call__(self, img: np.ndarray, ref: np.ndarray) -> float:
        return ssim(img, ref, crop_border=self.crop_border, test_y_channel=self.test_y_channel,
                    convention=self.convention_name)
