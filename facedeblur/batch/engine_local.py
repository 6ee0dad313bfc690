"""The single-machine engine: reader threads, one model, writer threads, overlapped.

Reader threads hash, decode and convert inputs and detect their faces (:meth:`Runner.load`), a bounded number
ahead of the model. The calling thread gathers a step of loaded images (``JobSpec.step_images``: 8, or
``batch_size`` if larger) and restores them together (the faces of all of them go through the model in forwards
of ``batch_size``), then hands each result to a
writer thread, which encodes it into its temp file and commits it. Decoding, detection and encoding (PIL,
OpenCV, numpy and torch release the GIL) so overlap the model's forward passes. Videos are restored in the
calling thread, one at a time, streamed by the video engine.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait, FIRST_COMPLETED
from pathlib import Path
from typing import Sequence

from ..errors import InputError
from .sources import Item
from .work import Loaded, Outcome, Runner

__all__ = ["run_local", "default_io_workers"]


def default_io_workers() -> int:
    """Reader (and writer) threads: the usable CPUs, at least 2, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 2
    return max(2, min(8, n))


def run_local(runner: Runner, todo: Sequence[tuple[Item, str | None]], out: Path, rec: "object",
              io_workers: int | None = None) -> None:
    """Run ``todo`` ((item, recorded SHA-1 or None) pairs) through ``runner``, reporting to ``rec`` (a
    :class:`~facedeblur.batch.job.Recorder`). Ctrl-C stops reading, lets the writes in flight commit, and
    re-raises."""
    n = default_io_workers() if io_workers is None else io_workers
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"io_workers must be a positive integer, not {io_workers!r}")
    k = runner.spec.step_images()
    prefetch = 2 * k + n
    max_writes = 2 * k + n
    readers = ThreadPoolExecutor(n, thread_name_prefix="facedeblur-read")
    writers = ThreadPoolExecutor(n, thread_name_prefix="facedeblur-write")
    reads: deque[Future[Loaded]] = deque()
    writes: set[Future[None]] = set()
    pending = iter(todo)

    def fill() -> None:
        while len(reads) < prefetch:
            nxt = next(pending, None)
            if nxt is None:
                return
            reads.append(readers.submit(runner.load, nxt[0], nxt[1]))

    def write(oc: Outcome) -> None:
        oc = runner.write(oc, out)
        if oc.error is not None:
            rec.fail(oc, oc.error)  # type: ignore[attr-defined]
        else:
            rec.written(oc)  # type: ignore[attr-defined]

    def reap(block: bool) -> None:
        nonlocal writes
        if not writes:
            return
        if block:
            done, writes = wait(writes, return_when=FIRST_COMPLETED)
        else:
            done = {f for f in writes if f.done()}
            writes -= done
        for f in done:
            f.result()  # a recorder error is a bug: let it surface

    def flush(batch: list[Loaded]) -> None:
        for oc in runner.restore(batch):
            if oc.error is not None:
                rec.fail(oc, oc.error)  # type: ignore[attr-defined]
            else:
                writes.add(writers.submit(write, oc))
        batch.clear()
        while len(writes) > max_writes:
            reap(block=True)

    batch: list[Loaded] = []
    try:
        fill()
        while reads:
            ld = reads.popleft().result()
            fill()
            if ld.skip:
                rec.skip(ld)  # type: ignore[attr-defined]
            elif ld.error is not None:
                rec.fail(ld, ld.error)  # type: ignore[attr-defined]
            elif ld.item.kind == "video":
                oc = runner.video(ld, out)
                if oc.error is not None:
                    rec.fail(oc, oc.error)  # type: ignore[attr-defined]
                else:
                    rec.written(oc)  # type: ignore[attr-defined]
            else:
                batch.append(ld)
                if len(batch) >= k:
                    flush(batch)
            reap(block=False)
        if batch:
            flush(batch)
        while writes:
            reap(block=True)
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        writers.shutdown(wait=True)
