"""The Ray engine (``--engine ray``, extra ``facedeblur[ray]``): the same job over Ray Data.

The driver (the process that runs ``restore-batch``) plans the job exactly as the local engine does, then makes a
dataset of the items to do (``ray.data.from_items``) and maps it with ``map_batches`` over a pool of model actors
(:class:`RestoreActor`, ``ActorPoolStrategy(size=actors)``, ``num_cpus`` / ``num_gpus`` per actor). Each actor
loads the model once by name, checks that its model key is the driver's, and for each batch of items (a step:
``JobSpec.step_images``) hashes, decodes and detects (a few threads), restores all faces of the batch through the model, and writes
each output into its temp file next to the output (``.NAME.fdpartial.EXT``). It returns one small row per item.
The driver streams those rows (``iter_batches``) and does what the local engine's writers do: the two-phase
commit (manifest ``writing`` -> ``os.replace`` -> ``done``) and the failure records. So the manifest has one
writer, and the resume rules and the kill behaviour are the local engine's: outputs appear only through the
driver's commits; a killed driver leaves temp files (cleaned up by the next run) and committed rows.

Inputs and OUT must be on storage that every node sees at the same path (NFS, a cluster file system); see
docs/batch.md for running on a multi-node cluster.
"""
from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import CapabilityError, InputError
from .sources import Item
from .work import JobSpec, Loaded, ModelInfo, Outcome, RemoteItemError, Runner, error_fields

__all__ = ["run_ray", "RestoreActor", "process_items", "EngineUnavailableError", "import_ray"]

#: dataset blocks at most (each block's results reach the driver when its task ends)
_MAX_BLOCKS = 10_000
_INT_COLS = ("nbytes", "mtime_ns", "width", "height", "faces", "frames")


class EngineUnavailableError(CapabilityError):
    """The Ray engine was asked for but Ray is not installed (``pip install 'facedeblur[ray]'``)."""


def import_ray() -> Any:
    """``ray`` (with ``ray.data``), or :class:`EngineUnavailableError` naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise EngineUnavailableError(f"--engine ray needs Ray Data, which is not installed ({e}); install the extra: "
                                     "pip install 'facedeblur[ray]'") from None
    return ray


def process_items(runner: Runner, work: Sequence[tuple[Item, str | None]], out: Path,
                  pool: ThreadPoolExecutor) -> list[dict[str, Any]]:
    """One batch in an actor: load (threads), restore the images together, write their temp files (threads),
    restore the videos one by one. Returns one row per item (``status``: ``written``, ``skipped`` or
    ``failed``), never raises for an item's error."""
    loaded = list(pool.map(lambda w: runner.load(w[0], w[1]), work))
    results: list[Outcome | Loaded] = []
    images = [ld for ld in loaded if not ld.skip and ld.error is None and ld.item.kind != "video"]
    restored = {id(oc.loaded): oc for oc in runner.restore(images)} if images else {}
    writes = {id(ld): pool.submit(runner.write, restored[id(ld)], out) for ld in images
              if restored[id(ld)].error is None}
    for ld in loaded:
        if ld.skip or ld.error is not None:
            results.append(ld)
        elif ld.item.kind == "video":
            results.append(runner.video(ld, out))
        elif id(ld) in writes:
            results.append(writes[id(ld)].result())
        else:
            results.append(restored[id(ld)])
    return [_row(r) for r in results]


def _row(r: Outcome | Loaded) -> dict[str, Any]:
    ld = r.loaded if isinstance(r, Outcome) else r
    err = r.error if r.error is not None else (ld.error if isinstance(r, Outcome) else None)
    if ld.skip:
        status = "skipped"
    elif err is not None:
        status = "failed"
    else:
        status = "written"
    etype, msg = error_fields(err) if err is not None else ("", "")
    oc = r if isinstance(r, Outcome) else None
    return {"rel": ld.item.rel, "status": status, "sha1": ld.sha1 or "", "nbytes": ld.nbytes,
            "mtime_ns": ld.mtime_ns, "width": ld.width, "height": ld.height, "faces": oc.faces if oc else None,
            "frames": oc.frames if oc else None, "tmp": str(oc.tmp) if oc and oc.tmp else "",
            "error_type": etype, "error": msg, "notes": (oc.notes or "") if oc else "", "started": ld.started}


def _columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Rows -> a numpy batch (strings as str arrays, missing ints as -1)."""
    cols: dict[str, np.ndarray] = {}
    for k in rows[0]:
        vals = [r[k] for r in rows]
        if k in _INT_COLS:
            cols[k] = np.array([-1 if v is None else int(v) for v in vals], dtype=np.int64)
        elif k == "started":
            cols[k] = np.array(vals, dtype=np.float64)
        else:
            cols[k] = np.array([str(v) for v in vals], dtype=object)
    return cols


class RestoreActor:
    """A Ray Data model actor: builds a :class:`Runner` from the job's spec once, then restores batches of items."""

    def __init__(self, spec: dict[str, Any], key: str, out: str, threads: int, device: str) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        js = JobSpec(**{**spec, "device": device})
        self.runner = Runner(js)
        if self.runner.key != key:
            import socket

            raise CapabilityError(f"the Ray actor on {socket.gethostname()} loaded {self.runner.info.name} with "
                                  f"weights {self.runner.info.weights_sha256}, but the job expects {key}; install the "
                                  "same facedeblur and weights on every node")
        self.out = Path(out)
        self.pool = ThreadPoolExecutor(max(2, threads), thread_name_prefix="facedeblur-actor")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import warnings

        from ..faces import AudioNotCopiedWarning, NoFaceWarning

        work = [(Item(str(r), Path(str(s)), str(k), str(o)), str(e) or None)
                for r, s, k, o, e in zip(batch["rel"], batch["src"], batch["kind"], batch["out_rel"],
                                         batch["expect_sha1"])]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoFaceWarning)
            warnings.simplefilter("ignore", AudioNotCopiedWarning)
            rows = process_items(self.runner, work, self.out, self.pool)
        return _columns(rows)


def _bound_actor(spec: dict[str, Any], key: str, out: str, threads: int, device: str) -> type:
    """A :class:`RestoreActor` subclass with the job's arguments built in (shipped with the class, so Ray keeps no
    constructor arguments in the object store)."""

    class BoundRestoreActor(RestoreActor):
        def __init__(self) -> None:
            super().__init__(spec, key, out, threads, device)

    return BoundRestoreActor


def _from_row(row: dict[str, Any], items: dict[str, Item]) -> Outcome:
    def num(v: Any) -> int | None:
        v = int(v)
        return None if v < 0 else v

    ld = Loaded(items[str(row["rel"])], float(row["started"]), sha1=str(row["sha1"]) or None,
                nbytes=num(row["nbytes"]), mtime_ns=num(row["mtime_ns"]), width=num(row["width"]),
                height=num(row["height"]))
    ld.skip = row["status"] == "skipped"
    oc = Outcome(ld, faces=num(row["faces"]) or 0, frames=num(row["frames"]),
                 tmp=Path(str(row["tmp"])) if str(row["tmp"]) else None, notes=str(row["notes"]) or None)
    if row["status"] == "failed":
        oc.error = RemoteItemError(str(row["error_type"]), str(row["error"]))
    return oc


def run_ray(spec: JobSpec, info: ModelInfo, todo: Sequence[tuple[Item, str | None]], out: Path, rec: Any, *,
            address: str | None = None, actors: int | None = None, cpus_per_actor: float = 1.0,
            gpus_per_actor: float = 0.0) -> None:
    """Run ``todo`` on Ray Data, reporting to ``rec``. Connects to ``address`` (``"auto"``, ``"ray://..."``,
    ``HOST:PORT``), to the cluster this process is already connected to, or starts a local one (stopped at the
    end). ``actors``: model actors (default: the cluster's GPUs / ``gpus_per_actor`` when GPUs are asked for, else
    its CPUs / ``cpus_per_actor``)."""
    ray = import_ray()
    for v, what in ((cpus_per_actor, "cpus_per_actor"), (gpus_per_actor, "gpus_per_actor")):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or v < 0:
            raise InputError(f"{what}={v!r}: must be a number >= 0")
    if cpus_per_actor <= 0 and gpus_per_actor <= 0:
        raise InputError("an actor needs CPUs or GPUs: set cpus_per_actor or gpus_per_actor above 0")
    if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int) or actors < 1):
        raise InputError(f"actors={actors!r}: must be a positive integer")
    if not todo:
        return
    for name in ("ray", "ray.data"):  # the job's own progress bar and summary line are the output
        logging.getLogger(name).setLevel(logging.ERROR)
    started = False
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR, include_dashboard=False)
        started = True
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        res = ray.cluster_resources()
        if actors is None:
            if gpus_per_actor > 0:
                actors = max(1, int(res.get("GPU", 0) // gpus_per_actor))
            else:
                actors = max(1, int(res.get("CPU", 1) // max(cpus_per_actor, 1e-9)))
        device = "cuda" if gpus_per_actor > 0 else ("cpu" if spec.device == "auto" else spec.device)
        k = spec.step_images()
        rows = [{"rel": it.rel, "src": str(it.src), "kind": it.kind, "out_rel": it.out_rel,
                 "expect_sha1": expect or ""} for it, expect in todo]
        per_block = k * max(1, math.ceil(len(rows) / (k * _MAX_BLOCKS)))
        blocks = max(1, math.ceil(len(rows) / per_block))
        actors = min(int(actors), blocks)  # more actors than blocks would only load the model for nothing
        ds = ray.data.from_items(rows, override_num_blocks=blocks)
        actor = _bound_actor(spec.to_dict(), info.key, str(out), max(1, int(cpus_per_actor)), device)
        ds = ds.map_batches(actor, batch_size=k, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=int(actors)),
                            num_cpus=float(cpus_per_actor), num_gpus=float(gpus_per_actor))
        items = {it.rel: it for it, _ in todo}
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            n = len(batch["rel"])
            for i in range(n):
                oc = _from_row({c: batch[c][i] for c in batch}, items)
                if oc.loaded.skip:
                    rec.skip(oc.loaded)
                elif oc.error is not None:
                    rec.fail(oc, oc.error)
                else:
                    rec.written(oc)
    finally:
        if started:
            ray.shutdown()
