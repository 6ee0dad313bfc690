"""Chrysos et al.'s training wrappers and losses (*Motion Deblurring of Faces*, IJCV 2019, §3.1-3.4, §5.1).

Three wrappers, one per registered architecture (:mod:`facedeblur.models.chrysos`):

* ``chrysos_hg``, stage 1 (:class:`ChrysosHourglassMethod`): the L1 loss of Eq. 2, ``||I_s - H(I_bl)||_1``, on the
  full-size output. Newell's intermediate supervision adds the mean over the stacks of the L1 loss between each
  stack's 1/4-size prediction and the 4x4-averaged target, weighted by ``loss.pix_coarse`` (0 gives Eq. 2 alone).
  The wrapper is supervised only. The paper trains stage 1 on 3 M MS-Celeb stills blurred with camera-shake
  kernels; here the data engine's strong-blur stills do that job (``synth_fraction: 1``, ``synth_frames: 0``,
  target = the unshifted still, ``synth.centre_fraction: 1``).
* ``chrysos``, stage 2 of the two-step model (:class:`ChrysosMethod`). The composite trains with **stage 1
  frozen** (§5.1: "the HG was trained to convergence and then the weights were kept as constants in the training
  of the cGAN"). Its hourglass is loaded from ``training.method.stage1`` (a zoo name of a ``chrysos_hg`` variant
  with published weights, or a run folder, checkpoint, ``.safetensors`` file or exported folder of stage 1). It
  has no gradients and always stays in eval mode (its batch-norm statistics stay fixed). So stage 2 sees exactly
  what the shipped composite computes, and training, validation, EMA, ``--init`` and export all handle one
  network: the shipped ``chrysos``, without ``G_s``'s encoder, which the wrapper keeps next to it for training
  only (:meth:`~facedeblur.train.methods.TrainingMethod.inference_network`).
* ``chrysos_cgan`` alone (:class:`ChrysosCGANMethod`): the cGAN on the blurry face only (``in_channels: 3``), the
  "cGAN-noHG" model of Table 4, the cGAN-only arm of the ablation.

Stage-2 losses (Eq. 3-7), computed by :func:`generator_loss` and :func:`discriminator_loss`:

* ``L_cGAN`` (Eq. 3): log-loss on the logits of the conditional discriminator ``D(s, y)``. The condition ``s`` is the
  blurry face. D gets ``BCE(D(b, I_s), 1) + BCE(D(b, G_bl), 0)``; G gets the usual non-saturating
  ``BCE(D(b, G_bl), 1)``. Real and fake go through D in one batch (one forward per step, as DDP needs; D's batch
  norm sees both).
* ``L_c`` (Eq. 4): ``lambda_ci ||G_bl - I_s||_1 + lambda_cg ||grad G_bl - grad I_s||_1``. The gradients are
  forward differences along x and y. Each L1 term is a mean over elements.
* ``L_p`` (Eq. 5), the projection ("feature matching", footnote 5) loss: ``||pi(G_bl) - pi(I_s)||_1``, with ``pi``
  the discriminator's penultimate layer. It is in **G's** objective (Eq. 7), as the paper places it. The author's
  RoCGAN code puts it in D's (REFERENCE_FACTS §2.1). ``pi(I_s)`` is a constant for G.
* ``L_r`` (Eq. 6): ``||G_s(I_s) - I_s||_1``, the autoencoder pathway's reconstruction. It trains the shared decoder.
* Eq. 7: ``L = L_cGAN + L_c + lambda_p L_p + lambda_r L_r`` with ``lambda_ci = lambda_cg = lambda_r = 100`` and
  ``lambda_p = 8`` (§5.1). Recipe keys: ``loss.adv`` (the weight of ``L_cGAN``, 1), ``loss.pix`` (lambda_ci) and
  ``training.method``: ``grad`` (lambda_cg), ``proj`` (lambda_p), ``rec`` (lambda_r). The RoCGAN code's latent loss
  between the two pathways is not in this paper and not used.
* Without a discriminator (``--no-gan`` or ``adv: 0``) the terms ``L_cGAN`` and ``L_p`` drop out.

Images are in [0, 1] here. The paper does not state its range (the RoCGAN code uses [-1, 1], where the same L1
terms are twice as large), so the lambdas are the paper's as written. Optimiser: the paper names none. The recipes
take the RoCGAN code's Adam (2e-4, betas 0.5 / 0.9, batch 64, no decay) for stage 2, and Newell's rate (2.5e-4)
with Adam for stage 1 (REFERENCE_FACTS §2.1, §9).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ...models.chrysos import Chrysos, ChrysosCGAN, ChrysosHourglass
from ..losses import adversarial_bce
from ..recipes import RecipeError
from . import register_method
from .base import StepContext, TrainingMethod, set_requires_grad, unwrap

__all__ = ["ChrysosHourglassMethod", "ChrysosMethod", "ChrysosCGANMethod", "CGANWeights", "cgan_weights",
           "image_gradients", "content_loss", "generator_loss", "discriminator_loss", "hourglass_loss", "load_stage1"]

#: the options of ``training.method`` for stage 2 and their paper values (§5.1)
STAGE2_OPTIONS: dict[str, float] = {"grad": 100.0, "proj": 8.0, "rec": 100.0}


class CGANWeights(NamedTuple):
    """The weights of Eq. 7: ``adv`` (L_cGAN), ``content`` (lambda_ci), ``grad`` (lambda_cg), ``proj`` (lambda_p),
    ``rec`` (lambda_r)."""

    adv: float = 1.0
    content: float = 100.0
    grad: float = 100.0
    proj: float = 8.0
    rec: float = 100.0


def _method_options(recipe_method: Mapping[str, Any], allowed: Mapping[str, Any], who: str) -> dict[str, Any]:
    """``recipe_method`` over the ``allowed`` defaults; a :class:`RecipeError` names unknown keys."""
    unknown = sorted(set(recipe_method) - set(allowed))
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise RecipeError(f"training.method has unknown keys {unknown} for {who}; known: {known}")
    return {**allowed, **dict(recipe_method)}


def cgan_weights(recipe: Any) -> CGANWeights:
    """The Eq. 7 weights of a resolved recipe: ``loss.adv``, ``loss.pix`` and ``method.grad/proj/rec``."""
    opts = {k: v for k, v in recipe.method.items() if k in STAGE2_OPTIONS}
    vals = {**STAGE2_OPTIONS, **opts}
    for k, v in vals.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise RecipeError(f"training.method.{k} must be a number >= 0, got {v!r}")
    return CGANWeights(adv=float(recipe.loss.adv), content=float(recipe.loss.pix), grad=float(vals["grad"]),
                       proj=float(vals["proj"]), rec=float(vals["rec"]))


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences of ``x`` (N, C, H, W) along x and y: (N, C, H, W-1) and (N, C, H-1, W)."""
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def content_loss(fake: torch.Tensor, sharp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4's two terms, unweighted: (mean |G_bl - I_s|, mean |grad_x| + mean |grad_y| of their difference)."""
    fake, sharp = fake.float(), sharp.float()
    (fx, fy), (sx, sy) = image_gradients(fake), image_gradients(sharp)
    return F.l1_loss(fake, sharp), F.l1_loss(fx, sx) + F.l1_loss(fy, sy)


def discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """D's side of Eq. 3: ``BCE(D(s, I_s), 1) + BCE(D(s, G(s)), 0)`` on logits."""
    return adversarial_bce(d_real, True) + adversarial_bce(d_fake, False)


def generator_loss(fake: torch.Tensor, sharp: torch.Tensor, reconstructed: torch.Tensor | None, w: CGANWeights, *,
                   d_fake: torch.Tensor | None = None, pi_fake: torch.Tensor | None = None,
                   pi_real: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 7 for the generator: ``adv L_cGAN + L_c + proj L_p + rec L_r``; the adversarial and projection terms only
    when the discriminator's logits ``d_fake`` and projections ``pi_fake`` / ``pi_real`` are given. Returns the total
    and the detached parts."""
    l1, lgrad = content_loss(fake, sharp)
    total = w.content * l1 + w.grad * lgrad
    parts = {"g_l1": l1.detach(), "g_grad": lgrad.detach()}
    if reconstructed is not None and w.rec > 0:
        l_rec = F.l1_loss(reconstructed.float(), sharp.float())
        total = total + w.rec * l_rec
        parts["g_rec"] = l_rec.detach()
    if d_fake is not None:
        l_adv = adversarial_bce(d_fake, True)
        total = total + w.adv * l_adv
        parts["g_adv"] = l_adv.detach()
    if pi_fake is not None and pi_real is not None and w.proj > 0:
        l_proj = F.l1_loss(pi_fake.float(), pi_real.float().detach())
        total = total + w.proj * l_proj
        parts["g_proj"] = l_proj.detach()
    parts["g_pix"] = (w.content * l1).detach()
    parts["g_total"] = total.detach()
    return total, parts


def hourglass_loss(outputs: list[torch.Tensor], sharp: torch.Tensor, pix: float = 1.0, intermediate: float = 1.0
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 2 on the final output (``outputs[-1]``), plus ``intermediate`` times the mean over the stacks of the L1
    loss of each 1/4-size prediction (``outputs[:-1]``) against the 4x4-averaged target (Newell's intermediate
    supervision)."""
    sharp = sharp.float()
    l_final = F.l1_loss(outputs[-1].float(), sharp)
    total = pix * l_final
    parts = {"g_l1": l_final.detach()}
    if intermediate > 0 and len(outputs) > 1:
        factor = sharp.shape[-1] // outputs[0].shape[-1]
        small = F.avg_pool2d(sharp, factor) if factor > 1 else sharp
        l_mid = torch.stack([F.l1_loss(p.float(), small) for p in outputs[:-1]]).mean()
        total = total + intermediate * l_mid
        parts["g_stacks"] = l_mid.detach()
    parts["g_pix"] = (pix * l_final).detach()
    parts["g_total"] = total.detach()
    return total, parts


def load_stage1(hg: ChrysosHourglass, source: str, hg_kwargs: Mapping[str, Any] | None = None) -> str:
    """Load trained stage-1 weights into ``hg`` (strict keys and shapes) and return where they came from.

    ``source``: an existing path (a ``chrysos_hg`` training run folder or checkpoint, a ``.safetensors`` file, or a
    folder written by ``save_pretrained``; a ``chrysos`` composite's weights give their ``hg.`` part), else a zoo name
    of a ``chrysos_hg`` variant whose weights are published (:class:`~facedeblur.errors.WeightsNotAvailableError`
    until they are).
    """
    from ...models import get_card
    from ...weights import load_pretrained_into, load_state_dict_strict
    from ..checkpoint import read_generator_state

    path = Path(str(source)).expanduser()
    if path.exists():
        state, arch = read_generator_state(path)
        if arch is not None and arch not in ("chrysos_hg", "chrysos"):
            raise RecipeError(f"training.method.stage1 {source}: a checkpoint of {arch}, not of chrysos_hg (stage 1)")
        if any(k.startswith("hg.") for k in state):  # the composite's weights: take its stage 1
            state = {k[3:]: v for k, v in state.items() if k.startswith("hg.")}
        load_state_dict_strict(hg, state, arch_kwargs=dict(hg_kwargs or {}), source=str(path))
        return str(path)
    card = get_card(str(source))
    if card.architecture != "chrysos_hg":
        raise RecipeError(f"training.method.stage1 {source!r} is a {card.architecture} model, not a stage-1 "
                          f"chrysos_hg one; name a chrysos-hg variant or a path to stage-1 weights")
    load_pretrained_into(hg, card)
    return card.name


def _no_perceptual(method: TrainingMethod, why: str) -> None:
    method.perceptual, method.perceptual_status = None, f"off ({why})"


# ======================================================================================== stage 1


@register_method("chrysos_hg")
class ChrysosHourglassMethod(TrainingMethod):
    """Stage 1 (§3.1): the stacked hourglass on ``pair`` samples with the L1 loss of Eq. 2 (plus the stacks'
    intermediate supervision, ``loss.pix_coarse``); supervised."""

    sample_kind: ClassVar[str] = "pair"
    loss_notes: ClassVar[str] = ("Eq. 2: pix * L1(H(b), s) on the full-size output + pix_coarse * mean over stacks of "
                                 "L1(stack prediction, 4x4-averaged s) (Newell's intermediate supervision; 0 = Eq. 2 "
                                 "alone)")
    progress_parts: ClassVar[tuple[str, ...]] = ("g_total", "g_l1")

    def __init__(self, arch: Any, arch_kwargs: Mapping[str, Any], recipe: Any) -> None:
        super().__init__(arch, arch_kwargs, recipe)
        _method_options(recipe.method, {}, "chrysos_hg")

    @property
    def has_discriminator(self) -> bool:
        return False  # Eq. 2 only

    def build_losses(self, device: torch.device) -> None:
        _no_perceptual(self, "stage 1's loss is the L1 loss of Eq. 2")

    def train_step(self, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """One step on Eq. 2 (and the intermediate supervision)."""
        with ctx.autocast():
            outs = ctx.g(batch["blurry"], intermediate=True)
        loss, parts = hourglass_loss(outs, batch["sharp"], self.recipe.loss.pix, self.recipe.loss.pix_coarse)
        ctx.backward("g", loss)
        return parts


# ======================================================================================== stage 2


class _CGANTraining(TrainingMethod):
    """The stage-2 GAN step (Eq. 3-7) shared by the composite and the cGAN-only wrapper."""

    sample_kind: ClassVar[str] = "pair"
    loss_notes: ClassVar[str] = ("Eq. 7: adv * L_cGAN (BCE on D(blurry, image) logits, non-saturating for G) + "
                                 "pix * L1 + method.grad * L1 of forward-difference gradients (Eq. 4) + method.proj * "
                                 "L1 of D's penultimate features, in G's loss as in the paper (Eq. 5) + method.rec * "
                                 "L1 of the autoencoder pathway G_s(s) (Eq. 6); D: BCE(real, 1) + BCE(fake, 0), real "
                                 "and fake in one batch")
    progress_parts: ClassVar[tuple[str, ...]] = ("d_total", "g_total", "g_l1", "g_rec")
    #: training.method keys this wrapper accepts (beyond the loss weights)
    extra_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, arch: Any, arch_kwargs: Mapping[str, Any], recipe: Any) -> None:
        super().__init__(arch, arch_kwargs, recipe)
        self.options = _method_options(recipe.method, {**STAGE2_OPTIONS, **self.extra_options}, arch.name)
        self.weights = cgan_weights(recipe)

    def build_losses(self, device: torch.device) -> None:
        _no_perceptual(self, "Chrysos et al.'s losses are Eq. 3-7, no perceptual term")

    def _forward(self, ctx: StepContext, b: torch.Tensor, s: torch.Tensor) -> Any:
        """The generator's training outputs (``.restored``, ``.reconstructed``) for blurry ``b`` and sharp ``s``."""
        raise NotImplementedError

    def train_step(self, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """One D step (GAN only), then one G step on Eq. 7."""
        b, s = batch["blurry"], batch["sharp"]
        with ctx.autocast():
            out = self._forward(ctx, b, s)
        fake = out.restored
        parts: dict[str, torch.Tensor] = {}
        d_fake = pi_fake = pi_real = None
        if ctx.d is not None:
            n = b.shape[0]
            set_requires_grad(ctx.d, True)
            with ctx.autocast():
                logits = ctx.d(torch.cat([s, fake.detach().to(s.dtype)]), torch.cat([b, b]))
            d_loss = discriminator_loss(logits[:n], logits[n:])
            ctx.backward("d", d_loss)
            parts["d_total"] = d_loss.detach()
            d_mod = unwrap(ctx.d)
            set_requires_grad(d_mod, False)
            with ctx.autocast():
                logits, pi = d_mod(torch.cat([fake.to(s.dtype), s]), torch.cat([b, b]), features=True)
            d_fake, pi_fake, pi_real = logits[:n], pi[:n], pi[n:].detach()
        loss, g_parts = generator_loss(fake, s, out.reconstructed, self.weights, d_fake=d_fake, pi_fake=pi_fake,
                                       pi_real=pi_real)
        ctx.backward("g", loss)
        parts.update(g_parts)
        return parts


@register_method("chrysos")
class ChrysosMethod(_CGANTraining):
    """The two-step model's stage 2 (§3.3, §5.1): the cGAN on (blurry, frozen stage 1(blurry)), ``pair`` samples
    (the VLA windows of §3.4 in the zoo recipes). ``training.method.stage1`` names the trained stage 1."""

    extra_options: ClassVar[dict[str, Any]] = {"stage1": None}
    validation_note: ClassVar[str] = "stage 2 on (blurry, frozen stage 1)"

    def build_generator(self, device: torch.device) -> nn.Module:
        """The composite with ``G_s``'s encoder, stage 1 loaded from ``method.stage1`` and frozen."""
        source = self.options.get("stage1")
        if not source:
            raise RecipeError("training stage 2 of chrysos needs the trained stage 1: set training.method.stage1 to a "
                              "chrysos-hg zoo variant with published weights, or to a stage-1 run folder, checkpoint "
                              "or weights file (e.g. --config FILE with `method: {stage1: runs/chrysos-hg.lite}`)")
        g = self.arch.builder(**{**self.arch_kwargs, "autoencoder": True})
        self.init_generator_(g)
        self.stage1_source = load_stage1(g.hg, source, self.arch_kwargs.get("hg"))
        set_requires_grad(g.hg, False)
        g.hg.eval()
        return g.to(device)

    def inference_network(self, g: nn.Module) -> nn.Module:
        """The shipped composite (no ``G_s`` encoder unless the card's kwargs ask for it), sharing ``g``'s parts."""
        assert isinstance(g, Chrysos)
        return g if self.arch_kwargs.get("autoencoder") else g.regression_only()

    def _forward(self, ctx: StepContext, b: torch.Tensor, s: torch.Tensor) -> Any:
        unwrap(ctx.g).hg.eval()  # frozen: its batch-norm statistics stay those of the trained stage 1
        return ctx.g(b, sharp=s)


@register_method("chrysos_cgan")
class ChrysosCGANMethod(_CGANTraining):
    """The cGAN alone on the blurry face (``in_channels: 3``; Table 4's cGAN-noHG, the cGAN-only ablation arm)."""

    def __init__(self, arch: Any, arch_kwargs: Mapping[str, Any], recipe: Any) -> None:
        super().__init__(arch, arch_kwargs, recipe)
        if int(self.arch_kwargs.get("in_channels", 6)) != 3:
            raise RecipeError("chrysos_cgan trains alone on the blurry face only (arch kwarg in_channels: 3, the "
                              "cGAN-only model); the 6-channel stage 2 trains inside the composite `chrysos` (stage 1 "
                              "frozen, training.method.stage1)")

    def build_generator(self, device: torch.device) -> nn.Module:
        g = self.arch.builder(**{**self.arch_kwargs, "autoencoder": True})
        self.init_generator_(g)
        return g.to(device)

    def inference_network(self, g: nn.Module) -> nn.Module:
        assert isinstance(g, ChrysosCGAN)
        return g if self.arch_kwargs.get("autoencoder", True) else g.regression_only()

    def _forward(self, ctx: StepContext, b: torch.Tensor, s: torch.Tensor) -> Any:
        return ctx.g(b, sharp=s)
