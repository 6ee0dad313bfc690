"""Restore a whole archive: resumable batch jobs on one machine (``engine="local"``) or on a Ray cluster
(``engine="ray"``, extra ``facedeblur[ray]``). Command line: ``facedeblur restore-batch SRC... OUT``.

:func:`restore_many` restores every image and video of its sources (folders, globs, list files, files) into OUT,
mirroring each source's tree, and keeps a manifest (:mod:`facedeblur.batch.manifest`, SQLite,
``OUT/facedeblur-manifest.sqlite``) with one row per item.

Resume rules. An item's identity is its path relative to its source root plus its SHA-1; the model key is the
model name, the SHA-256 of its weights, ``u`` and the options that change the output (face mode, output format,
dtype, blend, ...). A rerun skips an item whose row is ``done`` with the same model key, whose output exists
with the recorded size, and whose input is unchanged (same size and mtime, else the same SHA-1); everything
else is done again. A changed model or ``u`` redoes everything; failed items are retried.

Atomic outputs. Every output is written to a temp file next to it (``.NAME.fdpartial.EXT``), then committed in
two phases: the manifest records ``writing``, the file is moved into place (``os.replace``), the manifest
records ``done``. A job killed at any moment leaves no partial output; the next run finishes a commit that was
interrupted between the phases (so no finished output is written twice) and removes stray temp files.

Bad items (unreadable or corrupt files, unsupported modes, images without a face, an error in the model) are
recorded as ``failed`` with their typed error and the job goes on; the result (and the command's exit code,
1) says how many failed, and ``OUT/facedeblur-failures.tsv`` lists them. See docs/batch.md.
"""
from __future__ import annotations

from typing import Any

__all__ = ["restore_many", "BatchResult", "Manifest", "Row", "JobSpec", "NoFaceFoundError", "MANIFEST_NAME",
           "FAILURES_NAME", "ENGINES"]

_WHERE = {"restore_many": "job", "BatchResult": "job", "ENGINES": "job", "Manifest": "manifest", "Row": "manifest",
          "MANIFEST_NAME": "manifest", "FAILURES_NAME": "manifest", "JobSpec": "work", "NoFaceFoundError": "work"}


def __getattr__(name: str) -> Any:
    """Import on first use, so that ``facedeblur --help`` (which imports :mod:`facedeblur.batch.cli`) stays light."""
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
