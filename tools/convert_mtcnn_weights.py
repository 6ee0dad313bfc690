"""One-off conversion of facenet-pytorch's MTCNN weights to ``facedeblur/faces/weights/mtcnn.safetensors``.

facenet-pytorch (MIT licence, https://github.com/timesler/facenet-pytorch) ships the P-Net, R-Net and O-Net
weights of MTCNN (Zhang et al., IEEE SPL 2016) inside its wheel as ``facenet_pytorch/data/{pnet,rnet,onet}.pt``.
This script downloads nothing; get the wheel yourself and pass it (or the extracted ``.pt`` files / their folder)::

    pip download --no-deps facenet-pytorch -d /tmp/fnp
    python tools/convert_mtcnn_weights.py /tmp/fnp/facenet_pytorch-2.6.0-py3-none-any.whl

The ``.pt`` files are legacy (pre-1.6, non-zip) ``torch.save`` pickles. They are read **without**
``torch.load``: a restricted unpickler accepts only ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` and torch storage types, refuses every other Python global (nothing it
refuses is imported or called), and tensors are rebuilt from the raw storage bytes that follow the pickles.
Zip-format files (should a later release re-save them) go through
:func:`facedeblur.weights.official.read_torch_zip_checkpoint`, the package's restricted zip reader.

Layout: the weights descend from the Caffe originals via TensorFlow. facenet-pytorch's conv kernels already work on
ordinary (N, C, H, W) images, but its fully connected layers expect the last feature map flattened in
(W, H, C) order (the transposed layout of the Caffe models). The converter permutes the input dimension of those
layers once, so that :mod:`facedeblur.faces.mtcnn` flattens in the ordinary (C, H, W) order. Nothing else changes.

After converting, update ``WEIGHTS_SHA256`` in ``facedeblur/faces/mtcnn.py`` with the printed digest.
"""
from __future__ import annotations

import argparse
import collections
import io
import os
import pathlib
import pickle
import struct
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Any

import torch

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "facedeblur" / "faces" / "weights" / "mtcnn.safetensors"
NETS = ("pnet", "rnet", "onet")
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class UnsafePickleError(ValueError):
    """The pickle names a Python global outside the allow-list (it was not imported or executed)."""


@dataclass(frozen=True)
class _Storage:
    """A storage reference from the pickle: its key and dtype (data is read after the pickle)."""

    key: str
    dtype: torch.dtype
    numel: int


@dataclass(frozen=True)
class _TensorSpec:
    """What ``_rebuild_tensor_v2`` would build: a strided view of a storage, resolved later."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _ints(x: Any, what: str) -> tuple[int, ...]:
    if not isinstance(x, (tuple, list)) or not all(isinstance(v, int) and v >= 0 for v in x):
        raise ValueError(f"malformed tensor record: {what} {x!r}")
    return tuple(x)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> _TensorSpec:
    if not isinstance(storage, _Storage) or not isinstance(offset, int) or offset < 0:
        raise ValueError("malformed tensor record (storage/offset)")
    if backward_hooks:
        raise UnsafePickleError("tensor record carries backward hooks; a plain state dict has none")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if len(size) != len(stride):
        raise ValueError(f"malformed tensor record: size {size} vs stride {stride}")
    return _TensorSpec(storage, offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for a tensor-only state dict: OrderedDict, ``_rebuild_tensor_v2`` and storage types only."""

    def __init__(self, f: io.BytesIO, name: str, allow_storages: bool = True) -> None:
        super().__init__(f)
        self.name = name
        self.allow_storages = allow_storages
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return name  # a plain string standing for the storage type
        raise UnsafePickleError(f"refusing to read {self.name}: its pickle references {module}.{name}, which a "
                                f"tensor state dict does not need; nothing from the file was executed")

    def persistent_load(self, pid: Any) -> _Storage:
        # legacy records: ('storage', type, key, location, numel[, view_metadata])
        ok = (self.allow_storages and isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
              and isinstance(pid[1], str) and pid[1] in _STORAGE_DTYPES and isinstance(pid[2], str)
              and isinstance(pid[4], int) and pid[4] >= 0 and (len(pid) == 5 or pid[5] is None))
        if not ok:
            raise UnsafePickleError(f"refusing to read {self.name}: unexpected persistent record {pid!r:.120}")
        st = _Storage(pid[2], _STORAGE_DTYPES[pid[1]], pid[4])
        if self.storages.setdefault(st.key, st) != st:
            raise ValueError(f"{self.name}: storage {st.key} is declared twice with different types/sizes")
        return st


def _load(f: io.BytesIO, name: str) -> Any:
    """A plain (globals-free) pickle such as the legacy header records."""
    return _RestrictedUnpickler(f, name, allow_storages=False).load()


def read_legacy_checkpoint(data: bytes, name: str) -> dict[str, torch.Tensor]:
    """Tensors of a legacy (pre-1.6) ``torch.save`` file holding a flat state dict, never executing its code."""
    f = io.BytesIO(data)
    if _load(f, name) != _LEGACY_MAGIC:
        raise ValueError(f"{name} is not a legacy PyTorch checkpoint (bad magic number)")
    if _load(f, name) != _LEGACY_PROTOCOL:
        raise ValueError(f"{name}: unsupported legacy protocol version")
    sys_info = _load(f, name)
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise ValueError(f"{name}: only little-endian legacy checkpoints are supported")
    unpickler = _RestrictedUnpickler(f, name)
    obj = unpickler.load()
    keys = _load(f, name)
    if not isinstance(obj, dict) or not all(isinstance(v, _TensorSpec) for v in obj.values()):
        raise ValueError(f"{name} does not hold a flat tensor state dict")
    if not isinstance(keys, list) or sorted(keys) != sorted(unpickler.storages):
        raise ValueError(f"{name}: storage key list does not match the records in the pickle")
    flat: dict[str, torch.Tensor] = {}
    for key in keys:  # each storage: int64 element count, then the raw little-endian bytes
        st = unpickler.storages[key]
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{name} is truncated (storage {key})")
        (numel,) = struct.unpack("<q", head)
        item = torch.empty((), dtype=st.dtype).element_size()
        raw = f.read(numel * item)
        if numel != st.numel or len(raw) != numel * item:
            raise ValueError(f"{name} is truncated or corrupt: storage {key} has {len(raw)} bytes, expected "
                             f"{st.numel} x {item}")
        flat[key] = torch.frombuffer(bytearray(raw), dtype=st.dtype) if raw else torch.empty(0, dtype=st.dtype)
    if f.read(1):
        raise ValueError(f"{name}: unexpected trailing bytes")
    out: dict[str, torch.Tensor] = {}
    for k, spec in obj.items():
        storage = flat[spec.storage.key]
        end = spec.offset + (sum((n - 1) * s for n, s in zip(spec.size, spec.stride)) + 1 if all(spec.size) else 0)
        if end > storage.numel():
            raise ValueError(f"{name}: tensor {k} reaches past its storage")
        out[k] = torch.as_strided(storage, spec.size, spec.stride, spec.offset).contiguous().clone()
    return out


def read_checkpoint(data: bytes, name: str) -> dict[str, torch.Tensor]:
    """Legacy or zip-format ``torch.save`` state dict from bytes, tensors only."""
    if data[:4] == b"PK\x03\x04":
        sys.path.insert(0, str(REPO_ROOT))
        from facedeblur.weights.official import read_torch_zip_checkpoint

        with tempfile.TemporaryDirectory() as tmp:
            p = pathlib.Path(tmp) / "ckpt.pt"
            p.write_bytes(data)
            obj = read_torch_zip_checkpoint(p)
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ValueError(f"{name} does not hold a flat tensor state dict")
        return dict(obj)
    return read_legacy_checkpoint(data, name)


def _read_sources(paths: list[pathlib.Path]) -> dict[str, bytes]:
    """The bytes of pnet.pt, rnet.pt and onet.pt from a wheel, a folder, or the files themselves."""
    found: dict[str, bytes] = {}
    for p in paths:
        if p.is_file() and p.suffix == ".whl":
            with zipfile.ZipFile(p) as zf:
                for net in NETS:
                    member = f"facenet_pytorch/data/{net}.pt"
                    if member in zf.namelist():
                        found[net] = zf.read(member)
        elif p.is_dir():
            for net in NETS:
                for cand in (p / f"{net}.pt", p / "facenet_pytorch" / "data" / f"{net}.pt", p / "data" / f"{net}.pt"):
                    if cand.is_file():
                        found[net] = cand.read_bytes()
                        break
        elif p.is_file() and p.stem in NETS:
            found[p.stem] = p.read_bytes()
        else:
            raise SystemExit(f"{p}: expected the facenet-pytorch wheel, a folder with pnet/rnet/onet.pt, or those "
                             f"files")
    missing = [n for n in NETS if n not in found]
    if missing:
        raise SystemExit(f"missing {', '.join(m + '.pt' for m in missing)} in {', '.join(map(str, paths))}")
    return found


# (our key, facenet-pytorch key) per network; dense layers fed by a feature map are marked with its (C, H, W)
_PNET = [("conv1", "conv1"), ("prelu1", "prelu1"), ("conv2", "conv2"), ("prelu2", "prelu2"), ("conv3", "conv3"),
         ("prelu3", "prelu3"), ("cls", "conv4_1"), ("reg", "conv4_2")]
_RNET = [("conv1", "conv1"), ("prelu1", "prelu1"), ("conv2", "conv2"), ("prelu2", "prelu2"), ("conv3", "conv3"),
         ("prelu3", "prelu3"), ("fc", "dense4"), ("prelu4", "prelu4"), ("cls", "dense5_1"), ("reg", "dense5_2")]
_ONET = [("conv1", "conv1"), ("prelu1", "prelu1"), ("conv2", "conv2"), ("prelu2", "prelu2"), ("conv3", "conv3"),
         ("prelu3", "prelu3"), ("conv4", "conv4"), ("prelu4", "prelu4"), ("fc", "dense5"), ("prelu5", "prelu5"),
         ("cls", "dense6_1"), ("reg", "dense6_2"), ("landmarks", "dense6_3")]
_MAPS = {"pnet": _PNET, "rnet": _RNET, "onet": _ONET}
_FLATTEN_CHW = {("rnet", "fc"): (64, 3, 3), ("onet", "fc"): (128, 3, 3)}


def convert(sources: dict[str, bytes]) -> dict[str, torch.Tensor]:
    """facenet-pytorch state dicts -> one flat state dict with :class:`facedeblur.faces.mtcnn.MTCNNNets` keys."""
    out: dict[str, torch.Tensor] = {}
    for net, mapping in _MAPS.items():
        sd = read_checkpoint(sources[net], f"{net}.pt")
        used = set()
        for ours, theirs in mapping:
            for kind in ("weight", "bias"):
                k = f"{theirs}.{kind}"
                if k not in sd:
                    if theirs.startswith("prelu") and kind == "bias":
                        continue
                    raise SystemExit(f"{net}.pt has no {k}; is this facenet-pytorch's MTCNN?")
                t = sd[k].to(torch.float32).contiguous()
                if kind == "weight" and (net, ours) in _FLATTEN_CHW:
                    c, h, w = _FLATTEN_CHW[(net, ours)]
                    t = t.reshape(t.shape[0], w, h, c).permute(0, 3, 2, 1).reshape(t.shape[0], c * h * w).contiguous()
                out[f"{net}.{ours}.{kind}"] = t
                used.add(k)
        extra = sorted(set(sd) - used)
        if extra:
            raise SystemExit(f"{net}.pt has unexpected keys {extra}; is this facenet-pytorch's MTCNN?")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sources", nargs="+", type=pathlib.Path,
                    help="facenet-pytorch wheel, a folder with pnet/rnet/onet.pt, or the three .pt files")
    ap.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help=f"output file (default {DEFAULT_OUT})")
    args = ap.parse_args(argv)
    sd = convert(_read_sources(args.sources))

    sys.path.insert(0, str(REPO_ROOT))
    from safetensors.torch import save_file

    from facedeblur.faces.mtcnn import MTCNNNets
    from facedeblur.weights.store import atomic_path, load_state_dict_strict, sha256_file

    load_state_dict_strict(MTCNNNets(), sd, source="converted facenet-pytorch weights")  # strict key/shape check
    # one metadata entry (safetensors orders several arbitrarily), fixed text: the output and its sha256 do not
    # depend on the run or on how the sources were passed
    meta = {"origin": "facenet-pytorch (MIT licence) facenet_pytorch/data/{pnet,rnet,onet}.pt; fc layers re-ordered "
                      "to flatten (C,H,W); keys of facedeblur.faces.mtcnn.MTCNNNets"}
    with atomic_path(args.out) as tmp:
        save_file(sd, str(tmp), metadata=meta)
        os.chmod(tmp, 0o644)  # package data: world-readable (mkstemp creates 0600)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes, {len(sd)} tensors)")
    print(f"sha256 {sha256_file(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
