"""Model architectures (one file per method), their inference adapters and the registry."""
from __future__ import annotations

from ._registry import (TASKS, ArchEntry, InferenceAdapter, ModelCard, adapter_for, card_from_dict, default_adapter,
                        get_arch, get_card, list_archs, list_models, parse_model_name, register_model,
                        registry_scope, unregister_model)

__all__ = ["TASKS", "ArchEntry", "InferenceAdapter", "ModelCard", "adapter_for", "card_from_dict", "default_adapter",
           "get_arch", "get_card", "list_archs", "list_models", "parse_model_name", "register_model",
           "registry_scope", "unregister_model"]


def _ensure_loaded() -> None:
    """Import the model files so their ``@register_model`` decorators run (explicit list, no scanning)."""
    from . import cfmd_gan  # noqa: F401
