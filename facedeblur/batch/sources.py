"""What a batch job restores: the items of its sources, their identities and output paths, and the checks that
run before any work (OUT writable, OUT not inside a source, no input overwritten, no two inputs on one output).

A source is a folder (searched recursively; hidden files and folders skipped), a glob (``'photos/**/*.jpg'``,
expanded here with ``recursive=True``), a text file listing paths (``.txt``, ``.lst``, ``.list``; one path per
line, ``#`` comments; relative paths are relative to the list's folder), or one image or video file. Every
item has a **source root** -- the folder, the glob's fixed leading folder, the deepest folder holding every
listed file, or a single file's folder -- and its identity is its path relative to that root (``rel``), which
is also where its output goes under OUT (images get the output suffix, videos keep theirs).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import InputError

__all__ = ["Item", "Source", "collect", "check_layout", "LIST_SUFFIXES", "PARTIAL_TAG", "partial_path",
           "image_suffixes", "video_suffixes"]

#: Suffixes of a source that is a list of paths.
LIST_SUFFIXES = (".txt", ".lst", ".list")
#: Marker in the names of the temporary files a job writes next to its outputs (``.NAME.fdpartial.EXT``).
PARTIAL_TAG = ".fdpartial"
_MAGIC = set("*?[")


def image_suffixes() -> tuple[str, ...]:
    """The image suffixes facedeblur reads (lower case)."""
    from ..restore.convert import IMAGE_EXTENSIONS

    return tuple(IMAGE_EXTENSIONS)


def video_suffixes() -> tuple[str, ...]:
    """The video suffixes facedeblur reads (lower case)."""
    from ..faces.video import VIDEO_EXTENSIONS

    return tuple(VIDEO_EXTENSIONS)


@dataclass(frozen=True)
class Item:
    """One input: ``rel`` (its identity: the posix path relative to its source root), ``src`` (absolute path),
    ``kind`` (``"image"``, ``"video"`` or ``"unknown"`` for a listed file of another type: it fails as an item)
    and ``out_rel`` (the output path relative to OUT, posix)."""

    rel: str
    src: Path
    kind: str
    out_rel: str


@dataclass(frozen=True)
class Source:
    """One command-line source: ``text`` as given, ``kind`` (``folder``, ``glob``, ``list``, ``file``) and its
    ``root`` (absolute). ``scans`` is True for kinds that find files by searching (folders and globs): those must
    not contain OUT, or a rerun would pick up the outputs."""

    text: str
    kind: str
    root: Path

    @property
    def scans(self) -> bool:
        return self.kind in ("folder", "glob")


def _abs(p: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(p))))


def _kind_of(path: Path) -> str:
    s = path.suffix.lower()
    if s in image_suffixes():
        return "image"
    if s in video_suffixes():
        return "video"
    return "unknown"


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _item(root: Path, path: Path, ext: str) -> Item:
    rel = path.relative_to(root)
    kind = _kind_of(path)
    out = rel if kind == "video" else rel.with_suffix(ext)
    return Item(rel.as_posix(), path, kind, out.as_posix())


def _glob_root(pattern: str) -> Path:
    """The leading folder of ``pattern`` without wildcard characters."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts:
        if _MAGIC & set(part):
            break
        fixed.append(part)
    root = _abs(Path(*fixed)) if fixed else _abs(".")
    return root if len(fixed) < len(parts) else root.parent


def _read_list(path: Path) -> list[Path]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{str(path)!r}: cannot read this list of paths ({e}); pass a UTF-8 text file with one "
                         "path per line") from None
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(os.path.expanduser(line))
            entries.append(_abs(p if p.is_absolute() else path.parent / p))
    if not entries:
        raise InputError(f"list {str(path)!r} names no files; write one image or video path per line")
    return entries


def _supported(p: Path) -> bool:
    return _kind_of(p) != "unknown"


def collect(sources: Sequence[str | os.PathLike], ext: str) -> tuple[list[Item], list[Source]]:
    """The items of ``sources`` (in a stable order, duplicates of one file under one ``rel`` merged) and the
    sources with their roots. ``ext``: the output suffix of images (``".png"``). Raises
    :class:`~facedeblur.errors.InputError` for a missing source, an empty folder or glob, an unsupported single
    file, or two inputs that would share one output."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise InputError("no sources given; pass folders, globs, list files or image/video files")
    items: list[Item] = []
    found: list[Source] = []
    for text in sources:
        s = os.fspath(text)
        p = _abs(s)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and _supported(f) and not _hidden(f.relative_to(p)))
            if not files:
                raise InputError(f"folder {s!r} holds no images or videos ({', '.join(image_suffixes() + video_suffixes())})")
            found.append(Source(s, "folder", p))
            items += [_item(p, f, ext) for f in files]
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            entries = _read_list(p)
            root = Path(os.path.commonpath([e.parent for e in entries]))
            found.append(Source(s, "list", root))
            items += [_item(root, e, ext) for e in entries]
        elif p.is_file():
            if not _supported(p):
                raise InputError(f"{s!r}: unsupported file type {p.suffix or '(no suffix)'!r}; pass images "
                                 f"({', '.join(image_suffixes())}), videos ({', '.join(video_suffixes())}), folders, "
                                 f"globs or a list of paths ({', '.join(LIST_SUFFIXES)})")
            found.append(Source(s, "file", p.parent))
            items.append(_item(p.parent, p, ext))
        elif _MAGIC & set(s):
            root = _glob_root(s)
            files = sorted(_abs(f) for f in glob.glob(os.path.expanduser(s), recursive=True))
            files = [f for f in files if f.is_file() and _supported(f) and not _hidden(f.relative_to(root))]
            if not files:
                raise InputError(f"glob {s!r} matches no image or video files")
            found.append(Source(s, "glob", root))
            items += [_item(root, f, ext) for f in files]
        else:
            raise InputError(f"{s!r}: no such file or folder")
    return _dedupe(items), found


def _dedupe(items: Iterable[Item]) -> list[Item]:
    by_rel: dict[str, Item] = {}
    by_out: dict[str, Item] = {}
    for it in items:
        old = by_rel.get(it.rel)
        if old is not None:
            if os.path.realpath(old.src) == os.path.realpath(it.src):
                continue
            raise InputError(f"inputs {str(old.src)!r} and {str(it.src)!r} have the same path {it.rel!r} below "
                             "their sources; restore them into separate output folders")
        other = by_out.get(it.out_rel)
        if other is not None:
            raise InputError(f"inputs {str(other.src)!r} and {str(it.src)!r} would both be written to "
                             f"{it.out_rel!r}; rename one, or restore them into separate output folders")
        by_rel[it.rel] = by_out[it.out_rel] = it
    return list(by_rel.values())


def _inside(child: Path, parent: Path) -> bool:
    c, p = os.path.realpath(child), os.path.realpath(parent)
    return c == p or c.startswith(p.rstrip(os.sep) + os.sep)


def check_layout(items: Sequence[Item], sources: Sequence[Source], out: Path) -> None:
    """Before any work: OUT is not inside (or equal to) a folder or glob source, no folder source lies inside
    OUT, and no output path is an input. Raises :class:`~facedeblur.errors.InputError` naming the fix."""
    for s in sources:
        if s.scans and _inside(out, s.root):
            raise InputError(f"output folder {str(out)!r} is inside the source {s.text!r}: a rerun would restore the "
                             "outputs again. Choose an output folder outside every source folder")
        if s.kind == "folder" and _inside(s.root, out):
            raise InputError(f"source {s.text!r} is inside the output folder {str(out)!r}; choose an output folder "
                             "that does not contain the inputs")
    inputs = {os.path.realpath(it.src): it for it in items}
    for it in items:
        dst = os.path.realpath(out / it.out_rel)
        if dst in inputs:
            raise InputError(f"output {str(out / it.out_rel)!r} would overwrite the input {str(inputs[dst].src)!r}; "
                             "choose another output folder")


def partial_path(dst: Path) -> Path:
    """The temporary file an output is written to before it is moved into place: ``.NAME.fdpartial.EXT`` in the
    output's folder (the suffix is kept: writers pick the format from it)."""
    return dst.with_name(f".{dst.stem}{PARTIAL_TAG}{dst.suffix}")
