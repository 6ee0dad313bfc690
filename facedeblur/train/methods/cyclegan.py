"""CycleGAN's training wrapper: CycleGAN->SRN's first stage, learned blur (Nahli, Cao, Xu §3.1 Eq. 1-2, §5; Zhu et
al. 2017 §3-4).

Two generators, G: sharp -> blurry (X -> Y; the shipped network, architecture ``cyclegan_blur``) and F: blurry ->
sharp, and two 70x70 PatchGANs, D_Y on blurry and D_X on sharp images, trained on ``unpaired`` samples (a sharp face
and an unrelated real blurry face). Both generators are updated by the trainer's one generator optimiser (the
``"g"`` module is :class:`CycleGenerators`, and :meth:`CycleGANMethod.inference_network` gives G), both
discriminators by its discriminator optimiser (:class:`CycleDiscriminators`), as in CycleGAN's code.

Losses, where Nahli et al. state them and where they do not (then CycleGAN's paper §4 / code, REFERENCE_FACTS §8):

* Adversarial (Eq. 1): written by both papers in the log-likelihood form; CycleGAN trains it as a least-squares
  GAN (Zhu et al. §4 "Training details", code ``gan_mode=lsgan``), and Nahli et al. use CycleGAN's training. We use
  LSGAN: G minimises ``(D_Y(G(x)) - 1)^2``, D_Y minimises ``0.5 [(D_Y(y) - 1)^2 + D_Y(G(x))^2]`` (CycleGAN halves the
  D loss), likewise F and D_X. ``loss.adv`` weighs the generators' adversarial terms (1 in CycleGAN).
* Cycle consistency (Eq. 2): ``||F(G(x)) - x||_1 + ||G(F(y)) - y||_1`` (means), weight ``loss.cyc`` (lambda = 10;
  Nahli et al. give no value).
* Identity mapping: not in Nahli et al.; CycleGAN's code adds ``||G(y) - y||_1 + ||F(x) - x||_1`` with weight
  ``lambda_identity * lambda`` = 0.5 x 10. Here ``loss.idt`` is that multiple of ``loss.cyc`` (0.5 in the zoo
  recipes), so the term's weight is ``cyc * idt``. For a blur model it says "leave a face that is already blurry
  alone".
* D sees a history of generated images: an :class:`ImagePool` of 50 per domain (Zhu et al. §4, after Shrivastava
  et al. 2017). The pools' contents and their own random stream are part of the wrapper's checkpoint state
  (:meth:`CycleGANMethod.method_state`), so a resumed run continues exactly.
* Order per iteration (code): G and F step against the frozen discriminators, then the discriminators step on real
  images and pooled fakes.

Validation: unpaired samples have no ground truth, so the wrapper validates on ``pair`` data (``val_kind``): the
sharp face goes in, the output G(sharp) is scored against the paired blurry face, and the sharp face itself is the
baseline. A positive "gain" means G's blur is closer to the pair's real (or rendered) blur than no blur at all.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ...models.cyclegan import cyclegan_patchgan
from ..losses import LossWeights
from ..recipes import RecipeError
from . import register_method
from .base import StepContext, TrainingMethod, set_requires_grad, unwrap

__all__ = ["CycleGANMethod", "CycleGenerators", "CycleDiscriminators", "ImagePool", "lsgan_loss", "generator_loss",
           "discriminator_loss"]


class ImagePool:
    """CycleGAN's buffer of earlier generated images for the discriminator (Zhu et al. §4; Shrivastava et al. 2017).

    :meth:`query` takes a batch of generated images. Until the pool holds ``size`` images, each one is stored and
    returned as it is. Then each one, with probability 1/2, is swapped for a stored image drawn uniformly (the
    stored one is returned and the new one takes its place), and otherwise returned as it is. ``size`` 0 returns
    every batch unchanged. Random draws come from ``generator`` (a seeded ``torch.Generator`` for reproducible
    sequences), or from torch's global generator when it is None (the trainer seeds and checkpoints that one).
    """

    def __init__(self, size: int = 50, generator: torch.Generator | None = None) -> None:
        if size < 0:
            raise ValueError(f"ImagePool size must be >= 0, got {size}")
        self.size = int(size)
        self.generator = generator
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        """The images the discriminator sees in place of the batch ``images`` (N, C, H, W), detached."""
        images = images.detach()
        if self.size == 0:
            return images
        if self.images and self.images[0].device != images.device:  # e.g. restored from a checkpoint on the CPU
            self.images = [t.to(images.device) for t in self.images]
        out = []
        for img in images:
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif float(torch.rand((), generator=self.generator)) < 0.5:
                i = int(torch.randint(0, self.size, (), generator=self.generator))
                out.append(self.images[i])
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)

    def state(self) -> dict[str, Any]:
        """The stored images (a checkpointable mapping)."""
        return {"size": self.size, "images": list(self.images)}

    def load(self, state: Mapping[str, Any], device: torch.device | str | None = None) -> None:
        """Restore :meth:`state` (images moved to ``device``)."""
        if int(state.get("size", self.size)) != self.size:
            raise RecipeError(f"the checkpoint's image pool holds up to {state['size']} images, this run's {self.size}")
        self.images = [t.to(device) if device is not None else t for t in state.get("images", [])][:self.size]


class CycleGenerators(nn.Module):
    """G: sharp -> blurry (``blur``, the shipped network) and F: blurry -> sharp (``deblur``), trained together.

    ``forward(sharp, blurry)`` returns the translations, the round trips of Eq. 2 and, with ``identity``, the
    identity mappings: ``fake_blurry = G(x)``, ``rec_sharp = F(G(x))``, ``fake_sharp = F(y)``,
    ``rec_blurry = G(F(y))``, ``idt_blurry = G(y)``, ``idt_sharp = F(x)``. One call does all generator passes, so
    it runs through ``DistributedDataParallel`` as one forward.
    """

    def __init__(self, blur: nn.Module, deblur: nn.Module) -> None:
        super().__init__()
        self.blur, self.deblur = blur, deblur

    def forward(self, sharp: torch.Tensor, blurry: torch.Tensor, identity: bool = True) -> dict[str, torch.Tensor]:
        fake_blurry = self.blur(sharp)
        fake_sharp = self.deblur(blurry)
        out = {"fake_blurry": fake_blurry, "rec_sharp": self.deblur(fake_blurry),
               "fake_sharp": fake_sharp, "rec_blurry": self.blur(fake_sharp)}
        if identity:
            out["idt_blurry"] = self.blur(blurry)
            out["idt_sharp"] = self.deblur(sharp)
        return out


class CycleDiscriminators(nn.Module):
    """D_Y on the blurry domain and D_X on the sharp domain; ``forward(blurry, sharp)`` -> (D_Y scores, D_X scores)."""

    def __init__(self, d_blurry: nn.Module, d_sharp: nn.Module) -> None:
        super().__init__()
        self.d_blurry, self.d_sharp = d_blurry, d_sharp

    def forward(self, blurry: torch.Tensor, sharp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.d_blurry(blurry), self.d_sharp(sharp)


def lsgan_loss(scores: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al. 2017; CycleGAN's ``lsgan``): mean of ``(scores - 1)^2`` for real, of
    ``scores^2`` for fake, in float32."""
    scores = scores.float()
    return F.mse_loss(scores, torch.ones_like(scores) if real else torch.zeros_like(scores))


def generator_loss(out: Mapping[str, torch.Tensor], sharp: torch.Tensor, blurry: torch.Tensor,
                   scores_blurry: torch.Tensor | None, scores_sharp: torch.Tensor | None,
                   weights: LossWeights) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The generators' objective: ``adv * [L_GAN(G, D_Y) + L_GAN(F, D_X)] + cyc * L_cyc (Eq. 2) + cyc * idt *
    L_idt``. ``out`` is :class:`CycleGenerators`' output; ``scores_*`` are the frozen discriminators on
    ``out["fake_blurry"]`` / ``out["fake_sharp"]`` (None: no adversarial term, e.g. for checking the other terms).
    Returns the total and detached parts."""
    l1 = lambda a, b: F.l1_loss(a.float(), b.float())  # noqa: E731
    cyc_fwd, cyc_bwd = l1(out["rec_sharp"], sharp), l1(out["rec_blurry"], blurry)
    l_cyc = cyc_fwd + cyc_bwd
    total = weights.cyc * l_cyc
    parts = {"g_cyc_sharp": cyc_fwd.detach(), "g_cyc_blurry": cyc_bwd.detach(), "g_cyc": l_cyc.detach()}
    if weights.idt > 0 and "idt_blurry" in out:
        l_idt = l1(out["idt_blurry"], blurry) + l1(out["idt_sharp"], sharp)
        total = total + weights.cyc * weights.idt * l_idt
        parts["g_idt"] = l_idt.detach()
    if scores_blurry is not None and scores_sharp is not None:
        l_adv = lsgan_loss(scores_blurry, True) + lsgan_loss(scores_sharp, True)
        total = total + weights.adv * l_adv
        parts["g_adv"] = l_adv.detach()
    parts["g_total"] = total.detach()
    return total, parts


def discriminator_loss(real_blurry: torch.Tensor, fake_blurry: torch.Tensor, real_sharp: torch.Tensor,
                       fake_sharp: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Both discriminators' LSGAN losses from their scores, each halved as in CycleGAN:
    ``0.5 [L(D_Y(y), 1) + L(D_Y(G(x)), 0)] + 0.5 [L(D_X(x), 1) + L(D_X(F(y)), 0)]``."""
    d_y = 0.5 * (lsgan_loss(real_blurry, True) + lsgan_loss(fake_blurry, False))
    d_x = 0.5 * (lsgan_loss(real_sharp, True) + lsgan_loss(fake_sharp, False))
    total = d_y + d_x
    return total, {"d_blurry": d_y.detach(), "d_sharp": d_x.detach(), "d_total": total.detach()}


@register_method("cyclegan_blur")
class CycleGANMethod(TrainingMethod):
    """CycleGAN (Nahli §3.1; Zhu et al. §3-4) between sharp faces and real blurry faces; ships G: sharp -> blurry."""

    sample_kind: ClassVar[str] = "unpaired"
    val_kind: ClassVar[str | None] = "pair"
    #: the image pool's size per domain (Zhu et al. §4: 50)
    pool_size: ClassVar[int] = 50
    loss_notes: ClassVar[str] = ("CycleGAN: LSGAN (both papers write Eq. 1 in log form; CycleGAN trains least "
                                 "squares), D losses halved; cycle L1 (Eq. 2) weight cyc; identity L1 (CycleGAN code, "
                                 "not in Nahli et al.) weight cyc * idt; image pool of 50 per domain; G/F step, then "
                                 "D step")
    validation_note: ClassVar[str] = ("blur model: G(sharp) scored against the paired blurry image, baseline the sharp "
                                      "image itself")
    progress_parts: ClassVar[tuple[str, ...]] = ("d_total", "g_total", "g_cyc")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool_blurry = ImagePool(self.pool_size)
        self.pool_sharp = ImagePool(self.pool_size)
        #: the pools' own random stream, seeded from torch's (trainer-seeded) RNG at the first step and checkpointed,
        #: so that other draws from the global RNG (data loaders, validation) do not shift it
        self.pool_rng: torch.Generator | None = None

    def _pools_ready(self) -> None:
        if self.pool_rng is None:
            self.pool_rng = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, ())))
        self.pool_blurry.generator = self.pool_sharp.generator = self.pool_rng

    # ------------------------------------------------------------------------------------------ networks

    def build_generator(self, device: torch.device) -> nn.Module:
        """G (the registered architecture, with the recipe's init options) and F, the same architecture with the
        same kwargs (CycleGAN's two generators are alike), in one :class:`CycleGenerators` on ``device``."""
        blur = self.build_network()
        self.init_generator_(blur)
        return CycleGenerators(blur, self.build_network()).to(device)

    def inference_network(self, g: nn.Module) -> nn.Module:
        """G, the sharp -> blurry generator (what validation runs and export ships)."""
        return g.blur if isinstance(g, CycleGenerators) else g

    @property
    def has_discriminator(self) -> bool:
        return True

    def uses_gan(self, requested: bool) -> bool:
        """Always adversarial: without the GAN terms nothing pulls G(x) towards real blur (the cycle and identity
        terms alone are met by G = F = identity). ``--no-gan`` or ``loss.adv: 0`` is a :class:`RecipeError`."""
        if not requested or self.recipe.loss.adv <= 0:
            raise RecipeError(f"{self.arch.name} trains adversarially (CycleGAN); without the GAN loss the cycle and "
                              f"identity terms are met by identity generators. Drop --no-gan and keep loss.adv > 0")
        if self.recipe.loss.cyc <= 0:
            raise RecipeError(f"{self.arch.name}: loss.cyc must be > 0 (CycleGAN's lambda, 10); without the cycle "
                              f"term the translation need not keep the face")
        return True

    def build_discriminator(self) -> nn.Module:
        """Two 70x70 PatchGANs with the recipe's ``discriminator`` kwargs: D_Y (blurry) and D_X (sharp)."""
        kw = self.recipe.discriminator
        return CycleDiscriminators(cyclegan_patchgan(**kw), cyclegan_patchgan(**kw))

    def reset_loaded_state(self, state: dict[str, torch.Tensor], g: nn.Module) -> dict[str, torch.Tensor]:
        """Weights for G from ``--init``: a G state as it is, or the G part (``blur.*``) of a checkpoint's
        two-generator state."""
        if state and all(k.startswith(("blur.", "deblur.")) for k in state):
            return {k[len("blur."):]: v for k, v in state.items() if k.startswith("blur.")}
        return dict(state)

    def build_losses(self, device: torch.device) -> None:
        """Nothing to build (no perceptual term in CycleGAN)."""
        self.perceptual, self.perceptual_status = None, "off (CycleGAN's losses: LSGAN, cycle and identity L1)"

    def validation_views(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``pair`` validation of the blur model: (sharp in, sharp as the baseline, the paired blurry image as the
        reference)."""
        return batch["sharp"], batch["sharp"], batch["blurry"]

    # ------------------------------------------------------------------------------------------ state

    def method_state(self) -> dict[str, Any]:
        """The two image pools and their random stream."""
        return {"pool_blurry": self.pool_blurry.state(), "pool_sharp": self.pool_sharp.state(),
                "pool_rng": self.pool_rng.get_state() if self.pool_rng is not None else None}

    def load_method_state(self, state: Mapping[str, Any]) -> None:
        """Restore the two image pools and their random stream (empty pools when the checkpoint has none)."""
        unknown = set(state) - {"pool_blurry", "pool_sharp", "pool_rng"}
        if unknown:
            raise RecipeError(f"the checkpoint holds training-wrapper state {sorted(unknown)} that "
                              f"{type(self).__name__} does not keep")
        self.pool_blurry.load(state.get("pool_blurry", {}))
        self.pool_sharp.load(state.get("pool_sharp", {}))
        rng = state.get("pool_rng")
        self.pool_rng = None
        if rng is not None:
            self.pool_rng = torch.Generator()
            self.pool_rng.set_state(rng.to(torch.uint8))

    # ------------------------------------------------------------------------------------------ steps

    def train_step(self, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """G and F against the frozen discriminators, then both discriminators on real and pooled fake images."""
        if ctx.d is None:
            raise RecipeError(f"{self.arch.name} needs its discriminators (CycleGAN is adversarial)")
        sharp, blurry = batch["sharp"], batch["real_blurry"]
        w = self.recipe.loss
        with ctx.autocast():
            out = ctx.g(sharp, blurry, identity=w.idt > 0)
        d_mod = unwrap(ctx.d)
        set_requires_grad(d_mod, False)
        with ctx.autocast():
            s_blurry, s_sharp = d_mod(out["fake_blurry"], out["fake_sharp"])
        g_loss, parts = generator_loss(out, sharp, blurry, s_blurry, s_sharp, w)
        ctx.backward("g", g_loss)

        set_requires_grad(d_mod, True)
        n = sharp.shape[0]
        self._pools_ready()
        old_blurry = self.pool_blurry.query(out["fake_blurry"]).to(blurry.dtype)
        old_sharp = self.pool_sharp.query(out["fake_sharp"]).to(sharp.dtype)
        with ctx.autocast():  # real and fake of each domain in one batch (instance norm: per image)
            d_b, d_s = ctx.d(torch.cat([blurry, old_blurry]), torch.cat([sharp, old_sharp]))
        d_loss, d_parts = discriminator_loss(d_b[:n], d_b[n:], d_s[:n], d_s[n:])
        ctx.backward("d", d_loss)
        parts.update(d_parts)
        return parts
