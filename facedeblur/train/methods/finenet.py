"""FineNet's training wrapper (paper §3.6 Eq. 9-10, §4.2; the network is :mod:`facedeblur.models.finenet`).

* Samples: ``clip`` (T = 5 consecutive blurry frames and their sharp frames); the target is the sharp centre frame.
  Validation scores the restored centre frame (the base class's clip protocol), with zero landmark heatmaps -- what
  the zoo's inference passes.
* Losses (§3.6): each branch gets ``L = |I_gt - I|_1 + |G_x(I_gt) - G_x(I)|_1 + |G_y(I_gt) - G_y(I)|_1`` (Eq. 9 for
  the interpolation branch, Eq. 10 for the enhancement branch; G_x, G_y forward differences, the spatial gradient
  loss of [24]); the combination module gets ``L_combine = |I_gt - Î|_1`` only. Norms are taken as means over the
  pixels (the paper writes ||.||_1 without saying how it is normalised).
* Order (§3.6): "After training the enhancement and interpolation branches, we train the combination module". The
  recipe's ``method.stage`` says which: ``branches`` (Eq. 9 + 10; the combination module is frozen, so validation
  scores the mean of the two branches that its zero-initialised output gives), ``combine`` (the branches frozen, the
  L1 loss of the combined output; start it with ``--init`` from the branches run), or ``joint`` (all three losses at
  once; not in the paper). Frozen parts have ``requires_grad = False``, so DDP and the optimiser skip them.
* Optimiser (§4.2): Adam, betas (0.9, 0.999), initial learning rate 1e-4, batch 12, ~200,000 iterations; the paper
  gives no schedule, so the paper recipe keeps the rate constant (``lr_decay_per_epoch: 1.0``).
* Landmarks (§3.2): ``method.landmarks: none`` (default) trains with zero heatmaps, the network the zoo runs today
  (Table 2's "FOC without landmarks" at the top level); ``batch`` reads each item's ``landmarks`` (T, P, 2) in pixels
  (x, y; P = 68 or 5; NaN rows where detection failed), turns them into heatmaps and zeroes them per sample with
  probability ``method.landmark_dropout`` so that one network also runs without landmarks. ``method.grad`` weighs
  the gradient terms (1.0 = Eq. 9-10).
* Supervised only: the paper has no adversarial or perceptual term (the recipe's ``adv``/``per`` are ignored).
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from ...errors import DataError
from ...models.finenet import CENTRE, FineNet
from ..recipes import RecipeError
from . import register_method
from .base import StepContext, TrainingMethod, unwrap

__all__ = ["FineNetMethod", "gradient_l1", "branch_loss", "STAGES", "METHOD_OPTIONS"]

STAGES = ("branches", "combine", "joint")
#: the recipe's ``training.method`` keys and their defaults (read-only)
METHOD_OPTIONS: Mapping[str, Any] = MappingProxyType({"stage": "branches", "grad": 1.0, "landmarks": "none",
                                                      "landmark_dropout": 0.5})


def gradient_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``|G_x(t) - G_x(p)|_1 + |G_y(t) - G_y(p)|_1`` with forward differences, each a mean over its pixels (the
    spatial gradient loss of FineNet Eq. 9-10)."""
    p, t = pred.float(), target.float()
    gx = ((t[..., :, 1:] - t[..., :, :-1]) - (p[..., :, 1:] - p[..., :, :-1])).abs().mean()
    gy = ((t[..., 1:, :] - t[..., :-1, :]) - (p[..., 1:, :] - p[..., :-1, :])).abs().mean()
    return gx + gy


def branch_loss(pred: torch.Tensor, target: torch.Tensor, grad: float = 1.0) -> torch.Tensor:
    """Eq. 9 / 10: ``|I_gt - I|_1 + grad * (|G_x ...|_1 + |G_y ...|_1)`` (means over the pixels)."""
    return (target.float() - pred.float()).abs().mean() + grad * gradient_l1(pred, target)


def _options(recipe_method: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(recipe_method) - set(METHOD_OPTIONS))
    if unknown:
        raise RecipeError(f"training.method has unknown keys {unknown} for finenet; known: "
                          f"{', '.join(sorted(METHOD_OPTIONS))}")
    opts = {**METHOD_OPTIONS, **dict(recipe_method)}
    if opts["stage"] not in STAGES:
        raise RecipeError(f"training.method.stage must be one of {list(STAGES)}, got {opts['stage']!r}")
    if opts["landmarks"] not in ("none", "batch"):
        raise RecipeError(f"training.method.landmarks must be 'none' (zero heatmaps) or 'batch' (the items' "
                          f"'landmarks'), got {opts['landmarks']!r}")
    for key in ("grad", "landmark_dropout"):
        v = opts[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (key == "landmark_dropout" and v > 1):
            raise RecipeError(f"training.method.{key} must be a number >= 0{' and <= 1' if key != 'grad' else ''}, "
                              f"got {v!r}")
        opts[key] = float(v)
    return opts


@register_method("finenet")
class FineNetMethod(TrainingMethod):
    """FineNet on ``clip`` samples: Eq. 9-10 for the branches, L1 for the combination, staged as §3.6 says."""

    sample_kind: ClassVar[str] = "clip"
    loss_notes: ClassVar[str] = ("FineNet Eq. 9-10: L1 + spatial-gradient L1 (forward differences, means over the "
                                 "pixels) per branch on the sharp centre frame; the combination module L1 only; "
                                 "training.method.stage picks branches / combine (section 3.6's order) / joint")
    validation_note: ClassVar[str] = ("the restored centre frame of each 5-frame clip, zero landmark heatmaps (the "
                                      "zoo's inference), against the sharp centre frame")
    progress_parts: ClassVar[tuple[str, ...]] = ("g_total", "g_enh", "g_int", "g_comb")

    def __init__(self, arch: Any, arch_kwargs: Mapping[str, Any], recipe: Any) -> None:
        super().__init__(arch, arch_kwargs, recipe)
        self.options = _options(recipe.method)
        branches = tuple(self.arch_kwargs.get("branches", ("enhancement", "interpolation")))
        if self.options["stage"] == "combine" and len(branches) != 2:
            raise RecipeError(f"training.method.stage 'combine' trains the combination module, which a FineNet with "
                              f"branches {list(branches)} does not have; use stage 'branches'")
        if self.options["landmarks"] == "batch" and not int(self.arch_kwargs.get("heatmap_channels", 68)):
            raise RecipeError("training.method.landmarks 'batch' needs a FineNet with landmark input "
                              "(heatmap_channels > 0)")

    @property
    def has_discriminator(self) -> bool:
        return False  # no adversarial term in the paper

    def build_losses(self, device: torch.device) -> None:
        """Nothing to build: the losses are Eq. 9-10 and an L1 (no perceptual term, whatever ``loss.per`` says)."""
        self.perceptual, self.perceptual_status = None, "off (FineNet's losses are Eq. 9-10 and L1, no perceptual term)"

    def build_generator(self, device: torch.device) -> nn.Module:
        """The network with the parts this stage does not train frozen (``requires_grad = False``)."""
        g = super().build_generator(device)
        self.freeze_(g)
        return g

    def freeze_(self, g: nn.Module) -> None:
        """Freeze what ``method.stage`` does not train: the combination module (``branches``) or both branches
        (``combine``)."""
        net = unwrap(g)
        stage = self.options["stage"]
        if not isinstance(net, FineNet):
            return
        if stage == "branches" and net.combine is not None:
            net.combine.requires_grad_(False)
        elif stage == "combine":
            for branch in (net.enhancement, net.interpolation):
                if branch is not None:
                    branch.requires_grad_(False)

    def heatmaps(self, batch: Mapping[str, Any], g: nn.Module, frames: torch.Tensor) -> torch.Tensor | None:
        """The heatmaps of a batch: None (zeros) with ``landmarks: none``; else from the items' ``landmarks``,
        zeroed per sample with probability ``landmark_dropout``."""
        if self.options["landmarks"] == "none":
            return None
        pts = batch.get("landmarks")
        if not isinstance(pts, torch.Tensor) or pts.dim() != 4 or pts.shape[:2] != frames.shape[:2] \
                or pts.shape[-1] != 2:
            got = tuple(pts.shape) if isinstance(pts, torch.Tensor) else type(pts).__name__
            raise DataError(f"training.method.landmarks 'batch' needs each clip item to carry 'landmarks' (T, P, 2) "
                            f"pixel positions (x, y; NaN where detection failed), got {got}")
        net = unwrap(g)
        hm = net.heatmaps_from_landmarks(pts.detach().cpu(), frames.shape[-2:]).to(frames.device, frames.dtype)
        p = self.options["landmark_dropout"]
        if p > 0:
            keep = (torch.rand(hm.shape[0]) >= p).to(hm.device, hm.dtype)
            hm = hm * keep.view(-1, 1, 1, 1, 1)
        return hm

    def train_step(self, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """One Adam step on the stage's losses."""
        b, s = batch["blurry"], batch["sharp"]
        gt = s[:, CENTRE] if s.dim() == 5 else s
        heat = self.heatmaps(batch, ctx.g, b)
        with ctx.autocast():
            final, outs = ctx.g(b, heat, return_branches=True)
        stage, grad = self.options["stage"], self.options["grad"]
        parts: dict[str, torch.Tensor] = {}
        total = gt.new_zeros((), dtype=torch.float32)
        if stage in ("branches", "joint"):
            for name, img in outs.items():
                term = branch_loss(img, gt, grad)
                parts["g_enh" if name == "enhancement" else "g_int"] = term.detach()
                total = total + term
        if stage in ("combine", "joint") and len(outs) == 2:
            term = (gt.float() - final.float()).abs().mean()
            parts["g_comb"] = term.detach()
            total = total + term
        ctx.backward("g", total)
        parts["g_total"] = total.detach()
        return parts
