"""Face-analysis metrics on restored images: landmark localisation (Chrysos et al. §5.4) and detection rate.

Landmark localisation, as in Chrysos et al. (IJCV 2019) §5.4 and Chrysos et al. (2018): a 68-point landmark
localiser runs on the restored image; the error of an image is the mean Euclidean distance of the 68 points
to the ground truth, divided by the diagonal of the ground-truth bounding box (the box of the ground-truth
points). Reported: the CED curve (fraction of images with error <= t, for t in [0, 0.08]), its area AUC@0.08
normalised to [0, 1], and the failure rate (fraction of images with error > 0.08).

Ground truth is the localiser's output on the sharp image unless annotations are given; the "oracle" row is
then the sharp image itself (error 0 by construction, so annotations are needed for a meaningful oracle) and
the "blurred" row is the blurry input. The default localiser is dlib's HOG detector + 68-point shape predictor
(Chrysos et al. used Yang et al. 2017). With ``init="reference_box"`` (default) the localiser starts from the
face box detected on the sharp image, as landmark benchmarks give the box; with ``init="detect"`` it detects
on the restored image itself, and an image without a detected face is a failure (error inf).

Face detection success rate (DFPGnet §4.3 with OpenFace, Nahli et al. §6.3 with FaceBoxes): the fraction of
images in which the detector finds at least one face; here dlib's HOG frontal detector.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from ..errors import InputError
from ._common import MetricUnavailable, require_dlib, to_uint8_rgb
from .face_landmarks import DlibLandmarker, LandmarkDetector

__all__ = ["nme", "ced_curve", "auc", "failure_rate", "LandmarkLocalisation", "LandmarkReport",
           "detection_success_rate", "DetectionReport", "default_landmark_detector", "MAX_ERROR"]

#: Chrysos et al. §5.4: errors above this are failures, and the CED/AUC stop here.
MAX_ERROR = 0.08

NME_CONVENTION = ("landmark error = mean point-to-point distance of the 68 points / diagonal of the ground-truth "
                  "points' bounding box (Chrysos et al. §5.4); AUC@0.08 normalised to [0, 1]; failure = error > 0.08")


def default_landmark_detector(detect_size: int = 320, upsample: int = 1) -> LandmarkDetector:
    """dlib HOG frontal detector + 68-point predictor (:class:`~facedeblur.metrics.face_landmarks.DlibLandmarker`)."""
    require_dlib()
    from ..errors import DataError

    try:
        return DlibLandmarker(detect_size=detect_size, upsample=upsample)
    except DataError as exc:
        raise MetricUnavailable(str(exc)) from exc


def nme(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean point distance between ``pred`` and ``gt`` (P, 2), divided by the diagonal of ``gt``'s bounding box."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or gt.ndim != 2 or gt.shape[1] != 2:
        raise InputError(f"nme: landmarks must both be (P, 2) arrays, got {pred.shape} and {gt.shape}")
    diag = float(np.hypot(*(gt.max(axis=0) - gt.min(axis=0))))
    if diag <= 0:
        raise InputError("nme: the ground-truth landmarks have a zero-size bounding box")
    return float(np.linalg.norm(pred - gt, axis=1).mean() / diag)


def _errors(errors: Iterable[float]) -> np.ndarray:
    e = np.asarray(list(errors), dtype=np.float64)
    if e.ndim != 1 or np.isnan(e).any() or (e < 0).any():
        raise InputError("landmark errors must be a 1-d sequence of numbers >= 0 (inf = not found)")
    return e


def ced_curve(errors: Iterable[float], max_error: float = MAX_ERROR, num: int = 81) -> tuple[np.ndarray, np.ndarray]:
    """The CED curve: thresholds ``linspace(0, max_error, num)`` and the fraction of images with error <= each."""
    e = _errors(errors)
    t = np.linspace(0.0, max_error, num)
    if not len(e):
        return t, np.full(num, np.nan)
    return t, (e[None, :] <= t[:, None]).mean(axis=1)


def auc(errors: Iterable[float], max_error: float = MAX_ERROR) -> float:
    """Area under the CED curve on [0, max_error], divided by ``max_error`` (1 = every error is 0).

    Exact integral of the empirical CED: mean over images of ``max(0, max_error - e) / max_error``. A trapezoid
    on a threshold grid of step s (as some toolkits compute it) differs by at most s / max_error.
    """
    e = _errors(errors)
    if not len(e):
        return float("nan")
    return float(np.clip(max_error - e, 0.0, None).mean() / max_error)


def failure_rate(errors: Iterable[float], threshold: float = MAX_ERROR) -> float:
    """Fraction of images whose error exceeds ``threshold`` (not-found faces count as failures)."""
    e = _errors(errors)
    return float((e > threshold).mean()) if len(e) else float("nan")


@dataclass
class LandmarkReport:
    """Result of :meth:`LandmarkLocalisation.evaluate`. ``errors`` hold inf where no face was found."""

    convention: str
    errors: list[float]
    no_reference: int  # pairs skipped: no face (hence no ground truth) on the sharp image
    no_face: int  # images where the localiser found no face (counted as failures)
    max_error: float = MAX_ERROR

    def as_dict(self) -> dict[str, Any]:
        t, frac = ced_curve(self.errors, self.max_error)
        finite = [x for x in self.errors if np.isfinite(x)]
        return {"convention": self.convention, "n": len(self.errors), "no_reference": self.no_reference,
                "no_face": self.no_face, "auc": auc(self.errors, self.max_error),
                "failure_rate": failure_rate(self.errors, self.max_error),
                "median_error": float(np.median(self.errors)) if self.errors else float("nan"),
                "mean_error_found": float(np.mean(finite)) if finite else float("nan"),
                "ced_thresholds": t.tolist(), "ced": frac.tolist()}


class LandmarkLocalisation:
    """68-point localisation error of restored images against sharp images (or annotations). See the module doc."""

    def __init__(self, detector: LandmarkDetector | None = None,
                 init: Literal["reference_box", "detect"] = "reference_box", max_error: float = MAX_ERROR) -> None:
        if init not in ("reference_box", "detect"):
            raise InputError(f"LandmarkLocalisation: unknown init {init!r}; use 'reference_box' or 'detect'")
        self.detector = detector if detector is not None else default_landmark_detector()
        self.init, self.max_error = init, float(max_error)

    @property
    def convention(self) -> str:
        start = ("localiser started from the face box detected on the sharp image" if self.init == "reference_box"
                 else "face detected on each image; no face = failure")
        return f"{NME_CONVENTION}; {type(self.detector).__name__}; {start}"

    def reference(self, sharp: np.ndarray) -> tuple[tuple[float, float, float, float], np.ndarray] | None:
        """(detector box, landmarks) of the largest face in the sharp image, or None."""
        faces = self.detector.detect(to_uint8_rgb(sharp, "sharp"))
        return (faces[0].box, np.asarray(faces[0].landmarks, dtype=np.float64)) if faces else None

    def locate(self, img: np.ndarray, box: tuple[float, float, float, float] | None = None) -> np.ndarray | None:
        """Landmarks (P, 2) in ``img``: from ``box`` if given, else of the largest detected face (None if none)."""
        rgb = to_uint8_rgb(img)
        if box is not None:
            return np.asarray(self.detector.refine(rgb, box).landmarks, dtype=np.float64)
        faces = self.detector.detect(rgb)
        return np.asarray(faces[0].landmarks, dtype=np.float64) if faces else None

    def evaluate(self, images: Iterable[np.ndarray], sharp: Iterable[np.ndarray] | None = None,
                 gt_landmarks: Sequence[np.ndarray] | None = None, progress: bool = False) -> LandmarkReport:
        """Errors of ``images`` (restored, or blurry for the "blurred" row, or sharp for the "oracle").

        Ground truth: ``gt_landmarks`` (annotations, (P, 2) each) if given, else the landmarks found on ``sharp``.
        ``init="reference_box"`` needs ``sharp`` (the box comes from it).
        """
        from tqdm.auto import tqdm

        images = list(images)
        sharp = None if sharp is None else list(sharp)
        if sharp is None and (gt_landmarks is None or self.init == "reference_box"):
            raise InputError("LandmarkLocalisation.evaluate needs the sharp images (ground truth and/or the "
                             "reference box); pass sharp=..., or gt_landmarks=... with init='detect'")
        for name, seq in (("sharp", sharp), ("gt_landmarks", gt_landmarks)):
            if seq is not None and len(seq) != len(images):
                raise InputError(f"LandmarkLocalisation.evaluate: {len(images)} images but {len(seq)} {name}")
        errors: list[float] = []
        no_ref = no_face = 0
        for i in tqdm(range(len(images)), desc="landmarks", disable=not progress):
            ref = self.reference(sharp[i]) if sharp is not None else None
            if sharp is not None and ref is None:
                no_ref += 1
                continue
            gt = np.asarray(gt_landmarks[i], dtype=np.float64) if gt_landmarks is not None else ref[1]
            pts = self.locate(images[i], ref[0] if self.init == "reference_box" else None)
            if pts is None:
                no_face += 1
                errors.append(float("inf"))
            else:
                errors.append(nme(pts, gt))
        return LandmarkReport(self.convention, errors, no_ref, no_face, self.max_error)


@dataclass
class DetectionReport:
    """Face detection success rate over a set of images."""

    convention: str
    n: int
    detected: int

    @property
    def rate(self) -> float:
        return self.detected / self.n if self.n else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"convention": self.convention, "n": self.n, "detected": self.detected, "rate": self.rate}


def detection_success_rate(images: Iterable[np.ndarray], detector: LandmarkDetector | None = None,
                           progress: bool = False) -> DetectionReport:
    """Fraction of ``images`` in which ``detector`` (default: dlib HOG, upsample 1) finds at least one face."""
    from tqdm.auto import tqdm

    det = detector if detector is not None else default_landmark_detector()
    n = found = 0
    for img in tqdm(images, desc="detection", disable=not progress):
        n += 1
        found += bool(det.detect(to_uint8_rgb(img)))
    conv = (f"face detection success rate = fraction of images with >= 1 face found by {type(det).__name__} "
            "(DFPGnet §4.3 used OpenFace, Nahli et al. §6.3 FaceBoxes)")
    return DetectionReport(conv, n, found)
