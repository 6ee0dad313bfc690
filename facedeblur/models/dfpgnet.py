"""DFPGnet: Deep Feature Prior Guided face deblurring (Jung, Lee, Heo; WACV 2022).

The generator G (§3, Fig. 2) has two streams. The **deblurring stream** is an encoder M_E (§3.1) that gives
``E0`` (head features, kept for a global feature residual), ``E1, E2, E3`` (the inputs of the prior stream, at 1, 1/2
and 1/4 resolution) and ``E4`` (the bottleneck), and a decoder M_D (§3.3) that turns ``E4`` into the image, infusing
the estimated priors through SFT modules (Eq. 2) at each scale and adding ``E0`` before the output conv. The **prior
estimation stream** P (§3.2) maps each ``E_i`` through an SSFT module (Eq. 1: a spatial feature transform conditioned
on its own input) and stacked residual blocks to ``P^_i``, an estimate of the deep features ``P_i`` that a frozen face
network computes on the sharp face (VGGFace relu1_2 / relu2_2 / relu3_3 in the paper, §4.1). Inference needs only G.
The channel-attention feature discriminator D^C (§3.4, Fig. 4a, Eq. 4-5) classifies the set of features ``{P_i}``
(real) against ``{P^_i}`` (fake); its CA modules also weight the prior loss (Eq. 9). The losses and the prior network
are the training wrapper's (:mod:`facedeblur.train.methods.dfpgnet`, :mod:`facedeblur.train.priors`).

Layer facts not in the paper come from the generator the same lab re-released in SAPPGAN (``sujyQ/SAPPGAN``,
``model/DFPGNet_G.py``; facts only, REFERENCE_FACTS §3.1). ``dfpgnet.paper`` (``width=64``, 5 / 10 / 5 blocks)
has that generator's 44,661,379 parameters, 18,702,488 of them in the prior stream.

* Residual block: conv3x3 -> LeakyReLU(0.2) -> conv3x3 -> squeeze-excitation (reduction 16, ReLU, biases) -> + x;
  no normalisation. A residual group is n blocks plus the group's identity skip, without a trailing conv. The paper
  says only "Resblocks used in [47]" (RCAN, whose block has a ReLU and whose group ends in a conv); we follow the
  released code, whose parameter count the paper variant must match.
* Widths C, 2C, 4C at 1, 1/2, 1/4 (64 / 128 / 256 in the paper variant, VGG-16's conv1 / conv2 / conv3 widths).
  Down-sampling: 4x4 stride-2 convs; up-sampling: 4x4 stride-2 transposed convs; no activation after either (code;
  the paper is silent). Encoder: head conv3x3 3 -> C (= E0), E1 = group(C), down, E2 = group(2C), down,
  E3 = group(4C), E4 = group(4C). Decoder: SFT(E4; P^3), group(4C), up, SFT(.; P^2), group(2C), up, SFT(.; P^1),
  group(C), + E0, conv1x1 C -> 3. No encoder -> decoder skips besides the priors and E0 (code; consistent with §3).
* SSFT / SFT (Eq. 1 / 2): ``alpha * x + beta`` with ``(alpha, beta) = F(c)``, ``c = x`` for SSFT and ``c = P^_i``
  for SFT. The paper does not say what F is. As in the code, each of the two outputs has its own branch conv3x3 ->
  LeakyReLU(0.2) -> conv3x3 (C -> C), and alpha is parametrised as ``1 + S(c)`` (SFTGAN's PyTorch form): the same
  family of functions as a plain ``alpha = S(c)`` (the last conv's bias absorbs the 1), but the untrained transform is
  the identity instead of a multiplication by ~0.
* Value range: facedeblur's contract is [0, 1] at the boundary; the code works in [-1, 1] with a tanh output. The
  network maps ``x -> 2x - 1`` on the way in and ``(tanh(y) + 1) / 2`` on the way out (the paper is silent on both).
* Initialisation (code ``train.py``; the paper is silent): every conv of G Kaiming-normal (fan in) times 0.1, biases
  zero. D^C: Kaiming-normal times 1 (the code's ``FD_init = kaiming``).
* ``forward(x)`` returns the image only (what inference, validation and export need); ``forward(x,
  return_priors=True)`` returns ``(image, [P^1, P^2, P^3])`` for training (the code always returns all four).
* ``prior_stream=False`` builds the paper's ablation baseline B1 (Table 4): the deblurring stream only, no prior
  stream and no SFT modules, ``E4`` straight into the decoder groups.

**D^C (not released anywhere; designed here from §3.4, Fig. 4a and Eq. 4-6).** What the paper fixes: a CA module
(Hu et al. [9], squeeze-and-excitation) on each input ``P_i``, internal feature blocks ``D_f,i``, a classifier
block ``D_h``, the nesting ``D_h(D_f,3(P'3 ++ D_f,2(P'2 ++ D_f,1(P'1))))`` (``++`` channel concatenation) and a
probability output trained with the log loss (Eq. 6). What we inferred (:class:`FeatureDiscriminator`):

* CA_i: global average pool -> 1x1 (c -> c / 16, bias) -> ReLU -> 1x1 (-> c, bias) -> sigmoid, multiplied onto
  ``P_i`` (the same SE form as G's blocks; at least one hidden channel for narrow priors).
* D_f,i: conv3x3 (-> w_i) + LeakyReLU(0.2), conv4x4 stride 2 (w_i -> w_i) + LeakyReLU(0.2), with w = (W, 2W, 4W):
  each halves the resolution so its output meets ``P_{i+1}`` (the three priors are an octave apart). If the sizes
  still differ by a pixel (priors whose maps are not exact halves, e.g. dlib's unpadded convs), the block output is
  average-pooled / cropped to the next prior's size (:func:`match_size`).
* D_h: conv3x3 (4W -> 8W) + LeakyReLU(0.2), global average pool, linear 8W -> 1: one logit per sample (a
  probability after the sigmoid that the BCE loss applies). No normalisation layers (as in G), no spectral norm.
* Width W = 64 in the paper variant. The input widths follow the prior network (64 / 128 / 256 for VGGFace).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ._registry import InferenceAdapter, register_model
from .layers import check_image_batch

__all__ = ["DFPGGenerator", "FeatureDiscriminator", "ChannelAttention", "ResBlock", "ResGroup", "SFT", "SSFT",
           "DFPG_ADAPTER", "match_size", "dfpgnet", "dfpgnet_discriminator"]

#: how DFPGnet's generator is called at inference: ``model(x)``, one output (the restored image)
DFPG_ADAPTER = InferenceAdapter(control=False, multiscale=False)


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention (Hu et al. 2018; DFPGnet's CA / SE): global average pool -> 1x1
    (C -> C/r, bias) -> ReLU -> 1x1 (C/r -> C, bias) -> sigmoid. :meth:`weights` gives the (N, C, 1, 1) weights,
    ``forward`` the re-weighted input. The hidden width is at least 1."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.expand(F.relu(self.reduce(x.mean(dim=(2, 3), keepdim=True)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


class ResBlock(nn.Module):
    """DFPGnet's residual block (code; "Resblocks used in [47]", §3.2): ``x + SE(conv(lrelu(conv(x))))``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv1 = _conv3(channels, channels)
        self.conv2 = _conv3(channels, channels)
        self.se = ChannelAttention(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.se(self.conv2(F.leaky_relu(self.conv1(x), 0.2)))


class ResGroup(nn.Module):
    """``blocks`` :class:`ResBlock` s plus the group's identity skip (no trailing conv; code)."""

    def __init__(self, channels: int, blocks: int, reduction: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(*[ResBlock(channels, reduction) for _ in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _Branch(nn.Sequential):
    """One branch of a feature transform's mapping F: conv3x3 -> LeakyReLU(0.2) -> conv3x3."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(_conv3(cin, cout), nn.LeakyReLU(0.2), _conv3(cout, cout))


class SFT(nn.Module):
    """Spatial feature transform (§3.3, Eq. 2; Wang et al. 2018): ``D^t = alpha * D + beta`` with
    ``alpha = 1 + S(p)``, ``beta = T(p)`` computed from the condition ``p`` (the estimated prior P^_i)."""

    def __init__(self, channels: int, cond_channels: int | None = None) -> None:
        super().__init__()
        cc = channels if cond_channels is None else cond_channels
        self.scale = _Branch(cc, channels)
        self.shift = _Branch(cc, channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return x * (1 + self.scale(cond)) + self.shift(cond)


class SSFT(SFT):
    """Self spatial feature transform (§3.2, Eq. 1): an :class:`SFT` conditioned on its own input,
    ``E^t = alpha(E) * E + beta(E)``."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, x if cond is None else cond)


class DFPGGenerator(nn.Module):
    """DFPGnet's generator G (§3.1-3.3, Fig. 2): deblurring stream M_E / M_D and prior estimation stream P.

    Args:
        width: C, the full-resolution width (levels C, 2C, 4C). Paper / code: 64 (the widths of VGG-16's relu1_2,
            relu2_2, relu3_3, the paper's prior targets).
        enc_blocks: residual blocks per encoder group (E1, E2, E3, E4). Code: 5.
        prior_blocks: residual blocks per prior-stream group (P1, P2, P3). Code: 10.
        dec_blocks: residual blocks per decoder group. Code: 5.
        se_reduction: channel reduction of the blocks' squeeze-excitation. Code: 16.
        prior_stream: False builds the ablation baseline B1 (Table 4): no prior stream, no SFT.
        init_scale: the factor on the Kaiming-normal initial weights of every conv. Code: 0.1.

    ``forward(x)`` takes blurry faces (N, 3, H, W) in [0, 1], H and W multiples of :attr:`pad_multiple`, and returns
    the restored faces in [0, 1]; with ``return_priors=True`` it returns ``(image, [P^1, P^2, P^3])``, the estimated
    deep features at 1, 1/2 and 1/4 resolution with :attr:`prior_channels` channels (an empty list without the prior
    stream).
    """

    #: two stride-2 convs: H and W must be multiples of 4
    pad_multiple = 4

    def __init__(self, width: int = 64, enc_blocks: int = 5, prior_blocks: int = 10, dec_blocks: int = 5,
                 se_reduction: int = 16, prior_stream: bool = True, init_scale: float = 0.1) -> None:
        super().__init__()
        if width < 1 or min(enc_blocks, prior_blocks, dec_blocks) < 0:
            raise ValueError(f"DFPGGenerator needs width >= 1 and block counts >= 0, got width={width}, "
                             f"enc_blocks={enc_blocks}, prior_blocks={prior_blocks}, dec_blocks={dec_blocks}")
        c = width
        levels = (c, 2 * c, 4 * c)
        self.has_prior_stream = bool(prior_stream)
        #: widths of the estimated priors P^1, P^2, P^3 (at 1, 1/2, 1/4 resolution)
        self.prior_channels: tuple[int, int, int] = levels
        # deblurring stream, encoder M_E (§3.1)
        self.head = _conv3(3, c)
        self.enc1 = ResGroup(c, enc_blocks, se_reduction)
        self.down1 = nn.Conv2d(c, 2 * c, 4, stride=2, padding=1)
        self.enc2 = ResGroup(2 * c, enc_blocks, se_reduction)
        self.down2 = nn.Conv2d(2 * c, 4 * c, 4, stride=2, padding=1)
        self.enc3 = ResGroup(4 * c, enc_blocks, se_reduction)
        self.enc4 = ResGroup(4 * c, enc_blocks, se_reduction)
        # prior estimation stream P (§3.2): P_i = ResGroup(SSFT(E_i))
        self.prior = nn.ModuleList([nn.Sequential(SSFT(ch), ResGroup(ch, prior_blocks, se_reduction))
                                    for ch in levels]) if prior_stream else None
        # decoder M_D (§3.3), coarse to fine; the SFT modules infuse P^3, P^2, P^1
        self.sft = nn.ModuleList([SFT(ch) for ch in reversed(levels)]) if prior_stream else None
        self.dec3 = ResGroup(4 * c, dec_blocks, se_reduction)
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 4, stride=2, padding=1)
        self.dec2 = ResGroup(2 * c, dec_blocks, se_reduction)
        self.up1 = nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1)
        self.dec1 = ResGroup(c, dec_blocks, se_reduction)
        self.tail = nn.Conv2d(c, 3, 1)
        self._init_weights(init_scale)

    @torch.no_grad()
    def _init_weights(self, scale: float) -> None:
        """The code's init (the paper is silent): Kaiming-normal (fan in) x ``scale`` for every conv, zero biases."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                m.weight.mul_(scale)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """M_E (§3.1): ``(E0, [E1, E2, E3], E4)`` of a [-1, 1] input."""
        e0 = self.head(x)
        e1 = self.enc1(e0)
        e2 = self.enc2(self.down1(e1))
        e3 = self.enc3(self.down2(e2))
        return e0, [e1, e2, e3], self.enc4(e3)

    def estimate_priors(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """P (§3.2): ``[P^1, P^2, P^3]`` from ``[E1, E2, E3]`` (empty without the prior stream)."""
        if self.prior is None:
            return []
        return [p(e) for p, e in zip(self.prior, feats)]

    def decode(self, e0: torch.Tensor, e4: torch.Tensor, priors: Sequence[torch.Tensor]) -> torch.Tensor:
        """M_D (§3.3): the [-1, 1] image from E0, E4 and the estimated priors (SFT at each scale)."""
        use = self.sft is not None
        d = self.sft[0](e4, priors[2]) if use else e4
        d = self.up2(self.dec3(d))
        d = self.sft[1](d, priors[1]) if use else d
        d = self.up1(self.dec2(d))
        d = self.sft[2](d, priors[0]) if use else d
        return torch.tanh(self.tail(self.dec1(d) + e0))

    def forward(self, x: torch.Tensor, return_priors: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        check_image_batch(x, self.pad_multiple, type(self).__name__)
        e0, feats, e4 = self.encode(x * 2 - 1)
        priors = self.estimate_priors(feats)
        img = (self.decode(e0, e4, priors) + 1) * 0.5
        return (img, priors) if return_priors else img


def match_size(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``x`` (N, C, H, W) brought to spatial ``size``: average-pooled by the integer ratio of the sizes (ceil mode),
    then cropped, or replicate-padded, at the bottom / right to the exact size (the top-left corners stay aligned);
    any other ratio falls back to adaptive average pooling. Used where two feature grids are an octave (or two)
    apart but not exactly (e.g. maps of unpadded convs)."""
    h, w = int(size[0]), int(size[1])
    xh, xw = x.shape[-2:]
    if (xh, xw) == (h, w):
        return x
    kh, kw = max(1, round(xh / h)), max(1, round(xw / w))
    if abs(-(-xh // kh) - h) <= 1 and abs(-(-xw // kw) - w) <= 1:
        if kh > 1 or kw > 1:
            x = F.avg_pool2d(x, (kh, kw), ceil_mode=True)
        x = x[..., :h, :w]
        ph, pw = h - x.shape[-2], w - x.shape[-1]
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
    return F.adaptive_avg_pool2d(x, (h, w))


class _FeatureBlock(nn.Sequential):
    """D_f,i (inferred): conv3x3 -> LeakyReLU(0.2) -> conv4x4 stride 2 -> LeakyReLU(0.2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(_conv3(cin, cout), nn.LeakyReLU(0.2), nn.Conv2d(cout, cout, 4, stride=2, padding=1),
                         nn.LeakyReLU(0.2))


class FeatureDiscriminator(nn.Module):
    """The channel-attention feature discriminator D^C (§3.4, Fig. 4a, Eq. 4-5; layers inferred, see the module
    docstring): ``D_h(D_f,3(P'3 ++ D_f,2(P'2 ++ D_f,1(P'1))))`` with ``P'_i = CA_i(P_i)``.

    Args:
        channels: widths of the three input features (the prior network's P1, P2, P3). VGGFace: 64, 128, 256.
        width: W, the width of D_f,1 (D_f,2: 2W, D_f,3: 4W, D_h: 8W). Paper variant: 64.
        reduction: channel reduction of the CA modules (as in G: 16).

    ``forward(feats)`` takes the three feature maps, each an octave coarser than the one before (the ratio may be
    inexact by a pixel, see :func:`match_size`), and returns one logit per sample, shape (N,).
    :meth:`attend` gives the CA-weighted features ``[P'1, P'2, P'3]`` (Eq. 4), which the prior loss uses (Eq. 9).
    """

    def __init__(self, channels: Sequence[int] = (64, 128, 256), width: int = 64, reduction: int = 16) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) != 3 or min(channels) < 1 or width < 1:
            raise ValueError(f"FeatureDiscriminator needs three positive input widths and width >= 1, got "
                             f"channels={channels}, width={width}")
        self.channels = channels
        self.ca = nn.ModuleList([ChannelAttention(c, reduction) for c in channels])
        w = (width, 2 * width, 4 * width)
        self.blocks = nn.ModuleList([_FeatureBlock(channels[0], w[0]), _FeatureBlock(channels[1] + w[0], w[1]),
                                     _FeatureBlock(channels[2] + w[1], w[2])])
        self.classifier = nn.Sequential(_conv3(w[2], 8 * width), nn.LeakyReLU(0.2))
        self.fc = nn.Linear(8 * width, 1)
        for m in self.modules():  # the code's FD_init = kaiming (gain x 1), zero biases
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)

    def _check(self, feats: Sequence[torch.Tensor]) -> None:
        if len(feats) != 3 or any(not isinstance(f, torch.Tensor) or f.dim() != 4 for f in feats):
            raise InputError(f"FeatureDiscriminator takes three (N, C, H, W) feature maps [P1, P2, P3], got "
                             f"{[tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__ for f in feats]}")
        got = tuple(int(f.shape[1]) for f in feats)
        if got != self.channels:
            raise InputError(f"FeatureDiscriminator was built for features of {self.channels} channels, got {got}; "
                             f"build it with the prior network's widths")

    def attend(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``[CA_i(P_i)]`` (Eq. 4)."""
        self._check(feats)
        return [ca(f) for ca, f in zip(self.ca, feats)]

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        p1, p2, p3 = self.attend(feats)
        h = self.blocks[0](p1)
        h = self.blocks[1](torch.cat([p2, match_size(h, p2.shape[-2:])], dim=1))
        h = self.blocks[2](torch.cat([p3, match_size(h, p3.shape[-2:])], dim=1))
        h = self.classifier(h).mean(dim=(2, 3))
        return self.fc(h).reshape(-1)


@register_model("dfpgnet", task="image", discriminator="dfpgnet_discriminator", adapter=DFPG_ADAPTER)
def dfpgnet(**kwargs) -> DFPGGenerator:
    """DFPGnet's generator (inference needs only it); kwargs as in :class:`DFPGGenerator` (zoo configs set them)."""
    return DFPGGenerator(**kwargs)


def dfpgnet_discriminator(**kwargs) -> FeatureDiscriminator:
    """The channel-attention feature discriminator D^C (training only); kwargs as in :class:`FeatureDiscriminator`
    (the training wrapper passes ``channels``, the prior network's widths)."""
    return FeatureDiscriminator(**kwargs)
