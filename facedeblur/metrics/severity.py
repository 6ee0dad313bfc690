"""Blur severity: the PSNR of the blurry input against its sharp target, and the bins every report uses.

This module is the one definition of the severity bins (training validation, the data engine and the
benchmarks import it).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from .fidelity import psnr

__all__ = ["SEVERITY_BINS", "SEVERITY_CONVENTION", "severity_bin", "severity_db"]

#: (label, low inclusive, high exclusive), in dB of blurry-input PSNR. Identical images (inf dB) fall in ">=36".
SEVERITY_BINS: tuple[tuple[str, float, float], ...] = (
    ("<28", -math.inf, 28.0), ("28-32", 28.0, 32.0), ("32-36", 32.0, 36.0), (">=36", 36.0, math.inf))

SEVERITY_CONVENTION = ("severity = PSNR (dB, RGB, no border crop, float64; data range 255 for uint8, 1 for float) "
                       "of the blurry input against its sharp target; bins <28, 28-32, 32-36, >=36 dB")


def severity_bin(psnr_db: float) -> str:
    """The label of the bin of :data:`SEVERITY_BINS` holding a blurry-input PSNR (dB). NaN raises InputError."""
    v = float(psnr_db)
    if math.isnan(v):
        raise InputError("severity_bin: PSNR is NaN; the blurry/sharp images contain NaN values")
    for label, lo, hi in SEVERITY_BINS:
        if lo <= v < hi:
            return label
    return SEVERITY_BINS[-1][0]  # +inf: identical images


def severity_db(blurry: np.ndarray, sharp: np.ndarray) -> float:
    """Severity of a pair: :func:`~facedeblur.metrics.psnr` of ``blurry`` against ``sharp`` (inf if identical)."""
    return psnr(blurry, sharp)
