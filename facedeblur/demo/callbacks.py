"""The web demo's work as plain functions (issue #21): no gradio here, so every callback is tested without a server.

:mod:`facedeblur.demo.app` wires these into a Gradio page; each callback takes plain values (a file path, a model
name, ``u``) and returns arrays, paths and a message. Bad input raises :class:`DemoInputError` (an
:class:`~facedeblur.errors.InputError`) whose message names the problem and what to do; the app shows it and keeps
serving.

* :class:`ModelPool`: each model is loaded once, lazily, on first use, and shared by every request (one lock per
  model: requests for the same model run one at a time, the app's queue orders them).
* :func:`load_image`: what an upload can be -- PNG/JPEG/WebP/TIFF/BMP, CMYK (converted), alpha (kept), 16-bit
  (scaled to 8 bits), EXIF-rotated, larger than :attr:`DemoLimits.max_side` (downscaled, with a note) or than
  :attr:`DemoLimits.refuse_side` (refused); a file that is not an image or is truncated is refused.
* :func:`restore_photo`, :func:`restore_moments_gallery`, :func:`restore_video_clip`: the three buttons.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InputError

__all__ = ["DemoLimits", "DemoInputError", "ModelEntry", "ModelPool", "MODES", "zoo_entries", "load_image",
           "PhotoResult", "restore_photo", "restore_moments_gallery", "probe_video", "restore_video_clip",
           "example_path", "EXAMPLES"]

#: how a photo reaches the network: the Deblurrer's auto rule, every face through the face pipeline, or as it is
MODES = {"auto": None, "detected faces": True, "whole image": False}

#: bundled examples (file name in facedeblur/demo/examples/ -> what it is); see that folder's README.md
EXAMPLES = {
    "astronaut_face_shake8.png": "astronaut face crop, camera shake 8 px (examples/make_example.py)",
    "astronaut_photo_shake15.png": "astronaut photo 512 px, camera shake 15 px (facedeblur.data.synth, seed 21)",
}


@dataclass(frozen=True)
class DemoLimits:
    """What the demo accepts. Photos with a longer side above ``max_side`` are downscaled (INTER_AREA) with a note,
    above ``refuse_side`` refused; videos must last at most ``max_video_seconds`` and fit ``max_video_size``
    (long side, short side: 1280 x 720 in either orientation)."""

    max_side: int = 2048
    refuse_side: int = 12000
    max_video_seconds: float = 20.0
    max_video_size: tuple[int, int] = (1280, 720)
    max_moments: int = 13


class DemoInputError(InputError):
    """An upload or setting the demo cannot take; the message says why and what to do instead."""


def example_path(name: str) -> Path:
    """The installed path of a bundled example image (:data:`EXAMPLES`)."""
    if name not in EXAMPLES:
        raise DemoInputError(f"no bundled example {name!r}; choose one of {sorted(EXAMPLES)}")
    from importlib import resources

    return Path(str(resources.files("facedeblur.demo") / "examples" / name))


# --------------------------------------------------------------------------------------------------- the zoo menu
@dataclass(frozen=True)
class ModelEntry:
    """One line of the model menu: a zoo variant with trained weights and what its card says."""

    name: str
    task: str
    params: int | None
    license: str
    continuous_u: bool
    default_u: float
    frame_window: int
    benchmark: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        size = f"{self.params / 1e6:.2f} M parameters" if self.params else "parameters unknown"
        return f"{self.name} ({self.task}, {size})"

    def markdown(self) -> str:
        """The card summary shown under the menu: task, size, licence, the measured gains."""
        lines = [f"**{self.name}**: {self.task}, "
                 + (f"{self.params:,} parameters" if self.params else "parameter count unknown")
                 + (f", control factor u (default {self.default_u})" if self.continuous_u else ", no control factor u")
                 + (f", {self.frame_window}-frame window" if self.frame_window > 1 else ""),
                 f"*Licence:* {self.license or 'not stated'}"]
        if self.benchmark:
            lines.append("*Measured (model card, `facedeblur bench quality`):*")
            lines += [f"- {name}: {text}" for name, text in self.benchmark]
        else:
            lines.append("*No benchmark numbers in the model card.*")
        return "\n\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:])


def zoo_entries(names: Sequence[str] | None = None) -> list[ModelEntry]:
    """Menu entries for the zoo variants with trained weights (or for ``names``), the families' defaults first."""
    from ..cards import bench_text, benchmark_rows
    from ..models import get_card, list_models, param_count

    chosen = list(names) if names is not None else list_models(pretrained=True)
    entries = []
    for name in chosen:
        card = get_card(name)
        caps = card.capabilities
        entries.append(ModelEntry(card.name, card.task, param_count(card), " ".join(str(card.license).split()),
                                  bool(caps.continuous_u), float(caps.default_u or 0.5), int(caps.frame_window),
                                  tuple((s, bench_text(row)) for s, row in benchmark_rows(card))))
    entries.sort(key=lambda e: (not get_card(e.name).default, e.name))
    return entries


class ModelPool:
    """Deblurrers by name, each loaded once on first use (``loader(name, device=...)``, default
    :func:`facedeblur.load`) and shared; :meth:`lock` serialises the requests of one model."""

    def __init__(self, device: str = "cpu", loader: Callable[..., Any] | None = None) -> None:
        self.device = device
        self._loader = loader
        self._models: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.loads = 0  # how many times a model was built (tests: once per name)

    def get(self, name: str) -> Any:
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._models:
                if self._loader is None:
                    from .. import load

                    self._models[name] = load(name, device=self.device)
                else:
                    self._models[name] = self._loader(name, device=self.device)
                self.loads += 1
        return self._models[name]

    def lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    @property
    def loaded(self) -> list[str]:
        return sorted(self._models)


# ------------------------------------------------------------------------------------------------------- images
def load_image(src: Any, limits: DemoLimits = DemoLimits()) -> tuple[np.ndarray, list[str]]:
    """An upload as uint8 RGB (H, W, 3) or RGBA (H, W, 4) and the notes on what was done to it.

    ``src``: a file path, a PIL image or a uint8 numpy array. Refused with :class:`DemoInputError`: no file, a file
    that is not an image, a truncated file, an image larger than ``limits.refuse_side``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    notes: list[str] = []
    if src is None:
        raise DemoInputError("no image: upload a photo or pick an example first")
    if isinstance(src, np.ndarray):
        img = Image.fromarray(_as_uint8(src))
    elif isinstance(src, Image.Image):
        img = src
    else:
        path = Path(os.fspath(src))
        if not path.is_file():
            raise DemoInputError(f"{path.name}: no such file; upload it again")
        try:
            img = Image.open(path)
        except UnidentifiedImageError:
            raise DemoInputError(f"{path.name} is not an image this demo can read; upload a PNG, JPEG, WebP, TIFF "
                                 "or BMP photo") from None
        except Image.DecompressionBombError:
            raise DemoInputError(f"{path.name} is too large to open safely; downscale it below "
                                 f"{limits.refuse_side} px first") from None
        if max(img.size) > limits.refuse_side:
            raise DemoInputError(f"{path.name} is {img.size[0]}x{img.size[1]} px; the demo takes at most "
                                 f"{limits.refuse_side} px on the longer side: downscale it, or use "
                                 "`facedeblur restore` for large files")
        try:
            img.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise DemoInputError(f"{path.name} is truncated or damaged ({exc}); upload the complete file or "
                                 "save it again") from None
    img = ImageOps.exif_transpose(img) or img
    arr = _to_rgb_or_rgba(img, notes)
    h, w = arr.shape[:2]
    if max(h, w) > limits.refuse_side:
        raise DemoInputError(f"the image is {w}x{h} px; the demo takes at most {limits.refuse_side} px on the "
                             "longer side")
    if min(h, w) < 8:
        raise DemoInputError(f"the image is {w}x{h} px: too small to restore; upload a photo of at least 8x8 px")
    if max(h, w) > limits.max_side:
        import cv2

        s = limits.max_side / max(h, w)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        arr = cv2.resize(arr, (nw, nh), interpolation=cv2.INTER_AREA)
        notes.append(f"downscaled from {w}x{h} to {nw}x{nh} px (the demo's limit is {limits.max_side} px; "
                     "`facedeblur restore` takes any size)")
    return np.ascontiguousarray(arr), notes


def _as_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return (a.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise DemoInputError(f"an image array of dtype {a.dtype} is not supported; pass uint8, uint16 or float in [0, 1]")


def _to_rgb_or_rgba(img: Any, notes: list[str]) -> np.ndarray:
    """PIL image -> uint8 RGB / RGBA array, noting conversions (CMYK, palette, 16-bit, alpha)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img)
        if mode == "F":
            a = np.clip(a, 0.0, 1.0) if float(np.nanmax(a)) <= 1.0 else np.clip(a / 65535.0, 0.0, 1.0)
        else:
            a = np.clip(a.astype(np.float64) / (65535.0 if a.max() > 255 else 255.0), 0.0, 1.0)
        notes.append(f"{mode} grey image scaled to 8 bits and restored as RGB")
        g = (a * 255.0 + 0.5).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if mode == "CMYK":
        notes.append("CMYK converted to RGB (no colour profile applied)")
    elif mode not in ("RGB", "RGBA"):
        notes.append(f"{mode} image converted to {'RGBA' if has_alpha else 'RGB'}")
    if has_alpha:
        notes.append("the alpha channel is kept as it is; the RGB channels are restored")
        return np.asarray(img.convert("RGBA"))
    return np.asarray(img.convert("RGB"))


def _write_png(arr: np.ndarray, out_dir: Path, stem: str) -> Path:
    """``arr`` as ``out_dir/<stem>-<hash>.png``, written atomically (a temporary file, then a rename)."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(np.ascontiguousarray(arr).tobytes()).hexdigest()[:12]
    dst = out_dir / f"{stem}-{digest}.png"
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".png.tmp")
    os.close(fd)
    try:
        Image.fromarray(arr).save(tmp, format="PNG")
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def _check_u(entry_continuous: bool, u: float | None) -> float | None:
    if not entry_continuous:
        return None
    if u is None:
        return None
    u = float(u)
    if not 0.0 <= u <= 1.0:
        raise DemoInputError(f"u = {u} is outside [0, 1]; move the slider back into range")
    return u


def _mode(mode: str) -> bool | None:
    if mode not in MODES:
        raise DemoInputError(f"unknown mode {mode!r}; choose one of {list(MODES)}")
    return MODES[mode]


def _draw_boxes(img: np.ndarray, boxes: Sequence[Sequence[float]]) -> np.ndarray:
    import cv2

    out = np.ascontiguousarray(img[..., :3]).copy()
    t = max(2, round(max(out.shape[:2]) / 300))
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(out, (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1))), (255, 64, 32), t)
    return out


@dataclass
class PhotoResult:
    """What the photo button shows: the input and the result (uint8, the input's channels), the input with the
    restored faces' boxes (None when no face pipeline ran), the PNG to download, and a message."""

    before: np.ndarray
    after: np.ndarray
    boxes: np.ndarray | None
    png: Path
    message: str
    seconds: float = 0.0
    faces: int | None = None
    notes: list[str] = field(default_factory=list)


def restore_photo(pool: ModelPool, name: str, image: Any, u: float | None = None, mode: str = "auto",
                  out_dir: str | os.PathLike | None = None, limits: DemoLimits = DemoLimits()) -> PhotoResult:
    """Restore one upload with zoo model ``name`` at moment ``u`` (ignored for models without u): the whole image,
    its detected faces (boxes drawn), or the Deblurrer's auto rule (``mode``, see :data:`MODES`). The result is the
    same array as ``facedeblur.load(name).restore(img, u=u, faces=...)`` for the decoded upload."""
    from ..faces.pipeline import NoFaceWarning
    from ..restore.photos import restore_faces

    faces = _mode(mode)
    img, notes = load_image(image, limits)
    deblurrer = pool.get(name)
    uu = _check_u(bool(deblurrer.card.capabilities.continuous_u), u)
    as_photo = deblurrer.is_photo(img) if faces is None else faces
    t0 = time.perf_counter()
    boxes_img: np.ndarray | None = None
    n_faces: int | None = None
    with pool.lock(name), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NoFaceWarning)
        if as_photo:
            after, records = restore_faces(img, deblurrer, u=uu)
            n_faces = len(records)
            boxes_img = _draw_boxes(img, [r.box for r in records])
        else:
            after = deblurrer.restore(img, u=uu, faces=False)
    seconds = time.perf_counter() - t0
    if as_photo and not n_faces:
        notes.append("no face found: the photo is unchanged; choose 'whole image' to restore it all")
    notes += [str(w.message) for w in caught if not issubclass(w.category, NoFaceWarning)]
    after = np.asarray(after)
    png = _write_png(after, Path(out_dir) if out_dir else Path(tempfile.gettempdir()) / "facedeblur-demo", "restored")
    what = (f"{n_faces} face{'s' if n_faces != 1 else ''} restored" if as_photo else "whole image restored")
    u_txt = f" at u = {uu if uu is not None else deblurrer.card.capabilities.default_u:.2f}" \
        if deblurrer.card.capabilities.continuous_u else ""
    message = f"{name}: {what}{u_txt} in {seconds:.2f} s ({img.shape[1]}x{img.shape[0]} px)."
    if notes:
        message += " Note: " + "; ".join(notes) + "."
    return PhotoResult(img, after, boxes_img, png, message, seconds, n_faces, notes)


def restore_moments_gallery(pool: ModelPool, name: str, image: Any, n: int = 7, mode: str = "auto",
                            out_dir: str | os.PathLike | None = None, limits: DemoLimits = DemoLimits()
                            ) -> tuple[list[tuple[np.ndarray, str]], Path, str]:
    """The sharp moments at u = k / (n - 1) of a continuous model (CFMD-GAN §3): a gallery of (image, caption), an
    animated GIF that scrubs forth and back through them, and a message. Photos go through the face pipeline."""
    from PIL import Image

    from ..restore.photos import restore_faces

    faces = _mode(mode)
    if isinstance(n, bool) or not 2 <= int(n) <= limits.max_moments:
        raise DemoInputError(f"n = {n}: choose 2 to {limits.max_moments} moments")
    n = int(n)
    img, notes = load_image(image, limits)
    deblurrer = pool.get(name)
    if not deblurrer.card.capabilities.continuous_u:
        raise DemoInputError(f"{name} has no control factor u, so it has one sharp result, not moments; choose a "
                             "continuous model (cfmd-gan) or use the photo tab")
    us = [k / (n - 1) for k in range(n)]
    as_photo = deblurrer.is_photo(img) if faces is None else faces
    t0 = time.perf_counter()
    with pool.lock(name), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if as_photo:
            frames = [np.asarray(restore_faces(img, deblurrer, u=uu)[0]) for uu in us]
        else:
            frames = [np.asarray(f) for f in deblurrer.restore_moments(img, us=us)]
    seconds = time.perf_counter() - t0
    out = Path(out_dir) if out_dir else Path(tempfile.gettempdir()) / "facedeblur-demo"
    out.mkdir(parents=True, exist_ok=True)
    seq = frames + frames[-2:0:-1]
    digest = hashlib.sha1(b"".join(f.tobytes()[:4096] for f in frames) + f"{name}{n}".encode()).hexdigest()[:12]
    gif = out / f"moments-{digest}.gif"
    fd, tmp = tempfile.mkstemp(dir=out, suffix=".gif.tmp")
    os.close(fd)
    try:
        pil = [Image.fromarray(f[..., :3]) for f in seq]
        pil[0].save(tmp, format="GIF", save_all=True, append_images=pil[1:], duration=150, loop=0)
        os.replace(tmp, gif)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    message = f"{name}: {n} moments in {seconds:.2f} s (u = 0 and 1 are the ends of the exposure)."
    if notes:
        message += " Note: " + "; ".join(notes) + "."
    return [(f, f"u = {uu:.2f}") for f, uu in zip(frames, us)], gif, message


# ------------------------------------------------------------------------------------------------------- videos
def probe_video(path: str | os.PathLike, limits: DemoLimits = DemoLimits()) -> dict[str, Any]:
    """Frame count, fps, size and duration of a video; :class:`DemoInputError` when it cannot be read or is over
    the limits (longer than ``max_video_seconds``, larger than ``max_video_size``)."""
    import cv2

    p = Path(os.fspath(path))
    if not p.is_file():
        raise DemoInputError(f"{p.name}: no such file; upload the video again")
    cap = cv2.VideoCapture(str(p))
    try:
        if not cap.isOpened():
            raise DemoInputError(f"{p.name} is not a video this demo can read; upload an MP4, MOV, AVI, MKV or WebM")
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or 25.0
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        ok, _ = cap.read()
    finally:
        cap.release()
    if not ok or frames <= 0 or w <= 0 or h <= 0:
        raise DemoInputError(f"{p.name} has no readable frames; upload a complete video file")
    seconds = frames / fps
    long_max, short_max = limits.max_video_size
    if seconds > limits.max_video_seconds + 1e-6:
        raise DemoInputError(f"{p.name} lasts {seconds:.1f} s; the demo takes at most {limits.max_video_seconds:g} s: "
                             "trim it, or use `facedeblur restore clip.mp4 -o out.mp4` for any length")
    if max(w, h) > long_max or min(w, h) > short_max:
        raise DemoInputError(f"{p.name} is {w}x{h} px; the demo takes at most {long_max}x{short_max} (720p): "
                             "downscale it, or use `facedeblur restore` for any size")
    return {"frames": frames, "fps": fps, "width": w, "height": h, "seconds": seconds}


def restore_video_clip(pool: ModelPool, name: str, path: str | os.PathLike, u: float | None = None,
                       out_dir: str | os.PathLike | None = None, limits: DemoLimits = DemoLimits(),
                       progress: Callable[[float, str], None] | None = None) -> tuple[Path, Path, str]:
    """Restore the faces of a short video (the streamed face pipeline of :func:`facedeblur.restore_video_file`):
    a WebM (VP8, plays in browsers), the same frames as MP4 for download, and a message with the time per frame.
    ``progress(fraction, text)`` is called as frames are written."""
    from ..restore.photos import restore_video_file

    info = probe_video(path, limits)
    deblurrer = pool.get(name)
    uu = _check_u(bool(deblurrer.card.capabilities.continuous_u), u)
    out = Path(out_dir) if out_dir else Path(tempfile.gettempdir()) / "facedeblur-demo"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"restored-{hashlib.sha1(f'{Path(path).resolve()}{name}{uu}{time.time_ns()}'.encode()).hexdigest()[:12]}"
    webm, mp4 = out / f"{stem}.webm", out / f"{stem}.mp4"
    total = max(1, info["frames"])

    def on_frame(i: int, _faces: Any) -> None:
        if progress is not None:
            progress(min(1.0, (i + 1) / total), f"frame {i + 1} / {total}")

    t0 = time.perf_counter()
    with pool.lock(name), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = restore_video_file(path, webm, deblurrer, u=uu, progress=False, audio=False, on_frame=on_frame)
    seconds = time.perf_counter() - t0
    n = int(getattr(result, "frames", 0) or info["frames"])
    _transcode(webm, mp4, info["fps"])
    message = (f"{name}: {n} frames ({info['width']}x{info['height']}, {info['fps']:.2f} fps, {info['seconds']:.1f} s) "
               f"in {seconds:.1f} s, {1000 * seconds / max(1, n):.0f} ms per frame.")
    return webm, mp4, message


def _transcode(src: Path, dst: Path, fps: float) -> None:
    """``src``'s frames as an MPEG-4 (mp4v) file ``dst`` (no model: a re-encode for users who want an MP4),
    written to a temporary name first."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    tmp = dst.with_name(dst.stem + ".part.mp4")
    writer = None
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            writer.write(frame)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if not tmp.is_file():
        raise DemoInputError("the restored video could not be re-encoded as MP4")
    os.replace(tmp, dst)
