"""Training: one generic loop (:mod:`.trainer`) and a training wrapper per method (:mod:`.methods`).

``train(model, train_ds, val_ds, out_dir=...)`` from Python; ``facedeblur train MODEL --data DIR`` (or
``torchrun --nproc_per_node N -m facedeblur.train MODEL --data DIR``) from the shell. Imports are lazy so
``import facedeblur`` stays cheap.
"""
from __future__ import annotations

from typing import Any

__all__ = ["train", "Trainer", "TrainOptions", "TrainResult", "add_train_arguments", "run_from_args"]

_LAZY = {"train": "trainer", "Trainer": "trainer", "TrainOptions": "trainer", "TrainResult": "trainer",
         "add_train_arguments": "cli", "run_from_args": "cli"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
