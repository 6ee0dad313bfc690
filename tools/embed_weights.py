"""Maintainer tool: make a trained model folder the embedded (offline) weights of a zoo variant.

    python tools/embed_weights.py runs/lite-calibrated --variant cfmd-gan.lite --lineage LINEAGE.yaml \
        [--quality benchmarks/results/x.json ...] [--bench OUT/results.json --bench-method local-dir:FOLDER]

Copies ``FOLDER/model.safetensors`` (written by ``save_pretrained``, e.g. fp16) to
``facedeblur/weights/embedded/<variant>.safetensors``, verifies it loads strictly into the variant's architecture,
and rewrites ``zoo_configs/<variant>.yaml`` with the file's sha256 and an honest record of how the weights were
made. The YAML's recipe (``training``) is kept, since ``facedeblur train <variant>`` trains from it; the record
goes into ``training.stages`` (from LINEAGE's ``stages``: one entry per training stage, with its recipe, init,
steps and wall time) and ``training.gate_calibration`` (from the folder card; dropped when the folder's gate is
uncalibrated). ``training_data`` and ``license`` come from LINEAGE (weights trained on research data are research
weights). ``metrics`` are the quality-bar summaries given with ``--quality`` and/or the benchmark summary of the
folder's method in a ``facedeblur bench quality`` run (``--bench``: gain by set and bin, identity distance and
landmark AUC against the blurry input's, unsharp masking's gain): the folder card's own training-time validation
is dropped, since a folder exported from a checkpoint (``--max-steps 0 --init``) records the export run, not the
training.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def bench_summary(results: dict, method: str) -> dict:
    """Per set: the method's PSNR gain over the blurry input overall and by severity bin, its identity distance and
    landmark AUC next to the blurry input's, and unsharp masking's gain (when the run scored it)."""
    out: dict = {"manifest": results["manifest"]["sha256"], "command": results["header"]["command"]}
    for name, st in results["sets"].items():
        if method not in st["methods"]:
            raise SystemExit(f"--bench-method {method!r} is not in set {name!r} (methods: {sorted(st['methods'])})")
        groups = st["methods"][method]["groups"]
        row = {"n": groups["all"]["n"], "psnr_gain_db": round(groups["all"]["psnr_gain"], 3),
               "bins_psnr_gain_db": {b: (round(g["psnr_gain"], 3) if g["n"] else None) for b, g in groups.items()
                                     if b != "all"},
               "bins_n": {b: g["n"] for b, g in groups.items() if b != "all"}}
        for key in ("id_dist", "lm_auc"):
            if groups["all"].get(key) is not None:
                row[key] = round(groups["all"][key], 4)
                if "blurry" in st["methods"]:
                    row[f"{key}_blurry"] = round(st["methods"]["blurry"]["groups"]["all"][key], 4)
        if "unsharp" in st["methods"]:
            row["unsharp_psnr_gain_db"] = round(st["methods"]["unsharp"]["groups"]["all"]["psnr_gain"], 3)
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--variant", required=True)
    ap.add_argument("--lineage", required=True,
                    help="YAML with stages (list of mappings), training_data (str) and license (str)")
    ap.add_argument("--quality", action="append", default=[], help="JSON written by benchmarks/cfmd_quality.py")
    ap.add_argument("--bench", default=None, help="results.json of `facedeblur bench quality` that scored the folder")
    ap.add_argument("--bench-method", default=None, help="the folder's method name in --bench (e.g. local-dir:PATH)")
    args = ap.parse_args(argv)
    if bool(args.bench) != bool(args.bench_method):
        raise SystemExit("--bench and --bench-method go together")
    lineage = yaml.safe_load(Path(args.lineage).read_text())
    if not isinstance(lineage, dict):
        raise SystemExit(f"{args.lineage}: expected a YAML mapping with stages, training_data and license")
    missing = [k for k in ("stages", "training_data", "license") if not lineage.get(k)]
    if missing or not isinstance(lineage["stages"], list):
        raise SystemExit(f"{args.lineage}: needs a non-empty list 'stages' and strings 'training_data', 'license'"
                         f" (missing or empty: {missing or ['stages (not a list)']})")
    if not args.quality and not args.bench:
        raise SystemExit("give --bench RESULTS.json --bench-method NAME (facedeblur bench quality) or --quality JSON "
                         "(benchmarks/cfmd_quality.py): the card's metrics")
    bench = bench_summary(json.loads(Path(args.bench).read_text()), args.bench_method) if args.bench else None

    folder = Path(args.folder)
    src = folder / "model.safetensors"
    cfg = json.loads((folder / "config.json").read_text())
    yaml_path = ROOT / "zoo_configs" / f"{args.variant}.yaml"
    zoo = yaml.safe_load(yaml_path.read_text())
    if cfg["arch_kwargs"] != zoo["arch_kwargs"]:
        raise SystemExit(f"architecture differs: folder {cfg['arch_kwargs']} vs zoo {zoo['arch_kwargs']}")
    dst = ROOT / "facedeblur" / "weights" / "embedded" / f"{args.variant}.safetensors"
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    sha = hashlib.sha256(dst.read_bytes()).hexdigest()

    zoo["weights"] = {"embedded": dst.name, "sha256": sha, "dtype": cfg.get("weights", {}).get("dtype", "float16")}
    training = dict(zoo.get("training", {}))
    training["stages"] = lineage["stages"]
    if "gate_calibration" in cfg.get("training", {}):
        training["gate_calibration"] = cfg["training"]["gate_calibration"]
    else:  # an uncalibrated gate: the old network's calibration record would be false
        training.pop("gate_calibration", None)
    zoo["training"] = training
    zoo["training_data"] = lineage["training_data"]
    zoo["license"] = lineage["license"]
    zoo["metrics"] = {}
    if args.quality:
        zoo["metrics"]["quality_bar"] = {Path(q).stem: json.loads(Path(q).read_text())["summary"]
                                         for q in args.quality}
    if bench is not None:
        zoo["metrics"]["benchmark"] = bench
    header = f"# {args.variant}: zoo config (weights embedded by tools/embed_weights.py from {folder.name})\n"
    text = header + yaml.safe_dump(zoo, sort_keys=False, allow_unicode=True, width=120, default_flow_style=None)
    tmp = yaml_path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, yaml_path)

    import facedeblur  # verify: strict load through the public path, offline

    model = facedeblur.load(args.variant, device="cpu")
    print(f"embedded {dst} ({dst.stat().st_size / 1e6:.2f} MB, sha256 {sha}); {model!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
