"""The face record, the landmark-detector interface and dlib's 68-point detector.

Used by the landmark metrics (:mod:`facedeblur.metrics.landmarks`), the data engine
(:mod:`facedeblur.data.landmarks` re-exports them) and the face detector of the face pipeline (its
:class:`Face` records). They live here, below the data engine, so that the metrics import nothing from
:mod:`facedeblur.data`. dlib loads only when a :class:`DlibLandmarker` is built (the ``[landmarks]`` extra).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import DataError
from ._common import MetricUnavailable, face_model_path

__all__ = ["Face", "LandmarkDetector", "DlibLandmarker"]


@dataclass(frozen=True)
class Face:
    """One detected face: box (x0, y0, x1, y1) in pixels, detector score, landmarks (P, 2) as (x, y)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    def landmark_box(self) -> tuple[float, float, float, float]:
        pts = self.landmarks
        return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


class LandmarkDetector(Protocol):
    """What the data engine and the landmark metrics need from a detector."""

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All faces in an HxWx3 uint8 RGB image, largest first."""

    def refine(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> Face:
        """Landmarks for a face known to be inside ``box`` (used to track a face between detections)."""


class DlibLandmarker:
    """dlib HOG face detector + 68-point shape predictor (``pip install 'facedeblur[landmarks]'``).

    Detection runs on a copy scaled to ``detect_size`` px (long side) for speed; landmarks on full resolution.
    """

    def __init__(self, detect_size: int = 320, upsample: int = 1) -> None:
        try:
            import dlib

            model = face_model_path("shape_predictor_68_face_landmarks.dat")
        except (ImportError, MetricUnavailable) as exc:  # pragma: no cover - optional dependency
            raise DataError("dlib's 68-point landmarks need the landmarks extra: pip install 'facedeblur[landmarks]' "
                            f"(dlib-bin, face_recognition_models); unavailable: {exc}") from exc
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(model))
        self.detect_size, self.upsample = detect_size, upsample

    def detect(self, rgb: np.ndarray) -> list[Face]:
        import cv2

        scale = min(1.0, self.detect_size / max(rgb.shape[:2]))
        small = rgb if scale == 1.0 else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        rects, scores, _ = self._detector.run(np.ascontiguousarray(small), self.upsample, 0.0)
        faces = []
        for rect, score in zip(rects, scores):
            box = (rect.left() / scale, rect.top() / scale, rect.right() / scale, rect.bottom() / scale)
            face = self.refine(rgb, box)
            faces.append(Face(box, float(score), face.landmarks))
        faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        return faces

    def refine(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> Face:
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        shape = self._predictor(np.ascontiguousarray(rgb), rect)
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float32)
        return Face(box, 1.0, pts)
