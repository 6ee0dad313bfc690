"""The quality benchmark runner: every method on every manifest sample, per-sample results in resumable JSONL.

Layout of an output folder ``OUT``:

* ``manifest.json`` -- the samples (see :mod:`facedeblur.benchmark.data`); a run into an ``OUT`` that holds
  another manifest is refused.
* ``run.json`` -- the metric options of the run (crop border, ...); a rerun with other options is refused.
* ``per_sample/<method key>.jsonl`` -- one line per (method, sample), appended and flushed as it is computed.
  The key is the method name plus the sha256 of its weights (models) or of its parameters (baselines), so a
  killed run continues where it stopped and new weights never mix with old results.
  ``per_sample/_reference.jsonl`` holds what is measured once per sample on the ground truth (face box,
  landmarks, identity embedding).
* the report (``results.csv``, ``results.json``, ``report.md``, ``plots/*.svg``), rebuilt from the JSONL files
  by :mod:`facedeblur.benchmark.report`.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import DataError, FaceDeblurError, InputError, WeightsNotAvailableError
from ..metrics._common import MetricUnavailable, to_uint8_rgb
from ..metrics.fidelity import psnr, ssim
from .common import read_jsonl, slug
from .data import ManifestMismatchError, check_manifest, load_sample, read_manifest, write_manifest

__all__ = ["Method", "QualityOptions", "FaceMetrics", "baseline_methods", "model_methods", "as_methods",
           "callable_method", "run_quality", "read_jsonl", "resolve_models", "parse_weights", "state_sha256"]

RestoreFn = Callable[[np.ndarray, "np.ndarray | None"], "tuple[np.ndarray, dict[str, Any]]"]
MomentsFn = Callable[[np.ndarray, Sequence[float]], "list[np.ndarray]"]


@dataclass
class Method:
    """A benchmark row: a baseline or a model, ready (``status == "ok"``) or not (with the ``reason``)."""

    name: str
    kind: str  # "baseline" | "model"
    key: str  # resume key: name@sha of the weights or parameters
    description: str = ""
    status: str = "ok"  # "ok" | "no weights" | "error"
    reason: str = ""
    continuous: bool = False
    needs_kernel: bool = False
    weights: str = ""
    weights_sha256: str | None = None
    restore: RestoreFn | None = field(default=None, repr=False)
    moments: MomentsFn | None = field(default=None, repr=False)

    def meta(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "key": self.key, "description": self.description,
                "status": self.status, "reason": self.reason, "continuous": self.continuous,
                "needs_kernel": self.needs_kernel, "weights": self.weights, "weights_sha256": self.weights_sha256}


def baseline_methods(names: str | list[str] | None = "all") -> list[Method]:
    """The classical baselines of :mod:`facedeblur.benchmark.baselines` as methods."""
    from .baselines import get_baselines

    out = []
    for b in get_baselines(names):
        out.append(Method(b.name, "baseline", b.key, b.description, needs_kernel=b.needs_kernel,
                          restore=b.__call__))
    return out


def callable_method(name: str, fn: Callable[[np.ndarray], np.ndarray], key: str | None = None,
                    moments: MomentsFn | None = None, description: str = "") -> Method:
    """Any ``fn(blurry uint8 HxWx3) -> uint8 HxWx3`` as a method (``moments`` for the Table 4 protocol)."""
    return Method(name, "model", key or name, description, continuous=moments is not None,
                  restore=lambda b, k: (fn(b), {}), moments=moments)


def state_sha256(module: Any) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes, values): identifies the weights in use."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def resolve_models(spec: str | Sequence[str] | None) -> list[str]:
    """``"all"`` / None -> every zoo variant (``facedeblur.list_models()``); ``"none"`` -> []; else the names."""
    from ..models import list_models

    if spec is None or spec == "all":
        return list_models()
    if spec == "none":
        return []
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else list(spec)
    return [n for n in names if n]


def parse_weights(items: Sequence[str] | None, models: Sequence[str]) -> dict[str, str]:
    """``--weights`` values -> {model: path}: ``NAME=PATH``, or a bare ``PATH`` when exactly one model is given."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" in item and not os.path.exists(item):
            name, path = item.split("=", 1)
            out[name] = path
        elif len(models) == 1:
            out[models[0]] = item
        else:
            raise InputError(f"--weights {item!r}: with several models, write NAME=PATH (models: {', '.join(models)})")
    unknown = set(out) - set(models)
    if unknown:
        raise InputError(f"--weights names {sorted(unknown)} are not among the benchmarked models "
                         f"({', '.join(models)})")
    return out


def _model_method(d: Any, label: str, card: Any, desc: str, src: str, batch_size: int) -> Method:
    """A loaded Deblurrer ``d`` as a ready method, keyed by the sha256 of its weights."""
    sha = state_sha256(d.model)
    cont = bool(card.capabilities.continuous_u)

    def restore(b: np.ndarray, k: np.ndarray | None, d: Any = d, cont: bool = cont) -> tuple[np.ndarray, dict]:
        return (d.restore(b, u=0.5) if cont else d.restore(b)), {}

    def moments(b: np.ndarray, us: Sequence[float], d: Any = d) -> list[np.ndarray]:
        return d.restore_moments(b, us=list(us), batch_size=batch_size)

    return Method(label, "model", f"{label}@{sha[:12]}", desc, continuous=cont, weights=src, weights_sha256=sha,
                  restore=restore, moments=moments if cont else None)


def _description(card: Any) -> str:
    desc = " ".join(str(card.description).split()) or card.architecture
    return desc if len(desc) <= 160 else desc[:159] + "…"


def model_methods(models: Sequence[Any], weights: dict[str, str] | None = None, device: str = "cpu",
                  dtype: str | None = None, batch_size: int = 8) -> list[Method]:
    """Each model as a method. ``models``: model names, as :func:`facedeblur.load` takes them (loaded with their
    trained weights, or ``weights[name]``; a model that cannot be loaded gets a row saying why), or loaded
    :class:`~facedeblur.restore.Deblurrer` objects (used as they are, on their own device)."""
    import facedeblur

    from ..restore.deblurrer import Deblurrer

    weights = weights or {}
    out = []
    for name in models:
        if isinstance(name, Deblurrer):
            out.append(_model_method(name, name.card.name, name.card, _description(name.card),
                                     f"loaded Deblurrer ({name.card.source})", batch_size))
            continue
        if not isinstance(name, str):
            raise InputError(f"models must be model names or facedeblur Deblurrers, not {type(name).__name__}")
        try:
            card = facedeblur.model_info(name)
        except FaceDeblurError as exc:
            out.append(Method(name, "model", name, status="error", reason=" ".join(str(exc).split())))
            continue
        desc = _description(card)
        try:
            d = facedeblur.load(name, device=device, dtype=dtype, weights=weights.get(name))
        except WeightsNotAvailableError as exc:
            out.append(Method(card.name, "model", card.name, desc, status="no weights",
                              reason=" ".join(str(exc).split()), continuous=card.capabilities.continuous_u))
            continue
        except FaceDeblurError as exc:
            out.append(Method(card.name, "model", card.name, desc, status="error", reason=" ".join(str(exc).split()),
                              continuous=card.capabilities.continuous_u))
            continue
        label = card.name if name == card.name or not name.startswith(("local-dir:", "hf-hub:")) else name
        src = weights.get(name) or (card.weights.embedded and f"embedded {card.weights.embedded}") or \
            (card.weights.hf_hub_id and f"hf-hub {card.weights.hf_hub_id}@{card.weights.revision}") or name
        out.append(_model_method(d, label, card, desc, str(src), batch_size))
    return out


def as_methods(items: Sequence[Any], device: str = "cpu") -> list[Method]:
    """:class:`Method` rows for ``items``: methods as they are; model names and Deblurrers through
    :func:`model_methods` (names loaded on ``device``)."""
    out: list[Method] = []
    for item in items:
        out += [item] if isinstance(item, Method) else model_methods([item], device=device)
    return out


# ------------------------------------------------------------------------------------------ face metrics


class FaceMetrics:
    """Identity distance, landmark error and face detection with dlib (see ``docs/benchmark.md``).

    The face box and the 68 landmarks of the ground truth come from dlib's HOG detector + 68-point predictor on
    the sharp image (the reference, measured once per sample). For every restored image the 68-point predictor
    starts from that reference box (Chrysos et al. §5.4 protocol, GT = landmarks on the sharp image) and the
    identity embedding is taken at the same box, so every method is measured on the same face region;
    detection is measured separately (does the detector find a face in the image at all).
    """

    def __init__(self) -> None:
        from ..metrics.identity import IdentityDistance
        from ..metrics.landmarks import NME_CONVENTION, default_landmark_detector

        self.lm = default_landmark_detector()
        self.ident = IdentityDistance("dlib", mode="detect")
        self.conventions = {
            "identity": self.ident.backend.convention + "; at the face box detected on the sharp GT image",
            "landmarks": NME_CONVENTION + "; dlib 68-point predictor started from the face box detected on the "
                                          "sharp image; GT = its landmarks on the sharp image",
            "detection": "face detected = dlib HOG frontal detector (upsample 1) finds >= 1 face in the image",
        }

    def reference(self, gt: np.ndarray) -> dict[str, Any]:
        from ..metrics.landmarks import nme

        gt = to_uint8_rgb(gt, "ground truth")  # contiguous uint8: dlib takes nothing else
        faces = self.lm.detect(gt)
        if not faces:
            return {"face": False}
        box = tuple(float(v) for v in faces[0].box)
        pts = np.asarray(faces[0].landmarks, dtype=np.float64)
        emb = self.ident.backend.embed(gt, box)
        oracle = nme(np.asarray(self.lm.refine(gt, box).landmarks, dtype=np.float64), pts)
        return {"face": True, "box": [round(v, 3) for v in box], "landmarks": np.round(pts, 3).tolist(),
                "embedding": [float(v) for v in emb], "oracle_lm_err": oracle}

    def measure(self, img: np.ndarray, ref: dict[str, Any]) -> dict[str, Any]:
        from ..metrics.landmarks import nme

        img = to_uint8_rgb(img)
        out: dict[str, Any] = {"detected": bool(self.lm.detect(img))}
        if ref.get("face"):
            box = tuple(ref["box"])
            pts = np.asarray(self.lm.refine(img, box).landmarks, dtype=np.float64)
            out["lm_err"] = nme(pts, np.asarray(ref["landmarks"], dtype=np.float64))
            emb = self.ident.backend.embed(img, box)
            out["id_dist"] = float(np.linalg.norm(emb - np.asarray(ref["embedding"])))
        return out

    def detected(self, img: np.ndarray) -> bool:
        return bool(self.lm.detect(to_uint8_rgb(img)))


# ------------------------------------------------------------------------------------------ JSONL


class _Appender:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "a", encoding="utf-8")

    def write(self, rec: dict[str, Any]) -> None:
        self.f.write(json.dumps(rec, separators=(",", ":"), allow_nan=True) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


# ------------------------------------------------------------------------------------------ runner


@dataclass
class QualityOptions:
    """Metric options of a quality run (those that change numbers are pinned in ``run.json``)."""

    crop_border: int = 0
    face_metrics: bool = True
    moments: bool = True
    lpips: bool = True
    fid: bool = True
    progress: bool = True
    device: str = "cpu"

    def pinned(self) -> dict[str, Any]:
        return {"crop_border": self.crop_border, "ssim_convention": "matlab", "psnr_cap_db": 100.0}


def _feat_b64(f: np.ndarray) -> str:
    return base64.b64encode(np.asarray(f, dtype=np.float32).tobytes()).decode()


def _fidelity(out: np.ndarray, gt: np.ndarray, cb: int) -> dict[str, float]:
    return {"psnr": psnr(out, gt, crop_border=cb), "ssim": ssim(out, gt, crop_border=cb),
            "psnr_y": psnr(out, gt, crop_border=cb, test_y_channel=True),
            "ssim_y": ssim(out, gt, crop_border=cb, test_y_channel=True)}


def run_quality(manifest: dict[str, Any], methods: Sequence[Any], out_dir: str | os.PathLike,
                options: QualityOptions = QualityOptions(), *, face_metrics: Any = None,
                command: str = "", extra_header: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate every ready method on every sample of ``manifest`` into ``out_dir`` (resuming), then write
    the report; returns the report's JSON document. ``methods``: :class:`Method` rows, model names or loaded
    Deblurrers (see :func:`as_methods`). ``face_metrics`` overrides the dlib :class:`FaceMetrics`."""
    from tqdm.auto import tqdm

    methods = as_methods(methods, device=options.device)

    from .report import write_quality_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / "manifest.json"
    if mpath.exists():
        check_manifest(manifest, read_manifest(mpath), f"the manifest already in {out}")
    else:
        write_manifest(mpath, manifest)
    run_path = out / "run.json"
    pinned = options.pinned()
    if run_path.exists():
        prev = json.loads(run_path.read_text()).get("metric_options")
        if prev != pinned:
            raise DataError(f"{out} holds results computed with metric options {prev}, not {pinned}; "
                            "use another --out folder (or the same options)")
    else:
        from .plots import write_text_atomic

        write_text_atomic(run_path, json.dumps({"metric_options": pinned, "manifest": manifest["sha256"]}, indent=1))
    sha = manifest["sha256"]

    notes: dict[str, str] = {}
    fm = face_metrics
    if fm is None and options.face_metrics:
        try:
            fm = FaceMetrics()
        except MetricUnavailable as exc:
            notes["face_metrics"] = f"unavailable: {exc}"
    elif not options.face_metrics:
        fm = None
        notes["face_metrics"] = "off (--no-face-metrics)"
    lp = fid = None
    from ..metrics.perceptual import FID, LPIPS, fid_available, lpips_available

    ok, why = lpips_available()
    if ok and options.lpips:
        lp = LPIPS(device=options.device)
    notes["lpips"] = why if ok else f"unavailable: {why}"
    ok, why = fid_available()
    if ok and options.fid:
        fid = FID(device=options.device)
    notes["fid"] = why if ok else f"unavailable: {why}"

    ready = [m for m in methods if m.status == "ok"]
    per = out / "per_sample"
    per.mkdir(exist_ok=True)
    done: dict[str, set[str]] = {}
    writers: dict[str, _Appender] = {}
    for m in ready:
        path = per / f"{slug(m.key)}.jsonl"
        recs = read_jsonl(path, repair=True)
        bad = [r for r in recs if r.get("manifest") != sha]
        if bad:
            raise ManifestMismatchError(f"{path} holds results for manifest {bad[0].get('manifest', '?')[:12]}, not "
                                        f"{sha[:12]}; use another --out folder")
        done[m.key] = {r["id"] for r in recs}
        writers[m.key] = _Appender(path)
    ref_path = per / "_reference.jsonl"
    refs = {r["id"]: r for r in read_jsonl(ref_path, repair=True) if r.get("manifest") == sha}
    need_ref = fm is not None or fid is not None
    ref_writer = _Appender(ref_path) if need_ref else None

    def applicable(m: Method, s: dict[str, Any]) -> bool:
        return not (m.needs_kernel and s["set"] != "kernel")

    try:
        bar = tqdm(manifest["samples"], desc="benchmark", unit="sample", disable=not options.progress)
        for s in bar:
            todo = [m for m in ready if applicable(m, s) and s["id"] not in done[m.key]]
            has_gt = s.get("severity") is not None
            missing_ref = need_ref and has_gt and s["id"] not in refs
            if not todo and not missing_ref:
                continue
            bar.set_postfix_str(s["id"][-40:])
            data = load_sample(s)
            if missing_ref:
                ref: dict[str, Any] = {"manifest": sha, "id": s["id"]}
                if fm is not None:
                    ref.update(fm.reference(data.gt))
                if fid is not None:
                    ref["fid_feat"] = _feat_b64(fid.features([data.gt])[0])
                refs[s["id"]] = ref
                assert ref_writer is not None
                ref_writer.write(ref)
            ref = refs.get(s["id"], {})
            for m in todo:
                assert m.restore is not None
                t0 = time.perf_counter()
                restored, extra = m.restore(data.blurry, data.kernel)
                restored = np.ascontiguousarray(restored)
                rec: dict[str, Any] = {"manifest": sha, "method": m.key, "id": s["id"],
                                       "time_s": round(time.perf_counter() - t0, 4)}
                if restored.shape != data.blurry.shape or restored.dtype != np.uint8:
                    raise InputError(f"method {m.name!r} returned {restored.dtype} {restored.shape} for "
                                     f"{data.blurry.shape} uint8 input")
                if has_gt:
                    rec.update(_fidelity(restored, data.gt, options.crop_border))
                    if lp is not None:
                        rec["lpips"] = lp(restored, data.gt)
                    if fm is not None:
                        rec.update(fm.measure(restored, ref))
                    if fid is not None:
                        rec["fid_feat"] = _feat_b64(fid.features([restored])[0])
                    if options.moments and m.continuous and m.moments is not None and data.frames is not None:
                        frames = data.frames
                        n = len(frames)
                        outs = m.moments(data.blurry, [k / (n - 1) for k in range(n)])
                        rec["moments"] = [[psnr(o, frames[k]), ssim(o, frames[k]), psnr(data.blurry, frames[k])]
                                          for k, o in enumerate(outs)]
                else:
                    from ..metrics.noref import laplacian_variance, tenengrad

                    rec["lapvar"] = laplacian_variance(restored)
                    rec["tenengrad"] = tenengrad(restored)
                    if fm is not None:
                        rec["detected"] = fm.detected(restored)
                if extra:
                    rec["extra"] = extra
                writers[m.key].write(rec)
                done[m.key].add(s["id"])
        bar.close()
    finally:
        for w in writers.values():
            w.close()
        if ref_writer is not None:
            ref_writer.close()
    conventions = dict(getattr(fm, "conventions", {}) or {})
    return write_quality_report(out, manifest, methods, notes, conventions, options, command=command,
                                extra_header=extra_header or {})
