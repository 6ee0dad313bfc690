"""Shared pieces of the metrics package: the "unavailable" error and image checks."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..errors import FaceDeblurError, InputError

__all__ = ["MetricUnavailable", "as_image", "check_pair", "to_uint8_rgb", "face_model_path", "dlib_available"]


class MetricUnavailable(FaceDeblurError, RuntimeError):
    """A metric whose real network/weights/backend cannot be built here. Reports print "unavailable" and the reason."""


def as_image(img: object, name: str = "image") -> np.ndarray:
    """``img`` as a numpy HxW or HxWxC (C = 1 or 3) array of a supported dtype (uint8, uint16 or float)."""
    if not isinstance(img, np.ndarray):
        raise InputError(f"{name}: expected a numpy array (HxW or HxWx3), got {type(img).__name__}; "
                         "convert tensors with .cpu().numpy() and move channels last")
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
        raise InputError(f"{name}: expected HxW or HxWxC with C in (1, 3), got shape {img.shape}; "
                         "images are channels-last (transpose a CHW array with .transpose(1, 2, 0))")
    if img.dtype not in (np.uint8, np.uint16) and not np.issubdtype(img.dtype, np.floating):
        raise InputError(f"{name}: unsupported dtype {img.dtype}; use uint8 [0, 255], uint16 or float [0, 1]")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise InputError(f"{name}: empty image of shape {img.shape}")
    if np.issubdtype(img.dtype, np.floating) and not np.isfinite(img).all():
        raise InputError(f"{name}: contains NaN or inf values")
    return img


def check_pair(img: object, ref: object, data_range: float | None) -> tuple[np.ndarray, np.ndarray, float]:
    """Validate an (image, reference) pair; return both and the data range.

    Both must have the same shape and dtype. ``data_range`` None means 255 for uint8, 65535 for uint16 and 1 for
    float (float images must then lie in [0, 1]).
    """
    img, ref = as_image(img, "img"), as_image(ref, "ref")
    if img.shape != ref.shape:
        raise InputError(f"img and ref differ in shape: {img.shape} vs {ref.shape}; compare images of the same size "
                         "(crop or resize the restored image to the reference first)")
    if img.dtype != ref.dtype:
        raise InputError(f"img and ref differ in dtype: {img.dtype} vs {ref.dtype}; convert both to uint8 [0, 255] "
                         "or both to float [0, 1] (the data range is inferred from the dtype)")
    if data_range is None:
        if img.dtype == np.uint8:
            data_range = 255.0
        elif img.dtype == np.uint16:
            data_range = 65535.0
        else:
            lo, hi = float(min(img.min(), ref.min())), float(max(img.max(), ref.max()))
            if lo < 0.0 or hi > 1.0:
                raise InputError(f"float images must lie in [0, 1] (found values in [{lo:.4g}, {hi:.4g}]); "
                                 "scale them, or pass data_range= explicitly (e.g. 255 for float images in [0, 255])")
            data_range = 1.0
    data_range = float(data_range)
    if not data_range > 0:
        raise InputError(f"data_range must be > 0, got {data_range}")
    return img, ref, data_range


def to_uint8_rgb(img: object, name: str = "image") -> np.ndarray:
    """A contiguous HxWx3 uint8 RGB array from uint8 or float [0, 1] input (grey repeated to 3 channels)."""
    img = as_image(img, name)
    if img.dtype == np.uint16:
        raise InputError(f"{name}: uint16 images are not supported by the face models; convert to uint8")
    if np.issubdtype(img.dtype, np.floating):
        lo, hi = float(img.min()), float(img.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"{name}: float images must lie in [0, 1] (found [{lo:.4g}, {hi:.4g}]); "
                             "pass uint8 [0, 255] or scale to [0, 1]")
        img = np.round(img.astype(np.float64) * 255.0).astype(np.uint8)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def face_model_path(filename: str) -> Path:
    """Path of a model file shipped by ``face_recognition_models`` (found by path, without importing the package).

    Raises :class:`MetricUnavailable` when the package or the file is missing.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailable("face_recognition_models is not installed: pip install 'facedeblur[landmarks]' "
                                "(dlib-bin, face_recognition_models)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / filename
    if not path.is_file():
        raise MetricUnavailable(f"{filename} is missing from face_recognition_models ({path}); reinstall it")
    return path


def dlib_available() -> tuple[bool, str]:
    """(True, version) when dlib imports, else (False, the reason)."""
    if importlib.util.find_spec("dlib") is None:
        return False, "dlib is not installed: pip install 'facedeblur[landmarks]' (dlib-bin, face_recognition_models)"
    try:
        import dlib
    except Exception as exc:  # a broken binary wheel raises various errors
        return False, f"dlib failed to import: {exc}"
    return True, f"dlib {getattr(dlib, '__version__', '?')}"


def require_dlib():
    """The dlib module, or :class:`MetricUnavailable` with the reason."""
    ok, why = dlib_available()
    if not ok:
        raise MetricUnavailable(why)
    import dlib

    return dlib
