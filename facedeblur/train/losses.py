"""Training losses shared by the methods' training wrappers.

* :func:`charbonnier` and its multi-scale sum :func:`multiscale_charbonnier` over a ground-truth pyramid
  (:func:`gt_pyramid`: bilinear down-sampling of the full-resolution target by 0.25 and 0.5, as in MIMO-UNet);
  mean per scale, summed over the scales.
* :func:`psnr_loss`: per-sample log-MSE (HINet's "PSNR loss"; not a paper loss of the zoo's methods).
* :func:`adversarial_bce`: BCE of discriminator logits against real / fake labels.
* :func:`build_perceptual`: LPIPS as a perceptual loss when the ``lpips`` package and its weights can be
  constructed offline; otherwise the term is off and the reason is recorded.
* :class:`LossWeights`: the weights a recipe's ``loss:`` section sets. Each method's wrapper uses the ones its
  paper defines (the adversarial ones only when it trains with a discriminator); method-specific losses live
  in the wrapper's module under :mod:`facedeblur.train.methods`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LossWeights", "charbonnier", "psnr_loss", "gt_pyramid", "multiscale_charbonnier", "adversarial_bce",
           "build_perceptual", "PerceptualLoss"]


@dataclass(frozen=True)
class LossWeights:
    """Loss weights of a recipe (defaults: the continuous-moment GAN of the zoo's first method, paper Eq. 13 / 18).

    ``pix`` / ``pix_coarse``: (multi-scale) pixel loss; ``adv``: adversarial; ``ar``: auxiliary control-factor
    regression of the generated image; ``per``: perceptual; ``q_d``: the discriminator's control-factor regression;
    ``psnr`` / ``psnr_floor``: :func:`psnr_loss` on the final output; ``cyc``: cycle consistency of an unpaired
    translation (L1 of both round trips); ``idt``: its identity-mapping term, as a multiple of ``cyc``. A wrapper
    ignores weights its method has no term for.
    """

    pix: float = 1.0
    pix_coarse: float = 1.0  # weight of the coarser scales inside L_pix (1: an equal sum)
    adv: float = 0.1
    ar: float = 0.05
    per: float = 0.01
    q_d: float = 0.05
    charbonnier_eps: float = 1e-3
    psnr: float = 0.0  # not in the paper: weight of the per-sample log-MSE loss (psnr_loss) on the final output
    psnr_floor: float = 1e-4  # MSE floor of that loss (1e-4: 40 dB; see psnr_loss)
    cyc: float = 0.0  # cycle-consistency weight (unpaired translation methods; 0: no such term)
    idt: float = 0.0  # identity-mapping weight, as a multiple of cyc (0: no such term)

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
    with 1e-4 (40 dB), static windows (45-55 dB) count for too little. The zoo's lite stage-2 recipe therefore
    drops the identity pairs and uses 1e-6 (see its model card under ``docs/models/``).
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


def adversarial_bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Mean binary cross-entropy of discriminator ``logits`` against the label real (1) or fake (0), in float32.

    The sigmoid is applied here (``binary_cross_entropy_with_logits``): discriminator heads return logits.
    """
    logits = logits.float()
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


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
