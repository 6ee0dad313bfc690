"""The training wrapper of one method: what the generic trainer asks of it.

The split follows BasicSR's: an architecture (``facedeblur/models/<arch>.py``) is the inference network; its
training wrapper, a :class:`TrainingMethod` subclass registered under the architecture's name
(:func:`facedeblur.train.methods.register_method`), knows how to train it. The generic
:class:`~facedeblur.train.trainer.Trainer` owns everything else: the deterministic sample stream, resume, DDP,
EMA, AMP, validation by severity bin, checkpoints, SIGTERM handling and export.

A wrapper provides

* its networks: :meth:`~TrainingMethod.build_generator` (the registered builder plus the recipe's init options,
  :meth:`~TrainingMethod.init_generator_`) and, for adversarial training, :meth:`~TrainingMethod.build_discriminator`;
* its optimisers (:meth:`~TrainingMethod.make_optimizer`) and losses (:meth:`~TrainingMethod.build_losses`);
* its iteration (:meth:`~TrainingMethod.train_step`): GAN (e.g. one D step, then one G step) or supervised,
  using the :class:`StepContext` the trainer passes for autocast and optimiser steps;
* the sample kind it consumes (:attr:`~TrainingMethod.sample_kind`, see :mod:`facedeblur.data.kinds`);
* the reset of post-training state when a run starts from other weights
  (:meth:`~TrainingMethod.reset_loaded_state`, ``--init``);
* optionally, a training module holding more than the shipped network (:meth:`~TrainingMethod.inference_network`
  picks the shipped one) and state of its own that checkpoints keep (:meth:`~TrainingMethod.method_state`).

The network is called through the architecture's :class:`~facedeblur.models.InferenceAdapter`
(:attr:`~TrainingMethod.adapter`), the same one inference and validation use.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, ContextManager, Iterable, Mapping

import torch
from torch import nn

from ..losses import PerceptualLoss, build_perceptual
from ..recipes import RecipeError

if TYPE_CHECKING:
    from ...models import ArchEntry, InferenceAdapter
    from ..recipes import Recipe

__all__ = ["TrainingMethod", "StepContext", "set_requires_grad", "unwrap", "make_optimizer"]


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (the module itself otherwise)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Switch gradients of every parameter of ``module`` on or off (freeze D for a generator step)."""
    for p in module.parameters():
        p.requires_grad_(flag)


def make_optimizer(params: Iterable[torch.nn.Parameter], spec: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Adam or AdamW from a validated recipe optimiser mapping (``name``, ``lr``, ``betas``, [``weight_decay``,
    ``eps``])."""
    kw: dict[str, Any] = {"lr": spec["lr"], "betas": tuple(spec["betas"])}
    for k in ("weight_decay", "eps"):
        if k in spec:
            kw[k] = spec[k]
    cls = torch.optim.AdamW if spec["name"] == "adamw" else torch.optim.Adam
    return cls(params, **kw)


@dataclass
class StepContext:
    """What the trainer hands a wrapper's :meth:`TrainingMethod.train_step` for one iteration.

    ``g`` and ``d`` are the networks being trained (wrapped in ``DistributedDataParallel`` under torchrun; use
    :func:`unwrap` for a forward pass that must not synchronise, e.g. the frozen D of a generator step); ``d`` is
    None in supervised training. ``autocast()`` is the mixed-precision context of the run (a no-op without AMP).
    ``backward(net, loss)`` with ``net`` ``"g"`` or ``"d"`` zeroes that network's gradients, back-propagates the
    (scaled) loss, clips gradients per the recipe and steps its optimiser.
    """

    g: nn.Module
    d: nn.Module | None
    device: torch.device
    autocast: Callable[[], ContextManager[Any]]
    backward: Callable[[str, torch.Tensor], None]


class TrainingMethod:
    """Base class of the training wrappers; subclass it per method and register it with ``@register_method``.

    Built by the trainer as ``cls(arch, arch_kwargs, recipe)``. Subclasses implement :meth:`train_step` and
    override the other hooks where their paper differs from the defaults.
    """

    #: the sample kind the wrapper trains on (facedeblur.data.kinds); the trainer checks the datasets against it
    sample_kind: ClassVar[str] = "pair"
    #: the sample kind of its validation data (None: :attr:`sample_kind`)
    val_kind: ClassVar[str | None] = None
    #: recorded in run.json: how the losses follow (or differ from) the paper
    loss_notes: ClassVar[str] = ""
    #: how validation items are restored, for the validation printout and the exported metrics' definition
    validation_note: ClassVar[str] = ""
    #: loss parts shown on the progress bar (when present)
    progress_parts: ClassVar[tuple[str, ...]] = ("d_total", "g_total", "g_pix")

    def __init__(self, arch: "ArchEntry", arch_kwargs: Mapping[str, Any], recipe: "Recipe") -> None:
        self.arch = arch
        self.arch_kwargs = dict(arch_kwargs)
        self.recipe = recipe
        self.perceptual: PerceptualLoss | None = None
        self.perceptual_status = "off (losses not built)"

    @property
    def adapter(self) -> "InferenceAdapter":
        """How the network is called (the architecture's registered adapter)."""
        return self.arch.adapter

    @property
    def validation_kind(self) -> str:
        """The sample kind validation items must have (:attr:`val_kind`, else :attr:`sample_kind`)."""
        return self.val_kind or self.sample_kind

    # ------------------------------------------------------------------------------------------ networks

    def build_network(self) -> nn.Module:
        """A fresh inference network of the architecture (registered builder, run's arch kwargs), on the CPU."""
        return self.arch.builder(**self.arch_kwargs)

    def build_generator(self, device: torch.device) -> nn.Module:
        """The network to train: :meth:`build_network` on ``device``, then :meth:`init_generator_`."""
        g = self.build_network().to(device)
        self.init_generator_(g)
        return g

    def init_generator_(self, g: nn.Module) -> None:
        """Apply the recipe's initialisation options to ``g``. The base wrapper supports none of them and raises
        :class:`~facedeblur.train.recipes.RecipeError` when one is set; wrappers of methods that have them
        override this."""
        r = self.recipe
        asked = [k for k, on in (("zero_init_output", r.zero_init_output), ("output_init_scale",
                                 r.output_init_scale != 1.0), ("mapping_init", r.mapping_init != "default")) if on]
        if asked:
            raise RecipeError(f"recipe option(s) {asked}: the training wrapper of {self.arch.name} "
                              f"({type(self).__name__}) has no such initialisation; remove them from the recipe")

    def inference_network(self, g: nn.Module) -> nn.Module:
        """The inference network inside ``g``, the (unwrapped) module :meth:`build_generator` returned: what the
        trainer validates, averages (EMA), loads ``--init`` weights into and exports. Default: ``g`` itself. A method
        that trains more generators than it ships, all updated by the one generator optimiser (e.g. the two
        directions of an unpaired translation), returns a container module from :meth:`build_generator` and the
        shipped network (an instance of :meth:`build_network`'s architecture) here."""
        return g

    @property
    def has_discriminator(self) -> bool:
        """Whether the method can train adversarially (default: the architecture registered a discriminator)."""
        return self.arch.discriminator is not None

    def build_discriminator(self) -> nn.Module:
        """The discriminator, with the recipe's ``discriminator`` kwargs, on the CPU. Default: the builder named by
        ``register_model(..., discriminator=NAME)`` in the architecture's module."""
        name = self.arch.discriminator
        if name is None:
            raise RecipeError(f"{self.arch.name} has no discriminator; train it supervised (--no-gan, or loss "
                              f"weight adv: 0)")
        module = importlib.import_module(self.arch.builder.__module__)
        return getattr(module, name)(**self.recipe.discriminator)

    def uses_gan(self, requested: bool) -> bool:
        """Whether the run trains adversarially: asked for (not ``--no-gan``), a discriminator exists and the
        recipe's adversarial weight is > 0."""
        return bool(requested and self.has_discriminator and self.recipe.loss.adv > 0)

    # ------------------------------------------------------------------------------------------ optimisers

    def make_optimizer(self, params: Iterable[torch.nn.Parameter], net: str) -> torch.optim.Optimizer:
        """The optimiser of network ``net`` (``"g"`` or ``"d"``): the recipe's ``optimizer`` (``d_optimizer``
        for D when set)."""
        spec = self.recipe.optimizer if net == "g" else (self.recipe.d_optimizer or self.recipe.optimizer)
        return make_optimizer(params, spec)

    # ------------------------------------------------------------------------------------------ losses

    def build_losses(self, device: torch.device) -> None:
        """Build loss modules on ``device``; the default builds the perceptual loss when the recipe weights it
        (``loss.per``) and records its status (:attr:`perceptual_status`)."""
        self.perceptual, self.perceptual_status = build_perceptual(self.recipe.loss.per)
        if self.perceptual is not None:
            self.perceptual.to(device)

    # ------------------------------------------------------------------------------------------ steps

    def train_step(self, batch: Mapping[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """One iteration on ``batch`` (already on ``ctx.device``): forward, losses and the optimiser steps through
        ``ctx.backward``. Returns the detached loss parts (0-dim tensors) to log."""
        raise NotImplementedError(f"{type(self).__name__} must implement train_step")

    # ------------------------------------------------------------------------------------------ validation

    def validation_views(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(network input, blurry reference, sharp reference) of a validation batch: the input goes through the
        adapter; the 8-bit output and the blurry baseline are both scored against the sharp reference, and the
        severity bin is the blurry reference's PSNR when the batch has no ``severity``.

        Default by :attr:`validation_kind`: ``pair``/``moments`` -- the images themselves; ``clip`` -- the whole
        clip ``(N, T, 3, H, W)`` in, the centre frame ``T // 2`` of ``blurry`` and ``sharp`` as the references
        (a video method restores the centre frame of its window, FineNet §3). Override for other protocols.
        """
        kind = self.validation_kind
        if kind == "clip":
            b, s = batch["blurry"], batch["sharp"]
            t = b.shape[1] // 2
            return b, b[:, t], s[:, t]
        if kind == "unpaired":
            raise RecipeError(f"{type(self).__name__}: 'unpaired' samples have no ground truth to validate on; set "
                              f"val_kind = 'pair' (validate on paired data) or override validation_views")
        return batch["blurry"], batch["blurry"], batch["sharp"]

    # ------------------------------------------------------------------------------------------ state

    def method_state(self) -> dict[str, Any]:
        """State the wrapper itself keeps between steps (e.g. a buffer of earlier generated images), saved in the
        trainer's checkpoints so that a resumed run continues exactly: a nest of dicts, lists, tensors and JSON
        scalars. Default: none."""
        return {}

    def load_method_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`method_state` from a checkpoint (an empty mapping when the checkpoint has none). The default
        accepts only an empty one."""
        if state:
            raise RecipeError(f"the checkpoint holds training-wrapper state {sorted(state)}, which "
                              f"{type(self).__name__} does not keep; resume it with the wrapper that wrote it")

    def reset_loaded_state(self, state: dict[str, torch.Tensor], g: nn.Module) -> dict[str, torch.Tensor]:
        """Weights a run starts from (``--init``), with post-training state that training invalidates replaced
        by ``g``'s own (default: unchanged)."""
        return dict(state)
