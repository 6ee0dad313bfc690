"""Inference: :class:`Deblurrer` (restore images, moments and videos of any input kind) and :func:`load`."""
from __future__ import annotations

from .convert import IMAGE_EXTENSIONS, MIN_SIDE, read_image, write_image
from .deblurrer import Deblurrer, load
from .device import BFloat16PerformanceWarning, DeviceError, resolve_device, resolve_dtype

__all__ = ["Deblurrer", "load", "read_image", "write_image", "IMAGE_EXTENSIONS", "MIN_SIDE",
           "BFloat16PerformanceWarning", "DeviceError", "resolve_device", "resolve_dtype"]
