"""FineNet: Frame Interpolation and Enhancement for face video deblurring (Tran, Tran, Nguyen, Hoai; VinAI Research).

A 5-frame window ``t-2 .. t+2`` (N, 5, 3, H, W) in [0, 1] gives the sharp centre frame ``t`` (N, 3, H, W). Two
branches (§3, Fig. 3), fused late (§3.5):

* **Enhancement** (§3.3, Fig. 5, 7; Eq. 3-8): per-frame features, a PCD alignment (pyramid, cascading, deformable;
  EDVR) of every frame to the centre frame whose offsets come from **FOC** modules (face-aware offset calculation,
  §3.2, Fig. 4): the top level's FOC (Level 1, full feature resolution) also sees the landmark heatmaps of both
  frames (Eq. 7), the lower levels use the *simplified* FOC, a small encoder-decoder without the landmark prior.
  Then fusion of the aligned features (EDVR's TSA) and reconstruction, added to the blurry centre frame.
* **Interpolation** (§3.4, Fig. 6): the centre frame is treated as missing. Forward, the interpolation module reads
  ``[t-2, t-1, t+1]`` and deforms frame ``t-1`` to time ``t``; backward, ``[t+2, t+1, t-1]`` (decreasing order) and
  deforms ``t+1``. Both feature maps are fused and reconstructed, added to the mean of frames ``t-1`` and ``t+1``.
* **Combination** (§3.5): two stride-2 down-sampling convs, nine ResNet blocks and two up-sampling layers on the two
  branch images; the late fusion of Table 3.

There is no official code (REFERENCE_FACTS §4). Everything the paper states is followed; where it is silent the
EDVR facts (REFERENCE_FACTS §4.1, EDVR-L deblur) are used; what neither gives is our inference. In detail:

Paper:
  5-frame windows; modulated deformable convolution (DCNv2, Eq. 2); a 3-level pyramid indexed top (Level 1, finest)
  to bottom (Level 3), offsets computed coarse to fine with the upsampled offsets of the coarser level (Eq. 3-8);
  landmark heatmaps only in the top-level FOC, a landmark-free simplified FOC below ("a small encoder-decoder
  network"); the interpolation triples and their order; forward + backward interpolation fused into one feature
  map; three frames, not four (§3.4); late fusion by the combination module of §3.5; per-frame down-sampling before
  feature extraction ("each frame after downsampling goes through the features extraction module").
EDVR facts (the paper is silent):
  widths and depths of the paper variant (C = 128, 8 deformable groups, 5 extraction and 40 reconstruction residual
  blocks: EDVR-L deblur); LeakyReLU(0.1); residual blocks conv-ReLU-conv without normalisation, Kaiming init x 0.1;
  the feature pyramid (L2, L3 by a stride-2 conv + a conv each); offset *features* are what a level hands up,
  upsampled bilinearly and multiplied by 2; DCN packs zero-initialised, mask = sigmoid; aligned features fused
  with the upsampled coarser result by a 3x3 conv, LeakyReLU after Levels 3 and 2 only; the cascading DCN after
  Level 1; TSA fusion; the x4 pixel-shuffle reconstruction with the global residual on the centre frame; the input
  brought to 1/4 resolution (``hr_in``) with a pre-deblur module in front (EDVR-L deblur). The paper's "two-stage
  strategy ... a small deblurring module to remove noise and partially deblur" (§4.2) is read as that per-frame
  pre-deblur module (``predeblur``), not as a whole second FineNet (that would need 9-frame windows).
Inferred (neither gives it):
  * FOC (Fig. 4 is not described in the text): concat(inputs) -> 3x3 conv -> an encoder-decoder (``depth`` stride-2
    levels, residual blocks at the bottom, bilinear up + skip fusion) -> offset features. Full FOC: depth 2, 2
    blocks; simplified: depth 1, 1 block. The DCN pack's zero-initialised 3x3 conv turns offset features into
    offsets and masks, as in EDVR. The cascade step keeps EDVR's two-conv offset head.
  * Heatmaps enter as feature maps (§3.2: "we use a feature extraction module to convert them to feature maps"): two
    3x3 convs (``heatmap_width`` channels) on the heatmaps at the feature resolution (1/4 of the input, the
    resolution FAN's 64x64 heatmaps have for a 256 px face).
  * The interpolation module mirrors the alignment module (pyramid, FOC, DCN of the middle frame, cascade whose
    offsets read the interpolated feature and the three frames); forward and backward share its weights (the paper
    applies "the interpolation module" twice). The branch has its own feature extractor and reconstruction; its
    two directions are fused by a 1x1 conv; its global residual is the mean of frames t-1 and t+1 (the centre frame
    is missing by construction).
  * The combination module is the CycleGAN ResNet generator shape §3.5 describes (7x7 conv, two stride-2 convs,
    nine blocks, two transposed convs, 7x7 conv; widths w, 2w, 4w), without normalisation (no restoration network
    of this zoo normalises), on concat(I_en, I_in); its output is added to their mean, and its last conv is
    zero-initialised, so an untrained combination returns the mean of the two branches.
  * The pre-deblur module (EDVR's layers are not in the facts): a per-frame residual pyramid at 1/4, 1/8, 1/16.

**Landmarks** (§3.2; Tables 2-3). ``forward(x, heatmaps)`` takes per-frame heatmaps (N, 5, P, h, w) with P =
``heatmap_channels``, at the feature resolution (H/4, W/4) or the input's; build them with
:func:`landmark_heatmaps` (or :meth:`FineNet.heatmaps_from_landmarks`) from 68-point (dlib, iBUG layout) or 5-point
(MTCNN) landmarks, one Gaussian per point (68 points reduce to the 5 MTCNN points when P = 5). **Missing landmarks
are zero heatmaps**: ``heatmaps=None`` (what the zoo's video path passes today), a frame whose landmarks failed
(NaN points) or a dropped-out sample all give zero heatmap channels, so the top-level FOC then runs on image
features alone -- the "FOC without landmarks" of Table 2, row 2, when trained so. Trained on landmark data, the
training wrapper drops heatmaps at random (``landmark_dropout``) so that one network serves both
(:mod:`facedeblur.train.methods.finenet`). ``heatmap_channels=0`` removes the landmark input altogether (simplified
FOC at every level).

Inference: ``pad_multiple`` = 16 (features at 1/4, the pyramid and TSA two more halvings); H, W must be multiples
of it (:class:`~facedeblur.errors.InputError` otherwise; the Deblurrer pads). Videos are restored by a sliding
window, edges reflected (``Deblurrer.restore_video``: the first frame's window is frames 2, 1, 0, 1, 2).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ._registry import InferenceAdapter, register_model
from .layers import _torchvision_deform, deform_conv2d

__all__ = ["FineNet", "FOC", "DCNPack", "PCDAlign", "PCDInterpolate", "TSAFusion", "EnhancementBranch",
           "InterpolationBranch", "CombinationModule", "landmark_heatmaps", "modulated_deform_conv", "finenet",
           "FINENET_ADAPTER", "FRAMES", "BRANCHES", "MTCNN_FROM_68"]

#: how FineNet is called: ``model(x)`` with x (N, 5, 3, H, W), one output (the restored centre frame)
FINENET_ADAPTER = InferenceAdapter(control=False, multiscale=False)

#: frames per window (§3.3: t-2 .. t+2)
FRAMES = 5
CENTRE = FRAMES // 2
BRANCHES = ("enhancement", "interpolation")

#: the 5 MTCNN points (image-left eye, image-right eye, nose, mouth left, mouth right) as iBUG-68 indices: eye
#: centres are the means of the eye contours, the nose is its tip, the mouth corners are points 48 and 54
MTCNN_FROM_68: tuple[tuple[int, ...], ...] = (tuple(range(36, 42)), tuple(range(42, 48)), (30,), (48,), (54,))

_SLOPE = 0.1  # LeakyReLU slope (EDVR)


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, _SLOPE)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def _up(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize to ``size`` (align_corners=False, EDVR)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------------------------ landmarks


def landmark_heatmaps(points: torch.Tensor | np.ndarray, size: Sequence[int], sigma: float = 1.5,
                      channels: int | None = None, scale: float = 1.0) -> torch.Tensor:
    """Gaussian landmark heatmaps (§3.2: the FOC's landmark prior), one channel per point.

    ``points``: (..., P, 2) landmark positions (x, y) in pixels of the image they were found in, P = 68 (iBUG layout,
    dlib) or 5 (MTCNN: image-left eye, image-right eye, nose, mouth left, mouth right). ``size``: (h, w) of the
    heatmaps; ``scale``: heatmap pixels per image pixel (0.25 for FineNet's feature resolution), with pixel centres
    mapped onto pixel centres. ``channels``: None (one per point), or 5 for 68 points (reduced by
    :data:`MTCNN_FROM_68`). A point that is NaN (a failed detection) gives a zero channel: the documented fallback.
    Returns float32 (..., C, h, w), peak 1 at each point.
    """
    p = torch.as_tensor(np.asarray(points) if isinstance(points, np.ndarray) else points, dtype=torch.float32)
    if p.dim() < 2 or p.shape[-1] != 2:
        raise InputError(f"landmark_heatmaps takes (..., P, 2) points (x, y), got shape {tuple(p.shape)}")
    n_pts = p.shape[-2]
    if channels is not None and channels != n_pts:
        if n_pts == 68 and channels == 5:
            p = torch.stack([p[..., list(idx), :].mean(dim=-2) for idx in MTCNN_FROM_68], dim=-2)
        else:
            raise InputError(f"cannot make {channels} heatmap channels from {n_pts} landmarks: use 68 -> 68, 68 -> 5 "
                             f"or 5 -> 5 (a 5-point detector cannot stand in for 68 points)")
    if len(size) != 2 or min(int(s) for s in size) < 1:
        raise InputError(f"heatmap size must be (h, w) with h, w >= 1, got {tuple(size)}")
    if not sigma > 0:
        raise InputError(f"heatmap sigma must be > 0, got {sigma}")
    h, w = int(size[0]), int(size[1])
    q = (p + 0.5) * float(scale) - 0.5  # pixel centres onto pixel centres
    missing = ~torch.isfinite(q).all(dim=-1)  # (..., C)
    q = torch.where(missing[..., None], torch.zeros_like(q), q)
    ys = torch.arange(h, dtype=torch.float32)
    xs = torch.arange(w, dtype=torch.float32)
    gy = torch.exp(-(ys - q[..., 1:2]) ** 2 / (2 * sigma ** 2))  # (..., C, h)
    gx = torch.exp(-(xs - q[..., 0:1]) ** 2 / (2 * sigma ** 2))  # (..., C, w)
    maps = gy[..., :, None] * gx[..., None, :]
    return maps * (~missing)[..., None, None].to(maps.dtype)


# ------------------------------------------------------------------------------------------------ deformable conv


def modulated_deform_conv(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor | None, groups: int) -> torch.Tensor:
    """DCNv2 (Eq. 2) with ``groups`` deformable groups (EDVR: 8), 3x3, stride 1, padding 1.

    ``offset`` (N, 2·G·K, H, W) group-major, within a group torchvision's layout ([dy, dx] per kernel location);
    ``mask`` (N, G·K, H, W). Input channel group g is sampled with the offsets and mask of group g. On CUDA with
    torchvision importable its kernel takes all groups at once; otherwise :func:`facedeblur.models.layers.deform_conv2d`
    (pure PyTorch) runs once per group and the results are summed, which is the same sum over input channels.
    """
    c = x.shape[1]
    if groups < 1 or c % groups:
        raise ValueError(f"{c} channels do not split into {groups} deformable groups")
    k = weight.shape[-2] * weight.shape[-1]
    if offset.shape[1] != 2 * groups * k or mask.shape[1] != groups * k:
        raise ValueError(f"offset/mask have {offset.shape[1]}/{mask.shape[1]} channels; {groups} groups of a "
                         f"{weight.shape[-2]}x{weight.shape[-1]} kernel need {2 * groups * k}/{groups * k}")
    tv = _torchvision_deform()
    if tv is not None and x.is_cuda and x.dtype in (torch.float32, torch.float16):
        return tv(x, offset, weight, bias, stride=1, padding=1, dilation=1, mask=mask)
    if groups == 1:
        return deform_conv2d(x, offset, weight, mask, bias)
    cs = c // groups
    out: torch.Tensor | None = None
    for g in range(groups):
        y = deform_conv2d(x[:, g * cs:(g + 1) * cs], offset[:, 2 * k * g:2 * k * (g + 1)],
                          weight[:, g * cs:(g + 1) * cs], mask[:, k * g:k * (g + 1)], bias if g == 0 else None)
        out = y if out is None else out + y
    assert out is not None
    return out


class DCNPack(nn.Module):
    """A modulated deformable 3x3 conv whose offsets and masks a zero-initialised 3x3 conv computes from offset
    features (EDVR's DCN pack; FineNet Eq. 4, 6, 8: ``DConv(F, ΔP)``)."""

    def __init__(self, channels: int, groups: int, offset_channels: int | None = None) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"DCNPack: {channels} channels do not split into {groups} deformable groups")
        self.groups = groups
        self.k = 9
        self.offset = _conv(offset_channels or channels, 3 * groups * self.k)
        nn.init.zeros_(self.offset.weight)  # EDVR: zero offsets, mask sigmoid(0) = 0.5 at init
        nn.init.zeros_(self.offset.bias)
        self.weight = nn.Parameter(torch.empty(channels, channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's default

    def offsets(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(offsets (N, 2·G·9, H, W), masks (N, G·9, H, W)) from offset features ``feat``."""
        o = self.offset(feat)
        n = 2 * self.groups * self.k
        return o[:, :n], torch.sigmoid(o[:, n:])

    def forward(self, x: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offsets(feat)
        return modulated_deform_conv(x, offset, mask.to(x.dtype), self.weight, self.bias, self.groups)


# ------------------------------------------------------------------------------------------------ blocks


class ResBlock(nn.Module):
    """EDVR's residual block without normalisation: ``x + conv(relu(conv(x)))``, Kaiming init x 0.1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels)
        self.conv2 = _conv(channels, channels)
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight)
            with torch.no_grad():
                conv.weight.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def _blocks(channels: int, n: int) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(channels) for _ in range(n)])


class FOC(nn.Module):
    """Face-aware offset calculation (§3.2, Fig. 4): concatenated inputs -> offset features (C channels).

    Inputs (concatenated in the order given): the level's frame features (Eq. 3) or their fused conv (Eq. 5, 7),
    the upsampled offset features of the coarser level (Eq. 5, 7) and, in the full FOC of the top level, the
    heatmap features of the frames (Eq. 7). Structure (inferred, Fig. 4 is not in the text): a 3x3 conv, an
    encoder-decoder with ``depth`` stride-2 levels and ``blocks`` residual blocks at its bottom, bilinear
    up-sampling fused with the skip by a 3x3 conv, a 3x3 output conv. Full FOC: depth 2; simplified: depth 1.
    """

    def __init__(self, in_channels: int, channels: int, depth: int = 1, blocks: int = 1) -> None:
        super().__init__()
        self.inp = _conv(in_channels, channels)
        self.down = nn.ModuleList([_conv(channels, channels, stride=2) for _ in range(depth)])
        self.mid = _blocks(channels, blocks)
        self.fuse = nn.ModuleList([_conv(2 * channels, channels) for _ in range(depth)])
        self.out = _conv(channels, channels)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x = _act(self.inp(torch.cat(inputs, dim=1)))
        skips = []
        for down in self.down:
            skips.append(x)
            x = _act(down(x))
        x = self.mid(x)
        for fuse, skip in zip(self.fuse, reversed(skips)):
            x = _act(fuse(torch.cat([_up(x, skip.shape[-2:]), skip], dim=1)))
        return _act(self.out(x))


class HeatmapFeatures(nn.Module):
    """Heatmap feature extraction (§3.2: heatmaps are converted to feature maps): two 3x3 convs + LeakyReLU."""

    def __init__(self, heatmap_channels: int, width: int) -> None:
        super().__init__()
        self.conv1 = _conv(heatmap_channels, width)
        self.conv2 = _conv(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return _act(self.conv2(_act(self.conv1(h))))


class PreDeblur(nn.Module):
    """Per-frame pre-deblurring to 1/4 resolution (§4.2's first stage, EDVR's pre-deblur idea; layers ours): a
    stride-2 stem to 1/4, then a residual pyramid at 1/4, 1/8, 1/16, fused coarse to fine by addition."""

    def __init__(self, width: int, blocks: int = 2) -> None:
        super().__init__()
        self.stem = nn.ModuleList([_conv(3, width), _conv(width, width, stride=2), _conv(width, width, stride=2)])
        self.down2 = _conv(width, width, stride=2)
        self.down3 = _conv(width, width, stride=2)
        self.rb3 = ResBlock(width)
        self.rb2 = _blocks(width, 2)
        self.rb1 = _blocks(width, 2)
        self.out = _blocks(width, blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.stem:
            x = _act(conv(x))
        f2 = _act(self.down2(x))
        f3 = self.rb3(_act(self.down3(f2)))
        f2 = self.rb2[1](self.rb2[0](f2) + _up(f3, f2.shape[-2:]))
        f1 = self.rb1[1](self.rb1[0](x) + _up(f2, x.shape[-2:]))
        return self.out(f1)


class FrameFeatures(nn.Module):
    """Per-frame feature pyramid (§3.3, Fig. 7): down-sampling to 1/4 (pre-deblur, or EDVR's hr_in stem: a conv and
    two stride-2 convs), ``blocks`` residual blocks (Level 1), then Levels 2 and 3 by a stride-2 conv + a conv each."""

    def __init__(self, width: int, blocks: int, predeblur: bool) -> None:
        super().__init__()
        self.pre = PreDeblur(width) if predeblur else None
        self.stem = None if predeblur else nn.ModuleList(
            [_conv(3, width), _conv(width, width, stride=2), _conv(width, width, stride=2)])
        self.body = _blocks(width, blocks)
        self.l2 = nn.ModuleList([_conv(width, width, stride=2), _conv(width, width)])
        self.l3 = nn.ModuleList([_conv(width, width, stride=2), _conv(width, width)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.pre is not None:
            f1 = self.pre(x)
        else:
            assert self.stem is not None
            f1 = x
            for conv in self.stem:
                f1 = _act(conv(f1))
        f1 = self.body(f1)
        f2 = _act(self.l2[1](_act(self.l2[0](f1))))
        f3 = _act(self.l3[1](_act(self.l3[0](f2))))
        return [f1, f2, f3]


class _Pyramid(nn.Module):
    """Shared structure of the alignment (Eq. 3-8) and interpolation (§3.4) modules: ``n_in`` frames' features per
    level, the deformed one being ``target`` of them; levels 3 -> 1 with FOCs, then EDVR's cascading DCN."""

    def __init__(self, width: int, groups: int, n_in: int, heat_width: int, cascade_in: int) -> None:
        super().__init__()
        c = width
        self.n_in = n_in
        # Level 3 (bottom): ΔP3 = FOC(F..3) (Eq. 3), A3 = DConv (Eq. 4)
        self.foc3 = FOC(n_in * c, c, depth=1, blocks=1)
        self.dcn3 = DCNPack(c, groups)
        # Level 2: ΔP2 = FOC(Conv(F..2), ΔP3↑) (Eq. 5), A2 = Conv(DConv ⊕ A3↑) (Eq. 6)
        self.cat2 = _conv(n_in * c, c)
        self.foc2 = FOC(2 * c, c, depth=1, blocks=1)
        self.dcn2 = DCNPack(c, groups)
        self.fuse2 = _conv(2 * c, c)
        # Level 1 (top): ΔP1 = FOC(Conv(F..1), ΔP2↑, H..) (Eq. 7), A1 = Conv(DConv ⊕ A2↑) (Eq. 8)
        self.cat1 = _conv(n_in * c, c)
        self.foc1 = FOC(2 * c + n_in * heat_width, c, depth=2, blocks=2)
        self.dcn1 = DCNPack(c, groups)
        self.fuse1 = _conv(2 * c, c)
        # cascade (EDVR): offsets from two convs, one more DCN of the Level-1 result
        self.cas1 = _conv(cascade_in * c, c)
        self.cas2 = _conv(c, c)
        self.cas_dcn = DCNPack(c, groups)
        self.heat_width = heat_width

    def run(self, pyr: list[list[torch.Tensor]], target: int, heat: list[torch.Tensor] | None,
            cascade_extra: list[torch.Tensor]) -> torch.Tensor:
        """``pyr[i]`` = [L1, L2, L3] features of input frame i; ``heat`` = heatmap features per input frame (or
        None: no landmark input); returns the deformed Level-1 features of frame ``target``."""
        l3 = [p[2] for p in pyr]
        o3 = self.foc3(*l3)
        a3 = _act(self.dcn3(l3[target], o3))
        l2 = [p[1] for p in pyr]
        size2 = l2[0].shape[-2:]
        o2 = self.foc2(_act(self.cat2(torch.cat(l2, dim=1))), 2 * _up(o3, size2))
        a2 = _act(self.fuse2(torch.cat([self.dcn2(l2[target], o2), _up(a3, size2)], dim=1)))
        l1 = [p[0] for p in pyr]
        size1 = l1[0].shape[-2:]
        extra = list(heat) if (heat is not None and self.heat_width) else []
        o1 = self.foc1(_act(self.cat1(torch.cat(l1, dim=1))), 2 * _up(o2, size1), *extra)
        a1 = self.fuse1(torch.cat([self.dcn1(l1[target], o1), _up(a2, size1)], dim=1))  # no activation (EDVR)
        oc = _act(self.cas2(_act(self.cas1(torch.cat([a1, *cascade_extra], dim=1)))))
        return _act(self.cas_dcn(a1, oc))


class PCDAlign(_Pyramid):
    """Enhancement alignment (§3.3, Eq. 3-8, Fig. 5, 7): frame t' aligned to the reference (centre) frame t at three
    levels with FOC offsets (landmarks at Level 1), then the cascade (offsets from cat(A1, F_t^1), EDVR)."""

    def __init__(self, width: int, groups: int, heat_width: int = 0) -> None:
        super().__init__(width, groups, n_in=2, heat_width=heat_width, cascade_in=2)

    def forward(self, nbr: list[torch.Tensor], ref: list[torch.Tensor], heat_nbr: torch.Tensor | None = None,
                heat_ref: torch.Tensor | None = None) -> torch.Tensor:
        heat = None if heat_nbr is None or heat_ref is None else [heat_nbr, heat_ref]
        return self.run([nbr, ref], 0, heat, [ref[0]])


class PCDInterpolate(_Pyramid):
    """Interpolation module (§3.4, Fig. 6): from frames [a, b, c] (forward: t-2, t-1, t+1; backward: t+2, t+1, t-1)
    the middle frame b is deformed to the missing time t; same pyramid and FOCs as :class:`PCDAlign`, the cascade's
    offsets read cat(result, F_a, F_b, F_c) (inferred)."""

    def __init__(self, width: int, groups: int, heat_width: int = 0) -> None:
        super().__init__(width, groups, n_in=3, heat_width=heat_width, cascade_in=4)

    def forward(self, a: list[torch.Tensor], b: list[torch.Tensor], c: list[torch.Tensor],
                heat: list[torch.Tensor] | None = None) -> torch.Tensor:
        return self.run([a, b, c], 1, heat, [a[0], b[0], c[0]])


class TSAFusion(nn.Module):
    """EDVR's temporal and spatial attention fusion (REFERENCE_FACTS §4.1): per-pixel similarity of each aligned
    frame's embedding to the reference's -> sigmoid temporal weights; a 1x1 fusion of the weighted frames; a
    two-level spatial attention pyramid; output ``fused * 2·sigmoid(attn) + attn_add``."""

    def __init__(self, width: int, frames: int = FRAMES, centre: int = CENTRE) -> None:
        super().__init__()
        c = width
        self.centre = centre
        self.emb_ref = _conv(c, c)
        self.emb = _conv(c, c)
        self.fusion = _conv(frames * c, c, 1)
        self.sa1 = _conv(frames * c, c, 1)
        self.sa2 = _conv(2 * c, c, 1)
        self.sa_l1 = _conv(c, c, 1)
        self.sa_l2 = _conv(2 * c, c)
        self.sa_l3 = _conv(c, c)
        self.sa3 = _conv(c, c)
        self.sa4 = _conv(c, c, 1)
        self.sa5 = _conv(c, c)
        self.add1 = _conv(c, c, 1)
        self.add2 = _conv(c, c, 1)

    @staticmethod
    def _pools(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.max_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2, 1)], dim=1)

    def forward(self, aligned: torch.Tensor) -> torch.Tensor:
        """``aligned`` (N, T, C, H, W) -> fused (N, C, H, W)."""
        n, t, c, h, w = aligned.shape
        ref = self.emb_ref(aligned[:, self.centre])
        emb = self.emb(aligned.reshape(n * t, c, h, w)).view(n, t, c, h, w)
        prob = torch.sigmoid((emb * ref.unsqueeze(1)).sum(dim=2, keepdim=True))  # (N, T, 1, H, W)
        weighted = (aligned * prob).reshape(n, t * c, h, w)
        fused = _act(self.fusion(weighted))
        attn = _act(self.sa1(weighted))
        attn = _act(self.sa2(self._pools(attn)))  # 1/2
        lvl = _act(self.sa_l1(attn))
        lvl = _act(self.sa_l2(self._pools(lvl)))  # 1/4
        lvl = _up(_act(self.sa_l3(lvl)), attn.shape[-2:])
        attn = _act(self.sa3(attn)) + lvl
        attn = _act(self.sa4(attn))
        attn = self.sa5(_up(attn, (h, w)))
        add = self.add2(_act(self.add1(attn)))
        return fused * torch.sigmoid(attn) * 2 + add


class Reconstruction(nn.Module):
    """Reconstruction (§3.3; EDVR): residual blocks at 1/4 resolution, then two x2 pixel-shuffle steps and two
    convs to an RGB residual at full resolution."""

    def __init__(self, width: int, blocks: int) -> None:
        super().__init__()
        hr = min(width, 64)
        self.body = _blocks(width, blocks)
        self.up1 = _conv(width, 4 * width)
        self.up2 = _conv(width, 4 * hr)
        self.hr = _conv(hr, hr)
        self.last = _conv(hr, 3)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        x = self.body(f)
        x = _act(F.pixel_shuffle(self.up1(x), 2))
        x = _act(F.pixel_shuffle(self.up2(x), 2))
        return self.last(_act(self.hr(x)))


class EnhancementBranch(nn.Module):
    """§3.3: features of the 5 frames, every frame aligned to the centre frame (PCD + FOC; the centre too, as in
    EDVR), TSA fusion (or a 1x1 conv with ``tsa=False``), reconstruction + the blurry centre frame."""

    def __init__(self, width: int, groups: int, extract_blocks: int, recon_blocks: int, predeblur: bool, tsa: bool,
                 heatmap_channels: int, heatmap_width: int) -> None:
        super().__init__()
        self.features = FrameFeatures(width, extract_blocks, predeblur)
        self.heat = HeatmapFeatures(heatmap_channels, heatmap_width) if heatmap_channels else None
        self.align = PCDAlign(width, groups, heatmap_width if heatmap_channels else 0)
        self.fusion: nn.Module = TSAFusion(width) if tsa else _conv(FRAMES * width, width, 1)
        self.tsa = tsa
        self.recon = Reconstruction(width, recon_blocks)

    def forward(self, x: torch.Tensor, heatmaps: torch.Tensor | None) -> torch.Tensor:
        n, t, _, h, w = x.shape
        pyr = self.features(x.reshape(n * t, 3, h, w))  # [L1, L2, L3], each (N*T, C, ., .)
        ref = [p.view(n, t, *p.shape[1:])[:, CENTRE:CENTRE + 1].expand(-1, t, -1, -1, -1).reshape(p.shape)
               for p in pyr]
        hn = hr = None
        if self.heat is not None and heatmaps is not None:
            hf = self.heat(heatmaps.reshape(n * t, *heatmaps.shape[2:]))
            hn = hf
            hr = hf.view(n, t, *hf.shape[1:])[:, CENTRE:CENTRE + 1].expand(-1, t, -1, -1, -1).reshape(hf.shape)
        aligned = self.align(pyr, ref, hn, hr)
        aligned = aligned.reshape(n, t, *aligned.shape[1:])
        fused = self.fusion(aligned) if self.tsa else _act(self.fusion(aligned.flatten(1, 2)))
        return x[:, CENTRE] + self.recon(fused)


class InterpolationBranch(nn.Module):
    """§3.4: the centre frame is missing; forward ``[t-2, t-1, t+1]`` and backward ``[t+2, t+1, t-1]``
    interpolations (one module, shared weights), fused by a 1x1 conv, reconstructed, + the mean of t-1 and t+1."""

    def __init__(self, width: int, groups: int, extract_blocks: int, recon_blocks: int, predeblur: bool,
                 heatmap_channels: int, heatmap_width: int) -> None:
        super().__init__()
        self.features = FrameFeatures(width, extract_blocks, predeblur)
        self.heat = HeatmapFeatures(heatmap_channels, heatmap_width) if heatmap_channels else None
        self.interp = PCDInterpolate(width, groups, heatmap_width if heatmap_channels else 0)
        self.fusion = _conv(2 * width, width, 1)
        self.recon = Reconstruction(width, recon_blocks)

    def forward(self, x: torch.Tensor, heatmaps: torch.Tensor | None) -> torch.Tensor:
        n, _, _, h, w = x.shape
        idx = [0, 1, 3, 4]  # t-2, t-1, t+1, t+2: the centre frame is never read
        pyr = self.features(x[:, idx].reshape(n * 4, 3, h, w))
        per = [p.view(n, 4, *p.shape[1:]) for p in pyr]

        def pick(fwd: int, bwd: int) -> list[torch.Tensor]:  # forward and backward triples stacked on the batch
            return [torch.cat([p[:, fwd], p[:, bwd]], dim=0) for p in per]

        # forward [t-2, t-1, t+1] deforms t-1; backward [t+2, t+1, t-1] deforms t+1 (positions in idx: 0,1,2 / 3,2,1)
        a, b, c = pick(0, 3), pick(1, 2), pick(2, 1)
        heat = None
        if self.heat is not None and heatmaps is not None:
            hf = self.heat(heatmaps[:, idx].reshape(n * 4, *heatmaps.shape[2:])).view(n, 4, -1, *heatmaps.shape[-2:])
            heat = [torch.cat([hf[:, i], hf[:, j]], dim=0) for i, j in ((0, 3), (1, 2), (2, 1))]
        out = self.interp(a, b, c, heat)
        fused = _act(self.fusion(torch.cat([out[:n], out[n:]], dim=1)))
        return 0.5 * (x[:, CENTRE - 1] + x[:, CENTRE + 1]) + self.recon(fused)


class _ResnetBlock(nn.Module):
    """reflect-pad, 3x3 conv, ReLU, reflect-pad, 3x3 conv, + identity (CycleGAN's block, no normalisation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3)
        self.conv2 = nn.Conv2d(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(F.pad(x, (1, 1, 1, 1), mode="reflect")))
        return x + self.conv2(F.pad(y, (1, 1, 1, 1), mode="reflect"))


class CombinationModule(nn.Module):
    """§3.5: "two downsampling layers, followed by nine ResNet blocks and two upsampling layers" on the two branch
    images; ``(I_en + I_in) / 2 + residual`` with the last conv zero-initialised (inferred)."""

    def __init__(self, width: int = 64, blocks: int = 9) -> None:
        super().__init__()
        w = width
        self.inp = nn.Conv2d(6, w, 7)
        self.down1 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1)
        self.blocks = nn.Sequential(*[_ResnetBlock(4 * w) for _ in range(blocks)])
        self.up1 = nn.ConvTranspose2d(4 * w, 2 * w, 3, stride=2, padding=1, output_padding=1)
        self.up2 = nn.ConvTranspose2d(2 * w, w, 3, stride=2, padding=1, output_padding=1)
        self.out = nn.Conv2d(w, 3, 7)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, enh: torch.Tensor, itp: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.inp(F.pad(torch.cat([enh, itp], dim=1), (3, 3, 3, 3), mode="reflect")))
        x = F.relu(self.down2(F.relu(self.down1(x))))
        x = self.blocks(x)
        x = F.relu(self.up2(F.relu(self.up1(x))))
        return 0.5 * (enh + itp) + self.out(F.pad(x, (3, 3, 3, 3), mode="reflect"))


# ------------------------------------------------------------------------------------------------ the network


class FineNet(nn.Module):
    """FineNet (§3): enhancement + interpolation branches and their late combination; see the module docstring.

    Args:
        width: feature width C of both branches. Paper: silent; EDVR-L deblur: 128.
        deform_groups: deformable groups of every DCN. EDVR: 8.
        extract_blocks, recon_blocks: residual blocks of feature extraction (Level 1) and reconstruction.
            EDVR-L: 5 and 40.
        predeblur: the per-frame pre-deblur module before feature extraction (§4.2 first stage; EDVR-L deblur).
        tsa: EDVR's TSA fusion in the enhancement branch (False: a 1x1 conv over the concatenated frames).
        heatmap_channels: landmark heatmaps per frame fed to the top-level FOC (68: FAN/dlib points, 5: MTCNN
            points, 0: no landmark input, the simplified FOC at every level).
        heatmap_width: channels of the heatmap features.
        heatmap_sigma: Gaussian sigma of :meth:`heatmaps_from_landmarks`, in feature pixels (1/4 of the input).
        combine_width, combine_blocks: the combination module (§3.5: nine blocks; width: CycleGAN's 64).
        branches: ``("enhancement", "interpolation")`` (FineNet), or one of them alone (the Table 3 ablation:
            that branch's image is the output and there is no combination module).

    ``forward(x, heatmaps=None, return_branches=False)``: ``x`` (N, 5, 3, H, W) in [0, 1], H and W multiples of
    :attr:`pad_multiple`; ``heatmaps`` (N, 5, heatmap_channels, h, w) at (H/4, W/4) or (H, W), None = zeros (the
    fallback). Returns the restored centre frame (N, 3, H, W); with ``return_branches`` also a dict of the branch
    images (``"enhancement"``, ``"interpolation"``) for the branch losses (Eq. 9-10).
    """

    #: H and W must be multiples of this (features at 1/4, two more pyramid / TSA halvings)
    pad_multiple = 16
    #: frames per input window
    frames = FRAMES

    def __init__(self, width: int = 128, deform_groups: int = 8, extract_blocks: int = 5, recon_blocks: int = 40,
                 predeblur: bool = True, tsa: bool = True, heatmap_channels: int = 68, heatmap_width: int = 32,
                 heatmap_sigma: float = 1.5, combine_width: int = 64, combine_blocks: int = 9,
                 branches: Sequence[str] = BRANCHES) -> None:
        super().__init__()
        branches = tuple(branches)
        if not branches or len(set(branches)) != len(branches) or not set(branches) <= set(BRANCHES):
            raise ValueError(f"FineNet branches must be a non-empty subset of {BRANCHES}, got {branches}")
        if width < 1 or deform_groups < 1 or width % deform_groups:
            raise ValueError(f"FineNet width {width} must be a positive multiple of deform_groups {deform_groups}")
        if heatmap_channels < 0 or (heatmap_channels and heatmap_width < 1):
            raise ValueError(f"FineNet needs heatmap_channels >= 0 and heatmap_width >= 1, got {heatmap_channels}, "
                             f"{heatmap_width}")
        self.branches = branches
        self.heatmap_channels = int(heatmap_channels)
        self.heatmap_sigma = float(heatmap_sigma)
        self.enhancement = EnhancementBranch(width, deform_groups, extract_blocks, recon_blocks, predeblur, tsa,
                                             heatmap_channels, heatmap_width) if "enhancement" in branches else None
        self.interpolation = InterpolationBranch(width, deform_groups, extract_blocks, recon_blocks, predeblur,
                                                 heatmap_channels, heatmap_width) \
            if "interpolation" in branches else None
        self.combine = CombinationModule(combine_width, combine_blocks) if len(branches) == 2 else None

    # ---------------------------------------------------------------------------------------- inputs

    def check_input(self, x: torch.Tensor) -> None:
        """:class:`~facedeblur.errors.InputError` unless ``x`` is (N, 5, 3, H, W) with H, W multiples of 16."""
        if not isinstance(x, torch.Tensor) or x.dim() != 5 or x.shape[1] != FRAMES or x.shape[2] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"FineNet takes (N, {FRAMES}, 3, H, W) windows of RGB frames in [0, 1] (frames t-2 .. "
                             f"t+2), got {shape}")
        h, w = x.shape[-2:]
        m = self.pad_multiple
        if h % m or w % m or h < m or w < m:
            raise InputError(f"FineNet needs H and W divisible by {m}, got {h}x{w}; pad the frames "
                             f"(facedeblur.load(...).restore_video pads for you)")

    def _heatmaps(self, heatmaps: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        """Heatmaps at the feature resolution (N, 5, P, H/4, W/4); zeros for None (the fallback); None when the
        network has no landmark input."""
        if not self.heatmap_channels:
            if heatmaps is not None:
                raise InputError("this FineNet has no landmark input (heatmap_channels = 0); drop heatmaps=")
            return None
        n, t, _, h, w = x.shape
        size = (h // 4, w // 4)
        if heatmaps is None:
            return x.new_zeros(n, t, self.heatmap_channels, *size)
        if not isinstance(heatmaps, torch.Tensor) or heatmaps.dim() != 5 or \
                tuple(heatmaps.shape[:3]) != (n, t, self.heatmap_channels):
            shape = tuple(heatmaps.shape) if isinstance(heatmaps, torch.Tensor) else type(heatmaps).__name__
            raise InputError(f"heatmaps must be (N, {t}, {self.heatmap_channels}, h, w) for frames of shape "
                             f"{tuple(x.shape)}, got {shape}")
        hm = heatmaps.to(x.dtype)
        if tuple(hm.shape[-2:]) == (h, w):
            hm = F.avg_pool2d(hm.reshape(n * t, -1, h, w), 4).view(n, t, -1, *size)
        elif tuple(hm.shape[-2:]) != size:
            raise InputError(f"heatmaps must be at the feature resolution {size[0]}x{size[1]} or the input's "
                             f"{h}x{w}, got {tuple(hm.shape[-2:])}")
        return hm

    def heatmaps_from_landmarks(self, points: torch.Tensor | np.ndarray, image_size: Sequence[int]) -> torch.Tensor:
        """Heatmaps for :meth:`forward` from landmarks (N, 5, P, 2) in input pixels (x, y); P = 68 or 5 (NaN where
        a frame's detection failed), ``image_size`` = (H, W) of the frames (:func:`landmark_heatmaps` at 1/4)."""
        if not self.heatmap_channels:
            raise InputError("this FineNet has no landmark input (heatmap_channels = 0)")
        h, w = (int(v) for v in image_size)
        return landmark_heatmaps(points, (h // 4, w // 4), self.heatmap_sigma, self.heatmap_channels, scale=0.25)

    # ---------------------------------------------------------------------------------------- forward

    def forward(self, x: torch.Tensor, heatmaps: torch.Tensor | None = None, return_branches: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.check_input(x)
        hm = self._heatmaps(heatmaps, x)
        outs: dict[str, torch.Tensor] = {}
        if self.enhancement is not None:
            outs["enhancement"] = self.enhancement(x, hm)
        if self.interpolation is not None:
            outs["interpolation"] = self.interpolation(x, hm)
        if self.combine is not None:
            final = self.combine(outs["enhancement"], outs["interpolation"])
        else:
            final = next(iter(outs.values()))
        return (final, outs) if return_branches else final


@register_model("finenet", task="video", adapter=FINENET_ADAPTER)
def finenet(**kwargs) -> FineNet:
    """FineNet; kwargs as in :class:`FineNet` (zoo configs set them per variant)."""
    return FineNet(**kwargs)
