"""Frame sources: video files and folders of frame images, streamed one frame at a time."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

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

    table: dict[str, str] = {}
    csv_path = root / "clips.csv"
    if csv_path.exists():
        with open(csv_path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("path", "identity_group") if c not in (reader.fieldnames or [])]
            if missing:  # a silent fallback would split by clip and leak identities into validation
                raise DataError(f"{csv_path} has no column(s) {', '.join(missing)}; it needs a header with 'path' "
                                "(relative to the folder holding clips.csv) and 'identity_group', or remove the file")
            for row in reader:
                if row.get("path") and row.get("identity_group"):
                    table[Path(row["path"]).as_posix()] = row["identity_group"]
    return table


def _natural_key(path: Path) -> list[Any]:
    """Sort key that orders ``frame_2.png`` before ``frame_10.png`` (zero-padded names sort as before)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", path.name)]


def find_clips(root: str | Path) -> list[Clip]:
    """Every video file and frame folder (a folder of images without sub-folders) under ``root``, sorted.

    Identities (the train/validation split key) come from a ``clips.csv`` in ``root`` or, failing that, in its
    parent (the ``data/clips.csv`` + ``data/videos/`` layout): columns ``path`` (relative to the folder holding
    the csv) and ``identity_group``. Clips it does not list are their own identity."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist or is not a folder")
    root_abs = Path(os.path.abspath(root))  # absolute without resolving links, so "." has a real parent
    base = root_abs if (root_abs / "clips.csv").exists() else (
        root_abs.parent if (root_abs.parent / "clips.csv").exists() else root_abs)
    ids = _identity_table(base)

    def key(p: Path) -> str:
        return (root_abs / p.relative_to(root)).relative_to(base).as_posix()

    clips: list[Clip] = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS:
            clips.append(Clip(p, ids.get(key(p), p.stem)))
        elif p.is_dir() and any(c.suffix.lower() in IMAGE_EXTS for c in p.iterdir() if c.is_file()):
            if not any(c.is_dir() for c in p.iterdir()):
                clips.append(Clip(p, ids.get(key(p), p.name)))
    if not clips:
        raise DataError(f"no videos ({', '.join(VIDEO_EXTS)}) or frame folders found under {root}; put clips "
                        "there as video files or as folders of frame images (one folder per clip)")
    return clips


def iter_frames(clip: Clip | str | Path) -> Iterator[np.ndarray]:
    """RGB uint8 frames of a clip, one at a time (memory flat in the clip's length)."""
    import cv2

    path = clip.path if isinstance(clip, Clip) else Path(clip)
    if path.is_dir():
        files = [c for c in path.iterdir() if c.is_file() and c.suffix.lower() in IMAGE_EXTS]
        for f in sorted(files, key=_natural_key):  # temporal order, also for unpadded numbers
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
