"""Quality of a continuous model on prepared validation windows (the foundation issue's quality bar).

Two protocols, both on 256x256 face crops of validation identities:

* **Centre moment** (CFMD-GAN validation): restore at u = 0.5 and compare with the FMR-middle ground-truth
  frame; results overall and per severity bin of the blurry input's PSNR (<28, 28-32, 32-36, >=36 dB).
* **Moments** (CFMD-GAN Table 4): restore N frames with u_k = k/(N-1) and compare frame k with the k-th
  FMR-ordered ground truth; per N and per position, against the blurry input vs the same frames.

PSNR: RGB, uint8 images, data range 255, no border crop, float64 (identical to
``skimage.metrics.peak_signal_noise_ratio``). SSIM: ``skimage.metrics.structural_similarity`` on RGB
(channel_axis=-1, data_range=255, 7x7 uniform window, the skimage defaults).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Sequence

import numpy as np

from ..data.blur import average_frames, psnr_uint8
from ..metrics.severity import SEVERITY_BINS, severity_bin

__all__ = ["evaluate_windows", "moments_fn", "format_report"]

RestoreFn = Callable[[np.ndarray, Sequence[float]], np.ndarray]
"""restore(blurry HxWx3 uint8, us) -> (len(us), H, W, 3) uint8: the model's moments for one blurry face."""


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=-1, data_range=255))


def moments_fn(model: Any) -> RestoreFn:
    """:data:`RestoreFn` of a continuous model: a model name (loaded with :func:`facedeblur.load`) or a loaded
    :class:`~facedeblur.restore.Deblurrer`; its ``restore_moments`` at the given ``us``."""
    if isinstance(model, str):
        from ..restore.deblurrer import load

        model = load(model)
    if not callable(getattr(model, "restore_moments", None)):
        from ..errors import InputError

        raise InputError(f"evaluate_windows takes a restore function, a model name or a facedeblur Deblurrer, not "
                         f"{type(model).__name__}")
    if not model.card.capabilities.continuous_u:
        from ..errors import CapabilityError

        raise CapabilityError(f"model {model.card.name!r} has no control factor u; the centre-moment and moments "
                              "protocols need a continuous model")

    def restore(blurry: np.ndarray, us: Sequence[float]) -> np.ndarray:
        return np.stack(model.restore_moments(blurry, us=list(us)))

    return restore


def evaluate_windows(restore: RestoreFn | Any, windows: Sequence[np.ndarray], *, moments: bool = True,
                     progress: bool = True, desc: str = "evaluating") -> dict[str, Any]:
    """Evaluate ``restore`` on FMR-ordered sharp windows (each (N, H, W, 3) uint8; blurry = their mean).

    ``restore``: a :data:`RestoreFn`, or a model name / loaded Deblurrer (:func:`moments_fn`)."""
    from tqdm.auto import tqdm

    if isinstance(restore, str) or callable(getattr(restore, "restore_moments", None)):
        restore = moments_fn(restore)

    rows = []
    pos: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for frames in tqdm(windows, desc=desc, unit="window", disable=not progress):
        frames = np.asarray(frames)
        n = len(frames)
        blurry = average_frames(frames)
        mid = (n - 1) // 2
        us = [k / (n - 1) for k in range(n)] if moments else [mid / (n - 1)]
        outs = restore(blurry, us)
        centre = outs[mid] if moments else outs[0]
        sev = psnr_uint8(blurry, frames[mid])
        rows.append({"n": n, "severity": sev, "bin": severity_bin(sev), "psnr": psnr_uint8(centre, frames[mid]),
                     "ssim": _ssim(centre, frames[mid]), "ssim_blurry": _ssim(blurry, frames[mid])})
        if moments:
            for k in range(n):
                pos[(n, k)].append((psnr_uint8(outs[k], frames[k]), psnr_uint8(blurry, frames[k])))
    return {"centre": rows, "moments": {f"{n}:{k}": v for (n, k), v in sorted(pos.items())}}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    groups = [("all", rows)] + [(name, [r for r in rows if r["bin"] == name]) for name, _, _ in SEVERITY_BINS]
    for name, rs in groups:
        if not rs:
            out[name] = None
            continue
        blur = float(np.mean([r["severity"] for r in rs]))
        psnr = float(np.mean([r["psnr"] for r in rs]))
        out[name] = {"count": len(rs), "psnr_blurry": blur, "psnr": psnr, "gain": psnr - blur,
                     "ssim_blurry": float(np.mean([r["ssim_blurry"] for r in rs])),
                     "ssim": float(np.mean([r["ssim"] for r in rs]))}
    return out


def _moment_summary(moments: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    by_n: dict[int, dict[int, tuple[float, float, int]]] = defaultdict(dict)
    for key, vals in moments.items():
        n, k = (int(v) for v in key.split(":"))
        arr = np.asarray(vals)
        by_n[n][k] = (float(arr[:, 0].mean()), float(arr[:, 1].mean()), len(arr))
    return {n: by_n[n] for n in sorted(by_n)}


def format_report(result: dict[str, Any], title: str = "") -> tuple[str, dict[str, Any]]:
    """Markdown tables (centre moment by severity bin; moments by N and position) and a JSON-able summary."""
    summary = {"centre": _summary(result["centre"]), "moments": _moment_summary(result["moments"])}
    lines = [f"### {title}" if title else "", "",
             "Centre moment (u = 0.5) vs FMR-middle ground truth; PSNR/SSIM on RGB uint8, data range 255.", "",
             "| blurry-input PSNR bin | windows | blurry PSNR | restored PSNR | gain (dB) | blurry SSIM | restored SSIM |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in summary["centre"].items():
        if s is None:
            lines.append(f"| {name} | 0 | – | – | – | – | – |")
        else:
            lines.append(f"| {name} | {s['count']} | {s['psnr_blurry']:.3f} | {s['psnr']:.3f} | {s['gain']:+.3f} | "
                         f"{s['ssim_blurry']:.4f} | {s['ssim']:.4f} |")
    if summary["moments"]:
        lines += ["", "Moments (Table 4 protocol): frame k of N (u = k/(N-1)) vs the k-th FMR-ordered ground truth; "
                  "mean PSNR restored / blurry (gain).", "",
                  "| N | pairs | " + " | ".join(f"k={k}" for k in range(13)) + " |",
                  "|---|---:|" + "---|" * 13]
        for n, ks in summary["moments"].items():
            cells = [f"{r:.2f}/{b:.2f} ({r - b:+.3f})" for k, (r, b, _) in sorted(ks.items())]
            pairs = sum(c for _, _, c in ks.values())
            lines.append(f"| {n} | {pairs} | " + " | ".join(cells + [""] * (13 - len(cells))) + " |")
    summary["bar"] = _bar(summary)
    b = summary["bar"]
    lines += ["", f"Quality bar: centre moment beats the blurry input in {b['bins_beaten']}/{b['bins']} groups "
              f"(mean and each severity bin with samples)"
              + (f"; moments beat it at {b['positions_beaten']}/{b['positions']} (N, k) positions" if b["positions"]
                 else "") + f": **{'met' if b['met'] else 'not met'}**."]
    return "\n".join(lines).strip() + "\n", summary


def _bar(summary: dict[str, Any]) -> dict[str, Any]:
    """The foundation issue's bar: gain > 0 on the mean and in every severity bin that has samples, and at every
    (N, position) of the moments protocol (when it was run)."""
    groups = [s for s in summary["centre"].values() if s is not None]
    cells = [r - bl for ks in summary["moments"].values() for r, bl, _ in ks.values()]
    bins_beaten = sum(s["gain"] > 0 for s in groups)
    positions_beaten = sum(c > 0 for c in cells)
    return {"bins": len(groups), "bins_beaten": bins_beaten, "positions": len(cells),
            "positions_beaten": positions_beaten,
            "met": bool(groups) and bins_beaten == len(groups) and positions_beaten == len(cells)}
