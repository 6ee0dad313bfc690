"""SRN-DeblurNet's training wrapper: CycleGAN->SRN's second stage (Nahli, Cao, Xu §3.2 Eq. 3, §5; Tao et al. 2018
§3.3).

* Samples: ``pair`` (blurry, sharp). The paper trains on pairs made by its CycleGAN blur generator (sharp face ->
  G(sharp)); any pair data trains the same network (the issue's comparison: learned blur vs camera-shake kernels vs
  frame averages).
* Loss (Eq. 3): ``sum_i k_i / N_i ||I^i - I*^i||^2`` over the 3 scales, ``I*^i`` the sharp target resized
  (bilinear) to scale i: the mean squared error per scale, summed. Nahli et al. call the ``k_i`` "trainable"; a
  trainable weight of a minimised loss only shrinks towards 0, so we take SRN's own choice, ``k_i = 1`` (Tao et al.
  §3.3 and the authors' code). The recipe's ``loss.pix`` weights the sum and ``loss.pix_coarse`` the two coarse
  terms (1.0 = Eq. 3).
* Optimiser: Adam (the SRN code: lr 1e-4, betas 0.9 / 0.999; the paper names none). The code decays the rate
  polynomially (power 0.3) to 0; the generic trainer decays per epoch exponentially, so the zoo recipes give a
  per-epoch factor instead (see ``docs/models/cyclegan-srn.md``).
* Supervised only: SRN has no discriminator, and no perceptual term (the recipe's ``per`` and ``adv`` are ignored).
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..losses import LossWeights
from . import register_method
from .base import StepContext, TrainingMethod

__all__ = ["SRNMethod", "multiscale_mse"]


def multiscale_mse(outputs: Sequence[torch.Tensor] | torch.Tensor, target: torch.Tensor,
                   weights: LossWeights = LossWeights()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Nahli Eq. 3 with ``k_i = 1``: the sum over scales of the mean squared error between each output (coarse to
    fine) and the full-resolution ``target`` resized bilinearly to its size. ``weights.pix`` scales the sum,
    ``weights.pix_coarse`` every term but the full-resolution one. Returns the total and detached parts
    (``g_mse_<i>`` per scale, coarse first; ``g_pix``, ``g_total``)."""
    outs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    target = target.float()
    parts: dict[str, torch.Tensor] = {}
    total = target.new_zeros(())
    last = len(outs) - 1
    for i, out in enumerate(outs):
        size = tuple(out.shape[-2:])
        gt = target if size == tuple(target.shape[-2:]) else F.interpolate(target, size=size, mode="bilinear",
                                                                             align_corners=False)
        term = F.mse_loss(out.float(), gt)
        parts[f"g_mse_{i}"] = term.detach()
        total = total + (term if i == last else weights.pix_coarse * term)
    total = weights.pix * total
    parts["g_pix"] = total.detach()
    parts["g_total"] = total.detach()
    return total, parts


@register_method("srn")
class SRNMethod(TrainingMethod):
    """SRN-DeblurNet on ``pair`` samples with the multi-scale MSE (Nahli Eq. 3), supervised."""

    sample_kind: ClassVar[str] = "pair"
    loss_notes: ClassVar[str] = ("multi-scale MSE (Nahli Eq. 3): sum over the scales of the mean squared error to the "
                                 "bilinearly resized sharp target, k_i = 1 (SRN's choice; the paper calls k_i "
                                 "trainable, which would drive them to 0); pix scales the sum, pix_coarse the coarse "
                                 "terms")
    progress_parts: ClassVar[tuple[str, ...]] = ("g_total", "g_mse_2")

    def build_losses(self, device: torch.device) -> None:
        """Nothing to build: the loss is Eq. 3 only (no perceptual term, whatever the recipe's ``per``)."""
        self.perceptual, self.perceptual_status = None, "off (SRN's loss is the multi-scale MSE, Nahli Eq. 3)"

    def train_step(self, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """One Adam step on Eq. 3."""
        with ctx.autocast():
            outs = self.adapter.forward(ctx.g, batch["blurry"])
        loss, parts = multiscale_mse(outs, batch["sharp"], self.recipe.loss)
        ctx.backward("g", loss)
        return parts
