"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch.

A prior/metric network, not a deblurring model: it is not registered in the zoo and not in ``MODEL_FILES``. It is the
offline face prior candidate of DFPGnet (issue #13: deep-feature targets P1-P3 from a network trained for face
recognition) and computes the same 128-D descriptor as ``dlib.face_recognition_model_v1``. Weights come from the
``.dat`` file through :func:`facedeblur.weights.dlib_resnet.convert_dlib_face_resnet` (safetensors, float32) or
:func:`facedeblur.weights.dlib_resnet.load_dlib_face_resnet`; a freshly built :class:`DlibFaceResNet` is random.

**The network** (dlib's ``anet_type``, read back from the layers serialized in the ``.dat``; dlib calls the residual
levels 4 (input side) to 0 (output side), and so do we)::

    input_rgb_image_sized<150>                 3 x 150 x 150
    con 32 7x7 /2 (no padding), affine, relu   32 x 72 x 72   -> "stem"
    max_pool 3x3 /2 (no padding)               32 x 35 x 35
    level4: 3 x res(32)                        32 x 35 x 35   -> "level4"
    level3: res_down(64) + 3 x res(64)         64 x 17 x 17   -> "level3"
    level2: res_down(128) + 2 x res(128)       128 x 8 x 8    -> "level2"
    level1: res_down(256) + 2 x res(256)       256 x 4 x 4    -> "level1"
    level0: res_down(256)                      256 x 2 x 2    -> "level0"
    avg_pool_everything                        256
    fc_no_bias 128                             128            (the descriptor; loss_metric returns it unnormalised)

``res(N)``: ``relu(x + affine(con3x3(relu(affine(con3x3(x))))))``, both convs stride 1, padding 1.
``res_down(N)``: ``relu(avg_pool2x2/2(x) + affine(con3x3(relu(affine(con3x3/2(x))))))``; the strided conv has no
padding (dlib pads only stride-1 layers) and the shortcut is a 2x2 average pool with stride 2, no projection. The two
branches may differ in size (more channels in the block branch; one more row and column in the shortcut when the input
side is even, e.g. 3x3 vs 4x4 at level1): dlib's ``add_prev`` then adds them zero-padded to the larger size in every
dimension, aligned at the top-left corner, which :func:`padded_add` reproduces. ``affine`` is dlib's inference
replacement of batch norm: ``gamma[c] * x + beta[c]`` per channel (the ``.dat`` stores affine layers). 29 convolutions
(1 + 14 blocks x 2), 29 affine layers, 5,614,592 learned values (the sum of the ``.dat``'s parameter tensors).

**Input contract** (dlib's ``input_rgb_image_sized<150>``, checked against the ``.dat`` and numerically against
dlib): an RGB face chip of 150 x 150 px, aligned the way ``dlib.get_face_chip(img, shape, size=150, padding=0.25)``
does it from the 5-point (or 68-point) landmarks. dlib turns each pixel into ``(value - mean_c) / 256`` with the
per-channel means stored in the file's input layer, (R, G, B) = (122.782, 117.001, 104.298), and the fixed divisor
256 (not 255; no std). :meth:`DlibFaceResNet.forward` takes ``uint8`` tensors in [0, 255] or float tensors in
[0, 1] (facedeblur's image convention; multiplied by 255 first), shape (N, 3, H, W), RGB order, and normalises them
itself. The descriptor equals dlib's only for 150 x 150 chips (dlib refuses other sizes); the network is otherwise
fully convolutional, so the feature maps can be taken at other sizes (at least 103 px a side for the whole network).

**Features for DFPGnet.** ``forward(x, return_features=True)`` also returns the output of every stage
(:data:`STAGES`); :meth:`DlibFaceResNet.features` computes only the stages asked for and stops after the deepest.
DFPGnet's paper takes VGGFace relu1_2 / relu2_2 / relu3_3 (full, 1/2 and 1/4 resolution) as P1-P3; the nearest
stages here are ``stem`` (1/2, 32 ch), ``level4`` (1/4, 32 ch) and ``level3`` (1/8, 64 ch): :data:`PRIOR_STAGES`.

**Licence of the weights.** Davis King's dlib-models README (github.com/davisking/dlib-models): "anyone can do
whatever they want with these model files as I've released them into the public domain"; the face_recognition_models
package that ships the file (0.3.0) says its models are "licensed in the public domain or under CC0 1.0 Universal"
and includes the CC0 1.0 text as its LICENSE (its ``License:`` metadata field says MIT, a leftover of its template).
The network was trained by dlib's author on about 3 million faces (FaceScrub, the VGG Face dataset and images he
collected; 7485 identities). Details and what it means for embedding: ``docs/models/face_prior.md``. This code:
Apache-2.0 (facedeblur), written from the serialized layers and dlib's documentation, not from dlib's source.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

__all__ = ["DlibFaceResNet", "Affine", "ResBlock", "padded_add", "stage_shapes", "STAGES", "PRIOR_STAGES",
           "INPUT_MEAN_RGB", "INPUT_SCALE", "CHIP_SIZE", "CHIP_PADDING", "DESCRIPTOR_DIM", "SAME_PERSON_THRESHOLD",
           "LEVELS"]

#: dlib's ``input_rgb_image`` means (R, G, B); the ``.dat`` stores the same values in its input layer
INPUT_MEAN_RGB: tuple[float, float, float] = (122.782, 117.001, 104.298)
#: dlib divides ``value - mean`` by 256 (a constant of ``input_rgb_image``, not stored in the file)
INPUT_SCALE: float = 1.0 / 256.0
#: the chip dlib's face recognizer takes: ``get_face_chip(img, shape, size=150, padding=0.25)``
CHIP_SIZE: int = 150
CHIP_PADDING: float = 0.25
DESCRIPTOR_DIM: int = 128
#: dlib's same-person distance (Euclidean, descriptors as returned); also the loss_metric distance threshold in the file
SAME_PERSON_THRESHOLD: float = 0.6

#: (name, width, blocks, first block downsamples), input side first; dlib's level numbers
LEVELS: tuple[tuple[str, int, int, bool], ...] = (
    ("level4", 32, 3, False),
    ("level3", 64, 4, True),
    ("level2", 128, 3, True),
    ("level1", 256, 3, True),
    ("level0", 256, 1, True),
)
#: the feature maps :meth:`DlibFaceResNet.features` can return, input side first
STAGES: tuple[str, ...] = ("stem",) + tuple(name for name, *_ in LEVELS)
#: the stages proposed as DFPGnet's P1, P2, P3 (1/2, 1/4 and 1/8 resolution)
PRIOR_STAGES: tuple[str, str, str] = ("stem", "level4", "level3")


def padded_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b`` for (N, C, H, W) tensors of possibly different C, H, W: both zero-padded (after the last channel,
    row and column) to the larger size in each dimension, as dlib's ``add_prev`` layer does."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class Affine(nn.Module):
    """dlib's ``affine`` layer in conv mode: ``gamma[c] * x + beta[c]`` (batch norm folded for inference)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta.view(1, -1, 1, 1), x, self.gamma.view(1, -1, 1, 1))


class ResBlock(nn.Module):
    """dlib's ``ares`` / ``ares_down`` block (see the module docstring); ``down`` = stride 2 + pooled shortcut."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        if not down and cin != cout:
            raise ValueError(f"a stride-1 residual block keeps its width ({cin} -> {cout} asked)")
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.affine1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1)
        self.affine2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(padded_add(shortcut, y))


def _conv_out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def _shape_chain(height: int, width: int) -> tuple[dict[str, tuple[int, int, int]], str | None]:
    """(C, H, W) of each stage output that fits an input of ``height`` x ``width``, and the first stage that does
    not fit (None when all do)."""
    out: dict[str, tuple[int, int, int]] = {}
    h, w = _conv_out(int(height), 7, 2, 0), _conv_out(int(width), 7, 2, 0)
    if min(h, w) < 1:
        return out, "stem"
    out["stem"] = (32, h, w)
    h, w = _conv_out(h, 3, 2, 0), _conv_out(w, 3, 2, 0)
    for name, width_, _, down in LEVELS:
        if down and min(h, w) >= 3:  # block branch (3x3/2) and pooled shortcut (2x2/2): the sum has the larger size
            h, w = max(_conv_out(h, 3, 2, 0), _conv_out(h, 2, 2, 0)), max(_conv_out(w, 3, 2, 0), _conv_out(w, 2, 2, 0))
        elif down or min(h, w) < 1:
            return out, name
        out[name] = (width_, h, w)
    return out, None


def stage_shapes(height: int = CHIP_SIZE, width: int = CHIP_SIZE) -> dict[str, tuple[int, int, int]]:
    """(C, H, W) of every stage output (:data:`STAGES`) for an input of ``height`` x ``width``, from the layer table
    and dlib's size rules (``(n + 2p - k) // s + 1``; a residual sum has the larger size of its two branches).

    Raises:
        InputError: the input is too small for some layer.
    """
    out, bad = _shape_chain(height, width)
    if bad is not None:
        raise InputError(f"DlibFaceResNet: a {height}x{width} input is too small for stage {bad!r}; the whole network "
                         f"needs at least 103x103 (dlib's descriptor is defined on {CHIP_SIZE}x{CHIP_SIZE} chips)")
    return out


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet: a face chip -> 128-D descriptor (and the stage feature maps).

    Keys of the state dict: ``input_mean`` (buffer, from the file's input layer), ``stem.conv``, ``stem.affine``,
    ``level4.0`` ... ``level0.0`` (:class:`ResBlock`), ``fc`` (no bias). See the module docstring for the layers and
    the input contract.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(INPUT_MEAN_RGB, dtype=torch.float32))
        self.stem = nn.ModuleDict({"conv": nn.Conv2d(3, 32, 7, stride=2, padding=0), "affine": Affine(32)})
        cin = 32
        for name, width, blocks, down in LEVELS:
            self.add_module(name, nn.Sequential(*[ResBlock(cin if i == 0 else width, width, down and i == 0)
                                                  for i in range(blocks)]))
            cin = width
        self.fc = nn.Linear(256, DESCRIPTOR_DIM, bias=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """dlib's input mapping: uint8 [0, 255] or float [0, 1] RGB (N, 3, H, W) -> ``(255 x - mean) / 256``
        (float values are not range-checked: that would cost a device sync per call)."""
        if not isinstance(x, torch.Tensor):
            raise InputError(f"DlibFaceResNet: expected a torch tensor (N, 3, H, W), got {type(x).__name__}; "
                             "convert a uint8 HxWx3 chip with torch.from_numpy(chip).permute(2, 0, 1)[None]")
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"DlibFaceResNet: expected RGB images of shape (N, 3, H, W), got {tuple(x.shape)}")
        mean = self.input_mean.view(1, 3, 1, 1)
        if x.dtype == torch.uint8:
            v = x.to(mean.dtype)
        elif x.is_floating_point():
            v = x.to(mean.dtype) * 255.0
        else:
            raise InputError(f"DlibFaceResNet: unsupported dtype {x.dtype}; pass uint8 [0, 255] or float [0, 1]")
        return (v - mean) * INPUT_SCALE

    def _stages(self, x: torch.Tensor, last: str | None):
        """Yield (stage name, output) input side first, stopping after ``last`` (None = all, then the descriptor)."""
        v = self.normalize(x)
        _, bad = _shape_chain(v.shape[2], v.shape[3])
        if bad is not None and (last is None or STAGES.index(bad) <= STAGES.index(last)):
            stage_shapes(v.shape[2], v.shape[3])  # a typed error naming the stage that does not fit
        h = F.relu(self.stem["affine"](self.stem["conv"](v)))
        yield "stem", h
        if last == "stem":
            return
        h = F.max_pool2d(h, 3, 2)
        for name, *_ in LEVELS:
            h = getattr(self, name)(h)
            yield name, h
            if last == name:
                return
        yield "descriptor", self.fc(h.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor, return_features: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The (N, 128) descriptor of face chips ``x``; with ``return_features`` also {stage: feature map} for every
        stage of :data:`STAGES` (each after its final relu)."""
        feats = dict(self._stages(x, None))
        desc = feats.pop("descriptor")
        return (desc, feats) if return_features else desc

    def features(self, x: torch.Tensor, stages: tuple[str, ...] | list[str] = PRIOR_STAGES) -> dict[str, torch.Tensor]:
        """{stage: feature map} for the requested ``stages`` (default :data:`PRIOR_STAGES`), computing no layer past
        the deepest of them."""
        unknown = [s for s in stages if s not in STAGES]
        if unknown or not stages:
            raise InputError(f"DlibFaceResNet.features: unknown stage(s) {unknown or '(none asked)'}; "
                             f"choose from {', '.join(STAGES)}")
        last = max(stages, key=STAGES.index)
        return {name: t for name, t in self._stages(x, last) if name in stages}
