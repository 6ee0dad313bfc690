"""Face alignment: a least-squares similarity transform of 5 landmarks onto a crop template, and the warp.

Each model restores the kind of crop it was trained on. A *crop style* names that crop and holds where the five
landmarks (image-left eye, image-right eye, nose, mouth left, mouth right -- the MTCNN order) sit in it, at a
reference size; :func:`template_points` scales it to the model's ``input.face_size``.

``cfmd-256-loose`` -- the CFMD-GAN training crop (paper §4.1; REFERENCE_FACTS §1): the 68-landmark bounding box
enlarged by 0.5x its width/height on each side, squared about its centre, resized to 256 px (upright, loose: hair,
ears and neck included). A 5-point template for it cannot be read off the rule, so it was **measured**
(reproduced by ``tests/test_faces_pipeline.py::test_cfmd_template_matches_measurement``):

1. image: ``skimage.data.astronaut()`` in 18 variants -- unflipped and horizontally flipped, scaled 0.75 / 1.0 /
   1.25 (area / bicubic), shifted by (0, 0), (7, 3), (-5, 11) px (reflect border);
2. in each, 68 points from :class:`facedeblur.data.landmarks.DlibLandmarker` (``detect_size=512``) and 5 points
   from :class:`facedeblur.faces.MTCNN` (the MTCNN face whose landmark centroid lies in the dlib landmark box;
   2 flipped variants where dlib's largest detection was not the face were dropped: 16 kept);
3. the crop square of the 68-point rule, and the MTCNN points in its coordinates,
   ``(p - (centre - side / 2)) * 256 / side`` (the data engine's convention, ``facedeblur.data.engine._crop``);
4. mean over the 16 variants, then made left-right symmetric (average with its mirror ``x -> 256 - x`` with the
   left/right points swapped), which cancels the two detectors' small flip asymmetry.

Per-point standard deviation over the variants: 0.8-3.6 px in x (mouth corners largest), 0.8-2.0 px in y.
One identity was measured, so treat the template as accurate to ~2-3 px at 256; a similarity fit of 5 points
is robust to that (it moves the crop, it does not distort it).

``ffhq-512`` -- the FFHQ alignment used by GFPGAN/CodeFormer (facexlib ``FaceRestoreHelper`` 512 px template; the
numbers are a published fact, PEERS §4.2), for models trained on FFHQ-aligned crops.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import CapabilityError, InputError

__all__ = ["TEMPLATES", "TEMPLATE_SIZES", "CROP_STYLE_BY_TEXT", "template_points", "crop_style_for",
           "similarity_transform", "invert_affine", "affine_scale", "warp_face", "five_points"]

#: 5-point templates (x, y) per crop style, at the reference size of :data:`TEMPLATE_SIZES`. Tuples: read-only.
TEMPLATES: dict[str, tuple[tuple[float, float], ...]] = {
    # measured (see the module docstring): unsymmetrised mean was
    # (98.80, 85.93) (158.19, 86.03) (129.32, 122.34) (98.51, 139.26) (158.22, 139.19)
    "cfmd-256-loose": ((98.31, 85.98), (157.69, 85.98), (128.00, 122.34), (98.14, 139.23), (157.86, 139.23)),
    "ffhq-512": ((192.98, 239.95), (318.90, 240.19), (256.63, 314.02), (201.26, 371.41), (313.09, 371.15)),
}
#: Side (px) of the crop each template is given for.
TEMPLATE_SIZES: dict[str, int] = {"cfmd-256-loose": 256, "ffhq-512": 512}

#: How a card's free-text ``input.face_crop`` maps to a crop style: every keyword (lower case) must appear.
CROP_STYLE_BY_TEXT: tuple[tuple[tuple[str, ...], str], ...] = (
    (("68-landmark", "0.5x"), "cfmd-256-loose"),
    (("ffhq",), "ffhq-512"),
)


def template_points(style: str, size: int) -> np.ndarray:
    """The (5, 2) float64 template of crop style ``style`` for a ``size`` x ``size`` crop."""
    if style not in TEMPLATES:
        raise CapabilityError(f"unknown face crop style {style!r}; known: {sorted(TEMPLATES)}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise InputError(f"face size {size!r} must be an integer >= 8 px")
    return np.asarray(TEMPLATES[style], dtype=np.float64) * (int(size) / TEMPLATE_SIZES[style])


def crop_style_for(card: Any) -> str:
    """The crop style a model card was trained with: ``card.input.face_template`` when the card has that field,
    else matched from the free text ``card.input.face_crop`` (:data:`CROP_STYLE_BY_TEXT`)."""
    inp = getattr(card, "input", None)
    named = getattr(inp, "face_template", None)
    if named:
        if named not in TEMPLATES:
            raise CapabilityError(f"model card {getattr(card, 'name', '?')!r} names face_template {named!r}, which "
                                  f"this version does not know (known: {sorted(TEMPLATES)}); upgrade facedeblur")
        return str(named)
    text = str(getattr(inp, "face_crop", "") or "").lower()
    for keys, style in CROP_STYLE_BY_TEXT:
        if all(k in text for k in keys):
            return style
    raise CapabilityError(f"model card {getattr(card, 'name', '?')!r} does not say which face crop it was trained on "
                          f"(input.face_crop = {text!r}); pass template= one of {sorted(TEMPLATES)} to restore_faces, "
                          "or use whole_image=True / aligned=True")


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(5, 2) points in the MTCNN order from 5 points (returned as is) or the 68-point iBUG layout (eye centres =
    means of points 36-41 and 42-47, nose tip 30, mouth corners 48 and 54)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.isfinite(pts).all():
        raise InputError(f"landmarks must be a finite (P, 2) array of (x, y), not shape {pts.shape}")
    if len(pts) == 5:
        return pts.copy()
    if len(pts) == 68:
        return np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])
    raise InputError(f"landmarks have {len(pts)} points; the face pipeline needs 5 (MTCNN order) or 68 (iBUG)")


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping ``src`` onto
    ``dst`` (both (N, 2), N >= 2): the closed form of Umeyama (IEEE TPAMI 13(4), 1991, Eqs. 40-42).
    Returns the 2x3 matrix ``[s R | t]`` with ``dst ~ s R src + t``."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise InputError(f"similarity_transform needs two (N, 2) point sets of equal shape, N >= 2; got "
                         f"{src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = (xs ** 2).sum() / len(src)
    if var_s < 1e-12:
        raise InputError("the landmarks all coincide; cannot align this face")
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = float((d * sign).sum() / var_s)
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def invert_affine(m: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix."""
    a = np.asarray(m, dtype=np.float64)
    inv = np.linalg.inv(a[:, :2])
    return np.hstack([inv, -inv @ a[:, 2:3]])


def affine_scale(m: np.ndarray) -> float:
    """The (geometric-mean) scale factor of a 2x3 affine matrix."""
    return math.sqrt(abs(float(np.linalg.det(np.asarray(m, dtype=np.float64)[:, :2]))))


def warp_face(img: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` crop ``crop(q) = img(m^-1 q)`` of an HxWxC float image (``m``: image -> crop).

    Enlarging uses bicubic interpolation; shrinking first area-averages the needed patch by the scale (no
    aliasing on large faces, as the data engine's crops), then warps the rest bilinearly. Pixels outside the
    image repeat the border (as in training crops). Float crops are clipped to [0, 1]."""
    import cv2

    m = np.asarray(m, dtype=np.float64)
    s = affine_scale(m)
    if s >= 1.0:
        out = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        return np.clip(out, 0.0, 1.0, out=out) if out.dtype.kind == "f" else out  # bicubic overshoot
    inv = invert_affine(m)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64) @ inv.T
    margin = int(math.ceil(2.0 / s)) + 2
    x0, y0 = (np.floor(corners.min(0)).astype(int) - margin).tolist()
    x1, y1 = (np.ceil(corners.max(0)).astype(int) + margin).tolist()
    h, w = img.shape[:2]
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    src = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else img
    patch = np.ascontiguousarray(src[y0 + pad:y1 + pad, x0 + pad:x1 + pad])
    small = cv2.resize(patch, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    if small.ndim == 2 and img.ndim == 3:
        small = small[..., None]
    # INTER_AREA maps pixel edges to pixel edges: r + 0.5 = s * (p - (x0, y0) + 0.5), so
    # p = (r + 0.5) / s - 0.5 + (x0, y0); compose with m.
    a, t = m[:, :2], m[:, 2]
    m_small = np.hstack([a / s, (a @ (np.array([x0, y0], dtype=np.float64) + 0.5 / s - 0.5) + t)[:, None]])
    return cv2.warpAffine(small, m_small, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
