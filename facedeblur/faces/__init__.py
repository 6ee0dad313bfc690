"""Face pipeline: offline face detection with 5 landmarks (MTCNN, weights embedded in the package), alignment to
each model's training crop, batched restoration and feathered paste-back (:func:`restore_face_arrays`), and the same
for video files with face tracking and landmark smoothing (:func:`process_video_file`).

The pipeline takes the model as a :class:`FaceRestorer` (a restore callable and the model's card) and imports nothing
from :mod:`facedeblur.restore`. The functions that take a model -- a zoo name, a
:class:`~facedeblur.restore.Deblurrer` or any object with ``.restore(crops, u=...)`` and ``.card`` -- are
:func:`facedeblur.restore_faces` and :func:`facedeblur.restore_video_file` (defined in
:mod:`facedeblur.restore.photos`).
"""
from __future__ import annotations

from .align import TEMPLATES, crop_style_for, similarity_transform, template_points, warp_face
from .mtcnn import MTCNN, WEIGHTS_LICENSE, WEIGHTS_ORIGIN, WEIGHTS_PATH, WEIGHTS_SHA256
from .paste import color_match, face_mask, paste_back
from .pipeline import FaceRecord, FaceRestorer, NoFaceWarning, restore_face_arrays
from .video import (VIDEO_EXTENSIONS, AudioNotCopiedWarning, FaceTracker, VideoFace, VideoResult, check_video_paths,
                    is_video, landmark_jitter, process_video_file, smooth_at, smooth_track)

__all__ = ["MTCNN", "WEIGHTS_PATH", "WEIGHTS_SHA256", "WEIGHTS_ORIGIN", "WEIGHTS_LICENSE",
           "restore_face_arrays", "FaceRecord", "FaceRestorer", "NoFaceWarning",
           "TEMPLATES", "crop_style_for", "similarity_transform", "template_points", "warp_face",
           "color_match", "face_mask", "paste_back", "process_video_file", "check_video_paths", "VideoResult",
           "VideoFace", "FaceTracker", "AudioNotCopiedWarning", "VIDEO_EXTENSIONS", "is_video", "smooth_at",
           "smooth_track", "landmark_jitter"]

#: names that take a model and moved to facedeblur.restore (issue #18), with where to find them now
_MOVED = {"restore_faces": "facedeblur.restore_faces", "restore_video_file": "facedeblur.restore_video_file"}


def __getattr__(name: str) -> None:
    """A clear error for the functions that moved to :mod:`facedeblur.restore` (they take a model name, a Deblurrer
    or a face model; the pipeline here takes a :class:`FaceRestorer`)."""
    if name in _MOVED:
        raise AttributeError(f"facedeblur.faces.{name} is now {_MOVED[name]} (it takes a model name, a Deblurrer or a "
                             f"face model; the face pipeline in facedeblur.faces takes a FaceRestorer)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
