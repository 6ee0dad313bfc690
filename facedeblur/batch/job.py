"""A batch job from start to summary: checks, lock, manifest recovery, the resume plan, an engine, the summary.

Both engines (:mod:`facedeblur.batch.engine_local`, :mod:`facedeblur.batch.engine_ray`) get the same plan (the
items still to do) and report every item to one :class:`Recorder`, which writes the manifest, moves outputs into
place (:func:`facedeblur.batch.work.commit`) and drives the progress bar.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import CapabilityError, InputError
from .manifest import FAILURES_NAME, LOCK_NAME, MANIFEST_NAME, Manifest, Row
from .sources import PARTIAL_TAG, Item, check_layout, collect
from .work import JobSpec, Loaded, Outcome, Runner, commit, describe, error_fields, recover

__all__ = ["restore_many", "BatchResult", "Recorder", "ENGINES"]

ENGINES = ("local", "ray")


@dataclass
class BatchResult:
    """What a job did. ``items``: the job's items; ``restored``: outputs written by this run; ``skipped``: items
    already done (same input, same model key; ``recovered`` of them were finished from an interrupted commit);
    ``failed``: items that failed in this run (``failures``: (rel, error type, message)); ``faces``: faces
    restored by this run."""

    out: Path
    manifest: Path
    failures_file: Path
    engine: str
    items: int = 0
    restored: int = 0
    skipped: int = 0
    recovered: int = 0
    failed: int = 0
    faces: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def done(self) -> int:
        """Items whose output is in place now (restored by this run or before)."""
        return self.restored + self.skipped

    @property
    def exit_code(self) -> int:
        """0 when every item is done, 1 when some failed."""
        return 1 if self.failed else 0

    def summary(self) -> str:
        """The one-line summary the command prints."""
        rate = f"{self.faces / self.seconds:.2f} faces/s, {self.restored / self.seconds:.2f} items/s" \
            if self.seconds > 0 else "-"
        rec = f", {self.recovered} recovered from an interrupted run" if self.recovered else ""
        fail = (f"{self.failed} failed (list: {self.failures_file})" if self.failed else "0 failed")
        return (f"restore-batch: {self.items} items, {self.done} done ({self.restored} restored now, {self.skipped} "
                f"already done{rec}), {fail}; {self.faces} faces in {self.seconds:.1f} s ({rate}); "
                f"manifest {self.manifest}")


class _Lock:
    """An exclusive lock on OUT (``OUT/.facedeblur-batch.lock``, flock: released by the OS when the process dies)."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_NAME
        self._f: Any = None

    def __enter__(self) -> "_Lock":
        self._f = open(self.path, "a+")
        try:
            if os.name == "nt":  # pragma: no cover - Windows
                import msvcrt

                msvcrt.locking(self._f.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._f.seek(0)
            holder = self._f.read().strip() or "?"
            self._f.close()
            raise InputError(f"another restore-batch job (pid {holder}) is writing to {str(self.path.parent)!r}; wait "
                             "for it to finish, or choose another output folder") from None
        self._f.seek(0)
        self._f.truncate()
        self._f.write(str(os.getpid()))
        self._f.flush()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()


def _prepare_out(out: Path) -> None:
    """Create OUT and prove it writable (a probe file), before any work."""
    if out.exists() and not out.is_dir():
        raise InputError(f"output {str(out)!r} is a file; pass a folder (restore-batch mirrors the sources into it)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".facedeblur-probe.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"output folder {str(out)!r} is not writable ({e.strerror or e}); choose a folder you can "
                         "write to") from None


class Recorder:
    """Receives every item's result from an engine: skips, failures and outputs (committed in two phases); keeps
    the counts and the progress bar. Thread-safe."""

    def __init__(self, manifest: Manifest, out: Path, runner_fields: Any, known: dict[str, Row], total: int,
                 progress: bool, desc: str, run_id: int) -> None:
        from tqdm.auto import tqdm

        self.manifest, self.out, self.fields, self.known, self.run_id = manifest, out, runner_fields, known, run_id
        self.restored = self.skipped = self.failed = self.faces = 0
        self.failures: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()
        self._last = 0.0
        self.bar = tqdm(total=total, disable=not progress, desc=desc, unit="img", dynamic_ncols=True, leave=False)

    def _tick(self) -> None:
        self.bar.update(1)
        now = time.perf_counter()
        if now - self._last > 0.5 or self.bar.n == self.bar.total:
            self._last = now
            dt = max(now - self._t0, 1e-9)
            self.bar.set_postfix_str(f"faces={self.faces}, {self.faces / dt:.2f} faces/s, failed={self.failed}",
                                     refresh=False)

    def skip(self, ld: Loaded) -> None:
        """An input that hashed to its recorded SHA-1: already done (its new mtime is recorded)."""
        if ld.mtime_ns is not None:
            self.manifest.update_stat(ld.item.rel, ld.mtime_ns)
        with self._lock:
            self.skipped += 1
            self._tick()

    def fail(self, what: Loaded | Outcome, error: BaseException) -> None:
        """A failed item: recorded with its typed error; a stale output of an earlier run is removed (OUT holds
        only outputs of done rows)."""
        ld = what.loaded if isinstance(what, Outcome) else what
        etype, msg = error_fields(error)
        row = self.known.get(ld.item.rel)
        if row is not None and row.output:
            try:
                (self.out / row.output).unlink(missing_ok=True)
            except OSError:
                pass
        tmp = what.tmp if isinstance(what, Outcome) else None
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        self.manifest.mark_failed(ld.item.rel, self.fields(what, self.run_id), etype, msg)
        with self._lock:
            self.failed += 1
            self.failures.append((ld.item.rel, etype, msg))
            self._tick()

    def written(self, oc: Outcome) -> None:
        """An output complete in its temp file: commit it (writing -> os.replace -> done)."""
        assert oc.tmp is not None
        try:
            commit(self.manifest, self.out, oc.loaded.item.rel, self.fields(oc, self.run_id), Path(oc.tmp))
        except OSError as e:
            self.fail(oc, e)
            return
        row = self.known.get(oc.loaded.item.rel)
        if row is not None and row.output and row.output != oc.loaded.item.out_rel:  # e.g. another --ext
            try:
                (self.out / row.output).unlink(missing_ok=True)
            except OSError:
                pass
        with self._lock:
            self.restored += 1
            self.faces += oc.faces
            self._tick()

    def close(self) -> float:
        self.bar.close()
        return time.perf_counter() - self._t0


def _plan(items: Sequence[Item], rows: dict[str, Row], key: str, out: Path, overwrite: bool,
          rehash: bool) -> tuple[list[tuple[Item, str | None]], int]:
    """The resume rules. An item is already done when its row is ``done`` with the same model key and output
    path, the output exists with the recorded size, and the input is unchanged: same size and mtime (or, with
    ``rehash`` or when they differ, the same SHA-1 -- checked by the engine, which gets the recorded SHA-1 as the
    item's ``expect_sha1``). Everything else is to do. Returns (to do, already done) and raises before any work
    when an output path holds a file the manifest does not know (unless ``overwrite``)."""
    todo: list[tuple[Item, str | None]] = []
    done = 0
    unknown: list[Path] = []
    for it in items:
        row = rows.get(it.rel)
        dst = out / it.out_rel
        if row is not None and row.status == "done" and row.model_key == key and row.output == it.out_rel:
            try:
                ok = dst.stat().st_size == row.output_bytes
            except OSError:
                ok = False
            if ok:
                try:
                    st = it.src.stat()
                    same = st.st_size == row.input_bytes and st.st_mtime_ns == row.input_mtime_ns
                except OSError:
                    same = False
                if same and not rehash:
                    done += 1
                else:
                    todo.append((it, row.input_sha1))
                continue
        if (row is None or row.output != it.out_rel) and (dst.exists() or dst.is_symlink()):
            unknown.append(dst)
        todo.append((it, None))
    if unknown and not overwrite:
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        raise InputError(f"output {str(unknown[0])!r}{more} exists but is not in this folder's manifest; pass "
                         "--overwrite (overwrite=True) to replace such files, or choose another output folder")
    return todo, done


def _write_failures(path: Path, failures: list[tuple[str, str, str]]) -> None:
    from ..restore.convert import write_bytes_atomic

    if not failures:
        path.unlink(missing_ok=True)
        return
    lines = ["rel\terror_type\terror"] + [
        "\t".join(" ".join(str(v).split()) for v in row) for row in sorted(failures)]
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))


def _clean_partials(out: Path, items: Sequence[Item]) -> None:
    """Remove temp files (``.NAME.fdpartial...``) that killed runs left in the output folders of ``items``."""
    for d in sorted({(out / it.out_rel).parent for it in items}):
        if d.is_dir():
            for p in d.glob(f".*{PARTIAL_TAG}*"):
                try:
                    p.unlink()
                except OSError:
                    pass


def restore_many(sources: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike,
                 model: Any = "cfmd-gan", *, u: float | None = None, faces: bool | None = None,
                 device: str = "auto", dtype: str | None = None, weights: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, batch_size: int | None = None, ext: str = "png",
                 only_center_face: bool = False, blend: float = 1.0, color_match: bool = False, smoothing: int = 3,
                 codec: str | None = None, no_face: str = "fail", overwrite: bool = False, rehash: bool = False,
                 engine: str = "local", io_workers: int | None = None, ray_address: str | None = None,
                 actors: int | None = None, cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0,
                 progress: bool = True) -> BatchResult:
    """Restore every image and video of ``sources`` into ``out``, resumably; see :mod:`facedeblur.batch`.

    ``sources``: folders (recursive), globs, list files (``.txt``/``.lst``/``.list``) and image/video files; ``out``
    mirrors each source's tree. ``model``: a zoo name (or ``hf-hub:`` / ``local-dir:``), or a ready
    :class:`~facedeblur.Deblurrer` (local engine only; ``device``, ``dtype``, ``weights`` and ``cache_dir`` are then
    the object's). ``u``, ``faces`` (None = auto, True, False), ``device``,
    ``dtype``, ``weights``, ``cache_dir``, ``batch_size`` (faces per forward pass; None: 1 on a CPU, 8 on a GPU;
    a model step restores the faces of at least 8 images), ``ext`` (output
    format), ``only_center_face``, ``blend``, ``color_match``, ``smoothing``, ``codec``: as ``facedeblur
    restore``. ``no_face``: ``"fail"`` (an image without a face is a failed item) or ``"keep"`` (written
    unchanged). ``overwrite``: replace output files the manifest does not know. ``rehash``: hash every input
    again (default: an input with its recorded size and mtime is taken as unchanged). ``engine``: ``"local"``
    (reader/writer threads around one model; ``io_workers`` threads each) or ``"ray"`` (Ray Data; ``ray_address``,
    ``actors``, ``cpus_per_actor``, ``gpus_per_actor``).

    Returns a :class:`BatchResult`; failed items do not raise (they are in the manifest and the result). Raises
    :class:`~facedeblur.errors.InputError` before any work for bad sources, an unwritable OUT, OUT inside a source,
    outputs that would overwrite inputs, or files in OUT the manifest does not know.
    """
    if engine not in ENGINES:
        raise InputError(f"engine={engine!r}: use 'local' (this machine) or 'ray' (a Ray cluster)")
    given = model if not isinstance(model, (str, os.PathLike)) else None
    if given is not None and engine == "ray":
        raise CapabilityError("the Ray engine loads the model in each actor by name: pass the model name (zoo name, "
                              "hf-hub:ORG/REPO@REV or local-dir:PATH), not a Deblurrer object")
    if given is not None and not hasattr(given, "card"):
        raise InputError(f"model must be a model name or a facedeblur Deblurrer, not {type(given).__name__}")
    ext_s = "." + str(ext).lstrip(".").lower()
    if given is not None:  # the object's dtype is what changes its outputs
        dtype = str(getattr(given, "dtype", "float32")).replace("torch.", "")
    spec = JobSpec(model=str(model) if given is None else str(given.card.name), u=u, faces=faces, device=str(device),
                   dtype=dtype, weights=None if weights is None else os.fspath(weights),
                   cache_dir=None if cache_dir is None else os.fspath(cache_dir), batch_size=batch_size, ext=ext_s,
                   only_center_face=only_center_face, blend=blend, color_match=color_match, smoothing=smoothing,
                   codec=codec, no_face=no_face).check()
    out_p = Path(os.path.abspath(os.fspath(out)))
    items, srcs = collect(sources if not isinstance(sources, (str, os.PathLike)) else [sources], spec.ext)
    check_layout(items, srcs, out_p)
    _prepare_out(out_p)
    with _Lock(out_p), Manifest(out_p / MANIFEST_NAME) as manifest:
        recovered = recover(manifest, out_p)
        runner = Runner(spec, given) if engine == "local" else None
        info = runner.info if runner is not None else describe(spec)
        rows = manifest.rows()
        todo, already = _plan(items, rows, info.key, out_p, overwrite, rehash)
        result = BatchResult(out_p, out_p / MANIFEST_NAME, out_p / FAILURES_NAME, engine, items=len(items),
                             skipped=already, recovered=recovered)
        run_id = manifest.begin_run(engine, {**spec.to_dict(), "sources": [x.text for x in srcs]})
        rec = Recorder(manifest, out_p, info.fields, rows, len(todo), progress, f"restore-batch {info.name}", run_id)
        interrupted = False
        try:
            with warnings.catch_warnings():
                from ..faces import AudioNotCopiedWarning, NoFaceWarning

                # per-item notices go to the manifest (failed items, the notes column), not one line each
                warnings.simplefilter("ignore", NoFaceWarning)
                warnings.simplefilter("ignore", AudioNotCopiedWarning)
                if engine == "local":
                    from .engine_local import run_local

                    run_local(runner, todo, out_p, rec, io_workers=io_workers)
                else:
                    from .engine_ray import run_ray

                    run_ray(spec, info, todo, out_p, rec, address=ray_address, actors=actors,
                            cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor)
        except BaseException:
            interrupted = True
            raise
        finally:
            seconds = rec.close()
            result.restored, result.failed, result.faces = rec.restored, rec.failed, rec.faces
            result.skipped += rec.skipped
            result.seconds, result.failures = seconds, sorted(rec.failures)
            manifest.end_run(run_id, {"items": result.items, "done": result.restored, "skipped": result.skipped,
                                      "recovered": result.recovered, "failed": result.failed, "faces": result.faces,
                                      "seconds": round(seconds, 3), "interrupted": int(interrupted)})
            if not interrupted:
                _write_failures(result.failures_file, result.failures)
                _clean_partials(out_p, items)
    return result
