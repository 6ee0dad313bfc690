"""Typed errors. Each message names the problem and the fix."""
from __future__ import annotations

__all__ = ["FaceDeblurError", "ModelNotFoundError", "WeightsError", "WeightsNotAvailableError",
           "WeightsIntegrityError", "WeightsMismatchError", "InputError", "CapabilityError", "DataError"]


class FaceDeblurError(Exception):
    """Base class of every error facedeblur raises on purpose."""


class ModelNotFoundError(FaceDeblurError, KeyError):
    """An unknown model name, or a name in the wrong form."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsError(FaceDeblurError):
    """Base class for weight problems."""


class WeightsNotAvailableError(WeightsError):
    """No trained weights can be found (none published, or offline and not cached)."""


class WeightsIntegrityError(WeightsError):
    """A weight file is truncated, corrupt, or its sha256 does not match the card."""


class WeightsMismatchError(WeightsError):
    """Weight keys or shapes do not fit the architecture."""


class InputError(FaceDeblurError, ValueError):
    """An input image/video/tensor this library cannot interpret."""


class CapabilityError(FaceDeblurError, ValueError):
    """An option the model does not support (``u`` on a model without it, ``u`` outside [0, 1], ...)."""


class DataError(FaceDeblurError):
    """A dataset folder or prepared cache that cannot be used."""
