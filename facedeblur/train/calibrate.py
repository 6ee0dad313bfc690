"""Post-training calibration of a model's do-no-harm residual gate (:class:`facedeblur.models.layers.ResidualGate`).

For restoration models that predict ``out = x + r``, the gate scales the residual by ``alpha(rms(r))``. This
module fits ``alpha`` on *training* pairs: samples are grouped by the magnitude of their predicted residual
(quantile bins), and in each bin ``alpha`` in [0, 1] maximises the mean PSNR gain over the input. Each sample
only needs three numbers, since ``MSE(alpha) = |d|^2 - 2 alpha <r, d> + alpha^2 |r|^2`` with ``d = gt - x``.
The validation identities are never used, so validation numbers measured afterwards stay honest.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

__all__ = ["residual_stats", "fit_gate"]


@torch.inference_mode()
def residual_stats(model: torch.nn.Module, samples: Iterable[dict[str, torch.Tensor]], *, batch: int = 4,
                   progress: bool = True) -> np.ndarray:
    """(rms(r), |d|^2, <r, d>, |r|^2) per sample (means over pixels), with the gate disabled."""
    from tqdm.auto import tqdm

    gate = getattr(model, "gate", None)
    if gate is not None:
        gate.enabled = False
    rows: list[list[float]] = []
    buf: list[dict[str, torch.Tensor]] = []
    device = next(model.parameters()).device

    def flush() -> None:
        x = torch.stack([s["blurry"] for s in buf]).to(device)
        gt = torch.stack([s["sharp"] for s in buf]).to(device)
        u = torch.stack([s["u"] for s in buf]).to(device)
        out = model(x, u)
        out = out[-1] if isinstance(out, (list, tuple)) else out
        r, d = (out - x).double(), (gt - x).double()
        for i in range(len(buf)):
            rr, rd, dd = (r[i] * r[i]).mean().item(), (r[i] * d[i]).mean().item(), (d[i] * d[i]).mean().item()
            rows.append([rr ** 0.5, dd, rd, rr])
        buf.clear()

    try:
        for s in tqdm(samples, desc="residual statistics", unit="img", disable=not progress):
            buf.append(s)
            if len(buf) == batch:
                flush()
        if buf:
            flush()
    finally:
        if gate is not None:
            gate.enabled = True
    return np.asarray(rows, dtype=np.float64)


def _gain(stats: np.ndarray, alpha: float) -> np.ndarray:
    _, dd, rd, rr = stats.T
    mse = np.maximum(dd - 2 * alpha * rd + alpha * alpha * rr, 1e-12)
    return 10 * np.log10(np.maximum(dd, 1e-12) / mse)


def fit_gate(stats: np.ndarray, num_knots: int = 8) -> dict[str, Any]:
    """Knots (residual RMS at bin medians) and alphas (best mean PSNR gain per bin, grid over [0, 1])."""
    if len(stats) < num_knots * 4:
        raise ValueError(f"need at least {num_knots * 4} samples to fit {num_knots} gate bins, got {len(stats)}")
    order = np.argsort(stats[:, 0])
    bins = np.array_split(order, num_knots)
    grid = np.linspace(0.0, 1.0, 41)
    knots, alphas, report = [], [], []
    for idx in bins:
        s = stats[idx]
        gains = [float(_gain(s, a).mean()) for a in grid]
        best = int(np.argmax(gains))
        knots.append(float(np.median(s[:, 0])))
        alphas.append(float(grid[best]))
        report.append({"rms_median": knots[-1], "count": len(idx), "alpha": alphas[-1],
                       "gain_ungated_db": gains[-1], "gain_gated_db": gains[best]})
    for i in range(1, len(knots)):  # strictly increasing knots for interpolation
        knots[i] = max(knots[i], knots[i - 1] + 1e-6)
    return {"knots": knots, "alphas": alphas, "bins": report}


def calibrate_folder(weights_dir: str, data_dir: str, out_dir: str, *, cache_dir: str | None = None,
                     max_samples: int = 400, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Fit the gate of the model saved in ``weights_dir`` (a save_pretrained folder) on the training split of
    ``data_dir`` (centre moment of each training window, full face crops) and write the calibrated model to
    ``out_dir`` (same dtype as the input file). Returns the fit report (also recorded in the card)."""
    import dataclasses

    from ..data.engine import PrepConfig, WindowValSet, load_manifest, prepare_windows
    from ..models import get_arch, get_card
    from ..weights import load_pretrained_into, read_state_dict, save_pretrained

    card = get_card(f"local-dir:{weights_dir}")
    model = get_arch(card.architecture).builder(**card.arch_kwargs)
    path = load_pretrained_into(model, card)
    if getattr(model, "gate", None) is None:
        raise ValueError(f"{card.name}: the architecture has no residual gate (set residual_gate: true)")
    model.eval()
    root, windows = load_manifest(prepare_windows(data_dir, cache_dir, PrepConfig(seed=seed), progress=progress))
    train_w = [w for w in windows if w["split"] == "train"]
    rng = np.random.default_rng(seed)
    train_w = [train_w[i] for i in sorted(rng.permutation(len(train_w))[:max_samples])]
    stats = residual_stats(model, WindowValSet(root, train_w), progress=progress)
    fit = fit_gate(stats)
    model.gate.knots.copy_(torch.tensor(fit["knots"]))
    model.gate.alphas.copy_(torch.tensor(fit["alphas"]))
    dtype = next(iter(read_state_dict(path).values())).dtype
    training = dict(card.training)
    training["gate_calibration"] = {"samples": len(stats), "split": "train (centre moment, 256x256 crops)", **fit}
    card = dataclasses.replace(card, training=training, source="zoo")
    save_pretrained(model, card, out_dir, dtype=dtype)
    return fit


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m facedeblur.train.calibrate",
                                 description="Calibrate a model's do-no-harm residual gate on training pairs.")
    ap.add_argument("weights", help="folder written by save_pretrained / facedeblur train --export")
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-samples", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    fit = calibrate_folder(args.weights, args.data, args.out, cache_dir=args.cache_dir,
                           max_samples=args.max_samples, seed=args.seed)
    print(json.dumps(fit, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
