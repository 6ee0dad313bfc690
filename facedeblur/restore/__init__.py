"""Inference: :class:`Deblurrer` (restore images, moments and videos of any input kind), :func:`load`, and the face
pipeline with a model given by name or as a Deblurrer (:func:`restore_faces`, :func:`restore_video_file`)."""
from __future__ import annotations

from .convert import IMAGE_EXTENSIONS, MIN_SIDE, read_image, write_image
from .deblurrer import Deblurrer, load
from .device import BFloat16PerformanceWarning, DeviceError, resolve_device, resolve_dtype
from .photos import restore_face_arrays, restore_faces, restore_video_file

__all__ = ["Deblurrer", "load", "read_image", "write_image", "IMAGE_EXTENSIONS", "MIN_SIDE",
           "BFloat16PerformanceWarning", "DeviceError", "resolve_device", "resolve_dtype", "restore_faces",
           "restore_face_arrays", "restore_video_file"]
