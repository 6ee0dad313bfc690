"""The job manifest: one SQLite file in OUT (``facedeblur-manifest.sqlite``) with one row per item.

SQLite because every update is a transaction: a job killed at any moment leaves the rows of its last commit,
never a torn file, and readers (``sqlite3 OUT/facedeblur-manifest.sqlite``) can look while a job runs. The file
uses WAL journaling; only the job's driver process writes it (under a lock file, so two jobs cannot share OUT).

Table ``items`` (primary key ``rel``, the input's path relative to its source root):

======================  ============================================================================
column                  meaning
======================  ============================================================================
``status``              ``writing`` (output complete in its temp file, being moved into place),
                        ``done`` or ``failed``
``src``                 the input's absolute path at the last attempt
``kind``                ``image``, ``video`` or ``unknown``
``input_sha1``          SHA-1 of the input file; ``input_bytes``, ``input_mtime_ns`` its size and mtime
``width``, ``height``   input size in pixels (videos: frame size); ``frames`` for videos
``model``               model name; ``weights_sha256`` the SHA-256 of its weight file (``tensors:...``
                        when the model was passed as an object: a hash of its tensors)
``u``                   the moment (NULL for models without one); ``mode`` the options that change the
                        output (JSON); ``model_key`` = model, weights, u and mode in one string
``output``              output path relative to OUT; ``output_bytes`` its size; ``tmp`` the temp file
                        while ``status = 'writing'``
``faces``               faces restored (whole-image mode: 1 per image; videos: faces over all frames)
``error_type``,         the typed error of a failed item (class name and one-line message)
``error``
``notes``               notices about a done item (e.g. a video written without its audio)
``started``,            Unix times of the attempt (from reading the input to the commit);
``finished``            ``seconds`` its wall time
``attempts``            how many times the item was attempted; ``run_id`` the run that wrote the row
======================  ============================================================================

Table ``runs`` holds one row per run (options, engine, counts, start and end time); table ``meta`` the schema
version. The resume rules (see :mod:`facedeblur.batch`) read ``status``, ``input_sha1`` and ``model_key``.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import InputError

__all__ = ["Manifest", "Row", "MANIFEST_NAME", "FAILURES_NAME", "LOCK_NAME", "SCHEMA_VERSION"]

MANIFEST_NAME = "facedeblur-manifest.sqlite"
FAILURES_NAME = "facedeblur-failures.tsv"
LOCK_NAME = ".facedeblur-batch.lock"
SCHEMA_VERSION = 1

_COLUMNS = ("rel", "status", "src", "kind", "input_sha1", "input_bytes", "input_mtime_ns", "width", "height", "frames",
            "model", "weights_sha256", "u", "mode", "model_key", "output", "output_bytes", "tmp", "faces",
            "error_type", "error", "notes", "started", "finished", "seconds", "attempts", "run_id")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    rel TEXT PRIMARY KEY, status TEXT NOT NULL CHECK (status IN ('writing', 'done', 'failed')),
    src TEXT, kind TEXT, input_sha1 TEXT, input_bytes INTEGER, input_mtime_ns INTEGER,
    width INTEGER, height INTEGER, frames INTEGER,
    model TEXT, weights_sha256 TEXT, u REAL, mode TEXT, model_key TEXT,
    output TEXT, output_bytes INTEGER, tmp TEXT, faces INTEGER,
    error_type TEXT, error TEXT, notes TEXT, started REAL, finished REAL, seconds REAL,
    attempts INTEGER NOT NULL DEFAULT 0, run_id INTEGER);
CREATE INDEX IF NOT EXISTS items_status ON items (status);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, finished REAL, engine TEXT, host TEXT,
    pid INTEGER, options TEXT, items INTEGER, done INTEGER, skipped INTEGER, recovered INTEGER, failed INTEGER,
    faces INTEGER, seconds REAL, interrupted INTEGER);
"""


@dataclass(frozen=True)
class Row:
    """One ``items`` row (see the module doc for the columns)."""

    rel: str
    status: str
    src: str | None = None
    kind: str | None = None
    input_sha1: str | None = None
    input_bytes: int | None = None
    input_mtime_ns: int | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    model: str | None = None
    weights_sha256: str | None = None
    u: float | None = None
    mode: str | None = None
    model_key: str | None = None
    output: str | None = None
    output_bytes: int | None = None
    tmp: str | None = None
    faces: int | None = None
    error_type: str | None = None
    error: str | None = None
    notes: str | None = None
    started: float | None = None
    finished: float | None = None
    seconds: float | None = None
    attempts: int = 0
    run_id: int | None = None


class Manifest:
    """The SQLite manifest of one OUT folder. Thread-safe (one connection, one lock); every method commits."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            version = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if version is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(version[0]) != SCHEMA_VERSION:
                raise InputError(f"{str(self.path)!r} is a facedeblur manifest of schema {version[0]}, this "
                                 f"facedeblur writes schema {SCHEMA_VERSION}; use a new output folder")
        except sqlite3.DatabaseError as e:
            raise InputError(f"{str(self.path)!r} is not a usable facedeblur manifest ({e}); move it away or choose "
                             "another output folder") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ reading

    def rows(self) -> dict[str, Row]:
        """Every row, by ``rel`` (a snapshot)."""
        with self._lock:
            cur = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM items")
            return {r[0]: Row(*r) for r in cur.fetchall()}

    def get(self, rel: str) -> Row | None:
        with self._lock:
            r = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM items WHERE rel = ?", (rel,)).fetchone()
        return Row(*r) if r else None

    def runs(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute("SELECT * FROM runs ORDER BY run_id")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    def iter_status(self, status: str) -> Iterator[Row]:
        for row in self.rows().values():
            if row.status == status:
                yield row

    # ------------------------------------------------------------------------------------------ writing

    def _upsert(self, rel: str, fields: Mapping[str, Any], bump: bool = False) -> None:
        cols = [c for c in fields if c != "rel"]
        bad = set(cols) - set(_COLUMNS)
        if bad:
            raise KeyError(f"unknown manifest columns {sorted(bad)}")
        values = [fields[c] for c in cols]
        sets = ", ".join(f"{c} = excluded.{c}" for c in cols)
        attempts = ", attempts = items.attempts + 1" if bump else ""
        sql = (f"INSERT INTO items (rel, {', '.join(cols)}{', attempts' if bump else ''}) "
               f"VALUES (?, {', '.join('?' for _ in cols)}{', 1' if bump else ''}) "
               f"ON CONFLICT(rel) DO UPDATE SET {sets}{attempts}")
        with self._lock:
            self._db.execute(sql, [rel, *values])

    def mark_writing(self, rel: str, fields: Mapping[str, Any], tmp: str) -> None:
        """Phase 1 of an output's commit: its temp file is complete. Records everything about the attempt."""
        clean = {**{c: None for c in ("error_type", "error", "output_bytes")}, **fields, "status": "writing",
                 "tmp": tmp}
        self._upsert(rel, clean, bump=True)

    def mark_done(self, rel: str, output_bytes: int, finished: float | None = None) -> None:
        """Phase 2: the temp file has been moved onto the output."""
        with self._lock:
            self._db.execute("UPDATE items SET status = 'done', tmp = NULL, output_bytes = ?, finished = ? "
                             "WHERE rel = ?", (int(output_bytes), finished or time.time(), rel))

    def mark_failed(self, rel: str, fields: Mapping[str, Any], error_type: str, error: str) -> None:
        """A failed attempt (no output: a stale output of an earlier model has been removed by the caller)."""
        clean = {**fields, "output_bytes": None, "tmp": None, "faces": None, "notes": None, "status": "failed",
                 "error_type": error_type, "error": error}
        self._upsert(rel, clean, bump=True)

    def update_stat(self, rel: str, mtime_ns: int) -> None:
        """An input that hashed to its recorded SHA-1 but has a new mtime: record the mtime (next run skips it
        without hashing)."""
        with self._lock:
            self._db.execute("UPDATE items SET input_mtime_ns = ? WHERE rel = ?", (int(mtime_ns), rel))

    def set_pending(self, rel: str) -> None:
        """Forget an interrupted write whose temp file is gone (the item is redone)."""
        with self._lock:
            self._db.execute("DELETE FROM items WHERE rel = ? AND status = 'writing'", (rel,))

    def begin_run(self, engine: str, options: Mapping[str, Any]) -> int:
        import socket

        with self._lock:
            cur = self._db.execute("INSERT INTO runs (started, engine, host, pid, options) VALUES (?, ?, ?, ?, ?)",
                                   (time.time(), engine, socket.gethostname(), os.getpid(),
                                    json.dumps(dict(options), sort_keys=True, default=str)))
            return int(cur.lastrowid)

    def end_run(self, run_id: int, counts: Mapping[str, Any]) -> None:
        keys = ("items", "done", "skipped", "recovered", "failed", "faces", "seconds", "interrupted")
        with self._lock:
            self._db.execute(f"UPDATE runs SET finished = ?, {', '.join(f'{k} = ?' for k in keys)} WHERE run_id = ?",
                             (time.time(), *[counts.get(k) for k in keys], run_id))
