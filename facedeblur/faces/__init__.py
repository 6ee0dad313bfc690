"""Face pipeline: offline face detection with 5 landmarks (MTCNN, weights embedded in the package), alignment to
each model's training crop, batched restoration and feathered paste-back (:func:`restore_faces`)."""
from __future__ import annotations

from .align import TEMPLATES, crop_style_for, similarity_transform, template_points, warp_face
from .mtcnn import MTCNN, WEIGHTS_LICENSE, WEIGHTS_ORIGIN, WEIGHTS_PATH, WEIGHTS_SHA256
from .paste import color_match, face_mask, paste_back
from .pipeline import FaceRecord, NoFaceWarning, restore_face_arrays, restore_faces

__all__ = ["MTCNN", "WEIGHTS_PATH", "WEIGHTS_SHA256", "WEIGHTS_ORIGIN", "WEIGHTS_LICENSE",
           "restore_faces", "restore_face_arrays", "FaceRecord", "NoFaceWarning",
           "TEMPLATES", "crop_style_for", "similarity_transform", "template_points", "warp_face",
           "color_match", "face_mask", "paste_back"]
