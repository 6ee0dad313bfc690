"""Model registry: architectures register a builder with a decorator; variants are zoo configs.

* An **architecture** (``cfmd_gan``) is a builder function in one model file, registered with
  :func:`register_model` together with its :class:`InferenceAdapter` (how the network is called and which of
  its outputs is the restored image). Model files are imported explicitly by ``facedeblur.models`` (no scanning).
* A **variant** (``cfmd-gan.paper``, ``cfmd-gan.lite``) is one YAML file in ``zoo_configs/``: architecture
  kwargs, input contract, capabilities, weights source, licence, training record, metrics. It is read
  lazily, when a name is asked for, into a :class:`~facedeblur.cards.ModelCard`.
* A **family** (``cfmd-gan``) resolves to its variant marked ``default: true``.
* Sources outside the zoo use timm's grammar: ``hf-hub:org/repo[@revision]`` and ``local-dir:PATH``.

The card types live in :mod:`facedeblur.cards` and are re-exported here for existing imports.
"""
from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable, Iterator

import yaml

from ..cards import TRAINING_RECORD_KEYS, Capabilities, InputContract, ModelCard, PaperRef, WeightsSpec
from ..errors import CapabilityError, DataError, ModelNotFoundError

if TYPE_CHECKING:  # annotations only: torch loads when a network is called
    import torch
    from torch import nn

__all__ = ["register_model", "unregister_model", "registry_scope", "ModelCard", "TRAINING_RECORD_KEYS",
           "WeightsSpec", "InputContract", "Capabilities", "PaperRef", "ArchEntry", "InferenceAdapter",
           "default_adapter", "adapter_for", "get_arch", "list_archs", "list_models", "get_card", "card_from_dict",
           "parse_model_name", "TASKS"]

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


def list_archs() -> list[str]:
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


def card_from_dict(data: dict[str, Any], *, source: str = "zoo") -> ModelCard:
    """:meth:`ModelCard.from_dict` with a missing ``task`` taken from the registered architecture."""
    return ModelCard.from_dict(data, source=source, task_of=lambda arch: get_arch(arch).task)


def _zoo_files() -> dict[str, Any]:
    return {p.name[:-5]: p for p in resources.files("facedeblur.zoo_configs").iterdir() if p.name.endswith(".yaml")}


def _read_zoo_card(variant: str) -> ModelCard:
    files = _zoo_files()
    data = yaml.safe_load(files[variant].read_text(encoding="utf-8"))
    if data.get("name") != variant:
        raise ValueError(f"zoo config {variant}.yaml names itself {data.get('name')!r}")
    return card_from_dict(data)


def _default_variants() -> dict[str, str]:
    out: dict[str, str] = {}
    for variant in _zoo_files():
        card = _read_zoo_card(variant)
        if card.default:
            if card.family in out:
                raise ValueError(f"two default variants for {card.family}: {out[card.family]} and {variant}")
            out[card.family] = variant
    return out


def parse_model_name(name: str) -> tuple[str, str]:
    """Split a model name into (source, rest): ``("zoo", "cfmd-gan.paper")``, ``("hf-hub", "org/repo@rev")``,
    ``("local-dir", "/path")``. A plain name that looks like a path is rejected (timm's rule): falling back
    to a zoo model of the same basename would silently load different weights."""
    if not isinstance(name, str) or not name.strip():
        raise ModelNotFoundError(f"model name must be a non-empty string, got {name!r}")
    for prefix in ("hf-hub:", "hf_hub:", "local-dir:"):
        if name.startswith(prefix):
            rest = name[len(prefix):]
            if not rest:
                raise ModelNotFoundError(f"{name!r}: nothing after the {prefix!r} prefix")
            return prefix[:-1].replace("_", "-"), rest
    if any(ch in name for ch in "/\\:"):
        raise ModelNotFoundError(
            f"{name!r} looks like a path or repository id, not a zoo model name. Use 'hf-hub:ORG/REPO[@REVISION]' "
            f"for a Hugging Face Hub repository or 'local-dir:PATH' for a folder with model.safetensors + config.json.")
    return "zoo", name


def resolve_zoo_name(name: str) -> str:
    """``cfmd-gan`` -> its default variant; ``cfmd-gan.paper`` -> itself; unknown -> ModelNotFoundError."""
    files = _zoo_files()
    if name in files:
        return name
    defaults = _default_variants()
    if name in defaults:
        return defaults[name]
    import difflib

    known = sorted(set(files) | set(defaults))
    close = [n for n in known if n.split(".")[0] == name.split(".")[0]] or difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ModelNotFoundError(f"unknown model {name!r}.{hint} See facedeblur.list_models() or `facedeblur list`.")


def get_card(name: str, cache_dir: str | None = None) -> ModelCard:
    """The card of a zoo name (family or variant), or of an ``hf-hub:``/``local-dir:`` source (whose
    ``config.json`` is fetched through ``facedeblur.weights``, cached in ``cache_dir``)."""
    source, rest = parse_model_name(name)
    if source != "zoo":
        from ..weights import card_from_source

        return card_from_source(source, rest, cache_dir=cache_dir)
    return _read_zoo_card(resolve_zoo_name(rest))


def list_models(pattern: str = "*", task: str | None = None, pretrained: bool | None = None) -> list[str]:
    """Zoo variant names matching a glob ``pattern`` (families match too: ``cfmd-gan`` lists its variants),
    optionally filtered by ``task`` (one of :data:`TASKS`) and by whether trained weights exist."""
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None, not {task!r}")
    out = []
    for variant in sorted(_zoo_files()):
        if not (fnmatch.fnmatch(variant, pattern) or fnmatch.fnmatch(variant.split(".")[0], pattern)):
            continue
        card = _read_zoo_card(variant)
        if task is not None and card.task != task:
            continue
        if pretrained is not None and card.pretrained != pretrained:
            continue
        out.append(variant)
    return out
