"""ONNX export of zoo models and an ONNX Runtime engine behind the same :class:`~facedeblur.restore.Deblurrer` API.

One graph per model: input ``image`` (N, 3, H, W) float32 in the card's value range (``frames`` (N, T, 3, H, W) for
video models), plus ``u`` (N,) float32 for continuous models (the moment control is a graph input, never baked
in); output ``restored`` (N, 3, H, W), the network's full-resolution output. Batch, height and width are dynamic;
H and W must be multiples of the card's ``input.pad_multiple`` (``Deblurrer.restore`` pads for you). The model
card travels inside the file (``metadata_props``: ``facedeblur.card``), so ``facedeblur.load("onnx:FILE")``
needs nothing else. Public entry points: :func:`facedeblur.export_onnx`, ``facedeblur.load("onnx:FILE")`` and
``facedeblur.load(NAME, engine="onnxruntime")`` (:mod:`facedeblur.restore.deblurrer`).

The exporter is PyTorch's TorchScript-based ``torch.onnx.export`` (``dynamo=False``), opset :data:`OPSET`. Layers
that have a faster eager formulation switch to an exportable one while exporting
(:func:`facedeblur.models.layers.exporting`): the modulated deformable convolution becomes ``GridSample`` +
``MatMul`` (ONNX Runtime runs it on CPU; no custom op), and size- or batch-specialised branches take their
general form. ``export_onnx`` checks the graph against PyTorch on random inputs of two shapes and two batch sizes
and records the largest difference in the file.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import pathlib
from typing import Any

import numpy as np
import torch
from torch import nn

from ..cards import ModelCard
from ..errors import CapabilityError, FaceDeblurError, WeightsError
from ..weights.store import atomic_path

__all__ = ["OPSET", "OnnxError", "export_graph", "OnnxRuntimeModule", "read_onnx_card", "onnx_adapter",
           "onnx_available"]

#: ONNX opset of exported graphs (GridSample needs >= 16)
OPSET = 18
_META_CARD = "facedeblur.card"
_META_PARITY = "facedeblur.parity_max_abs"


class OnnxError(FaceDeblurError, RuntimeError):
    """An ONNX export or an ONNX Runtime session failed, or an ONNX file is not a facedeblur export."""


def onnx_available() -> bool:
    """Whether ``onnx`` and ``onnxruntime`` are importable (``pip install "facedeblur[onnx]"``)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def _require() -> None:
    if not onnx_available():
        raise CapabilityError('ONNX export and the onnxruntime engine need the onnx extra: pip install "facedeblur[onnx]"')


class _Graph(nn.Module):
    """The exported computation: the architecture's adapter around the network, final output only."""

    def __init__(self, model: nn.Module, adapter: Any, continuous: bool) -> None:
        super().__init__()
        self.model, self.adapter, self.continuous = model, adapter, continuous

    def forward(self, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return self.adapter(self.model, x, u if self.continuous else None)


def _example(card: ModelCard, n: int, size: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    t = int(card.capabilities.frame_window)
    shape = (n, t, 3, *size) if t > 1 else (n, 3, *size)
    lo, hi = (float(v) for v in card.input.value_range)
    x = torch.rand(*shape, generator=g) * (hi - lo) + lo
    u = torch.rand(n, generator=g) if card.capabilities.continuous_u else None
    return x, u


def export_graph(net: nn.Module, adapter: Any, card: ModelCard, path: str | os.PathLike, *, opset: int = OPSET,
                 example_size: int = 64, check: bool = True, tolerance: float = 1e-4) -> pathlib.Path:
    """Export network ``net`` called through ``adapter`` (see :class:`~facedeblur.models.InferenceAdapter`), with
    ``card`` stored in the file, to the ONNX file ``path`` (written atomically; an existing file is an error).
    ``net`` is copied first (the caller's stays on its device and dtype). Use :func:`facedeblur.export_onnx` for a
    loaded model or a zoo name.

    With ``check`` (default) the ONNX Runtime output is compared with PyTorch's (float32) on random inputs at two
    sizes and batch sizes 1 and 2; a difference above ``tolerance`` raises :class:`OnnxError` and writes nothing.
    """
    _require()
    import onnx

    if isinstance(net, OnnxRuntimeModule):
        raise CapabilityError(f"{card.name!r} already runs on ONNX Runtime from {net.path}; export the PyTorch "
                              f"model instead")
    out = pathlib.Path(path).expanduser()
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new file name (exports never overwrite)")
    if out.suffix != ".onnx":
        raise ValueError(f"the ONNX file name must end in .onnx, got {out.name!r}")
    mult = max(1, int(card.input.pad_multiple or 1))
    side = max(mult, (example_size // mult) * mult)
    net = copy.deepcopy(net).float().cpu().eval()  # the caller's network stays as it is
    graph = _Graph(net, adapter, card.capabilities.continuous_u).eval()
    video = int(card.capabilities.frame_window) > 1
    image = "frames" if video else "image"
    names = [image] + (["u"] if card.capabilities.continuous_u else [])
    axes: dict[str, dict[int, str]] = {image: ({0: "batch", 3: "height", 4: "width"} if video
                                               else {0: "batch", 2: "height", 3: "width"}),
                                       "restored": {0: "batch", 2: "height", 3: "width"}}
    if card.capabilities.continuous_u:
        axes["u"] = {0: "batch"}
    x, u = _example(card, 2, (side, side), seed=0)  # batch 2: no size-1 specialisation can hide in the graph
    args = (x, u) if u is not None else (x,)
    out.parent.mkdir(parents=True, exist_ok=True)
    import warnings

    with atomic_path(out) as tmp:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's warnings are about branches made static on purpose
                torch.onnx.export(graph, args, str(tmp), input_names=names, output_names=["restored"],
                                  dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True)
        except Exception as exc:  # noqa: BLE001 - any exporter failure becomes one typed error
            raise OnnxError(f"exporting {card.name!r} to ONNX failed: {type(exc).__name__}: {exc}") from exc
        worst = 0.0
        if check:
            sess = _session(tmp, threads=1)
            for n, hw, seed in ((1, (side, side + mult), 1), (2, (side + mult, side), 2)):
                xs, us = _example(card, n, hw, seed)
                with torch.no_grad():
                    ref = graph(xs, us).float().numpy()
                feed = {image: xs.numpy()}
                if us is not None:
                    feed["u"] = us.numpy()
                got = sess.run(None, feed)[0]
                worst = max(worst, float(np.abs(got - ref).max()))
            if worst > tolerance:
                raise OnnxError(f"the ONNX graph of {card.name!r} differs from PyTorch by {worst:.3g} (tolerance "
                                f"{tolerance:g}); not written")
        proto = onnx.load(str(tmp))
        meta = {_META_CARD: json.dumps(dataclasses.replace(card, source="onnx").to_dict()),
                "facedeblur.opset": str(opset), "facedeblur.inputs": ",".join(names)}
        if check:
            meta[_META_PARITY] = f"{worst:.3e}"
        from .._version import __version__

        meta["facedeblur.version"] = __version__
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, str(tmp))
    return out


def _session(path: str | os.PathLike, threads: int | None = None, providers: list[str] | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads) if threads else torch.get_num_threads()
    so.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise OnnxError(f"ONNX Runtime cannot load {path}: {exc}") from exc


def read_onnx_card(path: str | os.PathLike) -> tuple[ModelCard, dict[str, str]]:
    """The model card stored in a facedeblur ONNX export, and all its metadata."""
    _require()
    import onnx

    p = pathlib.Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"no ONNX file at {p}")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001
        raise OnnxError(f"{p} is not a readable ONNX file: {exc}") from exc
    meta = {e.key: e.value for e in proto.metadata_props}
    if _META_CARD not in meta:
        raise OnnxError(f"{p} has no facedeblur model card in its metadata; export it with `facedeblur export NAME "
                        f"DIR --format onnx` (or facedeblur.export_onnx)")
    data = json.loads(meta[_META_CARD])
    data.pop("source", None)
    return ModelCard.from_dict(data, source="onnx"), meta


class OnnxRuntimeModule(nn.Module):
    """An ONNX Runtime session that looks like the network to :class:`~facedeblur.restore.Deblurrer`: ``forward(x,
    u)`` takes and returns CPU float32 tensors. It has no parameters; ``.to(cpu)`` is a no-op and other devices
    are refused (the CPU execution provider)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        super().__init__()
        self.path = pathlib.Path(path)
        self.session = _session(self.path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def _apply(self, fn: Any, recurse: bool = True) -> "OnnxRuntimeModule":  # .to(), .float(), .cuda() ...
        probe = fn(torch.zeros(()))
        if probe.device.type != "cpu" or probe.dtype != torch.float32:
            raise CapabilityError(f"the onnxruntime engine runs float32 on the CPU; got {probe.device} "
                                  f"{probe.dtype} (use device='cpu' and the default dtype)")
        return self

    def forward(self, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        feed = {self.input_names[0]: x.detach().to("cpu", torch.float32).contiguous().numpy()}
        if "u" in self.input_names:
            if u is None:
                raise CapabilityError("this ONNX model takes the control factor u")
            feed["u"] = u.detach().to("cpu", torch.float32).reshape(-1).expand(x.shape[0]).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, feed)[0])

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}"


def onnx_adapter(card: ModelCard) -> Any:
    """How :class:`OnnxRuntimeModule` is called: with u for continuous models; one output (the restored image)."""
    from ..models import InferenceAdapter

    return InferenceAdapter(control=card.capabilities.continuous_u, multiscale=False)
