"""Strong-blur synthesis with exact ground truth: camera shake, rigid head motion, capture degradations.

Every generator renders the *exposure integral* of a motion: the blurry image is the mean of the sharp image seen
at the poses of a smooth path (CFMD-GAN §4.1 Eq. 5 with g = identity; Chrysos et al. §3.4; DeblurGAN-style
trajectories for camera shake). Each returns a :class:`Motion`, from which the sharp *moment* at any
u in [0, 1] is rendered exactly, so CFMD-GAN's control factor means something on stills too:

* ``shake`` -- a random walk with inertia (unit-speed steps, momentum 0.7, :func:`~facedeblur.data.blur.shake_trajectory`),
  5-41 px at the model's face size, rendered as one convolution with the path splatted into a kernel (exact for a
  translation; the kernel set of ``facedeblur bench`` is made the same way).
* ``head`` -- rigid head motion: a smooth random path (a quadratic Bezier curve) of rotation, translation and scale
  about the face centre, applied to the face *with its background* and averaged over sub-frames: non-uniform blur.

**Which moment is u.** A path has no direction of its own, so it is ordered the way CFMD-GAN's FMR orders frames
(§4.1: the left eye's x ascending): u = 0 is the endpoint with the smaller x. The moment path ``q(u)`` passes
through the path's two endpoints at u = 0 and u = 1 and through the exposure's *centroid* at u = 0.5
(``q(u) = p(u) + (1 - |2u - 1|) (c - p(1/2))``): the centroid is the only alignment a deblurred still can be
scored against (the blurry image is centred on it; the kernel set's ground truth is the unshifted image), and for a
straight or symmetric path it is the temporal middle p(1/2) itself. Not in any paper; recorded in the model card.

**Degradations** (after the blur, input only; issue #12 A.4): Gaussian noise, 8-bit quantisation, JPEG at quality
60-95 on a fraction of samples, as real photos have. The target stays clean.

**Severity schedule.** ``sharp_fraction`` samples have no motion (input = target up to the degradations) and
``near_sharp_fraction`` a 0.5-3 px path, so a network learns to leave sharp faces alone (with ``identity_sharp``
the target of a sharp sample is its degraded input itself: leave it exactly alone); the rest draw the extent
log-uniformly in ``extent``. :func:`severity_histogram` measures the blurry-input PSNR distribution this gives.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError
from .blur import psnr_uint8, shake_trajectory

__all__ = ["SynthConfig", "Motion", "shake_motion", "head_motion", "draw_motion", "degrade", "synth_sample",
           "severity_histogram", "format_histogram", "clip_sample", "moment_offsets", "render", "moment"]


@dataclass(frozen=True)
class SynthConfig:
    """How strong-blur samples are drawn. Extents are in pixels at ``face_size`` (scaled with the image)."""

    face_size: int = 256
    sharp_fraction: float = 0.08
    near_sharp_fraction: float = 0.12
    near_sharp_extent: tuple[float, float] = (0.5, 3.0)
    extent: tuple[float, float] = (5.0, 41.0)
    head_fraction: float = 0.3  # of the moving samples: rigid head motion instead of camera shake
    head_rotation_deg: float = 8.0  # largest rotation swept during the exposure
    head_scale: float = 0.06  # largest relative scale change swept during the exposure
    head_subframes: int = 24
    noise_fraction: float = 0.5
    noise_sigma: tuple[float, float] = (0.5, 3.0)  # grey levels
    jpeg_fraction: float = 0.3
    jpeg_quality: tuple[int, int] = (60, 95)
    centre_fraction: float = 0.5  # u = 0.5 (the centroid moment) with this probability, else u ~ U[0, 1]
    # sharp samples (no motion): the target is the clean image (False) or the degraded input itself (True: a sharp
    # photo's noise and JPEG are part of it, so a sharp input is to be left exactly alone; scores against a real
    # photo's ground truth, which carries its own noise and compression, reward that)
    identity_sharp: bool = False

    def __post_init__(self) -> None:
        for name in ("sharp_fraction", "near_sharp_fraction", "head_fraction", "noise_fraction", "jpeg_fraction",
                     "centre_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise InputError(f"synth.{name} must be a fraction in [0, 1], got {v!r}")
        if self.sharp_fraction + self.near_sharp_fraction > 1.0:
            raise InputError(f"synth.sharp_fraction + near_sharp_fraction must not exceed 1, got "
                             f"{self.sharp_fraction} + {self.near_sharp_fraction}")
        for name in ("near_sharp_extent", "extent", "noise_sigma", "jpeg_quality"):
            v = getattr(self, name)
            if (not isinstance(v, (list, tuple)) or len(v) != 2 or not all(isinstance(x, (int, float)) for x in v)
                    or not 0 <= v[0] <= v[1]):
                raise InputError(f"synth.{name} must be [low, high] with 0 <= low <= high, got {v!r}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise InputError(f"synth.jpeg_quality must lie in [1, 100], got {self.jpeg_quality!r}")
        if self.extent[0] <= 0 or self.near_sharp_extent[0] <= 0:
            raise InputError("synth extents must be > 0 px (use sharp_fraction for no motion)")
        if not isinstance(self.identity_sharp, bool):
            raise InputError(f"synth.identity_sharp must be true or false, got {self.identity_sharp!r}")
        if self.face_size < 16 or self.head_subframes < 2 or self.head_rotation_deg < 0 or self.head_scale < 0:
            raise InputError(f"synth: face_size >= 16, head_subframes >= 2, head_rotation_deg and head_scale >= 0 "
                             f"required; got {self.face_size}, {self.head_subframes}, {self.head_rotation_deg}, "
                             f"{self.head_scale}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> "SynthConfig":
        """From a recipe's ``synth:`` mapping; unknown keys raise :class:`InputError` naming the known ones."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown synth keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class Motion:
    """A motion during one exposure: ``kind`` "shake" (``path``: (n, 2) px offsets) or "head" (``path``: (n, 4)
    rows of rotation deg, log-scale, dx, dy about the image centre), ordered so u = 0 is the start (see the module
    docstring), in pixels of the image it was drawn for. "none" (no motion) has a single zero pose."""

    kind: str
    path: np.ndarray
    extent: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def _oriented(path: np.ndarray, x_col: int) -> np.ndarray:
    """``path`` reversed if needed so its start has the smaller x (FMR's left-eye-x order)."""
    return path[::-1].copy() if path[0, x_col] > path[-1, x_col] else path


def shake_motion(rng: np.random.Generator, extent: float) -> Motion:
    """A camera-shake translation path whose longest axis spans ``extent`` px, centred on its centroid."""
    n = max(16, int(math.ceil(extent * 3)))
    path = shake_trajectory(rng, n, float(extent), max_angle_deg=0.0)[:, :2].astype(np.float64)
    path -= path.mean(axis=0)
    return Motion("shake", _oriented(path, 0), float(extent))


def _pose_points(path: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Where points ``pts`` (k, 2), relative to the image centre, go under each head pose: (n, k, 2)."""
    a = np.deg2rad(path[:, 0])[:, None]
    s = np.exp(path[:, 1])[:, None]
    x, y = pts[None, :, 0], pts[None, :, 1]
    # cv2.getRotationMatrix2D rotates counter-clockwise on screen (y down): x' = s(x cos a + y sin a)
    xr = s * (x * np.cos(a) + y * np.sin(a)) + path[:, 2:3]
    yr = s * (-x * np.sin(a) + y * np.cos(a)) + path[:, 3:4]
    return np.stack([xr, yr], axis=-1)


def head_motion(rng: np.random.Generator, extent: float, size: int, cfg: SynthConfig) -> Motion:
    """A rigid head path (rotation deg, log-scale, dx, dy about the image centre): a quadratic Bezier curve
    through three random poses, scaled so points of the face (a circle of radius size/3) sweep at most
    ``extent`` px along either axis."""
    ctrl = rng.uniform(-1, 1, size=(3, 4))
    ctrl[:, 0] *= cfg.head_rotation_deg
    ctrl[:, 1] *= math.log1p(cfg.head_scale)
    ctrl[:, 2:] *= size / 12.0
    t = np.linspace(0.0, 1.0, cfg.head_subframes)[:, None]
    path = (1 - t) ** 2 * ctrl[0] + 2 * t * (1 - t) * ctrl[1] + t ** 2 * ctrl[2]
    path -= path.mean(axis=0)
    t = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    pts = _pose_points(path, size / 3.0 * np.stack([np.cos(t), np.sin(t)], axis=1))
    span = float(np.ptp(pts, axis=0).max())
    path = path * (extent / max(span, 1e-6))
    path -= path.mean(axis=0)
    # FMR order by the image-left eye (template point (98, 86) of 256, i.e. about (-0.12, -0.16) * size)
    eye = _pose_points(path, np.array([[-0.12 * size, -0.16 * size]]))[:, 0, 0]
    return Motion("head", path[::-1].copy() if eye[0] > eye[-1] else path, float(extent))


def draw_motion(rng: np.random.Generator, size: int, cfg: SynthConfig) -> Motion:
    """A motion by the severity schedule: none, near-sharp or strong; shake or head (``cfg``)."""
    r = rng.random()
    k = size / cfg.face_size
    if r < cfg.sharp_fraction:
        return Motion("none", np.zeros((1, 2)))
    lo, hi = cfg.near_sharp_extent if r < cfg.sharp_fraction + cfg.near_sharp_fraction else cfg.extent
    extent = k * float(np.exp(rng.uniform(math.log(lo), math.log(hi))))
    if rng.random() < cfg.head_fraction:
        return head_motion(rng, extent, size, cfg)
    return shake_motion(rng, extent)


def moment_offsets(path: np.ndarray, u: float) -> np.ndarray:
    """The moment path q(u): the path at time u, bent so q(0.5) is the centroid (see the module docstring)."""
    if not 0.0 <= u <= 1.0:
        raise InputError(f"u must lie in [0, 1], got {u}")
    n = len(path)
    if n == 1:
        return path[0].copy()

    def at(v: float) -> np.ndarray:
        x = v * (n - 1)
        i = min(int(x), n - 2)
        f = x - i
        return (1 - f) * path[i] + f * path[i + 1]

    centroid = path.mean(axis=0)
    return at(u) + (1.0 - abs(2.0 * u - 1.0)) * (centroid - at(0.5))


def _splat_kernel(path: np.ndarray) -> np.ndarray:
    """A normalised odd-sized kernel with unit mass at each (dx, dy) of ``path``, split bilinearly."""
    r = int(math.ceil(np.abs(path).max())) + 1
    size = 2 * r + 1
    k = np.zeros((size, size), dtype=np.float64)
    xs, ys = path[:, 0] + r, path[:, 1] + r
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(k, (np.clip(y0 + dy, 0, size - 1), np.clip(x0 + dx, 0, size - 1)), w)
    return k / k.sum()


def _head_matrix(row: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2

    m = cv2.getRotationMatrix2D((w / 2, h / 2), float(row[0]), float(np.exp(row[1])))
    m[:, 2] += (row[2], row[3])
    return m


def render(img: np.ndarray, motion: Motion) -> np.ndarray:
    """The blurry exposure (float32 HxWx3, 0-255) of uint8 ``img`` under ``motion`` (reflect-101 borders)."""
    import cv2

    src = img.astype(np.float32)
    if motion.kind == "none":
        return src
    if motion.kind == "shake":
        k = _splat_kernel(motion.path)
        # filter2D correlates: flipping the kernel makes it the convolution with the PSF (mass at +offset means
        # the image content moves by +offset)
        return cv2.filter2D(src, -1, np.ascontiguousarray(k[::-1, ::-1], dtype=np.float32),
                            borderType=cv2.BORDER_REFLECT_101)
    h, w = img.shape[:2]
    acc = np.zeros_like(src)
    for row in motion.path:
        acc += cv2.warpAffine(src, _head_matrix(row, w, h), (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT_101)
    return acc / len(motion.path)


def moment(img: np.ndarray, motion: Motion, u: float) -> np.ndarray:
    """The sharp moment (uint8) at ``u`` of ``motion``: ``img`` at pose q(u)."""
    import cv2

    if motion.kind == "none":
        return img
    q = moment_offsets(motion.path, u)
    h, w = img.shape[:2]
    if motion.kind == "shake":
        m = np.array([[1.0, 0.0, q[0]], [0.0, 1.0, q[1]]])
    else:
        m = _head_matrix(q, w, h)
    if np.allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-6):
        return img
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)


def degrade(rng: np.random.Generator, blurry: np.ndarray, cfg: SynthConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Noise (fraction ``noise_fraction``), 8-bit quantisation, JPEG (fraction ``jpeg_fraction``) of a float
    exposure; returns (uint8 image, what was applied)."""
    import cv2

    info: dict[str, Any] = {}
    x = blurry
    if rng.random() < cfg.noise_fraction:
        sigma = float(rng.uniform(*cfg.noise_sigma))
        x = x + rng.normal(0.0, sigma, x.shape).astype(np.float32)
        info["noise_sigma"] = sigma
    out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if rng.random() < cfg.jpeg_fraction:
        q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            out = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            info["jpeg_quality"] = q
    return out, info


def synth_sample(rng: np.random.Generator, sharp: np.ndarray, cfg: SynthConfig, u: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray, float, Motion]:
    """(blurry uint8, sharp moment uint8, u, motion) from one sharp uint8 face image."""
    if sharp.dtype != np.uint8 or sharp.ndim != 3 or sharp.shape[2] != 3:
        raise InputError(f"synth_sample needs a uint8 HxWx3 image, got {sharp.dtype} {sharp.shape}")
    motion = draw_motion(rng, max(sharp.shape[:2]), cfg)
    if u is None:
        u = 0.5 if rng.random() < cfg.centre_fraction else float(rng.random())
    blurry, info = degrade(rng, render(sharp, motion), cfg)
    motion.info.update(info)
    if motion.kind == "none" and cfg.identity_sharp:
        return blurry, blurry.copy(), float(u), motion
    return blurry, moment(sharp, motion, u), float(u), motion


def _segment_motion(motion: Motion, lo: int, hi: int) -> Motion:
    """The part ``[lo, hi)`` of ``motion``'s path, kept in the clip's coordinates (not re-centred)."""
    return Motion(motion.kind, motion.path[lo:hi].copy(), motion.extent)


def clip_sample(rng: np.random.Generator, sharp: np.ndarray, cfg: SynthConfig, frames: int = 5,
                duty: float = 1.0) -> tuple[np.ndarray, np.ndarray, Motion]:
    """A ``clip`` sample (FineNet's sample kind): ``frames`` consecutive exposures of one continuous motion.

    One smooth path ``frames`` times as long as a single exposure's (drawn by the severity schedule) is cut into
    ``frames`` equal segments; with ``duty`` < 1 each exposure covers only the first ``duty`` share of its frame
    interval (a shutter shorter than the frame time). Frame t's blurry image is the exposure integral over its
    segment, its sharp frame the image at the segment's centroid pose (the single-image convention of
    :func:`moment_offsets` at u = 0.5). Returns (blurry (T, H, W, 3) uint8, sharp (T, H, W, 3) uint8, the whole
    motion)."""
    if frames < 1 or not 0.0 < duty <= 1.0:
        raise InputError(f"clip_sample needs frames >= 1 and 0 < duty <= 1, got {frames}, {duty}")
    if sharp.dtype != np.uint8 or sharp.ndim != 3 or sharp.shape[2] != 3:
        raise InputError(f"clip_sample needs a uint8 HxWx3 image, got {sharp.dtype} {sharp.shape}")
    size = max(sharp.shape[:2])
    one = draw_motion(rng, size, cfg)
    if one.kind == "none":
        blur = [degrade(rng, sharp.astype(np.float32), cfg)[0] for _ in range(frames)]
        return np.stack(blur), np.stack([sharp] * frames), one
    # the same kind of motion, ``frames`` exposures long: a longer path of the same speed
    long_cfg = SynthConfig(**{**asdict(cfg), "sharp_fraction": 0.0, "near_sharp_fraction": 0.0,
                              "extent": (one.extent * frames * cfg.face_size / size,) * 2,
                              "head_fraction": 1.0 if one.kind == "head" else 0.0,
                              "head_subframes": max(cfg.head_subframes, 8) * frames})
    motion = draw_motion(rng, size, long_cfg)
    n = len(motion.path)
    per = n // frames
    blurry, targets = [], []
    for t in range(frames):
        lo = t * per
        hi = lo + max(2, int(round(per * duty)))
        seg = _segment_motion(motion, lo, min(hi, n))
        blurry.append(degrade(rng, render(sharp, seg), cfg)[0])
        centre = Motion(motion.kind, seg.path.mean(axis=0, keepdims=True), motion.extent)
        targets.append(moment(sharp, centre, 0.5))
    return np.stack(blurry), np.stack(targets), motion


def severity_histogram(images: Sequence[np.ndarray], cfg: SynthConfig, *, samples: int = 400, seed: int = 0,
                       edges: Sequence[float] = (18, 20, 24, 28, 32, 36, 40, 45)) -> dict[str, Any]:
    """The blurry-input PSNR (centre moment) distribution ``cfg`` gives on ``images``: counts per bin of
    ``edges`` (plus below / above), median, and the share of sharp (inf) inputs."""
    rng = np.random.default_rng(seed)
    vals = []
    for i in range(samples):
        img = images[int(rng.integers(len(images)))]
        b, s, _, _ = synth_sample(rng, img, cfg, u=0.5)
        vals.append(min(psnr_uint8(b, s), 99.0))
    v = np.asarray(vals)
    bounds = [-np.inf, *edges, np.inf]
    labels = [f"<{edges[0]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:])] + [f">={edges[-1]:g}"]
    counts = [int(((v >= a) & (v < b)).sum()) for a, b in zip(bounds[:-1], bounds[1:])]
    return {"samples": samples, "bins": dict(zip(labels, counts)), "median_db": float(np.median(v)),
            "config": cfg.to_dict()}


def format_histogram(hist: Mapping[str, Any], width: int = 40) -> str:
    """A text bar chart of :func:`severity_histogram`'s result."""
    top = max(hist["bins"].values()) or 1
    lines = [f"blurry-input PSNR of {hist['samples']} synthetic samples (median {hist['median_db']:.1f} dB):"]
    for label, c in hist["bins"].items():
        lines.append(f"  {label:>7} dB {c:5d} {'#' * round(width * c / top)}")
    return "\n".join(lines)
