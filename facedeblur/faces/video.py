"""Face restoration of video files: stream, detect, track, smooth, restore, paste back, write, copy the audio.

:func:`process_video_file` (the engine behind :func:`facedeblur.restore_video_file`, which also takes a zoo name or
a Deblurrer) reads ``src`` frame by frame (``cv2.VideoCapture``) and writes ``dst``
(``cv2.VideoWriter``) with the same frame count, frame rate and size. Memory does not grow with the length of the
video: only a short window of frames is held (detection chunk + smoothing look-ahead + one restoration batch,
plus the model's frame window). Per frame:

1. **Detect** every face (MTCNN, 5 landmarks; frames go to the detector in small chunks, which shares its
   P-Net passes).
2. **Track** (:class:`FaceTracker`): detections are linked to the faces of the previous frames by box overlap
   (IoU), with a centre-distance fallback for small fast faces; a face missed for up to ``max_missing`` frames
   keeps its track.
3. **Smooth the landmarks** (:func:`smooth_at`): detector landmarks jitter by a pixel or two from frame to frame,
   which makes aligned crops -- and the pasted faces -- shake. Each track's 5 points are replaced by a centred
   local-linear fit (LOESS with tricube weights) over the frames ``t - r .. t + r`` (``smoothing=r``, default
   3: a 3-frame look-ahead). A local-*linear* fit has no lag on steady motion (it is exact for constant velocity),
   unlike a causal low-pass filter; noise is averaged over ~2r + 1 frames. A detection missed inside a track is
   filled in by the same fit, so a face does not flicker between restored and not restored.
4. **Restore** the aligned crops of all faces of ``batch_size`` frames in one batched model call. Models with a
   frame window T > 1 get, for each face, the T neighbouring frames warped with the *centre* frame's alignment
   (reflected at the ends of the video, :func:`reflect_index`), restored by the Deblurrer's own batching.
5. **Paste back** with the feathered residual paste of :func:`facedeblur.faces.paste.paste_back`, working only on
   the faces' footprint; frames without faces are written untouched.

The output goes to a temporary file next to ``dst`` and is moved into place (``os.replace``) only when complete:
an exception or Ctrl-C leaves no partial file and never touches ``src`` or an existing ``dst``. OpenCV writes no
audio: when an ``ffmpeg`` executable is on ``PATH`` the source's audio is copied into the result without
re-encoding (``ffmpeg -map 0:v:0 -map 1:a -c copy``); otherwise an :class:`AudioNotCopiedWarning` says so.
A video in which no face is found anywhere is written unchanged (re-encoded) with a :class:`NoFaceWarning`.
"""
from __future__ import annotations

import math
import numbers
import os
import re
import shutil
import subprocess
import tempfile
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..errors import CapabilityError, InputError
from .align import affine_scale, crop_style_for, five_points, invert_affine, similarity_transform, template_points, \
    warp_face
from .paste import _check_feather, color_match as _color_match, crop_mask, footprint, paste_back
from .pipeline import (FaceRestorer, NoFaceWarning, _check_color_mode, _check_restorer, _check_unit, _run_restorer,
                       _run_windows, _select, default_detector)

__all__ = ["VIDEO_EXTENSIONS", "DEFAULT_CODECS", "AudioNotCopiedWarning", "VideoFace", "VideoResult", "FaceTracker",
           "smooth_at", "smooth_track", "landmark_jitter", "is_video", "check_video_paths", "process_video_file",
           "reflect_index"]

#: File suffixes treated as videos (lower case).
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
#: FourCC written for each container unless ``codec=`` says otherwise (all available in opencv-python's FFmpeg).
DEFAULT_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v", ".webm": "VP80"}
_MJPG_QUALITY = 95
_DETECT_CHUNK = 4  # frames per detector call


class AudioNotCopiedWarning(UserWarning):
    """The restored video has no audio track although the source may have one (no ``ffmpeg`` on PATH, or the
    copy failed)."""


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a video suffix (:data:`VIDEO_EXTENSIONS`)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


# ------------------------------------------------------------------------------------------------ smoothing


def reflect_index(i: int, last: int) -> int:
    """Frame ``i`` of a window mapped into a clip of frames ``0 .. last`` by reflection about the end frames (the
    end frame itself not repeated: -1 -> 1, -2 -> 2, last + 1 -> last - 1; numpy's ``reflect``, periodic for windows
    longer than the clip). The edge rule of every multi-frame window: the face pipeline's and
    ``Deblurrer.restore_video``'s (for T = 5 the first frame's window is frames 2, 1, 0, 1, 2)."""
    if last <= 0:
        return 0
    m = i % (2 * last)
    return m if m <= last else 2 * last - m




def _tricube(d: np.ndarray, radius: float) -> np.ndarray:
    x = np.clip(np.abs(d) / (radius + 1.0), 0.0, 1.0)
    return (1.0 - x ** 3) ** 3


def smooth_at(times: Sequence[float], points: np.ndarray, t: float, radius: float) -> np.ndarray:
    """Local-linear estimate at time ``t`` of points observed at ``times`` (LOESS: weighted least squares of a
    line with tricube weights ``(1 - (|dt| / (radius + 1))^3)^3``; observations farther than ``radius`` get no
    weight). ``points``: (N, ...) array, one entry per time. Exact for points moving at constant velocity."""
    tt = np.asarray(times, dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64)
    if tt.ndim != 1 or len(tt) != len(pts) or len(tt) == 0:
        raise InputError("smooth_at needs one point set per time and at least one time")
    d = tt - float(t)
    w = _tricube(d, radius)
    keep = w > 0
    if not keep.any():
        raise InputError(f"smooth_at: no observation within {radius} of t = {t}")
    d, w, flat = d[keep], w[keep], pts[keep].reshape(int(keep.sum()), -1)
    if len(d) == 1 or np.ptp(d) == 0:
        return (w @ flat / w.sum()).reshape(pts.shape[1:])
    x = np.stack([np.ones_like(d), d], axis=1)
    xtw = x.T * w
    coef = np.linalg.solve(xtw @ x, xtw @ flat)
    return coef[0].reshape(pts.shape[1:])


def smooth_track(points: np.ndarray, radius: int = 3) -> np.ndarray:
    """:func:`smooth_at` at every frame of a complete (N, ...) track observed in consecutive frames (what the
    video pipeline does on the fly, for analysis and tests)."""
    pts = np.asarray(points, dtype=np.float64)
    n = len(pts)
    if radius <= 0:
        return pts.copy()
    out = np.empty_like(pts)
    for t in range(n):
        lo, hi = max(0, t - radius), min(n, t + radius + 1)
        out[t] = smooth_at(np.arange(lo, hi), pts[lo:hi], t, radius)
    return out


def landmark_jitter(points: np.ndarray) -> float:
    """Mean frame-to-frame second difference, in pixels: the mean over frames t and points of
    ``|p[t+1] - 2 p[t] + p[t-1]|`` for an (N, P, 2) track of consecutive frames (0 for steady motion)."""
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) < 3:
        return float("nan")
    d2 = pts[2:] - 2.0 * pts[1:-1] + pts[:-2]
    return float(np.linalg.norm(d2, axis=-1).mean())


class _JitterMeter:
    """Running :func:`landmark_jitter` of raw and smoothed landmarks over all tracks (constant memory)."""

    def __init__(self) -> None:
        self.last: dict[int, deque[tuple[int, np.ndarray, np.ndarray]]] = {}
        self.sum_raw = self.sum_smooth = 0.0
        self.count = 0

    def add(self, track: int, t: int, raw: np.ndarray | None, smooth: np.ndarray) -> None:
        if raw is None:  # filled-in frame: no raw value, the run of consecutive observations breaks
            self.last.pop(track, None)
            return
        q = self.last.setdefault(track, deque(maxlen=3))
        if q and q[-1][0] != t - 1:
            q.clear()
        q.append((t, raw.astype(np.float64), smooth.astype(np.float64)))
        if len(q) == 3:
            (_, r0, s0), (_, r1, s1), (_, r2, s2) = q
            self.sum_raw += float(np.linalg.norm(r2 - 2 * r1 + r0, axis=-1).mean())
            self.sum_smooth += float(np.linalg.norm(s2 - 2 * s1 + s0, axis=-1).mean())
            self.count += 1

    def forget(self, tracks: Iterable[int]) -> None:
        for k in tracks:
            self.last.pop(k, None)

    @property
    def raw(self) -> float | None:
        return self.sum_raw / self.count if self.count else None

    @property
    def smoothed(self) -> float | None:
        return self.sum_smooth / self.count if self.count else None


# ------------------------------------------------------------------------------------------------ tracking


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FaceTracker:
    """Links the faces of consecutive frames into tracks (greedy assignment, highest overlap first).

    A detection continues a track when its box overlaps the track's last box with IoU >= ``iou_threshold``, or,
    failing that, when the box centres are closer than ``centre_distance`` x the box side and the sizes agree
    within 1.5x (small, fast faces). Tracks unseen for more than ``max_missing`` frames end; unmatched detections
    start new tracks. Track ids are 0, 1, 2, ... in order of appearance.
    """

    def __init__(self, iou_threshold: float = 0.3, centre_distance: float = 0.5, max_missing: int = 3) -> None:
        self.iou_threshold = float(iou_threshold)
        self.centre_distance = float(centre_distance)
        self.max_missing = int(max_missing)
        self.frame = -1
        self.tracks: dict[int, tuple[tuple[float, float, float, float], int]] = {}  # id -> (last box, last frame)
        self.next_id = 0

    def update(self, faces: Sequence[Any]) -> list[tuple[int, Any]]:
        """Assign the faces (objects with ``.box``) of the next frame to tracks: ``[(track id, face), ...]`` in
        the order given."""
        self.frame += 1
        self.tracks = {k: v for k, v in self.tracks.items() if self.frame - v[1] <= self.max_missing + 1}
        pairs: list[tuple[float, int, int]] = []
        for i, f in enumerate(faces):
            for k, (box, _) in self.tracks.items():
                iou = _iou(f.box, box)
                if iou >= self.iou_threshold:
                    pairs.append((1.0 + iou, i, k))
                    continue
                side_f = max(f.box[2] - f.box[0], f.box[3] - f.box[1])
                side_t = max(box[2] - box[0], box[3] - box[1])
                if min(side_f, side_t) <= 0 or max(side_f, side_t) > 1.5 * min(side_f, side_t):
                    continue
                dist = math.hypot((f.box[0] + f.box[2] - box[0] - box[2]) / 2,
                                  (f.box[1] + f.box[3] - box[1] - box[3]) / 2)
                rel = dist / (0.5 * (side_f + side_t))
                if rel < self.centre_distance:
                    pairs.append((1.0 - rel, i, k))  # always ranked below an overlap match
        pairs.sort(key=lambda p: -p[0])
        assigned: dict[int, int] = {}
        used: set[int] = set()
        for _, i, k in pairs:
            if i in assigned or k in used:
                continue
            assigned[i] = k
            used.add(k)
        out = []
        for i, f in enumerate(faces):
            k = assigned.get(i)
            if k is None:
                k, self.next_id = self.next_id, self.next_id + 1
            self.tracks[k] = (tuple(float(v) for v in f.box), self.frame)  # type: ignore[assignment]
            out.append((k, f))
        return out


# ------------------------------------------------------------------------------------------------ results


@dataclass
class VideoFace:
    """One face in one frame: ``track`` id, ``box`` (x0, y0, x1, y1), the smoothed ``landmarks`` used for the
    alignment ((5, 2) x, y pixels), the detector's ``raw_landmarks`` and ``score`` (both None where a missed
    detection was filled in), and ``affine`` (2x3 image -> crop; set once the face is restored)."""

    track: int
    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    raw_landmarks: np.ndarray | None
    score: float | None
    affine: np.ndarray | None = None


@dataclass
class VideoResult:
    """What :func:`restore_video_file` wrote. ``audio``: ``"copied"``, ``"none in source"``, ``"off"``
    (``audio=False``), ``"not copied: ffmpeg not found"`` or ``"not copied: <reason>"``. ``jitter_*_px``: mean
    frame-to-frame second difference of the detector's and of the smoothed landmarks (:func:`landmark_jitter`
    over every track; None without three consecutive detections)."""

    path: Path
    frames: int
    fps: float
    width: int
    height: int
    codec: str
    frames_with_faces: int
    faces: int
    tracks: int
    audio: str
    seconds: float
    jitter_raw_px: float | None = None
    jitter_smoothed_px: float | None = None
    face_pipeline: bool = True
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ frame helpers


def _shift(m: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """The image -> crop affine ``m`` for a sub-image whose top-left pixel is (x0, y0) of the image."""
    m = np.asarray(m, dtype=np.float64)
    return np.hstack([m[:, :2], (m[:, :2] @ np.array([x0, y0], dtype=np.float64) + m[:, 2])[:, None]])


def crop_from_u8(rgb: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """``warp_face(rgb / 255, m, size)`` for an HxWx3 uint8 frame, converting only the pixels the crop reads
    (the same result as warping the whole float frame)."""
    h, w = rgb.shape[:2]
    s = affine_scale(m)
    margin = (int(math.ceil(2.0 / s)) + 4) if s < 1.0 else 4
    inv = invert_affine(m)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64) @ inv.T
    x0, y0 = (np.floor(corners.min(0)).astype(int) - margin).tolist()
    x1, y1 = (np.ceil(corners.max(0)).astype(int) + margin + 1).tolist()
    x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
    x1, y1 = max(min(x1, w), x0 + 1), max(min(y1, h), y0 + 1)
    sub = rgb[y0:y1, x0:x1].astype(np.float32) * np.float32(1.0 / 255.0)
    return warp_face(sub, _shift(m, x0, y0), size)


def paste_into_u8(rgb: np.ndarray, items: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], *, feather: float,
                  blend: float, mode: str) -> np.ndarray:
    """:func:`~facedeblur.faces.paste.paste_back` on an HxWx3 uint8 frame, done in float on the faces' footprint
    only; returns a new uint8 frame (pixels outside every footprint are copied exactly)."""
    boxes = [footprint(m, int(r.shape[0]), rgb.shape) for m, _, r in items]
    boxes = [b for b in boxes if b is not None]
    if not boxes or blend == 0.0:
        return rgb.copy()
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    region = rgb[y0:y1, x0:x1].astype(np.float32) * np.float32(1.0 / 255.0)
    shifted = [(_shift(m, x0, y0), c, r) for m, c, r in items]
    pasted = paste_back(region, shifted, feather=feather, blend=blend, mode=mode)  # type: ignore[arg-type]
    out = rgb.copy()
    out[y0:y1, x0:x1] = np.clip(np.rint(pasted * 255.0), 0, 255).astype(np.uint8)
    return out


# ------------------------------------------------------------------------------------------------ reading / writing


def _check_fourcc(codec: Any) -> str:
    if not isinstance(codec, str) or len(codec) != 4 or not codec.isascii():
        raise InputError(f"codec={codec!r}: pass a four-character code such as 'mp4v', 'MJPG', 'FFV1' or 'XVID'")
    return codec


def _open_capture(src: Path) -> tuple[Any, float, int]:
    import cv2

    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        cap.release()
        raise InputError(f"{str(src)!r}: cannot open this file as a video (not a video, or a codec OpenCV's FFmpeg "
                         f"cannot decode); re-encode it, e.g. 'ffmpeg -i {src.name} -c:v libx264 fixed.mp4'")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return cap, fps, max(count, 0)


def _frames(cap: Any, first: np.ndarray) -> Iterator[np.ndarray]:
    yield first
    while True:
        ok, frame = cap.read()
        if not ok or frame is None:
            return
        yield frame


def _find_ffmpeg() -> str | None:
    """The ``ffmpeg`` executable on PATH, or None (one place, so tests can replace it)."""
    return shutil.which("ffmpeg")


def _source_has_audio(ffmpeg: str, src: Path) -> bool:
    """Whether ffmpeg lists an audio stream in ``src`` (``ffmpeg -i src`` prints the streams, then exits 1)."""
    probe = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-i", str(src)], capture_output=True, text=True,
                           timeout=120)
    return re.search(r"Stream #\S+.*: Audio:", probe.stderr) is not None


def _mux_audio(ffmpeg: str, video: Path, src: Path, out: Path) -> None:
    """``out`` = the video stream of ``video`` + the audio streams of ``src``, both copied without re-encoding."""
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(video), "-i", str(src),
           "-map", "0:v:0", "-map", "1:a", "-c", "copy", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if run.returncode != 0 or not out.exists() or out.stat().st_size == 0:
        last = (run.stderr or "").strip().splitlines()[-1:] or [f"exit status {run.returncode}"]
        raise RuntimeError(last[0])


def _temp_path(dst: Path, tag: str) -> Path:
    """An empty, unique file next to ``dst`` ending in ``dst``'s suffix (writers pick the container from it)."""
    fd, name = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=f".{tag}{dst.suffix}", dir=dst.parent)
    os.close(fd)
    return Path(name)


# ------------------------------------------------------------------------------------------------ face stream


@dataclass
class _Frame:
    index: int
    rgb: np.ndarray
    obs: dict[int, Any]  # track id -> detected face (5-point landmarks)


class _FaceStream:
    """Turns a stream of BGR frames into restored BGR frames (see the module docstring); holds a bounded window."""

    def __init__(self, restorer: FaceRestorer, detector: Any, batch_size: int, smoothing: int, only_center_face: bool,
                 max_faces: int | None, blend: float, color_mode: str | None, feather: float, paste: str,
                 template: str | None, on_frame: Callable[[int, list[VideoFace]], None] | None) -> None:
        self.restorer, self.detector = restorer, detector
        card = restorer.card
        self.batch_size, self.radius = batch_size, smoothing
        self.only_center_face, self.max_faces = only_center_face, max_faces
        self.blend, self.color_mode, self.feather, self.paste = blend, color_mode, feather, paste
        self.on_frame = on_frame
        self.size = int(card.input.face_size)
        self.tpl = template_points(template if template is not None else crop_style_for(card), self.size)
        self.window = max(int(getattr(card.capabilities, "frame_window", 1) or 1), 1)
        self.before = (self.window - 1) // 2
        self.after = self.window - 1 - self.before
        self.lookahead = max(self.radius, self.after)
        self.past = max(self.radius, self.before)
        self.tracker = FaceTracker()
        self.jitter = _JitterMeter()
        self.weights = crop_mask(self.size, feather) if feather > 0 else None
        self.frames_with_faces = 0
        self.faces = 0
        self.max_buffer = 0

    # ---------------------------------------------------------------- main loop

    def run(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        import cv2

        buf: deque[_Frame] = deque()
        next_out, index = 0, 0
        chunk: list[np.ndarray] = []
        it = iter(frames)
        done = False
        while not done:
            chunk.clear()
            for bgr in it:
                chunk.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                if len(chunk) >= _DETECT_CHUNK:
                    break
            else:
                done = True
            if chunk:
                for rgb, found in zip(chunk, self._detect(chunk)):
                    obs = {k: f for k, f in self.tracker.update(found)}
                    buf.append(_Frame(index, rgb, obs))
                    index += 1
                self.max_buffer = max(self.max_buffer, len(buf))
            newest = index - 1
            while next_out <= newest and (done or newest - next_out >= self.lookahead + self.batch_size - 1):
                stop = min(newest, next_out + self.batch_size - 1)
                yield from self._process(buf, next_out, stop, newest, done)
                next_out = stop + 1
                while buf and buf[0].index < next_out - self.past:
                    buf.popleft()

    def _detect(self, rgbs: list[np.ndarray]) -> list[list[Any]]:
        if hasattr(self.detector, "detect_batch"):
            found = self.detector.detect_batch(rgbs)
        else:
            found = [self.detector.detect(r) for r in rgbs]
        return [[f for f in faces] for faces in found]

    # ---------------------------------------------------------------- per batch

    def _smoothed(self, buf: deque[_Frame], t: int, newest: int) -> list[VideoFace]:
        first = buf[0].index
        lo, hi = max(t - self.radius, first), min(t + self.radius, newest)
        seen: dict[int, list[tuple[int, Any]]] = {}
        for s in range(lo, hi + 1):
            for k, f in buf[s - first].obs.items():
                seen.setdefault(k, []).append((s, f))
        here = buf[t - first].obs
        out = []
        for k, obs in seen.items():
            at = here.get(k)
            times = [s for s, _ in obs]
            if at is None and not (min(times) < t < max(times)):
                continue  # only fill gaps inside a track, never extend one
            pts = np.stack([five_points(np.asarray(f.landmarks, dtype=np.float64)) for _, f in obs])
            lm = pts[times.index(t)] if (at is not None and self.radius == 0) else \
                smooth_at(times, pts, t, max(self.radius, 1))
            if at is not None:
                box = tuple(float(v) for v in at.box)
                raw = five_points(np.asarray(at.landmarks, dtype=np.float64))
                score = float(at.score) if getattr(at, "score", None) is not None else None
            else:
                (tb, fb), (ta, fa) = max((o for o in obs if o[0] < t), key=lambda o: o[0]), \
                    min((o for o in obs if o[0] > t), key=lambda o: o[0])
                a = (t - tb) / (ta - tb)
                box = tuple(float((1 - a) * p + a * q) for p, q in zip(fb.box, fa.box))
                raw, score = None, None
            out.append(VideoFace(k, box, lm.astype(np.float32), None if raw is None else raw.astype(np.float32),
                                 score))  # type: ignore[arg-type]
        out.sort(key=lambda v: v.track)
        return out

    def _process(self, buf: deque[_Frame], start: int, stop: int, newest: int, done: bool) -> Iterator[np.ndarray]:
        import cv2

        first = buf[0].index
        frames = [buf[t - first] for t in range(start, stop + 1)]
        per_frame: list[list[VideoFace]] = []
        jobs: list[tuple[int, VideoFace, np.ndarray, np.ndarray, list[np.ndarray] | None]] = []
        for j, fr in enumerate(frames):
            faces = self._smoothed(buf, fr.index, newest)
            faces = _select(faces, fr.rgb.shape, self.only_center_face, self.max_faces)
            per_frame.append(faces)
            for vf in faces:
                m = similarity_transform(vf.landmarks.astype(np.float64), self.tpl)
                vf.affine = m
                crop = crop_from_u8(fr.rgb, m, self.size)
                win = None
                if self.window > 1:
                    win = []
                    # reflected at the ends of the video: frame 0 starts it, and until it is done the look-ahead
                    # keeps every window short of the newest frame, so reflection about ``newest`` only happens at
                    # the true end; then kept inside the buffer (only a clip shorter than the window needs that)
                    for d in range(-self.before, self.after + 1):
                        s = min(max(reflect_index(fr.index + d, newest), first), newest)
                        win.append(crop if s == fr.index else crop_from_u8(buf[s - first].rgb, m, self.size))
                jobs.append((j, vf, m, crop, win))
        restored = self._restore([c for *_, c, _ in jobs], [w for *_, w in jobs]) if jobs else []
        items: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in frames]
        for (j, _, m, crop, _), out in zip(jobs, restored):
            if self.color_mode is not None:
                out = _color_match(out, crop, self.weights, self.color_mode)
            items[j].append((m, crop, out))
        for fr, faces, its in zip(frames, per_frame, items):
            if faces:
                self.frames_with_faces += 1
                self.faces += len(faces)
            for vf in faces:
                self.jitter.add(vf.track, fr.index, vf.raw_landmarks, vf.landmarks)
            out_rgb = paste_into_u8(fr.rgb, its, feather=self.feather, blend=self.blend, mode=self.paste) \
                if its else fr.rgb
            if self.on_frame is not None:
                self.on_frame(fr.index, faces)
            yield cv2.cvtColor(out_rgb, cv2.COLOR_RGB2BGR)

    def _restore(self, crops: list[np.ndarray], windows: list[list[np.ndarray] | None]) -> list[np.ndarray]:
        if self.window <= 1:
            return _run_restorer(self.restorer, crops)
        return _run_windows(self.restorer, [np.stack(w) for w in windows])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ entry point


def check_video_paths(src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False) -> None:
    """:class:`~facedeblur.errors.InputError` unless ``src`` is an existing video file and ``dst`` a video file name
    that is not ``src``, not a folder and (without ``overwrite``) not an existing file."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise InputError(f"{str(src)!r}: no such file")
    if src.is_dir():
        raise InputError(f"{str(src)!r} is a folder; pass a video file")
    for p, what in ((src, "input"), (dst, "output")):
        if p.suffix.lower() not in VIDEO_EXTENSIONS:
            raise InputError(f"{str(p)!r}: unsupported video format {p.suffix or '(no suffix)'!r} for the {what}; "
                             f"use one of {', '.join(VIDEO_EXTENSIONS)}")
    if os.path.realpath(src) == os.path.realpath(dst):
        raise InputError(f"output {str(dst)!r} is the input video; choose another output name")
    if dst.is_dir():
        raise InputError(f"output {str(dst)!r} is a folder; pass a file name such as {str(dst / src.name)!r}")
    if dst.exists() and not overwrite:
        raise InputError(f"output {str(dst)!r} exists; pass overwrite=True (CLI: --overwrite) to replace it")


def process_video_file(src: str | os.PathLike, dst: str | os.PathLike, restorer: FaceRestorer | None = None, *,
                       frames: Callable[[Iterator[np.ndarray]], Iterable[np.ndarray]] | None = None,
                       batch_size: int = 8, detector: Any = None, smoothing: int = 3, only_center_face: bool = False,
                       max_faces: int | None = None, blend: float = 1.0, color_match: bool | str = False,
                       feather: float = 0.1, paste: str = "residual", template: str | None = None,
                       codec: str | None = None, audio: bool = True, overwrite: bool = False, progress: bool = True,
                       name: str = "", on_frame: Callable[[int, list[VideoFace]], None] | None = None) -> VideoResult:
    """The video engine: read ``src``, restore, write ``dst`` (same frame count, fps and size); see the module doc.

    Exactly one of ``restorer`` (the face pipeline: detect, track, smooth, restore the aligned faces with the
    :class:`~facedeblur.faces.FaceRestorer`, paste back) and ``frames`` (whole frames: a function from the iterator of
    decoded BGR uint8 frames to the restored BGR uint8 frames, e.g. a Deblurrer's ``restore_video``) is given.
    ``batch_size`` frames have their faces restored in one call of the restore callable. ``detector``: default
    ``restorer.detector()``, else :class:`~facedeblur.faces.MTCNN`. ``name``: the model name for the progress bar. The
    other options are those of :func:`facedeblur.restore_video_file`.

    Returns a :class:`VideoResult`. Warns :class:`NoFaceWarning` when no frame has a face (the video is written
    unchanged) and :class:`AudioNotCopiedWarning` when the audio could not be copied.
    Raises :class:`~facedeblur.errors.InputError` for missing / unreadable / unsupported files and bad options.
    """
    import cv2
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    src_p, dst_p = Path(src), Path(dst)
    check_video_paths(src_p, dst_p, overwrite)
    if (restorer is None) == (frames is None):
        raise InputError("process_video_file takes exactly one of restorer= (the face pipeline) and frames= (whole "
                         "frames)")
    use_faces = restorer is not None
    if use_faces:
        restorer = _check_restorer(restorer)
        name = name or str(getattr(restorer.card, "name", ""))
    elif not callable(frames):
        raise InputError(f"frames must be a function of the frame iterator, not {type(frames).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, not {batch_size!r}")
    if isinstance(smoothing, bool) or not isinstance(smoothing, numbers.Integral) or not 0 <= smoothing <= 30:
        raise InputError(f"smoothing={smoothing!r}: the smoothing radius is a whole number of frames in [0, 30] "
                         "(0 = off, default 3)")
    if max_faces is not None and (isinstance(max_faces, bool) or not isinstance(max_faces, numbers.Integral)
                                  or max_faces < 1):
        raise InputError(f"max_faces={max_faces!r}: pass a positive int, or None for all faces")
    blend = _check_unit("blend", blend)
    color_mode = _check_color_mode(color_match)
    feather = _check_feather(feather)
    if paste not in ("residual", "replace"):
        raise InputError(f"paste={paste!r}: use 'residual' (default) or 'replace'")
    if use_faces:
        assert restorer is not None
        window = int(restorer.card.capabilities.frame_window or 1)
        if window > 1 and restorer.restore_windows is None:
            raise CapabilityError(f"model {name!r} takes {window} frames per input: its FaceRestorer needs "
                                  "restore_windows (a facedeblur Deblurrer provides it: facedeblur.load(name))")
        template_points(template if template is not None else crop_style_for(restorer.card), 8)  # validate early
    suffix = dst_p.suffix.lower()
    fourcc = _check_fourcc(codec if codec is not None else DEFAULT_CODECS[suffix])
    if use_faces and detector is None:
        assert restorer is not None
        detector = default_detector(restorer)

    cap, fps, count = _open_capture(src_p)
    notes: list[str] = []
    tmp: Path | None = None
    muxed: Path | None = None
    writer = None
    try:
        ok, first = cap.read()
        if not ok or first is None:
            raise InputError(f"{str(src_p)!r}: no frame could be decoded from this video; check that it plays, or "
                             "re-encode it (e.g. with ffmpeg -c:v libx264)")
        h, w = first.shape[:2]
        if first.ndim != 3 or first.shape[2] != 3:
            raise InputError(f"{str(src_p)!r}: decoded frames have shape {first.shape}; expected HxWx3 colour")
        if not math.isfinite(fps) or fps <= 0:
            fps = 25.0
            notes.append(f"{src_p.name}: the video does not state its frame rate; wrote 25 fps")
            warnings.warn(f"{src_p.name}: the video does not state its frame rate; writing 25 fps", stacklevel=2)
        dst_p.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_path(dst_p, "tmp")
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
        if not writer.isOpened():
            raise InputError(f"{str(dst_p)!r}: OpenCV cannot write {suffix} video with codec {fourcc!r}; choose "
                             f"another codec or container (e.g. .mp4 with mp4v, .avi with MJPG)")
        if fourcc == "MJPG":
            writer.set(cv2.VIDEOWRITER_PROP_QUALITY, _MJPG_QUALITY)
        stream = None
        if use_faces:
            assert restorer is not None
            stream = _FaceStream(restorer, detector, int(batch_size), int(smoothing), bool(only_center_face),
                                 max_faces, blend, color_mode, feather, paste, template, on_frame)
            outputs: Iterable[np.ndarray] = stream.run(_frames(cap, first))
        else:
            assert frames is not None
            outputs = frames(_frames(cap, first))
        written = 0
        with tqdm(total=count or None, disable=not progress, desc=f"video {name}",
                  unit="frame", dynamic_ncols=True) as bar:
            for frame in outputs:
                if frame.shape[:2] != (h, w):
                    raise InputError(f"{str(src_p)!r}: frame {written} is {frame.shape[1]}x{frame.shape[0]}, but the "
                                     f"video started at {w}x{h}; videos whose size changes are not supported")
                writer.write(np.ascontiguousarray(frame))
                written += 1
                bar.update(1)
                if on_frame is not None and not use_faces:
                    on_frame(written - 1, [])
        writer.release()
        writer = None
        if tmp.stat().st_size == 0:
            raise InputError(f"{str(dst_p)!r}: the video writer produced an empty file (codec {fourcc!r})")

        audio_state = "off"
        final = tmp
        if audio:
            ffmpeg = _find_ffmpeg()
            if ffmpeg is None:
                audio_state = "not copied: ffmpeg not found"
                msg = (f"{dst_p.name}: written without audio -- OpenCV writes video only, and copying the audio of "
                       f"{src_p.name} needs ffmpeg on PATH (install ffmpeg to keep the sound)")
                notes.append(msg)
                warnings.warn(AudioNotCopiedWarning(msg), stacklevel=2)
            else:
                try:
                    if _source_has_audio(ffmpeg, src_p):
                        muxed = _temp_path(dst_p, "mux")
                        _mux_audio(ffmpeg, tmp, src_p, muxed)
                        final = muxed
                        audio_state = "copied"
                    else:
                        audio_state = "none in source"
                except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                    audio_state = f"not copied: {e}"
                    msg = f"{dst_p.name}: written without audio -- ffmpeg could not copy the audio of {src_p.name}: {e}"
                    notes.append(msg)
                    warnings.warn(AudioNotCopiedWarning(msg), stacklevel=2)
        os.replace(final, dst_p)
        for p in (tmp, muxed):
            if p is not None and p != final and p.exists():
                p.unlink()
        tmp = muxed = None
    except BaseException:
        if writer is not None:
            writer.release()
        for p in (tmp, muxed):
            if p is not None and p.exists():
                p.unlink()
        raise
    finally:
        cap.release()

    with_faces = stream.frames_with_faces if stream is not None else 0
    if stream is not None and with_faces == 0:
        msg = (f"no face found in any of the {written} frames of {src_p.name}; the video was written unchanged. A "
               f"detector that finds smaller faces may help (MTCNN(min_face_size=12)); faces=False restores whole "
               f"frames")
        notes.append(msg)
        warnings.warn(NoFaceWarning(msg), stacklevel=2)
    return VideoResult(path=dst_p, frames=written, fps=fps, width=w, height=h, codec=fourcc,
                       frames_with_faces=with_faces, faces=stream.faces if stream is not None else 0,
                       tracks=stream.tracker.next_id if stream is not None else 0, audio=audio_state,
                       seconds=time.perf_counter() - t_start,
                       jitter_raw_px=stream.jitter.raw if stream is not None else None,
                       jitter_smoothed_px=stream.jitter.smoothed if stream is not None else None,
                       face_pipeline=use_faces, notes=notes)
