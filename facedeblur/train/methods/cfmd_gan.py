"""CFMD-GAN's training wrapper and losses (paper §4.3, Eq. 11-18; recipe §5.1.2).

Conventions (see REFERENCE_FACTS §1.7):

* Discriminator heads ``enc`` and ``dec`` are **logits**; the losses apply the sigmoid through
  ``binary_cross_entropy_with_logits`` (the released code applied it to sigmoid outputs, a double sigmoid).
  ``q`` is already a probability-like u estimate in [0, 1].
* Pixel loss: multi-scale Charbonnier (Eq. 16, eps = 1e-3) on the generator's three outputs against a bilinear
  ground-truth pyramid (0.25 and 0.5 of the full-resolution target, as in MIMO-UNet / the CFMD code); mean per
  scale, summed over the scales.
* D loss (Eq. 13): ``L_Denc + L_Ddec + lambda_Q * L_Q`` with ``lambda_Q = 0.05`` as in the paper
  (the released code used 1.0 and halved the BCE terms; we follow the paper).
* G loss (Eq. 18): ``0.05 L_ar + 0.1 L_adv + 1 L_pix + 0.01 L_per``. ``L_per`` is LPIPS when the ``lpips``
  package and its weights can be constructed offline; otherwise the term is off and the reason is recorded.
* Iteration: one D step, then one G step (§4.3 "optimized alternately"); D sees real and fake in one batch, both
  conditioned on the blurry input. Without the adversarial terms (``--no-gan`` or ``adv: 0``) only G is trained.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...models.cfmd_gan import cfmd_gan_discriminator, uncalibrated_state
from ..losses import LossWeights, adversarial_bce, multiscale_charbonnier, psnr_loss
from ..recipes import RecipeError
from . import register_method
from .base import StepContext, TrainingMethod, set_requires_grad, unwrap

__all__ = ["CFMDGANMethod", "discriminator_loss", "generator_loss"]


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
    l_enc = adversarial_bce(d_real["enc"], True) + adversarial_bce(d_fake["enc"], False)
    l_dec = adversarial_bce(d_real["dec"], True) + adversarial_bce(d_fake["dec"], False)
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
    when given and ``weights.per > 0``. Not in the paper: ``weights.psnr`` adds :func:`psnr_loss` on the final
    output (a recipe choice of the lite variant's second stage).
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
        l_adv = adversarial_bce(d_fake["enc"], True) + adversarial_bce(d_fake["dec"], True)
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


@register_method("cfmd_gan")
class CFMDGANMethod(TrainingMethod):
    """CFMD-GAN (§4.3): G(b, u) against the sharp moment at u, with the u-conditioned U-Net discriminator.

    Trains on ``moments`` samples (blurry, sharp moment, its u). Init options of the recipe (not in the paper,
    which is silent on initialisation): ``zero_init_output`` (G starts as the identity), ``output_init_scale``
    (output convs scaled down) and ``mapping_init: kaiming`` (u visible at init). Weights loaded with ``--init``
    drop their residual-gate calibration (:func:`~facedeblur.models.cfmd_gan.uncalibrated_state`): training
    changes the network, so the gate starts as the identity again.
    """

    sample_kind: ClassVar[str] = "moments"
    loss_notes: ClassVar[str] = ("D loss = L_Denc + L_Ddec + q_d * L_Q (paper Eq. 13, lambda_Q 0.05; the released "
                                 "code used 1.0 and halved the BCE terms); heads are logits, BCE-with-logits")
    validation_note: ClassVar[str] = "at the items' u"

    def init_generator_(self, g: nn.Module) -> None:
        """Recipe ``zero_init_output``, ``output_init_scale`` and ``mapping_init`` on the generator."""
        r = self.recipe
        if r.zero_init_output:
            self._hook(g, "zero_init_output_", "zero_init_output")()
        if r.output_init_scale != 1.0:
            self._hook(g, "scale_output_init_", "output_init_scale")(r.output_init_scale)
        if r.mapping_init == "kaiming":
            self._hook(g, "kaiming_init_mapping_", "mapping_init")()

    def _hook(self, g: nn.Module, method: str, option: str) -> Any:
        if not hasattr(g, method):
            raise RecipeError(f"{option}: {self.arch.name} has no {method}() method")
        return getattr(g, method)

    @property
    def has_discriminator(self) -> bool:
        return True

    def build_discriminator(self) -> nn.Module:
        """The conditional U-Net discriminator D(face, blurry) with heads enc / dec / q (§4.2.3)."""
        return cfmd_gan_discriminator(**self.recipe.discriminator)

    def reset_loaded_state(self, state: dict[str, torch.Tensor], g: nn.Module) -> dict[str, torch.Tensor]:
        """``state`` with the residual gate's calibration replaced by ``g``'s identity gate."""
        return uncalibrated_state(state, g)

    def train_step(self, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """One D step (GAN only: real and fake in one batch), then one G step (Eq. 13, Eq. 18)."""
        b, s = batch["blurry"], batch["sharp"]
        u = self.adapter.controls(batch, ctx.device)
        with ctx.autocast():
            outs = self.adapter.forward(ctx.g, b, u)
        fake = self.adapter.final(outs)
        parts: dict[str, torch.Tensor] = {}
        d_fake = None
        if ctx.d is not None:
            set_requires_grad(ctx.d, True)
            with ctx.autocast():  # real and fake in one batch: one D forward per D step
                d_all = ctx.d(torch.cat([s, fake.detach().to(s.dtype)]), torch.cat([b, b]))
            n = b.shape[0]
            d_real = {k: v[:n] for k, v in d_all.items()}
            d_fk = {k: v[n:] for k, v in d_all.items()}
            d_loss, d_parts = discriminator_loss(d_real, d_fk, u, self.recipe.loss.q_d)
            ctx.backward("d", d_loss)
            parts.update(d_parts)
            d_mod = unwrap(ctx.d)
            set_requires_grad(d_mod, False)
            with ctx.autocast():
                d_fake = d_mod(fake.to(b.dtype), b)
        g_loss, g_parts = generator_loss(outs, s, d_fake=d_fake, u=u, weights=self.recipe.loss,
                                         perceptual=self.perceptual)
        ctx.backward("g", g_loss)
        parts.update(g_parts)
        return parts
