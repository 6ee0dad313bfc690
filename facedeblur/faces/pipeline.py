"""The still-image face pipeline: detect, align, restore (all faces in one batched call), paste back.

:func:`restore_face_arrays` finds every face (MTCNN, 5 landmarks), aligns each onto the crop its model was
trained on (:mod:`facedeblur.faces.align`: least-squares similarity onto the card's 5-point template, at
``card.input.face_size``), restores the crops in one call of the model's restore callable, and pastes them back
with a feathered mask (:mod:`facedeblur.faces.paste`). Modelled on GFPGAN's ``enhance`` / facexlib's
``FaceRestoreHelper`` (PEERS §4), with the pain points of PEERS §9 addressed: seams (feather proportional to the
face, residual paste, optional colour matching), batching across faces, work limited to each face's footprint,
grey / RGBA / 16-bit inputs, and a clear warning (not a silent no-op) when no face is found.

The pipeline takes the model as a :class:`FaceRestorer` (a restore callable and the model's card) and imports
nothing from :mod:`facedeblur.restore`: a :class:`~facedeblur.restore.Deblurrer` hands itself over with
:meth:`~facedeblur.restore.Deblurrer.face_restorer`, and the user-facing :func:`facedeblur.restore_faces` (which also
takes a zoo name and converts any image kind) builds one for any model.
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import numpy as np

from ..errors import CapabilityError, InputError
from .align import crop_style_for, five_points, invert_affine, similarity_transform, template_points, warp_face
from .paste import COLOR_MATCH_MODES, _check_feather, color_match as _color_match, crop_mask, face_mask, paste_back

__all__ = ["FaceRecord", "FaceRestorer", "NoFaceWarning", "restore_face_arrays"]

#: ``restore(crops) -> restored``: a list of (S, S, 3) float32 RGB arrays in [0, 1] in, as many restored images of the
#: same size out (numpy arrays, or CHW tensors).
RestoreFn = Callable[[list[np.ndarray]], Sequence[Any]]


class NoFaceWarning(UserWarning):
    """``restore_faces`` found no face and returned the image unchanged."""


@dataclass(frozen=True)
class FaceRestorer:
    """A model as the face pipeline sees it.

    ``restore``: the restore callable, aligned crops -> restored crops (:data:`RestoreFn`); the moment ``u`` and the
    batch size are the caller's, bound in the callable. ``card``: the model card (``input.face_size`` and
    ``input.face_crop`` give the crop; ``capabilities.frame_window`` and ``name`` are read too). ``restore_windows``:
    for multi-frame models (``frame_window`` T > 1, videos only): a list of (T, S, S, 3) float32 windows -> the
    restored centre crops. ``detector``: builds the default face detector (e.g. a Deblurrer's MTCNN on its device);
    None: ``MTCNN()`` on the CPU.
    """

    restore: RestoreFn
    card: Any
    restore_windows: RestoreFn | None = None
    detector: Callable[[], Any] | None = None


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


def _check_restorer(restorer: Any) -> FaceRestorer:
    if not isinstance(restorer, FaceRestorer) or not callable(restorer.restore) \
            or getattr(getattr(restorer.card, "input", None), "face_size", None) is None:
        raise InputError(f"the face pipeline takes a facedeblur.faces.FaceRestorer (a restore callable and a model "
                         f"card with input.face_size), not {type(restorer).__name__}; for a zoo name or a Deblurrer "
                         f"use facedeblur.restore_faces / facedeblur.restore_video_file")
    return restorer


def _as_image(out: Any) -> np.ndarray:
    """One restored image as an HxWx3 array: numpy as is, a CHW tensor (anything with ``.detach``) transposed."""
    if hasattr(out, "detach"):
        return out.detach().float().cpu().numpy().transpose(1, 2, 0)
    return np.asarray(out)


def _checked(outs: Any, inputs: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    """The outputs of a restore callable for ``inputs``: as many (S, S, 3) float32 arrays, finite, clipped to [0, 1]."""
    if not isinstance(outs, (list, tuple)) or len(outs) != len(inputs):
        raise RuntimeError(f"{what} returned {type(outs).__name__} for a list of {len(inputs)} crops; expected a list "
                           "of as many images")
    result = []
    for crop, out in zip(inputs, outs):
        a = _as_image(out)
        shape = crop.shape[-3:]
        if a.shape != shape:
            raise RuntimeError(f"{what} returned an image of shape {a.shape} for a crop of {shape}")
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise RuntimeError(f"{what} returned NaN or infinite values")
        result.append(np.clip(a, 0.0, 1.0))
    return result


def _run_restorer(restorer: FaceRestorer, crops: list[np.ndarray]) -> list[np.ndarray]:
    """All crops through the restore callable at once (it batches them); each back as (S, S, 3) float32 in [0, 1]."""
    return _checked(restorer.restore(crops), crops, "the model's restore")


def _run_windows(restorer: FaceRestorer, windows: list[np.ndarray]) -> list[np.ndarray]:
    """(T, S, S, 3) windows through ``restore_windows``; the restored centre crops as (S, S, 3) float32 in [0, 1]."""
    if restorer.restore_windows is None:
        raise CapabilityError(f"model {getattr(restorer.card, 'name', '?')!r} takes "
                              f"{restorer.card.capabilities.frame_window} frames per input; its FaceRestorer needs "
                              f"restore_windows (a facedeblur Deblurrer provides it: facedeblur.load(name))")
    return _checked(restorer.restore_windows(windows), windows, "the model's restore_windows")


def _select(faces: list[Any], shape: tuple[int, ...], only_center_face: bool, max_faces: int | None) -> list[Any]:
    faces = sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    if only_center_face and faces:
        cy, cx = shape[0] / 2, shape[1] / 2
        faces = [min(faces, key=lambda f: ((f.box[0] + f.box[2]) / 2 - cx) ** 2
                     + ((f.box[1] + f.box[3]) / 2 - cy) ** 2)]
    return faces[:max_faces] if max_faces is not None else faces


# ------------------------------------------------------------------------------------------------ core


def restore_face_arrays(images: Sequence[np.ndarray], restorer: FaceRestorer, *, aligned: bool = False,
                        only_center_face: bool = False, max_faces: int | None = None, blend: float = 1.0,
                        color_match: bool | str = False, detector: Any = None, whole_image: bool = False,
                        feather: float = 0.1, paste: Literal["residual", "replace"] = "residual",
                        template: str | None = None, stacklevel: int = 1
                        ) -> tuple[list[np.ndarray], list[list[FaceRecord]]]:
    """The face pipeline on HxWx3 float32 RGB arrays in [0, 1] (not modified), the faces of all images in one call of
    ``restorer.restore``. Returns the restored arrays and the face records of each image.

    The options are those of :func:`facedeblur.restore_faces`. ``stacklevel``: how many frames above the caller a
    :class:`NoFaceWarning` is attributed to (wrappers pass 2 or more).
    """
    restorer = _check_restorer(restorer)
    for i, im in enumerate(images):
        if not isinstance(im, np.ndarray) or im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.float32:
            raise InputError(f"images[{i}] must be an HxWx3 float32 RGB array in [0, 1] (restore_faces converts "
                             "any other kind)")
    _check_feather(feather)
    if paste not in ("residual", "replace"):
        raise InputError(f"paste={paste!r}: use 'residual' (default) or 'replace'")
    blend = _check_unit("blend", blend)
    mode = _check_color_mode(color_match)
    if max_faces is not None and (isinstance(max_faces, bool) or not isinstance(max_faces, numbers.Integral)
                                  or max_faces < 1):
        raise InputError(f"max_faces={max_faces!r}: pass a positive int, or None for all faces")
    if aligned and whole_image:
        raise InputError("aligned=True and whole_image=True exclude each other: aligned inputs are face crops, "
                         "whole_image restores an arbitrary photo as one image")
    if whole_image:
        restored = _checked(restorer.restore([np.ascontiguousarray(im) for im in images]), images,
                            "the model's restore")
        return [im + blend * (r - im) for im, r in zip(images, restored)], [[] for _ in images]
    size = int(restorer.card.input.face_size)
    style = template if template is not None else crop_style_for(restorer.card)
    tpl = template_points(style, size)  # also validates an explicit template name
    if aligned:
        return _restore_aligned(images, restorer, size, style, blend, mode, feather)

    if detector is None:
        detector = default_detector(restorer)
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
            "detector that finds smaller faces (e.g. MTCNN(min_face_size=12))"), stacklevel=stacklevel + 1)
        return [np.array(im, dtype=np.float32, copy=True) for im in images], records
    restored = _run_restorer(restorer, [c for *_, c in jobs])
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


def _restore_aligned(images: Sequence[np.ndarray], restorer: FaceRestorer, size: int, style: str, blend: float,
                     mode: str | None, feather: float) -> tuple[list[np.ndarray], list[list[FaceRecord]]]:
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
    restored = _run_restorer(restorer, crops)
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


def default_detector(restorer: FaceRestorer) -> Any:
    """The face detector used when none is given: ``restorer.detector()`` (a Deblurrer's MTCNN on its device), else
    an :class:`~facedeblur.faces.MTCNN` on the CPU."""
    if restorer.detector is not None:
        return restorer.detector()
    from .mtcnn import MTCNN

    return MTCNN()
