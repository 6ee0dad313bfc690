"""Face pipeline: offline face detection with 5 landmarks (MTCNN, weights embedded in the package), alignment to
each model's training crop, batched restoration and feathered paste-back (:func:`restore_faces`), and the same for
video files with face tracking and landmark smoothing (:func:`restore_video_file`)."""
from __future__ import annotations

from .align import TEMPLATES, crop_style_for, similarity_transform, template_points, warp_face
from .mtcnn import MTCNN, WEIGHTS_LICENSE, WEIGHTS_ORIGIN, WEIGHTS_PATH, WEIGHTS_SHA256
from .paste import color_match, face_mask, paste_back
from .pipeline import FaceRecord, NoFaceWarning, restore_face_arrays, restore_faces
from .video import (VIDEO_EXTENSIONS, AudioNotCopiedWarning, FaceTracker, VideoFace, VideoResult, is_video,
                    landmark_jitter, restore_video_file, smooth_at, smooth_track)

__all__ = ["MTCNN", "WEIGHTS_PATH", "WEIGHTS_SHA256", "WEIGHTS_ORIGIN", "WEIGHTS_LICENSE",
           "restore_faces", "restore_face_arrays", "FaceRecord", "NoFaceWarning",
           "TEMPLATES", "crop_style_for", "similarity_transform", "template_points", "warp_face",
           "color_match", "face_mask", "paste_back", "restore_video_file", "VideoResult", "VideoFace",
           "FaceTracker", "AudioNotCopiedWarning", "VIDEO_EXTENSIONS", "is_video", "smooth_at", "smooth_track",
           "landmark_jitter"]
