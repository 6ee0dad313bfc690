"""Device and dtype resolution for inference (``device="auto"`` = cuda -> mps -> cpu)."""
from __future__ import annotations

import warnings

import torch

from ..errors import CapabilityError, FaceDeblurError

__all__ = ["DeviceError", "BFloat16PerformanceWarning", "resolve_device", "resolve_dtype", "dtype_name",
           "cpu_has_native_bf16", "warn_if_slow_bf16"]

_DTYPE_ALIASES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


class DeviceError(FaceDeblurError, ValueError):
    """A device that does not exist or is not available on this machine."""


class BFloat16PerformanceWarning(UserWarning):
    """bfloat16 inference on a CPU without native bf16 instructions (emulated, slow)."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and hasattr(mps, "is_available") and mps.is_available())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None -> the best available device (cuda, then mps, then cpu); otherwise check availability."""
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} requested but CUDA is not available in this PyTorch install; "
                              "use device='auto' or 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) "
                              "exist; use 'cuda:0'..'cuda:N-1'")
    elif dev.type == "mps":
        if not _mps_available():
            raise DeviceError(f"device {device!r} requested but MPS is not available; use device='auto' or 'cpu'")
    elif dev.type != "cpu":
        raise DeviceError(f"device type {dev.type!r} is not supported; use 'auto', 'cpu', 'cuda' or 'mps'")
    return dev


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the spelling used in model cards)."""
    return str(dtype).replace("torch.", "")


def resolve_dtype(dtype: str | torch.dtype | None, allowed: tuple[str, ...] | None = None,
                  model_name: str = "this model") -> torch.dtype:
    """None -> float32. Strings (``"bf16"``, ``"float16"``, ...) or torch dtypes; must be in ``allowed``
    (the card's ``capabilities.dtypes``) when given, else :class:`CapabilityError`."""
    if dtype is None:
        out = torch.float32
    elif isinstance(dtype, torch.dtype):
        out = dtype
    elif isinstance(dtype, str) and dtype.strip().lower().replace("torch.", "") in _DTYPE_ALIASES:
        out = _DTYPE_ALIASES[dtype.strip().lower().replace("torch.", "")]
    else:
        raise CapabilityError(f"unknown dtype {dtype!r}; use one of float32, float16, bfloat16")
    if not out.is_floating_point:
        raise CapabilityError(f"dtype {dtype!r} is not a floating-point type; use float32, float16 or bfloat16")
    if allowed is not None and dtype_name(out) not in allowed:
        raise CapabilityError(f"{model_name} does not support dtype {dtype_name(out)}; supported: "
                              f"{', '.join(allowed)}")
    return out


def cpu_has_native_bf16() -> bool | None:
    """True/False when PyTorch can tell whether this CPU has bf16 instructions (AVX512-BF16 or AMX);
    None when this PyTorch build cannot tell."""
    probes = [getattr(torch.cpu, name) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
              if hasattr(torch.cpu, name)]
    if not probes:
        return None
    try:
        return any(bool(p()) for p in probes)
    except Exception:  # a private probe that misbehaves must not break loading
        return None


def warn_if_slow_bf16(device: torch.device, dtype: torch.dtype) -> None:
    """Warn (once per process, through the ``warnings`` registry) when bf16 would run emulated on the CPU."""
    if device.type == "cpu" and dtype == torch.bfloat16 and cpu_has_native_bf16() is False:
        warnings.warn("bfloat16 has no hardware support on this CPU (no AVX512-BF16/AMX) and runs much slower "
                      "than float32 (CFMD-GAN paper variant, 256x256 face, 2-core AVX2 CPU: 13.6 s in bf16 vs 2.0 s in "
                      "float32; see benchmarks/results/speed_cfmd_cpu.md); use dtype=None (float32) on this machine", BFloat16PerformanceWarning,
                      stacklevel=1)
