"""What a continuous (CFMD-GAN-family) network does per severity bin, before its do-no-harm gate.

    python benchmarks/cfmd_diagnostics.py --weights FILE_OR_FOLDER --data ../shared/data [--max-windows 120]

For validation windows (the same seeded subset as ``cfmd_quality.py --max-windows``; ``--split train`` for
training ones), at u = 0.5 against the FMR-middle frame, with the gate uncalibrated (off): the PSNR gain of the uint8 output, the RMS of the network's
residual ``r = G(x) - x`` and of the true residual ``d = gt - x`` (grey levels), the least-squares scale
``<r, d> / <r, r>`` (median; 1 = the residual has the right size, < 1 too big, > 1 too small) and the input's
sharpness (``cfmd_gan.input_sharpness``). A network that tells blurred from sharp inputs has a residual RMS that
falls with severity; the rank correlations with the blurry input's PSNR are printed, and the static windows
(>= 45 dB, frames that differ by compression noise only). ``--weights`` takes a ``save_pretrained`` folder, a
``.safetensors`` file or a training checkpoint (its EMA).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cfmd-gan.lite")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--max-windows", type=int, default=120, help="0: all windows of the split")
    ap.add_argument("--split", choices=["val", "train"], default="val",
                    help="validation identities (default) or training ones (to compare how features generalise)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="write the per-window rows as JSON here")
    args = ap.parse_args(argv)

    import torch

    import facedeblur
    from facedeblur.data import PrepConfig, load_manifest, prepare_windows
    from facedeblur.data.blur import average_frames
    from facedeblur.metrics.severity import severity_bin
    from facedeblur.models.cfmd_gan import input_sharpness, uncalibrated_state
    from facedeblur.train.checkpoint import read_generator_state
    from facedeblur.weights import load_state_dict_strict

    if args.threads:
        torch.set_num_threads(args.threads)
    state, _ = read_generator_state(args.weights)
    net = facedeblur.create_model(args.model)
    load_state_dict_strict(net, {k: v.float() for k, v in uncalibrated_state(state, net).items()},
                           source=args.weights)
    net.eval()

    root, windows = load_manifest(prepare_windows(args.data, args.cache_dir, PrepConfig()))
    val = [w for w in windows if w["split"] == args.split]
    if args.max_windows and len(val) > args.max_windows:
        rng = np.random.default_rng(0)
        val = [val[i] for i in sorted(rng.choice(len(val), args.max_windows, replace=False))]
    rows = []
    for w in val:
        frames = np.load(root / w["file"], allow_pickle=False)
        mid = (len(frames) - 1) // 2
        blurry = average_frames(frames).astype(np.float64)
        gt = frames[mid].astype(np.float64)
        x = torch.from_numpy(blurry / 255).permute(2, 0, 1)[None].float()
        with torch.inference_mode():
            out = net(x, 0.5)[-1]
        r = (out - x)[0].permute(1, 2, 0).double().numpy() * 255
        d = gt - blurry
        restored = np.clip(np.rint(blurry + r), 0, 255)
        mse_in = float(np.mean(d ** 2))
        sev = 10 * np.log10(255 ** 2 / mse_in)
        rows.append({"file": w["file"], "severity": sev, "bin": severity_bin(sev),
                     "gain_db": 10 * np.log10(255 ** 2 / max(float(np.mean((restored - gt) ** 2)), 1e-12)) - sev,
                     "residual_rms": float(np.sqrt(np.mean(r ** 2))), "true_rms": float(np.sqrt(mse_in)),
                     "ls_scale": float(np.sum(r * d) / max(np.sum(r * r), 1e-12)),
                     "input_sharpness": float(input_sharpness(x))})
    rows_sev = [r["severity"] for r in rows]
    print(f"{args.model} ({args.weights}), {len(rows)} {args.split} windows, u = 0.5, gate off\n")
    print("| bin | windows | gain (dB) | residual RMS | true residual RMS | LS scale (median) | input sharpness |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for b in ["all", "<28", "28-32", "32-36", ">=36"]:
        sel = [r for r in rows if b == "all" or r["bin"] == b]
        if not sel:
            continue
        m = {k: float(np.mean([r[k] for r in sel])) for k in ("gain_db", "residual_rms", "true_rms", "input_sharpness")}
        print(f"| {b} | {len(sel)} | {m['gain_db']:+.3f} | {m['residual_rms']:.2f} | {m['true_rms']:.2f} | "
              f"{np.median([r['ls_scale'] for r in sel]):.2f} | {m['input_sharpness']:.3f} |")
    print(f"\nrank correlation with the blurry input's PSNR: residual RMS "
          f"{_spearman([r['residual_rms'] for r in rows], rows_sev):+.2f}, input sharpness "
          f"{_spearman([r['input_sharpness'] for r in rows], rows_sev):+.2f}")
    static = [r for r in rows if r["severity"] >= 45]
    print(f"static windows (blurry input >= 45 dB): {len(static)}"
          + (", gains " + ", ".join(f"{r['gain_db']:+.2f}" for r in sorted(static, key=lambda r: r["severity"]))
             + " dB" if static else ""))
    if args.out:
        from facedeblur.restore.convert import write_bytes_atomic

        write_bytes_atomic(Path(args.out), json.dumps(rows, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
