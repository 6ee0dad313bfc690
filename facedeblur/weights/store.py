"""Reading and checking weight files: safetensors only, sha256-verified, strict key/shape loading.

Pickled checkpoints (``.pth``, ``.pt``, ``.bin``, ``.ckpt``) are never unpickled here: ``torch.load`` can
run arbitrary code. The authors' CFMD-GAN checkpoint is converted once by
:func:`facedeblur.weights.official.import_cfmd_gan_official` (``facedeblur import-official``), which uses
a restricted reader that only rebuilds tensors.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import re
import tempfile
from typing import Any, Iterable

import torch
from torch import nn

from ..errors import WeightsIntegrityError, WeightsMismatchError, WeightsNotAvailableError

__all__ = ["read_state_dict", "load_state_dict_strict", "check_state_dict", "sha256_file", "atomic_write_bytes",
           "atomic_path", "PICKLE_SUFFIXES"]

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")
_SHOW = 8  # how many keys of each kind an error message lists


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


class atomic_path:  # noqa: N801 (used like a function: ``with atomic_path(dst) as tmp``)
    """Context manager yielding a temporary path next to ``dst``; on success it is ``os.replace``-d onto
    ``dst``, on error it is removed. Readers never see a half-written file."""

    def __init__(self, dst: str | os.PathLike) -> None:
        self.dst = pathlib.Path(dst)
        self.tmp: pathlib.Path | None = None

    def __enter__(self) -> pathlib.Path:
        self.dst.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.dst.name}.", suffix=".tmp", dir=self.dst.parent)
        os.close(fd)
        self.tmp = pathlib.Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.tmp is not None
        if exc_type is None:
            os.replace(self.tmp, self.dst)
        else:
            self.tmp.unlink(missing_ok=True)


def atomic_write_bytes(dst: str | os.PathLike, data: bytes) -> pathlib.Path:
    """Write ``data`` to ``dst`` atomically (temp file + ``os.replace``)."""
    with atomic_path(dst) as tmp:
        tmp.write_bytes(data)
    return pathlib.Path(dst)


def _sniff(path: pathlib.Path) -> str:
    """A short description of what a non-safetensors file looks like, for error messages."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return ""
    if head.startswith(b"PK\x03\x04"):
        return " It is a zip archive: probably a PyTorch checkpoint saved with torch.save."
    if head[:1] == b"\x80":
        return " It is a Python pickle: probably a legacy PyTorch checkpoint."
    return ""


def read_state_dict(path: str | os.PathLike, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` state dict on the CPU, verifying its sha256 when ``expected_sha256`` is given.

    Raises:
        WeightsNotAvailableError: the file does not exist.
        WeightsIntegrityError: not a safetensors file, sha256 mismatch, truncated or corrupt file.
    """
    p = pathlib.Path(path)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise WeightsIntegrityError(
            f"{p} is a pickled PyTorch checkpoint ({p.suffix}); facedeblur reads only .safetensors files because "
            f"unpickling can run arbitrary code. Convert it: for the CFMD-GAN authors' model_best.pth use "
            f"`facedeblur import-official cfmd-gan {p.name} OUT_DIR`; for a checkpoint you trust, "
            f"`safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')`.")
    if not p.exists():
        raise WeightsNotAvailableError(f"weight file {p} does not exist; check the path or pass weights=PATH to a "
                                       f".safetensors file or a folder containing model.safetensors")
    if p.is_dir():
        raise WeightsNotAvailableError(f"{p} is a folder; pass the .safetensors file inside it (usually "
                                       f"{p / 'model.safetensors'})")
    if p.suffix.lower() != ".safetensors":
        raise WeightsIntegrityError(
            f"{p} is not a .safetensors file (suffix {p.suffix or 'none'!r}).{_sniff(p)} facedeblur reads only "
            f"safetensors; convert with `facedeblur import-official` (the authors' CFMD-GAN checkpoint) or with the "
            f"safetensors package.")
    if expected_sha256:
        actual = sha256_file(p)
        if actual.lower() != expected_sha256.lower():
            real = p.resolve()
            where = f" (cache blob {real})" if real != p.absolute() else ""
            raise WeightsIntegrityError(
                f"sha256 mismatch for {p}{where}: expected {expected_sha256}, got {actual}. The file is corrupt, "
                f"incomplete or not the published one. Fix: delete the file and download it again "
                f"(`facedeblur download NAME`, or hf_hub_download(..., force_download=True)); if you passed it "
                f"yourself, re-export it with facedeblur.weights.save_pretrained.")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        size = p.stat().st_size
        raise WeightsIntegrityError(
            f"{p} ({size} bytes) is not a readable safetensors file: {e}.{_sniff(p)} It is probably truncated or "
            f"corrupt: delete it and download/export it again.") from None


def _short(items: list[str], n: int = _SHOW) -> str:
    shown = ", ".join(items[:n])
    return f"{shown}, ... ({len(items)} in all)" if len(items) > n else shown


def _arch_hint(own_keys: Iterable[str], file_keys: Iterable[str], missing: list[str], unexpected: list[str],
               shapes: list[str], arch_kwargs: dict[str, Any] | None) -> str:
    """Which architecture kwargs are likely wrong, from the pattern of differences."""
    pat = re.compile(r"\.\d+(?=\.|$)")
    own_p = {pat.sub(".#", k) for k in own_keys}
    file_p = {pat.sub(".#", k) for k in file_keys}
    hints = []
    if shapes:
        hints.append("shape mismatches mean different channel widths (kwargs like width, mapping_width, se_reduction)")
    if (missing and all(pat.sub(".#", k) in file_p for k in missing)) or \
            (unexpected and all(pat.sub(".#", k) in own_p for k in unexpected)):
        hints.append("keys that differ only in a block index mean a different depth (kwargs like num_res, "
                     "mapping_layers)")
    if any(k.split(".", 1)[0] in ("module", "_orig_mod") for k in unexpected):
        hints.append("keys starting with 'module.'/'_orig_mod.' come from a DataParallel/compiled model; strip the "
                     "prefix when exporting")
    text = "; ".join(hints) if hints else "the file was made for a different architecture or variant"
    if arch_kwargs is not None:
        text += f". The model was built with {arch_kwargs}"
    return text


def check_state_dict(reference: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor], *,
                     what: str = "the model", arch_kwargs: dict[str, Any] | None = None,
                     source: str | None = None) -> None:
    """Raise WeightsMismatchError unless ``state_dict`` has exactly the keys, shapes and kinds (float or not)
    of ``reference`` (a model's state dict; meta tensors are fine)."""
    missing = [k for k in reference if k not in state_dict]
    unexpected = [k for k in state_dict if k not in reference]
    shapes = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(reference[k].shape)}"
              for k in reference if k in state_dict and tuple(state_dict[k].shape) != tuple(reference[k].shape)]
    src = f" from {source}" if source else ""
    if missing or unexpected or shapes:
        parts = [f"weights{src} do not fit {what}:"]
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_short(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_short(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): {_short(shapes, 5)}")
        hint = _arch_hint(reference, state_dict, missing, unexpected, shapes, arch_kwargs)
        parts.append(f"Likely cause: {hint}. Build the model with the architecture kwargs the weights were trained "
                     f"with (see the folder's config.json or the model card), or pass the weights of this variant.")
        raise WeightsMismatchError("\n  ".join(parts))
    for k, ref in reference.items():
        if state_dict[k].is_floating_point() != ref.is_floating_point():
            raise WeightsMismatchError(f"weights{src}: {k} has dtype {state_dict[k].dtype} but {what} expects "
                                       f"{ref.dtype}; the file does not belong to this architecture")


def load_state_dict_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], *,
                           arch_kwargs: dict[str, Any] | None = None, source: str | None = None) -> None:
    """Load ``state_dict`` into ``model`` with exact key and shape matching, cast to the model's dtypes.

    Unlike ``nn.Module.load_state_dict(strict=False)`` (the Hub mixin's default), a renamed key can never
    leave random weights behind. ``arch_kwargs``/``source`` only enrich the error message.

    Raises:
        WeightsMismatchError: listing missing keys, unexpected keys and shape mismatches (first few of each,
            with counts) and which architecture kwargs may be wrong.
    """
    own = model.state_dict()
    check_state_dict(own, state_dict, what=type(model).__name__, arch_kwargs=arch_kwargs, source=source)
    cast = {k: state_dict[k].to(dtype=ref.dtype) if state_dict[k].dtype != ref.dtype else state_dict[k]
            for k, ref in own.items()}
    model.load_state_dict(cast, strict=True)
