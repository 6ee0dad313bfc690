"""Post-training calibration of CFMD-GAN's do-no-harm residual gate (:class:`facedeblur.models.cfmd_gan.ResidualGate`).

For restoration models that predict ``out = x + r``, the gate scales the residual by ``alpha(s, u)``, with ``s``
the gate's feature (the residual's RMS or the input's sharpness). This module fits ``alpha`` on *training* pairs:
samples are grouped by their feature value (quantile bins) and, for gates with several u knots, by the nearest
u knot; in each cell ``alpha`` in [0, 1] maximises the mean PSNR gain over the input. Calibration pairs are
training windows' FMR-ordered frames at the u knots (Table 4 protocol), so both the centre moment and the ends of
the exposure are represented. The validation identities are never used, so validation numbers measured afterwards
stay honest.

The gain is that of the image a user receives: ``Deblurrer.restore`` returns 8-bit output for 8-bit input, so by
default (``quantize=255``) each sample's MSE is measured after rounding ``x + alpha r`` to 8 bits, for every
alpha of :data:`ALPHA_GRID`. The rounding matters on nearly sharp faces: a residual of a fraction of a grey
level that a float score credits either vanishes or becomes a whole grey level (session 4 measured the float
score of the >= 36 dB validation bin at +0.001 dB and the 8-bit one at -0.046 dB for the same network). With
``quantize=None`` the float MSE ``|d|^2 - 2 alpha <r, d> + alpha^2 |r|^2`` (``d = gt - x``) is used.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

from ...models import InferenceAdapter
from ...models.cfmd_gan import CFMD_ADAPTER

__all__ = ["ALPHA_GRID", "residual_stats", "fit_gate", "calibration_samples", "calibrate_gate", "calibrate_folder"]

#: the gate values tried per cell (and, for quantised statistics, the ones measured per sample)
ALPHA_GRID = np.linspace(0.0, 1.0, 41)


@torch.inference_mode()
def residual_stats(model: torch.nn.Module, samples: Iterable[dict[str, torch.Tensor]], *, batch: int = 4,
                   progress: bool = True, quantize: int | None = 255,
                   adapter: InferenceAdapter = CFMD_ADAPTER) -> np.ndarray:
    """(s, |d|^2, <r, d>, |r|^2, u) per sample (means over pixels), with the gate disabled; ``s`` is the gate's
    feature (:meth:`~facedeblur.models.cfmd_gan.ResidualGate.features`; rms(r) for a model without a gate). The
    model is called through ``adapter`` (default: CFMD-GAN's, ``model(x, u)``, last output).

    With ``quantize`` (the output's number of levels minus one; 255 for 8-bit images) the row continues with the
    MSE of ``clip(round(quantize * (x + alpha r)), 0, quantize) / quantize`` against the ground truth (``x`` and
    the ground truth are taken to be on that grid already, as 8-bit images are) for each alpha of
    :data:`ALPHA_GRID` (``len(ALPHA_GRID)`` more columns), which :func:`fit_gate` then uses."""
    if quantize is not None and quantize < 1:
        raise ValueError(f"quantize must be a positive number of levels (255 for 8-bit output), got {quantize}")
    alphas = torch.tensor(ALPHA_GRID, dtype=torch.float32).view(-1, 1, 1, 1)
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
        out = adapter(model, x, u)
        r, d = (out - x).double(), (gt - x).double()
        feat = gate.features(x, out - x) if gate is not None else r.pow(2).mean(dim=(1, 2, 3)).sqrt()
        for i in range(len(buf)):
            rr, rd, dd = (r[i] * r[i]).mean().item(), (r[i] * d[i]).mean().item(), (d[i] * d[i]).mean().item()
            row = [float(feat[i]), dd, rd, rr, float(u.reshape(-1)[i if u.numel() > 1 else 0])]
            if quantize is not None:  # in output levels (exact integers for x and gt), float32 is exact enough
                a = alphas.to(r.device)
                xq, gq = torch.round(x[i].float() * quantize), torch.round(gt[i].float() * quantize)
                q = torch.round(xq + a * (r[i].float() * quantize)).clamp_(0, quantize)
                mse = (q - gq).pow_(2).mean(dim=(1, 2, 3)).double() / (quantize * quantize)
                row += mse.tolist()
            rows.append(row)
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
    """PSNR gain (dB) per sample at gate value ``alpha``: from the quantised MSE columns when ``stats`` has them
    (``alpha`` then snaps to the nearest :data:`ALPHA_GRID` value), else from the float MSE formula."""
    dd = np.maximum(stats[:, 1], 1e-12)
    if stats.shape[1] == 5 + len(ALPHA_GRID):
        mse = stats[:, 5 + int(np.abs(ALPHA_GRID - alpha).argmin())]
    else:
        rd, rr = stats[:, 2], stats[:, 3]
        mse = dd - 2 * alpha * rd + alpha * alpha * rr
    return 10 * np.log10(dd / np.maximum(mse, 1e-12))


def _best_alpha(s: np.ndarray) -> tuple[float, float, float]:
    """(alpha of :data:`ALPHA_GRID` with the best mean gain, that gain, the ungated gain)."""
    gains = [float(_gain(s, a).mean()) for a in ALPHA_GRID]
    best = int(np.argmax(gains))
    return float(ALPHA_GRID[best]), gains[best], gains[-1]


def fit_gate(stats: np.ndarray, num_knots: int = 8, num_u_knots: int = 1, min_cell: int = 8) -> dict[str, Any]:
    """Fit a gate's knots and alphas from :func:`residual_stats` rows.

    With ``num_u_knots`` > 1 (rows must then carry u in column 4) each sample belongs to its nearest of the evenly
    spaced u knots. Per u knot, the feature knots are the medians of ``num_knots`` quantile bins of that
    u knot's samples (of all samples, for a u knot with fewer than ``num_knots * min_cell``), and each bin gets
    the alpha with the best mean PSNR gain; a bin with fewer than ``min_cell`` samples takes the alpha of the
    same quantile bin over all u. Returns ``knots`` and ``alphas`` (M x K; flat lists of K for M = 1, as
    before), ``u_knots`` (M) and a per-cell report of the mean PSNR gain with and without the gate.
    """
    if len(stats) < num_knots * 4:
        raise ValueError(f"need at least {num_knots * 4} samples to fit {num_knots} gate bins, got {len(stats)}")
    if stats.shape[1] not in (4, 5, 5 + len(ALPHA_GRID)):
        raise ValueError(f"residual_stats rows have 4, 5 or {5 + len(ALPHA_GRID)} columns, got {stats.shape[1]}")
    if num_u_knots > 1 and stats.shape[1] < 5:
        raise ValueError("a gate with u knots needs the u of every sample (column 4 of residual_stats)")

    def quantile_bins(s: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        bins = np.array_split(np.argsort(s[:, 0]), num_knots)
        knots = [float(np.median(s[idx, 0])) if len(idx) else 0.0 for idx in bins]
        for i in range(1, len(knots)):  # strictly increasing knots for interpolation
            knots[i] = max(knots[i], knots[i - 1] + 1e-6)
        return bins, knots

    u_knots = np.linspace(0.0, 1.0, num_u_knots) if num_u_knots > 1 else np.array([0.5])
    nearest = (np.abs(stats[:, 4:5] - u_knots[None]).argmin(1) if num_u_knots > 1
               else np.zeros(len(stats), dtype=int))
    pooled_bins, pooled_knots = quantile_bins(stats)
    pooled = [_best_alpha(stats[idx])[0] for idx in pooled_bins]
    knots = np.zeros((len(u_knots), num_knots))
    alphas = np.ones((len(u_knots), num_knots))
    report = []
    for m, uk in enumerate(u_knots):
        group = stats[nearest == m]
        if len(group) >= num_knots * min_cell:
            bins, knots_m = quantile_bins(group)
        else:
            bins, knots_m, group = [idx[nearest[idx] == m] for idx in pooled_bins], pooled_knots, stats
        knots[m] = knots_m
        for k, idx in enumerate(bins):
            cell = group[idx]
            if len(cell) >= min_cell:
                alpha, gated, ungated = _best_alpha(cell)
            else:
                alpha = pooled[k]
                gated = float(_gain(cell, alpha).mean()) if len(cell) else float("nan")
                ungated = float(_gain(cell, 1.0).mean()) if len(cell) else float("nan")
            alphas[m, k] = alpha
            report.append({"u_knot": float(uk), "feature_median": float(knots_m[k]), "count": int(len(cell)),
                           "alpha": alpha, "pooled": len(cell) < min_cell, "gain_ungated_db": ungated,
                           "gain_gated_db": gated})
    flat = num_u_knots == 1
    return {"knots": knots[0].tolist() if flat else knots.tolist(), "u_knots": u_knots.tolist(),
            "alphas": alphas[0].tolist() if flat else alphas.tolist(), "bins": report}


def calibration_samples(root: Any, windows: list[dict[str, Any]], u_knots: Iterable[float]
                        ) -> Iterable[dict[str, torch.Tensor]]:
    """For each window and u knot: the blurry average, the FMR-ordered frame nearest to that u, and its u."""
    from ...data.blur import average_frames
    from ...data.engine import WindowValSet, _to_tensor

    ds = WindowValSet(root, windows)
    for i in range(len(ds)):
        frames = ds.frames(i)
        n = len(frames)
        blurry = _to_tensor(average_frames(frames))
        for k in sorted({int(round(float(uk) * (n - 1))) for uk in u_knots}):
            yield {"blurry": blurry, "sharp": _to_tensor(frames[k]), "u": torch.tensor(k / (n - 1))}


def calibrate_gate(model: torch.nn.Module, root: Any, windows: list[dict[str, Any]], *,
                   progress: bool = True, quantize: int | None = 255) -> dict[str, Any]:
    """Fit ``model.gate`` in place on prepared ``windows`` (FMR-ordered frame stacks under ``root``) and return
    the fit (:func:`fit_gate`) with the number of pairs used under ``samples`` and ``quantize`` (the output levels
    the gains were measured at; None: float)."""
    gate = model.gate
    u_knots = gate.u_knots.tolist()
    stats = residual_stats(model, calibration_samples(root, windows, u_knots), progress=progress,
                           quantize=quantize)
    fit = fit_gate(stats, num_knots=gate.knots.shape[-1], num_u_knots=len(u_knots) if len(u_knots) > 1 else 1)
    gate.knots.copy_(torch.tensor(fit["knots"]).reshape(gate.knots.shape))
    gate.u_knots.copy_(torch.tensor(fit["u_knots"]))
    gate.alphas.copy_(torch.tensor(fit["alphas"]).reshape(gate.alphas.shape))
    return {"samples": len(stats), "quantize": quantize, **fit}


def calibrate_folder(weights_dir: str, data_dir: str, out_dir: str, *, cache_dir: str | None = None,
                     max_samples: int = 200, seed: int = 0, progress: bool = True,
                     quantize: int | None = 255) -> dict[str, Any]:
    """Fit the gate of the model saved in ``weights_dir`` (a save_pretrained folder) on the training split of
    ``data_dir`` (``max_samples`` training windows, full 256x256 face crops, the FMR-ordered frames at the gate's
    u knots; gains of 8-bit output unless ``quantize`` says otherwise) and write the calibrated model to ``out_dir``
    (same dtype as the input file). The gate's previous
    buffers are not read (calibration replaces them), so weights trained with another gate layout calibrate
    too. Returns the fit report (also recorded in the card)."""
    import dataclasses

    from ...data.engine import PrepConfig, load_manifest, prepare_windows
    from ...models import get_arch, get_card
    from ...models.cfmd_gan import uncalibrated_state
    from ...weights import load_state_dict_strict, read_state_dict, resolve_weights, save_pretrained

    card = get_card(f"local-dir:{weights_dir}")
    model = get_arch(card.architecture).builder(**card.arch_kwargs)
    if getattr(model, "gate", None) is None:
        raise ValueError(f"{card.name}: the architecture has no residual gate (set residual_gate: true)")
    path = resolve_weights(card)
    state = uncalibrated_state(read_state_dict(path, card.weights.sha256), model)
    load_state_dict_strict(model, state, arch_kwargs=dict(card.arch_kwargs), source=str(path))
    model.eval()
    root, windows = load_manifest(prepare_windows(data_dir, cache_dir, PrepConfig(seed=seed), progress=progress))
    train_w = [w for w in windows if w["split"] == "train"]
    rng = np.random.default_rng(seed)
    train_w = [train_w[i] for i in sorted(rng.permutation(len(train_w))[:max_samples])]
    fit = calibrate_gate(model, root, train_w, progress=progress, quantize=quantize)
    dtype = next(iter(state.values())).dtype
    training = dict(card.training)
    training["gate_calibration"] = {"windows": len(train_w),
                                    "split": "train (FMR-ordered frames at the u knots, 256x256 crops)", **fit}
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
    ap.add_argument("--max-samples", type=int, default=200, help="training windows (each gives one pair per u knot)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--float-gains", action="store_true",
                    help="fit on float outputs instead of the 8-bit outputs restore() returns for 8-bit images")
    args = ap.parse_args(argv)
    fit = calibrate_folder(args.weights, args.data, args.out, cache_dir=args.cache_dir,
                           max_samples=args.max_samples, seed=args.seed,
                           quantize=None if args.float_gains else 255)
    print(json.dumps(fit, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
