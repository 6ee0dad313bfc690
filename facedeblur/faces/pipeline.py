"""The still-image face pipeline: detect, align, restore (all faces in one batched call), paste back.

``restore_faces(photo, model)`` finds every face (MTCNN, 5 landmarks), aligns each onto the crop its model was
trained on (:mod:`facedeblur.faces.align`: least-squares similarity onto the card's 5-point template, at
``card.input.face_size``), restores the crops in one ``model.restore(list, u=...)`` call, and pastes them back
with a feathered mask (:mod:`facedeblur.faces.paste`). Modelled on GFPGAN's ``enhance`` / facexlib's
``FaceRestoreHelper`` (PEERS §4), with the pain points of PEERS §9 addressed: seams (feather proportional to the
face, residual paste, optional colour matching), batching across faces, work limited to each face's footprint,
grey / RGBA / 16-bit inputs, and a clear warning (not a silent no-op) when no face is found.
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import torch

from ..errors import InputError
from .align import crop_style_for, five_points, invert_affine, similarity_transform, template_points, warp_face
from .paste import COLOR_MATCH_MODES, _check_feather, color_match as _color_match, crop_mask, face_mask, paste_back

__all__ = ["FaceRecord", "NoFaceWarning", "restore_faces", "restore_face_arrays"]


class NoFaceWarning(UserWarning):
    """``restore_faces`` found no face and returned the image unchanged."""


@dataclass
class FaceRecord:
    """One restored face. ``box`` (x0, y0, x1, y1) and ``landmarks`` ((5, 2) x, y; None for ``aligned=True``) in
    image pixels; ``score`` the detector's (None for aligned inputs); ``affine`` the 2x3 image -> crop matrix
    (:attr:`inverse_affine` maps back); ``crop`` / ``restored`` (S, S, 3) float32 RGB in [0, 1] (``restored`` after
    colour matching); ``crop_style`` the template used; ``feather`` the mask's band (fraction of the crop side)."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None
    score: float | None
    affine: np.ndarray
    crop: np.ndarray
    restored: np.ndarray
    crop_style: str
    feather: float

    @property
    def inverse_affine(self) -> np.ndarray:
        return invert_affine(self.affine)

    @property
    def size(self) -> int:
        return int(self.crop.shape[0])

    def mask(self, shape: tuple[int, ...]) -> np.ndarray:
        """This face's HxW paste mask in an image of ``shape`` (0 where the photo is left untouched)."""
        return face_mask(self.affine, self.size, shape, self.feather)


# ------------------------------------------------------------------------------------------------ checks


def _check_unit(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isnan(float(v)) or not 0 <= float(v) <= 1:
        raise InputError(f"{name}={v!r}: must be a number in [0, 1] (0 = input unchanged, 1 = full restoration)")
    return float(v)


def _check_color_mode(color_match: Any) -> str | None:
    if color_match is False or color_match is None:
        return None
    if color_match is True:
        return "lab-mean-std"
    if isinstance(color_match, str) and color_match in COLOR_MATCH_MODES:
        return color_match
    raise InputError(f"color_match={color_match!r}: use False, True (= 'lab-mean-std') or 'lab-mean'")


def _check_model(model: Any) -> None:
    if not callable(getattr(model, "restore", None)) or getattr(model, "card", None) is None:
        raise InputError(f"model must be a facedeblur Deblurrer (facedeblur.load(name)) or an object with "
                         f".restore(list_of_crops, u=...) and .card; got {type(model).__name__}")


def _run_model(model: Any, crops: list[np.ndarray], u: Any, batch_size: int | None = None) -> list[np.ndarray]:
    """All crops through the model at once (it batches them); each back as (S, S, 3) float32 in [0, 1].

    A :class:`~facedeblur.restore.deblurrer.Deblurrer` is called with ``faces=False`` (the crops are already
    aligned: never detect again) and ``batch_size`` (when given)."""
    from ..restore.deblurrer import Deblurrer

    if isinstance(model, Deblurrer):
        extra: dict[str, Any] = {"faces": False}
        if batch_size is not None:
            extra["batch_size"] = batch_size
        outs = model.restore(crops, u=u, **extra)
    else:
        outs = model.restore(crops, u=u)
    if not isinstance(outs, (list, tuple)) or len(outs) != len(crops):
        raise RuntimeError(f"model.restore returned {type(outs).__name__} for a list of {len(crops)} crops; "
                           "expected a list of as many images")
    result = []
    for crop, out in zip(crops, outs):
        a = out.detach().cpu().numpy().transpose(1, 2, 0) if isinstance(out, torch.Tensor) else np.asarray(out)
        if a.shape != crop.shape:
            raise RuntimeError(f"model.restore returned an image of shape {a.shape} for a crop of {crop.shape}")
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise RuntimeError("model.restore returned NaN or infinite values")
        result.append(np.clip(a, 0.0, 1.0))
    return result


def _select(faces: list[Any], shape: tuple[int, ...], only_center_face: bool, max_faces: int | None) -> list[Any]:
    faces = sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    if only_center_face and faces:
        cy, cx = shape[0] / 2, shape[1] / 2
        faces = [min(faces, key=lambda f: ((f.box[0] + f.box[2]) / 2 - cx) ** 2
                     + ((f.box[1] + f.box[3]) / 2 - cy) ** 2)]
    return faces[:max_faces] if max_faces is not None else faces


# ------------------------------------------------------------------------------------------------ core


def restore_face_arrays(images: Sequence[np.ndarray], model: Any, u: Any = None, *, aligned: bool = False,
                        only_center_face: bool = False, max_faces: int | None = None, blend: float = 1.0,
                        color_match: bool | str = False, detector: Any = None, whole_image: bool = False,
                        feather: float = 0.1, paste: Literal["residual", "replace"] = "residual",
                        template: str | None = None, batch_size: int | None = None
                        ) -> tuple[list[np.ndarray], list[list[FaceRecord]]]:
    """:func:`restore_faces` on HxWx3 float32 RGB arrays in [0, 1] (not modified), the faces of all images in one
    model call. Returns the restored arrays and the face records of each image."""
    return _restore_arrays(images, model, u, aligned, only_center_face, max_faces, blend, color_match, detector,
                           whole_image, feather, paste, template, stacklevel=3, batch_size=batch_size)


def _restore_arrays(images: Sequence[np.ndarray], model: Any, u: Any, aligned: bool, only_center_face: bool,
                    max_faces: int | None, blend: float, color_match: bool | str, detector: Any, whole_image: bool,
                    feather: float, paste: str, template: str | None, stacklevel: int,
                    batch_size: int | None = None) -> tuple[list[np.ndarray], list[list[FaceRecord]]]:
    for i, im in enumerate(images):
        if not isinstance(im, np.ndarray) or im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.float32:
            raise InputError(f"images[{i}] must be an HxWx3 float32 RGB array in [0, 1] (restore_faces converts "
                             "any other kind)")
    _check_feather(feather)
    if paste not in ("residual", "replace"):
        raise InputError(f"paste={paste!r}: use 'residual' (default) or 'replace'")
    _check_model(model)
    blend = _check_unit("blend", blend)
    mode = _check_color_mode(color_match)
    if max_faces is not None and (isinstance(max_faces, bool) or not isinstance(max_faces, numbers.Integral)
                                  or max_faces < 1):
        raise InputError(f"max_faces={max_faces!r}: pass a positive int, or None for all faces")
    if aligned and whole_image:
        raise InputError("aligned=True and whole_image=True exclude each other: aligned inputs are face crops, "
                         "whole_image restores an arbitrary photo as one image")
    if whole_image:
        restored = _run_model(model, [np.ascontiguousarray(im) for im in images], u, batch_size)
        return [im + blend * (r - im) for im, r in zip(images, restored)], [[] for _ in images]
    size = int(model.card.input.face_size)
    style = template if template is not None else crop_style_for(model.card)
    tpl = template_points(style, size)  # also validates an explicit template name
    if aligned:
        return _restore_aligned(images, model, u, size, style, blend, mode, feather, batch_size)

    if detector is None:
        from .mtcnn import MTCNN

        detector = MTCNN()
    jobs: list[tuple[int, Any, np.ndarray, np.ndarray]] = []  # (image index, face, affine, crop)
    for k, im in enumerate(images):
        u8 = np.clip(np.rint(im * 255.0), 0, 255).astype(np.uint8)
        faces = _select(list(detector.detect(u8)), im.shape, only_center_face, max_faces)
        for face in faces:
            m = similarity_transform(five_points(face.landmarks), tpl)
            jobs.append((k, face, m, warp_face(im, m, size)))
    records: list[list[FaceRecord]] = [[] for _ in images]
    if not jobs:
        warnings.warn(NoFaceWarning(
            f"no face found by {type(detector).__name__} in {len(images)} image(s); returned unchanged. Pass "
            "aligned=True if the input is already a face crop, whole_image=True to restore the whole image, or a "
            "detector that finds smaller faces (e.g. MTCNN(min_face_size=12))"), stacklevel=stacklevel)
        return [np.array(im, dtype=np.float32, copy=True) for im in images], records
    restored = _run_model(model, [c for *_, c in jobs], u, batch_size)
    weights = crop_mask(size, feather) if feather > 0 else None
    per_image: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in images]
    for (k, face, m, crop), out in zip(jobs, restored):
        if mode is not None:
            out = _color_match(out, crop, weights, mode)
        per_image[k].append((m, crop, out))
        pts = np.asarray(face.landmarks, dtype=np.float32)
        records[k].append(FaceRecord(tuple(float(v) for v in face.box), pts, float(face.score), m, crop, out,
                                     style, feather))
    outs = [paste_back(im, items, feather=feather, blend=blend, mode=paste) for im, items in zip(images, per_image)]
    return outs, records


def _restore_aligned(images: Sequence[np.ndarray], model: Any, u: Any, size: int, style: str, blend: float,
                     mode: str | None, feather: float,
                     batch_size: int | None = None) -> tuple[list[np.ndarray], list[list[FaceRecord]]]:
    """Inputs that are already face crops: resized to the model's face size (if needed), restored, and the
    residual resized back; no detection, no mask."""
    import cv2

    crops, mats = [], []
    for im in images:
        h, w = im.shape[:2]
        if max(h, w) / min(h, w) > 1.25:
            raise InputError(f"aligned=True expects square face crops; this one is {w}x{h}. Crop it square, or "
                             "drop aligned=True to detect the faces")
        if (h, w) == (size, size):
            crops.append(np.ascontiguousarray(im, dtype=np.float32))
        else:
            interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_CUBIC
            crops.append(np.clip(cv2.resize(im, (size, size), interpolation=interp), 0, 1).astype(np.float32))
        sx, sy = size / w, size / h  # pixel edges to pixel edges
        mats.append(np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]], dtype=np.float64))
    restored = _run_model(model, crops, u, batch_size)
    outs, records = [], []
    for im, crop, out, m in zip(images, crops, restored, mats):
        if mode is not None:
            out = _color_match(out, crop, None, mode)
        delta = out - crop
        h, w = im.shape[:2]
        if (h, w) != (size, size):
            delta = cv2.resize(delta, (w, h), interpolation=cv2.INTER_CUBIC)
        outs.append(np.clip(im + blend * delta, 0.0, 1.0).astype(np.float32))
        records.append([FaceRecord((0.0, 0.0, float(w), float(h)), None, None, m, crop, out, style, 0.0)])
    return outs, records


def restore_faces(img: Any, model: Any, u: Any = None, aligned: bool = False, only_center_face: bool = False,
                  max_faces: int | None = None, blend: float = 1.0, color_match: bool | str = False,
                  detector: Any = None, *, whole_image: bool = False, feather: float = 0.1,
                  paste: Literal["residual", "replace"] = "residual", template: str | None = None,
                  channel_order: str = "rgb", batch_size: int | None = None) -> tuple[Any, list[FaceRecord]]:
    """Restore every face of a photo with a face model; returns ``(restored image, face records)``.

    Args:
        img: one image -- numpy HxW (grey) / HxWx3 / HxWx4 (alpha kept) in uint8, uint16 or float [0, 1]; a PIL
            image; a path; a CHW tensor. Returned as the same kind (grey stays grey).
        model: a :class:`~facedeblur.restore.deblurrer.Deblurrer` (or anything with ``.restore(list, u=...)`` and a
            ``.card`` with ``input.face_size`` / ``input.face_crop``).
        u: passed to the model (the CFMD-GAN moment in [0, 1]; None = the card's default).
        aligned: the input is already a face crop of the model's kind: no detection, resized to the face size.
        only_center_face / max_faces: restore only the face nearest the centre / the largest N faces.
        blend: 0 = input unchanged ... 1 = full restoration (a linear mix of the pasted correction).
        color_match: False, True (= ``"lab-mean-std"``) or ``"lab-mean"``: Reinhard colour transfer of each restored
            crop to its input crop (see :mod:`facedeblur.faces.paste`).
        detector: any object with ``.detect(rgb_uint8) -> list[Face]`` (5 or 68 landmarks); default
            :class:`~facedeblur.faces.MTCNN` (pass one to reuse it across calls or to change ``min_face_size``).
        whole_image: restore the whole image as one input instead (for fully convolutional models).
        feather: width of the blending band, a fraction of each face crop's side (0.1; 0 = hard edge).
        paste: ``"residual"`` (paste the model's change; exact where the model changes nothing) or ``"replace"``.
        template: crop style name (see :data:`facedeblur.faces.align.TEMPLATES`); default from the card.
        channel_order: ``"bgr"`` for OpenCV arrays.
        batch_size: crops per forward pass of a :class:`~facedeblur.restore.deblurrer.Deblurrer` (default its 8).

    With no face found a :class:`NoFaceWarning` is issued and the image is returned unchanged.
    """
    from ..restore.convert import prepare

    prep = prepare(img, channel_order)
    if len(prep.frames) != 1:
        raise InputError(f"restore_faces takes one image, got {len(prep.frames)}; call it once per image (or use "
                         "restore_face_arrays for a list of HxWx3 float arrays)")
    rgb = np.ascontiguousarray(prep.frames[0].permute(1, 2, 0).numpy(), dtype=np.float32)
    outs, records = _restore_arrays([rgb], model, u, aligned, only_center_face, max_faces, blend, color_match,
                                    detector, whole_image, feather, paste, template, stacklevel=3,
                                    batch_size=batch_size)
    if not records[0] and not whole_image and isinstance(img, np.ndarray):
        return img.copy(), []
    return prep.finish([torch.from_numpy(outs[0]).permute(2, 0, 1)]), records[0]
