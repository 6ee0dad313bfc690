"""Real low-quality faces without ground truth (issue #16: the CycleGAN stage learns blur from them).

:func:`real_faces` gathers them from ``DATA/real_lq``: every image file there (any depth; e.g. CodeFormer's 18
aligned 512 px crops) and face crops cut from every video there (KEEP's 4 TV clips, PGTFormer's demo clip): every
``stride``-th frame, up to ``per_video`` frames per clip, the largest MTCNN face aligned with the inference template
of the face pipeline (the crop the models see at inference), ``face_size`` px. Video crops are cached as PNG under
``cache_dir/real-<digest>/`` (written atomically), so the detector runs once.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

__all__ = ["real_faces", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


def real_faces(data_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None, *, face_size: int = 256,
               style: str = "cfmd-256-loose", per_video: int = 40, stride: int = 5, min_face: float = 40.0,
               detector: Any = None, progress: bool = True) -> list[Path]:
    """Paths of real low-quality face images under ``data_dir/real_lq`` (images as they are; faces cut from its
    videos, cached). :class:`DataError` when there is no ``real_lq`` folder or no face in it."""
    root = Path(data_dir) / "real_lq"
    if not root.is_dir():
        raise DataError(f"no real low-quality faces: {root} does not exist (put real blurry face images or videos "
                        "there; see ../shared/data/README.md)")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    crops: list[Path] = []
    if videos:
        key = {"videos": [(str(v.relative_to(root)), v.stat().st_size) for v in videos], "face_size": face_size,
               "style": style, "per_video": per_video, "stride": stride, "min_face": min_face}
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
        out = Path(cache_dir or Path(data_dir) / ".facedeblur-cache") / f"real-{digest}"
        done = out / "done.json"
        if done.is_file():
            crops = [out / name for name in json.loads(done.read_text())["files"]]
        else:
            crops = _cut_video_faces(videos, root, out, face_size, style, per_video, stride, min_face, detector,
                                     progress)
            _atomic_text(done, json.dumps({"files": [p.name for p in crops], **key}, indent=1))
    found = images + crops
    if not found:
        raise DataError(f"{root} holds no image and no video with a detectable face")
    if progress:
        print(f"[facedeblur data] real low-quality faces: {len(images)} images and {len(crops)} face crops from "
              f"{len(videos)} videos under {root}")
    return found


def _cut_video_faces(videos: list[Path], root: Path, out: Path, face_size: int, style: str, per_video: int,
                     stride: int, min_face: float, detector: Any, progress: bool) -> list[Path]:
    import cv2

    from ..faces.align import five_points, similarity_transform, template_points, warp_face

    if detector is None:
        from ..faces.mtcnn import MTCNN

        detector = MTCNN(device="cpu", min_face_size=min_face)
    out.mkdir(parents=True, exist_ok=True)
    dst_pts = template_points(style, face_size)
    paths: list[Path] = []
    for v in videos:
        cap = cv2.VideoCapture(str(v))
        i = kept = 0
        try:
            while kept < per_video:
                ok, frame = cap.read()
                if not ok:
                    break
                if i % stride == 0:
                    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                    faces = detector.detect(rgb, max_faces=1)  # the largest face
                    if faces:
                        m = similarity_transform(five_points(np.asarray(faces[0].landmarks)), dst_pts)
                        crop = warp_face(rgb.astype(np.float32) / 255.0, m, face_size)
                        crop = np.clip(crop * 255.0 + 0.5, 0, 255).astype(np.uint8)
                        name = f"{v.relative_to(root).with_suffix('').as_posix().replace('/', '__')}_{i:06d}.png"
                        _atomic_png(out / name, crop)
                        paths.append(out / name)
                        kept += 1
                i += 1
        finally:
            cap.release()
    return paths


def _atomic_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png")
    os.close(fd)
    try:
        if not cv2.imwrite(tmp, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)):
            raise DataError(f"could not write {path}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
