"""Frame sources: video files and folders of frame images, streamed one frame at a time."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DataError

__all__ = ["Clip", "find_clips", "iter_frames", "VIDEO_EXTS", "IMAGE_EXTS"]

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class Clip:
    """A video file or a folder of frames. ``identity`` groups clips of the same person (split key)."""

    path: Path
    identity: str

    @property
    def name(self) -> str:
        return self.path.stem if self.path.is_file() else self.path.name


def _identity_table(root: Path) -> dict[str, str]:
    import csv

    table = {}
    csv_path = root / "clips.csv"
    if csv_path.exists():
        with open(csv_path, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("path") and row.get("identity_group"):
                    table[str(Path(row["path"]))] = row["identity_group"]
    return table


def find_clips(root: str | Path) -> list[Clip]:
    """Every video file and frame folder under ``root`` (sorted). Identities come from ``root/clips.csv``
    (column ``identity_group``) when present, else from ``root/videos/clips.csv``'s parent convention, else
    each clip is its own identity."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist or is not a folder")
    base = root if (root / "clips.csv").exists() else (root.parent if (root.parent / "clips.csv").exists() else root)
    ids = _identity_table(base)
    clips: list[Clip] = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS:
            clips.append(Clip(p, ids.get(str(p.relative_to(base)), p.stem)))
        elif p.is_dir() and any(c.suffix.lower() in IMAGE_EXTS for c in p.iterdir() if c.is_file()):
            if not any(c.is_dir() for c in p.iterdir()):
                clips.append(Clip(p, ids.get(str(p.relative_to(base)), p.name)))
    if not clips:
        raise DataError(f"no videos ({', '.join(VIDEO_EXTS)}) or frame folders found under {root}")
    return clips


def iter_frames(clip: Clip | str | Path) -> Iterator[np.ndarray]:
    """RGB uint8 frames of a clip, one at a time (memory flat in the clip's length)."""
    import cv2

    path = clip.path if isinstance(clip, Clip) else Path(clip)
    if path.is_dir():
        for f in sorted(c for c in path.iterdir() if c.suffix.lower() in IMAGE_EXTS):
            bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if bgr is None:
                raise DataError(f"cannot read frame {f}")
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"cannot open video {path} (unsupported codec or not a video)")
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
