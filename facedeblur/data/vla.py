"""Variable-length averaging (Chrysos et al., "Motion deblurring of faces", §3.4): blurry faces from videos whose
exposure grows around a centre frame for as long as the average stays a plausible motion blur.

One implementation for both users: the benchmark's ``vla`` set (:mod:`facedeblur.benchmark.data`, validation
identities) and the ``vla`` training windows of the data engine (:func:`facedeblur.data.engine.prepare_vla_windows`,
training identities; recipe key ``vla_fraction``). A window is cut around a centre frame: the face is detected
there and tracked outwards in both temporal directions, every frame is cropped at the centre frame's box, and
:func:`vla_length` grows the window by one frame on each side while the paper's three conditions hold. The frames
are stored in FMR order (as the fixed-length windows), with the temporal centre's position recorded, so a
method can take the centre frame (Chrysos et al.: the ground truth is the middle frame) or any moment u.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..errors import InputError
from ..metrics.fidelity import psnr
from .blur import average_frames, fmr_order
from .crops import crop, crop_box, dedup, sharpness
from .landmarks import _square_box, left_eye
from .sources import iter_frames

__all__ = ["VLAConfig", "VLAWindow", "box_iou", "vla_length", "cut_vla_window", "clip_vla_windows"]


@dataclass(frozen=True)
class VLAConfig:
    """The stop conditions of §3.4 made concrete (see :func:`vla_length`)."""

    min_len: int = 5
    max_len: int = 13
    min_iou: float = 0.5
    min_psnr: float = 22.0
    min_straightness: float = 0.5
    static_motion: float = 0.05

    def __post_init__(self) -> None:
        if self.min_len < 3 or self.min_len % 2 == 0 or self.max_len % 2 == 0 or self.max_len < self.min_len:
            raise InputError(f"VLA lengths must be odd with 3 <= min_len <= max_len, got min_len={self.min_len}, "
                             f"max_len={self.max_len}")
        if not 0.0 <= self.min_iou <= 1.0 or not 0.0 <= self.min_straightness <= 1.0 or self.static_motion < 0:
            raise InputError("VLA min_iou and min_straightness must lie in [0, 1] and static_motion must be >= 0")


@dataclass(frozen=True)
class VLAWindow:
    """One VLA window: ``frames`` (L, S, S, 3) uint8 in FMR order; ``order[k]`` is the temporal index (0..L-1)
    of stored frame k; ``centre_index`` the stored position of the temporal centre frame."""

    frames: np.ndarray
    order: list[int]
    centre_index: int
    length: int
    stop: str
    start_frame: int
    centre_frame: int


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (0 for empty boxes)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def vla_length(crops: list[np.ndarray | None], boxes: list[tuple[float, float, float, float] | None],
               cfg: VLAConfig = VLAConfig(), points: np.ndarray | None = None) -> tuple[int, str]:
    """Variable-length averaging (Chrysos et al. §3.4): (L, stop reason) for the window centred on the middle of
    ``crops`` (2H+1 face crops of consecutive frames, one crop box; None where the face was lost) with their
    face boxes in frame coordinates.

    Starting from the centre frame alone, the window grows by one frame on each side (L = 3, 5, ...) as long
    as the new window satisfies the paper's three conditions, made concrete as:

    (i)   overlap: the face boxes of the first and last frame overlap with IoU >= ``min_iou``;
    (ii)  fidelity: the running average stays related to the middle frame: PSNR(average, centre crop) >=
          ``min_psnr`` dB;
    (iii) motion flow, no oscillation: the path of the face over the window is nearly one-directional, net
          displacement / path length >= ``min_straightness``, unless the path is shorter than
          ``static_motion`` x the centre box diagonal (a still face cannot oscillate, and landmark jitter
          must not count as motion). The face position is ``points`` (per frame, e.g. the mean of the 68
          landmarks, less noisy than a box) or else the box centre;

    and stops at ``max_len`` (exposures of at most 13 frames stay physically plausible at 25-30 fps).
    Reasons: "max_len", "overlap", "fidelity", "oscillation", "no_face", "clip_end".
    """
    if len(crops) != len(boxes) or len(crops) % 2 == 0:
        raise InputError("vla_length needs an odd number of crops and as many boxes (centre in the middle)")
    mid = (len(crops) - 1) // 2
    if crops[mid] is None or boxes[mid] is None:
        return 0, "no_face"
    b = boxes[mid]
    diag = float(np.hypot(b[2] - b[0], b[3] - b[1]))
    length = 1
    while length + 2 <= cfg.max_len:
        h = (length + 1) // 2
        lo, hi = mid - h, mid + h
        if lo < 0 or hi >= len(crops):
            return length, "clip_end"
        window = crops[lo:hi + 1]
        wboxes = boxes[lo:hi + 1]
        if any(c is None for c in window) or any(x is None for x in wboxes):
            return length, "no_face"
        if box_iou(wboxes[0], wboxes[-1]) < cfg.min_iou:
            return length, "overlap"
        centres = np.asarray(points[lo:hi + 1], dtype=np.float64) if points is not None else \
            np.array([((x[0] + x[2]) / 2, (x[1] + x[3]) / 2) for x in wboxes])
        path = float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum())
        net = float(np.linalg.norm(centres[-1] - centres[0]))
        if path > cfg.static_motion * diag and net < cfg.min_straightness * path:
            return length, "oscillation"
        if psnr(average_frames(np.stack(window)), crops[mid]) < cfg.min_psnr:
            return length, "fidelity"
        length += 2
    return length, "max_len"


def cut_vla_window(frames: list[np.ndarray], frame_ids: list[int], detector: Any, cfg: VLAConfig, *,
                   face_size: int, enlarge: float, min_sharpness: float) -> VLAWindow | None:
    """The VLA window around the middle of ``frames`` (consecutive full frames, ``frame_ids`` their indices in
    the clip), or None when no face is found there, the window is shorter than ``cfg.min_len`` or a frame of it
    is not sharp (Laplacian variance of the crop < ``min_sharpness``).

    The face is detected in the centre frame and tracked outwards in both temporal directions (refined from
    the previous frame's box, detected again on drift); all frames are cropped at the centre frame's enlarged
    landmark box (``enlarge``, as the data engine's windows), resized to ``face_size``.
    """
    mid = (len(frames) - 1) // 2
    found = detector.detect(frames[mid])
    if not found:
        return None
    faces: list[Any] = [None] * len(frames)
    faces[mid] = found[0]
    for step in (1, -1):  # track outwards from the centre (refine from the previous box, re-detect on drift)
        prev = faces[mid]
        j = mid + step
        while 0 <= j < len(frames):
            f = detector.refine(frames[j], _square_box(prev))
            w, pw = f.landmark_box()[2] - f.landmark_box()[0], prev.landmark_box()[2] - prev.landmark_box()[0]
            if not 0.7 < w / max(pw, 1e-6) < 1.4:
                again = detector.detect(frames[j])
                f = again[0] if again else None
            if f is None:
                break
            faces[j], prev = f, f
            j += step
    cx, cy, side = crop_box(np.array([faces[mid].landmark_box()]), enlarge)
    crops = [None if f is None else crop(fr, cx, cy, side, face_size) for f, fr in zip(faces, frames)]
    boxes = [None if f is None else f.landmark_box() for f in faces]
    points = np.array([(np.nan, np.nan) if f is None else np.asarray(f.landmarks, np.float64).mean(axis=0)
                       for f in faces])
    length, reason = vla_length(crops, boxes, cfg, points)
    if length < cfg.min_len:
        return None
    h = (length - 1) // 2
    win = crops[mid - h:mid + h + 1]
    if min(sharpness(f) for f in win) < min_sharpness:
        return None
    scale = face_size / side
    eyes = np.array([(left_eye(faces[mid + d]) - (cx - side / 2, cy - side / 2)) * scale for d in range(-h, h + 1)])
    order = [int(o) for o in fmr_order(eyes)]
    return VLAWindow(frames=np.stack(win)[order], order=order, centre_index=order.index(h), length=length,
                     stop=reason, start_frame=frame_ids[mid - h], centre_frame=frame_ids[mid])


def clip_vla_windows(clip: Any, detector: Any, cfg: VLAConfig, *, per_clip: int, face_size: int, enlarge: float,
                     min_sharpness: float, duplicate_threshold: float) -> Iterator[VLAWindow]:
    """Up to ``per_clip`` VLA windows of a clip, centred on evenly spaced kept frames (repeated frames dropped as
    in the data engine) whose ``max_len`` neighbourhoods do not overlap. Two passes over the frames: one to
    find the repeats, one that holds at most one neighbourhood of frames in memory."""
    kept: list[int] = []
    for _ in dedup(iter_frames(clip), duplicate_threshold, kept):
        pass
    half = (cfg.max_len - 1) // 2
    if len(kept) < 2 * half + 1:
        return
    centres = sorted({int(round(v)) for v in np.linspace(half, len(kept) - 1 - half, per_clip + 2)[1:-1]})
    spans = [(c, c - half, c + half) for c in centres]
    spans = [s for i, s in enumerate(spans) if i == 0 or s[1] > spans[i - 1][2]]  # disjoint neighbourhoods
    pos_of = {k: p for p, k in enumerate(kept)}
    cur, buf = 0, {}
    for i, rgb in enumerate(iter_frames(clip)):
        if cur >= len(spans):
            break
        _, lo, hi = spans[cur]
        p = pos_of.get(i)
        if p is not None and lo <= p <= hi:
            buf[p] = rgb
        if p == hi:
            win = cut_vla_window([buf[q] for q in range(lo, hi + 1)], [kept[q] for q in range(lo, hi + 1)], detector,
                                 cfg, face_size=face_size, enlarge=enlarge, min_sharpness=min_sharpness)
            if win is not None:
                yield win
            cur, buf = cur + 1, {}
