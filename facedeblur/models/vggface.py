"""VGG-Face (Parkhi, Vedaldi, Zisserman, *Deep Face Recognition*, BMVC 2015): the VGG-16 face-recognition network
that DFPGnet takes its deep-feature targets P1-P3 from (relu1_2, relu2_2, relu3_3; DFPGnet §4.1).

A prior network, not a deblurring model: it is not registered in the zoo. A freshly built :class:`VGGFace16` is
random; its weights come from the user's copy of the public VGG-Face release, converted once to safetensors by
:mod:`facedeblur.weights.vggface` (the weights are not redistributable here: the VGG-Face model is for
non-commercial research use).

**The network** (configuration D of Simonyan & Zisserman, 2622 identities): 13 convs 3x3 (padding 1) with ReLU in
five blocks of 2, 2, 3, 3, 3 convs (widths 64, 128, 256, 512, 512), each block followed by 2x2 max pooling; then fc6
(25088 -> 4096), fc7 (4096 -> 4096), fc8 (4096 -> 2622), ReLU after fc6 and fc7 (dropout in training). 145,002,878
parameters. Layer names follow the original release: ``conv1_1`` ... ``conv5_3``, ``fc6``, ``fc7``, ``fc8``.

``depth="prior"`` builds only blocks 1-3 up to conv3_3 (1,735,488 parameters): all that DFPGnet's targets need.

**Input.** ``forward`` / :meth:`VGGFace16.features` take RGB float tensors (N, 3, H, W) in [0, 1] (facedeblur's
convention) and normalise them with the network's own buffers, ``x * input_scale - input_mean`` per channel, which
the importer sets from the release's convention: the Oxford releases take 0-255 values minus the mean face colour
(R, G, B) = (129.1863, 104.7624, 93.5940) (``input_scale`` 255); the Caffe and Torch releases take BGR, which the
importer folds into conv1_1 (its input channels reversed), so the network always takes RGB. The DFPGnet lab fed
[-1, 1] RGB into its ``VGGFace16.pth`` (REFERENCE_FACTS §3.2): ``input_scale`` 2, ``input_mean`` (1, 1, 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

__all__ = ["VGGFace16", "CONV_LAYERS", "FC_LAYERS", "PRIOR_LAYERS", "OXFORD_MEAN_RGB", "NUM_IDENTITIES"]

#: (name, in, out) of the 13 convs, input side first
CONV_LAYERS: tuple[tuple[str, int, int], ...] = (
    ("conv1_1", 3, 64), ("conv1_2", 64, 64),
    ("conv2_1", 64, 128), ("conv2_2", 128, 128),
    ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256),
    ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512),
    ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512),
)
NUM_IDENTITIES = 2622
#: (name, in, out) of the three fully connected layers
FC_LAYERS: tuple[tuple[str, int, int], ...] = (("fc6", 512 * 7 * 7, 4096), ("fc7", 4096, 4096),
                                               ("fc8", 4096, NUM_IDENTITIES))
#: DFPGnet's P1, P2, P3 (§4.1): the ReLU outputs of conv1_2, conv2_2, conv3_3 (64 @ 1, 128 @ 1/2, 256 @ 1/4)
PRIOR_LAYERS: tuple[str, str, str] = ("relu1_2", "relu2_2", "relu3_3")
#: the Oxford release's mean face colour, RGB, on 0-255 values
OXFORD_MEAN_RGB: tuple[float, float, float] = (129.1863, 104.7624, 93.5940)
_POOL_AFTER = {"conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"}


class VGGFace16(nn.Module):
    """VGG-Face (VGG-16, 2622 identities); ``depth="prior"``: blocks 1-3 only (up to conv3_3).

    ``forward(x)`` returns the fc8 logits (full depth, 224 x 224 input); :meth:`features` returns the ReLU outputs
    asked for (``relu1_2`` ... ``relu5_3``) and stops after the deepest one.
    """

    def __init__(self, depth: str = "full") -> None:
        super().__init__()
        if depth not in ("full", "prior"):
            raise ValueError(f"VGGFace16 depth must be 'full' or 'prior', not {depth!r}")
        self.depth = depth
        self.register_buffer("input_scale", torch.tensor(255.0))
        self.register_buffer("input_mean", torch.tensor(OXFORD_MEAN_RGB))
        convs = CONV_LAYERS if depth == "full" else CONV_LAYERS[:7]
        for name, cin, cout in convs:
            self.add_module(name, nn.Conv2d(cin, cout, 3, padding=1))
        self.conv_names = tuple(name for name, *_ in convs)
        if depth == "full":
            for name, cin, cout in FC_LAYERS:
                self.add_module(name, nn.Linear(cin, cout))

    @property
    def layers(self) -> tuple[str, ...]:
        """The ReLU outputs :meth:`features` can return."""
        return tuple("relu" + n[4:] for n in self.conv_names)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB (N, 3, H, W) -> the network's input values."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"VGGFace16 takes float RGB tensors (N, 3, H, W) in [0, 1], got {shape}")
        return x * self.input_scale - self.input_mean.view(1, 3, 1, 1)

    def features(self, x: torch.Tensor, layers: tuple[str, ...] | list[str] = PRIOR_LAYERS) -> dict[str, torch.Tensor]:
        """{layer: ReLU output} for ``layers`` (default DFPGnet's P1-P3), computing nothing past the deepest."""
        known = self.layers
        unknown = [n for n in layers if n not in known]
        if unknown or not layers:
            raise InputError(f"VGGFace16.features: unknown layer(s) {unknown or '(none asked)'}; this network "
                             f"({self.depth}) has {', '.join(known)}")
        last = max(known.index(n) for n in layers)
        h = self.normalize(x)
        out: dict[str, torch.Tensor] = {}
        for i, name in enumerate(self.conv_names[:last + 1]):
            if h.shape[-1] < 1 or h.shape[-2] < 1:
                raise InputError(f"VGGFace16: the input is too small for {name}")
            h = F.relu(getattr(self, name)(h))
            relu = "relu" + name[4:]
            if relu in layers:
                out[relu] = h
            if name in _POOL_AFTER and i < last:
                h = F.max_pool2d(h, 2, 2)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depth != "full":
            raise InputError("VGGFace16(depth='prior') has no classifier; use features(x), or build depth='full'")
        h = self.features(x, ["relu5_3"])["relu5_3"]
        h = F.max_pool2d(h, 2, 2)
        if tuple(h.shape[-2:]) != (7, 7):
            raise InputError(f"VGGFace16's classifier needs 224 x 224 inputs (7 x 7 after conv5), got "
                             f"{tuple(x.shape[-2:])}")
        h = F.relu(self.fc6(h.flatten(1)))
        h = F.relu(self.fc7(h))
        return self.fc8(h)
