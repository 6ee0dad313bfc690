"""``facedeblur bench``: the quality and speed benchmarks, and comparing two runs.

    facedeblur bench quality --models all --data DIR --out OUT [--max-samples K] [--sets pravg,vla,kernel,real]
    facedeblur bench speed --models all --sizes 128,256,512 --batch 1,8 --device cpu --dtype fp32 --out OUT
    facedeblur bench compare RUN_A RUN_B

Only argparse is imported here; the benchmark modules load when a command runs.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_bench_parser", "cmd_quality", "cmd_speed", "cmd_compare"]


def _int_list(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers, e.g. 128,256,512")
    return vals


def _pos_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be >= 1")
    return v


def _command() -> str:
    return "facedeblur " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


_BUILD_OPTS = ("max_samples", "split", "gt", "seed", "face_size", "kernel_count", "stills_min_sharpness",
               "vla_per_clip")


def cmd_quality(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from .data import BuildConfig, build_manifest, check_manifest, find_sources, read_manifest
    from .runner import QualityOptions, baseline_methods, model_methods, parse_weights, resolve_models, run_quality

    _threads(args)
    models = resolve_models(args.models)
    weights = parse_weights(args.weights, models)
    if args.manifest:
        pinned = read_manifest(args.manifest)
        cfg = BuildConfig.from_dict(pinned["config"])
        given = {k: getattr(args, k) for k in ("sets",) + _BUILD_OPTS if getattr(args, k) is not None}
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise InputError(f"--manifest pins the sample options; drop {flags}")
    else:
        pinned = None
        opts: dict[str, Any] = {}
        if args.sets:
            opts["sets"] = tuple(s.strip() for s in args.sets.split(",") if s.strip())
        for k in _BUILD_OPTS:
            if getattr(args, k) is not None:
                opts[k] = getattr(args, k)
        cfg = BuildConfig(**opts)
    if args.data is None and not any((args.videos, args.stills, args.real)):
        raise InputError("give --data DIR (or --videos/--stills/--real folders)")
    sources = find_sources(args.data, videos=args.videos, stills=args.stills, real=args.real)
    manifest = build_manifest(sources, cfg, cache_dir=args.cache_dir, bench_cache=args.bench_cache,
                              progress=not args.quiet, strict=bool(args.sets))
    if pinned is not None:
        check_manifest(manifest, pinned, f"--manifest {args.manifest}")
    methods = baseline_methods(args.baselines) + model_methods(models, weights, device=args.device,
                                                                  dtype=args.dtype, batch_size=args.batch_size)
    options = QualityOptions(crop_border=args.crop_border, face_metrics=not args.no_face_metrics,
                             moments=not args.no_moments, progress=not args.quiet, device=args.device)
    doc = run_quality(manifest, methods, args.out, options, command=_command())
    if not args.quiet:
        print((Path(args.out) / "report.md").read_text())
    print(f"wrote {Path(args.out) / 'report.md'}, results.csv, results.json and plots/ "
          f"(manifest {doc['manifest']['sha256'][:12]})", file=sys.stderr)
    return 0


def cmd_speed(args: argparse.Namespace) -> int:
    from .runner import parse_weights, resolve_models
    from .speed import SpeedConfig, run_speed, zoo_spec

    models = resolve_models(args.models)
    weights = parse_weights(args.weights, models)
    from ..errors import InputError

    engines = tuple(e.strip() for e in args.engine.split(",") if e.strip())
    bad = [e for e in engines if e not in ("torch", "onnxruntime")]
    if bad or not engines:
        raise InputError(f"--engine takes a comma list of torch, onnxruntime; got {args.engine!r}")
    threads = tuple(args.threads) if args.threads else ()
    if any(t < 1 for t in threads):
        raise InputError(f"--threads must be positive, got {args.threads}")
    cfg = SpeedConfig(sizes=args.sizes, batches=args.batch, device=args.device, dtype=args.dtype,
                      warmup=args.warmup, repeats=args.repeats, threads=threads[0] if len(threads) == 1 else None,
                      isolate=not args.no_isolate, engines=engines, thread_counts=threads if len(threads) > 1 else ())
    specs = [zoo_spec(m, weights.get(m)) for m in models]
    run_speed(specs, cfg, args.out, progress=not args.quiet, command=_command(), weights=weights)
    if not args.quiet:
        print((Path(args.out) / "speed.md").read_text())
    print(f"wrote {Path(args.out) / 'speed.md'}, speed.csv, speed.json and plots/", file=sys.stderr)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """PSNR/SSIM of the methods of two quality runs side by side; refused unless both used the same manifest."""
    from ..errors import DataError
    from .data import check_manifest, read_manifest

    a, b = Path(args.run_a), Path(args.run_b)
    check_manifest(read_manifest(b / "manifest.json"), read_manifest(a / "manifest.json"), f"the manifest of {a}")
    docs = []
    for run in (a, b):
        p = run / "results.json"
        if not p.is_file():
            raise DataError(f"{p} is missing: run 'facedeblur bench quality --out {run}' to completion first")
        docs.append(json.loads(p.read_text()))
    print(f"| set | method | group | PSNR {a.name} | PSNR {b.name} | Δ | SSIM {a.name} | SSIM {b.name} | Δ |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for set_name, entry in docs[0]["sets"].items():
        other = docs[1]["sets"].get(set_name, {}).get("methods", {})
        for m, res in entry["methods"].items():
            if m not in other:
                continue
            for g, s in res["groups"].items():
                t = other[m]["groups"].get(g, {})
                if s.get("psnr") is None or t.get("psnr") is None:
                    continue
                print(f"| {set_name} | {m} | {g} | {s['psnr']:.2f} | {t['psnr']:.2f} | {t['psnr'] - s['psnr']:+.2f} | "
                      f"{s['ssim']:.4f} | {t['ssim']:.4f} | {t['ssim'] - s['ssim']:+.4f} |")
    return 0


def add_bench_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``bench quality|speed|compare`` to the ``facedeblur`` sub-parsers."""
    parser_class = type(common)
    bench = sub.add_parser("bench", parents=[common], help="quality and speed benchmarks",
                           description="Reproducible benchmarks of every zoo model and the classical baselines "
                                       "(conventions: docs/benchmark.md).")
    bsub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True, parser_class=parser_class)

    q = bsub.add_parser("quality", parents=[common], help="PSNR/SSIM/identity/landmarks by severity bin",
                        description="Build the benchmark sets from --data (deterministically; a manifest pins the "
                                    "samples), evaluate every model and baseline, write OUT/report.md, results.csv, "
                                    "results.json and plots/. A killed run resumes where it stopped.")
    q.add_argument("--models", default="all", help="comma list of zoo names / local-dir:PATH, 'all' (default: every "
                                                  "zoo variant) or 'none' (baselines only)")
    q.add_argument("--weights", action="append", metavar="[NAME=]PATH",
                   help="weights folder/file for a model (repeatable; a bare PATH when one model is given)")
    q.add_argument("--baselines", default="all",
                   help="comma list of blurry, unsharp, wiener-motion, wiener-oracle, rl-oracle; 'all' or 'none'")
    q.add_argument("--data", metavar="DIR", help="data folder: videos/ (pravg, vla), faces/ (kernel), real_lq/ (real)")
    q.add_argument("--videos", metavar="DIR", help="override: folder of sharp videos / frame folders")
    q.add_argument("--stills", metavar="DIR", help="override: folder of sharp still face images")
    q.add_argument("--real", metavar="DIR", help="override: folder of real blurry images / videos")
    q.add_argument("--sets", default=None, help="comma list of pravg, vla, kernel, real (default: all that have a "
                                                "source; naming sets makes a missing source an error)")
    q.add_argument("--max-samples", type=_pos_int, default=None, metavar="K", help="at most K samples per set")
    q.add_argument("--split", choices=("val", "train", "all"), default=None,
                   help="the data engine's split the sets draw from: validation (default) or train identities of "
                        "the videos and the matching side of the still split (kernel set), or all (a held-out test "
                        "folder)")
    q.add_argument("--gt", choices=("centre", "fmr-middle"), default=None,
                   help="ground truth of the averaged windows: temporal centre frame (default) or FMR-middle frame")
    q.add_argument("--seed", type=int, default=None, help="seed of the set builders (default 0)")
    q.add_argument("--face-size", type=_pos_int, default=None, help="face crop size in px (default 256)")
    q.add_argument("--kernel-count", type=_pos_int, default=None, help="samples of the kernel set (default 200)")
    q.add_argument("--stills-min-sharpness", type=float, default=None,
                   help="minimum Laplacian variance of a still (after resizing) for the kernel set (default 100)")
    q.add_argument("--vla-per-clip", type=_pos_int, default=None, help="VLA centre frames per clip (default 8)")
    q.add_argument("--manifest", metavar="FILE", help="rebuild exactly the samples of this manifest (refuses if the "
                                                     "data now gives different samples)")
    q.add_argument("--out", required=True, metavar="DIR", help="output folder (resumes a run already there)")
    q.add_argument("--cache-dir", metavar="DIR", help="data engine window cache (as 'facedeblur train --cache-dir')")
    q.add_argument("--bench-cache", metavar="DIR", help="where VLA windows and real-video crops are cached "
                                                        "(default: CACHE_DIR/bench)")
    q.add_argument("--device", default="cpu", help="device for the models (cpu, cuda, ...)")
    q.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None)
    q.add_argument("--batch-size", type=_pos_int, default=8, help="batch size for moments (default 8)")
    q.add_argument("--crop-border", type=int, default=0, help="pixels cropped from each border for PSNR/SSIM (0)")
    q.add_argument("--no-face-metrics", action="store_true", help="skip identity, landmarks and detection (dlib)")
    q.add_argument("--no-moments", action="store_true", help="skip the Table 4 moments protocol")
    q.add_argument("--threads", type=_pos_int, default=None, help="torch intra-op threads")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress bars, no report on stdout")
    q.set_defaults(func=cmd_quality)

    s = bsub.add_parser("speed", parents=[common], help="latency, throughput, memory, GFLOP/s",
                        description="Time every model's network forward at each size and batch; writes "
                                    "OUT/speed.md, speed.csv, speed.json and plots/.")
    s.add_argument("--models", default="all", help="comma list of zoo names, or 'all' (default)")
    s.add_argument("--weights", action="append", metavar="[NAME=]PATH", help="weights for a model (repeatable)")
    s.add_argument("--sizes", type=_int_list, default=(128, 256, 512), help="square sizes (default 128,256,512)")
    s.add_argument("--batch", type=_int_list, default=(1, 8), help="batch sizes (default 1,8)")
    s.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    s.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    s.add_argument("--warmup", type=int, default=2)
    s.add_argument("--repeats", type=_pos_int, default=10)
    s.add_argument("--threads", type=_int_list, default=None,
                   help="intra-op threads, a comma list to time each (default: torch's)")
    s.add_argument("--engine", default="torch", help="comma list of torch, onnxruntime (default torch); with both, "
                                                     "the report gives the speed-up per configuration")
    s.add_argument("--no-isolate", action="store_true", help="run every configuration in this process")
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_speed)

    c = bsub.add_parser("compare", parents=[common], help="compare two quality runs (same manifest only)")
    c.add_argument("run_a", metavar="RUN_A")
    c.add_argument("run_b", metavar="RUN_B")
    c.set_defaults(func=cmd_compare)
