"""The work of one item, shared by both engines: hash and decode an input, detect its faces, restore a batch of
images through the model (the faces of all images of the batch in one batched call), write an output to its
temp file, and move it into place.

:class:`JobSpec` holds everything that defines a job (picklable: the Ray engine rebuilds a :class:`Runner` from
it in every actor). :class:`Runner` owns the model. An item's stages are :meth:`Runner.load` (reader threads:
SHA-1, decode, convert, face detection), :meth:`Runner.restore` (the model: one batch of loaded images),
:meth:`Runner.write` (writer threads: encode into the temp file ``.NAME.fdpartial.EXT``) and, for videos,
:meth:`Runner.video`. :func:`commit` is the two-phase move of a temp file onto its output.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import CapabilityError, FaceDeblurError, InputError
from .sources import Item, partial_path

__all__ = ["JobSpec", "ModelInfo", "Runner", "describe", "resolve_u", "Loaded", "Outcome", "NoFaceFoundError", "RemoteItemError", "sha1_file", "commit", "error_fields",
           "looks_like_photo", "FACES_CHOICES", "NO_FACE_CHOICES"]

FACES_CHOICES = {"auto": None, "on": True, "off": False}
#: faces per forward pass when ``batch_size`` is None: on a CPU larger batches are slower per face (the activations of
#: several 256 px crops do not fit the caches; docs/batch.md), on a GPU they are what keeps it busy
DEFAULT_BATCH = {"cpu": 1, "other": 8}
#: images per model step at least (a step restores the faces of all its images)
STEP_IMAGES = 8
NO_FACE_CHOICES = ("fail", "keep")
_HASH_CHUNK = 1 << 20


class NoFaceFoundError(InputError):
    """The face pipeline found no face in an image (a bad item of a batch job, unless ``no_face='keep'``)."""


def sha1_file(path: str | os.PathLike) -> tuple[str, int]:
    """SHA-1 (hex) and size in bytes of a file, read in 1 MiB chunks."""
    h = hashlib.sha1()
    n = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_HASH_CHUNK)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


class RemoteItemError(Exception):
    """An item's error raised in another process (a Ray actor), carried as its type name and message."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name, self.message = type_name, message


def error_fields(e: BaseException) -> tuple[str, str]:
    """(type name, one-line message) of an item's error, as the manifest records it."""
    if isinstance(e, RemoteItemError):
        return e.type_name, e.message
    msg = " ".join(str(e).split()) or repr(e)
    if not isinstance(e, FaceDeblurError):  # an unexpected error: keep where it came from
        tb = traceback.extract_tb(e.__traceback__)
        if tb:
            last = tb[-1]
            msg += f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    return type(e).__name__, msg


def looks_like_photo(h: int, w: int, card: Any) -> bool:
    """The ``faces=None`` (auto) rule of :meth:`facedeblur.Deblurrer.restore` for an HxW image: a photo (through
    the face pipeline) unless the model takes any image, or the image is face-crop sized (nearly square and at
    most twice the card's face size) or too small to hold a detectable face (shorter side under face_size / 4)."""
    if not card.capabilities.aligned_face_input:
        return False
    size = int(card.input.face_size)
    crop_like = max(h, w) <= 2 * size and max(h, w) <= 1.25 * min(h, w)
    return not (crop_like or 4 * min(h, w) < size)


@dataclass(frozen=True)
class JobSpec:
    """What defines a job. ``model``: a zoo name, ``hf-hub:...`` or ``local-dir:...``; ``faces``: True (every
    image is a photo), False (whole images), None (auto, as ``facedeblur restore``); ``no_face``: ``"fail"`` (an
    image without a face is a failed item) or ``"keep"`` (its output is the input, unchanged). The other fields
    are those of ``facedeblur restore``."""

    model: str = "cfmd-gan"
    u: float | None = None
    faces: bool | None = None
    device: str = "auto"
    dtype: str | None = None
    weights: str | None = None
    cache_dir: str | None = None
    batch_size: int | None = None
    ext: str = ".png"
    only_center_face: bool = False
    blend: float = 1.0
    color_match: bool = False
    smoothing: int = 3
    codec: str | None = None
    no_face: str = "fail"

    def check(self) -> "JobSpec":
        """Validate the fields that need no model; returns self."""
        bs = self.batch_size
        if bs is not None and (isinstance(bs, bool) or not isinstance(bs, numbers.Integral) or bs < 1):
            raise InputError(f"batch_size must be a positive integer (or None: by device), not {bs!r}")
        if self.faces not in (None, True, False):
            raise InputError(f"faces={self.faces!r}: pass True (photos), False (whole images) or None (auto)")
        if self.no_face not in NO_FACE_CHOICES:
            raise InputError(f"no_face={self.no_face!r}: use 'fail' (record the item as failed) or 'keep' (write "
                             "the input unchanged)")
        from ..restore.convert import IMAGE_EXTENSIONS

        if self.ext not in IMAGE_EXTENSIONS:
            raise InputError(f"ext={self.ext!r}: the output suffix must be one of {', '.join(IMAGE_EXTENSIONS)}")
        b = self.blend
        if isinstance(b, bool) or not isinstance(b, numbers.Real) or math.isnan(float(b)) or not 0 <= float(b) <= 1:
            raise InputError(f"blend={b!r}: must be a number in [0, 1] (0 = input unchanged, 1 = full restoration)")
        face_opts = self.only_center_face or self.blend != 1.0 or self.color_match
        if face_opts and self.faces is False:
            raise InputError("only_center_face, blend and color_match apply to the face pipeline; drop them or pass "
                             "faces=True / None")
        return self

    def step_images(self) -> int:
        """Images per model step (their faces go through the network together, ``batch_size`` per forward)."""
        return max(STEP_IMAGES, int(self.batch_size or 1))

    def mode(self) -> dict[str, Any]:
        """The options that change an output (part of the model key)."""
        return {"faces": {None: "auto", True: "on", False: "off"}[self.faces], "ext": self.ext,
                "dtype": self.dtype or "float32", "only_center_face": bool(self.only_center_face),
                "blend": float(self.blend), "color_match": bool(self.color_match), "no_face": self.no_face,
                "smoothing": int(self.smoothing), "codec": self.codec}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_key(model: str, weights_sha256: str, u: float | None, mode: dict[str, Any]) -> str:
    """The string that must match for an item to count as done: model name, weights SHA-256, u and mode."""
    return json.dumps({"model": model, "weights_sha256": weights_sha256, "u": u, "mode": mode}, sort_keys=True)


def _tensor_sha256(module: Any) -> str:
    """SHA-256 over a module's state dict (names, dtypes, shapes and bytes, in name order)."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "tensors:" + h.hexdigest()


def weights_sha256(spec: JobSpec, card: Any) -> str:
    """The SHA-256 of the weight file ``spec`` loads (for the embedded default: the card's, which the loader
    verified; otherwise the resolved file, hashed)."""
    if spec.weights is None and card.weights.sha256:
        return str(card.weights.sha256)
    from ..weights import resolve_weights, sha256_file

    return str(sha256_file(resolve_weights(card, spec.weights, spec.cache_dir)))


def resolve_u(u: Any, card: Any) -> float | None:
    """The moment a job uses: ``u`` checked against the card (in [0, 1], only for continuous models), or the card's
    default; None for models without ``u``."""
    caps = card.capabilities
    if not caps.continuous_u:
        if u is not None:
            raise CapabilityError(f"model {card.name!r} has no control factor u; drop u (--u)")
        return None
    if u is None:
        if caps.default_u is None:
            raise CapabilityError(f"model {card.name!r} has no default u; pass u in [0, 1]")
        return float(caps.default_u)
    if isinstance(u, bool) or not isinstance(u, numbers.Real) or math.isnan(float(u)) or not 0 <= float(u) <= 1:
        raise CapabilityError(f"u = {u!r} is outside [0, 1]; the moment u runs from 0 (start of the exposure) to 1 "
                              "(end)")
    return float(u)


@dataclass(frozen=True)
class ModelInfo:
    """What the manifest records about a job's model: name, weights SHA-256, u, mode (JSON) and the model key."""

    name: str
    weights_sha256: str
    u: float | None
    mode: str
    key: str

    @classmethod
    def make(cls, name: str, weights: str, u: float | None, spec: JobSpec) -> "ModelInfo":
        mode = spec.mode()
        return cls(name, weights, u, json.dumps(mode, sort_keys=True), model_key(name, weights, u, mode))

    def fields(self, what: "Outcome | Loaded", run_id: int | None) -> dict[str, Any]:
        """The manifest fields of an attempt (everything but status, error and the output's size)."""
        ld = what.loaded if isinstance(what, Outcome) else what
        oc = what if isinstance(what, Outcome) else None
        now = time.time()
        return {"src": str(ld.item.src), "kind": ld.item.kind, "input_sha1": ld.sha1, "input_bytes": ld.nbytes,
                "input_mtime_ns": ld.mtime_ns, "width": ld.width, "height": ld.height,
                "frames": oc.frames if oc else None, "model": self.name, "weights_sha256": self.weights_sha256,
                "u": self.u, "mode": self.mode, "model_key": self.key, "output": ld.item.out_rel,
                "faces": oc.faces if oc else None, "notes": oc.notes if oc else None, "started": ld.started, "finished": now,
                "seconds": round(now - ld.started, 6), "run_id": run_id}


def describe(spec: JobSpec) -> ModelInfo:
    """The :class:`ModelInfo` of a job, from the model's card and weight file (no network is built; the Ray
    driver uses this, and every actor checks that its model gives the same key)."""
    from ..models import get_card

    card = get_card(spec.model, cache_dir=spec.cache_dir)
    return ModelInfo.make(str(card.name), weights_sha256(spec, card), resolve_u(spec.u, card), spec)


@dataclass
class Loaded:
    """An item after :meth:`Runner.load`: its identity fields, and for images the decoded frame, the function that
    turns the restored frame back into the input's kind, and (photos) the HxWx3 float32 array and its faces.
    ``error`` is set when loading failed; ``skip`` when the input turned out unchanged and already done."""

    item: Item
    started: float
    sha1: str | None = None
    nbytes: int | None = None
    mtime_ns: int | None = None
    width: int | None = None
    height: int | None = None
    frame: Any = None
    finish: Callable[[list[Any]], Any] | None = None
    photo: bool = False
    array: np.ndarray | None = None
    detections: list[Any] | None = None
    error: BaseException | None = None
    skip: bool = False


@dataclass
class Outcome:
    """An item after :meth:`Runner.restore` (or :meth:`Runner.video`): the restored frame or the error."""

    loaded: Loaded
    restored: Any = None
    faces: int = 0
    frames: int | None = None
    tmp: Path | None = None
    error: BaseException | None = None
    notes: str | None = None


class _Replay:
    """A face detector that hands back detections made earlier (in a reader thread), one image after the other, in
    the order :func:`~facedeblur.faces.restore_face_arrays` asks for them."""

    def __init__(self, detections: Sequence[tuple[tuple[int, ...], list[Any]]]) -> None:
        self._queue = list(detections)

    def detect(self, u8: np.ndarray) -> list[Any]:
        if not self._queue:
            raise RuntimeError("the face pipeline asked for more detections than images were given")
        shape, faces = self._queue.pop(0)
        if tuple(u8.shape) != shape:
            raise RuntimeError(f"the face pipeline asked for detections of a {u8.shape} image, the next prepared one "
                               f"is {shape}")
        return faces


class Runner:
    """A job's model and the stages of an item. ``deblurrer``: a ready :class:`~facedeblur.Deblurrer` (else loaded
    from ``spec``). ``model_name`` and ``weights`` describe it in the manifest."""

    def __init__(self, spec: JobSpec, deblurrer: Any = None) -> None:
        self.spec = spec.check()
        if deblurrer is None:
            from ..restore import load

            self.info = describe(spec)
            deblurrer = load(spec.model, device=spec.device, dtype=spec.dtype, weights=spec.weights,
                             cache_dir=spec.cache_dir)
        else:
            self.info = ModelInfo.make(str(deblurrer.card.name), _tensor_sha256(deblurrer.model),
                                       resolve_u(spec.u, deblurrer.card), spec)
        self.u = self.info.u
        self.deblurrer = deblurrer
        dev = "cpu" if deblurrer.device.type == "cpu" else "other"
        self.batch_size = int(spec.batch_size) if spec.batch_size is not None else DEFAULT_BATCH[dev]
        self.card = deblurrer.card
        self._detector: Any = None
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.info.name

    @property
    def key(self) -> str:
        return self.info.key

    def detector(self) -> Any:
        """The face detector (the Deblurrer's MTCNN on its device), built once; reader threads share it."""
        with self._lock:
            if self._detector is None:
                self._detector = self.deblurrer.face_detector()
            return self._detector

    def video_faces(self) -> bool:
        """Whether videos go through the face pipeline (auto: for models of aligned face crops)."""
        f = self.spec.faces
        return bool(self.card.capabilities.aligned_face_input) if f is None else f

    # ------------------------------------------------------------------------------------------ stages

    def load(self, item: Item, expect_sha1: str | None = None) -> Loaded:
        """Hash, decode and convert an image (and detect its faces); a video is only hashed. ``expect_sha1``: the
        recorded SHA-1 of a done item; if the file still hashes to it, the result is ``skip`` (nothing decoded).
        Never raises: errors are returned in ``Loaded.error``."""
        ld = Loaded(item, time.time())
        try:
            st = os.stat(item.src)
            ld.mtime_ns = st.st_mtime_ns
            ld.sha1, ld.nbytes = sha1_file(item.src)
            if expect_sha1 is not None and ld.sha1 == expect_sha1:
                ld.skip = True
                return ld
            if item.kind == "unknown":
                from .sources import image_suffixes, video_suffixes

                raise InputError(f"{str(item.src)!r}: unsupported file type {item.src.suffix or '(no suffix)'!r}; "
                                 f"list images ({', '.join(image_suffixes())}) or videos "
                                 f"({', '.join(video_suffixes())})")
            if item.kind == "video":
                return ld
            from ..restore import read_image
            from ..restore.convert import prepare

            img = read_image(item.src)
            prep = prepare(img)
            frame = prep.frames[0]
            ld.height, ld.width = (int(v) for v in frame.shape[-2:])
            ld.frame, ld.finish = frame, prep.finish
            faces = self.spec.faces
            ld.photo = looks_like_photo(ld.height, ld.width, self.card) if faces is None else bool(faces)
            if ld.photo:
                ld.array = np.ascontiguousarray(frame.permute(1, 2, 0).numpy(), dtype=np.float32)
                u8 = np.clip(np.rint(ld.array * 255.0), 0, 255).astype(np.uint8)  # as the face pipeline does
                ld.detections = list(self.detector().detect(u8))
                ld.frame = None  # the array is all the face pipeline needs
        except Exception as e:  # noqa: BLE001 -- a bad item is recorded, the job goes on
            ld.error = e
        return ld

    def _restore_photos(self, group: list[Loaded]) -> list[Outcome]:
        from ..faces import restore_face_arrays

        opts: dict[str, Any] = {}
        if self.spec.only_center_face:
            opts["only_center_face"] = True
        if self.spec.blend != 1.0:
            opts["blend"] = self.spec.blend
        if self.spec.color_match:
            opts["color_match"] = True
        replay = _Replay([(tuple(ld.array.shape), ld.detections) for ld in group])  # type: ignore[union-attr]
        restorer = self.deblurrer.face_restorer(self.u, self.batch_size)
        restored, records = restore_face_arrays([ld.array for ld in group], restorer, detector=replay, **opts)
        import torch

        outs = []
        for ld, out, recs in zip(group, restored, records):
            if not recs and self.spec.no_face == "fail":
                outs.append(Outcome(ld, error=NoFaceFoundError(
                    f"no face found in {str(ld.item.src)!r} ({ld.width}x{ld.height}); restore it as a whole image "
                    "(--faces off), or keep such images unchanged (--no-face keep)")))
            else:
                outs.append(Outcome(ld, torch.from_numpy(out).permute(2, 0, 1), faces=len(recs)))
        return outs

    def _restore_whole(self, group: list[Loaded]) -> list[Outcome]:
        outs = self.deblurrer.restore([ld.frame for ld in group], u=self.u, faces=False,
                                      batch_size=self.batch_size)
        return [Outcome(ld, out, faces=1) for ld, out in zip(group, outs)]

    def restore(self, batch: Sequence[Loaded]) -> list[Outcome]:
        """Restore a batch of loaded images: the photos' faces in one pipeline call, the whole images in one
        ``restore`` call. If a call raises, its images are retried one by one, so that only the image that
        raises fails. Never raises for an item's error."""
        outs: dict[int, Outcome] = {}
        for photo in (True, False):
            group = [ld for ld in batch if ld.photo == photo]
            if not group:
                continue
            fn = self._restore_photos if photo else self._restore_whole
            try:
                results = fn(group)
            except Exception:  # noqa: BLE001 -- find the bad item
                results = []
                for ld in group:
                    try:
                        results += fn([ld])
                    except Exception as e:  # noqa: BLE001
                        results.append(Outcome(ld, error=e))
            for r in results:
                outs[id(r.loaded)] = r
        for ld in batch:  # the inputs are no longer needed
            ld.frame = ld.array = ld.detections = None
        return [outs[id(ld)] for ld in batch]

    def write(self, outcome: Outcome, out: Path) -> Outcome:
        """Encode a restored image into its temp file (atomically: the temp file is complete once it exists).
        Sets ``outcome.tmp``, or ``outcome.error``."""
        from ..restore import write_image

        try:
            assert outcome.loaded.finish is not None
            result = outcome.loaded.finish([outcome.restored])
            tmp = partial_path(out / outcome.loaded.item.out_rel)
            write_image(tmp, result, overwrite=True)
            outcome.tmp = tmp
            outcome.restored = outcome.loaded.finish = None
        except Exception as e:  # noqa: BLE001
            outcome.error = e
        return outcome

    def video(self, loaded: Loaded, out: Path) -> Outcome:
        """Restore a video into its temp file (the video engine streams it frame by frame)."""
        from ..faces import process_video_file

        oc = Outcome(loaded)
        tmp = partial_path(out / loaded.item.out_rel)
        try:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            common: dict[str, Any] = dict(batch_size=self.batch_size, codec=self.spec.codec, overwrite=True,
                                          progress=False)
            if self.video_faces():
                res = process_video_file(loaded.item.src, tmp, self.deblurrer.face_restorer(self.u, self.batch_size),
                                         smoothing=self.spec.smoothing, only_center_face=self.spec.only_center_face,
                                         blend=self.spec.blend, color_match=self.spec.color_match, name=self.model_name,
                                         **common)
                faces = int(res.faces)
                if faces == 0 and self.spec.no_face == "fail":
                    tmp.unlink(missing_ok=True)
                    raise NoFaceFoundError(f"no face found in any of the {res.frames} frames of "
                                           f"{str(loaded.item.src)!r}; restore whole frames (--faces off), or keep "
                                           "such videos unchanged (--no-face keep)")
            else:
                u, bs = self.u, self.batch_size

                def frames(it: Any) -> Any:
                    return self.deblurrer.restore_video(it, u=u, channel_order="bgr", batch_size=bs, progress=False)

                res = process_video_file(loaded.item.src, tmp, frames=frames, name=self.model_name, **common)
                faces = int(res.frames)
            os.chmod(tmp, 0o644)  # as write_image's outputs (the video engine's temp file is 0600)
            loaded.width, loaded.height = int(res.width), int(res.height)
            oc.faces, oc.frames, oc.tmp = faces, int(res.frames), tmp
            oc.notes = "; ".join(" ".join(str(n).replace(tmp.name, loaded.item.out_rel).split())
                                 for n in res.notes) or None
        except Exception as e:  # noqa: BLE001
            oc.error = e
        return oc


def commit(manifest: Any, out: Path, rel: str, fields: dict[str, Any], tmp: Path) -> int:
    """Move a complete temp file onto its output, in two recorded phases: ``writing`` (with the temp path) is
    committed first, then ``os.replace``, then ``done``. A kill between the phases is repaired by
    :func:`recover`. Returns the output's size in bytes."""
    dst = out / fields["output"]
    manifest.mark_writing(rel, fields, os.path.relpath(tmp, out))
    os.replace(tmp, dst)
    size = dst.stat().st_size
    manifest.mark_done(rel, size)
    return size


def recover(manifest: Any, out: Path) -> int:
    """Finish the commits a killed run left in phase ``writing``: a temp file still there is moved into place; if
    it is gone and the output exists, the move had happened. Otherwise the item is forgotten (redone). Returns
    how many outputs were recovered."""
    n = 0
    for row in list(manifest.iter_status("writing")):
        tmp = out / row.tmp if row.tmp else None
        dst = out / row.output if row.output else None
        if dst is None:
            manifest.set_pending(row.rel)
            continue
        if tmp is not None and tmp.exists():
            os.replace(tmp, dst)
        if dst.exists():
            manifest.mark_done(row.rel, dst.stat().st_size, row.finished)
            n += 1
        else:
            manifest.set_pending(row.rel)
    return n
