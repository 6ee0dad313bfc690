"""``facedeblur train`` arguments and entry point (also ``python -m facedeblur.train`` / ``torchrun -m facedeblur.train``)."""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ..errors import DataError, FaceDeblurError

__all__ = ["add_train_arguments", "run_from_args", "main"]


def _positive_int(text: str) -> int:
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def _non_negative_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def _positive_float(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``facedeblur train`` arguments to ``parser`` (returns it)."""
    parser.add_argument("model", help="zoo model to train, e.g. cfmd-gan.lite or cfmd-gan.paper")
    parser.add_argument("--data", metavar="DIR", help="dataset folder (see `facedeblur.data.build_datasets`)")
    parser.add_argument("--config", metavar="YAML", help="YAML overriding the card's training section (a zoo config "
                                                         "with a `training:` key, or just that mapping)")
    parser.add_argument("--out", default="runs", metavar="DIR", help="runs folder; the run goes to OUT/NAME (default runs)")
    parser.add_argument("--name", help="run name (default: the model name)")
    parser.add_argument("--cache-dir", metavar="DIR", help="prepared-data cache folder")
    parser.add_argument("--init", default=None, metavar="WEIGHTS",
                        help="fine-tune: start the generator (and its EMA) from a training checkpoint, run folder, "
                             ".safetensors file or save_pretrained folder, with a fresh optimizer at step 0 "
                             "(ignored when the run resumes)")
    parser.add_argument("--resume", nargs="?", const=True, default="auto", metavar="CKPT",
                        help="resume from OUT/NAME/last (or from CKPT); without this flag a run resumes "
                             "automatically when OUT/NAME/last/ exists")
    parser.add_argument("--max-steps", type=_non_negative_int,
                        help="stop at this global step (default: recipe epochs); 0 with --init and --export "
                             "converts that checkpoint into a release folder of this model without training")
    parser.add_argument("--max-minutes", type=_positive_float, help="wall-clock budget of this invocation")
    parser.add_argument("--val-every", type=_non_negative_int, default=1000, help="validate every N steps (0: only at the end)")
    parser.add_argument("--ckpt-every", type=_non_negative_int, default=1000, help="checkpoint every N steps")
    parser.add_argument("--log-every", type=_positive_int, default=50, help="log losses every N steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N or mps")
    parser.add_argument("--threads", type=_positive_int, help="torch CPU threads")
    parser.add_argument("--workers", type=_non_negative_int, default=2, help="data-loader worker processes")
    parser.add_argument("--amp", default="auto", choices=("auto", "off", "bf16", "fp16"),
                        help="mixed precision on CUDA (auto: bf16 where supported)")
    parser.add_argument("--channels-last", action="store_true",
                        help="channels-last memory format for the networks and batches (CUDA only; off by default)")
    parser.add_argument("--batch", type=_positive_int, help="per-process batch (overrides the recipe)")
    parser.add_argument("--crop", type=_positive_int, help="training crop (overrides the recipe)")
    parser.add_argument("--ema", type=float, help="keep an EMA of G with this decay (e.g. 0.999); validated/exported")
    parser.add_argument("--grad-clip", type=_positive_float, help="clip gradient norm of G and D to this value")
    parser.add_argument("--val-batch", type=_positive_int, default=4)
    parser.add_argument("--val-max", type=_positive_int, help="validate on the first N validation items only")
    parser.add_argument("--export", metavar="DIR", help="also write the trained generator (model.safetensors + "
                                                        "config.json) here at the end")
    parser.add_argument("--no-gan", action="store_true", help="supervised training only (pixel + perceptual)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _recipe_layer(args: argparse.Namespace) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for key in ("batch", "crop", "ema", "grad_clip"):
        value = getattr(args, key, None)
        if value is not None:
            layer[key] = value
    return layer


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``facedeblur train`` from parsed arguments; returns the exit status (0, or 128 + signal number when a
    signal stopped the run after saving its checkpoint). Problems raise :class:`~facedeblur.FaceDeblurError`
    subclasses (the ``facedeblur`` CLI prints them)."""
    from ..models import get_card
    from .distributed import barrier, init_distributed, select_device, shutdown_distributed
    from .methods import get_method
    from .recipes import read_config, resolve_recipe
    from .trainer import train

    card = get_card(args.model)
    config = read_config(args.config) if args.config else None
    cli_layer = _recipe_layer(args)
    if args.no_gan:
        cli_layer["loss"] = {"adv": 0.0, "ar": 0.0}
    recipe = resolve_recipe(card.training, config, cli_layer, pad_multiple=card.input.pad_multiple)
    data_card = dataclasses.replace(card, training={**card.training, **recipe.to_dict()})
    if not args.data:
        raise DataError("facedeblur train needs --data DIR (a dataset folder); see `facedeblur.data`")
    try:
        from ..data import build_datasets
    except ImportError as exc:
        raise DataError(f"facedeblur.data.build_datasets is not available in this installation ({exc}); "
                        f"train from Python with facedeblur.train.train(model, train_ds, val_ds, out_dir=...)") from None
    device = select_device(args.device)
    dist_info = init_distributed(device)
    try:
        # rank 0 prepares (and caches) the data first; the others then read the cache
        if not dist_info.is_main:
            barrier(dist_info)
        # the data engine makes moment data (which also feeds pair wrappers), clips for a clip wrapper, or
        # sharp vs real low-quality faces for an unpaired one
        consumed = get_method(card.architecture).sample_kind
        kind = {"kind": consumed} if consumed in ("clip", "unpaired") else {}
        train_ds, val_ds = build_datasets(args.data, data_card, seed=args.seed, cache_dir=args.cache_dir,
                                          progress=dist_info.is_main and not args.no_progress, **kind)
        if dist_info.is_main:
            barrier(dist_info)
        name = args.name or card.name
        result = train(card, train_ds, val_ds, out_dir=Path(args.out) / name, config=config,
                       recipe_overrides=cli_layer, max_steps=args.max_steps, max_minutes=args.max_minutes,
                       val_every=args.val_every, ckpt_every=args.ckpt_every, log_every=args.log_every,
                       seed=args.seed, device=args.device, threads=args.threads, amp=args.amp,
                       workers=args.workers, val_batch=args.val_batch, val_max=args.val_max, resume=args.resume,
                       channels_last=getattr(args, "channels_last", False),
                       init=args.init, export=args.export, gan=not args.no_gan, progress=not args.no_progress,
                       data_desc=f"{Path(args.data).name} ({os.path.abspath(args.data)})")
    finally:
        shutdown_distributed(dist_info)
    if result.interrupted:
        sig = result.status.split("(")[-1].rstrip(")")
        return 128 + int(getattr(signal.Signals, sig, signal.SIGTERM)) if sig.startswith("SIG") else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m facedeblur.train``: exit status 0 ok, 1 error, 128 + signal when stopped by a signal."""
    parser = add_train_arguments(argparse.ArgumentParser(prog="facedeblur train",
                                                         description="Train a facedeblur zoo model."))
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except FaceDeblurError as exc:
        print(f"facedeblur train: error: {exc}", file=sys.stderr)
        return 1
