"""Importer of the user's VGG-Face weights (DFPGnet's ``prior="vggface"``): public release -> safetensors, once.

The VGG-Face model (Parkhi et al. 2015) cannot be downloaded here and its licence does not allow redistribution
(Oxford VGG: non-commercial research use), so facedeblur ships none. A user who has a copy converts it with
:func:`convert_vggface` and trains DFPGnet with ``training.method: {prior: vggface, prior_weights: FILE}``.

**Accepted inputs** (every reader is restricted: data only, nothing in a file is ever executed):

=====================  ===========================================================  ========  ==========
file                   what                                                         channels  input
=====================  ===========================================================  ========  ==========
``.t7``                Oxford's Torch release ``VGG_FACE.t7`` (``vgg_face_torch``)  BGR       0-255 - mean
``.pth`` / ``.pt``     ``torch.save`` state dicts in one of three layouts (below),  see       see
                       zip or legacy (pre-1.6) format, optionally under a wrapper   layout    layout
                       key (``state_dict``, ``model``, ...) and ``module.`` prefix
``.safetensors``       a file written by :func:`convert_vggface`, or any of the     as file   as file
                       three layouts as safetensors
=====================  ===========================================================  ========  ==========

``.pth`` layouts: ``conv1_1.weight`` ... ``fc8.bias`` (Albanie's ``vgg_face_dag.pth``, converted from MatConvNet:
RGB, 0-255 minus the mean), ``conv_1_1.weight`` ... (``prlz77/vgg-face.pytorch``'s port of the Torch file: BGR,
0-255 minus the mean), and torchvision's ``features.N`` / ``classifier.N`` (Lu et al.'s ``VGGFace16.pth``, which
DFPGnet's lab used: fed [-1, 1] RGB). **Not accepted**: Caffe ``.caffemodel`` and MatConvNet ``.mat`` (a typed
error says so); Oxford publishes the same weights as ``VGG_FACE.t7``, which is. The channel order and input convention
are the best-known ones of each release and can be overridden (``channel_order=``, ``input_convention=``) for a file
that differs.

Conversion checks every layer's shape against VGG-Face (13 convs 3x3, fc 25088 -> 4096 -> 4096 -> 2622; an ImageNet
VGG-16 with 1000 classes is refused), folds a BGR first layer into RGB (conv1_1's input channels reversed, so
:class:`~facedeblur.models.vggface.VGGFace16` always takes RGB) and stores the input normalisation as the network's
``input_scale`` / ``input_mean`` buffers. ``layers="prior"`` (default) keeps conv1_1-conv3_3, all DFPGnet's targets
need (6.9 MB); ``layers="all"`` keeps the 16 layers (580 MB). The safetensors metadata records the source file's
name and sha256, its layout, channel order and input convention.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from typing import Any, Mapping

import torch

from ..errors import InputError, WeightsIntegrityError, WeightsMismatchError, WeightsNotAvailableError
from ..models.vggface import CONV_LAYERS, FC_LAYERS, OXFORD_MEAN_RGB, VGGFace16
from .store import atomic_path, read_state_dict, sha256_file
from .torch_formats import LuaTable, TorchObject, read_torch7, read_torch_checkpoint

__all__ = ["VGGFaceWeights", "VGGFaceFormatError", "read_vggface", "map_vggface_keys", "convert_vggface",
           "load_vggface", "layer_names", "INPUT_CONVENTIONS", "ACCEPTED_FORMATS", "WEIGHTS_LICENSE"]

#: input conventions: name -> (input_scale, input_mean RGB) applied to [0, 1] RGB values
INPUT_CONVENTIONS: dict[str, tuple[float, tuple[float, float, float]]] = {
    "oxford": (255.0, OXFORD_MEAN_RGB),  # 0-255 values minus the Oxford release's mean face colour
    "pm1": (2.0, (1.0, 1.0, 1.0)),  # [-1, 1] values (DFPGnet's lab feeding its VGGFace16.pth)
}
ACCEPTED_FORMATS = (".t7 (Oxford's Torch release VGG_FACE.t7), .pth/.pt (torch.save state dicts: vgg_face_dag.pth "
                    "layout conv1_1.*, prlz77 layout conv_1_1.*, torchvision layout features.N.*), .safetensors")
WEIGHTS_LICENSE = ("VGG-Face (Parkhi, Vedaldi, Zisserman 2015), Visual Geometry Group, University of Oxford: for "
                   "non-commercial research purposes only; converted from the user's own copy, not redistributed")

_TV_CONV = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # torchvision vgg16 features.N of the 13 convs
_TV_FC = (0, 3, 6)  # classifier.N of fc6, fc7, fc8
_CANONICAL = tuple(n for n, *_ in CONV_LAYERS) + tuple(n for n, *_ in FC_LAYERS)
_WRAPPERS = ("state_dict", "model", "model_state_dict", "net", "network", "params")


class VGGFaceFormatError(WeightsIntegrityError):
    """A file the VGG-Face importer cannot read (an unsupported format, or not a weights file)."""


@dataclasses.dataclass(frozen=True)
class VGGFaceWeights:
    """Converted VGG-Face weights: the state dict of :class:`~facedeblur.models.vggface.VGGFace16` (canonical keys,
    RGB first layer, ``input_scale`` / ``input_mean`` buffers) and where they came from."""

    state_dict: dict[str, torch.Tensor]
    source: pathlib.Path
    sha256: str
    source_format: str  # "torch7" | "torch" | "safetensors"
    layout: str  # "oxford-torch7" | "vgg_face_dag" | "prlz77" | "torchvision" | "facedeblur"
    channel_order: str  # of the source's first layer: "bgr" | "rgb"
    input_convention: str  # a key of INPUT_CONVENTIONS, or "custom" for a converted file with other buffers
    layers: str  # "prior" | "all"


def layer_names(layers: str) -> tuple[str, ...]:
    """The weight layers kept for ``layers`` ("prior": conv1_1-conv3_3; "all": the 16)."""
    if layers == "prior":
        return _CANONICAL[:7]
    if layers == "all":
        return _CANONICAL
    raise InputError(f"layers must be 'prior' (conv1_1-conv3_3) or 'all', not {layers!r}")


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for name, cin, cout in CONV_LAYERS:
        out[f"{name}.weight"], out[f"{name}.bias"] = (cout, cin, 3, 3), (cout,)
    for name, cin, cout in FC_LAYERS:
        out[f"{name}.weight"], out[f"{name}.bias"] = (cout, cin), (cout,)
    return out


def _layout_of(sd: Mapping[str, torch.Tensor]) -> str | None:
    keys = set(sd)
    if "input_scale" in keys and "conv1_1.weight" in keys:
        return "facedeblur"
    if "conv1_1.weight" in keys:
        return "vgg_face_dag"
    if "conv_1_1.weight" in keys:
        return "prlz77"
    if "features.0.weight" in keys:
        return "torchvision"
    return None


def _rename(key: str, layout: str) -> str | None:
    """The canonical name of one key of ``layout`` (None: not a VGG-Face weight key)."""
    if layout in ("facedeblur", "vgg_face_dag"):
        return key if key.split(".", 1)[0] in _CANONICAL else None
    if layout == "prlz77":
        m = re.fullmatch(r"conv_(\d)_(\d)\.(weight|bias)", key)
        if m:
            return f"conv{m[1]}_{m[2]}.{m[3]}"
        return key if key.split(".", 1)[0] in ("fc6", "fc7", "fc8") else None
    m = re.fullmatch(r"(features|classifier)\.(\d+)\.(weight|bias)", key)
    if not m:
        return None
    idx = (_TV_CONV if m[1] == "features" else _TV_FC)
    names = _CANONICAL[:13] if m[1] == "features" else _CANONICAL[13:]
    n = int(m[2])
    return f"{names[idx.index(n)]}.{m[3]}" if n in idx else None


def map_vggface_keys(sd: Mapping[str, torch.Tensor], *, layers: str = "prior", source: str = "the file"
                     ) -> tuple[dict[str, torch.Tensor], str]:
    """The weights of a VGG-Face state dict in any accepted ``.pth`` layout (or the importer's own) under canonical
    names (``conv1_1.weight`` ...), restricted to ``layers``, shapes checked; returns them and the layout name.
    ``module.`` prefixes are stripped; ``input_scale`` / ``input_mean`` buffers of a converted file are kept.

    Raises:
        WeightsMismatchError: not a VGG-Face state dict (unknown layout, a missing layer, a wrong shape, or a
            VGG-16 with another number of classes).
    """
    sd = dict(sd)
    while sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    layout = _layout_of(sd)
    if layout is None:
        raise WeightsMismatchError(f"{source}: not a VGG-Face state dict; expected keys like conv1_1.weight "
                                   f"(vgg_face_dag.pth), conv_1_1.weight (prlz77) or features.0.weight (torchvision), "
                                   f"found {sorted(sd)[:8]}")
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        name = _rename(k, layout)
        if name is not None:
            out[name] = v
        elif layout == "facedeblur" and k in ("input_scale", "input_mean"):
            out[k] = v
    keep = layer_names(layers)
    shapes = _expected_shapes()
    fc8 = out.get("fc8.weight")
    if fc8 is not None and fc8.dim() == 2 and fc8.shape[0] != shapes["fc8.weight"][0]:
        raise WeightsMismatchError(f"{source}: fc8 has {fc8.shape[0]} outputs; VGG-Face has 2622 identities (a "
                                   f"VGG-16 with {fc8.shape[0]} classes, e.g. ImageNet's 1000, is not VGG-Face)")
    missing = [f"{n}.{p}" for n in keep for p in ("weight", "bias") if f"{n}.{p}" not in out]
    if missing:
        raise WeightsMismatchError(f"{source} ({layout} layout) lacks {len(missing)} VGG-Face weight(s): "
                                   f"{', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}"
                                   f"{'; convert with layers=prior' if layers == 'all' else ''}")
    result: dict[str, torch.Tensor] = {}
    for n in keep:
        for p in ("weight", "bias"):
            key = f"{n}.{p}"
            t = out[key]
            if not isinstance(t, torch.Tensor) or not t.is_floating_point() or tuple(t.shape) != shapes[key]:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise WeightsMismatchError(f"{source}: {key} has shape {got}, VGG-Face's is {shapes[key]}")
            result[key] = t.detach().to(torch.float32).contiguous()
    for k in ("input_scale", "input_mean"):
        if k in out:
            result[k] = out[k].detach().to(torch.float32).reshape(() if k == "input_scale" else (3,))
    return result, layout


def _find_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    def tensors(x: Any) -> bool:
        return isinstance(x, dict) and bool(x) and all(isinstance(k, str) for k in x) and \
            sum(isinstance(v, torch.Tensor) for v in x.values()) >= max(1, len(x) // 2)

    if tensors(obj) and _layout_of({k.removeprefix("module."): v for k, v in obj.items()}):
        return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if isinstance(obj, dict):
        for key in _WRAPPERS:
            if tensors(obj.get(key)):
                return {k: v for k, v in obj[key].items() if isinstance(v, torch.Tensor)}
    if tensors(obj):
        return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    top = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
    raise WeightsMismatchError(f"{source}: found no state dict at the top level or under {', '.join(_WRAPPERS)} "
                               f"(the file holds {top}); save model.state_dict() of a VGG-Face network")


def _t7_layers(root: Any, source: str) -> list[TorchObject]:
    """The modules with weights of a Torch7 network, in execution order (depth first through containers)."""
    found: list[TorchObject] = []
    seen: set[int] = set()

    def walk(m: Any) -> None:
        if not isinstance(m, TorchObject) or id(m) in seen:
            return
        seen.add(id(m))
        if isinstance(m.get("weight"), torch.Tensor) and m.get("weight").numel():
            found.append(m)
        mods = m.get("modules")
        if isinstance(mods, LuaTable):
            for child in mods.as_list():
                walk(child)

    if not isinstance(root, TorchObject):
        raise WeightsMismatchError(f"{source}: the Torch7 file holds a {type(root).__name__}, not an nn network")
    walk(root)
    return found


def _t7_state_dict(root: Any, source: str) -> dict[str, torch.Tensor]:
    """Canonical VGG-Face weights from Oxford's Torch network (13 convolutions then 3 linear layers, in order)."""
    mods = _t7_layers(root, source)
    convs = [m for m in mods if "Convolution" in m.class_name]
    linears = [m for m in mods if m.class_name.endswith("Linear")]
    other = [m.class_name for m in mods if m not in convs and m not in linears]
    if other:
        raise WeightsMismatchError(f"{source}: unexpected layers with weights for VGG-Face: {sorted(set(other))}")
    if len(convs) > 13 or len(linears) > 3 or (linears and len(convs) != 13) or \
            mods != convs + linears:
        raise WeightsMismatchError(f"{source}: {len(convs)} convolutions and {len(linears)} linear layers; VGG-Face "
                                   f"has 13 convolutions then 3 linear layers")
    sd: dict[str, torch.Tensor] = {}
    for m, (name, cin, cout) in zip(convs, CONV_LAYERS):
        w = m.get("weight")
        for field, want in (("kW", 3), ("kH", 3), ("dW", 1), ("dH", 1), ("padW", 1), ("padH", 1)):
            got = m.get(field, want)
            if got != want:
                raise WeightsMismatchError(f"{source}: {name} ({m.class_name}) has {field}={got}, VGG-Face's is {want}")
        if w.dim() == 2 and w.numel() == cout * cin * 9:  # SpatialConvolutionMM stores (out, in * kH * kW)
            w = w.reshape(cout, cin, 3, 3)
        sd[f"{name}.weight"], sd[f"{name}.bias"] = w, m.get("bias")
    for m, (name, *_) in zip(linears, FC_LAYERS):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = m.get("weight"), m.get("bias")
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def read_vggface(path: str | os.PathLike, *, layers: str = "prior", channel_order: str | None = None,
                 input_convention: str | None = None) -> VGGFaceWeights:
    """Read VGG-Face weights from any accepted file (see the module docstring) into canonical, RGB form.

    ``channel_order`` ("bgr" / "rgb") and ``input_convention`` (a key of :data:`INPUT_CONVENTIONS`) override the
    defaults of the file's layout. A file converted by :func:`convert_vggface` keeps its own buffers.

    Raises:
        WeightsNotAvailableError: no such file.
        VGGFaceFormatError: an unsupported format (Caffe, MatConvNet, ...) or an unreadable file.
        UnsafeCheckpointError: a pickle or Torch7 file that would need code to load.
        WeightsMismatchError: readable, but not VGG-Face.
    """
    p = pathlib.Path(path).expanduser()
    if not p.is_file():
        raise WeightsNotAvailableError(f"VGG-Face weights {p} do not exist; pass your copy of the public release "
                                       f"({ACCEPTED_FORMATS})")
    if channel_order not in (None, "bgr", "rgb"):
        raise InputError(f"channel_order must be 'bgr' or 'rgb', not {channel_order!r}")
    if input_convention is not None and input_convention not in INPUT_CONVENTIONS:
        raise InputError(f"input_convention must be one of {sorted(INPUT_CONVENTIONS)}, not {input_convention!r}")
    suffix = p.suffix.lower()
    src = str(p)
    if suffix in (".caffemodel", ".prototxt", ".mat", ".h5", ".hdf5", ".npy", ".npz", ".onnx"):
        raise VGGFaceFormatError(f"{p}: {suffix} files are not accepted by the VGG-Face importer. Accepted: "
                                 f"{ACCEPTED_FORMATS}. Oxford publishes the same weights for Torch "
                                 f"(vgg_face_torch.tar.gz -> VGG_FACE.t7)")
    if suffix == ".t7":
        raw, fmt, layout = _t7_state_dict(read_torch7(p), src), "torch7", "oxford-torch7"
        sd, _ = map_vggface_keys(raw, layers=layers, source=src)
    elif suffix == ".safetensors":
        fmt = "safetensors"
        sd, layout = map_vggface_keys(read_state_dict(p), layers=layers, source=src)
    elif suffix in (".pth", ".pt", ".pkl", ".bin", ".tar", ""):
        fmt = "torch"
        sd, layout = map_vggface_keys(_find_state_dict(read_torch_checkpoint(p), src), layers=layers, source=src)
    else:
        raise VGGFaceFormatError(f"{p}: unknown weights format {suffix!r}; accepted: {ACCEPTED_FORMATS}")
    default_order = {"oxford-torch7": "bgr", "prlz77": "bgr"}.get(layout, "rgb")
    default_conv = "pm1" if layout == "torchvision" else "oxford"
    order = channel_order or default_order
    if layout == "facedeblur":
        if channel_order == "bgr":
            raise InputError(f"{p} was converted by facedeblur and is RGB already; leave channel_order unset")
        convention = input_convention
        if convention is None:
            scale, mean = float(sd["input_scale"]), tuple(float(v) for v in sd["input_mean"])
            convention = next((k for k, (s, m) in INPUT_CONVENTIONS.items()
                               if abs(s - scale) < 1e-4 and all(abs(a - b) < 1e-3 for a, b in zip(m, mean))), "custom")
    else:
        convention = input_convention or default_conv
    if convention != "custom":
        scale, mean = INPUT_CONVENTIONS[convention]
        sd["input_scale"], sd["input_mean"] = torch.tensor(scale), torch.tensor(mean)
    if order == "bgr":  # fold the BGR input into conv1_1, so the network takes RGB
        sd["conv1_1.weight"] = sd["conv1_1.weight"].flip(1).contiguous()
    return VGGFaceWeights(sd, p, sha256_file(p), fmt, layout, order, convention, layers)


def _metadata(w: VGGFaceWeights) -> dict[str, str]:
    return {"format": "pt", "network": "vgg_face_16", "layers": w.layers, "source_file": w.source.name,
            "source_sha256": w.sha256, "source_format": w.source_format, "source_layout": w.layout,
            "source_channel_order": w.channel_order, "input_convention": w.input_convention,
            "input": "RGB float [0, 1]; the network applies x * input_scale - input_mean", "license": WEIGHTS_LICENSE}


def convert_vggface(src: str | os.PathLike, out_path: str | os.PathLike, *, layers: str = "prior",
                    channel_order: str | None = None, input_convention: str | None = None,
                    overwrite: bool = False) -> pathlib.Path:
    """Convert the user's VGG-Face file (:func:`read_vggface`) to float32 safetensors at ``out_path`` for
    :class:`~facedeblur.models.vggface.VGGFace16` (``depth="prior"`` for ``layers="prior"``), written atomically
    with the provenance in its metadata. Returns ``out_path``.

    Raises:
        FileExistsError: ``out_path`` exists (pass ``overwrite=True``).
        InputError: ``out_path`` does not end in ``.safetensors``.
        and the errors of :func:`read_vggface`.
    """
    from safetensors.torch import save_file

    out = pathlib.Path(out_path).expanduser()
    if out.suffix.lower() != ".safetensors":
        raise InputError(f"output {out} must end in .safetensors")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose another path or pass overwrite=True")
    w = read_vggface(src, layers=layers, channel_order=channel_order, input_convention=input_convention)
    model = VGGFace16("prior" if layers == "prior" else "full")
    _load_into(model, w.state_dict, str(w.source))  # proves the keys and shapes fit
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in w.state_dict.items()}, str(tmp), metadata=_metadata(w))
    return out


def _load_into(model: VGGFace16, sd: Mapping[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        raise WeightsMismatchError(f"{source}: {len(missing)} weight(s) of VGGFace16({model.depth!r}) missing: "
                                   f"{', '.join(missing[:6])}")
    model.load_state_dict({k: sd[k].to(own[k].dtype).reshape(own[k].shape) for k in own}, strict=True)


def load_vggface(path: str | os.PathLike, *, depth: str = "prior", expected_sha256: str | None = None,
                 channel_order: str | None = None, input_convention: str | None = None,
                 device: Any = "cpu") -> VGGFace16:
    """:class:`~facedeblur.models.vggface.VGGFace16` of ``depth`` in eval mode, from a converted ``.safetensors``
    file or directly from any accepted release file (converted in memory). ``expected_sha256`` is checked against
    the file read. Gradients stay on (freeze with ``requires_grad_(False)`` when it is a fixed prior)."""
    p = pathlib.Path(path).expanduser()
    if expected_sha256 and p.is_file() and sha256_file(p).lower() != expected_sha256.lower():
        raise WeightsIntegrityError(f"sha256 mismatch for {p}: expected {expected_sha256}")
    w = read_vggface(p, layers="prior" if depth == "prior" else "all", channel_order=channel_order,
                     input_convention=input_convention)
    model = VGGFace16(depth)
    _load_into(model, w.state_dict, str(p))
    return model.eval().to(device)
