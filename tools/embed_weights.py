"""Maintainer tool: make a trained model folder the embedded (offline) weights of a zoo variant.

    python tools/embed_weights.py runs/lite-calibrated --variant cfmd-gan.lite [--quality benchmarks/results/x.json]

Copies ``FOLDER/model.safetensors`` (written by ``save_pretrained``, e.g. fp16) to
``facedeblur/weights/embedded/<variant>.safetensors``, verifies it loads strictly into the variant's architecture,
and rewrites ``zoo_configs/<variant>.yaml`` with the file's sha256 and the folder card's training record, training
data and metrics (plus the quality-bar summary, if given). The YAML's other fields are kept.
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--variant", required=True)
    ap.add_argument("--quality", action="append", default=[], help="JSON written by benchmarks/cfmd_quality.py")
    ap.add_argument("--license", default=None)
    args = ap.parse_args(argv)

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
    zoo["training"] = cfg.get("training", zoo.get("training", {}))
    zoo["training_data"] = cfg.get("training_data") or zoo.get("training_data", "")
    metrics = dict(cfg.get("metrics", {}))
    for q in args.quality:
        data = json.loads(Path(q).read_text())
        metrics.setdefault("quality_bar", {})[Path(q).stem] = data["summary"]
    zoo["metrics"] = metrics
    if args.license:
        zoo["license"] = args.license
    header = f"# {args.variant}: zoo config (weights embedded by tools/embed_weights.py from {folder.name})\n"
    text = header + yaml.safe_dump(zoo, sort_keys=False, allow_unicode=True, width=120)
    tmp = yaml_path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, yaml_path)

    import facedeblur  # verify: strict load through the public path, offline

    model = facedeblur.load(args.variant, device="cpu")
    print(f"embedded {dst} ({dst.stat().st_size / 1e6:.2f} MB, sha256 {sha}); {model!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
