"""Chrysos, Favaro, Zafeiriou: *Motion Deblurring of Faces* (IJCV 2019, arXiv 1803.03330): a two-step network.

* **Stage 1, ``chrysos_hg``** (§3.1, §5.1): a stacked-hourglass network (Newell, Yang, Deng, ECCV 2016) trained with
  an L1 loss (Eq. 2) on kernel-blurred stills; it restores the low and middle frequencies.
* **Stage 2, ``chrysos_cgan``** (§3.2, §3.3, Table 3): a conditional GAN whose generator has two pathways with the
  same layers, a regression pathway ``G_bl`` on the blurry face concatenated with the stage-1 output (6 channels)
  and an autoencoder pathway ``G_s`` on the sharp face (3 channels). They share **one decoder**: a single module,
  so one set of tensors, that both pathways call. Its discriminator is :class:`ChrysosDiscriminator` (5 layers).
  At inference only ``G_bl`` runs (Fig. 4); ``ChrysosCGAN(autoencoder=False)`` holds nothing else.
* **The composite, ``chrysos``** (task ``pipeline``, Fig. 4): ``G_bl(concat(b, H(b)))``.
  ``forward(x, return_stages=True)`` (or :meth:`Chrysos.stages`) returns both stages' outputs.

No code of the paper is public (REFERENCE_FACTS §2), so everything comes from the paper. Where the paper is silent,
the facts of the author's RoCGAN code (§2.1) and of the hourglass code (§9) fill in. Every difference and inference
is listed here and in ``docs/models/chrysos.md``:

Stage 1 (the paper: "an off-the-shelf implementation of the HG network as described in Newell et al.", §5.1):

* Newell's modules as REFERENCE_FACTS §9 states them. The pre-activation bottleneck ``Residual`` (BN-ReLU-1x1 to
  C/2, BN-ReLU-3x3, BN-ReLU-1x1 to C, identity or 1x1 skip; the paper's "resnet block of three resnet layers"
  §3.1). ``Hourglass(n, f)``: an upper Residual branch plus maxpool -> Residual -> Hourglass(n-1) or Residual ->
  Residual -> nearest x2; the branches are summed. The stem is conv 7x7/2 -> Residual -> maxpool -> 2 Residuals
  (widths f/4, f/2, f/2, f). Per stack: Residual, 1x1 conv-BN-ReLU, a 1x1 prediction, and for the next stack
  ``x + 1x1(pred) + 1x1(feat)``. Paper variant: f = 256, n = 4, 8 stacks (Newell's network). The convolutions have
  biases (the paper is silent).
* Inferred (nothing public settles an image output, §2.2): the prediction of each stack is a 3-channel image at
  1/4 resolution. An image head takes the last stack's features back to full resolution: nearest x2 -> Residual
  (to f/2) -> nearest x2 -> Residual (to f/4) -> BN-ReLU-1x1 to 3 channels. The output is predicted directly, not
  as a residual to the input ("vanilla HG", §3.1; the paper notes that its output "has lost the high-frequency
  details", §3.3). ``forward(x, intermediate=True)`` also returns the per-stack predictions for Newell's
  intermediate supervision. Eq. 2 itself is the loss of the final output (the training wrapper weighs the
  intermediate ones with ``loss.pix_coarse``).
* H and W must be multiples of ``4 * 2**depth`` (64 for the paper variant).

Stage 2 (§3.3, §5.1 and Table 3; ``width`` w = 64 in the paper):

* Encoder, 8 layers: 4x4 convs to w, 2w, 4w, 8w, 8w, 8w, 8w (stride 1, then stride 2), and a 1x1 stride-2 conv to
  4w (the latent, 1/128 of the input size). There is BN on every layer but the first. Decoder, 8 layers: a 1x1
  stride-2 transposed conv to 16w, then 4x4 stride-2 transposed convs to 8w, 8w, 8w, 4w, 2w, w, and a 4x4
  stride-1 layer to 3 channels. There is BN on every layer but the last. Dropout keeps half of the units after
  decoder layers 1-3 (Table 3's dropout column "denotes the probability that this layer is kept").
* The paper: "each convolutional layer is followed by a RELU and batch normalization". We apply
  conv -> BN -> ReLU, the order of the author's RoCGAN code; the text does not state an order. We use ReLU
  (the paper's word), not the code's leaky ReLU. The last layer has tanh (RoCGAN code; the paper is silent).
  Convolutions followed by BN have no bias.
* Stride-1 4x4 layers (encoder 1, decoder 8) need asymmetric zero padding to keep the size. Encoder layer 1 pads
  (1, 2) and decoder layer 8 pads (2, 1), so the two half-pixel shifts cancel. A stride-1 transposed conv is a conv
  with a flipped kernel (the same parameters), so decoder layer 8 is written as a conv. The 1x1 stride-2 transposed
  conv of decoder layer 1 uses ``output_padding=1`` so that the size doubles exactly.
* Residual connections: "after the first, the third and the fifth layer of the encoder and skip two layers each",
  and after the first and third decoder layers. So out(1) is added to out(3), out(3) to out(5) and out(5) to
  out(7), and in the decoder out(1) to out(3) and out(3) to out(5). The skipped layers change both size (x4) and
  width, and the paper wants "to propagate the lower level features explicitly without filtering". So the shortcut
  is parameter-free, He et al.'s option A: strided subsampling (or nearest up-sampling in the decoder). Channels
  are zero-padded when the width grows and averaged in groups when it shrinks (decoder: 16w -> 8w, 8w -> 4w).
* U-Net skips: "two U-net style skip connections from the encoder to the decoder". The paper does not say which
  layers. We concatenate the outputs of encoder layers 1 and 2 (``unet_skips``) to the mirror decoder outputs of
  the same size (decoder layers 7 and 6), which then feed decoder layers 8 and 7. These are the two
  highest-resolution pairs: the latent is only 2x2 for a 256 px face, so without a high-resolution path nothing of
  the input's detail reaches the output, and the paper says the skips make the network "learn the residual
  between the features corresponding to the blurred and the sharp images". Each pathway's skips come from its own
  encoder.
* Images are [0, 1] at the interface (the project's contract). Inside, every network works in [-1, 1], as the
  RoCGAN code does.
* No noise input: the ``z`` of Eq. 3 exists only as dropout during training, as in pix2pix. Dropout is off at
  inference (``eval()``), so the output is deterministic.
* H and W must be multiples of 128 (seven stride-2 layers; :attr:`ChrysosCGAN.pad_multiple`).

Discriminator (§5.1 "the discriminator consists of 5 layers"; the widths are inferred). Five 4x4 convs, as
pix2pix's PatchGAN that the paper's cGAN builds on: w, 2w, 4w with stride 2, then 8w with stride 1 (BN on layers
2-4, LeakyReLU 0.2), then one logit per patch. It is conditional (Eq. 3, ``D(s, y)``): the condition ``s`` is the
blurry face, concatenated to the judged image. The penultimate layer's output is the projection ``pi`` of the
projection loss (Eq. 5).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CapabilityError, InputError
from ._registry import register_model

__all__ = ["Residual", "Hourglass", "ChrysosHourglass", "ChrysosCGAN", "CGANEncoder", "CGANDecoder", "Pathway",
           "CGANOutputs", "Chrysos", "ChrysosStages", "ChrysosDiscriminator", "chrysos_hg", "chrysos_cgan", "chrysos",
           "chrysos_discriminator"]


def _check_input(x: Any, channels: int, multiple: int, name: str) -> None:
    """Raise :class:`InputError` unless ``x`` is (N, channels, H, W) with H and W multiples of ``multiple``."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != channels:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        what = "RGB images" if channels == 3 else f"{channels}-channel tensors (blurry face + stage-1 output)"
        raise InputError(f"{name} takes (N, {channels}, H, W) {what} in [0, 1], got {shape}")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple or h < multiple or w < multiple:
        raise InputError(f"{name} needs H and W divisible by {multiple} (and at least {multiple}), got {h}x{w}; pad "
                         f"the input (facedeblur.load(...).restore pads for you)")


def _view(module: nn.Module, children: dict[str, nn.Module | None], **attrs: Any) -> Any:
    """A shallow copy of ``module`` with its own table of children (the child modules themselves are shared, not
    copied) and plain attributes ``attrs``: a network made of another one's parts."""
    view = copy.copy(module)  # a new __dict__; its tables would still be the original's
    for name, table in (("_modules", children), ("_parameters", dict(module._parameters)),
                        ("_buffers", dict(module._buffers))):
        object.__setattr__(view, name, table)
    for name, value in attrs.items():
        object.__setattr__(view, name, value)
    return view


def _signed(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1] (the networks' internal range, RoCGAN code)."""
    return x * 2.0 - 1.0


def _unit(y: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]."""
    return y * 0.5 + 0.5


# ================================================================================ stage 1: stacked hourglass


class Residual(nn.Module):
    """Newell's pre-activation bottleneck (REFERENCE_FACTS §9): BN-ReLU-1x1 (C/2), BN-ReLU-3x3, BN-ReLU-1x1 (C),
    plus the input (a 1x1 conv when the widths differ)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = max(1, cout // 2)
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, mid, 1)
        self.bn2, self.conv2 = nn.BatchNorm2d(mid), nn.Conv2d(mid, mid, 3, padding=1)
        self.bn3, self.conv3 = nn.BatchNorm2d(mid), nn.Conv2d(mid, cout, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.bn1(x)))
        y = self.conv2(F.relu(self.bn2(y)))
        y = self.conv3(F.relu(self.bn3(y)))
        return y + (x if self.skip is None else self.skip(x))


class Hourglass(nn.Module):
    """``Hourglass(n, f)`` (§3.1, Fig. 2; REFERENCE_FACTS §9): ``up1(x) + up(low3(low2(low1(pool(x)))))`` with
    ``low2`` an ``Hourglass(n - 1, f)``, or a Residual at ``n = 1``; nearest up-sampling."""

    def __init__(self, depth: int, width: int) -> None:
        super().__init__()
        self.up1 = Residual(width, width)
        self.low1 = Residual(width, width)
        self.low2: nn.Module = Hourglass(depth - 1, width) if depth > 1 else Residual(width, width)
        self.low3 = Residual(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.low3(self.low2(self.low1(F.max_pool2d(x, 2))))
        return self.up1(x) + F.interpolate(low, scale_factor=2.0, mode="nearest")


class _Stack(nn.Module):
    """One stack: hourglass, Residual, 1x1 conv-BN-ReLU (the features), 1x1 prediction (a 1/4-size image)."""

    def __init__(self, depth: int, width: int, out_channels: int) -> None:
        super().__init__()
        self.hourglass = Hourglass(depth, width)
        self.res = Residual(width, width)
        self.lin = nn.Sequential(nn.Conv2d(width, width, 1), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.pred = nn.Conv2d(width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.lin(self.res(self.hourglass(x)))
        return feat, self.pred(feat)


class ChrysosHourglass(nn.Module):
    """Stage 1 (§3.1): Newell's stacked hourglass with an image head (see the module docstring).

    Args:
        width: the hourglass width f (Newell: 256).
        stacks: number of stacked hourglasses (Newell: 8).
        depth: down-samplings per hourglass, n (Newell: 4).

    ``forward(x)`` takes blurry faces (N, 3, H, W) in [0, 1], H and W multiples of :attr:`pad_multiple`, and returns
    the restored image (N, 3, H, W). With ``intermediate=True`` it returns ``[pred_1, ..., pred_S, final]``: each
    stack's 1/4-size prediction, then the full-size output.
    """

    def __init__(self, width: int = 256, stacks: int = 8, depth: int = 4) -> None:
        super().__init__()
        if width < 8 or width % 4 or stacks < 1 or depth < 1:
            raise ValueError(f"ChrysosHourglass needs width >= 8 and a multiple of 4, stacks >= 1, depth >= 1; got "
                             f"width={width}, stacks={stacks}, depth={depth}")
        f = width
        #: H and W must be multiples of this: the stem's 1/4 size, then ``depth`` max-poolings
        self.pad_multiple = 4 * 2 ** depth
        self.stem = nn.Sequential(nn.Conv2d(3, f // 4, 7, stride=2, padding=3), nn.BatchNorm2d(f // 4),
                                  nn.ReLU(inplace=True), Residual(f // 4, f // 2), nn.MaxPool2d(2),
                                  Residual(f // 2, f // 2), Residual(f // 2, f))
        self.stacks = nn.ModuleList([_Stack(depth, f, 3) for _ in range(stacks)])
        self.merge_feat = nn.ModuleList([nn.Conv2d(f, f, 1) for _ in range(stacks - 1)])
        self.merge_pred = nn.ModuleList([nn.Conv2d(3, f, 1) for _ in range(stacks - 1)])
        self.head_up1 = Residual(f, f // 2)
        self.head_up2 = Residual(f // 2, f // 4)
        self.head_out = nn.Sequential(nn.BatchNorm2d(f // 4), nn.ReLU(inplace=True), nn.Conv2d(f // 4, 3, 1))

    def forward(self, x: torch.Tensor, *, intermediate: bool = False) -> torch.Tensor | list[torch.Tensor]:
        _check_input(x, 3, self.pad_multiple, type(self).__name__)
        h = self.stem(_signed(x))
        preds: list[torch.Tensor] = []
        feat = h
        for i, stack in enumerate(self.stacks):
            feat, pred = stack(h)
            preds.append(_unit(pred))
            if i < len(self.stacks) - 1:
                h = h + self.merge_pred[i](pred) + self.merge_feat[i](feat)
        y = self.head_up1(F.interpolate(feat, scale_factor=2.0, mode="nearest"))
        y = self.head_up2(F.interpolate(y, scale_factor=2.0, mode="nearest"))
        final = _unit(self.head_out(y))
        return [*preds, final] if intermediate else final


# ================================================================================ stage 2: two-pathway cGAN

#: Table 3 (a), the encoder: (width multiple of w, kernel, stride) per layer; BN on every layer but the first
_ENC = ((1, 4, 1), (2, 4, 2), (4, 4, 2), (8, 4, 2), (8, 4, 2), (8, 4, 2), (8, 4, 2), (4, 1, 2))
#: Table 3 (b), the decoder: (width multiple of w, kernel, stride, dropout keep probability) per layer; the last
#: layer's width is the image's 3 channels. BN on every layer but the last.
_DEC = ((16, 1, 2, 0.5), (8, 4, 2, 0.5), (8, 4, 2, 0.5), (8, 4, 2, 1.0), (4, 4, 2, 1.0), (2, 4, 2, 1.0),
        (1, 4, 2, 1.0), (0, 4, 1, 1.0))
#: residual connections (§5.1): output of layer a is added to the output of layer b (1-based)
_ENC_RESIDUAL = ((1, 3), (3, 5), (5, 7))
_DEC_RESIDUAL = ((1, 3), (3, 5))
_LAYERS = len(_ENC)


def _shortcut(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A parameter-free residual shortcut (He et al. option A): ``x`` resampled to the size of ``like`` (strided
    subsampling down, nearest up-sampling up) and to its width (zero-padded channels, or channel-group means)."""
    h, w = like.shape[-2:]
    if x.shape[-2] > h:
        f = x.shape[-2] // h
        x = x[..., ::f, ::f]
    elif x.shape[-2] < h:
        x = F.interpolate(x, size=(h, w), mode="nearest")
    c, c_out = x.shape[1], like.shape[1]
    if c < c_out:
        x = F.pad(x, (0, 0, 0, 0, 0, c_out - c))
    elif c > c_out:
        x = x.reshape(x.shape[0], c_out, c // c_out, h, w).mean(dim=2)
    return x


class _EncLayer(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, bn: bool) -> None:
        super().__init__()
        # a stride-1 4x4 conv keeps the size with (1, 2) padding (decoder layer 8 pads (2, 1): the shifts cancel)
        self.pad = nn.ZeroPad2d((1, 2, 1, 2)) if (stride == 1 and k == 4) else None
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=1 if (stride == 2 and k == 4) else 0, bias=not bn)
        self.bn = nn.BatchNorm2d(cout) if bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x if self.pad is None else self.pad(x))
        return F.relu(y if self.bn is None else self.bn(y))


class _DecLayer(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, last: bool, keep: float) -> None:
        super().__init__()
        if last:  # stride-1 "transposed" 4x4 conv == a conv with padding (2, 1)
            self.pad = nn.ZeroPad2d((2, 1, 2, 1))
            self.conv: nn.Module = nn.Conv2d(cin, cout, k, stride=1, bias=True)
        else:
            self.pad = None
            self.conv = nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=1 if k == 4 else 0,
                                           output_padding=1 if k == 1 else 0, bias=False)
        self.bn = None if last else nn.BatchNorm2d(cout)
        self.drop = nn.Dropout(1.0 - keep) if keep < 1.0 else None
        self.last = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x if self.pad is None else self.pad(x))
        if self.last:
            return torch.tanh(y)
        y = F.relu(self.bn(y))
        return y if self.drop is None else self.drop(y)


class CGANEncoder(nn.Module):
    """One pathway's encoder (Table 3 a) with the residual connections; returns the latent and the outputs the U-Net
    skips take (by 1-based layer index)."""

    def __init__(self, in_channels: int, width: int, unet_skips: Sequence[int], residual: bool) -> None:
        super().__init__()
        layers, cin = [], in_channels
        for i, (mult, k, stride) in enumerate(_ENC):
            layers.append(_EncLayer(cin, mult * width, k, stride, bn=i > 0))
            cin = mult * width
        self.layers = nn.ModuleList(layers)
        self.in_channels = in_channels
        self.unet_skips = tuple(unet_skips)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        outs: dict[int, torch.Tensor] = {}
        for i, layer in enumerate(self.layers, start=1):
            x = layer(x)
            if self.residual:
                for a, b in _ENC_RESIDUAL:
                    if b == i:
                        x = x + _shortcut(outs[a], x)
            outs[i] = x
        return x, {k: outs[k] for k in self.unet_skips}


class CGANDecoder(nn.Module):
    """The decoder both pathways share (Table 3 b), with its residual connections and the U-Net skip inputs."""

    def __init__(self, width: int, out_channels: int, unet_skips: Sequence[int], residual: bool) -> None:
        super().__init__()
        enc_width = {i: m * width for i, (m, _, _) in enumerate(_ENC, start=1)}
        layers = []
        cin = _ENC[-1][0] * width
        for j, (mult, k, stride, keep) in enumerate(_DEC, start=1):
            last = j == len(_DEC)
            cout = out_channels if last else mult * width
            layers.append(_DecLayer(cin, cout, k, stride, last, keep))
            skip = _LAYERS + 1 - (j + 1)  # the encoder layer whose output has the size of this layer's output
            cin = cout + (enc_width[skip] if skip in unet_skips else 0)
        self.layers = nn.ModuleList(layers)
        self.unet_skips = tuple(unet_skips)
        self.residual = residual

    def forward(self, latent: torch.Tensor, skips: Mapping[int, torch.Tensor]) -> torch.Tensor:
        outs: dict[int, torch.Tensor] = {}
        y = latent
        for j, layer in enumerate(self.layers, start=1):
            y = layer(y)
            if self.residual:
                for a, b in _DEC_RESIDUAL:
                    if b == j:
                        y = y + _shortcut(outs[a], y)
            outs[j] = y
            skip = _LAYERS + 1 - (j + 1)
            if j < len(self.layers) and skip in skips:
                y = torch.cat([y, skips[skip]], dim=1)
        return y


class Pathway(nn.Module):
    """A view of one generator pathway (``G_bl`` or ``G_s``): an encoder and the shared decoder, no copies."""

    def __init__(self, encoder: CGANEncoder, decoder: CGANDecoder) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _unit(self.decoder(*self.encoder(_signed(x))))


class CGANOutputs(NamedTuple):
    """Training outputs of the two-pathway generator: ``G_bl(x)`` and ``G_s(sharp)``."""

    restored: torch.Tensor
    reconstructed: torch.Tensor


class ChrysosCGAN(nn.Module):
    """Stage 2's generator (§3.3, Table 3): regression pathway ``G_bl`` and autoencoder pathway ``G_s`` sharing one
    decoder.

    Args:
        in_channels: input channels of ``G_bl``: 6 in the two-step model (blurry face + stage-1 output), 3 for the
            cGAN-only ablation (blurry face alone).
        width: w of Table 3 (paper: 64).
        dropout: keep the paper's dropout on decoder layers 1-3 (keep probability 0.5).
        unet_skips: the encoder layers (1-based) whose outputs feed the decoder as U-Net skips (inferred: 1, 2).
        residual: the residual connections of §5.1.
        autoencoder: build ``G_s``'s encoder (training). Without it the module is ``G_bl`` alone, the network that
            runs at inference (Fig. 4), and :meth:`regression_only` of a full one has these exact parameters.

    ``forward(x)`` is ``G_bl(x)``: (N, in_channels, H, W) in [0, 1] -> (N, 3, H, W) in [0, 1], H and W multiples of
    :attr:`pad_multiple`. ``forward(x, sharp=s)`` also runs ``G_s(s)`` and returns :class:`CGANOutputs` (training,
    in one call so that DistributedDataParallel sees both pathways).
    """

    #: H and W must be multiples of this (seven stride-2 layers)
    pad_multiple = 2 ** sum(1 for _, _, s in _ENC if s == 2)

    def __init__(self, in_channels: int = 6, width: int = 64, dropout: bool = True,
                 unet_skips: Sequence[int] = (1, 2), residual: bool = True, autoencoder: bool = True) -> None:
        super().__init__()
        skips = tuple(sorted(int(k) for k in unet_skips))
        if in_channels < 1 or width < 1 or any(not 1 <= k < _LAYERS for k in skips):
            raise ValueError(f"ChrysosCGAN needs in_channels >= 1, width >= 1 and U-Net skips from encoder layers 1-"
                             f"{_LAYERS - 1}; got in_channels={in_channels}, width={width}, unet_skips={unet_skips}")
        self.config = {"in_channels": in_channels, "width": width, "dropout": dropout, "unet_skips": skips,
                       "residual": residual}
        self.encoder_bl = CGANEncoder(in_channels, width, skips, residual)
        self.decoder = CGANDecoder(width, 3, skips, residual)
        self.encoder_s: CGANEncoder | None = CGANEncoder(3, width, skips, residual) if autoencoder else None
        if not dropout:
            for layer in self.decoder.layers:
                layer.drop = None

    @property
    def in_channels(self) -> int:
        return self.encoder_bl.in_channels

    @property
    def g_bl(self) -> Pathway:
        """The regression pathway ``G_bl`` (its encoder and the shared decoder)."""
        return Pathway(self.encoder_bl, self.decoder)

    @property
    def g_s(self) -> Pathway:
        """The autoencoder pathway ``G_s`` (its encoder and the shared decoder)."""
        if self.encoder_s is None:
            # not AttributeError: nn.Module.__getattr__ would replace the message
            raise CapabilityError("this ChrysosCGAN has no autoencoder pathway (built with autoencoder=False: the "
                                  "inference network); build ChrysosCGAN(autoencoder=True) to train it")
        return Pathway(self.encoder_s, self.decoder)

    def regression_only(self) -> "ChrysosCGAN":
        """``G_bl`` alone, as a ``ChrysosCGAN(autoencoder=False)`` that shares this module's encoder and decoder (no
        copy): what a trained two-pathway generator ships."""
        if self.encoder_s is None:
            return self
        return _view(self, {k: v for k, v in self._modules.items() if k != "encoder_s"}, encoder_s=None)

    def reconstruct(self, sharp: torch.Tensor) -> torch.Tensor:
        """``G_s(sharp)``: the autoencoder pathway's reconstruction of sharp faces (Eq. 6)."""
        _check_input(sharp, 3, self.pad_multiple, "ChrysosCGAN G_s")
        return self.g_s(sharp)

    def forward(self, x: torch.Tensor, sharp: torch.Tensor | None = None) -> torch.Tensor | CGANOutputs:
        _check_input(x, self.in_channels, self.pad_multiple, type(self).__name__)
        restored = self.g_bl(x)
        if sharp is None:
            return restored
        return CGANOutputs(restored, self.reconstruct(sharp))


class ChrysosDiscriminator(nn.Module):
    """The 5-layer conditional discriminator ``D(s, y)`` (Eq. 3, §5.1; widths inferred, pix2pix layout): 4x4 convs
    to w, 2w, 4w (stride 2), 8w (stride 1), BN on layers 2-4, LeakyReLU(0.2), then a 4x4 conv to one logit per
    patch.

    ``forward(image, condition)`` returns the logits (N, 1, h, w); with ``features=True`` it returns
    ``(logits, pi)``, ``pi`` the penultimate layer's output (the projection of Eq. 5). ``cond_channels=0`` makes it
    unconditional.
    """

    def __init__(self, width: int = 64, cond_channels: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        w = width
        self.cond_channels, self.in_channels = cond_channels, in_channels
        cin = in_channels + cond_channels
        self.layers = nn.ModuleList([
            nn.Sequential(nn.Conv2d(cin, w, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)),
            nn.Sequential(nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2, True)),
            nn.Sequential(nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(4 * w),
                          nn.LeakyReLU(0.2, True)),
            nn.Sequential(nn.Conv2d(4 * w, 8 * w, 4, 1, 1, bias=False), nn.BatchNorm2d(8 * w),
                          nn.LeakyReLU(0.2, True)),
        ])
        self.out = nn.Conv2d(8 * w, 1, 4, 1, 1)

    def forward(self, image: torch.Tensor, condition: torch.Tensor | None = None, *, features: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        _check_input(image, self.in_channels, 1, type(self).__name__)
        if self.cond_channels:
            if condition is None:
                raise InputError(f"{type(self).__name__} is conditional: pass the blurry face as condition")
            if condition.shape[1] != self.cond_channels or condition.shape[-2:] != image.shape[-2:]:
                raise InputError(f"{type(self).__name__}: the condition must be (N, {self.cond_channels}, "
                                 f"{image.shape[-2]}, {image.shape[-1]}), got {tuple(condition.shape)}")
            x = torch.cat([_signed(image), _signed(condition)], dim=1)
        else:
            x = _signed(image)
        for layer in self.layers:
            x = layer(x)
        logits = self.out(x)
        return (logits, x) if features else logits


# ================================================================================ the composite


class ChrysosStages(NamedTuple):
    """Both stages' outputs: the hourglass's (stage 1) and the restored image (stage 2), plus ``G_s``'s
    reconstruction of the sharp face when it was given (training)."""

    hourglass: torch.Tensor
    restored: torch.Tensor
    reconstructed: torch.Tensor | None = None


class Chrysos(nn.Module):
    """The two-step network (§3.3, Fig. 4): ``G_bl(concat(b, H(b)))``.

    Args:
        hg: kwargs of the stage-1 :class:`ChrysosHourglass`.
        cgan: kwargs of the stage-2 :class:`ChrysosCGAN` (``in_channels`` is 6 here; ``autoencoder`` is set by
            the argument below).
        autoencoder: also hold ``G_s``'s encoder (training); the shipped network has ``G_bl`` only.

    ``forward(x)`` takes blurry faces (N, 3, H, W) in [0, 1] and returns the restored faces. With
    ``return_stages=True`` (or :meth:`stages`), or with ``sharp`` (training), it returns :class:`ChrysosStages`.
    """

    def __init__(self, hg: Mapping[str, Any] | None = None, cgan: Mapping[str, Any] | None = None,
                 autoencoder: bool = False) -> None:
        super().__init__()
        cgan_kw = dict(cgan or {})
        if cgan_kw.setdefault("in_channels", 6) != 6:
            raise ValueError(f"the composite's stage 2 takes the blurry face and the stage-1 output (6 channels), not "
                             f"in_channels={cgan_kw['in_channels']}; use chrysos_cgan alone for the cGAN-only model")
        if "autoencoder" in cgan_kw:
            raise ValueError("set autoencoder on the composite (Chrysos(autoencoder=...)), not inside cgan")
        self.hg = ChrysosHourglass(**dict(hg or {}))
        self.cgan = ChrysosCGAN(**cgan_kw, autoencoder=autoencoder)
        #: H and W must be multiples of this (both stages' multiples)
        self.pad_multiple = math.lcm(self.hg.pad_multiple, self.cgan.pad_multiple)

    def regression_only(self) -> "Chrysos":
        """The inference network (no ``G_s`` encoder), sharing this module's parts (see
        :meth:`ChrysosCGAN.regression_only`)."""
        if self.cgan.encoder_s is None:
            return self
        return _view(self, {**self._modules, "cgan": self.cgan.regression_only()})

    def stages(self, x: torch.Tensor) -> ChrysosStages:
        """Both stages' outputs for blurry faces ``x``."""
        out = self(x, return_stages=True)
        assert isinstance(out, ChrysosStages)
        return out

    def forward(self, x: torch.Tensor, sharp: torch.Tensor | None = None, *, return_stages: bool = False
                ) -> torch.Tensor | ChrysosStages:
        _check_input(x, 3, self.pad_multiple, type(self).__name__)
        h = self.hg(x)
        assert isinstance(h, torch.Tensor)
        inp = torch.cat([x, h.to(x.dtype)], dim=1)
        if sharp is not None:
            out = self.cgan(inp, sharp=sharp)
            assert isinstance(out, CGANOutputs)
            return ChrysosStages(h, out.restored, out.reconstructed)
        y = self.cgan(inp)
        assert isinstance(y, torch.Tensor)
        return ChrysosStages(h, y) if return_stages else y


# ================================================================================ builders


@register_model("chrysos_hg", task="image")
def chrysos_hg(**kwargs: Any) -> ChrysosHourglass:
    """Stage 1 alone: the stacked hourglass; kwargs as in :class:`ChrysosHourglass`."""
    return ChrysosHourglass(**kwargs)


@register_model("chrysos_cgan", task="image", discriminator="chrysos_discriminator")
def chrysos_cgan(**kwargs: Any) -> ChrysosCGAN:
    """Stage 2 alone: the two-pathway cGAN generator; kwargs as in :class:`ChrysosCGAN` (``in_channels=3``: the
    cGAN-only model of the ablation)."""
    return ChrysosCGAN(**kwargs)


@register_model("chrysos", task="pipeline", discriminator="chrysos_discriminator")
def chrysos(**kwargs: Any) -> Chrysos:
    """The two-step model: stage 2 on (blurry, stage 1(blurry)); kwargs as in :class:`Chrysos`."""
    return Chrysos(**kwargs)


def chrysos_discriminator(**kwargs: Any) -> ChrysosDiscriminator:
    """The 5-layer conditional discriminator (training only); kwargs as in :class:`ChrysosDiscriminator`."""
    return ChrysosDiscriminator(**kwargs)
