"""CFMD-GAN training losses (paper §4.3, Eq. 11-18).

Conventions (see REFERENCE_FACTS §1.7):

* Discriminator heads ``enc`` and ``dec`` are **logits**; the losses apply the sigmoid through
  ``binary_cross_entropy_with_logits`` (the released code applied it to sigmoid outputs, a double sigmoid).
  ``q`` is already a probability-like u estimate in [0, 1].
* Pixel loss: multi-scale Charbonnier (Eq. 16, eps = 1e-3); the ground-truth pyramid is bilinear
  down-sampling of the full-resolution target by 0.25 and 0.5 (as in MIMO-UNet / the CFMD code); mean per
  scale, summed over the scales.
* D loss (Eq. 13): ``L_Denc + L_Ddec + lambda_Q * L_Q`` with ``lambda_Q = 0.05`` as in the paper
  (the released code used 1.0 and halved the BCE terms; we follow the paper).
* G loss (Eq. 18): ``0.05 L_ar + 0.1 L_adv + 1 L_pix + 0.01 L_per``. ``L_per`` is LPIPS when the ``lpips``
  package and its weights can be constructed offline; otherwise the term is off and the reason is recorded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LossWeights", "charbonnier", "psnr_loss", "gt_pyramid", "multiscale_charbonnier", "discriminator_loss",
           "generator_loss", "build_perceptual", "PerceptualLoss"]


@dataclass(frozen=True)
class LossWeights:
    """Loss weights of Eq. 13 and Eq. 18 (paper values by default)."""

    pix: float = 1.0
    pix_coarse: float = 1.0  # weight of the 1/4 and 1/2 scales inside L_pix (paper: 1, an equal sum)
    adv: float = 0.1
    ar: float = 0.05
    per: float = 0.01
    q_d: float = 0.05
    charbonnier_eps: float = 1e-3
    psnr: float = 0.0  # not in the paper: weight of the per-sample log-MSE loss (psnr_loss) on the final output
    psnr_floor: float = 1e-4  # MSE floor of that loss (1e-4: 40 dB; see psnr_loss)

    @classmethod
    def from_mapping(cls, data: Mapping[str, float] | None) -> "LossWeights":
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown loss weight keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: float(v) for k, v in data.items()})


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean over all elements of ``sqrt((pred - target)^2 + eps^2)`` (Charbonnier penalty, Eq. 16 inner term)."""
    diff = pred.float() - target.float()
    return torch.sqrt(diff * diff + eps * eps).mean()


def psnr_loss(pred: torch.Tensor, target: torch.Tensor, floor: float = 1e-4) -> torch.Tensor:
    """Mean over the batch of ``10 log10(MSE_i + floor)``: minus each sample's PSNR in dB (data in [0, 1]).

    Not a paper loss (HINet's "PSNR loss"). A pixel loss averaged over all pixels is dominated by the most
    blurred samples; this one weighs every sample by its own error, so a 0.1 dB loss on a nearly sharp face
    costs as much as a 0.1 dB gain on a blurred one earns (the quality bar is per severity bin). ``floor`` caps
    the weight of nearly identical pairs: each sample's gradient is scaled by ``1 / (MSE_i + floor)``. With a
    tiny floor, identity pairs in the training mix (MSE 0) outweigh a blurred sample a thousandfold and the
    network learns to return its input (measured: residual RMS 0.07 grey levels after 300 steps with 1e-6);
    with 1e-4 (40 dB), static windows (45-55 dB) count for too little. The ``cfmd-gan.lite`` stage-2 recipe
    therefore drops the identity pairs and uses 1e-6 (``docs/models/cfmd-gan.md``).
    """
    diff = pred.float() - target.float()
    mse = (diff * diff).flatten(1).mean(dim=1)
    return (10.0 * torch.log10(mse + floor)).mean()


def gt_pyramid(target: torch.Tensor, n_scales: int = 3) -> list[torch.Tensor]:
    """Ground truth at ``[1/2^(n-1), ..., 1/2, 1]`` by bilinear down-sampling of the full-resolution target.

    Each coarser level is computed from the full-resolution image (scale factors 0.25 and 0.5 for 3 scales),
    matching the order of the generator's outputs ``[out_1/4, out_1/2, out_1]``.
    """
    levels = []
    for i in reversed(range(n_scales)):
        if i == 0:
            levels.append(target)
        else:
            levels.append(F.interpolate(target, scale_factor=0.5 ** i, mode="bilinear", align_corners=False))
    return levels


def multiscale_charbonnier(outputs: Sequence[torch.Tensor] | torch.Tensor, target: torch.Tensor,
                           eps: float = 1e-3, coarse_weight: float = 1.0) -> torch.Tensor:
    """Eq. 16: sum over scales of the mean Charbonnier loss between each output and the GT at its scale.

    ``outputs`` is the generator's list ordered coarse to fine (a single tensor counts as one scale).
    ``coarse_weight`` scales every term but the full-resolution one (1.0 = Eq. 16). Lowering it is a recipe
    choice for short training: the coarse outputs add the nearest-down-sampled input while their targets are
    bilinear-down-sampled (as in MIMO-UNet), an easy input-independent difference that otherwise dominates
    the early gradients.
    """
    if isinstance(outputs, torch.Tensor):
        outputs = [outputs]
    gts = gt_pyramid(target, len(outputs))
    total = outputs[0].new_zeros((), dtype=torch.float32)
    last = len(outputs) - 1
    for i, (out, gt) in enumerate(zip(outputs, gts)):
        if out.shape[-2:] != gt.shape[-2:]:
            raise ValueError(f"output of shape {tuple(out.shape)} does not match the GT pyramid level "
                             f"{tuple(gt.shape)}; the crop size must be divisible by {2 ** (len(outputs) - 1)}")
        term = charbonnier(out, gt, eps)
        total = total + (term if i == last else coarse_weight * term)
    return total


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    logits = logits.float()
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def _u_map(u: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The constant per-pixel target u_2D for a Q map ``like`` (N, 1, H, W)."""
    return u.to(like.device, torch.float32).reshape(-1, 1, 1, 1).expand_as(like)


def discriminator_loss(d_real: Mapping[str, torch.Tensor], d_fake: Mapping[str, torch.Tensor],
                       u: torch.Tensor | None, lambda_q: float = 0.05) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 11-13: ``L_D = L_Denc + L_Ddec + lambda_Q * L_Q``.

    ``L_Denc = BCE(enc(real), 1) + BCE(enc(fake), 0)``, ``L_Ddec`` likewise per pixel (mean over pixels),
    ``L_Q = MSE(Q(real), u) + MSE(Q(fake), u)`` (only when ``u`` is given and D has a ``q`` head). Returns the
    total and the detached parts (0-dim tensors, no device sync) for logging.
    """
    l_enc = _bce(d_real["enc"], True) + _bce(d_fake["enc"], False)
    l_dec = _bce(d_real["dec"], True) + _bce(d_fake["dec"], False)
    total = l_enc + l_dec
    l_q = torch.zeros((), device=total.device)
    if u is not None and "q" in d_real and "q" in d_fake:
        q_real, q_fake = d_real["q"].float(), d_fake["q"].float()
        l_q = F.mse_loss(q_real, _u_map(u, q_real)) + F.mse_loss(q_fake, _u_map(u, q_fake))
        total = total + lambda_q * l_q
    parts = {"d_enc": l_enc.detach(), "d_dec": l_dec.detach(), "d_q": l_q.detach(), "d_total": total.detach()}
    return total, parts


def generator_loss(outputs: Sequence[torch.Tensor] | torch.Tensor, target: torch.Tensor, *,
                   d_fake: Mapping[str, torch.Tensor] | None = None, u: torch.Tensor | None = None,
                   weights: LossWeights = LossWeights(), perceptual: nn.Module | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 18: ``lambda_ar L_ar + lambda_adv L_adv + lambda_pix L_pix + lambda_per L_per``.

    ``L_ar = MSE(Q(fake), u)`` (Eq. 14) and ``L_adv = BCE(enc(fake), 1) + BCE(dec(fake), 1)`` (Eq. 15) need
    ``d_fake`` (the discriminator on the generated image); without it (supervised training) only the pixel
    and perceptual terms apply. ``perceptual`` (LPIPS, inputs in [0, 1]) is used on the full-resolution output
    when given and ``weights.per > 0``.
    """
    final = outputs if isinstance(outputs, torch.Tensor) else outputs[-1]
    l_pix = multiscale_charbonnier(outputs, target, weights.charbonnier_eps, weights.pix_coarse)
    total = weights.pix * l_pix
    parts = {"g_pix": l_pix.detach()}
    if weights.psnr > 0:
        l_psnr = psnr_loss(final, target, weights.psnr_floor)
        total = total + weights.psnr * l_psnr
        parts["g_psnr"] = l_psnr.detach()
    if d_fake is not None:
        l_adv = _bce(d_fake["enc"], True) + _bce(d_fake["dec"], True)
        total = total + weights.adv * l_adv
        parts["g_adv"] = l_adv.detach()
        if u is not None and "q" in d_fake and weights.ar > 0:
            q = d_fake["q"].float()
            l_ar = F.mse_loss(q, _u_map(u, q))
            total = total + weights.ar * l_ar
            parts["g_ar"] = l_ar.detach()
    if perceptual is not None and weights.per > 0:
        l_per = perceptual(final.float(), target.float()).mean()
        total = total + weights.per * l_per
        parts["g_per"] = l_per.detach()
    parts["g_total"] = total.detach()
    return total, parts


class PerceptualLoss(nn.Module):
    """LPIPS (Zhang et al. 2018) as the perceptual loss of Eq. 17, frozen, inputs in [0, 1]."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "PerceptualLoss":  # always eval: LPIPS has dropout layers
        super().train(False)
        return self

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.net(pred * 2 - 1, target * 2 - 1)


def build_perceptual(weight: float, net: str = "alex") -> tuple[PerceptualLoss | None, str]:
    """LPIPS for L_per, or ``None`` with the reason.

    Returns ``(module, "lpips-<net>")`` when the ``lpips`` package imports and its network (including the
    backbone weights lpips fetches at run time) can be constructed, else ``(None, "off (...)")``. Never falls
    back to another network.
    """
    if weight <= 0:
        return None, "off (weight 0)"
    try:
        import lpips  # type: ignore[import-not-found]
    except Exception as exc:  # noqa: BLE001 - any import failure means "unavailable"
        return None, f"off (lpips unavailable: {type(exc).__name__}: {exc})"
    try:
        module = lpips.LPIPS(net=net, verbose=False)
    except Exception as exc:  # noqa: BLE001 - offline weight download, missing torchvision, ...
        return None, f"off (lpips unavailable: {type(exc).__name__}: {exc})"
    return PerceptualLoss(module), f"lpips-{net}"
