"""``facedeblur`` command line: list, info, restore, download, export, import-official, train.

Errors the library raises on purpose (:class:`~facedeblur.errors.FaceDeblurError`) print one line,
``facedeblur: error: ...``, and exit 1; command-line mistakes exit 2; ``--debug`` shows tracebacks.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from ._version import __version__
from .cards import bench_text
from .errors import CapabilityError, FaceDeblurError, InputError, run_command

__all__ = ["main", "build_parser"]

_DTYPES = ("float32", "float16", "bfloat16")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``facedeblur: error: MESSAGE (see 'PROG --help')``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"facedeblur: error: {message} (see '{self.prog} --help')\n")


def _in_unit_interval(what: str, meaning: str):
    """An argparse type for a float in [0, 1] (nan rejected); errors name ``what`` and ``meaning``."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; {what} is a float in [0, 1]") from None
        if not 0.0 <= v <= 1.0:  # also rejects nan
            raise argparse.ArgumentTypeError(f"{text} is outside [0, 1]; {meaning}")
        return v

    return parse


def _int_at_least(low: int, hint: str = ""):
    """argparse type: an integer >= ``low`` (``hint`` is added to the error)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{v} must be >= {low}{hint}")
        return v

    return parse


# ----------------------------------------------------------------------------------------------- list / info


def param_count(card: Any) -> int | None:
    """The card's parameter count (imports torch and the model file: only ``--params`` asks for it, so that plain
    ``list`` / ``info`` stay fast)."""
    from .models import param_count as count

    return count(card)


def _fmt_params(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


def _weights_text(card: Any) -> str:
    w = card.weights
    if w.embedded:
        return f"embedded ({w.embedded}{', sha256 ' + w.sha256 if w.sha256 else ''})"
    if w.hf_hub_id and w.revision:
        return f"Hugging Face Hub {w.hf_hub_id}@{w.revision} ({w.filename})"
    return "not available (no embedded file and no Hub release yet)"


def cmd_list(args: argparse.Namespace) -> int:
    from .models import get_card, list_models

    names = list_models(args.pattern, task=args.task, pretrained=True if args.pretrained else None)
    if not names:
        print(f"no models match {args.pattern!r}" + (f" with task {args.task}" if args.task else "")
              + (" with trained weights" if args.pretrained else ""), file=sys.stderr)
        return 0
    rows = [("NAME", "TASK") + (("PARAMS",) if args.params else ()) + ("WEIGHTS", "DEFAULT")]
    for name in names:
        card = get_card(name)
        params = (_fmt_params(param_count(card)),) if args.params else ()
        rows.append((name, card.task) + params + ("yes" if card.pretrained else "no",
                                                   f"* ({card.family})" if card.default else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _quality_text(summary: dict[str, Any]) -> str:
    """One line from a quality-bar summary (benchmarks/cfmd_quality.py): centre gains per bin, moments, verdict."""
    parts = []
    centre = summary.get("centre", {})
    if centre:
        parts.append("centre gain dB " + ", ".join(f"{b} {v['gain']:+.3f} (n={v['count']})" for b, v in centre.items()))
    bar = summary.get("bar", {})
    if bar.get("positions"):
        parts.append(f"moments beaten at {bar['positions_beaten']}/{bar['positions']} positions")
    if "met" in bar:
        parts.append("bar met" if bar["met"] else "bar NOT met")
    return "; ".join(parts) or json.dumps(summary, default=str)


def _card_text(card: Any, params: bool = False) -> str:
    """The card as text; ``params``: with the network's parameter count (builds it on the meta device: torch)."""
    caps, inp, p = card.capabilities, card.input, card.paper
    lines = [f"{card.name}" + (f"  (default variant of {card.family})" if card.default else "")]

    def add(key: str, value: Any) -> None:
        if value not in (None, "", {}, ()):
            lines.append(f"  {key + ':' if key else '':<15}{value}")  # an empty key continues the line above

    add("task", card.task)
    add("description", " ".join(str(card.description).split()))
    add("architecture", f"{card.architecture} " + ", ".join(f"{k}={v}" for k, v in card.arch_kwargs.items()))
    if params:
        n_params = param_count(card)
        add("parameters", f"{n_params:,}" if n_params is not None else "?")
    add("paper", ", ".join(x for x in (f'"{p.title}"' if p.title else "", p.authors, p.venue,
                                        f"arXiv {p.arxiv}" if p.arxiv else "") if x))
    add("paper url", p.url)
    add("input", f"{inp.channel_order.upper()} in [{inp.value_range[0]}, {inp.value_range[1]}], "
                 f"face {inp.face_size} px, padded to a multiple of {inp.pad_multiple}")
    add("face crop", inp.face_crop)
    cap = [f"continuous u (default {caps.default_u})" if caps.continuous_u else "no control factor u",
           f"frame window {caps.frame_window}", "aligned face input" if caps.aligned_face_input else "any image",
           "dtypes " + ", ".join(caps.dtypes)]
    add("capabilities", "; ".join(cap))
    add("weights", _weights_text(card))
    add("license", card.license)
    add("training data", card.training_data)
    from .cards import TRAINING_RECORD_KEYS

    recipe = {k: v for k, v in card.training.items() if k not in TRAINING_RECORD_KEYS}
    if recipe:
        add("recipe", json.dumps(recipe, default=str))
    for i, st in enumerate(card.training.get("stages", [])):
        wall = f", {st['wall_time_s'] / 60:.0f} min" if st.get("wall_time_s") else ""
        add("trained" if i == 0 else "",
            f"{st.get('name', '?')} ({st.get('steps', '?')} steps{wall}; {st.get('recipe', '')})")
    gate = card.training.get("gate_calibration")
    if gate:
        alphas = [a for row in gate.get("alphas", []) for a in (row if isinstance(row, list) else [row])]
        span = f", alpha {min(alphas):.3g}-{max(alphas):.3g}" if alphas else ""
        add("gate", f"calibrated on {gate.get('samples', '?')} pairs of {gate.get('windows', '?')} training windows"
                    f" ({'8-bit' if gate.get('quantize') == 255 else 'float'} output{span})")
    if "record" in card.training:
        add("record", json.dumps(card.training["record"], default=str))
    for key, value in card.metrics.items():
        if key == "quality_bar" and isinstance(value, dict):
            for tag, summary in value.items():
                add("quality", f"{tag}: {_quality_text(summary)}")
        elif key == "benchmark" and isinstance(value, dict):
            for j, (name, row) in enumerate((k, v) for k, v in value.items() if isinstance(v, dict)):
                add("benchmark" if j == 0 else "", f"{name}: {bench_text(row)}")
        else:
            add(key, json.dumps(value, default=str))
    add("notes", " ".join(str(card.notes).split()))
    add("source", card.source)
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    from .models import get_card

    card = get_card(args.name)
    if args.json:
        doc = card.to_dict()
        if args.params:
            doc["parameters"] = param_count(card)
        print(json.dumps(doc, indent=2, default=str))
    else:
        print(_card_text(card, params=args.params))
    return 0


# ----------------------------------------------------------------------------------------------- restore


def _is_image(p: Path) -> bool:
    from .restore.convert import IMAGE_EXTENSIONS

    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _collect_jobs(inputs: Sequence[str], out: Path, ext: str) -> list[tuple[Path, Path]]:
    """(input file, output path without moment suffix) for every image; folders are searched recursively
    and mirrored under ``out``. A single file with an image-suffixed ``out`` writes exactly there."""
    from .restore.convert import IMAGE_EXTENSIONS

    jobs: list[tuple[Path, Path]] = []
    if len(inputs) == 1 and Path(inputs[0]).is_file() and out.suffix.lower() in IMAGE_EXTENSIONS \
            and not out.is_dir():
        return [(Path(inputs[0]), out)]
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and _is_image(f)
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not files:
                raise InputError(f"folder {item!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            jobs += [(f, out / f.relative_to(p).with_suffix(ext)) for f in files]
        elif p.is_file():
            jobs.append((p, out / (p.stem + ext)))
        else:
            raise InputError(f"{item!r}: no such file or folder")
    return jobs


def _check_outputs(jobs: list[tuple[Path, list[Path]]], overwrite: bool) -> None:
    """Never overwrite an input; no two inputs writing one file; existing outputs only with --overwrite."""
    inputs = {os.path.realpath(src): src for src, _ in jobs}
    seen: dict[str, Path] = {}
    existing = []
    for src, outs in jobs:
        for o in outs:
            real = os.path.realpath(o)
            if real in inputs:
                raise InputError(f"output {str(o)!r} would overwrite the input {str(inputs[real])!r}; "
                                 "choose another output folder with -o")
            if real in seen:
                raise InputError(f"inputs {str(seen[real])!r} and {str(src)!r} would both be written to {str(o)!r}; "
                                 "restore them into separate output folders")
            seen[real] = src
            if o.exists():
                existing.append(o)
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise InputError(f"output {str(existing[0])!r}{more} exists; pass --overwrite to replace, or choose another -o")


class _Timed:
    """Wraps a face detector or a Deblurrer for the GFPGAN layout's timings: ``detect`` / ``restore`` add their
    wall time to ``seconds``."""

    def __init__(self, inner: Any, batch_size: int | None = None) -> None:
        self.inner, self.batch_size, self.seconds = inner, batch_size, 0.0
        self.card = getattr(inner, "card", None)

    def detect(self, rgb: Any) -> Any:
        import time

        t = time.perf_counter()
        try:
            return self.inner.detect(rgb)
        finally:
            self.seconds += time.perf_counter() - t

    def restore(self, crops: Any, u: Any = None) -> Any:
        import time

        t = time.perf_counter()
        try:
            return self.inner.restore(crops, u=u, faces=False, batch_size=self.batch_size)
        finally:
            self.seconds += time.perf_counter() - t


class _Notes:
    """Collects the library's notices (no face found, audio not copied) and prints each as one line,
    ``facedeblur: note: ...``; other warnings are shown as usual."""

    def __enter__(self) -> "_Notes":
        import warnings

        self._cm = warnings.catch_warnings(record=True)
        self.caught = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc: Any) -> None:
        import warnings

        from .faces.pipeline import NoFaceWarning
        from .faces.video import AudioNotCopiedWarning

        self._cm.__exit__(*exc)
        for w in self.caught:
            if issubclass(w.category, (NoFaceWarning, AudioNotCopiedWarning)):
                print(f"facedeblur: note: {' '.join(str(w.message).split())}", file=sys.stderr)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _face_files(out: Path, rel: Path) -> list[Path]:
    """Existing GFPGAN-layout face files of the image ``rel`` (``NAME_00.png``, ...) under ``out``."""
    found: list[Path] = []
    for folder in ("cropped_faces", "restored_faces", "cmp"):
        d = out / folder / rel.parent
        if d.is_dir():
            found += sorted(p for p in d.glob(f"{rel.stem}_[0-9][0-9]*.png") if p.stem[len(rel.stem) + 1:].isdigit())
    return found


def _restore_gfpgan(deblurrer: Any, img: Any, src: Path, out: Path, rel: Path, args: argparse.Namespace,
                    aligned: bool, t_read: float) -> int:
    """One image in the GFPGAN layout: ``cropped_faces/NAME_KK.png``, ``restored_faces/NAME_KK.png``,
    ``cmp/NAME_KK.png`` (crop | restored), ``restored_imgs/NAME.EXT`` and the sidecar ``json/NAME.json``.
    Returns the number of files written."""
    import time

    import numpy as np

    from .faces.align import crop_style_for
    from .restore import write_image
    from .restore.photos import restore_faces

    t0 = time.perf_counter()
    model = _Timed(deblurrer, args.batch_size)
    detector = None if aligned else _Timed(deblurrer.face_detector())
    restored, records = restore_faces(img, model, u=args.u, aligned=aligned, only_center_face=args.only_center_face,
                                      blend=args.blend, color_match=args.color_match, detector=detector)
    t_pipe = time.perf_counter() - t0
    t1 = time.perf_counter()
    depth, scale = (np.uint16, 65535.0) if img.dtype == np.uint16 else (np.uint8, 255.0)

    def to_int(a: Any) -> Any:
        return np.clip(np.rint(a * scale), 0, scale).astype(depth)

    stale = set(_face_files(out, rel)) if args.overwrite else set()
    faces, written = [], 0
    for k, r in enumerate(records):
        name = f"{rel.stem}_{k:02d}.png"
        paths = {key: out / folder / rel.parent / name for key, folder in
                 (("cropped_face", "cropped_faces"), ("restored_face", "restored_faces"), ("cmp", "cmp"))}
        crop, rest = to_int(r.crop), to_int(r.restored)
        for key, a in (("cropped_face", crop), ("restored_face", rest), ("cmp", np.concatenate([crop, rest], 1))):
            write_image(paths[key], a, overwrite=args.overwrite)
            stale.discard(paths[key])
            written += 1
        faces.append({"index": k, "box": [round(float(v), 3) for v in r.box],
                      "score": None if r.score is None else round(float(r.score), 6),
                      "landmarks": None if r.landmarks is None else np.round(r.landmarks.astype(float), 3).tolist(),
                      "affine": np.round(np.asarray(r.affine, dtype=float), 6).tolist(), "crop_size": r.size,
                      **{key: p.relative_to(out).as_posix() for key, p in paths.items()}})
    for p in stale:  # face files of an earlier run of this image with more faces
        p.unlink()
    restored_path = out / "restored_imgs" / rel
    write_image(restored_path, restored, overwrite=args.overwrite)
    written += 1
    t_write = time.perf_counter() - t1
    us = deblurrer._resolve_u(args.u, 1)[0]
    try:
        style: str | None = crop_style_for(deblurrer.card)
    except FaceDeblurError:
        style = None
    h, w = img.shape[:2]
    record = {
        "schema": "facedeblur.faces/1",
        "input": str(src),
        "image": {"width": int(w), "height": int(h), "channels": 1 if img.ndim == 2 else int(img.shape[2]),
                  "dtype": str(img.dtype)},
        "model": deblurrer.name,
        "u": us,
        "aligned": aligned,
        "detector": None if aligned else type(detector.inner).__name__,  # type: ignore[union-attr]
        "crop_style": style,
        "face_size": int(deblurrer.card.input.face_size),
        "blend": args.blend,
        "color_match": bool(args.color_match),
        "restored_img": restored_path.relative_to(out).as_posix(),
        "faces": faces,
        "timings_s": {"read": round(t_read, 6),
                      "detect": round(detector.seconds, 6) if detector is not None else 0.0,
                      "restore": round(model.seconds, 6),
                      "align_paste": round(max(t_pipe - model.seconds - (detector.seconds if detector else 0.0), 0.0),
                                           6),
                      "write": round(t_write, 6),
                      "total": round(t_read + t_pipe + t_write, 6)},
    }
    _write_json(out / "json" / rel.with_suffix(".json"), record, args.overwrite)
    return written + 1


def _write_json(path: Path, data: Any, overwrite: bool) -> None:
    """Write ``data`` as JSON atomically (temp file + ``os.replace``)."""
    from .restore.convert import write_bytes_atomic

    if path.exists() and not overwrite:
        raise InputError(f"{str(path)!r} exists; pass --overwrite to replace it")
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def cmd_restore(args: argparse.Namespace) -> int:
    import time

    from tqdm.auto import tqdm

    from .faces.video import VIDEO_EXTENSIONS, is_video
    from .models import get_card
    from .restore import IMAGE_EXTENSIONS, load, read_image, restore_video_file, write_image

    if args.model.startswith("onnx:"):
        from .restore.onnx import read_onnx_card

        card = read_onnx_card(args.model[len("onnx:"):])[0]
    else:
        card = get_card(args.model)
    if (args.u is not None or args.moments is not None) and not card.capabilities.continuous_u:
        flag = "--u" if args.u is not None else "--moments"
        raise CapabilityError(f"model {card.name!r} has no control factor u; drop {flag}")
    ext = "." + args.ext.lstrip(".").lower()
    out = Path(args.output)
    gfpgan = args.layout == "gfpgan"
    faces = {"auto": None, "on": True, "off": False}[args.faces]
    videos: list[Path] = []
    images: list[str] = []
    for item in args.inputs:
        p = Path(item)
        if p.is_file() and is_video(p):
            videos.append(p)
        elif p.is_file() and p.suffix.lower() not in IMAGE_EXTENSIONS:
            raise InputError(f"{item!r}: unsupported file type {p.suffix or '(no suffix)'!r}; restore images "
                             f"({', '.join(IMAGE_EXTENSIONS)}) or videos ({', '.join(VIDEO_EXTENSIONS)})")
        else:
            images.append(item)
    if args.moments and (videos or gfpgan or faces):
        what = "videos" if videos else ("--layout gfpgan" if gfpgan else "--faces on")
        raise InputError(f"--moments writes the moments of face crops; it cannot be combined with {what}")
    if videos and gfpgan:
        raise InputError("--layout gfpgan is for images; videos are written as restored videos: restore them in a "
                         "separate call without --layout")
    out_kind = out.suffix.lower()
    if gfpgan and (out_kind in IMAGE_EXTENSIONS or out_kind in VIDEO_EXTENSIONS) and not out.is_dir():
        raise InputError(f"--layout gfpgan writes folders into OUT; pass a folder as -o, not {str(out)!r}")
    if out_kind in VIDEO_EXTENSIONS and not out.is_dir():
        if len(args.inputs) != 1 or not videos:
            raise InputError(f"-o {str(out)!r} names one output video: pass exactly one input video, or a folder "
                             "as -o")
        video_jobs = [(videos[0], out)]
    else:
        video_jobs = [(v, out / v.name) for v in videos]
    jobs = _collect_jobs(images, out, ext) if images else []
    planned: list[tuple[Path, list[Path]]] = []
    for src, dst in jobs:
        if gfpgan:
            rel = dst.relative_to(out)
            planned.append((src, [out / "restored_imgs" / rel, out / "json" / rel.with_suffix(".json")]
                            + _face_files(out, rel)))
        elif args.moments:
            planned.append((src, [dst.with_name(f"{dst.stem}_m{k:02d}{dst.suffix}") for k in range(args.moments)]))
        else:
            planned.append((src, [dst]))
    _check_outputs(planned + [(v, [d]) for v, d in video_jobs], args.overwrite)
    opts: dict[str, Any] = {}
    if args.only_center_face:
        opts["only_center_face"] = True
    if args.blend != 1.0:
        opts["blend"] = args.blend
    if args.color_match:
        opts["color_match"] = True
    if opts and faces is False and not gfpgan:
        raise InputError("--only-center-face, --blend and --color-match apply to the face pipeline; drop them or "
                         "--faces off")
    deblurrer = load(args.model, device=args.device, dtype=args.dtype, weights=args.weights, cache_dir=args.cache_dir,
                     engine=args.engine)
    written = 0
    for src, dsts in tqdm(planned, desc=f"restore {card.name}", unit="img", disable=args.quiet or not planned):
        with _Notes():
            t0 = time.perf_counter()
            img = read_image(src)
            if gfpgan:
                written += _restore_gfpgan(deblurrer, img, src, out, dsts[0].relative_to(out / "restored_imgs"),
                                           args, faces is False, time.perf_counter() - t0)
                continue
            if args.moments:
                results = deblurrer.restore_moments(img, n=args.moments, batch_size=args.batch_size)
            else:
                results = [deblurrer.restore(img, u=args.u, batch_size=args.batch_size, faces=faces,
                                             face_options=opts or None)]
            for dst, result in zip(dsts, results):
                write_image(dst, result, overwrite=args.overwrite)
                written += 1
    n_videos = 0
    for src, dst in video_jobs:
        with _Notes():
            restore_video_file(src, dst, deblurrer, u=args.u, faces=faces, batch_size=args.batch_size,
                               smoothing=args.smoothing, codec=args.codec, overwrite=args.overwrite,
                               progress=not args.quiet, **opts)
        n_videos += 1
    if not args.quiet:
        what = f"{written} file(s)" if gfpgan else f"{written} image(s)"
        if video_jobs:
            what = f"{n_videos} video(s)" if not planned else f"{what} and {n_videos} video(s)"
        print(f"wrote {what} to {out}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------------- weights


def cmd_download(args: argparse.Namespace) -> int:
    from .models import get_card
    from .weights import download

    print(download(get_card(args.name), cache_dir=args.cache_dir))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .models import get_arch, get_card
    from .weights import load_pretrained_into, push_to_hub, save_pretrained

    if args.format == "onnx":
        if args.push or args.dtype:
            raise CapabilityError("--push and --dtype apply to the safetensors folder; an ONNX export is float32 "
                                  "and stays local")
        from .restore.deblurrer import export_onnx, load as load_model

        d = load_model(args.name, device="cpu", weights=args.weights, cache_dir=args.cache_dir)
        target = Path(args.out_dir) / f"{d.card.name}.onnx"
        if target.exists() and args.overwrite:
            target.unlink()
        path = export_onnx(d, target)
        print(path)
        return 0
    card = get_card(args.name)
    model = get_arch(card.architecture).builder(**card.arch_kwargs)
    load_pretrained_into(model, card, weights=args.weights, cache_dir=args.cache_dir)
    dtype = None
    if args.dtype:
        from .restore.device import resolve_dtype

        dtype = resolve_dtype(args.dtype)
    folder = save_pretrained(model, card, args.out_dir, dtype=dtype, overwrite=args.overwrite)
    print(folder)
    if args.push:
        sha = push_to_hub(folder, args.push, revision=args.revision, private=args.private)
        print(f"pushed {folder} to {args.push} (commit {sha})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``facedeblur demo``: the Gradio page of :mod:`facedeblur.demo.app`, blocking until Ctrl-C."""
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise CapabilityError('facedeblur demo needs the demo extra: pip install "facedeblur[demo]"')
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CapabilityError("--device cuda: no CUDA device is available here; use --device cpu")
    from .demo.app import launch
    from .demo.callbacks import DemoLimits

    if not args.max_video_seconds > 0:
        raise InputError(f"--max-video-seconds must be > 0, not {args.max_video_seconds}")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"facedeblur demo: note: listening on {args.host}: other machines can reach this page",
              file=sys.stderr)
    launch(model=args.model, host=args.host, port=args.port, device=args.device, share=args.share,
           limits=DemoLimits(max_video_seconds=float(args.max_video_seconds)))
    return 0


def cmd_import_official(args: argparse.Namespace) -> int:
    from .weights.official import get_importer

    importer = get_importer(args.method)
    print(importer.convert(args.pth, args.out_dir, variant=args.variant or importer.default_variant,
                           overwrite=args.overwrite))
    return 0


# ----------------------------------------------------------------------------------------------- parser


def _command(argv: Sequence[str]) -> str | None:
    """The sub-command of ``argv`` (its first non-option word), or None."""
    for a in argv:
        if not a.startswith("-"):
            return a
    return None


def _wants_train(argv: Sequence[str]) -> bool:
    """Whether the command is ``train`` (the trainer, and its imports, load only then)."""
    return _command(argv) == "train"


def _add_import_official(sub: Any, common: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """The ``import-official`` parser; its METHOD choices come from the importer registry, which (with torch) is
    loaded only when that command runs."""
    help_ = "convert the authors' released checkpoint"
    if _command(argv) != "import-official":
        sub.add_parser("import-official", help=help_ + " (see 'facedeblur import-official --help')")
        return
    from .weights.official import get_importer, list_importers

    methods = list_importers()
    defaults = ", ".join(f"{m}: {get_importer(m).default_variant}" for m in methods)
    p = sub.add_parser("import-official", parents=[common], help=help_,
                       description="Convert an official checkpoint (a .pth pickle, read with weights_only "
                                   "loading) into a facedeblur safetensors folder.")
    p.add_argument("method", choices=methods, metavar="METHOD", help=", ".join(methods))
    p.add_argument("pth", metavar="PTH")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--variant", default=None, help=f"zoo variant the weights belong to (default {defaults})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder OUT_DIR")
    p.set_defaults(func=cmd_import_official)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks for errors")
    parser = _Parser(prog="facedeblur", description="Face motion deblurring model zoo.")
    parser.add_argument("--version", action="version", version=f"facedeblur {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", parents=[common], help="list zoo models",
                       description="List zoo model variants (the default variant of each family is marked *).")
    p.add_argument("pattern", nargs="?", default="*", metavar="PATTERN", help="glob on names or families")
    p.add_argument("--task", choices=("image", "image-continuous", "video", "pipeline"))
    p.add_argument("--pretrained", action="store_true", help="only models with trained weights")
    p.add_argument("--params", action="store_true",
                   help="add a PARAMS column (builds each network on the meta device, which loads torch: slower)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", parents=[common], help="show a model card",
                       description="Show a model card, read from its zoo config (or config.json) without building "
                                   "the network.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true", help="the card as JSON")
    p.add_argument("--params", action="store_true",
                   help="add the parameter count (builds the network on the meta device, which loads torch: slower)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("restore", parents=[common], help="restore images, photos and videos",
                       description="Restore images (files or folders, searched recursively) and videos (.mp4, .mov, "
                                   ".avi, .mkv, .webm, .m4v files) into OUT, mirroring names. Photos go through the "
                                   "face pipeline (detect, align, restore, paste back; see --faces); videos keep "
                                   "their frame count, fps and size, and their audio when ffmpeg is on PATH. Inputs "
                                   "are never overwritten; existing outputs only with --overwrite.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, or folders of images")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output folder (or, for one input file, an output file name: out.png, out.mp4)")
    p.add_argument("--model", required=True, metavar="NAME",
                   help="zoo name, hf-hub:ORG/REPO, local-dir:PATH or onnx:FILE.onnx")
    p.add_argument("--engine", choices=("torch", "onnxruntime"), default="torch",
                   help="run the model on PyTorch (default) or ONNX Runtime (CPU, float32; exported once and cached; "
                        "needs the onnx extra)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--u", type=_in_unit_interval("u", "u runs from 0 (start of exposure) to 1 (end)"), metavar="U",
                   help="moment in [0, 1] (continuous models; default: card)")
    g.add_argument("--moments", type=_int_at_least(2, " (for one moment use --u)"), metavar="N",
                   help="write N moments u = k/(N-1) as NAME_m00..NAME_mNN (continuous models)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda[:N], mps")
    p.add_argument("--dtype", choices=_DTYPES, default=None, help="inference dtype (default float32)")
    p.add_argument("--weights", metavar="PATH", help="weights file or folder (default: embedded / Hub)")
    p.add_argument("--cache-dir", metavar="DIR", help="download cache")
    p.add_argument("--batch-size", type=_int_at_least(1), default=8,
                   help="batch size for moments, faces and video frames (default 8)")
    p.add_argument("--ext", default="png", choices=("png", "tif", "tiff", "jpg", "jpeg", "webp", "bmp"),
                   help="output format (default png, lossless)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never inputs)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--faces", choices=("auto", "on", "off"), default="auto",
                   help="face pipeline: auto (default: photos that are not face-crop sized -- wider than 1.25:1 or "
                        "larger than twice the model's face size, and not tiny -- are detected, aligned, restored "
                        "and pasted back; videos: for face-crop models), on (every input is a photo), off (inputs "
                        "are face crops / whole frames)")
    p.add_argument("--layout", choices=("plain", "gfpgan"), default="plain",
                   help="plain (default): OUT/NAME.EXT. gfpgan: OUT/cropped_faces, OUT/restored_faces, OUT/cmp "
                        "(crop | restored), OUT/restored_imgs and a JSON sidecar per image in OUT/json (images only)")
    p.add_argument("--only-center-face", action="store_true", help="restore only the face nearest the centre")
    p.add_argument("--blend", type=_in_unit_interval("blend", "0 = input unchanged, 1 = full restoration"),
                   default=1.0, metavar="B",
                   help="0 = input unchanged ... 1 = full restoration (default 1)")
    p.add_argument("--color-match", action="store_true", help="match each restored face's colours to its input")
    p.add_argument("--smoothing", type=_int_at_least(0), default=3, metavar="R",
                   help="videos: landmark smoothing radius in frames (default 3; 0 = off)")
    p.add_argument("--codec", default=None, metavar="FOURCC",
                   help="videos: FourCC of the output (default mp4v for .mp4/.mov/.m4v/.mkv, MJPG for .avi, VP80 "
                        "for .webm; FFV1 in .avi/.mkv is lossless)")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("download", parents=[common], help="download a model's weights into the cache")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--cache-dir", metavar="DIR")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("export", parents=[common], help="save a model as safetensors + config.json (and push), or as ONNX",
                       description="Load trained weights and write a folder loadable by facedeblur.load(..., "
                                   "weights=DIR) or 'local-dir:DIR'; optionally push it to the Hugging Face Hub.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("out_dir", metavar="DIR")
    p.add_argument("--weights", metavar="PATH", help="weights to export (default: embedded / Hub)")
    p.add_argument("--dtype", choices=_DTYPES, default=None, help="storage dtype (default: as trained)")
    p.add_argument("--push", metavar="REPO", help="Hugging Face Hub repository id to push to")
    p.add_argument("--revision", help="Hub branch to push to")
    p.add_argument("--private", action="store_true", help="create the Hub repository private")
    p.add_argument("--cache-dir", metavar="DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export in DIR")
    p.add_argument("--format", choices=("safetensors", "onnx"), default="safetensors",
                   help="safetensors folder (default), or DIR/NAME.onnx: one ONNX graph with u as an input, dynamic "
                        "batch and size, checked against PyTorch (needs the onnx extra)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", parents=[common], help="serve a local web demo (needs the demo extra)",
                       description="Serve a Gradio page that restores a photo or a short video with any zoo model "
                                   "that has weights: u as a slider, before/after, the moments as a gallery. "
                                   "Listens on 127.0.0.1 unless --host says otherwise; no public sharing link "
                                   "unless --share. Needs the optional extra: pip install \"facedeblur[demo]\".")
    p.add_argument("--model", metavar="NAME", default=None, help="the model menu's first choice (default: cfmd-gan)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_int_at_least(1), default=7860, help="port (default 7860)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the models run (default cpu)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--max-video-seconds", type=float, default=20.0, metavar="S",
                   help="refuse longer clips (default 20)")
    p.set_defaults(func=cmd_demo)

    _add_import_official(sub, common, argv)

    from .benchmark.cli import add_bench_parser  # argparse only; the benchmark loads when a bench command runs

    add_bench_parser(sub, common)

    from .batch.cli import add_parser as add_batch_parser  # argparse only; the batch engine loads when it runs

    add_batch_parser(sub, common)

    if _wants_train(argv):  # a broken facedeblur.train fails here, loudly (it imports no optional package)
        from .train import add_train_arguments, run_from_args

        p = sub.add_parser("train", parents=[common], help="train a model")
        add_train_arguments(p)
        p.set_defaults(func=run_from_args)
    else:
        sub.add_parser("train", help="train a model (see 'facedeblur train --help')")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: returns the exit status (0 ok, 1 runtime error, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser_args = build_parser(argv).parse_args(argv)
    return run_command(args.func, args, debug=bool(getattr(parser_args, "debug", False)))


if __name__ == "__main__":
    sys.exit(main())
