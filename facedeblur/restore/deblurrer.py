"""The :class:`Deblurrer`: one restore API over every model of the zoo, and :func:`load`."""
from __future__ import annotations

import math
import numbers
import os
from collections import deque
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..cards import ModelCard
from ..errors import CapabilityError, InputError
from ..models import InferenceAdapter, adapter_for
from .convert import Prepared, prepare
from .device import dtype_name, resolve_device, resolve_dtype, warn_if_slow_bf16

if TYPE_CHECKING:  # annotations only: the face pipeline loads when a photo is restored
    from ..faces.pipeline import FaceRestorer

__all__ = ["Deblurrer", "load", "export_onnx", "ENGINES"]


def _progress(total: int | None, enabled: bool, desc: str, unit: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit=unit, leave=False)


#: Keyword arguments of :func:`facedeblur.restore_faces` that ``restore(..., face_options=...)`` passes on.
FACE_OPTIONS = ("only_center_face", "max_faces", "blend", "color_match", "detector", "feather", "paste", "template")


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, not {batch_size!r}")
    return int(batch_size)


class Deblurrer:
    """A model with its card, on a device, ready to restore images, moments and videos.

    Build it with :func:`facedeblur.load` (trained weights). ``Deblurrer(model, card, device, dtype)`` wraps
    any network whose forward follows the card (used by tests and by the trainer's previews). The network is
    called through ``adapter`` (default :func:`facedeblur.models.adapter_for` of the card: the architecture's
    registered :class:`~facedeblur.models.InferenceAdapter`, which says whether ``u`` is passed and which output
    is the restored image).
    """

    def __init__(self, model: nn.Module, card: ModelCard, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype | None = None, adapter: InferenceAdapter | None = None) -> None:
        if not isinstance(card, ModelCard):
            raise TypeError(f"card must be a facedeblur ModelCard, not {type(card).__name__}")
        if adapter is not None and not isinstance(adapter, InferenceAdapter):
            raise TypeError(f"adapter must be a facedeblur.models.InferenceAdapter, not {type(adapter).__name__}")
        self.card = card
        self.adapter: InferenceAdapter = adapter if adapter is not None else adapter_for(card)
        self.dtype: torch.dtype = resolve_dtype(dtype, tuple(card.capabilities.dtypes), f"model {card.name!r}")
        self.device: torch.device = resolve_device(device)
        self.model = model.eval().requires_grad_(False).to(device=self.device, dtype=self.dtype)
        warn_if_slow_bf16(self.device, self.dtype)

    # ------------------------------------------------------------------------------------------ basics

    @property
    def name(self) -> str:
        return self.card.name

    def to(self, device: str | torch.device) -> "Deblurrer":
        """Move to ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ...); returns ``self``."""
        self.device = resolve_device(device)
        self.model.to(self.device)
        warn_if_slow_bf16(self.device, self.dtype)
        return self

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        caps = self.card.capabilities
        extra = f", default_u={caps.default_u}" if caps.continuous_u else ""
        extra += f", frame_window={caps.frame_window}" if caps.frame_window > 1 else ""
        return (f"Deblurrer(model={self.card.name!r}, task={self.card.task!r}, params={n / 1e6:.2f}M, "
                f"device={str(self.device)!r}, dtype={dtype_name(self.dtype)}{extra})")

    # ------------------------------------------------------------------------------------------ u

    def _check_u_value(self, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise CapabilityError(f"u must be a number in [0, 1], not {v!r}")
        f = float(v)
        if math.isnan(f) or not 0.0 <= f <= 1.0:
            raise CapabilityError(f"u = {f!r} is outside [0, 1]; the moment control factor u of {self.card.name!r} "
                                  "runs from 0 (start of the exposure) to 1 (end)")
        return f

    def _no_u_error(self) -> CapabilityError:
        from ..models import list_models

        with_u = ", ".join(list_models(task="image-continuous")) or "none in this zoo"
        return CapabilityError(f"model {self.card.name!r} has no control factor u; drop u= (models with u: {with_u})")

    def _resolve_u(self, u: Any, n: int) -> list[float | None]:
        caps = self.card.capabilities
        if not caps.continuous_u:
            if u is not None:
                raise self._no_u_error()
            return [None] * n
        if u is None:
            if caps.default_u is None:
                raise CapabilityError(f"model {self.card.name!r} has no default u; pass u= in [0, 1]")
            u = caps.default_u
        if isinstance(u, torch.Tensor):
            u = u.detach().cpu().tolist()
        elif isinstance(u, np.ndarray):
            u = u.tolist()
        if isinstance(u, (list, tuple)):
            vals = [self._check_u_value(v) for v in u]
            if len(vals) != n:
                raise CapabilityError(f"u has {len(vals)} values for {n} image(s); pass one u or one per image "
                                      "(for several moments of one image use restore_moments)")
            return list(vals)
        return [self._check_u_value(u)] * n

    # ------------------------------------------------------------------------------------------ core

    def _forward(self, x: torch.Tensor, us: list[float | None]) -> torch.Tensor:
        """(B, 3, H, W) or (B, T, 3, H, W) RGB float in [0, 1] -> (B, 3, H, W) float32 in [0, 1]."""
        inp = self.card.input
        lo, hi = (float(v) for v in inp.value_range)
        h, w = x.shape[-2:]
        x = x.float()
        if inp.channel_order.lower() == "bgr":
            x = x.flip(-3)
        m = max(int(inp.pad_multiple or 1), 1)
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:  # reflect needs pad < size; replicate for images smaller than that
            flat = x.reshape(-1, *x.shape[-3:])
            mode = "reflect" if ph < h and pw < w else "replicate"
            flat = F.pad(flat, (0, pw, 0, ph), mode=mode)
            x = flat.reshape(*x.shape[:-2], h + ph, w + pw)
        if (lo, hi) != (0.0, 1.0):
            x = x * (hi - lo) + lo
        x = x.to(self.dtype)
        u = torch.tensor(us, dtype=torch.float32, device=x.device) if self.card.capabilities.continuous_u else None
        out = self.adapter(self.model, x, u)
        if out.ndim != 4 or out.shape[1] != 3 or out.shape[-2] < h or out.shape[-1] < w:
            raise RuntimeError(f"model {self.card.name!r} returned {tuple(out.shape)}, expected a (N, 3, >={h}, "
                               f">={w}) tensor")
        out = out[..., :h, :w].float()
        if (lo, hi) != (0.0, 1.0):
            out = (out - lo) / (hi - lo)
        if inp.channel_order.lower() == "bgr":
            out = out.flip(-3)
        return out.clamp_(0.0, 1.0)

    def _run(self, frames: Sequence[torch.Tensor], us: Sequence[float | None], batch_size: int,
             progress: bool = False) -> list[torch.Tensor]:
        """Restore ``frames`` ((3, H, W) or (T, 3, H, W) windows) in batches of equal size, in input order."""
        batch_size = _check_batch_size(batch_size)
        order = sorted(range(len(frames)), key=lambda i: tuple(frames[i].shape))
        outs: list[torch.Tensor | None] = [None] * len(frames)
        chunks: list[list[int]] = []
        for i in order:
            if chunks and len(chunks[-1]) < batch_size and frames[chunks[-1][0]].shape == frames[i].shape:
                chunks[-1].append(i)
            else:
                chunks.append([i])
        with torch.inference_mode(), _progress(len(frames), progress, f"restore {self.card.name}", "img") as bar:
            for chunk in chunks:
                x = torch.stack([frames[i].to(self.device) for i in chunk])
                y = self._forward(x, [us[i] for i in chunk])
                for i, yi in zip(chunk, y):
                    outs[i] = yi
                bar.update(len(chunk))
        return outs  # type: ignore[return-value]

    def _frames_for_model(self, frames: list[torch.Tensor]) -> list[torch.Tensor]:
        """Multi-frame models see a single image as a clip of identical frames (edge replication)."""
        t = int(self.card.capabilities.frame_window)
        return frames if t <= 1 else [f.unsqueeze(0).expand(t, *f.shape) for f in frames]

    # ------------------------------------------------------------------------------------------ API

    def restore(self, img: Any, u: float | Sequence[float] | None = None, channel_order: str = "rgb",
                batch_size: int = 8, progress: bool = False, faces: bool | None = None,
                face_options: Mapping[str, Any] | None = None) -> Any:
        """Restore one image, a batch, or a list; returns the input's kind (dtype, layout, alpha, PIL mode).

        ``img``: numpy HxW / HxWx3 / HxWx4 / NxHxWxC (uint8, uint16, float in [0, 1]); PIL image; path (returns a
        numpy array); torch CHW / NCHW float tensor in [0, 1]; or a list of these. ``channel_order="bgr"`` for
        OpenCV arrays. ``u``: the moment in [0, 1] for continuous models (CFMD-GAN, paper Eq. 7; default: the
        card's ``default_u``), one float or one per image; an error for models without ``u``. Any size is padded
        to the card's ``pad_multiple`` (reflect) and cropped back. Multi-frame models treat each image as a
        one-frame clip; use :meth:`restore_video` for sequences.

        ``faces`` -- whole photos through the face pipeline (:func:`facedeblur.restore_faces`: detect,
        align to the card's crop, restore every face in one batched call, feathered paste-back):

        * ``False``: every image goes to the network as it is (the input is a face crop, or the model is fully
          convolutional).
        * ``True``: every image is a photo: its faces are detected, restored and pasted back; an image without
          a face is returned unchanged with a :class:`~facedeblur.faces.NoFaceWarning`.
        * ``None`` (default, auto): per image. An image counts as a **face crop** -- restored as it is, as before
          -- when the card says ``aligned_face_input: false``; when it is nearly square (longer side at most 1.25x
          the shorter) and its longer side is at most twice the card's ``face_size`` (512 px for CFMD-GAN); or
          when its shorter side is under ``face_size / 4`` (64 px: too small to hold a detectable face). Any
          other image (a wide photo, a large photo) is a **photo** and goes through the face pipeline; a photo
          without a face comes back unchanged, with a ``NoFaceWarning``. Pass ``faces=True`` for square photos
          with small faces, ``faces=False`` to restore whole images (the opt-in whole-image mode).

        ``face_options``: keyword arguments for the face pipeline (:data:`FACE_OPTIONS`: ``only_center_face``,
        ``max_faces``, ``blend``, ``color_match``, ``detector``, ``feather``, ``paste``, ``template``; see
        :func:`facedeblur.restore_faces`). The default detector is an MTCNN on the model's device, built
        on first use and kept. Use :func:`facedeblur.restore_faces` for the face boxes and landmarks.
        """
        if faces is not None and not isinstance(faces, bool):
            raise InputError(f"faces={faces!r}: pass True (detect and restore the faces of a photo), False (restore "
                             "the image as it is) or None (auto: see Deblurrer.restore)")
        opts = dict(face_options or {})
        unknown = sorted(set(opts) - set(FACE_OPTIONS))
        if unknown:
            raise InputError(f"face_options: unknown option(s) {unknown}; use {', '.join(FACE_OPTIONS)}")
        if opts and faces is False:
            raise InputError("face_options apply to the face pipeline; drop them or pass faces=True / None")
        prep = prepare(img, channel_order)
        us = self._resolve_u(u, len(prep.frames))
        photo = [self._is_photo(f, faces) for f in prep.frames]
        if not any(photo):
            outs = self._run(self._frames_for_model(prep.frames), us, batch_size, progress)
            return prep.finish(outs)
        outs_opt: list[torch.Tensor | None] = [None] * len(prep.frames)
        whole = [i for i, p in enumerate(photo) if not p]
        self._restore_photos(prep.frames, [i for i, p in enumerate(photo) if p], us, batch_size, opts, outs_opt)
        if whole:
            restored = self._run(self._frames_for_model([prep.frames[i] for i in whole]), [us[i] for i in whole],
                                 batch_size, progress)
            for i, out in zip(whole, restored):
                outs_opt[i] = out
        return prep.finish(outs_opt)  # type: ignore[arg-type]

    def is_photo(self, img: Any) -> bool:
        """Whether :meth:`restore` with ``faces=None`` (auto) sends ``img`` (anything :meth:`restore` takes, one
        image) through the face pipeline (a photo) or restores it as it is (a face crop)."""
        if isinstance(img, np.ndarray) and img.ndim in (2, 3):
            return self._is_photo(torch.empty((3,) + tuple(img.shape[:2])), None)
        frames = prepare(img, "rgb").frames
        if len(frames) != 1:
            raise InputError(f"is_photo takes one image, got {len(frames)}")
        return self._is_photo(frames[0], None)

    def _is_photo(self, frame: torch.Tensor, faces: bool | None) -> bool:
        """The ``faces=`` rule of :meth:`restore` for one (3, H, W) frame."""
        if faces is not None:
            return faces
        if not self.card.capabilities.aligned_face_input:
            return False
        h, w = (int(v) for v in frame.shape[-2:])
        size = int(self.card.input.face_size)
        crop_like = max(h, w) <= 2 * size and max(h, w) <= 1.25 * min(h, w)
        return not (crop_like or 4 * min(h, w) < size)

    def face_detector(self) -> Any:
        """The MTCNN face detector used by ``restore(..., faces=...)`` (built on first use, on this device)."""
        det = getattr(self, "_detector", None)
        if det is None or det.device != self.device:
            from ..faces.mtcnn import MTCNN

            det = self._detector = MTCNN(device=self.device)
        return det

    def face_restorer(self, u: float | None = None, batch_size: int = 8) -> FaceRestorer:
        """This model as the face pipeline takes it: a :class:`~facedeblur.faces.FaceRestorer` whose restore callable
        restores aligned crops at moment ``u`` (None: the card's default) in batches of ``batch_size``
        (``restore(crops, faces=False)``: crops are never detected again), with ``restore_windows`` for multi-frame
        models and this Deblurrer's MTCNN as the default detector. ``u`` and ``batch_size`` are checked here."""
        from ..faces.pipeline import FaceRestorer

        uu = self._resolve_u(u, 1)[0]
        bs = _check_batch_size(batch_size)

        def restore(crops: list[np.ndarray]) -> list[Any]:
            return self.restore(crops, u=uu, faces=False, batch_size=bs)

        def restore_windows(windows: list[np.ndarray]) -> list[torch.Tensor]:
            tensors = [torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)).permute(0, 3, 1, 2).contiguous()
                       for w in windows]
            return self._run(tensors, [uu] * len(tensors), bs)

        multi = int(self.card.capabilities.frame_window) > 1
        return FaceRestorer(restore, self.card, restore_windows if multi else None, self.face_detector)

    def _restore_photos(self, frames: list[torch.Tensor], idx: list[int], us: list[float | None], batch_size: int,
                        opts: dict[str, Any], outs: list[torch.Tensor | None]) -> None:
        """Face pipeline for ``frames[i]``, ``i`` in ``idx`` (grouped by u: one batched model call per group);
        fills ``outs``. A photo without a face comes back unchanged, with a ``NoFaceWarning``."""
        from ..faces.pipeline import restore_face_arrays

        groups: dict[float | None, list[int]] = {}
        for i in idx:
            groups.setdefault(us[i], []).append(i)
        for uu, members in groups.items():
            arrays = [np.ascontiguousarray(frames[i].permute(1, 2, 0).numpy(), dtype=np.float32) for i in members]
            restored, _ = restore_face_arrays(arrays, self.face_restorer(uu, batch_size), stacklevel=3, **opts)
            for i, out in zip(members, restored):
                outs[i] = torch.from_numpy(out).permute(2, 0, 1)

    __call__ = restore

    def restore_moments(self, img: Any, n: int = 7, us: Sequence[float] | None = None, channel_order: str = "rgb",
                        batch_size: int = 8, progress: bool = False) -> list[Any]:
        """The sharp moments of one blurry input at ``u_k = k / (n - 1)``, k = 0..n-1, or at explicit ``us``
        (which override ``n``): a list of outputs of the input's kind. Continuous models only (CFMD-GAN §3:
        u = 0 and 1 are the ends of the exposure)."""
        if not self.card.capabilities.continuous_u:
            raise self._no_u_error()
        if us is None:
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
                raise CapabilityError(f"n must be an integer >= 2 (moments at u = k/(n-1)), not {n!r}; for a single "
                                      "moment use restore(img, u=...)")
            moments = [k / (int(n) - 1) for k in range(int(n))]
        else:
            if isinstance(us, (torch.Tensor, np.ndarray)):
                us = us.tolist()
            if isinstance(us, (str, bytes)) or not isinstance(us, Iterable):
                raise CapabilityError(f"us must be a sequence of numbers in [0, 1], not {us!r}")
            moments = [self._check_u_value(v) for v in us]
            if not moments:
                raise CapabilityError("us is empty; pass at least one u in [0, 1]")
        prep = prepare(img, channel_order)
        k = len(prep.frames)
        frames = self._frames_for_model(prep.frames) * len(moments)
        uu = [m for m in moments for _ in range(k)]
        outs = self._run(frames, uu, batch_size, progress)
        return [prep.finish(outs[j * k:(j + 1) * k]) for j in range(len(moments))]

    def restore_video(self, frames: Iterable[Any], u: float | None = None, channel_order: str = "rgb",
                      batch_size: int = 8, progress: bool = True) -> Iterator[Any]:
        """Restore a stream of frames lazily; yields restored frames of each input's kind, in order.

        Holds at most ``batch_size`` (+ the model's ``frame_window``) frames: pass a generator (e.g. frames read
        from ``cv2.VideoCapture``) to process videos of any length. Single-image models restore each frame;
        multi-frame models (``frame_window`` T > 1) restore the centre of a sliding window of T frames, reflected
        at the ends of the video (:func:`facedeblur.faces.video.reflect_index`: for T = 5 the first frame's window is frames 2, 1, 0, 1, 2
        and the last one's n-3, n-2, n-1, n-2, n-3).
        """
        if isinstance(frames, (np.ndarray, torch.Tensor, str, os.PathLike)) or not isinstance(frames, Iterable):
            raise InputError("restore_video takes an iterable of frames (a list or a generator of HxWx3 arrays); "
                             "for an NxHxWx3 array use list(array) or restore(array)")
        batch_size = _check_batch_size(batch_size)
        uu = self._resolve_u(u, 1)[0]
        order = channel_order
        t = int(self.card.capabilities.frame_window)
        total = len(frames) if hasattr(frames, "__len__") else None  # type: ignore[arg-type]
        return self._video(frames, uu, order, batch_size, progress, t, total)

    def _video(self, frames: Iterable[Any], u: float | None, order: str, batch_size: int, progress: bool,
               t: int, total: int | None) -> Iterator[Any]:
        def prep_frame(frame: Any, index: int) -> Prepared:
            p = prepare(frame, order, _nested=True)
            if len(p.frames) != 1:
                raise InputError(f"video frame {index} holds {len(p.frames)} images; each frame must be one image")
            return p

        bar = _progress(total, progress, f"video {self.card.name}", "frame")
        try:
            pending: list[tuple[Prepared, torch.Tensor]] = []

            def flush() -> Iterator[Any]:
                outs = self._run([w for _, w in pending], [u] * len(pending), batch_size)
                for (p, _), out in zip(pending, outs):
                    bar.update(1)
                    yield p.finish([out])
                pending.clear()

            if t <= 1:
                for i, frame in enumerate(frames):
                    p = prep_frame(frame, i)
                    pending.append((p, p.frames[0]))
                    if len(pending) >= batch_size:
                        yield from flush()
            else:
                from ..faces.video import reflect_index

                before = (t - 1) // 2  # window index of the restored (centre) frame
                after = t - 1 - before
                buf: deque[tuple[int, Prepared]] = deque(maxlen=t)  # the last t frames, with their indices
                shape = None
                nxt = 0  # next frame to restore

                def window(c: int, last: int) -> tuple[Prepared, torch.Tensor]:
                    base = buf[0][0]
                    idx = [reflect_index(c + d, last) for d in range(-before, after + 1)]
                    return buf[c - base][1], torch.stack([buf[j - base][1].frames[0] for j in idx])

                for i, frame in enumerate(frames):
                    p = prep_frame(frame, i)
                    if shape is None:
                        shape = p.frames[0].shape
                    elif p.frames[0].shape != shape:
                        raise InputError(f"video frame {i} is {tuple(p.frames[0].shape[-2:])} but frame 0 is "
                                         f"{tuple(shape[-2:])}; all frames of a video must have one size")
                    buf.append((i, p))
                    if i - nxt >= after:  # frame nxt's window is complete (reflected at the start)
                        pending.append(window(nxt, i))
                        nxt += 1
                        if len(pending) >= batch_size:
                            yield from flush()
                if buf:
                    last = buf[-1][0]
                    while nxt <= last:  # the last frames: windows reflected at the end
                        pending.append(window(nxt, last))
                        nxt += 1
                        if len(pending) >= batch_size:
                            yield from flush()
            if pending:
                yield from flush()
        finally:
            bar.close()


ENGINES = ("torch", "onnxruntime")


def load(name: str, device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
         weights: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
         engine: str = "torch") -> Deblurrer:
    """A ready :class:`Deblurrer` for zoo model ``name`` (``"cfmd-gan"``, ``"cfmd-gan.paper"``, ``"hf-hub:ORG/REPO"``,
    ``"local-dir:PATH"``, ``"onnx:FILE.onnx"``) with its trained weights: ``weights`` (a file or a folder saved by
    ``facedeblur export``), else the embedded file, else the Hugging Face Hub (cached in ``cache_dir``).
    Never random: without weights the typed :class:`~facedeblur.errors.WeightsError` propagates.

    ``device``: ``"auto"`` (cuda, then mps, then cpu) or a device; ``dtype``: None (float32) or one of the card's
    ``capabilities.dtypes``. ``engine``: ``"torch"``, or ``"onnxruntime"`` (CPU, float32; the model is exported
    to ONNX once and cached, see :func:`export_onnx`; needs ``pip install "facedeblur[onnx]"``). ``"onnx:FILE"``
    runs an exported file on ONNX Runtime.
    """
    from ..models import get_arch, get_card
    from ..weights import load_pretrained_into

    if engine not in ENGINES:
        raise CapabilityError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if isinstance(name, str) and name.startswith("onnx:"):
        return _load_onnx_file(name[len("onnx:"):], device, dtype)
    card = get_card(name, cache_dir=cache_dir)
    if engine == "onnxruntime":
        _check_onnx_engine(device, dtype)
    torch_dtype = resolve_dtype(dtype, tuple(card.capabilities.dtypes), f"model {card.name!r}")
    dev = resolve_device(device) if engine == "torch" else torch.device("cpu")
    model = get_arch(card.architecture).builder(**card.arch_kwargs)
    load_pretrained_into(model, card, weights=weights, cache_dir=cache_dir)
    d = Deblurrer(model, card, dev, torch_dtype)
    if engine == "torch":
        return d
    return _load_onnx_file(_cached_onnx(d, cache_dir), "cpu", None)


def _check_onnx_engine(device: Any, dtype: Any) -> None:
    if str(device) not in ("auto", "cpu") or dtype not in (None, "float32", torch.float32):
        raise CapabilityError(f"the onnxruntime engine runs float32 on the CPU; got device={device!r}, "
                              f"dtype={dtype!r} (use device='cpu' and the default dtype, or engine='torch')")


def _load_onnx_file(path: str | os.PathLike, device: Any, dtype: Any) -> Deblurrer:
    from .onnx import OnnxRuntimeModule, onnx_adapter, read_onnx_card

    _check_onnx_engine(device, dtype)
    card, _ = read_onnx_card(path)
    return Deblurrer(OnnxRuntimeModule(path), card, "cpu", None, adapter=onnx_adapter(card))


def _cached_onnx(d: Deblurrer, cache_dir: str | os.PathLike | None) -> str:
    """The ONNX export of ``d`` in the cache (``<cache>/onnx/<name>-<digest>.onnx``), made on first use; the digest
    covers the weights, the card's architecture and facedeblur's version (a new exporter re-exports)."""
    import hashlib
    import pathlib

    from .._version import __version__
    from .onnx import OPSET

    h = hashlib.sha256(f"{d.card.architecture}|{sorted(d.card.arch_kwargs.items())}|{__version__}|{OPSET}".encode())
    for k, v in sorted(d.model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    root = pathlib.Path(cache_dir) if cache_dir else pathlib.Path(
        os.environ.get("FACEDEBLUR_CACHE", pathlib.Path.home() / ".cache" / "facedeblur"))
    path = root / "onnx" / f"{d.card.name}-{h.hexdigest()[:16]}.onnx"
    if not path.is_file():
        export_onnx(d, path)
    return str(path)


def export_onnx(model: "Deblurrer | str", path: str | os.PathLike, *, opset: int | None = None,
                example_size: int = 64, check: bool = True, tolerance: float = 1e-4) -> "os.PathLike":
    """Export ``model`` (a :class:`Deblurrer`, or a name for :func:`load`) to the ONNX file ``path``: inputs
    ``image`` (N, 3, H, W) (``frames`` (N, T, 3, H, W) for video models) and ``u`` (N,) for continuous models,
    output ``restored``; dynamic batch and size; the card inside. Parity with PyTorch is checked (``check``) and
    recorded. See :mod:`facedeblur.restore.onnx`. Needs ``pip install "facedeblur[onnx]"``."""
    from .onnx import OPSET, export_graph

    d = load(model, device="cpu") if isinstance(model, str) else model
    if not isinstance(d, Deblurrer):
        raise TypeError(f"model must be a facedeblur Deblurrer or a zoo name, not {type(model).__name__}")
    return export_graph(d.model, d.adapter, d.card, path, opset=opset or OPSET, example_size=example_size,
                        check=check, tolerance=tolerance)
