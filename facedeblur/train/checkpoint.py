"""Training checkpoints as safetensors only: every tensor of a nested state in the file, the structure and the
Python scalars as JSON in the header metadata. No pickles.

:func:`flatten_state` / :func:`unflatten_state` turn any nest of dicts (str or int keys), lists, tuples,
tensors, numpy arrays and JSON scalars (an optimizer's ``state_dict()``, an LR scheduler's, RNG states) into
``(tensors, structure)`` and back, exactly (floats survive JSON through ``repr``).
"""
from __future__ import annotations

import json
import os
import random
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import FaceDeblurError

__all__ = ["CheckpointError", "flatten_state", "unflatten_state", "save_state", "load_state", "rng_state",
           "set_rng_state", "atomic_write_text", "save_tensors_atomic", "read_generator_state"]

FORMAT = "facedeblur-train-checkpoint"
CHECKPOINT_NAME = "checkpoint.safetensors"  # the file name in a run's last/ folder
VERSION = "1"


class CheckpointError(FaceDeblurError):
    """A training checkpoint that cannot be read or does not fit the run being resumed."""


def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state into ``(tensors by name, JSON-able structure referencing them)``."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            name = path or "_"
            if name in tensors:
                raise CheckpointError(f"two tensors would share the name {name!r} in the checkpoint")
            tensors[name] = x.detach().to("cpu").contiguous().clone()
            return {"__t__": name}
        if isinstance(x, np.ndarray):
            name = path or "_"
            if name in tensors:
                raise CheckpointError(f"two tensors would share the name {name!r} in the checkpoint")
            tensors[name] = torch.from_numpy(np.ascontiguousarray(x).astype(np.int64 if x.dtype.kind in "ui"
                                                                              else x.dtype)).clone()
            return {"__np__": name, "dtype": str(x.dtype)}
        if isinstance(x, dict):
            items = []
            for k, v in x.items():
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise CheckpointError(f"cannot store a dict key of type {type(k).__name__} at {path!r}")
                items.append([k, walk(v, f"{path}/{k}" if path else str(k))])
            return {"__d__": items}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, f"{path}/{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(x)]
        if isinstance(x, np.generic):
            return x.item()
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise CheckpointError(f"cannot store a value of type {type(x).__name__} at {path!r} in a checkpoint")

    return tensors, walk(obj, prefix)


def unflatten_state(tensors: dict[str, torch.Tensor], struct: Any) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(struct, list):
        return [unflatten_state(tensors, v) for v in struct]
    if isinstance(struct, dict):
        try:
            if "__t__" in struct:
                return tensors[struct["__t__"]]
            if "__np__" in struct:
                return tensors[struct["__np__"]].numpy().astype(np.dtype(struct["dtype"]))
        except KeyError as exc:
            raise CheckpointError(f"checkpoint is missing tensor {exc}; the file is incomplete or corrupt") from None
        if "__tuple__" in struct:
            return tuple(unflatten_state(tensors, v) for v in struct["__tuple__"])
        if "__d__" in struct:
            return {k: unflatten_state(tensors, v) for k, v in struct["__d__"]}
        raise CheckpointError(f"unknown structure entry {sorted(struct)} in checkpoint")
    return struct


def _tmp_path(path: Path) -> Path:
    """A fresh temporary name next to ``path`` (created later with the default, umask-respecting mode)."""
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a UTF-8 text file atomically (:func:`facedeblur.restore.convert.write_bytes_atomic`)."""
    from ..restore.convert import write_bytes_atomic

    write_bytes_atomic(path, text.encode("utf-8"))


def save_tensors_atomic(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                        metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write a nested training state to one safetensors file, atomically."""
    tensors, struct = flatten_state(state)
    meta = {"format": FORMAT, "version": VERSION, "state": json.dumps(struct, allow_nan=True)}
    save_tensors_atomic(path, tensors, meta)


def load_state(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a state written by :func:`save_state` (tensors on ``device``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; start without --resume or point it to a checkpoint file")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path} is not a facedeblur training checkpoint (format "
                                      f"{meta.get('format')!r}); pass a file written by `facedeblur train`")
            if meta.get("version") != VERSION:
                raise CheckpointError(f"{path} has checkpoint version {meta.get('version')!r}; this facedeblur "
                                      f"reads version {VERSION}")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}; the file is truncated or corrupt, "
                              f"use an older checkpoint or start a new run") from exc
    return unflatten_state(tensors, json.loads(meta["state"]))


def read_generator_state(src: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str | None]:
    """A generator's weights from a training checkpoint (its EMA when it has one, else G), a run folder, a
    ``.safetensors`` weights file or a ``save_pretrained`` folder. Returns the state dict and the checkpoint's
    architecture name (None for plain weights files).

    Raises:
        CheckpointError: nothing readable at ``src``.
    """
    path = Path(src)
    if path.is_dir():
        for cand in (path / CHECKPOINT_NAME, path / "last" / CHECKPOINT_NAME, path / "model.safetensors"):
            if cand.is_file():
                path = cand
                break
        else:
            raise CheckpointError(f"{src}: the folder has no {CHECKPOINT_NAME}, last/{CHECKPOINT_NAME} or "
                                  f"model.safetensors")
    if not path.is_file():
        raise CheckpointError(f"{src}: no such file or folder")
    try:
        with safe_open(str(path), framework="pt") as f:
            is_ckpt = (f.metadata() or {}).get("format") == FORMAT
    except Exception as exc:  # safetensors raises its own error types for non-safetensors/corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc}); pass a training checkpoint or a "
                              f".safetensors weights file") from exc
    if is_ckpt:
        st = load_state(path)
        return (st["ema"] if st.get("ema") is not None else st["g"]), st["architecture"]
    from ..weights import read_state_dict

    return read_state_dict(path), None


def rng_state() -> dict[str, Any]:
    """The RNG states of torch (CPU and every initialised CUDA device), numpy and Python ``random``."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": np.asarray(np_state[1]), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "internal": list(py_state[1]), "gauss_next": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"].to("cpu", torch.uint8))
    npst = state["numpy"]
    np.random.set_state((npst["name"], np.asarray(npst["keys"], dtype=np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [t.to("cpu", torch.uint8) for t in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
