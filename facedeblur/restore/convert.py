"""Input/output conversion for :meth:`Deblurrer.restore`: every supported input kind becomes a list of
(3, H, W) float32 RGB tensors in [0, 1] plus a function that turns the restored tensors back into the
input's kind (dtype, channel layout, alpha, colour order, PIL mode, tensor device).

Supported: numpy ``HxW`` / ``HxWx1`` / ``HxWx3`` / ``HxWx4`` and ``NxHxWxC`` batches (uint8, uint16, float in
[0, 1]); PIL images; image paths (EXIF orientation honoured, 16-bit PNG/TIFF kept 16-bit); torch tensors
``CHW`` / ``NCHW`` (float in [0, 1]); lists of these.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import InputError

__all__ = ["Prepared", "prepare", "read_image", "write_image", "IMAGE_EXTENSIONS", "MIN_SIDE", "to_gray"]

#: Images smaller than this (either side) are rejected: the networks downsample 4x-32x.
MIN_SIDE = 8
#: Suffixes treated as images when a folder is given.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: ITU-R BT.601 luma weights (as PIL's RGB -> L) for returning gray inputs as gray.
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class Prepared:
    """``frames``: (3, H, W) float32 RGB tensors in [0, 1]; ``finish(outputs)`` rebuilds the input's kind
    from restored frames (same order, same shapes, float32 in [0, 1], any device)."""

    frames: list[torch.Tensor]
    finish: Callable[[list[torch.Tensor]], Any]


def _check_order(channel_order: str) -> str:
    order = str(channel_order).lower()
    if order not in ("rgb", "bgr"):
        raise InputError(f"channel_order must be 'rgb' or 'bgr', not {channel_order!r}")
    return order


def _check_size(h: int, w: int, what: str) -> None:
    if h == 0 or w == 0:
        raise InputError(f"{what} is empty ({h}x{w}); pass an image with pixels")
    if h < MIN_SIDE or w < MIN_SIDE:
        raise InputError(f"{what} is {h}x{w} pixels, too small to restore (minimum {MIN_SIDE}x{MIN_SIDE}); "
                         "upscale it or pass a larger face crop")


def _bad_channels(c: int, what: str, layout: str) -> InputError:
    if c == 2:
        return InputError(f"{what} has 2 channels (gray + alpha?); pass gray ({layout} with 1 channel), RGB (3) "
                          "or RGBA (4), e.g. expand gray+alpha to RGBA first")
    return InputError(f"{what} has {c} channels; expected 1 (gray), 3 (RGB/BGR) or 4 (RGBA/BGRA) in {layout} layout")


def to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> (1, H, W) with BT.601 luma weights (how a gray input is returned gray)."""
    w = torch.tensor(_LUMA, dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)
    return (rgb * w).sum(0, keepdim=True)


def _split(chw: torch.Tensor, order: str) -> tuple[torch.Tensor, int]:
    """(C, H, W) float in [0, 1] -> (3, H, W) RGB float32, C."""
    c = chw.shape[0]
    color = chw[:1].expand(3, -1, -1) if c == 1 else chw[:3]
    if order == "bgr":
        color = color.flip(0)
    return color.float().contiguous(), c


def _merge(rgb: torch.Tensor, c: int, order: str) -> torch.Tensor:
    """Restored (3, H, W) RGB -> the input's colour channels (1 or 3, in its order); alpha is added by the caller."""
    if c == 1:
        return to_gray(rgb)
    return rgb.flip(0) if order == "bgr" else rgb


# --------------------------------------------------------------------------------------------- numpy


def _numpy_scale(a: np.ndarray, what: str) -> float:
    """The value that maps ``a`` to [0, 1]; checks float ranges."""
    if a.dtype == np.uint8:
        return 255.0
    if a.dtype == np.uint16:
        return 65535.0
    if a.dtype in (np.float16, np.float32, np.float64):
        if not np.isfinite(a).all():
            raise InputError(f"{what} contains NaN or infinite values; clean it (np.nan_to_num) before restoring")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"{what} is float with values in [{lo:g}, {hi:g}], expected [0, 1]; divide 8-bit "
                             "values by 255 (or 16-bit by 65535), or clip with np.clip(img, 0, 1)")
        return 1.0
    raise InputError(f"{what} has dtype {a.dtype}; expected uint8, uint16 or float in [0, 1] "
                     "(convert with img.astype(np.uint8) or img.astype(np.float32) / 255)")


def _from_unit(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float in [0, 1] -> ``dtype`` (integers are rounded to nearest, not truncated)."""
    if dtype == np.uint8:
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    if dtype == np.uint16:
        return np.clip(np.rint(x * 65535.0), 0, 65535).astype(np.uint16)
    return np.clip(x, 0.0, 1.0).astype(dtype)


def _prepare_numpy(a: np.ndarray, order: str, what: str = "image array") -> Prepared:
    if a.size == 0:
        raise InputError(f"{what} is empty (shape {a.shape}); pass an image with pixels")
    if a.ndim == 2:
        images, batched = a[None, :, :, None], False
        layout = "2d"
    elif a.ndim == 3:
        c = a.shape[-1]
        if c not in (1, 3, 4):
            if a.shape[0] in (1, 3, 4):
                raise InputError(f"{what} has shape {a.shape}, which looks channel-first (CxHxW); numpy images are "
                                 "HxWxC: use img.transpose(1, 2, 0)")
            raise _bad_channels(c, what, "HxWxC")
        images, batched, layout = a[None], False, "hwc"
    elif a.ndim == 4:
        c = a.shape[-1]
        if c not in (1, 3, 4):
            raise _bad_channels(c, what, "NxHxWxC")
        images, batched, layout = a, True, "nhwc"
    else:
        raise InputError(f"{what} has {a.ndim} dimensions (shape {a.shape}); expected HxW (gray), HxWxC "
                         "(C = 1, 3 or 4) or a batch NxHxWxC")
    _check_size(images.shape[1], images.shape[2], what)
    scale = _numpy_scale(images, what)
    c = images.shape[-1]
    frames = []
    for img in images:
        chw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)).astype(np.float32))
        if scale != 1.0:
            chw = chw / scale
        frames.append(_split(chw, order)[0])

    def finish(outs: list[torch.Tensor]) -> np.ndarray:
        result = []
        for src, out in zip(images, outs):
            color = _merge(out.detach().float().cpu(), c, order).numpy().transpose(1, 2, 0)
            color = _from_unit(color, a.dtype)
            if c == 4:
                color = np.concatenate([color, src[..., 3:4]], axis=-1)
            result.append(color)
        stacked = np.stack(result)
        if layout == "2d":
            return stacked[0, :, :, 0]
        return stacked if batched else stacked[0]

    return Prepared(frames, finish)


# --------------------------------------------------------------------------------------------- torch


def _prepare_tensor(t: torch.Tensor, order: str) -> Prepared:
    what = f"tensor of shape {tuple(t.shape)}"
    if not t.is_floating_point():
        raise InputError(f"{what} has dtype {t.dtype}; tensors must be float in [0, 1] "
                         "(convert with t.float() / 255)")
    if t.numel() == 0:
        raise InputError(f"{what} is empty; pass an image with pixels")
    if t.ndim not in (3, 4):
        raise InputError(f"{what} has {t.ndim} dimensions; tensors must be CHW or NCHW")
    batch = t if t.ndim == 4 else t[None]
    c = batch.shape[1]
    if c not in (1, 3, 4):
        if batch.shape[-1] in (1, 3, 4):
            raise InputError(f"{what} looks channel-last (HWC); tensors must be CHW/NCHW: use t.permute(2, 0, 1) "
                             "(or t.permute(0, 3, 1, 2) for a batch)")
        raise _bad_channels(c, what, "CHW")
    _check_size(batch.shape[-2], batch.shape[-1], what)
    flat = batch.detach()
    if not bool(torch.isfinite(flat).all()):
        raise InputError(f"{what} contains NaN or infinite values; clean it (torch.nan_to_num) before restoring")
    lo, hi = float(flat.min()), float(flat.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"{what} has values in [{lo:g}, {hi:g}], expected [0, 1]; divide 8-bit values by 255 "
                         "or clamp with t.clamp(0, 1)")
    frames = [_split(img, order)[0] for img in flat]

    def finish(outs: list[torch.Tensor]) -> torch.Tensor:
        result = []
        for src, out in zip(flat, outs):
            color = _merge(out.detach().float(), c, order).clamp(0, 1).to(device=t.device, dtype=t.dtype)
            if c == 4:
                color = torch.cat([color, src[3:4]], dim=0)
            result.append(color)
        stacked = torch.stack(result)
        return stacked if t.ndim == 4 else stacked[0]

    return Prepared(frames, finish)


# ----------------------------------------------------------------------------------------------- PIL


def _prepare_pil(im: Any, order: str) -> Prepared:
    from PIL import Image

    if order != "rgb":
        raise InputError("PIL images are always RGB; drop channel_order='bgr' (it applies to numpy arrays and tensors)")
    mode = im.mode
    what = f"PIL image (mode {mode}, size {im.size[0]}x{im.size[1]})"
    if mode in ("RGB", "RGBA", "L", "F") or mode.startswith("I;16"):
        a = np.asarray(im)
        if mode.startswith("I;16"):
            a = a.astype(np.uint16)
        inner = _prepare_numpy(a, "rgb", what)
        if mode in ("RGB", "RGBA", "L"):
            return Prepared(inner.frames, lambda outs: Image.fromarray(inner.finish(outs)).convert(mode))
        return Prepared(inner.frames, lambda outs: Image.fromarray(inner.finish(outs)))  # F, I;16*
    if mode == "I":
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise InputError(f"{what} has 32-bit values outside [0, 65535]; convert it to 'I;16', 'L' or 'RGB'")
        inner = _prepare_numpy(a.astype(np.uint16), "rgb", what)
        return Prepared(inner.frames, lambda outs: Image.fromarray(inner.finish(outs).astype(np.int32)))
    if mode == "LA":
        a = np.asarray(im)
        inner = _prepare_numpy(np.dstack([a[..., 0]] * 3 + [a[..., 1]]), "rgb", what)

        def finish_la(outs: list[torch.Tensor]) -> Any:
            rgba = inner.finish(outs)
            gray = np.asarray(Image.fromarray(rgba[..., :3]).convert("L"))
            return Image.fromarray(np.dstack([gray, rgba[..., 3]])).convert("LA")

        return Prepared(inner.frames, finish_la)
    if mode in ("1", "CMYK", "YCbCr", "RGBX"):
        work = "L" if mode == "1" else "RGB"
        inner = _prepare_numpy(np.asarray(im.convert(work)), "rgb", what)
        return Prepared(inner.frames, lambda outs: Image.fromarray(inner.finish(outs)).convert(mode))
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        inner = _prepare_numpy(np.asarray(im.convert("RGBA" if has_alpha else "RGB")), "rgb", what)

        def finish_p(outs: list[torch.Tensor]) -> Any:
            out = Image.fromarray(inner.finish(outs))
            if has_alpha:
                return out.quantize(256, method=Image.Quantize.FASTOCTREE)
            return out.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)

        return Prepared(inner.frames, finish_p)
    raise InputError(f"{what}: mode {mode!r} is not supported; convert with img.convert('RGB')")


# ---------------------------------------------------------------------------------------------- files


_EXIF_ORIENTATION = 0x0112


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an HxW[xC] array, as PIL's ``ImageOps.exif_transpose`` does."""
    ops: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda x: x[:, ::-1], 3: lambda x: x[::-1, ::-1], 4: lambda x: x[::-1],
        5: lambda x: x.swapaxes(0, 1), 6: lambda x: np.rot90(x, -1), 7: lambda x: x[::-1, ::-1].swapaxes(0, 1),
        8: lambda x: np.rot90(x, 1)}
    return np.ascontiguousarray(ops[orientation](a)) if orientation in ops else a


def _is_16bit_color(path: Path, im: Any) -> bool:
    """PIL reads 16-bit RGB(A) PNG/TIFF as 8-bit; detect them to read with OpenCV instead."""
    if im.format == "PNG":
        with open(path, "rb") as f:
            head = f.read(26)
        return len(head) == 26 and head[24] == 16 and head[25] in (2, 6)
    if im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258)
        return bool(bits) and max(bits if isinstance(bits, tuple) else (bits,)) > 8 and im.mode in ("RGB", "RGBA")
    return False


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as numpy, EXIF orientation applied: HxWx3 RGB, HxWx4 RGBA, or HxW gray;
    uint8, or uint16 for 16-bit files. Unreadable files raise :class:`InputError` naming the file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise InputError(f"{str(p)!r}: no such file")
    if p.is_dir():
        raise InputError(f"{str(p)!r} is a folder; pass an image file (the CLI accepts folders)")
    try:
        with Image.open(p) as im:
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            if _is_16bit_color(p, im):
                import cv2

                a = cv2.imdecode(np.fromfile(p, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
                if a is None:
                    raise InputError(f"{str(p)!r}: OpenCV cannot decode this 16-bit image")
                if a.ndim == 3:
                    a = a[..., [2, 1, 0, 3]] if a.shape[-1] == 4 else a[..., ::-1]
                return _orient(np.ascontiguousarray(a), orientation)
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("RGB", "L", "RGBA"):
                return np.array(im)
            if mode.startswith("I;16") or mode == "I":
                a = np.array(im)
                if a.min() < 0 or a.max() > 65535:
                    raise InputError(f"{str(p)!r}: 32-bit integer image with values outside [0, 65535]")
                return a.astype(np.uint16)
            if mode == "F":
                raise InputError(f"{str(p)!r}: floating-point image files are not supported; save it as 8- or "
                                 "16-bit PNG/TIFF")
            has_alpha = mode in ("LA", "PA", "RGBa", "La") or "transparency" in im.info
            return np.array(im.convert("RGBA" if has_alpha else "RGB"))
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{str(p)!r}: cannot read this image ({type(e).__name__}: {e}); pass a PNG, JPEG, BMP, "
                         "TIFF or WebP file") from None


def write_image(path: str | os.PathLike, image: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write an HxW / HxWx3 (RGB) / HxWx4 (RGBA) uint8 or uint16 array atomically (temp file + ``os.replace``).

    The format follows the suffix (PNG and TIFF keep 16 bits and alpha). Refuses to replace an existing
    file unless ``overwrite``.
    """
    import cv2

    p = Path(path)
    if p.exists() and not overwrite:
        raise InputError(f"{str(p)!r} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    a = np.asarray(image)
    if a.dtype not in (np.uint8, np.uint16) or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (1, 3, 4)):
        raise InputError(f"cannot write array of shape {a.shape} dtype {a.dtype} as an image; expected HxW, HxWx3 "
                         "or HxWx4 uint8/uint16")
    suffix = p.suffix.lower()
    if suffix in (".jpg", ".jpeg", ".webp", ".bmp") and a.dtype == np.uint16:
        raise InputError(f"{str(p)!r}: {suffix} cannot hold 16-bit images; write .png or .tif")
    if suffix in (".jpg", ".jpeg") and a.ndim == 3 and a.shape[-1] == 4:
        raise InputError(f"{str(p)!r}: JPEG cannot hold an alpha channel; write .png")
    if a.ndim == 3 and a.shape[-1] == 3:
        a = a[..., ::-1]
    elif a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., [2, 1, 0, 3]]
    ok, buf = cv2.imencode(suffix or ".png", np.ascontiguousarray(a))
    if not ok:
        raise InputError(f"{str(p)!r}: OpenCV cannot encode {suffix or '(no suffix)'} images; use .png")
    return write_bytes_atomic(p, buf.tobytes())


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder (mode 0644, not mkstemp's 0600),
    then ``os.replace``; on any failure the temp file is removed and ``path`` is untouched."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def _prepare_path(path: str | os.PathLike, order: str) -> Prepared:
    a = read_image(path)
    inner = _prepare_numpy(a, "rgb", f"image {str(path)!r}")
    if order == "rgb" or a.ndim == 2:
        return inner

    def finish(outs: list[torch.Tensor]) -> np.ndarray:  # BGR(A) output for OpenCV users
        out = inner.finish(outs)
        return np.ascontiguousarray(out[..., [2, 1, 0, 3]] if out.shape[-1] == 4 else out[..., ::-1])

    return Prepared(inner.frames, finish)


# ---------------------------------------------------------------------------------------------- entry


def prepare(img: Any, channel_order: str = "rgb", *, _nested: bool = False) -> Prepared:
    """Convert any supported input into :class:`Prepared` (see module docstring)."""
    order = _check_order(channel_order)
    if isinstance(img, np.ndarray):
        return _prepare_numpy(img, order)
    if isinstance(img, torch.Tensor):
        return _prepare_tensor(img, order)
    if isinstance(img, (str, os.PathLike)):
        return _prepare_path(img, order)
    if type(img).__module__.startswith("PIL.") and hasattr(img, "mode") and hasattr(img, "size"):
        return _prepare_pil(img, order)
    if isinstance(img, (list, tuple)):
        if _nested:
            raise InputError("nested lists are not supported; pass a flat list of images")
        if not img:
            raise InputError("empty list of images; pass at least one image")
        parts = [prepare(x, order, _nested=True) for x in img]
        frames = [f for p in parts for f in p.frames]

        def finish(outs: list[torch.Tensor]) -> list[Any]:
            result, i = [], 0
            for p in parts:
                result.append(p.finish(outs[i:i + len(p.frames)]))
                i += len(p.frames)
            return result

        return Prepared(frames, finish)
    if img is None:
        raise InputError("image is None (a failed cv2.imread returns None: check the path)")
    raise InputError(f"cannot restore an object of type {type(img).__name__}; pass a numpy array, PIL image, "
                     "path, torch tensor, or a list of these")
