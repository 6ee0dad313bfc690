"""Quality bar of a continuous (CFMD-GAN-family) model on validation identities.

    python benchmarks/cfmd_quality.py --model cfmd-gan --data ../shared/data [--weights DIR] [--max-windows K]

Builds (or reuses) the prepared windows of ``--data`` with the data engine's default settings (the same
identity split the trainer uses), restores every validation window at u = 0.5 and as N moments, and writes
``benchmarks/results/<model>_quality.{md,json}``. See :mod:`facedeblur.benchmark.quality` for the protocol.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cfmd-gan")
    ap.add_argument("--weights", default=None, help="a .safetensors file or a folder written by save_pretrained")
    ap.add_argument("--data", required=True, help="folder of sharp face videos (e.g. ../shared/data)")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--windows-per-clip", type=int, default=None, help="default: the data engine default")
    ap.add_argument("--max-windows", type=int, default=None)
    ap.add_argument("--no-moments", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)

    import torch

    import facedeblur
    from facedeblur.benchmark.quality import evaluate_windows, format_report
    from facedeblur.data import PrepConfig, load_manifest, prepare_windows

    if args.threads:
        torch.set_num_threads(args.threads)
    model = facedeblur.load(args.model, weights=args.weights)
    prep = PrepConfig() if args.windows_per_clip is None else PrepConfig(windows_per_clip=args.windows_per_clip)
    root, windows = load_manifest(prepare_windows(args.data, args.cache_dir, prep))
    val = [w for w in windows if w["split"] == "val"]
    if args.max_windows and len(val) > args.max_windows:
        rng = np.random.default_rng(0)
        val = [val[i] for i in sorted(rng.choice(len(val), args.max_windows, replace=False))]
    frames = (np.load(root / w["file"], allow_pickle=False) for w in val)

    def restore(blurry: np.ndarray, us: list[float]) -> np.ndarray:
        return np.stack(model.restore_moments(blurry, us=us))

    t0 = time.time()
    result = evaluate_windows(restore, list(frames), moments=not args.no_moments)
    wall = time.time() - t0
    name = args.model + (f"-{args.tag}" if args.tag else "")
    text, summary = format_report(result, title=f"{name} on {len(val)} validation windows "
                                                f"({len({w['identity'] for w in val})} identities)")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    header = (f"Command: `python {' '.join([Path(sys.argv[0]).as_posix()] + (argv or sys.argv[1:]))}`  \n"
              f"Model: {model.card.name} (weights: {args.weights or 'default'}), git {commit}, torch {torch.__version__}, "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, wall {wall:.0f} s\n\n")
    print(header + text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}_quality.md").write_text(header + text)
    (out / f"{name}_quality.json").write_text(json.dumps({"model": model.card.name, "weights": args.weights,
                                                           "windows": [w["file"] for w in val], "summary": summary},
                                                          indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
