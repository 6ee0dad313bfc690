"""Model architectures (one file per method), their inference adapters, the registry and the zoo's names."""
from __future__ import annotations

from importlib import import_module

from ._registry import (TASKS, ArchEntry, InferenceAdapter, ModelCard, adapter_for, arch_task, card_from_dict,
                        default_adapter, get_arch, list_archs, param_count, register_model, registry_scope,
                        unregister_model)
from .zoo import get_card, list_models, parse_model_name, resolve_zoo_name

__all__ = ["TASKS", "MODEL_FILES", "ArchEntry", "InferenceAdapter", "ModelCard", "adapter_for", "arch_task",
           "card_from_dict", "default_adapter", "get_arch", "get_card", "list_archs", "list_models", "param_count",
           "parse_model_name", "register_model", "registry_scope", "resolve_zoo_name", "unregister_model"]

#: The zoo's model files (modules of this package) and, for each, the architectures it registers with their task.
#: Listed, not scanned. The tasks are declared here too so that a zoo card can be read (``facedeblur list`` /
#: ``info``) without importing the model files and torch; :func:`register_model` refuses a registration whose task
#: disagrees, and ``tests/test_registry.py`` checks that each file registers exactly what is listed.
MODEL_FILES: dict[str, dict[str, str]] = {
    "cfmd_gan": {"cfmd_gan": "image-continuous"},
    "srn": {"srn": "image"},
    "cyclegan": {"cyclegan_blur": "image"},
    "chrysos": {"chrysos_hg": "image", "chrysos_cgan": "image", "chrysos": "pipeline"},
    "dfpgnet": {"dfpgnet": "image"},
    "finenet": {"finenet": "video"},
}


def _ensure_loaded() -> None:
    """Import the model files of :data:`MODEL_FILES` so their ``@register_model`` decorators run."""
    for module in MODEL_FILES:
        import_module(f".{module}", __name__)
