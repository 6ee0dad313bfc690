"""Restricted readers of two older weight formats: Lua Torch7 ``.t7`` files and pre-1.6 ``torch.save`` pickles.

Both read data only and never execute anything from the file. They are what the VGG-Face importer
(:mod:`facedeblur.weights.vggface`) needs: Oxford's Torch release (``VGG_FACE.t7``) and PyTorch ports saved before
PyTorch 1.6 (legacy, non-zip ``.pth``). Zip-format checkpoints are read by
:func:`facedeblur.weights.official.read_torch_zip_checkpoint`; :func:`read_torch_checkpoint` picks the reader.

**Torch7 binary serialization** (``torch.save(file, obj)``, default binary mode; written from the format's
description in Torch7's ``File.lua`` / ``Tensor.c``, not from any reader's code). Little-endian; ``int`` 4 bytes,
``long`` 8 bytes, numbers as 8-byte doubles. Each object starts with an ``int`` type code:

* 0 nil; 1 number (double); 2 string (int length, bytes); 5 boolean (int 0/1);
* 3 table and 4 torch object: an ``int`` reference index follows. An index seen before refers to that object
  (shared and cyclic references), and nothing more is written. Otherwise a table has an ``int`` entry count and as
  many (key object, value object) pairs. A torch object has a version string ``"V <n>"`` (absent in very old files,
  where the string is the class name), its class name, and then its data. A tensor has an ``int`` dimension count,
  that many ``long`` sizes, that many ``long`` strides, a ``long`` 1-based storage offset and its storage object. A
  storage has a ``long`` element count and the raw elements. Any other class (``nn.*`` modules) is a table of its
  fields.
* 6, 7, 8: Lua functions (byte code). The reader refuses them (:class:`UnsafeCheckpointError`): weights do not
  need code.

Tensors come back as CPU ``torch.Tensor`` (CUDA classes are read as their CPU equivalents), tables as
:class:`LuaTable` (a dict; Lua's integer keys as ``int``), other torch objects as :class:`TorchObject`.

**Legacy torch.save** (PyTorch < 1.6): five pickles, then the raw storages. The pickles hold the magic number
``0x1950a86a20f9469cfc6c``, the protocol version 1001, the system info (byte order, type sizes), the object (its
storages are persistent ids ``("storage", type, key, location, numel, view)``) and the sorted storage keys. Then, for
each key, a little-endian ``int64`` element count and the raw elements. The object pickle goes through the same
allow-list as the zip reader (``OrderedDict``, the tensor rebuild functions, storage types).
"""
from __future__ import annotations

import collections
import io
import os
import pathlib
import pickle
import struct
import tarfile
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import WeightsIntegrityError, WeightsNotAvailableError
from .official import (UnsafeCheckpointError, _latin1_encode, allowed_global,
                       _rebuild_parameter, _StorageType, read_torch_zip_checkpoint)

__all__ = ["read_torch7", "read_torch_checkpoint", "Torch7FormatError", "LuaTable", "TorchObject",
           "LEGACY_MAGIC", "TORCH7_STORAGE_DTYPES"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class Torch7FormatError(WeightsIntegrityError):
    """Not a readable Torch7 binary file (truncated, corrupt, ASCII mode, or another format)."""


class LuaTable(dict):
    """A Lua table read from a ``.t7`` file (keys: ``str``, ``int`` for integral numbers, ``float``, ``bool``)."""

    def as_list(self) -> list[Any]:
        """The values of keys 1..n in order (a Lua array such as ``nn.Sequential.modules``)."""
        n = len(self)
        if set(self) != set(range(1, n + 1)):
            raise Torch7FormatError(f"the table is not a Lua array (keys {sorted(map(str, self))[:8]})")
        return [self[i] for i in range(1, n + 1)]


@dataclass(eq=False)
class TorchObject:
    """An instance of a Torch7 class other than a tensor or storage (e.g. ``nn.SpatialConvolutionMM``): its class
    name, the serialization version and its fields."""

    class_name: str
    version: int
    fields: LuaTable = field(default_factory=LuaTable)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


#: Torch7 storage class -> dtype (CUDA storages are written like the CPU ones)
TORCH7_STORAGE_DTYPES: dict[str, torch.dtype] = {}
for _prefix in ("torch.", "torch.Cuda"):
    for _kind, _dt in (("Float", torch.float32), ("Double", torch.float64), ("Half", torch.float16),
                       ("Long", torch.int64), ("Int", torch.int32), ("Short", torch.int16), ("Char", torch.int8),
                       ("Byte", torch.uint8)):
        TORCH7_STORAGE_DTYPES[f"{_prefix}{_kind}Storage"] = _dt
TORCH7_STORAGE_DTYPES["torch.CudaStorage"] = torch.float32  # cutorch's float storage
_MAX_DEPTH = 200


class _T7Reader:
    def __init__(self, data: bytes, src: str) -> None:
        self.data, self.pos, self.src = data, 0, src
        self.objects: dict[int, Any] = {}

    def fail(self, what: str) -> Torch7FormatError:
        return Torch7FormatError(f"{self.src} is not a readable Torch7 binary file: {what} at byte {self.pos}. "
                                 f"Expected a file written by Torch7's torch.save in binary mode (e.g. Oxford's "
                                 f"VGG_FACE.t7); it may be truncated, ASCII-mode or another format")

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"{what} needs {n} bytes, {len(self.data) - self.pos} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self, what: str) -> int:
        return struct.unpack("<i", self.take(4, what))[0]

    def long(self, what: str) -> int:
        return struct.unpack("<q", self.take(8, what))[0]

    def string(self, what: str) -> str:
        n = self.int(f"{what} length")
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    def obj(self, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise self.fail(f"objects nested deeper than {_MAX_DEPTH}")
        kind = self.int("type code")
        if kind == 0:
            return None
        if kind == 1:
            v = struct.unpack("<d", self.take(8, "number"))[0]
            return int(v) if v.is_integer() and abs(v) < 2 ** 53 else v
        if kind == 2:
            return self.string("string")
        if kind == 5:
            b = self.int("boolean")
            if b not in (0, 1):
                raise self.fail(f"boolean value {b}")
            return bool(b)
        if kind in (6, 7, 8):
            raise UnsafeCheckpointError(f"{self.src} holds a serialized Lua function (type code {kind}); facedeblur's "
                                        f"Torch7 reader reads data only and does not read code. Nothing was run")
        if kind not in (3, 4):
            raise self.fail(f"unknown type code {kind}")
        index = self.int("reference index")
        if index in self.objects:
            return self.objects[index]
        if kind == 3:
            table = LuaTable()
            self.objects[index] = table
            n = self.int("table size")
            if n < 0 or n > (len(self.data) - self.pos) // 8:
                raise self.fail(f"table size {n}")
            for _ in range(n):
                key = self.obj(depth + 1)
                if isinstance(key, (LuaTable, TorchObject, torch.Tensor)) or key is None:
                    raise self.fail(f"unsupported table key of type {type(key).__name__}")
                table[key] = self.obj(depth + 1)
            return table
        version_or_name = self.string("version")
        if version_or_name.startswith("V "):
            try:
                version = int(version_or_name[2:])
            except ValueError:
                raise self.fail(f"version string {version_or_name!r}") from None
            name = self.string("class name")
        else:
            version, name = 0, version_or_name
        if name in TORCH7_STORAGE_DTYPES:
            out: Any = self.storage(name)
        elif name.endswith("Tensor") and name.startswith("torch."):
            out = self.tensor(name, index, depth)
        else:
            out = TorchObject(name, version)
            self.objects[index] = out
            fields = self.obj(depth + 1)
            if not isinstance(fields, LuaTable):
                raise self.fail(f"{name}: expected a table of fields, got {type(fields).__name__}")
            out.fields = fields
        self.objects[index] = out
        return out

    def storage(self, name: str) -> torch.Tensor:
        dtype = TORCH7_STORAGE_DTYPES[name]
        n = self.long(f"{name} size")
        item = torch.empty((), dtype=dtype).element_size()
        raw = self.take(n * item, f"{name} data")
        if not raw:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(bytearray(raw), dtype=dtype)

    def tensor(self, name: str, index: int, depth: int) -> torch.Tensor:
        ndim = self.int(f"{name} dimension count")
        if not 0 <= ndim <= 32:
            raise self.fail(f"{name} with {ndim} dimensions")
        size = [self.long("tensor size") for _ in range(ndim)]
        stride = [self.long("tensor stride") for _ in range(ndim)]
        offset = self.long("storage offset") - 1
        storage = self.obj(depth + 1)
        if ndim == 0 or storage is None:
            kind = name.replace("torch.Cuda", "torch.").replace("Tensor", "Storage")
            dtype = TORCH7_STORAGE_DTYPES.get(kind if kind != "torch.Storage" else "torch.FloatStorage", torch.float32)
            return torch.empty(0, dtype=dtype)
        if not isinstance(storage, torch.Tensor) or storage.dim() != 1:
            raise self.fail(f"{name} without a storage")
        if any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
            raise self.fail(f"{name} with sizes {size}, strides {stride}, offset {offset + 1}")
        end = offset + (sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0)
        if end > storage.numel():
            raise self.fail(f"{name} reaches element {end} of a storage of {storage.numel()}")
        return torch.as_strided(storage, size, stride, offset).clone()


def _read_bytes(path: str | os.PathLike) -> tuple[pathlib.Path, bytes]:
    p = pathlib.Path(path).expanduser()
    if not p.is_file():
        raise WeightsNotAvailableError(f"weight file {p} does not exist")
    return p, p.read_bytes()


def read_torch7(path: str | os.PathLike) -> Any:
    """The object of a Torch7 binary ``.t7`` file (see the module docstring), read without running anything.

    Raises:
        WeightsNotAvailableError: no such file.
        Torch7FormatError: not a readable Torch7 binary file, or trailing bytes after the object.
        UnsafeCheckpointError: the file holds Lua functions.
    """
    p, data = _read_bytes(path)
    r = _T7Reader(data, str(p))
    out = r.obj()
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} trailing bytes after the object")
    return out


# ----------------------------------------------------------------------------------------------- legacy torch.save


def _tensor_view(storage: Any, storage_offset: Any, size: Any, stride: Any, *_: Any, **__: Any) -> torch.Tensor:
    """``torch._utils._rebuild_tensor(_v2)`` for the legacy reader: a bounds-checked strided *view* (the storage is
    filled after the object pickle; the views are copied once it is)."""
    if not isinstance(storage, torch.Tensor) or not isinstance(storage_offset, int) or storage_offset < 0:
        raise WeightsIntegrityError("malformed tensor record in checkpoint (storage/offset)")
    if not (isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list)) and len(size) == len(stride)
            and all(isinstance(v, int) and v >= 0 for v in (*size, *stride))):
        raise WeightsIntegrityError(f"malformed tensor record: size {size!r}, stride {stride!r}")
    if len(_) >= 2 and _[1]:
        raise UnsafeCheckpointError("checkpoint tensor carries backward hooks; a plain state dict has none")
    end = storage_offset + (sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0)
    if end > storage.numel():
        raise WeightsIntegrityError(f"tensor record reaches element {end} of a storage with {storage.numel()}: the "
                                    f"checkpoint is truncated or corrupt")
    return torch.as_strided(storage, tuple(size), tuple(stride), storage_offset)


_LEGACY_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _tensor_view,
    ("torch._utils", "_rebuild_tensor"): _tensor_view,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("_codecs", "encode"): _latin1_encode,
}


class _LegacyUnpickler(pickle.Unpickler):
    def __init__(self, f: io.BytesIO, path: pathlib.Path, storages: dict[str, torch.Tensor] | None) -> None:
        super().__init__(f)
        self._path, self._storages = path, storages

    def find_class(self, module: str, name: str) -> Any:
        if self._storages is not None:
            found = allowed_global(module, name, _LEGACY_ALLOWED)
            if found is not None:
                return found
        raise UnsafeCheckpointError(
            f"refusing to read {self._path}: its pickle references the Python global {module}.{name}, which a plain "
            f"tensor state dict does not need. Nothing from the file was executed. If you trust the file's origin, "
            f"re-save its state dict in a separate script (torch.load(path, weights_only=True), then torch.save) and "
            f"import that file.")

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None or not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
                                          and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                                          and isinstance(pid[4], int) and pid[4] >= 0):
            raise UnsafeCheckpointError(f"refusing to read {self._path}: unexpected persistent record {pid!r:.120}")
        stype, key, numel, view = pid[1], pid[2], pid[4], pid[5]
        root = self._storages.get(key)
        if root is None:
            root = self._storages[key] = torch.zeros(numel, dtype=stype.dtype)
        if root.dtype != stype.dtype or root.numel() != numel:
            raise WeightsIntegrityError(f"{self._path}: storage {key} is recorded with two types or sizes")
        if view is None:
            return root
        if not (isinstance(view, tuple) and len(view) == 3 and all(isinstance(v, int) for v in view[1:])
                and 0 <= view[1] and view[1] + view[2] <= numel):
            raise WeightsIntegrityError(f"{self._path}: malformed storage view {view!r:.80}")
        return root[view[1]:view[1] + view[2]]


def _copy_tensors(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, _copy_tensors(v)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _copy_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_copy_tensors(v) for v in obj)
    return obj


def _read_legacy(p: pathlib.Path, data: bytes) -> Any:
    f = io.BytesIO(data)

    def plain(what: str) -> Any:
        try:
            return _LegacyUnpickler(f, p, None).load()
        except (EOFError, pickle.UnpicklingError, ValueError, struct.error) as e:
            raise WeightsIntegrityError(f"{p}: not a readable legacy PyTorch checkpoint ({what}: {e})") from None

    if plain("magic number") != LEGACY_MAGIC:
        raise WeightsIntegrityError(f"{p} is a Python pickle but not a torch.save checkpoint (no legacy magic number)")
    if plain("protocol version") != _LEGACY_PROTOCOL:
        raise WeightsIntegrityError(f"{p}: unknown legacy torch.save protocol version")
    info = plain("system info")
    if not isinstance(info, dict) or info.get("little_endian", True) is not True:
        raise WeightsIntegrityError(f"{p} was written on a big-endian machine; re-save it on a little-endian one")
    storages: dict[str, torch.Tensor] = {}
    try:
        obj = _LegacyUnpickler(f, p, storages).load()
    except (EOFError, pickle.UnpicklingError, ValueError, struct.error) as e:
        raise WeightsIntegrityError(f"{p} is truncated or corrupt ({type(e).__name__}: {e})") from None
    keys = plain("storage keys")
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)) or set(keys) != set(storages):
        raise WeightsIntegrityError(f"{p}: the storage list does not match the storages the object uses")
    for key in keys:
        st = storages[key]
        head = f.read(8)
        if len(head) != 8:
            raise WeightsIntegrityError(f"{p} is truncated (storage {key} missing)")
        n = struct.unpack("<q", head)[0]
        if n != st.numel():
            raise WeightsIntegrityError(f"{p}: storage {key} has {n} elements on disk, {st.numel()} in its record")
        nbytes = n * st.element_size()
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise WeightsIntegrityError(f"{p} is truncated (storage {key}: {len(raw)} of {nbytes} bytes)")
        if nbytes:
            st.copy_(torch.frombuffer(bytearray(raw), dtype=st.dtype))
    return _copy_tensors(obj)


def read_torch_checkpoint(path: str | os.PathLike) -> Any:
    """A ``torch.save`` file of any PyTorch version (zip format since 1.6, legacy pickle before), tensors only, read
    without executing code from it (:func:`~facedeblur.weights.official.read_torch_zip_checkpoint` and the legacy
    reader of this module share the allow-list).

    Raises:
        WeightsNotAvailableError: no such file.
        UnsafeCheckpointError: the pickle references a global outside the allow-list.
        WeightsIntegrityError: not a torch.save file, or truncated / corrupt.
    """
    p = pathlib.Path(path).expanduser()
    if not p.is_file():
        raise WeightsNotAvailableError(f"checkpoint {p} does not exist")
    if zipfile.is_zipfile(p):
        return read_torch_zip_checkpoint(p)
    if tarfile.is_tarfile(p):
        raise WeightsIntegrityError(f"{p} is a tar archive (PyTorch < 0.1.10's format, or an archive holding the "
                                    f"weights); unpack it or re-save the state dict with a recent PyTorch")
    data = p.read_bytes()
    if data[:1] != b"\x80":
        raise WeightsIntegrityError(f"{p} is neither a zip-format nor a legacy torch.save checkpoint")
    return _read_legacy(p, data)
