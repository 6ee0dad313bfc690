"""Architecture registry: model files register a builder (and its inference adapter) with a decorator.

* An **architecture** (``cfmd_gan``) is a builder function in one model file, registered with
  :func:`register_model` together with its :class:`InferenceAdapter` (how the network is called and which of
  its outputs is the restored image). The zoo's model files are listed in ``facedeblur.models.MODEL_FILES``
  (module -> the architectures it registers and their tasks) and imported on first use (no scanning).
* Variants, families and the name grammar (zoo configs, ``hf-hub:``, ``local-dir:``) are
  :mod:`facedeblur.models.zoo`; cards of models outside the zoo are read by :mod:`facedeblur.models.sources`.

The card types live in :mod:`facedeblur.cards` and are re-exported here for existing imports.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..cards import TRAINING_RECORD_KEYS, Capabilities, InputContract, ModelCard, PaperRef, WeightsSpec
from ..errors import CapabilityError, DataError, ModelNotFoundError

if TYPE_CHECKING:  # annotations only: torch loads when a network is called
    import torch
    from torch import nn

__all__ = ["param_count", "register_model", "unregister_model", "registry_scope", "ModelCard", "TRAINING_RECORD_KEYS",
           "WeightsSpec", "InputContract", "Capabilities", "PaperRef", "ArchEntry", "InferenceAdapter",
           "default_adapter", "adapter_for", "get_arch", "list_archs", "arch_task", "card_from_dict", "TASKS"]

TASKS = ("image", "image-continuous", "video", "pipeline")


# ----------------------------------------------------------------------------------------------- adapters


@dataclass(frozen=True)
class InferenceAdapter:
    """How a network is called and which of its outputs is the restored full-resolution image.

    ``control``: the network takes the continuous control factor, ``model(x, u)`` with ``u`` (N,) float32
    (task ``image-continuous``); otherwise ``model(x)``. ``x`` is (N, 3, H, W), or (N, T, 3, H, W) for
    multi-frame networks (task ``video``: the frames of a window). ``multiscale``: the network returns its outputs
    coarse to fine (MIMO-UNet style) and the last one is the full-resolution image; a single tensor counts as one
    scale. Subclass it (override :meth:`forward` / :meth:`final`) for other calling conventions.

    The :class:`~facedeblur.restore.Deblurrer`, the trainer's validation and post-training calibrations all call
    networks through this, so a method's calling convention is written once.
    """

    control: bool = False
    multiscale: bool = False

    def controls(self, batch: Any, device: Any = None) -> "torch.Tensor | None":
        """The control input of a batch of samples (their ``u`` as (N,) float32 on ``device``), or None."""
        if not self.control:
            return None
        try:
            u = batch["u"]
        except (KeyError, TypeError):
            raise DataError("this network takes a control factor u, but the samples have no 'u'; train and "
                            "validate it on 'moments' samples (blurry, sharp, u)") from None
        import torch

        u = torch.as_tensor(u)
        return (u.to(torch.float32) if device is None else u.to(device, torch.float32)).reshape(-1)

    def forward(self, model: "nn.Module", x: "torch.Tensor", u: "torch.Tensor | None" = None) -> Any:
        """The network's raw outputs for input ``x`` (and control ``u`` when :attr:`control`)."""
        if self.control:
            if u is None:
                raise CapabilityError("this network needs its control factor u (a (N,) tensor in [0, 1])")
            return model(x, u)
        return model(x)

    def final(self, outputs: Any) -> "torch.Tensor":
        """The full-resolution image among the raw ``outputs`` of :meth:`forward`."""
        import torch

        if self.multiscale and isinstance(outputs, (list, tuple)) and outputs:
            outputs = outputs[-1]
        if not isinstance(outputs, torch.Tensor):
            kind = "a tensor or a list of tensors (coarse to fine)" if self.multiscale else "a tensor"
            raise TypeError(f"the network returned {type(outputs).__name__}; its adapter expects {kind}. Register "
                            f"the architecture with the adapter that matches its forward (register_model(..., "
                            f"adapter=...))")
        return outputs

    def __call__(self, model: "nn.Module", x: "torch.Tensor", u: "torch.Tensor | None" = None) -> "torch.Tensor":
        """The restored full-resolution image ``final(forward(model, x, u))``."""
        return self.final(self.forward(model, x, u))


def default_adapter(task: str) -> InferenceAdapter:
    """The adapter of a task: ``model(x, u)`` for ``image-continuous``, ``model(x)`` otherwise; one output."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")
    return InferenceAdapter(control=task == "image-continuous")


# ----------------------------------------------------------------------------------------------- architectures


@dataclass(frozen=True)
class ArchEntry:
    """A registered architecture: its builder (the inference network), task, adapter and optional training parts."""

    name: str
    builder: Callable[..., Any]
    task: str
    discriminator: str | None = None
    adapter: InferenceAdapter = field(default_factory=InferenceAdapter)


_ARCHS: dict[str, ArchEntry] = {}


def register_model(name: str, *, task: str, discriminator: str | None = None,
                   adapter: InferenceAdapter | None = None) -> Callable:
    """Decorator registering ``fn(**arch_kwargs) -> nn.Module`` as architecture ``name``.

    ``task`` is one of :data:`TASKS`: single image, single image with continuous control ``u``,
    multi-frame video, or a two-stage pipeline. ``adapter`` says how the network is called and which output is the
    image (default: :func:`default_adapter` of the task). ``discriminator`` names a builder in the same module,
    used only by the default training wrapper (:class:`facedeblur.train.methods.TrainingMethod`).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")
    if adapter is not None and not isinstance(adapter, InferenceAdapter):
        raise TypeError(f"adapter must be an InferenceAdapter, not {type(adapter).__name__}")
    declared = _declared_tasks().get(name)
    if declared is not None and declared != task:
        raise ValueError(f"architecture {name!r} registers task {task!r}, but facedeblur.models.MODEL_FILES declares "
                         f"{declared!r}; make the two agree")
    entry_adapter = adapter if adapter is not None else default_adapter(task)

    def deco(fn: Callable) -> Callable:
        if name in _ARCHS and _ARCHS[name].builder is not fn:
            raise ValueError(f"architecture {name!r} is registered twice")
        _ARCHS[name] = ArchEntry(name, fn, task, discriminator, entry_adapter)
        return fn

    return deco


def unregister_model(name: str) -> ArchEntry | None:
    """Remove architecture ``name`` from the registry (tests); returns its entry, or None if it was not there."""
    return _ARCHS.pop(name, None)


@contextmanager
def registry_scope() -> Iterator[None]:
    """Architectures registered inside the block are removed at its end, and replaced ones restored (tests).

    The zoo's model files are loaded first, so the block does not capture (and then drop) their registrations.
    """
    from . import _ensure_loaded

    _ensure_loaded()
    saved = dict(_ARCHS)
    try:
        yield
    finally:
        _ARCHS.clear()
        _ARCHS.update(saved)


def get_arch(name: str) -> ArchEntry:
    """The registered architecture ``name`` (:class:`ModelNotFoundError` listing the registered ones)."""
    from . import _ensure_loaded  # model files register on import

    _ensure_loaded()
    try:
        return _ARCHS[name]
    except KeyError:
        raise ModelNotFoundError(f"unknown architecture {name!r}; registered: {', '.join(sorted(_ARCHS))}") from None


def param_count(card: ModelCard) -> int | None:
    """Parameter count of a card's inference network, built on the meta device (no memory, no init); None when the
    builder cannot run on meta. Imports torch and the model file."""
    try:
        import torch

        with torch.device("meta"):
            model = get_arch(card.architecture).builder(**card.arch_kwargs)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # a builder that cannot run on meta: the caller shows "?"
        return None


def list_archs() -> list[str]:
    """The names of all registered architectures (the zoo's model files are imported first)."""
    from . import _ensure_loaded

    _ensure_loaded()
    return sorted(_ARCHS)


def adapter_for(card: ModelCard) -> InferenceAdapter:
    """The adapter a card's network is called with.

    The registered adapter of the card's architecture when the card has that architecture's task. Otherwise (a
    card describing a stand-in network with another task, as tests and benchmarks build) a single-output adapter
    that passes ``u`` when the card's capabilities say ``continuous_u``.
    """
    try:
        arch = get_arch(card.architecture)
    except ModelNotFoundError:
        arch = None
    if arch is not None and arch.task == card.task:
        return arch.adapter
    return InferenceAdapter(control=bool(card.capabilities.continuous_u))


# ----------------------------------------------------------------------------------------------- cards


def _declared_tasks() -> dict[str, str]:
    """Architecture -> task, as declared for the zoo's model files in ``facedeblur.models.MODEL_FILES``."""
    from . import MODEL_FILES

    return {arch: task for archs in MODEL_FILES.values() for arch, task in archs.items()}


def arch_task(name: str) -> str:
    """The task of architecture ``name`` without importing a model file when it can: a registered architecture's
    task, else the task ``MODEL_FILES`` declares for it (checked by :func:`register_model` when the file loads), else
    the model files are imported (:class:`ModelNotFoundError` for an unknown name). So reading a zoo card
    (``facedeblur list`` / ``info``) imports no torch."""
    if name in _ARCHS:
        return _ARCHS[name].task
    declared = _declared_tasks().get(name)
    return declared if declared is not None else get_arch(name).task


def card_from_dict(data: dict[str, Any], *, source: str = "zoo") -> ModelCard:
    """:meth:`ModelCard.from_dict` with a missing ``task`` taken from the architecture (:func:`arch_task`)."""
    return ModelCard.from_dict(data, source=source, task_of=arch_task)
