"""Model registry: architectures register a builder with a decorator; variants are zoo configs.

* An **architecture** (``cfmd_gan``) is a builder function in one model file, registered with
  :func:`register_model`. Model files are imported explicitly by ``facedeblur.models`` (no scanning).
* A **variant** (``cfmd-gan.paper``, ``cfmd-gan.lite``) is one YAML file in ``zoo_configs/``: architecture
  kwargs, input contract, capabilities, weights source, licence, training record, metrics. It is read
  lazily, when a name is asked for, into a :class:`ModelCard`.
* A **family** (``cfmd-gan``) resolves to its variant marked ``default: true``.
* Sources outside the zoo use timm's grammar: ``hf-hub:org/repo[@revision]`` and ``local-dir:PATH``.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable

import yaml

from ..errors import ModelNotFoundError

__all__ = ["register_model", "ModelCard", "TRAINING_RECORD_KEYS", "WeightsSpec", "InputContract", "Capabilities",
           "PaperRef", "ArchEntry", "get_arch", "list_archs", "list_models", "get_card", "parse_model_name", "TASKS"]

TASKS = ("image", "image-continuous", "video", "pipeline")


@dataclass(frozen=True)
class ArchEntry:
    """A registered architecture: its builder (the inference network) and optional training parts."""

    name: str
    builder: Callable[..., Any]
    task: str
    discriminator: str | None = None


_ARCHS: dict[str, ArchEntry] = {}


def register_model(name: str, *, task: str, discriminator: str | None = None) -> Callable:
    """Decorator registering ``fn(**arch_kwargs) -> nn.Module`` as architecture ``name``.

    ``task`` is one of :data:`TASKS`: single image, single image with continuous control ``u``,
    multi-frame video, or a two-stage pipeline. ``discriminator`` names a builder in the same module
    used by the trainer only.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")

    def deco(fn: Callable) -> Callable:
        if name in _ARCHS and _ARCHS[name].builder is not fn:
            raise ValueError(f"architecture {name!r} is registered twice")
        _ARCHS[name] = ArchEntry(name, fn, task, discriminator)
        return fn

    return deco


def get_arch(name: str) -> ArchEntry:
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


# ----------------------------------------------------------------------------------------------- cards


@dataclass(frozen=True)
class PaperRef:
    title: str = ""
    authors: str = ""
    venue: str = ""
    arxiv: str = ""
    url: str = ""


@dataclass(frozen=True)
class InputContract:
    """What the network expects: value range, colour order, face crop and size, pad multiple."""

    value_range: tuple[float, float] = (0.0, 1.0)
    channel_order: str = "rgb"
    face_size: int = 256
    face_crop: str = ""
    pad_multiple: int = 1


@dataclass(frozen=True)
class Capabilities:
    continuous_u: bool = False
    default_u: float | None = None
    frame_window: int = 1
    aligned_face_input: bool = True
    dtypes: tuple[str, ...] = ("float32",)


@dataclass(frozen=True)
class WeightsSpec:
    """Where trained weights live. ``embedded`` is a file inside ``facedeblur/weights/embedded``."""

    embedded: str | None = None
    hf_hub_id: str | None = None
    revision: str | None = None
    filename: str = "model.safetensors"
    sha256: str | None = None
    dtype: str | None = None

    @property
    def available(self) -> bool:
        return bool(self.embedded or (self.hf_hub_id and self.revision))


#: keys of a card's ``training`` section that record finished work, not the recipe: a run's record and notes, the
#: gate calibration (facedeblur.train.calibrate) and the stages that made shipped weights (tools/embed_weights.py)
TRAINING_RECORD_KEYS = frozenset({"record", "notes", "gate_calibration", "stages"})


@dataclass(frozen=True)
class ModelCard:
    """Everything facedeblur knows about one model variant (built from its zoo config)."""

    name: str
    architecture: str
    task: str
    description: str = ""
    default: bool = False
    paper: PaperRef = field(default_factory=PaperRef)
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    input: InputContract = field(default_factory=InputContract)
    capabilities: Capabilities = field(default_factory=Capabilities)
    weights: WeightsSpec = field(default_factory=WeightsSpec)
    license: str = ""
    training_data: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    source: str = "zoo"  # zoo | hf-hub | local-dir

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def pretrained(self) -> bool:
        return self.weights.available or self.source == "local-dir"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "zoo") -> "ModelCard":
        """Build a card from a zoo config / ``config.json`` mapping; unknown keys are an error."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"model config {data.get('name', '?')!r} has unknown keys {sorted(unknown)}")
        nested = {"paper": PaperRef, "input": InputContract, "capabilities": Capabilities, "weights": WeightsSpec}
        for key, typ in nested.items():
            if key in data and isinstance(data[key], dict):
                sub = dict(data[key])
                bad = set(sub) - {f.name for f in dataclasses.fields(typ)}
                if bad:
                    raise ValueError(f"model config {data.get('name', '?')!r}: unknown {key} keys {sorted(bad)}")
                for k, v in sub.items():
                    if isinstance(v, list):
                        sub[k] = tuple(v)
                data[key] = typ(**sub)
        if "task" not in data:
            data["task"] = get_arch(data["architecture"]).task
        data["source"] = source
        return cls(**data)


def _zoo_files() -> dict[str, Any]:
    return {p.name[:-5]: p for p in resources.files("facedeblur.zoo_configs").iterdir() if p.name.endswith(".yaml")}


def _read_zoo_card(variant: str) -> ModelCard:
    files = _zoo_files()
    data = yaml.safe_load(files[variant].read_text(encoding="utf-8"))
    if data.get("name") != variant:
        raise ValueError(f"zoo config {variant}.yaml names itself {data.get('name')!r}")
    return ModelCard.from_dict(data)


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
