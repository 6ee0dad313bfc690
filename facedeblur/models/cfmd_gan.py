"""CFMD-GAN: Continuous Facial Motion Deblurring (Lee, Han, Heo; IEEE Access 2022, arXiv 2207.06626).

One blurry face ``b`` and a moment control factor ``u`` in [0, 1] give the sharp moment ``G(b, u)``
(paper Eq. 7). G = mapping network G_M (§4.2.1) + a MIMO-UNet deblurring network G_R whose residual
blocks are ContAda blocks (§4.2.2): CADC (control-adaptive modulated deformable conv) and CACA
(control-adaptive channel attention). D is a conditional U-Net discriminator with a global head
D_enc, a per-pixel head D_dec and an auxiliary per-pixel u regressor Q (§4.2.3).

Where the paper and the authors' released code (``dolphin0104/CFMDGAN``) differ, we follow the paper
unless it is silent or the difference is fixed by this project's contract; every case is listed in
``docs/models/cfmd-gan.md`` and here:

* DCN mask: paper §4.2.2 says ``sigmoid`` (range [0, 1], initial 0.5, after DCNv2); the code uses
  ``2*sigmoid`` (initial 1.0). Default ``mask_scale=1.0`` (paper); the official-checkpoint importer
  sets ``mask_scale=2.0`` so imported weights compute what they were trained to compute.
* Mapping width: paper says ``u_f`` has 64 channels; the code's trunk is 32 wide with per-level 1x1
  heads (32/64/128). We keep 32 (``mapping_width``) because the paper variant must match the released
  weights and their 9,246,323 parameters; ``mapping_width=64`` gives the text's reading.
* CADC and CACA each fuse [features, u_f] with their own 1x1 conv (as in the code and as the
  parameter count requires); the text could be read as one shared fusion ``F_u``.
* Activations: LeakyReLU(0.2) everywhere (paper: G_M and ContAda; silent on SCM/FAM/AFF, code: LReLU).
* Resampling: nearest for the input pyramid and AFF feature rescaling (MIMO-UNet); the control map is
  spatially constant, so the paper's bilinear resize of ``u_f`` equals the code's nearest one. We
  compute it at 1x1 and fold the control half of every 1x1 fusion conv into a per-channel bias:
  mathematically identical, and it saves ~30% of the CPU time.

Not in the paper: an optional do-no-harm :class:`ResidualGate` on the full-resolution output (``residual_gate``),
calibrated after training on training pairs (:mod:`facedeblur.train.methods.cfmd_gan_calibrate`). The network is
called through :data:`CFMD_ADAPTER` (``G(b, u)``, three outputs, the last at full resolution); its training wrapper
is :class:`facedeblur.train.methods.cfmd_gan.CFMDGANMethod`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ._registry import InferenceAdapter, register_model
from .layers import DeformConv2d, SqueezeExcite, exporting, lrelu

__all__ = ["CFMDGenerator", "CFMDDiscriminator", "cfmd_gan", "cfmd_gan_discriminator", "CFMD_ADAPTER", "ResidualGate",
           "GATE_FEATURES", "input_sharpness", "uncalibrated_state"]

#: how CFMD-GAN's generator is called: ``G(b, u)``, outputs ``[1/4, 1/2, 1]`` (the last is the restored image)
CFMD_ADAPTER = InferenceAdapter(control=True, multiscale=True)


def _conv(cin: int, cout: int, k: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias)


class MappingNetwork(nn.Module):
    """G_M (§4.2.1): 8 layers of 1x1 conv + LReLU on the constant u map, then per-level 1x1 heads.

    Returns control vectors (N, C_l) for the encoder and decoder levels l = 0, 1, 2 (the map is
    spatially constant, so a vector per level carries all of it).
    """

    def __init__(self, width: int = 32, layers: int = 8, level_widths: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        self.trunk = nn.ModuleList([nn.Conv2d(1 if i == 0 else width, width, 1) for i in range(layers)])
        self.enc_heads = nn.ModuleList([nn.Conv2d(width, c, 1) for c in level_widths])
        self.dec_heads = nn.ModuleList([nn.Conv2d(width, c, 1) for c in level_widths])

    @torch.no_grad()
    def kaiming_init_(self) -> "MappingNetwork":
        """Re-initialise so that u reaches the control vectors (an init choice; the paper is silent).

        With PyTorch's default init each of the 8 layers shrinks the u-dependent part of the signal by about
        sqrt(3) while the biases stay, so at init ``ctrl(u=1)`` differs from ``ctrl(u=0)`` by ~0.3 % and u is
        all but invisible to the generator; gradients towards using u are equally small. Here layer 1 gets
        weights N(0, 1) and biases U(-1, 0) (its LReLU kinks fall inside u's range [0, 1]); the other layers
        and heads get He-normal weights for LReLU(0.2) and zero biases, so the variation over u keeps its size
        (the controls of u = 0 and u = 1 differ by about their own norm).
        """
        first = self.trunk[0]
        nn.init.normal_(first.weight, 0.0, 1.0)
        nn.init.uniform_(first.bias, -1.0, 0.0)
        for conv in [*self.trunk[1:], *self.enc_heads, *self.dec_heads]:
            nn.init.kaiming_normal_(conv.weight, a=0.2, nonlinearity="leaky_relu")
            nn.init.zeros_(conv.bias)
        return self

    def forward(self, u: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        z = u.view(-1, 1, 1, 1)
        for conv in self.trunk:
            z = lrelu(conv(z))
        enc = [lrelu(h(z)).flatten(1) for h in self.enc_heads]
        dec = [lrelu(h(z)).flatten(1) for h in self.dec_heads]
        return enc, dec


class ControlFusion(nn.Module):
    """1x1 conv (no bias) on concat([features, u_f]) -> C; the constant u_f half becomes a bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, 2 * channels, 1, 1))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor, ctrl: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        w_feat = self.weight[:, :c].to(x.dtype).contiguous()  # contiguous: oneDNN instead of the slow path
        bias = ctrl.to(x.dtype) @ self.weight[:, c:, 0, 0].t().to(x.dtype)  # (N, C)
        if exporting():  # one graph for every batch size (the branches below specialise on n and layout)
            return F.conv2d(x, w_feat) + bias[:, :, None, None]
        n, _, h, w = x.shape
        if x.is_contiguous(memory_format=torch.channels_last):
            # a 1x1 conv on channels-last data is one GEMM (N, HW, C) @ (C, C) with the bias fused (baddbmm)
            y = torch.baddbmm(bias.unsqueeze(1), x.permute(0, 2, 3, 1).reshape(n, h * w, c),
                              w_feat.view(-1, c).t().expand(n, c, -1))
            return y.view(n, h, w, -1).permute(0, 3, 1, 2)
        if n == 1:  # the bias rides along in the conv (no extra pass)
            return F.conv2d(x, w_feat, bias[0])
        return F.conv2d(x, w_feat) + bias[:, :, None, None]


class CADC(nn.Module):
    """Control-adaptive deformable convolution (§4.2.2, Eq. 10).

    Offsets (2K channels) and modulation (K channels) come from the control-fused features ``F_u``,
    both zero-initialised; the 3x3 modulated deformable conv then samples ``F_u``.
    """

    def __init__(self, channels: int, mask_scale: float = 1.0) -> None:
        super().__init__()
        self.mask_scale = mask_scale
        self.fuse = ControlFusion(channels)
        self.offset = nn.Conv2d(channels, 18, 3, padding=1)
        self.mask = nn.Conv2d(channels, 9, 3, padding=1)
        for conv in (self.offset, self.mask):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.deform = DeformConv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor, ctrl: torch.Tensor) -> torch.Tensor:
        f = self.fuse(x, ctrl)
        # offset and mask convs read the same input: one conv with 2K + K outputs is one pass instead of two
        k2 = self.offset.out_channels
        om = F.conv2d(f, torch.cat([self.offset.weight, self.mask.weight]).to(f.dtype),
                      torch.cat([self.offset.bias, self.mask.bias]).to(f.dtype), padding=self.offset.padding)
        mask = torch.sigmoid(om[:, k2:])
        if self.mask_scale != 1.0:
            mask = mask * self.mask_scale
        return self.deform(f, om[:, :k2], mask)


class CACA(nn.Module):
    """Control-adaptive channel attention (§4.2.2): fuse [F_dc, u_f] by 1x1, then SE (reduction 4)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.fuse = ControlFusion(channels)
        self.se = SqueezeExcite(channels, reduction)

    def forward(self, x: torch.Tensor, ctrl: torch.Tensor) -> torch.Tensor:
        g = self.fuse(x, ctrl)
        return g * self.se(g)


class ContAdaBlock(nn.Module):
    """ContAda residual block (§4.2.2, Fig. 6): 3x3 conv + LReLU -> CADC -> CACA, plus the identity."""

    def __init__(self, channels: int, mask_scale: float = 1.0, reduction: int = 4) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels, 3)
        self.cadc = CADC(channels, mask_scale)
        self.caca = CACA(channels, reduction)

    def forward(self, x: torch.Tensor, ctrl: torch.Tensor) -> torch.Tensor:
        d = self.cadc(F.leaky_relu(self.conv1(x), 0.2, inplace=True), ctrl)
        g = self.caca.fuse(d, ctrl)
        return torch.addcmul(x, g, self.caca.se(g))  # x + CACA(d), one pass


class ContAdaStage(nn.ModuleList):
    """An encoder/decoder block EB_n / DB_n: ``num_res`` ContAda blocks sharing one control vector."""

    def __init__(self, channels: int, num_res: int, mask_scale: float, reduction: int) -> None:
        super().__init__([ContAdaBlock(channels, mask_scale, reduction) for _ in range(num_res)])

    def forward(self, x: torch.Tensor, ctrl: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for block in self:
            x = block(x, ctrl)
        return x


class SCM(nn.Module):
    """MIMO-UNet shallow convolutional module on the down-sampled image (Cho et al. 2021, §3)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c4, c2 = channels // 4, channels // 2
        self.body = nn.ModuleList([_conv(3, c4, 3), _conv(c4, c2, 1), _conv(c2, c2, 3), _conv(c2, channels - 3, 1)])
        self.merge = _conv(channels, channels, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        z = img
        for conv in self.body:
            z = lrelu(conv(z))
        return self.merge(torch.cat([img, z], dim=1))


class FAM(nn.Module):
    """MIMO-UNet feature attention module: ``a + conv3x3(a * b)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.merge = _conv(channels, channels, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + self.merge(a * b)


class AFF(nn.Module):
    """MIMO-UNet asymmetric feature fusion: concat of all scales -> 1x1 + act -> 3x3."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.reduce = _conv(cin, cout, 1)
        self.conv = _conv(cout, cout, 3)

    def forward(self, *feats: torch.Tensor) -> torch.Tensor:
        return self.conv(lrelu(self.reduce(torch.cat(feats, dim=1))))


def _down(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=0.5, mode="nearest")


def _up(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="nearest")


# ----------------------------------------------------------------------------------------------- do-no-harm gate
# not part of the paper: an optional residual gate on the full-resolution output, fitted after training
# (facedeblur.train.methods.cfmd_gan_calibrate)


GATE_FEATURES = ("residual_rms", "input_sharpness")


def input_sharpness(x: torch.Tensor) -> torch.Tensor:
    """Scale-free sharpness of images ``x`` (N, C, H, W) in [0, 1], per image (N,).

    The mean Sobel gradient magnitude of the grey image over its central half (the face, for aligned face
    crops), divided by the same after a Gaussian blur of sigma 2 px. Blur removes fine gradients first, so the
    ratio is lower for blurred images whatever their contrast. On 120 CFMD-GAN training windows of
    ``../shared/data`` its rank correlation with the blurry input's PSNR is +0.60, but on the 358 windows of
    the validation identities +0.06 (``benchmarks/cfmd_diagnostics.py``, session 3): across people it separates
    little.
    """
    g = x.float().mean(dim=1, keepdim=True)
    radius = 6
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-t * t / 8.0)
    k = k / k.sum()
    blurred = F.conv2d(F.pad(g, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    blurred = F.conv2d(F.pad(blurred, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
    kernels = torch.stack([sobel, sobel.t()]).unsqueeze(1)  # d/dx, d/dy

    def grad_mean(img: torch.Tensor) -> torch.Tensor:
        gr = F.conv2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), kernels)
        mag = gr.pow(2).sum(dim=1).sqrt()
        if exporting():  # the same central half, with its bounds computed in the graph (dynamic image size)
            return _central_mean(mag)
        h, w = mag.shape[-2:]
        return mag[:, h // 4:h - h // 4, w // 4:w - w // 4].mean(dim=(1, 2))

    return grad_mean(g) / grad_mean(blurred).clamp_min(1e-6)


def _central_mean(mag: torch.Tensor) -> torch.Tensor:
    """Mean of ``mag`` (N, H, W) over rows ``[H//4, H - H//4)`` and columns ``[W//4, W - W//4)``, with the bounds
    computed from the tensor's shape inside the graph (for export; eager code slices)."""
    def inside(idx: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        q = torch.div(size, 4, rounding_mode="floor")
        return ((idx >= q) & (idx < size - q)).to(mag.dtype)

    shape = torch._shape_as_tensor(mag)
    rows = torch.ones_like(mag[0, :, 0], dtype=torch.int64).cumsum(0) - 1
    cols = torch.ones_like(mag[0, 0, :], dtype=torch.int64).cumsum(0) - 1
    sel = inside(rows, shape[1]).view(1, -1, 1) * inside(cols, shape[2]).view(1, 1, -1)
    return (mag * sel).sum(dim=(1, 2)) / sel.sum()


class ResidualGate(nn.Module):
    """Do-no-harm shrinkage of a restoration residual, calibrated after training (not a paper component).

    ``out = x + alpha(s, u) * r`` with ``r = model(x, u) - x`` and ``s`` a per-image feature: ``"residual_rms"``,
    the residual's root mean square (in [0, 1] units), or ``"input_sharpness"`` (:func:`input_sharpness` of the
    input: how sharp it already is). ``alpha`` is piecewise-linear over the control-factor knots ``u_knots`` (M,
    evenly spaced on [0, 1], for continuous models) and, per u knot, over its own feature ``knots`` (M, K);
    ``alphas`` (M, K) in [0, 1] are fitted on *training* pairs to maximise the mean PSNR gain of the 8-bit
    output (:func:`facedeblur.train.methods.cfmd_gan_calibrate.fit_gate`). Where an imperfect model's changes are
    mostly error (nearly sharp inputs; the far ends of the exposure, u near 0 or 1, which are harder to predict
    than its middle), the fit gives alpha < 1 and the input is left (nearly) alone. Identity (alpha = 1) until
    calibrated.
    """

    def __init__(self, num_knots: int = 8, num_u_knots: int = 1, feature: str = "residual_rms") -> None:
        super().__init__()
        if feature not in GATE_FEATURES:
            raise ValueError(f"unknown gate feature {feature!r}; choose one of {list(GATE_FEATURES)}")
        self.feature = feature
        self.enabled = True  # switched off while the gate is being calibrated
        self.register_buffer("knots", torch.linspace(0.0, 0.1, num_knots).repeat(num_u_knots, 1))
        self.register_buffer("u_knots", torch.linspace(0.0, 1.0, num_u_knots) if num_u_knots > 1
                             else torch.full((1,), 0.5))
        self.register_buffer("alphas", torch.ones(num_u_knots, num_knots))

    def features(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """The gate's feature per image (N,) for input ``x`` and residual ``r``."""
        if self.feature == "input_sharpness":
            return input_sharpness(x)
        return r.float().pow(2).mean(dim=(1, 2, 3)).sqrt()

    def alpha(self, s: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """alpha per image for feature values ``s`` (N,) at control factors ``u`` (N,) (bilinear in (u, s))."""
        knots, alphas = self.knots.float(), self.alphas.float()
        rows = torch.stack([_interp(s.float(), k, a) for k, a in zip(knots, alphas)], dim=1)  # (N, M)
        if len(self.u_knots) == 1:
            return rows[:, 0]
        if u is None:
            raise ValueError("this gate depends on u (num_u_knots > 1); pass the control factor")
        uk = self.u_knots.float()
        u = u.float().reshape(-1).expand_as(s).clamp(uk[0], uk[-1])
        i = _right_index(uk, u).clamp(1, len(uk) - 1)
        t = (u - uk[i - 1]) / (uk[i] - uk[i - 1]).clamp_min(1e-12)
        lo, hi = rows.gather(1, (i - 1)[:, None])[:, 0], rows.gather(1, i[:, None])[:, 0]
        return lo + t * (hi - lo)

    def forward(self, x: torch.Tensor, out: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        if not self.enabled:
            return out
        r = out - x
        return x + self.alpha(self.features(x, r), u).to(r.dtype).view(-1, 1, 1, 1) * r


def uncalibrated_state(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` with the buffers of every :class:`ResidualGate` of ``model`` replaced by ``model``'s own.

    A gate calibration belongs to the network it was fitted on (and its layout may have changed since), so
    weights loaded for training or recalibration drop it: the gates start as ``model``'s (identity until
    calibrated)."""
    prefixes = tuple(f"{name}." for name, m in model.named_modules() if isinstance(m, ResidualGate))
    if not prefixes:
        return dict(state)
    out = {k: v for k, v in state.items() if not k.startswith(prefixes)}
    out.update({k: v for k, v in model.state_dict().items() if k.startswith(prefixes)})
    return out


def _right_index(xp: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``torch.searchsorted(xp, x, right=True)`` for a short sorted 1-D ``xp``, written as a count of
    ``xp <= x`` so that it exports to ONNX (which has no searchsorted) with the same integer result."""
    return (x.unsqueeze(-1) >= xp).sum(dim=-1)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """numpy.interp for 1-D torch tensors (clamped at the ends)."""
    x = x.clamp(xp[0], xp[-1])
    i = _right_index(xp, x).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    t = (x - x0) / (x1 - x0).clamp_min(1e-12)
    return f0 + t * (f1 - f0)


# ----------------------------------------------------------------------------------------------- networks


class CFMDGenerator(nn.Module):
    """CFMD-GAN generator G = G_R(b, G_M(u)) (§4.2.1, Fig. 5), MIMO-UNet skeleton with ContAda blocks.

    Args:
        width: level-1 width C (levels C, 2C, 4C at 1, 1/2, 1/4 resolution). Paper: 32.
        num_res: ContAda blocks per encoder/decoder block. Paper: 8.
        mapping_width, mapping_layers: G_M trunk width and depth (paper: 8 layers; width see module doc).
        mask_scale: DCN modulation = mask_scale * sigmoid (paper 1.0; official code 2.0).
        se_reduction: CACA channel reduction (code: 4; paper silent).
        residual_gate: add a :class:`ResidualGate` on the full-resolution output
            (eval mode only; not in the paper; calibrated after training on training pairs).
        gate_u_knots: number of u knots of that gate (its alpha is piecewise-linear in u and in its feature).
        gate_feature: what the gate's alpha depends on besides u: ``"residual_rms"`` (the residual's size) or
            ``"input_sharpness"`` (how sharp the input already is; see :func:`input_sharpness`).

    ``forward(b, u)`` takes ``b`` (N, 3, H, W) in [0, 1] with H, W multiples of 4 and ``u`` (N,) or a
    float, and returns the three residual outputs ``[1/4, 1/2, 1]`` (MIMO-UNet multi-output).
    """

    pad_multiple = 4

    def __init__(self, width: int = 32, num_res: int = 8, mapping_width: int = 32, mapping_layers: int = 8,
                 mask_scale: float = 1.0, se_reduction: int = 4, residual_gate: bool = False,
                 gate_u_knots: int = 5, gate_feature: str = "residual_rms") -> None:
        super().__init__()
        c = width
        # not part of the paper: an optional, post-training-calibrated do-no-harm gate (see ResidualGate)
        self.gate = ResidualGate(num_u_knots=gate_u_knots, feature=gate_feature) if residual_gate else None
        levels = (c, 2 * c, 4 * c)
        self.mapping = MappingNetwork(mapping_width, mapping_layers, levels)
        self.stem = _conv(3, c, 3)
        self.down1 = _conv(c, 2 * c, 3, stride=2)
        self.down2 = _conv(2 * c, 4 * c, 3, stride=2)
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 4, stride=2, padding=1)
        self.up1 = nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1)
        self.head = _conv(c, 3, 3)
        self.encoder = nn.ModuleList([ContAdaStage(ch, num_res, mask_scale, se_reduction) for ch in levels])
        self.decoder = nn.ModuleList([ContAdaStage(ch, num_res, mask_scale, se_reduction) for ch in levels])
        self.scm2, self.scm4 = SCM(2 * c), SCM(4 * c)
        self.fam2, self.fam4 = FAM(2 * c), FAM(4 * c)
        self.aff1, self.aff2 = AFF(7 * c, c), AFF(7 * c, 2 * c)
        self.fuse2 = _conv(4 * c, 2 * c, 1)
        self.fuse1 = _conv(2 * c, c, 1)
        self.out4 = _conv(4 * c, 3, 3)
        self.out2 = _conv(2 * c, 3, 3)

    def zero_init_output_(self) -> "CFMDGenerator":
        """Zero the three output convs, so the untrained network is the identity (every output = its input
        scale) and training starts from "do no harm". An initialisation choice (recipe ``zero_init_output``);
        the paper is silent on initialisation."""
        for conv in (self.head, self.out4, self.out2):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        return self

    @torch.no_grad()
    def scale_output_init_(self, factor: float) -> "CFMDGenerator":
        """Multiply the three output convs' initial weights and biases by ``factor`` (recipe
        ``output_init_scale``): the untrained network is then close to the identity, yet, unlike a zero init,
        gradients of the full-resolution loss reach the full-resolution decoder from the first step. An
        initialisation choice; the paper is silent on initialisation."""
        for conv in (self.head, self.out4, self.out2):
            conv.weight.mul_(factor)
            conv.bias.mul_(factor)
        return self

    def kaiming_init_mapping_(self) -> "CFMDGenerator":
        """He-initialise G_M so u visibly changes the controls at init (recipe ``mapping_init: kaiming``);
        see :meth:`MappingNetwork.kaiming_init_`."""
        self.mapping.kaiming_init_()
        return self

    def forward(self, b: torch.Tensor, u: torch.Tensor | float) -> list[torch.Tensor]:
        if b.shape[-1] % self.pad_multiple or b.shape[-2] % self.pad_multiple:
            raise ValueError(f"CFMDGenerator needs H and W divisible by {self.pad_multiple}, got {tuple(b.shape[-2:])}"
                             "; pad the input (Deblurrer.restore does this for you)")
        u = torch.as_tensor(u, dtype=torch.float32, device=b.device).reshape(-1)
        if u.numel() == 1 and b.shape[0] > 1:
            u = u.expand(b.shape[0])
        enc_c, dec_c = self.mapping(u.to(self.stem.weight.dtype))
        if b.device.type == "cpu":
            # channels-last end to end on CPU: oneDNN convs run ~1.1-2x faster on it, and the deformable
            # conv gathers from / writes to channels-last buffers without permute copies
            b = b.contiguous(memory_format=torch.channels_last)
        b2 = _down(b)
        b4 = _down(b2)
        e1 = self.encoder[0](lrelu(self.stem(b)), enc_c[0])
        e2 = self.encoder[1](self.fam2(lrelu(self.down1(e1)), self.scm2(b2)), enc_c[1])
        e3 = self.encoder[2](self.fam4(lrelu(self.down2(e2)), self.scm4(b4)), enc_c[2])
        e3_2 = _up(e3)
        a2 = self.aff2(_down(e1), e2, e3_2)
        a1 = self.aff1(e1, _up(e2), _up(e3_2))
        d3 = self.decoder[2](e3, dec_c[2])
        out4 = self.out4(d3) + b4
        z = self.fuse2(torch.cat([lrelu(self.up2(d3)), a2], dim=1))
        d2 = self.decoder[1](lrelu(z), dec_c[1])
        out2 = self.out2(d2) + b2
        z = self.fuse1(torch.cat([lrelu(self.up1(d2)), a1], dim=1))
        d1 = self.decoder[0](lrelu(z), dec_c[0])
        full = self.head(d1) + b
        if self.gate is not None and not self.training:
            full = self.gate(b, full, u)
        outs = [out4, out2, full]
        return [o.contiguous() for o in outs]  # back to the default layout for callers (3 channels: cheap)


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(spectral_norm(nn.Conv2d(cin, cout, 3, padding=1, bias=False)), nn.LeakyReLU(0.2),
                         spectral_norm(nn.Conv2d(cout, cout, 3, padding=1, bias=False)), nn.LeakyReLU(0.2))


class _PixelHead(nn.Sequential):
    def __init__(self, cin: int) -> None:
        super().__init__(spectral_norm(nn.Conv2d(cin, cin, 1, bias=False)), nn.LeakyReLU(0.2),
                         spectral_norm(nn.Conv2d(cin, 1, 1, bias=False)))


class CFMDDiscriminator(nn.Module):
    """Conditional U-Net discriminator with auxiliary u regressor (§4.2.3; Schönfeld et al. 2020).

    Input: concat(face, blurry) (6 channels). Outputs a dict of logits ``enc`` (global real/fake,
    a small map from the bottleneck: D_enc), ``dec`` (per-pixel real/fake: D_dec) and ``q`` (per-pixel
    u estimate in [0, 1], after a sigmoid: Q). Spectral norm on every conv, no normalisation layers.
    The heads return logits (the official code applied BCE-with-logits to sigmoid outputs; see §1.7
    of the reference facts) and the losses apply the sigmoid.

    Args:
        width: level-0 width (paper code: 64). max_width: cap (512). levels: encoder levels
            (6 for 256x256 input -> 8x8 bottleneck).
    """

    def __init__(self, width: int = 64, max_width: int = 512, levels: int = 6, in_channels: int = 6) -> None:
        super().__init__()
        widths = [min(width * 2 ** i, max_width) for i in range(levels)]
        self.widths = widths
        self.enc = nn.ModuleList([_DoubleConv(in_channels if i == 0 else widths[i - 1], w) for i, w in enumerate(widths)])
        self.global_head = nn.Sequential(spectral_norm(nn.Conv2d(widths[-1], widths[-1], 4, 2, 1, bias=False)),
                                         nn.LeakyReLU(0.2), spectral_norm(nn.Conv2d(widths[-1], 1, 1, bias=False)))
        self.mid = _DoubleConv(widths[-1], widths[-1])
        self.dec = nn.ModuleList([_DoubleConv(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(levels - 1))])
        self.pixel_head = _PixelHead(widths[0])
        self.q_head = _PixelHead(widths[0])

    def forward(self, face: torch.Tensor, blurry: torch.Tensor) -> dict[str, torch.Tensor]:
        x = torch.cat([face, blurry], dim=1)
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else F.avg_pool2d(x, 2))
            skips.append(x)
        out_enc = self.global_head(x)
        x = self.mid(x)
        for block, skip in zip(self.dec, reversed(skips[:-1])):
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True), skip], 1))
        return {"enc": out_enc, "dec": self.pixel_head(x), "q": torch.sigmoid(self.q_head(x))}


@register_model("cfmd_gan", task="image-continuous", discriminator="cfmd_gan_discriminator", adapter=CFMD_ADAPTER)
def cfmd_gan(**kwargs) -> CFMDGenerator:
    """CFMD-GAN generator; kwargs as in :class:`CFMDGenerator` (zoo configs set them per variant)."""
    return CFMDGenerator(**kwargs)


def cfmd_gan_discriminator(**kwargs) -> CFMDDiscriminator:
    """CFMD-GAN discriminator (training only); kwargs as in :class:`CFMDDiscriminator`."""
    return CFMDDiscriminator(**kwargs)
