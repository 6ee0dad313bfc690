"""Typed errors. Each message names the problem and the fix."""
from __future__ import annotations

import sys
import traceback
from typing import Any, Callable

__all__ = ["run_command", "FaceDeblurError", "ModelNotFoundError", "WeightsError", "WeightsNotAvailableError",
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


def run_command(func: Callable[[Any], Any], args: Any, *, debug: bool = False, interrupted: str = "interrupted") -> int:
    """Run a command handler as the ``facedeblur`` console commands do: its return value as the exit status (0 for
    None), typed errors and OS errors as one ``facedeblur: error: ...`` line and status 1 (the traceback too with
    ``debug``), Ctrl-C as ``facedeblur: <interrupted>`` and status 130."""
    try:
        return int(func(args) or 0)
    except FaceDeblurError as e:
        if debug:
            traceback.print_exc()
        print(f"facedeblur: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, permission denied, ...: the user's to fix, not a bug
        if debug:
            traceback.print_exc()
        print(f"facedeblur: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"facedeblur: {interrupted}", file=sys.stderr)
        return 130
