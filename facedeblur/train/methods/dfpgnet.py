"""DFPGnet's training wrapper (Jung, Lee, Heo, WACV 2022, §3.4 Eq. 3-10, §4.1).

* Samples: ``pair`` (blurry, sharp); the data engine's centroid moment for moment data (docs/data.md).
* Networks: the generator G (architecture ``dfpgnet``, the shipped network), the frozen face prior that computes the
  targets ``P = {P1, P2, P3}`` from the sharp face (:mod:`facedeblur.train.priors`; the recipe's
  ``training.method.prior``, default ``dlib``), held by this wrapper and never exported, and the channel-attention
  feature discriminator D^C (:class:`facedeblur.models.dfpgnet.FeatureDiscriminator`, built for the prior's widths).
  When the prior's widths or resolutions differ from the prior stream's, the trainer's generator module is
  :class:`DFPGTrainingModule`: G plus training-only :class:`PriorHeads` (average pooling to the prior's grid, 1x1
  convs where the widths differ), updated by the generator optimiser; :meth:`DFPGnetMethod.inference_network`
  gives G alone, which is what validation, EMA and export see.
* D step (Eq. 6): ``BCE(D^C(P), real) + BCE(D^C(P^), fake)`` with the predictions detached, real and fake in one
  forward.
* G step (Eq. 10): ``L_pixel + lambda_adv L_G,adv + lambda_prior L_prior`` with D^C frozen:

  - Eq. 7, ``L_pixel = ||I_deblur - I_GT||_1``: the mean absolute error in the lab's [-1, 1] units (2x the error of
    facedeblur's [0, 1] images), weight ``loss.pix`` (1);
  - Eq. 8, ``L_G,adv = -log D^C(P^)`` (non-saturating), weight ``loss.adv`` (lambda_adv = 0.05);
  - Eq. 9, the prior loss: both feature sets weighted by D^C's (frozen) CA modules (Eq. 4), unit-normalised along the
    channels at each position, squared L2 distance per position; weight ``training.method.prior_loss``
    (lambda_prior = 1). The paper writes sums over positions (and pixels in Eq. 7); we average over positions (and
    pixels), as the lab's code does, so the weights mean the same at any crop size, and sum over the three levels.
    The normalisation is ``x / sqrt(|x|^2 + 1e-10)`` (the code adds 1e-10 to the norm), smooth at all-zero vectors.

* Without D^C (``--no-gan`` or ``loss.adv: 0``) the prior loss is Eq. 9 without the CA weights (all channels alike):
  the paper's ablation model B4 (Table 4). ``arch_kwargs.prior_stream: false`` (B1) trains the deblurring stream
  with the pixel loss only; no prior is built.
* Optimisers (§4.1): Adam (0.9, 0.999), G lr 1e-4, D lr 1e-5 (the recipe's ``d_optimizer``), both x0.99 per epoch.

``training.method`` keys: ``prior`` (``dlib`` | ``vggface`` | ``toy``), ``prior_weights`` (the prior's weight file;
required for ``vggface``), ``prior_loss`` (lambda_prior), ``prior_size`` (resize the sharp face to this size for the
prior; default: as it is).
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...models.dfpgnet import DFPGGenerator, FeatureDiscriminator, match_size
from ..losses import adversarial_bce
from ..priors import PRIORS, FacePrior, build_prior
from ..recipes import RecipeError
from . import register_method
from .base import StepContext, TrainingMethod, set_requires_grad, unwrap

__all__ = ["DFPGnetMethod", "DFPGTrainingModule", "PriorHeads", "pixel_loss", "prior_loss", "METHOD_OPTIONS"]

#: ``training.method`` options and their defaults (lambda_prior = 1, §3.4)
METHOD_OPTIONS: dict[str, Any] = {"prior": "dlib", "prior_weights": None, "prior_loss": 1.0, "prior_size": None}
_NORM_EPS = 1e-10


def pixel_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 7: the mean absolute error of [0, 1] images measured in [-1, 1] units (the lab's range), float32."""
    return 2.0 * F.l1_loss(pred.float(), target.float())


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt((x * x).sum(dim=1, keepdim=True) + _NORM_EPS)


def prior_loss(preds: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], attend: Any = None
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Eq. 9: ``sum_i mean_hw || n(CA_i(P_i))_hw - n(CA_i(P^_i))_hw ||^2`` (``n``: unit length along the channels;
    mean over positions and the batch). ``attend`` maps a list of three features to their CA-weighted versions
    (D^C's :meth:`~facedeblur.models.dfpgnet.FeatureDiscriminator.attend`); None weighs all channels alike. Returns
    the total and the per-level terms, float32."""
    preds = [p.float() for p in preds]
    targets = [t.float() for t in targets]
    if len(preds) != len(targets):
        raise ValueError(f"prior_loss: {len(preds)} predictions for {len(targets)} targets")
    for p, t in zip(preds, targets):
        if p.shape != t.shape:
            raise ValueError(f"prior_loss: prediction {tuple(p.shape)} and target {tuple(t.shape)} differ; map the "
                             f"predictions onto the prior's grid (PriorHeads)")
    if attend is not None:  # (the CA convs may run in 16 bits under autocast: normalise in float32)
        preds, targets = [p.float() for p in attend(preds)], [t.float() for t in attend(targets)]
    terms = [(_unit(p) - _unit(t)).pow(2).sum(dim=1).mean() for p, t in zip(preds, targets)]
    return torch.stack(terms).sum(), terms


class PriorHeads(nn.Module):
    """Training-only adapters from the prior stream's predictions (widths ``gen_channels`` at 1, 1/2, 1/4) to the
    prior network's grid (widths ``prior_channels``): :func:`~facedeblur.models.dfpgnet.match_size` to the target's
    size (average pooling by the stride ratio), then a 1x1 conv (with bias) where the widths differ; the identity
    where they match (VGGFace with ``width=64``: the paper's loss exactly)."""

    def __init__(self, gen_channels: Sequence[int], prior_channels: Sequence[int]) -> None:
        super().__init__()
        self.maps = nn.ModuleList([nn.Identity() if int(a) == int(b) else nn.Conv2d(int(a), int(b), 1)
                                   for a, b in zip(gen_channels, prior_channels)])

    @property
    def is_identity(self) -> bool:
        return all(isinstance(m, nn.Identity) for m in self.maps)

    def forward(self, preds: Sequence[torch.Tensor], sizes: Sequence[Sequence[int]] | None = None
                ) -> list[torch.Tensor]:
        out = []
        for i, (m, p) in enumerate(zip(self.maps, preds)):
            if sizes is not None:
                p = match_size(p, sizes[i])
            out.append(m(p))
        return out


class DFPGTrainingModule(nn.Module):
    """What the trainer's generator optimiser updates: G (``generator``, the shipped network) and the prior heads.
    ``forward(x, sizes)`` -> ``(image, [head_i(P^_i)])`` in one call (one forward under DistributedDataParallel)."""

    def __init__(self, generator: DFPGGenerator, heads: PriorHeads) -> None:
        super().__init__()
        self.generator, self.heads = generator, heads

    def forward(self, x: torch.Tensor, sizes: Sequence[Sequence[int]] | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        img, preds = self.generator(x, return_priors=True)
        return img, self.heads(preds, sizes)


def _options(recipe_method: Mapping[str, Any], arch: str) -> dict[str, Any]:
    unknown = sorted(set(recipe_method) - set(METHOD_OPTIONS))
    if unknown:
        raise RecipeError(f"training.method has unknown keys {unknown} for {arch}; known: {sorted(METHOD_OPTIONS)}")
    opts = {**METHOD_OPTIONS, **dict(recipe_method)}
    if opts["prior"] not in PRIORS:
        raise RecipeError(f"training.method.prior must be one of {list(PRIORS)}, got {opts['prior']!r}")
    if opts["prior_weights"] is not None and not isinstance(opts["prior_weights"], str):
        raise RecipeError(f"training.method.prior_weights must be a path (string) or null, got "
                          f"{opts['prior_weights']!r}")
    w = opts["prior_loss"]
    if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
        raise RecipeError(f"training.method.prior_loss (lambda_prior) must be a number >= 0, got {w!r}")
    opts["prior_loss"] = float(w)
    size = opts["prior_size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 16):
        raise RecipeError(f"training.method.prior_size must be an integer >= 16 or null, got {size!r}")
    return opts


@register_method("dfpgnet")
class DFPGnetMethod(TrainingMethod):
    """DFPGnet (§3.4, §4.1): D^C step on prior features, then G on pixel + adversarial + prior losses (Eq. 6-10)."""

    sample_kind: ClassVar[str] = "pair"
    loss_notes: ClassVar[str] = (
        "DFPGnet Eq. 10: L1 pixel loss in [-1, 1] units (Eq. 7, weight pix) + adv * -log D^C(P^) (Eq. 8, BCE on the "
        "feature discriminator's logits) + prior_loss * Eq. 9 (CA-weighted, channel-normalised squared L2, averaged "
        "over positions, summed over P1-P3; without D^C no CA weights); D^C: BCE real P vs fake P^ (Eq. 6); targets "
        "from a frozen face prior (training.method.prior)")
    progress_parts: ClassVar[tuple[str, ...]] = ("d_total", "g_total", "g_pix", "g_prior")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options = _options(getattr(self.recipe, "method", None) or {}, self.arch.name)
        self._prior: FacePrior | None = None

    @property
    def prior_stream(self) -> bool:
        """Whether the generator has its prior stream (False: the ablation baseline B1)."""
        return bool(self.arch_kwargs.get("prior_stream", True))

    @property
    def prior(self) -> FacePrior | None:
        """The frozen prior network (built on first use on the CPU; None without the prior stream)."""
        if self._prior is None and self.prior_stream:
            o = self.options
            self._prior = build_prior(o["prior"], o["prior_weights"], size=o["prior_size"])
        return self._prior

    # ------------------------------------------------------------------------------------------ networks

    def build_generator(self, device: torch.device) -> nn.Module:
        """G (the registered architecture with the recipe's init options), wrapped with the prior heads in a
        :class:`DFPGTrainingModule` when it has its prior stream."""
        g = self.build_network()
        self.init_generator_(g)
        if not self.prior_stream:
            return g.to(device)
        heads = PriorHeads(g.prior_channels, self.prior.channels)
        return DFPGTrainingModule(g, heads).to(device)

    def inference_network(self, g: nn.Module) -> nn.Module:
        """G alone (what validation, EMA and export see): the heads and the prior are training-only."""
        return g.generator if isinstance(g, DFPGTrainingModule) else g

    def uses_gan(self, requested: bool) -> bool:
        """D^C needs the prior stream: adversarial when asked for, ``loss.adv`` > 0 and the generator has it."""
        return bool(requested and self.recipe.loss.adv > 0 and self.prior_stream)

    def build_discriminator(self) -> nn.Module:
        """D^C for the prior's widths, with the recipe's ``discriminator`` kwargs (``width``, ``reduction``)."""
        kw = dict(self.recipe.discriminator)
        if "channels" in kw:
            raise RecipeError("recipe discriminator.channels is set by the prior network's widths; remove it")
        return FeatureDiscriminator(channels=self.prior.channels, **kw)

    def build_losses(self, device: torch.device) -> None:
        """The prior on ``device``; no perceptual term (DFPGnet has none, whatever the recipe's ``per``)."""
        if self.prior is not None:
            self._prior = self.prior.to(device)
        self.perceptual = None
        self.perceptual_status = "off (DFPGnet's losses: pixel L1, feature GAN, prior loss)"

    def reset_loaded_state(self, state: dict[str, torch.Tensor], g: nn.Module) -> dict[str, torch.Tensor]:
        """``--init`` weights for G: a G state as it is, or the G part (``generator.*``) of a checkpoint's
        generator-and-heads state."""
        if state and all(k.startswith(("generator.", "heads.")) for k in state):
            return {k[len("generator."):]: v for k, v in state.items() if k.startswith("generator.")}
        return dict(state)

    # ------------------------------------------------------------------------------------------ steps

    def train_step(self, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """One D^C step (Eq. 6), then one G step (Eq. 10) against the frozen D^C."""
        b, s = batch["blurry"], batch["sharp"]
        w = self.recipe.loss
        parts: dict[str, torch.Tensor] = {}
        if not self.prior_stream:  # B1: the deblurring stream alone, pixel loss only
            with ctx.autocast():
                img = self.adapter(ctx.g, b)
            pix = pixel_loss(img, s)
            total = w.pix * pix
            ctx.backward("g", total)
            return {"g_pix": pix.detach(), "g_total": total.detach()}
        prior = self.prior
        assert prior is not None
        with torch.no_grad(), ctx.autocast():
            targets = [t.float() for t in prior(s)]
        with ctx.autocast():
            img, preds = ctx.g(b, [t.shape[-2:] for t in targets])
        attend = None
        adv = None
        if ctx.d is not None:
            set_requires_grad(ctx.d, True)
            n = b.shape[0]
            with ctx.autocast():
                logits = ctx.d([torch.cat([t, p.detach().to(t.dtype)]) for t, p in zip(targets, preds)])
            logits = logits.float()
            d_real, d_fake = adversarial_bce(logits[:n], True), adversarial_bce(logits[n:], False)
            d_loss = d_real + d_fake
            ctx.backward("d", d_loss)
            parts.update(d_real=d_real.detach(), d_fake=d_fake.detach(), d_total=d_loss.detach())
            d_mod = unwrap(ctx.d)
            set_requires_grad(d_mod, False)
            with ctx.autocast():
                adv = adversarial_bce(d_mod(preds).float(), True)
            attend = d_mod.attend
        pix = pixel_loss(img, s)
        with ctx.autocast():
            lp, terms = prior_loss(preds, targets, attend)
        total = w.pix * pix + self.options["prior_loss"] * lp
        if adv is not None:
            total = total + w.adv * adv
            parts["g_adv"] = adv.detach()
        ctx.backward("g", total)
        parts.update(g_pix=pix.detach(), g_prior=lp.detach(), g_total=total.detach(),
                     **{f"g_prior_{i + 1}": t.detach() for i, t in enumerate(terms)})
        return parts
