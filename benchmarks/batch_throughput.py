"""Faces per second of ``facedeblur.batch.restore_many`` against the plain per-image loop, on one machine.

The plain loop is what a script without the batch engine does, one image after the other::

    for path in paths:
        img = read_image(path)
        write_image(out / path.name, model.restore(img, faces=True))

``restore_many`` runs the same images through reader threads (hash, decode, face detection), one model step per
``batch_size`` images (the faces of all of them through the network together) and writer threads (encode, atomic
commit, manifest). Both write the same pictures (the benchmark checks the largest pixel difference). The photos
are 4:3 crops of skimage's astronaut at random shifts and scales (one face each, found by MTCNN), written as
PNG. A stage breakdown (read, detect, model per face, encode + write) on the first images explains the ratio and
feeds the GPU estimate in docs/batch.md.

Models: the shipped default (``cfmd-gan``, trained weights) and the paper-size network (``cfmd-gan.paper``,
9.2 M parameters: no trained weights exist, so it runs with random initialisation -- **for speed only**; the
cost of a forward does not depend on the weight values).

    python benchmarks/batch_throughput.py --images 24 --paper-images 6 --repeats 3 --size 640x480 \\
        --out benchmarks/results
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=48, help="photos for the default model")
    p.add_argument("--paper-images", type=int, default=8, help="photos for the paper-size model (0 = skip it)")
    p.add_argument("--size", default="640x480", help="photo size WxH")
    p.add_argument("--batch-size", type=int, default=None, help="faces per forward (default: restore_many's, by device)")
    p.add_argument("--io-workers", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--breakdown", type=int, default=4, help="images timed stage by stage")
    p.add_argument("--repeats", type=int, default=3, help="plain / batch pairs (alternated)")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--name", default="batch_throughput")
    return p.parse_args(argv)


def make_photos(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """``n`` WxH photos of the astronaut's face (random shift and scale), as PNG."""
    import cv2
    from PIL import Image
    from skimage.data import astronaut

    a = astronaut()
    w, h = size
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):  # the face spans about x 170..330, y 40..230 of the 512x512 photograph: keep it inside
        scale = float(rng.uniform(0.75, 1.0))
        cw, ch = int(512 * scale), min(512, int(512 * scale * h / w))
        x = int(rng.integers(max(0, 330 - cw), min(170, 512 - cw) + 1))
        y = int(rng.integers(max(0, 230 - ch), min(40, 512 - ch) + 1))
        crop = cv2.resize(a[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_AREA)
        p = folder / f"photo{i:04d}.png"
        Image.fromarray(crop).save(p)
        paths.append(p)
    return paths


def plain_loop(model: Any, paths: list[Path], out: Path) -> float:
    """The per-image loop; returns its wall time."""
    from facedeblur.restore import read_image, write_image

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for p in paths:
        write_image(out / p.name, model.restore(read_image(p), faces=True))
    return time.perf_counter() - t0


def breakdown(model: Any, paths: list[Path], out: Path) -> dict[str, float]:
    """Seconds per image for read, detect, align + model + paste, encode + write (face pipeline stages)."""
    from facedeblur.faces import restore_face_arrays
    from facedeblur.restore import read_image, write_image
    from facedeblur.restore.convert import prepare

    det = model.face_detector()
    t = {"read": 0.0, "detect": 0.0, "restore_faces": 0.0, "write": 0.0, "faces": 0}
    out.mkdir(parents=True, exist_ok=True)
    for p in paths:
        t0 = time.perf_counter()
        prep = prepare(read_image(p))
        arr = np.ascontiguousarray(prep.frames[0].permute(1, 2, 0).numpy())
        t1 = time.perf_counter()
        faces = det.detect(np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8))
        t2 = time.perf_counter()

        class Given:
            def detect(self, _: Any) -> Any:
                return faces

        restored, records = restore_face_arrays([arr], model.face_restorer(None, 8), detector=Given())
        t3 = time.perf_counter()
        import torch

        write_image(out / p.name, prep.finish([torch.from_numpy(restored[0]).permute(2, 0, 1)]), overwrite=True)
        t4 = time.perf_counter()
        for k, v in (("read", t1 - t0), ("detect", t2 - t1), ("restore_faces", t3 - t2), ("write", t4 - t3)):
            t[k] += v
        t["faces"] += len(records[0])
    n = len(paths)
    return {"read_s": t["read"] / n, "detect_s": t["detect"] / n, "align_model_paste_s": t["restore_faces"] / n,
            "write_s": t["write"] / n, "faces_per_image": t["faces"] / n}


def max_diff(a_dir: Path, b_dir: Path, names: list[str]) -> int:
    from facedeblur.restore import read_image

    return max(int(np.abs(read_image(a_dir / n).astype(int) - read_image(b_dir / n).astype(int)).max()) for n in names)


def _timed(fn: Any) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process -- all its threads)."""
    w0, c0 = time.perf_counter(), time.process_time()
    r = fn()
    return r, time.perf_counter() - w0, time.process_time() - c0


def run_model(label: str, model: Any, n: int, size: tuple[int, int], args: argparse.Namespace,
              work: Path) -> dict[str, Any]:
    """Plain loop and batch engine, alternated ``args.repeats`` times on the same photos (fresh outputs each time:
    the machine's load drifts, pairs see similar conditions)."""
    import statistics

    from facedeblur.batch import restore_many
    from facedeblur.restore import read_image

    work = work / model.card.name
    src = work / "src"
    paths = make_photos(src, n, size)
    model.restore(read_image(paths[0]), faces=True)  # warm-up: the detector is built, the first forward done
    stages = breakdown(model, paths[:args.breakdown], work / "stages")
    pairs = []
    faces = 0
    for rep in range(args.repeats):
        _, pw, pc = _timed(lambda: plain_loop(model, paths, work / f"plain{rep}"))
        load = os.getloadavg()[0]
        res, bw, bc = _timed(lambda: restore_many(src, work / f"batch{rep}", model, batch_size=args.batch_size,
                                                  io_workers=args.io_workers, progress=False))
        assert res.failed == 0 and res.restored == n, res.summary()
        faces = res.faces
        pairs.append({"plain_s": round(pw, 3), "plain_cpu_s": round(pc, 3), "batch_s": round(bw, 3),
                      "batch_cpu_s": round(bc, 3), "ratio": round(pw / bw, 3),
                      "load_avg_1min": [round(load, 2), round(os.getloadavg()[0], 2)]})
        print(label, pairs[-1], file=sys.stderr)
    from facedeblur.batch.work import DEFAULT_BATCH

    res_bs = DEFAULT_BATCH["cpu" if model.device.type == "cpu" else "other"]
    diff = max_diff(work / "plain0", work / "batch0", [p.name for p in paths])
    plain_fps = faces / min(p["plain_s"] for p in pairs)  # best of the pairs: the least disturbed by other work
    batch_fps = faces / min(p["batch_s"] for p in pairs)
    row = {"model": label, "card": model.card.name,
           "params_M": round(sum(p.numel() for p in model.model.parameters()) / 1e6, 3),
           "images": n, "faces": faces, "batch_size": args.batch_size or f"auto ({res_bs})", "repeats": args.repeats, "pairs": pairs,
           "plain_faces_per_s": round(plain_fps, 4), "batch_faces_per_s": round(batch_fps, 4),
           "ratio": round(statistics.median(p["ratio"] for p in pairs), 3),
           "ratio_per_pair": [p["ratio"] for p in pairs],
           "cpu_ratio": round(statistics.median(p["plain_cpu_s"] / p["batch_cpu_s"] for p in pairs), 3),
           "plain_cpu_s_per_face": round(statistics.median(p["plain_cpu_s"] for p in pairs) / faces, 4),
           "batch_cpu_s_per_face": round(statistics.median(p["batch_cpu_s"] for p in pairs) / faces, 4),
           "s_per_1000_faces_plain": round(1000 / plain_fps, 1), "s_per_1000_faces_batch": round(1000 / batch_fps, 1),
           "max_pixel_diff_batch_vs_plain": diff,
           "stages_per_image": {k: round(v, 4) for k, v in stages.items()}}
    return row


def _env() -> dict[str, Any]:
    import torch

    import facedeblur

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        sha, dirty = "?", False
    return {"git": sha + (" (uncommitted changes)" if dirty else ""), "facedeblur": facedeblur.__version__,
            "torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or "?",
            "usable_cpus": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_avg_start": os.getloadavg(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _markdown(result: dict[str, Any], command: str) -> str:
    e = result["env"]
    lines = ["# restore-batch throughput: batched engine vs the plain per-image loop", "",
             f"Command: `{command}`", "",
             f"* git {e['git']}, facedeblur {e['facedeblur']}, torch {e['torch']}, Python {e['python']}",
             f"* {e['usable_cpus']} usable CPUs, torch threads {e['torch_threads']}, OMP_NUM_THREADS="
             f"{e['omp_num_threads']}; load average at start {', '.join(f'{v:.2f}' for v in e['load_avg_start'])}, "
             f"at end {', '.join(f'{v:.2f}' for v in result['load_avg_end'])}",
             f"* restore_many faces per forward: {result['rows'][0]['batch_size'] if result['rows'] else '?'}; the plain "
             "loop: Deblurrer.restore's default (8; one face per image, so 1)",
             f"* photos: {result['size']} PNG, one face each (astronaut crops); face pipeline (MTCNN, 256 px "
             "aligned crops, feathered paste-back); outputs PNG",
             "* **the load average shows other work on this machine while timing (a training run on one core): "
             "numbers are lower bounds for an idle machine**", "",
             "| model | params | images | faces | pairs | plain faces/s | batch faces/s | ratio | ratio per pair "
             "| CPU s / face plain | CPU s / face batch | CPU ratio | 1,000 faces (plain) | 1,000 faces (batch) | "
             "max px diff |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['params_M']} M | {r['images']} | {r['faces']} | {r['repeats']} | "
                     f"{r['plain_faces_per_s']:.3f} | {r['batch_faces_per_s']:.3f} | **{r['ratio']:.2f}x** | "
                     f"{', '.join(f'{v:.2f}' for v in r['ratio_per_pair'])} | {r['plain_cpu_s_per_face']:.3f} | "
                     f"{r['batch_cpu_s_per_face']:.3f} | {r['cpu_ratio']:.2f}x | {r['s_per_1000_faces_plain'] / 60:.0f} min | "
                     f"{r['s_per_1000_faces_batch'] / 60:.0f} min | {r['max_pixel_diff_batch_vs_plain']} |")
    lines += ["", "Stage times per image (plain, first images; seconds):", "",
              "| model | read + convert | MTCNN detect | align + model + paste | encode + write |",
              "|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        s = r["stages_per_image"]
        lines.append(f"| {r['model']} | {s['read_s']:.3f} | {s['detect_s']:.3f} | {s['align_model_paste_s']:.3f} | "
                     f"{s['write_s']:.3f} |")
    lines += ["", "Pairs alternate the plain loop and the batch engine on the same photos (fresh outputs each time), so "
              "both see similar load. faces/s: faces / the best wall time of the pairs (the least disturbed); ratio: "
              "the median over the pairs of plain wall time / batch wall time; CPU ratio: the same for this process's "
              "CPU time (all threads; above 1 = the batch engine does less work per face). 1,000 faces: 1000 / faces/s. "
              "The paper-size network has no trained weights: it runs with random initialisation, for speed only.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import torch

    import facedeblur

    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    env = _env()
    rows = []
    work = Path(tempfile.mkdtemp(prefix="fd_batch_bench_"))
    try:
        rows.append(run_model("cfmd-gan (default, trained)", facedeblur.load("cfmd-gan", device=args.device),
                              args.images, (w, h), args, work))
        if args.paper_images:
            torch.manual_seed(0)
            from facedeblur.models import get_card

            paper = facedeblur.Deblurrer(facedeblur.create_model("cfmd-gan.paper"), get_card("cfmd-gan.paper"),
                                         args.device)
            rows.append(run_model("cfmd-gan.paper (random init, speed only)", paper, args.paper_images, (w, h), args,
                                  work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"env": env, "size": args.size, "rows": rows, "load_avg_end": os.getloadavg()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join([Path(sys.argv[0]).as_posix() if argv is None else "benchmarks/batch_throughput.py",
                                    *(sys.argv[1:] if argv is None else argv)])
    (out / f"{args.name}.json").write_text(json.dumps({**result, "command": command}, indent=2) + "\n")
    (out / f"{args.name}.md").write_text(_markdown(result, command))
    print(out / f"{args.name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
