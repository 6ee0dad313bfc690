"""Data engine: frame sources, landmarks, blur synthesis + FMR, cached windows, datasets."""
from __future__ import annotations

from .blur import average_frames, fmr_order, fmr_u, psnr_uint8, render_trajectory, shake_trajectory
from .engine import (SEVERITY_BINS, PrepConfig, WindowTrainSet, WindowValSet, build_datasets, load_manifest,
                     prepare_windows, severity_bin)
from .landmarks import DlibLandmarker, Face, LandmarkDetector, left_eye, track_faces
from .sources import Clip, find_clips, iter_frames

__all__ = ["average_frames", "fmr_order", "fmr_u", "psnr_uint8", "render_trajectory", "shake_trajectory",
           "SEVERITY_BINS", "PrepConfig", "WindowTrainSet", "WindowValSet", "build_datasets", "load_manifest",
           "prepare_windows", "severity_bin", "DlibLandmarker", "Face", "LandmarkDetector", "left_eye",
           "track_faces", "Clip", "find_clips", "iter_frames"]
