"""facedeblur: face motion deblurring model zoo (five published methods behind one interface)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ._version import __version__
from .errors import (CapabilityError, DataError, FaceDeblurError, InputError, ModelNotFoundError, WeightsError,
                     WeightsIntegrityError, WeightsMismatchError, WeightsNotAvailableError)
from .cards import ModelCard
from .models import list_models

if TYPE_CHECKING:  # annotations only: torch loads on first use
    import os

    import torch

    from .restore.deblurrer import Deblurrer


__all__ = ["load", "export_onnx", "Deblurrer", "restore_faces", "restore_video_file", "FaceRecord", "NoFaceWarning", "list_models", "model_info", "create_model", "ModelCard", "DeviceError",
           "BFloat16PerformanceWarning", "FaceDeblurError", "ModelNotFoundError",
           "WeightsError", "WeightsNotAvailableError", "WeightsIntegrityError", "WeightsMismatchError",
           "InputError", "CapabilityError", "DataError", "__version__"]


#: torch-heavy public names -> the module (under facedeblur) that defines them
_LAZY = {"Deblurrer": "restore.deblurrer", "DeviceError": "restore.device",
         "BFloat16PerformanceWarning": "restore.device", "restore_faces": "restore.photos",
         "restore_video_file": "restore.photos", "export_onnx": "restore.deblurrer", "FaceRecord": "faces.pipeline", "NoFaceWarning": "faces.pipeline"}


def __getattr__(name: str):
    """Import torch-heavy names on first use, so ``import facedeblur`` (and ``facedeblur --help``) stay fast."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load(name: str, device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
         weights: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
         engine: str = "torch") -> Deblurrer:
    """A ready :class:`Deblurrer` for ``name`` with its trained weights (never random).

    ``device``: ``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda[:N]"``, ``"mps"``. ``dtype``: None
    (float32) or one of the card's ``capabilities.dtypes``. ``weights``: an explicit file or folder (else the
    embedded weights, else the Hugging Face Hub, cached in ``cache_dir``). Raises
    :class:`WeightsNotAvailableError` when no trained weights exist. ``engine="onnxruntime"`` (or a name
    ``"onnx:FILE.onnx"``) runs the model on ONNX Runtime (CPU). See :func:`facedeblur.restore.load`.
    """
    from .restore.deblurrer import load as _load

    return _load(name, device=device, dtype=dtype, weights=weights, cache_dir=cache_dir, engine=engine)


def model_info(name: str, cache_dir: str | os.PathLike | None = None) -> ModelCard:
    """The card of a model: paper, architecture kwargs, input contract, capabilities, weights, licence, metrics."""
    from .models import get_card

    return get_card(name, cache_dir=cache_dir)


def create_model(name: str, pretrained: bool = False, cache_dir: str | os.PathLike | None = None, **overrides):
    """The bare inference network of ``name`` (a GAN's generator), random init unless ``pretrained=True``.

    For training and inspection; use :func:`facedeblur.load` for a ready :class:`Deblurrer`.
    """
    from .models import get_arch, get_card

    card = get_card(name, cache_dir=cache_dir)
    kwargs = {**card.arch_kwargs, **overrides}
    model = get_arch(card.architecture).builder(**kwargs)
    if pretrained:
        if overrides:
            raise CapabilityError(f"create_model({name!r}, pretrained=True) cannot change architecture kwargs "
                                  f"{sorted(overrides)}: the trained weights fit {card.arch_kwargs}")
        from .weights import load_pretrained_into

        load_pretrained_into(model, card, cache_dir=cache_dir)
    return model
