"""Classical baselines that every benchmark table carries next to the learned models.

Each baseline maps a blurry RGB uint8 face (H, W, 3) to a restored RGB uint8 face of the same size; those that
need the true blur kernel (``needs_kernel``) run only on samples that have one (the kernel-blur set) and are
labelled "oracle PSF": they know what no blind method knows, so they show what deconvolution *could* do.

* ``blurry``: the input itself (identity). Its PSNR is the sample's severity, so every gain is against it.
* ``unsharp``: unsharp masking, ``out = in + amount * (in - G_sigma * in)`` per RGB channel on [0, 1] floats,
  Gaussian sigma = 2 px (13 x 13 taps, reflect-101 border, ``cv2.GaussianBlur``), amount = 1, clipped to [0, 1].
* ``wiener-motion``: blind Wiener-Hunt deconvolution with a **linear motion PSF estimated per image** by a
  no-reference criterion, the power cepstrum (:func:`estimate_motion_psf`): a uniform linear blur of length L
  at angle a leaves a negative cepstral peak at distance L in direction a; the most negative cepstrum value on
  the grid L = 2..21 px x a = 0, 5, ..., 175 degrees gives (L, a); without a clear peak (its z-score over the
  grid above -2) the image is returned unchanged. The RGB channels are deconvolved with
  ``skimage.restoration.wiener`` (its default Laplacian regulariser, ``balance`` = 0.01).
* ``wiener-oracle``: Wiener-Hunt deconvolution (``skimage.restoration.wiener``, Laplacian regulariser,
  ``balance`` = 0.005) with the true kernel.
* ``rl-oracle``: Richardson-Lucy (``skimage.restoration.richardson_lucy``, 30 iterations) with the true kernel.

Boundaries: Wiener works in the Fourier domain (periodic). The image is edge-padded by the PSF size (>= 8 px) and
its borders are blended with a circularly blurred copy (:func:`edge_taper`, MATLAB's ``edgetaper``), so the
periodic extension has no wrap-around jump to ring on; after a first deconvolution the padding band is replaced
by the re-blurred estimate (a blur-consistent guess of the unseen surroundings) and the deconvolution is run
again; the result is cropped back. (Mirror padding is wrong here: it flips the direction of an oblique blur.)
Richardson-Lucy's convolutions are zero-padded, so the image is edge-padded by twice the kernel size first and
cropped back.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import InputError

__all__ = ["Baseline", "BASELINES", "get_baselines", "linear_motion_psf", "wiener_deconvolve",
           "richardson_lucy_deconvolve", "unsharp_mask", "estimate_motion_psf", "power_cepstrum", "edge_taper"]

_Y = np.array([0.299, 0.587, 0.114])


def _to_float(img: np.ndarray) -> np.ndarray:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"baselines take RGB uint8 (H, W, 3) images, got {img.dtype} {img.shape}")
    return img.astype(np.float64) / 255.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def _check_psf(psf: np.ndarray) -> np.ndarray:
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim != 2 or psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0:
        raise InputError(f"a PSF must be a 2-D array of odd size (centred), got shape {psf.shape}")
    s = psf.sum()
    if not np.isfinite(s) or s <= 0 or (psf < 0).any():
        raise InputError("a PSF must be non-negative with a positive sum")
    return psf / s


def linear_motion_psf(length: float, angle_deg: float, size: int | None = None) -> np.ndarray:
    """A normalised, anti-aliased straight-line motion PSF: a uniform motion over a segment of ``length`` px at
    ``angle_deg`` (0 = horizontal, counter-clockwise with image y pointing down), centred in an odd ``size`` x
    ``size`` array (default: the smallest odd size that holds it).

    The segment is sampled at 8 points per pixel and each point is splatted bilinearly; ``length`` < 0.5 is a delta.
    """
    if size is None:
        size = int(np.ceil(length)) + 1
        size += 1 - size % 2
    if size % 2 == 0:
        raise InputError(f"PSF size must be odd, got {size}")
    psf = np.zeros((size, size), dtype=np.float64)
    c = size // 2
    if length < 0.5:
        psf[c, c] = 1.0
        return psf
    n = max(2, int(np.ceil(length * 8)) + 1)
    t = np.linspace(-length / 2, length / 2, n)
    a = np.deg2rad(angle_deg)
    xs, ys = c + t * np.cos(a), c - t * np.sin(a)
    _splat(psf, xs, ys)
    return psf / psf.sum()


def _splat(grid: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> None:
    """Add unit mass at each (x, y), split bilinearly between the four neighbouring cells (clipped to the grid)."""
    h, w = grid.shape
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = np.clip(x0 + dx, 0, w - 1), np.clip(y0 + dy, 0, h - 1)
        np.add.at(grid, (yi, xi), wt)


def _otf(psf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Transfer function of a centred odd-sized PSF on a periodic grid of ``shape``."""
    pad = np.zeros(shape, dtype=np.float64)
    kh, kw = psf.shape
    pad[:kh, :kw] = psf
    pad = np.roll(pad, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    return np.fft.fft2(pad)


def edge_taper(x: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Blend the borders of a 2-D image with its circularly blurred copy, weighted by the PSF's autocorrelation
    (MATLAB's ``edgetaper``): the periodic extension becomes as smooth as a blurred image, so Fourier-domain
    deconvolution does not ring at the wrap-around."""
    blurred = np.real(np.fft.ifft2(np.fft.fft2(x) * _otf(psf, x.shape)))
    alpha = np.ones_like(x)
    for axis in (0, 1):
        n = x.shape[axis]
        proj = psf.sum(axis=1 - axis)
        z = np.real(np.fft.ifft(np.abs(np.fft.fft(proj, n - 1)) ** 2))
        z = z / z.max()
        a = 1.0 - np.concatenate([z, z[:1]])
        alpha *= a[:, None] if axis == 0 else a[None, :]
    return alpha * x + (1.0 - alpha) * blurred


def _circular_blur(x: np.ndarray, psf: np.ndarray) -> np.ndarray:
    return np.real(np.fft.ifft2(np.fft.fft2(x) * _otf(psf, x.shape)))


def _wiener_plane(y: np.ndarray, psf: np.ndarray, balance: float) -> np.ndarray:
    """Wiener-Hunt deconvolution of one plane with unknown boundaries (see the module docstring)."""
    from skimage.restoration import wiener

    h, w = y.shape
    p = max(8, max(psf.shape))
    padded = np.pad(y, p, mode="edge")
    x = wiener(edge_taper(padded, psf), psf, balance, clip=False)
    padded = _circular_blur(x, psf)  # the band outside the image: the re-blurred first estimate
    padded[p:p + h, p:p + w] = y
    return wiener(edge_taper(padded, psf), psf, balance, clip=False)[p:p + h, p:p + w]


def wiener_deconvolve(img: np.ndarray, psf: np.ndarray, balance: float = 0.002) -> np.ndarray:
    """Wiener-Hunt deconvolution of an RGB uint8 image with ``psf`` (each channel; mirrored boundaries)."""
    x, psf = _to_float(img), _check_psf(psf)
    return _to_uint8(np.stack([_wiener_plane(x[..., c], psf, balance) for c in range(3)], axis=-1))


def richardson_lucy_deconvolve(img: np.ndarray, psf: np.ndarray, num_iter: int = 30) -> np.ndarray:
    """Richardson-Lucy deconvolution of an RGB uint8 image with ``psf`` (each channel; reflect-padded)."""
    from skimage.restoration import richardson_lucy

    x, psf = _to_float(img), _check_psf(psf)
    p = 2 * max(psf.shape)
    h, w = x.shape[:2]
    out = []
    for c in range(3):
        padded = np.pad(x[..., c], p, mode="edge")
        out.append(richardson_lucy(padded, psf, num_iter=num_iter, clip=True)[p:p + h, p:p + w])
    return _to_uint8(np.stack(out, axis=-1))


def unsharp_mask(img: np.ndarray, radius: float = 2.0, amount: float = 1.0) -> np.ndarray:
    """Unsharp masking per RGB channel: ``x + amount * (x - G_radius * x)``, clipped to [0, 1]."""
    import cv2

    x = _to_float(img)
    k = int(np.ceil(3 * radius)) * 2 + 1
    low = cv2.GaussianBlur(x, (k, k), sigmaX=radius, sigmaY=radius, borderType=cv2.BORDER_REFLECT_101)
    return _to_uint8(x + amount * (x - low))


MOTION_LENGTHS: tuple[int, ...] = tuple(range(2, 22))
MOTION_ANGLES: tuple[int, ...] = tuple(range(0, 180, 5))
CEPSTRUM_Z: float = -2.0


def power_cepstrum(img: np.ndarray) -> np.ndarray:
    """``real(ifft2(log(|fft2(w * (Y - mean Y))| + 1e-3)))``, fft-shifted (origin at (H//2, W//2)), of the BT.601
    luma Y in [0, 1] of an RGB uint8 image, with a 2-D Hann window ``w``."""
    y = _to_float(img) @ _Y
    y = y - y.mean()
    h, w = y.shape
    spec = np.abs(np.fft.fft2(y * np.outer(np.hanning(h), np.hanning(w))))
    return np.fft.fftshift(np.real(np.fft.ifft2(np.log(spec + 1e-3))))


def estimate_motion_psf(img: np.ndarray, lengths: tuple[int, ...] = MOTION_LENGTHS,
                        angles: tuple[int, ...] = MOTION_ANGLES, z_threshold: float = CEPSTRUM_Z
                        ) -> tuple[float, int, float, np.ndarray]:
    """(length, angle, z, psf) of a linear motion blur estimated from the power cepstrum (Rom 1975; Cannon 1976):
    a uniform linear blur of length L at angle a puts periodic zeros in the spectrum, i.e. a negative cepstral
    peak at distance L in direction a. The cepstrum is read (bilinearly) at every (L, a) of the grid; the most
    negative value wins. ``z`` is its z-score over the grid; if ``z > z_threshold`` there is no clear peak,
    the image is taken as unblurred and ``length`` is 0 (a delta PSF)."""
    from scipy.ndimage import map_coordinates

    cep = power_cepstrum(img)
    h, w = cep.shape
    ll, aa = np.meshgrid(np.asarray(lengths, float), np.deg2rad(np.asarray(angles, float)), indexing="ij")
    rows, cols = h // 2 - ll * np.sin(aa), w // 2 + ll * np.cos(aa)
    vals = map_coordinates(cep, [rows.ravel(), cols.ravel()], order=1).reshape(ll.shape)
    i, j = np.unravel_index(int(np.argmin(vals)), vals.shape)
    sd = float(vals.std())
    z = float((vals[i, j] - vals.mean()) / sd) if sd > 0 else 0.0
    if z > z_threshold:
        return 0.0, 0, z, linear_motion_psf(0, 0)
    length, angle = float(lengths[i]), int(angles[j])
    return length, angle, z, linear_motion_psf(length, angle)


@dataclass(frozen=True)
class Baseline:
    """A classical method as a benchmark row: ``fn(blurry, kernel) -> (restored, extra info)``."""

    name: str
    description: str
    fn: Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, dict[str, Any]]] = field(compare=False)
    params: dict[str, Any] = field(default_factory=dict)
    needs_kernel: bool = False

    @property
    def key(self) -> str:
        """Resume key: the name and a short hash of the parameters (a change of parameters starts afresh)."""
        h = hashlib.sha256(json.dumps({"name": self.name, **self.params}, sort_keys=True).encode()).hexdigest()
        return f"{self.name}@{h[:12]}"

    def __call__(self, blurry: np.ndarray, kernel: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if self.needs_kernel and kernel is None:
            raise InputError(f"baseline {self.name!r} needs the true blur kernel (oracle PSF)")
        return self.fn(blurry, kernel)


def _blurry(b: np.ndarray, k: np.ndarray | None) -> tuple[np.ndarray, dict[str, Any]]:
    return b.copy(), {}


def _unsharp(b: np.ndarray, k: np.ndarray | None) -> tuple[np.ndarray, dict[str, Any]]:
    return unsharp_mask(b, 2.0, 1.0), {}


def _wiener_motion(b: np.ndarray, k: np.ndarray | None) -> tuple[np.ndarray, dict[str, Any]]:
    length, angle, z, psf = estimate_motion_psf(b)
    out = b.copy() if length == 0 else wiener_deconvolve(b, psf, 0.01)
    return out, {"psf_length": length, "psf_angle": angle, "cepstrum_z": round(z, 3)}


def _wiener_oracle(b: np.ndarray, k: np.ndarray | None) -> tuple[np.ndarray, dict[str, Any]]:
    return wiener_deconvolve(b, k, 0.005), {}


def _rl_oracle(b: np.ndarray, k: np.ndarray | None) -> tuple[np.ndarray, dict[str, Any]]:
    return richardson_lucy_deconvolve(b, k, 30), {}


BASELINES: dict[str, Baseline] = {b.name: b for b in (
    Baseline("blurry", "the blurry input itself (no restoration)", _blurry, {"v": 1}),
    Baseline("unsharp", "unsharp masking per RGB channel, Gaussian sigma 2 px, amount 1", _unsharp,
             {"radius": 2.0, "amount": 1.0}),
    Baseline("wiener-motion", "Wiener-Hunt deconvolution (balance 0.01) with a linear motion PSF (length 2-21 px, "
             "angle 0-175 deg) estimated per image from the luma's power cepstrum; no deconvolution without a clear "
             "cepstral peak (z > -2)", _wiener_motion,
             {"balance": 0.01, "lengths": list(MOTION_LENGTHS), "angles": list(MOTION_ANGLES), "z": CEPSTRUM_Z,
              "v": 1}),
    Baseline("wiener-oracle", "Wiener-Hunt deconvolution (balance 0.005) with the true kernel (oracle PSF; "
             "kernel-blur set only)", _wiener_oracle, {"balance": 0.005, "v": 1}, needs_kernel=True),
    Baseline("rl-oracle", "Richardson-Lucy, 30 iterations, with the true kernel (oracle PSF; kernel-blur set only)",
             _rl_oracle, {"num_iter": 30, "v": 1}, needs_kernel=True),
)}


def get_baselines(names: str | list[str] | None) -> list[Baseline]:
    """Baselines by name: ``"all"`` (or None), ``"none"``, or a comma list of :data:`BASELINES` keys."""
    if names is None or names == "all":
        return list(BASELINES.values())
    if names == "none" or names == []:
        return []
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise InputError(f"unknown baseline(s) {unknown}; choose from {', '.join(BASELINES)} (or 'all', 'none')")
    return [BASELINES[n] for n in names]
