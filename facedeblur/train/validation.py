"""Validation metrics for training: PSNR and SSIM (scikit-image definitions, data range 1, RGB), by severity bin.

``psnr`` matches ``skimage.metrics.peak_signal_noise_ratio(gt, img, data_range=1)`` and ``ssim`` matches
``skimage.metrics.structural_similarity(gt, img, data_range=1, channel_axis=-1)`` (7x7 uniform window,
sample covariance, K1=0.01, K2=0.03, mean over the valid region and the channels); both are computed in
float64 (identical images are capped at 100 dB so means stay finite; ``facedeblur.metrics.psnr`` returns inf).
Severity is the PSNR of the blurry input against the sharp target (dB); bins from ``facedeblur.metrics.severity``.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F

from ..metrics.severity import SEVERITY_BINS, severity_bin

__all__ = ["psnr", "ssim", "SEVERITY_BINS", "severity_bin", "summarize", "format_table"]

_MSE_FLOOR = 1e-10  # PSNR of identical images is capped at 100 dB so means stay finite


def psnr(img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB, data range 1) of (N, C, H, W) tensors, float64."""
    mse = (img.double() - ref.double()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(_MSE_FLOOR))


def ssim(img: torch.Tensor, ref: torch.Tensor, win_size: int = 7) -> torch.Tensor:
    """Per-image SSIM of (N, C, H, W) tensors in [0, 1], float64, as scikit-image computes it."""
    x, y = img.double(), ref.double()
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"SSIM needs images of at least {win_size}x{win_size}, got {tuple(x.shape[-2:])}")
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    n_px = win_size * win_size
    cov_norm = n_px / (n_px - 1)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, win_size, stride=1)  # the valid region = skimage's filter, cropped by (win-1)/2

    ux, uy = filt(x), filt(y)
    vx = cov_norm * (filt(x * x) - ux * ux)
    vy = cov_norm * (filt(y * y) - uy * uy)
    vxy = cov_norm * (filt(x * y) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(-2, -1)).mean(dim=1)


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def summarize(rows: Iterable[Mapping[str, float]]) -> dict[str, Any]:
    """Aggregate per-image rows ``{psnr, ssim, psnr_blurry, ssim_blurry, severity}`` into a table.

    Returns overall means, the mean PSNR/SSIM gain over the blurry input, per-bin entries (bins with no
    image are listed with ``n = 0``), and ``worst_bin``: the non-empty bin with the lowest mean PSNR gain.
    """
    rows = list(rows)
    keys = ("psnr", "ssim", "psnr_blurry", "ssim_blurry")

    def agg(sel: list[Mapping[str, float]]) -> dict[str, float]:
        out: dict[str, float] = {"n": len(sel)}
        for k in keys:
            out[k] = _mean([r[k] for r in sel])
        out["psnr_gain"] = out["psnr"] - out["psnr_blurry"] if sel else float("nan")
        out["ssim_gain"] = out["ssim"] - out["ssim_blurry"] if sel else float("nan")
        return out

    table: dict[str, Any] = agg(rows)
    bins = {}
    for label, _, _ in SEVERITY_BINS:
        bins[label] = agg([r for r in rows if severity_bin(float(r["severity"])) == label])
    table["bins"] = bins
    filled = [(v["psnr_gain"], k) for k, v in bins.items() if v["n"]]
    table["worst_bin"] = min(filled)[1] if filled else None
    return table


def format_table(table: Mapping[str, Any]) -> str:
    """A small text table of :func:`summarize` output (severity = blurry-input PSNR)."""
    head = f"{'severity':>9} {'n':>5} {'blurry PSNR':>11} {'SSIM':>6} {'output PSNR':>11} {'SSIM':>6} {'gain dB':>8}"
    lines = [head]

    def line(label: str, e: Mapping[str, float]) -> str:
        if not e["n"]:
            return f"{label:>9} {0:>5} {'-':>11} {'-':>6} {'-':>11} {'-':>6} {'-':>8}"
        return (f"{label:>9} {e['n']:>5} {e['psnr_blurry']:>11.2f} {e['ssim_blurry']:>6.4f} {e['psnr']:>11.2f} "
                f"{e['ssim']:>6.4f} {e['psnr_gain']:>+8.2f}")

    for label, _, _ in SEVERITY_BINS:
        lines.append(line(label + " dB", table["bins"][label]))
    lines.append(line("all", table))
    if table.get("worst_bin"):
        lines.append(f"worst bin: {table['worst_bin']} dB")
    return "\n".join(lines)
