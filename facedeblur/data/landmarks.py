"""Face landmark detectors behind one interface, for the data engine (and the benchmark's data sets).

A detector returns :class:`Face` records (box, score, landmarks). Any landmark layout works as long as
:func:`left_eye` can find the eye the FMR ordering keys on (CFMD-GAN §4.1): for the 68-point iBUG layout
that is point 36, the outer corner of the eye on the image-left side (what the authors' code sorts by);
for a 5-point layout (eyes, nose, mouth corners) it is the image-left eye centre.

:class:`Face`, :class:`LandmarkDetector` and the dlib detector :class:`DlibLandmarker` are defined in
:mod:`facedeblur.metrics.face_landmarks` (the landmark metrics use them too; the data engine imports the metrics,
never the other way round) and re-exported here.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from ..errors import DataError
from ..metrics.face_landmarks import DlibLandmarker, Face, LandmarkDetector

__all__ = ["Face", "LandmarkDetector", "DlibLandmarker", "left_eye", "track_faces", "default_detector"]


def left_eye(face: Face) -> np.ndarray:
    """The FMR key point (x, y): 68-pt point 36, or the image-left eye of a 5-pt layout."""
    pts = face.landmarks
    if len(pts) == 68:
        return pts[36]
    if len(pts) == 5:
        return pts[0] if pts[0][0] <= pts[1][0] else pts[1]
    raise DataError(f"left_eye: unsupported landmark layout with {len(pts)} points (expected 68 or 5)")


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
