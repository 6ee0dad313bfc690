"""facedeblur: face motion deblurring model zoo (five published methods behind one interface)."""
from __future__ import annotations

from .errors import (CapabilityError, DataError, FaceDeblurError, InputError, ModelNotFoundError, WeightsError,
                     WeightsIntegrityError, WeightsMismatchError, WeightsNotAvailableError)
from .models import list_models
from .models._registry import ModelCard

__version__ = "0.1.0"

__all__ = ["list_models", "model_info", "create_model", "ModelCard", "FaceDeblurError", "ModelNotFoundError",
           "WeightsError", "WeightsNotAvailableError", "WeightsIntegrityError", "WeightsMismatchError",
           "InputError", "CapabilityError", "DataError", "__version__"]


def model_info(name: str) -> ModelCard:
    """The card of a model: paper, architecture kwargs, input contract, capabilities, weights, licence, metrics."""
    from .models import get_card

    return get_card(name)


def create_model(name: str, pretrained: bool = False, **overrides):
    """The bare inference network of ``name`` (a GAN's generator), random init unless ``pretrained=True``.

    For training and inspection; use :func:`facedeblur.load` for a ready :class:`Deblurrer`.
    """
    from .models import get_arch, get_card

    card = get_card(name)
    kwargs = {**card.arch_kwargs, **overrides}
    model = get_arch(card.architecture).builder(**kwargs)
    if pretrained:
        from .weights import load_pretrained_into

        load_pretrained_into(model, card)
    return model
