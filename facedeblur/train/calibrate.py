"""``python -m facedeblur.train.calibrate``: kept for existing commands and imports.

The calibration of CFMD-GAN's residual gate lives next to its training wrapper, in
:mod:`facedeblur.train.methods.cfmd_gan_calibrate`; this module re-exports it.
"""
from __future__ import annotations

from .methods.cfmd_gan_calibrate import (ALPHA_GRID, calibrate_folder, calibrate_gate, calibration_samples, fit_gate,
                                         main, residual_stats)

__all__ = ["ALPHA_GRID", "residual_stats", "fit_gate", "calibration_samples", "calibrate_gate", "calibrate_folder",
           "main"]

if __name__ == "__main__":
    raise SystemExit(main())
