"""Face pipeline: offline face detection with 5 landmarks (MTCNN, weights embedded in the package)."""
from __future__ import annotations

from .mtcnn import MTCNN, WEIGHTS_LICENSE, WEIGHTS_ORIGIN, WEIGHTS_PATH, WEIGHTS_SHA256

__all__ = ["MTCNN", "WEIGHTS_PATH", "WEIGHTS_SHA256", "WEIGHTS_ORIGIN", "WEIGHTS_LICENSE"]
