"""Photos and videos through the face pipeline, with a model given as a zoo name, a Deblurrer or a face model.

:func:`restore_faces` (one photo of any image kind), :func:`restore_face_arrays` (a list of float arrays) and
:func:`restore_video_file` take ``model`` as

* a **model name**, as :func:`facedeblur.load` takes it (``"cfmd-gan"``, ``"cfmd-gan.paper"``,
  ``"hf-hub:ORG/REPO@REV"``, ``"local-dir:PATH"``): loaded with its trained weights (``device="auto"``) for this
  call; load it once with :func:`facedeblur.load` and pass the :class:`~facedeblur.restore.Deblurrer` to reuse it;
* a :class:`~facedeblur.restore.Deblurrer`;
* any object with ``.restore(list_of_crops, u=...)`` (returning as many restored crops) and a ``.card`` with
  ``input.face_size`` / ``input.face_crop`` (test doubles, wrappers that time or log the calls).

They turn the model into the :class:`~facedeblur.faces.FaceRestorer` the face pipeline (:mod:`facedeblur.faces`)
runs on: the pipeline itself never imports this package.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Literal, Sequence

import numpy as np

from ..errors import CapabilityError, InputError
from ..faces.pipeline import FaceRecord, FaceRestorer, restore_face_arrays as _pipeline_arrays
from ..faces.video import VideoFace, VideoResult, check_video_paths, process_video_file

__all__ = ["resolve_model", "face_restorer", "restore_faces", "restore_face_arrays", "restore_video_file"]


def resolve_model(model: Any) -> Any:
    """``model`` as an object the face pipeline can use: a name is loaded (:func:`facedeblur.load`), a Deblurrer or
    another face model (``.restore`` and ``.card``) is returned as it is; anything else is an InputError."""
    if isinstance(model, str):
        from .deblurrer import load

        return load(model)
    if callable(getattr(model, "restore", None)) and getattr(model, "card", None) is not None:
        return model
    hint = " (for a folder pass 'local-dir:PATH')" if isinstance(model, os.PathLike) else ""
    raise InputError(f"model must be a model name ('cfmd-gan', 'hf-hub:ORG/REPO@REV', 'local-dir:PATH'), a facedeblur "
                     f"Deblurrer (facedeblur.load(name)) or an object with .restore(list_of_crops, u=...) and .card; "
                     f"got {type(model).__name__}{hint}")


def face_restorer(model: Any, u: Any = None, batch_size: int | None = None) -> FaceRestorer:
    """The :class:`~facedeblur.faces.FaceRestorer` of a resolved ``model`` at moment ``u``: a Deblurrer's own
    (:meth:`~facedeblur.restore.Deblurrer.face_restorer`, which checks ``u`` and ``batch_size``), else one that calls
    ``model.restore(crops, u=u)`` (``batch_size`` is a Deblurrer's only)."""
    if callable(getattr(model, "face_restorer", None)):
        return model.face_restorer(u, 8 if batch_size is None else batch_size)

    def restore(crops: list[np.ndarray]) -> Any:
        return model.restore(crops, u=u)

    detector = getattr(model, "face_detector", None)
    return FaceRestorer(restore, model.card, None, detector if callable(detector) else None)


def restore_faces(img: Any, model: Any, u: Any = None, aligned: bool = False, only_center_face: bool = False,
                  max_faces: int | None = None, blend: float = 1.0, color_match: bool | str = False,
                  detector: Any = None, *, whole_image: bool = False, feather: float = 0.1,
                  paste: Literal["residual", "replace"] = "residual", template: str | None = None,
                  channel_order: str = "rgb", batch_size: int | None = None) -> tuple[Any, list[FaceRecord]]:
    """Restore every face of a photo with a face model; returns ``(restored image, face records)``.

    Args:
        img: one image -- numpy HxW (grey) / HxWx3 / HxWx4 (alpha kept) in uint8, uint16 or float [0, 1]; a PIL
            image; a path; a CHW tensor. Returned as the same kind (grey stays grey).
        model: a model name (``"cfmd-gan"``, ``"hf-hub:..."``, ``"local-dir:..."``, loaded for this call), a
            :class:`~facedeblur.restore.Deblurrer`, or anything with ``.restore(list, u=...)`` and a ``.card`` with
            ``input.face_size`` / ``input.face_crop`` (see the module doc).
        u: passed to the model (the CFMD-GAN moment in [0, 1]; None = the card's default).
        aligned: the input is already a face crop of the model's kind: no detection, resized to the face size.
        only_center_face / max_faces: restore only the face nearest the centre / the largest N faces.
        blend: 0 = input unchanged ... 1 = full restoration (a linear mix of the pasted correction).
        color_match: False, True (= ``"lab-mean-std"``) or ``"lab-mean"``: Reinhard colour transfer of each restored
            crop to its input crop (see :mod:`facedeblur.faces.paste`).
        detector: any object with ``.detect(rgb_uint8) -> list[Face]`` (5 or 68 landmarks); default
            :class:`~facedeblur.faces.MTCNN` (a Deblurrer's, on its device; pass one to reuse it across calls or to
            change ``min_face_size``).
        whole_image: restore the whole image as one input instead (for fully convolutional models).
        feather: width of the blending band, a fraction of each face crop's side (0.1; 0 = hard edge).
        paste: ``"residual"`` (paste the model's change; exact where the model changes nothing) or ``"replace"``.
        template: crop style name (see :data:`facedeblur.faces.align.TEMPLATES`); default from the card.
        channel_order: ``"bgr"`` for OpenCV arrays.
        batch_size: crops per forward pass of a :class:`~facedeblur.restore.Deblurrer` (default 8).

    With no face found a :class:`~facedeblur.faces.NoFaceWarning` is issued and the image is returned unchanged.
    """
    import torch

    from .convert import prepare

    model = resolve_model(model)
    prep = prepare(img, channel_order)
    if len(prep.frames) != 1:
        raise InputError(f"restore_faces takes one image, got {len(prep.frames)}; call it once per image (or use "
                         "restore_face_arrays for a list of HxWx3 float arrays)")
    rgb = np.ascontiguousarray(prep.frames[0].permute(1, 2, 0).numpy(), dtype=np.float32)
    outs, records = _pipeline_arrays([rgb], face_restorer(model, u, batch_size), aligned=aligned,
                                     only_center_face=only_center_face, max_faces=max_faces, blend=blend,
                                     color_match=color_match, detector=detector, whole_image=whole_image,
                                     feather=feather, paste=paste, template=template, stacklevel=2)
    if not records[0] and not whole_image and isinstance(img, np.ndarray):
        return img.copy(), []
    return prep.finish([torch.from_numpy(outs[0]).permute(2, 0, 1)]), records[0]


def restore_face_arrays(images: Sequence[np.ndarray], model: Any, u: Any = None, *, batch_size: int | None = None,
                        **options: Any) -> tuple[list[np.ndarray], list[list[FaceRecord]]]:
    """:func:`restore_faces` on HxWx3 float32 RGB arrays in [0, 1] (not modified), the faces of all images in one
    model call; returns the restored arrays and the face records of each image. ``options``: those of
    :func:`restore_faces` except ``channel_order`` (see :func:`facedeblur.faces.restore_face_arrays`)."""
    restorer = face_restorer(resolve_model(model), u, batch_size)
    return _pipeline_arrays(images, restorer, stacklevel=2, **options)


def restore_video_file(src: str | os.PathLike, dst: str | os.PathLike, model: Any, u: Any = None, *,
                       faces: bool | None = None, batch_size: int = 8, detector: Any = None, smoothing: int = 3,
                       only_center_face: bool = False, max_faces: int | None = None, blend: float = 1.0,
                       color_match: bool | str = False, feather: float = 0.1, paste: str = "residual",
                       template: str | None = None, codec: str | None = None, audio: bool = True,
                       overwrite: bool = False, progress: bool = True,
                       on_frame: Callable[[int, list[VideoFace]], None] | None = None) -> VideoResult:
    """Restore the faces of the video ``src`` into ``dst`` (same frame count, fps and size); see
    :mod:`facedeblur.faces.video` for the streaming, tracking, smoothing, codecs and audio.

    Args:
        src, dst: video files (:data:`~facedeblur.faces.VIDEO_EXTENSIONS`); ``dst``'s suffix picks the container.
        model: a model name (loaded for this call), a :class:`~facedeblur.restore.Deblurrer`, or an object with
            ``.restore(list, u=...)`` and ``.card`` (single-frame cards, face pipeline only).
        u: the moment for continuous models (None: the card's default).
        faces: None (auto: the face pipeline for cards with ``aligned_face_input``, else whole frames), True, or
            False (whole frames through :meth:`~facedeblur.restore.Deblurrer.restore_video`).
        batch_size: frames whose faces are restored in one model call (and the model's batch size).
        detector: default :class:`~facedeblur.faces.MTCNN` (pass one to change ``min_face_size``).
        smoothing: landmark smoothing radius r in frames (0: off); also the look-ahead.
        only_center_face, max_faces, blend, color_match, feather, paste, template: as in :func:`restore_faces`, per
            frame.
        codec: FourCC (default :data:`~facedeblur.faces.video.DEFAULT_CODECS` by suffix; ``"FFV1"`` in .avi/.mkv is
            lossless).
        audio: copy the source's audio with ffmpeg when it is on PATH.
        overwrite: replace an existing ``dst`` (never ``src``).
        progress: tqdm bar with frames per second and ETA.
        on_frame: called as ``on_frame(index, [VideoFace, ...])`` for every frame, in order.

    Returns a :class:`~facedeblur.faces.VideoResult`. Warns :class:`~facedeblur.faces.NoFaceWarning` when no frame
    has a face (the video is written unchanged) and :class:`~facedeblur.faces.AudioNotCopiedWarning` when the audio
    could not be copied. Raises :class:`~facedeblur.errors.InputError` for missing / unreadable / unsupported files.
    """
    check_video_paths(src, dst, overwrite)  # before a model is loaded
    model = resolve_model(model)
    if faces is not None and not isinstance(faces, bool):
        raise InputError(f"faces={faces!r}: pass True, False or None (auto)")
    card = model.card
    use_faces = bool(card.capabilities.aligned_face_input) if faces is None else faces
    window = int(card.capabilities.frame_window or 1)
    common = dict(batch_size=batch_size, smoothing=smoothing, only_center_face=only_center_face,
                  max_faces=max_faces, blend=blend, color_match=color_match, feather=feather, paste=paste,
                  template=template, codec=codec, audio=audio, overwrite=overwrite, progress=progress,
                  name=str(getattr(card, "name", "")), on_frame=on_frame)
    if use_faces:
        if window > 1 and not callable(getattr(model, "face_restorer", None)):
            raise CapabilityError(f"model {card.name!r}: multi-frame video restoration needs a facedeblur Deblurrer "
                                  "(facedeblur.load(name))")
        return process_video_file(src, dst, face_restorer(model, u, batch_size), detector=detector, **common)
    if not callable(getattr(model, "restore_video", None)):
        raise CapabilityError(f"model {card.name!r}: whole-frame video restoration (faces=False) needs a facedeblur "
                              "Deblurrer (facedeblur.load(name))")
    if callable(getattr(model, "_resolve_u", None)):
        model._resolve_u(u, 1)  # bad u: fail before reading anything

    def frames(it: Any) -> Any:
        return model.restore_video(it, u=u, channel_order="bgr", batch_size=int(batch_size), progress=False)

    return process_video_file(src, dst, frames=frames, detector=detector, **common)
