"""Zoo names and cards: the name grammar, families, variants (one YAML file each) and :func:`get_card`.

* A **variant** (``cfmd-gan.paper``, ``cfmd-gan.lite``) is one YAML file in ``zoo_configs/`` (installed as
  ``facedeblur.zoo_configs``): architecture kwargs, input contract, capabilities, weights source, licence,
  training record, metrics. It is read when a name is asked for, into a :class:`~facedeblur.cards.ModelCard`.
* A **family** (``cfmd-gan``) resolves to its variant marked ``default: true``.
* Sources outside the zoo use timm's grammar: ``hf-hub:org/repo[@revision]`` and ``local-dir:PATH``
  (:mod:`facedeblur.models.sources`).
"""
from __future__ import annotations

import fnmatch
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..cards import ModelCard
from ..errors import ModelNotFoundError
from ._registry import TASKS, card_from_dict

__all__ = ["get_card", "list_models", "parse_model_name", "resolve_zoo_name"]

#: libyaml's safe loader when PyYAML was built with it (several times faster on the long zoo configs)
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _zoo_dir() -> Any:
    """The folder of the zoo configs: the installed package ``facedeblur.zoo_configs``, or -- when facedeblur is
    imported from a source checkout that is not (editably) installed, e.g. ``python -m pytest`` in a clone after
    ``pip install .`` -- the checkout's ``zoo_configs/`` next to the package."""
    try:
        return resources.files("facedeblur.zoo_configs")
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parents[2] / "zoo_configs"
        if (checkout / "__init__.py").is_file():
            return checkout
        raise ModelNotFoundError("this facedeblur installation has no zoo configs (the package facedeblur.zoo_configs "
                                 "is missing): reinstall facedeblur") from None


def _zoo_files() -> dict[str, Any]:
    """Variant name -> its YAML file (read anew on every call: no cache)."""
    return {p.name[:-5]: p for p in _zoo_dir().iterdir() if p.name.endswith(".yaml")}


def _read_zoo_card(variant: str) -> ModelCard:
    files = _zoo_files()
    data = yaml.load(files[variant].read_text(encoding="utf-8"), Loader=_YAML_LOADER)
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
    ``config.json`` is read by :mod:`facedeblur.models.sources`, Hub files cached in ``cache_dir``).

    A zoo card is read from its YAML file without importing a model file (no torch; see
    :func:`~facedeblur.models.arch_task`)."""
    source, rest = parse_model_name(name)
    if source != "zoo":
        from .sources import card_from_source

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
