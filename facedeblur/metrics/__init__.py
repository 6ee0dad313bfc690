"""Evaluation metrics, each with its convention stated (``describe()`` / ``.convention`` strings for reports).

* :mod:`.fidelity`: PSNR and SSIM (RGB or BT.601 Y, crop border, float64; SSIM in the MATLAB/BasicSR or the
  scikit-image convention).
* :mod:`.severity`: blur severity (blurry-input PSNR) and the bins every report uses.
* :mod:`.identity`: identity distance with a face-recognition embedding (dlib offline; ArcFace/FaceNet when
  their weights are present).
* :mod:`.landmarks`: 68-point landmark error, CED, AUC@0.08, failure rate (Chrysos et al. §5.4) and the face
  detection success rate; :mod:`.face_landmarks`: the face record, the detector interface and dlib's 68-point
  detector (also used by the data engine).
* :mod:`.noref`: no-reference sharpness (variance of the Laplacian, Tenengrad).
* :mod:`.perceptual`: LPIPS and FID with the real networks, or "unavailable" with the reason.

Face models (dlib) and networks (torch) load only when a metric object is built.
"""
from __future__ import annotations

from ._common import MetricUnavailable, dlib_available
from .fidelity import PSNR, SSIM, SSIM_CONVENTIONS, describe, psnr, rgb_to_y, ssim
from .identity import IdentityDistance, IdentityReport, identity_backends
from .landmarks import (MAX_ERROR, DetectionReport, LandmarkLocalisation, LandmarkReport, auc, ced_curve,
                        detection_success_rate, failure_rate, nme)
from .noref import laplacian_variance, tenengrad
from .perceptual import FID, LPIPS, fid_available, frechet_distance, lpips_available
from .severity import SEVERITY_BINS, SEVERITY_CONVENTION, severity_bin, severity_db

__all__ = ["MetricUnavailable", "dlib_available", "psnr", "ssim", "rgb_to_y", "describe", "PSNR", "SSIM",
           "SSIM_CONVENTIONS", "SEVERITY_BINS", "SEVERITY_CONVENTION", "severity_bin", "severity_db",
           "IdentityDistance", "IdentityReport", "identity_backends", "LandmarkLocalisation", "LandmarkReport",
           "nme", "ced_curve", "auc", "failure_rate", "MAX_ERROR", "detection_success_rate", "DetectionReport",
           "laplacian_variance", "tenengrad", "lpips_available", "fid_available", "LPIPS", "FID",
           "frechet_distance"]
