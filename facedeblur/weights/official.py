"""Importers of the authors' released checkpoints, registered per method (``facedeblur import-official METHOD``).

:func:`register_importer` records a converter under the method's command-line name with its architecture and
default variant; :func:`list_importers` / :func:`get_importer` are what the CLI offers. Registered here: CFMD-GAN.

The CFMD-GAN importer converts the authors' released generator (``dolphin0104/CFMDGAN``, ``model_best.pth``).

The checkpoint is a PyTorch zip-format pickle. It is read **without** ``torch.load``: a restricted
unpickler rebuilds tensors from the archive's ``data/`` records and refuses every Python global that a
plain tensor state dict does not need (nothing it refuses is ever imported or called). The keys of the
official ``CMD_MIMOUNet`` are then renamed onto :class:`facedeblur.models.cfmd_gan.CFMDGenerator`, every key
accounted for in both directions, and the result is written with :func:`save_pretrained` using the card
of ``variant`` with ``mask_scale=2.0`` (the released code modulates the DCN with ``2*sigmoid``; paper
§4.2.2 says ``sigmoid``).
"""
from __future__ import annotations

import codecs
import collections
import dataclasses
import io
import os
import pathlib
import pickle
import re
import sys
import zipfile
from typing import Any, Callable

import torch

from ..errors import WeightsIntegrityError, WeightsMismatchError, WeightsNotAvailableError
from .export import _reference_state_dict, save_pretrained
from .store import check_state_dict, sha256_file

__all__ = ["import_cfmd_gan_official", "read_torch_zip_checkpoint", "map_official_cfmd_keys", "UnsafeCheckpointError",
           "OFFICIAL_REPO", "OFFICIAL_LICENSE", "OfficialImporter", "register_importer", "get_importer",
           "list_importers"]

OFFICIAL_REPO = "https://github.com/dolphin0104/CFMDGAN"
OFFICIAL_LICENSE = ("weights by the CFMD-GAN authors (Lee, Han, Heo), no licence stated (the official repository has "
                    "no LICENSE file); research use. Code: Apache-2.0 (facedeblur)")


class UnsafeCheckpointError(WeightsIntegrityError):
    """A pickle references a Python global outside the tensor-only allow-list (it was not executed)."""


# ----------------------------------------------------------------------------------------------- importer registry


@dataclasses.dataclass(frozen=True)
class OfficialImporter:
    """A converter of one method's released checkpoint into a facedeblur model folder.

    ``convert(pth_path, out_dir, variant=..., overwrite=...)`` returns the folder; ``method`` is the name
    ``facedeblur import-official`` takes, ``architecture`` the registered architecture it produces,
    ``default_variant`` the zoo variant used when none is given, ``source`` where the checkpoint is published.
    """

    method: str
    architecture: str
    default_variant: str
    convert: Callable[..., pathlib.Path]
    source: str = ""


_IMPORTERS: dict[str, OfficialImporter] = {}


def register_importer(method: str, *, architecture: str, default_variant: str,
                      source: str = "") -> Callable[[Callable[..., pathlib.Path]], Callable[..., pathlib.Path]]:
    """Decorator registering ``fn(pth_path, out_dir, variant=..., *, overwrite=False) -> folder`` as the
    official-checkpoint importer of ``method`` (a family name such as ``cfmd-gan``)."""

    def deco(fn: Callable[..., pathlib.Path]) -> Callable[..., pathlib.Path]:
        if method in _IMPORTERS and _IMPORTERS[method].convert is not fn:
            raise ValueError(f"official importer {method!r} is registered twice")
        _IMPORTERS[method] = OfficialImporter(method, architecture, default_variant, fn, source)
        return fn

    return deco


def list_importers() -> list[str]:
    """Methods whose released checkpoints can be imported."""
    return sorted(_IMPORTERS)


def get_importer(method: str) -> OfficialImporter:
    """The importer of ``method``; :class:`WeightsNotAvailableError` listing the importable methods if none."""
    try:
        return _IMPORTERS[method]
    except KeyError:
        raise WeightsNotAvailableError(f"no official-checkpoint importer for {method!r}; importable: "
                                       f"{', '.join(list_importers()) or 'none'}") from None


# ----------------------------------------------------------------------------------------------- reader

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """What ``torch.FloatStorage`` etc. unpickle to here: a name and a dtype, nothing callable."""

    name: str
    dtype: torch.dtype


class _Inert:
    """Stand-in for harmless non-tensor values some training scripts put next to the state dict (numpy
    scalars, ``argparse.Namespace``): it accepts and discards its arguments and runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return "<non-tensor value skipped by facedeblur's restricted reader>"


_INERT_GLOBALS = {("argparse", "Namespace"), ("numpy", "dtype"), ("numpy", "ndarray"),
                  ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                  ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}


def _int_tuple(x: Any, what: str) -> tuple[int, ...]:
    if not isinstance(x, (tuple, list)) or not all(isinstance(v, int) and v >= 0 for v in x):
        raise WeightsIntegrityError(f"malformed tensor record: {what} {x!r}")
    return tuple(x)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    """Our own ``torch._utils._rebuild_tensor_v2``: a strided view of a storage, copied, bounds-checked."""
    if not isinstance(storage, torch.Tensor) or not isinstance(storage_offset, int) or storage_offset < 0:
        raise WeightsIntegrityError("malformed tensor record in checkpoint (storage/offset)")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise WeightsIntegrityError(f"malformed tensor record: size {size} vs stride {stride}")
    if backward_hooks:
        raise UnsafeCheckpointError("checkpoint tensor carries backward hooks; a plain state dict has none")
    end = storage_offset + (sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0)
    if end > storage.numel():
        raise WeightsIntegrityError(f"tensor record reaches element {end} of a storage with {storage.numel()}: the "
                                    f"checkpoint is truncated or corrupt")
    return torch.as_strided(storage, size, stride, storage_offset).clone()


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                       state: Any = None) -> torch.Tensor:
    """``nn.Parameter`` records unpickle to their plain tensor."""
    if not isinstance(data, torch.Tensor):
        raise WeightsIntegrityError("malformed parameter record in checkpoint")
    if backward_hooks or state:
        raise UnsafeCheckpointError("checkpoint parameter carries hooks or extra state; a plain state dict has none")
    return data


def _latin1_encode(obj: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for ``bytes`` (latin-1 only)."""
    if not isinstance(obj, str) or encoding.replace("-", "").lower() != "latin1":
        raise UnsafeCheckpointError("checkpoint uses _codecs.encode for something other than latin-1 bytes")
    return codecs.encode(obj, "latin-1")


_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("_codecs", "encode"): _latin1_encode,
}


def allowed_global(module: str, name: str, allowed: dict[tuple[str, str], Any]) -> Any | None:
    """What a restricted unpickler may return for the global ``module.name``: an entry of ``allowed``, a torch
    storage type, or the inert stand-in for harmless globals; None for anything else (the caller refuses it)."""
    if (module, name) in allowed:
        return allowed[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
        return _StorageType(name, _STORAGE_DTYPES[name])
    if (module, name) in _INERT_GLOBALS:
        return _Inert
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, load_storage: Callable[[_StorageType, str, int], torch.Tensor],
                 path: pathlib.Path) -> None:
        super().__init__(io.BytesIO(data))
        self._load_storage = load_storage
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        found = allowed_global(module, name, _ALLOWED)
        if found is not None:
            return found
        raise UnsafeCheckpointError(
            f"refusing to read {self._path}: its pickle references the Python global {module}.{name}, which a plain "
            f"tensor state dict does not need (allowed: OrderedDict, torch tensor/parameter rebuilders, torch storage "
            f"types). Nothing from the file was executed. If you trust the file's origin, load it in a separate "
            f"script with torch.load(path, weights_only=True), torch.save only the generator's state_dict, and "
            f"import that file.")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise UnsafeCheckpointError(f"refusing to read {self._path}: unexpected persistent record {pid!r:.120}")
        return self._load_storage(pid[1], pid[2], pid[4])


def _bytes_to_tensor(raw: bytes, dtype: torch.dtype, byteorder: str) -> torch.Tensor:
    if not raw:
        return torch.empty(0, dtype=dtype)
    u8 = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    size = torch.empty((), dtype=dtype).element_size()
    if byteorder != sys.byteorder and size > 1:
        u8 = u8.view(-1, size).flip(1).reshape(-1)
    return u8.view(dtype)


def read_torch_zip_checkpoint(path: str | os.PathLike) -> Any:
    """Unpickle a PyTorch zip-format checkpoint (``torch.save`` since 1.6) with tensors only, never executing
    code from it. Returns the saved object (dicts, lists, numbers, strings and CPU tensors).

    Raises:
        WeightsNotAvailableError: no such file.
        UnsafeCheckpointError: the pickle references a global outside the allow-list.
        WeightsIntegrityError: not a zip-format checkpoint, or truncated/corrupt.
    """
    p = pathlib.Path(path).expanduser()
    if not p.is_file():
        raise WeightsNotAvailableError(f"checkpoint {p} does not exist")
    if not zipfile.is_zipfile(p):
        with open(p, "rb") as f:
            head = f.read(2)
        kind = ("a legacy (pre-1.6, non-zip) PyTorch pickle" if head[:1] == b"\x80"
                else "not a PyTorch checkpoint (or a truncated one)")
        raise WeightsIntegrityError(
            f"{p} is {kind}; the restricted reader understands the zip format torch.save has written since PyTorch "
            f"1.6. If you trust the file, re-save it with a recent PyTorch: torch.save(torch.load(path, "
            f"weights_only=True), 'new.pth').")
    try:
        with zipfile.ZipFile(p) as zf:
            names = zf.namelist()
            pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkls) != 1:
                kind = "a TorchScript archive" if any(n.endswith("/constants.pkl") for n in names) else "a zip file"
                raise WeightsIntegrityError(f"{p} is {kind} but not a torch.save checkpoint (expected one "
                                            f"<name>/data.pkl record, found {len(pkls)})")
            prefix = pkls[0][: -len("data.pkl")]
            byteorder = "little"
            if prefix + "byteorder" in names:
                byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
                if byteorder not in ("little", "big"):
                    raise WeightsIntegrityError(f"{p}: unknown byte order record {byteorder!r}")
            storages: dict[str, torch.Tensor] = {}

            def load_storage(stype: _StorageType, key: str, numel: int) -> torch.Tensor:
                if key not in storages:
                    record = f"{prefix}data/{key}"
                    if record not in names:
                        raise WeightsIntegrityError(f"{p}: tensor data record {record} is missing (truncated file?)")
                    raw = zf.read(record)
                    item = torch.empty((), dtype=stype.dtype).element_size()
                    if len(raw) % item or len(raw) // item < numel:
                        raise WeightsIntegrityError(f"{p}: record {record} has {len(raw)} bytes, expected {numel} "
                                                    f"x {item} ({stype.name}); the file is corrupt")
                    storages[key] = _bytes_to_tensor(raw, stype.dtype, byteorder)
                storage = storages[key]
                if storage.dtype != stype.dtype:
                    raise WeightsIntegrityError(f"{p}: storage {key} is used with two dtypes")
                return storage

            return _RestrictedUnpickler(zf.read(pkls[0]), load_storage, p).load()
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, zipfile.LargeZipFile) as e:
        raise WeightsIntegrityError(f"{p} is truncated or corrupt ({type(e).__name__}: {e}); "
                                    f"download it again") from None


# ----------------------------------------------------------------------------------------------- key mapping

_FEAT = ("stem", "down1", "down2", "up2", "up1", "head")
_INNER = [
    (re.compile(r"conv1\.main\.0\.(weight|bias)"), r"conv1.\1"),
    (re.compile(r"conv2\.conv\.weight"), "cadc.fuse.weight"),
    (re.compile(r"conv2\.offset_conv\.(weight|bias)"), r"cadc.offset.\1"),
    (re.compile(r"conv2\.modulator_conv\.(weight|bias)"), r"cadc.mask.\1"),
    (re.compile(r"conv2\.regular_conv\.weight"), "cadc.deform.weight"),
    (re.compile(r"ch_att\.conv\.weight"), "caca.fuse.weight"),
    (re.compile(r"ch_att\.conv_du\.0\.weight"), "caca.se.reduce.weight"),
    (re.compile(r"ch_att\.conv_du\.2\.weight"), "caca.se.expand.weight"),
]
_WB = r"(weight|bias)"


def _map_key(key: str, levels: int = 3) -> str | None:
    """Our name for one official ``CMD_MIMOUNet`` key, or None if it has none."""
    last = levels - 1
    rules: list[tuple[str, Callable[[re.Match], str | None]]] = [
        (rf"mapping_net\.shared\.(\d+)\.layer\.0\.{_WB}", lambda m: f"mapping.trunk.{m[1]}.{m[2]}"),
        (rf"mapping_net\.enc_unshared\.(\d+)\.layer\.0\.{_WB}", lambda m: f"mapping.enc_heads.{m[1]}.{m[2]}"),
        (rf"mapping_net\.dec_unshared\.(\d+)\.layer\.0\.{_WB}",
         lambda m: f"mapping.dec_heads.{last - int(m[1])}.{m[2]}" if int(m[1]) <= last else None),
        (rf"feat_extract\.([0-5])\.main\.0\.{_WB}", lambda m: f"{_FEAT[int(m[1])]}.{m[2]}"),
        (r"Encoder\.(\d+)\.layers\.(\d+)\.(.+)", lambda m: _inner(f"encoder.{m[1]}.{m[2]}", m[3])),
        (r"Decoder\.(\d+)\.layers\.(\d+)\.(.+)",
         lambda m: _inner(f"decoder.{last - int(m[1])}.{m[2]}", m[3]) if int(m[1]) <= last else None),
        (rf"Convs\.([01])\.main\.0\.{_WB}", lambda m: f"{('fuse2', 'fuse1')[int(m[1])]}.{m[2]}"),
        (rf"ConvsOut\.([01])\.main\.0\.{_WB}", lambda m: f"{('out4', 'out2')[int(m[1])]}.{m[2]}"),
        (rf"AFFs\.([01])\.conv\.([01])\.main\.0\.{_WB}",
         lambda m: f"aff{int(m[1]) + 1}.{('reduce', 'conv')[int(m[2])]}.{m[3]}"),
        (rf"FAM([12])\.merge\.main\.0\.{_WB}", lambda m: f"{('fam4', 'fam2')[int(m[1]) - 1]}.merge.{m[2]}"),
        (rf"SCM([12])\.main\.([0-3])\.main\.0\.{_WB}",
         lambda m: f"{('scm4', 'scm2')[int(m[1]) - 1]}.body.{m[2]}.{m[3]}"),
        (rf"SCM([12])\.conv\.main\.0\.{_WB}", lambda m: f"{('scm4', 'scm2')[int(m[1]) - 1]}.merge.{m[2]}"),
    ]
    for pattern, fn in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return fn(m)
    return None


def _inner(prefix: str, rest: str) -> str | None:
    for pattern, repl in _INNER:
        if pattern.fullmatch(rest):
            return f"{prefix}.{pattern.sub(repl, rest)}"
    return None


def map_official_cfmd_keys(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official ``CMD_MIMOUNet`` state dict onto :class:`CFMDGenerator` names.

    Raises:
        WeightsMismatchError: an official key has no counterpart, or two map onto the same name.
    """
    out: dict[str, torch.Tensor] = {}
    unmapped, clashes = [], []
    for key, value in official.items():
        ours = _map_key(key)
        if ours is None:
            unmapped.append(key)
        elif ours in out:
            clashes.append(f"{key} -> {ours}")
        else:
            out[ours] = value
    if unmapped or clashes:
        parts = ["the checkpoint does not look like the official CFMD-GAN generator (CMD_MIMOUNet of "
                 f"{OFFICIAL_REPO}, scripts/model/mimo_conada.py):"]
        if unmapped:
            parts.append(f"{len(unmapped)} key(s) with no counterpart in facedeblur's CFMDGenerator: "
                         f"{', '.join(unmapped[:8])}{', ...' if len(unmapped) > 8 else ''}")
        if clashes:
            parts.append(f"{len(clashes)} key(s) map onto the same name: {', '.join(clashes[:5])}")
        parts.append("Import the generator checkpoint (model_best.pth), not the discriminator or an ablation "
                     "(use_CADC/use_CACA=False) model.")
        raise WeightsMismatchError("\n  ".join(parts))
    return out


# ----------------------------------------------------------------------------------------------- importer

_WRAPPER_KEYS = ("generator", "G", "netG", "net_g", "model", "state_dict", "model_state_dict", "params_ema", "params",
                 "gen", "g")


def _is_tensor_dict(x: Any) -> bool:
    return isinstance(x, dict) and bool(x) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                   for k, v in x.items())


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    stripped = []
    for prefix in ("module.", "_orig_mod.", "module."):
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
            stripped.append(prefix)
    return sd, stripped


def _looks_official(sd: dict[str, torch.Tensor]) -> bool:
    return any(k.split(".", 1)[0] in ("mapping_net", "feat_extract", "Encoder", "Decoder") for k in sd)


def _find_generator_state(obj: Any, path: pathlib.Path) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """The generator state dict inside a checkpoint (top level, or under a wrapper key), prefixes stripped."""
    candidates: list[tuple[str, Any]] = [("<top level>", obj)]
    if isinstance(obj, dict):
        candidates += [(repr(k), obj[k]) for k in _WRAPPER_KEYS if k in obj]
        for k in _WRAPPER_KEYS:  # one more level: {"model": {"G": ...}}
            if isinstance(obj.get(k), dict):
                candidates += [(f"{k!r}/{j!r}", obj[k][j]) for j in _WRAPPER_KEYS if j in obj[k]]
    for where, cand in candidates:
        if _is_tensor_dict(cand):
            sd, stripped = _strip_prefixes(dict(cand))
            if _looks_official(sd):
                return sd, where, stripped
    top = sorted(map(str, obj))[:12] if isinstance(obj, dict) else type(obj).__name__
    raise WeightsMismatchError(f"{path}: found no CFMD-GAN generator state dict (keys like 'mapping_net.*', "
                               f"'feat_extract.*') at the top level or under {', '.join(_WRAPPER_KEYS)}; the file "
                               f"holds {top}")


def _official_arch(sd: dict[str, torch.Tensor]) -> tuple[int | None, int | None]:
    """(width, num_res) of an official state dict, where it shows them."""
    w = sd.get("feat_extract.0.main.0.weight")
    width = int(w.shape[0]) if isinstance(w, torch.Tensor) and w.dim() == 4 else None
    blocks = {int(m[1]) for k in sd if (m := re.match(r"Encoder\.0\.layers\.(\d+)\.", k))}
    return width, (max(blocks) + 1 if blocks else None)


@register_importer("cfmd-gan", architecture="cfmd_gan", default_variant="cfmd-gan.paper", source=OFFICIAL_REPO)
def import_cfmd_gan_official(pth_path: str | os.PathLike, out_dir: str | os.PathLike, variant: str = "cfmd-gan.paper",
                             *, overwrite: bool = False) -> pathlib.Path:
    """Convert the authors' ``model_best.pth`` into a facedeblur model folder (``facedeblur import-official``).

    Reads the checkpoint with the restricted reader (no ``torch.load``), maps every official key onto ours
    (errors on any left over or missing), and writes ``out_dir`` with :func:`save_pretrained` using the card of
    ``variant`` with ``mask_scale=2.0`` (the released code's ``2*sigmoid`` DCN modulation), the conversion
    recorded under ``training.converted_from`` and the licence note. Load the result with
    ``facedeblur.load("local-dir:OUT_DIR")``.
    """
    from ..models import get_card

    src = pathlib.Path(pth_path).expanduser()
    card = get_card(variant)
    if card.architecture != "cfmd_gan":
        raise WeightsMismatchError(f"variant {variant!r} is architecture {card.architecture!r}; the official CFMD-GAN "
                                   f"checkpoint converts only to a cfmd_gan variant such as cfmd-gan.paper")
    if src.suffix.lower() == ".safetensors":
        raise WeightsIntegrityError(f"{src} is already a safetensors file; load it with weights={str(src)!r}")
    obj = read_torch_zip_checkpoint(src)
    official, where, stripped = _find_generator_state(obj, src)
    width, num_res = _official_arch(official)
    kw = card.arch_kwargs
    if (width, num_res) != (kw.get("width"), kw.get("num_res")) and width is not None and num_res is not None:
        raise WeightsMismatchError(
            f"{src} holds a generator of width {width} with {num_res} ContAda blocks per stage, but variant "
            f"{variant!r} is width {kw.get('width')}, num_res {kw.get('num_res')}; convert into cfmd-gan.paper "
            f"(the released model is width 32, num_res 8)")
    ours = map_official_cfmd_keys(official)
    new_card = dataclasses.replace(
        card,
        arch_kwargs={**card.arch_kwargs, "mask_scale": 2.0},
        description=(card.description.strip() + " Weights: the generator released by the CFMD-GAN authors, converted "
                     "to safetensors (DCN modulation 2*sigmoid as in their code: mask_scale=2.0)."),
        license=OFFICIAL_LICENSE,
        training_data=("the authors' 300VW-based motion-blur set (prepareDataset/genBlurDataset.py of the "
                       "official repository)"),
        training={"by": "the CFMD-GAN authors", "released_recipe": "scripts/train.py and scripts/configs.py of the "
                  "official repository",
                  "converted_from": {"repository": OFFICIAL_REPO, "file": src.name, "sha256": sha256_file(src),
                                     "state_dict_key": where, "stripped_prefixes": stripped,
                                     "official_class": "CMD_MIMOUNet"}},
        metrics={},
        notes=("Converted with facedeblur.weights.official.import_cfmd_gan_official. mask_scale=2.0 reproduces the "
               "released code's 2*sigmoid modulation (the paper text says sigmoid)."),
    )
    check_state_dict(_reference_state_dict(new_card), ours, what=f"{variant} (CFMDGenerator)",
                     arch_kwargs=dict(new_card.arch_kwargs), source=str(src))
    return save_pretrained(ours, new_card, out_dir, overwrite=overwrite,
                           metadata={"converted_from": f"{OFFICIAL_REPO} {src.name}"})
