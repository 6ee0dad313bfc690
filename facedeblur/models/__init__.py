"""Model architectures (one file per method) and the registry."""
from __future__ import annotations

from ._registry import (TASKS, ArchEntry, ModelCard, get_arch, get_card, list_archs, list_models,
                        parse_model_name, register_model)

__all__ = ["TASKS", "ArchEntry", "ModelCard", "get_arch", "get_card", "list_archs", "list_models",
           "parse_model_name", "register_model"]


def _ensure_loaded() -> None:
    """Import the model files so their ``@register_model`` decorators run (explicit list, no scanning)."""
    from . import cfmd_gan  # noqa: F401
