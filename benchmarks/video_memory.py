"""Peak memory, frame/fps/size preservation and landmark jitter of the video face pipeline.

For each clip length in ``--seconds`` a synthetic clip is generated (``--height`` p, 16:9, ``--fps``, mp4v .mp4):
scikit-image's public-domain astronaut photograph -- her face as a sprite, her suit (resized) as the background --
with the face moving along a smooth Lissajous path and slowly zooming, placed with sub-pixel accuracy. The
detector's landmarks get extra Gaussian noise (``--landmark-noise`` px, seeded) to emulate a noisier detector.
Each clip is restored by :func:`facedeblur.restore_video_file` in a **fresh subprocess**, and the parent
reports:

* the child's peak resident memory (``ru_maxrss`` from ``os.wait4``), the child's peak before the video started
  (imports, model and detector loaded), and its current RSS sampled at 10 evenly spaced frames (a curve that
  levels off means memory is bounded; a leak keeps climbing). Note: with glibc's default *dynamic* mmap
  threshold, the varying-size face-region buffers make RSS climb for the first few hundred frames to a plateau
  (freed memory stays in the heap); ``--mmap-threshold 131072`` sets ``MALLOC_MMAP_THRESHOLD_`` in the child
  (fixed threshold: large buffers go back to the OS) to show the pipeline's own, flat, footprint;
* frame count, fps and size of input and output (decoded back with OpenCV);
* landmark jitter: the mean frame-to-frame second difference ``|p[t+1] - 2 p[t] + p[t-1]|`` of the 5 landmarks,
  raw (detector + noise) vs smoothed (what the pipeline aligns with), in pixels; and the mean distance of both
  to the true sprite path (reference landmarks detected once on the unscaled sprite, moved with the path);
* wall time and processed frames per second.

Restorers: ``--model NAME`` (a zoo model with trained weights, ``facedeblur.load(NAME)``), or ``--restorer identity``
-- **pipeline only**: a Deblurrer around an identity network with the cfmd-gan card, so detection, tracking,
smoothing, alignment, batching, paste-back and video I/O are measured without any network cost. The output labels
which one ran.

Quick check (what the tests' author ran):

    python benchmarks/video_memory.py --restorer identity --seconds 2,4 --height 360 --out /tmp/video_memory.json

The real measurement (when the CPU is free; 5 s and 20 s of 720p):

    python benchmarks/video_memory.py --model cfmd-gan --seconds 5,20 --height 720 \\
        --out benchmarks/results/video_memory_cfmd-gan.json
    python benchmarks/video_memory.py --restorer identity --seconds 5,20 --height 720 \\
        --out benchmarks/results/video_memory_pipeline.json
    python benchmarks/video_memory.py --restorer identity --seconds 5,20 --height 720 --mmap-threshold 131072 \\
        --out benchmarks/results/video_memory_pipeline_fixed_mmap.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SPRITE_BOX = (0, 240, 100, 340)  # rows, cols of the face in skimage.data.astronaut()


# ------------------------------------------------------------------------------------------------ clip


def _assets() -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    astro = data.astronaut()
    r0, r1, c0, c1 = SPRITE_BOX
    return np.ascontiguousarray(astro[r0:r1, c0:c1]), np.ascontiguousarray(astro[300:512])


def path_at(t: float, width: int, height: int) -> tuple[float, float, float]:
    """(scale of the 240 px sprite, x, y of its top-left corner) at time ``t`` seconds: a Lissajous path of the
    sprite centre (periods 4 s and 3 s) with a slow zoom (period 5 s)."""
    side = 0.45 * height * (1.0 + 0.12 * math.sin(2 * math.pi * t / 5.0))
    cx = width / 2 + 0.28 * width * math.sin(2 * math.pi * t / 4.0)
    cy = height / 2 + 0.08 * height * math.sin(2 * math.pi * t / 3.0 + 0.7)
    return side / 240.0, cx - side / 2, cy - side / 2


def make_clip(path: Path, seconds: float, height: int, fps: float) -> dict[str, Any]:
    """Write the synthetic clip (streamed: one frame in memory at a time); returns its properties."""
    import cv2

    width = int(round(height * 16 / 9 / 2)) * 2
    sprite, suit = _assets()
    bg = cv2.resize(suit, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    spr = sprite.astype(np.float32)
    n = int(round(seconds * fps))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write mp4v .mp4 here")
    for i in range(n):
        s, x, y = path_at(i / fps, width, height)
        side = max(int(round(240 * s)), 8)  # area-resize first (no aliasing), then a sub-pixel warp
        small = cv2.resize(spr, (side, side), interpolation=cv2.INTER_AREA)
        r = 240 * s / side
        # sprite pixel p -> frame s p + (x, y); with the area-resize's edge-to-edge mapping that is
        # small pixel q -> r q + (x, y) + 0.5 (r - s)
        m = np.float32([[r, 0, x + 0.5 * (r - s)], [0, r, y + 0.5 * (r - s)]])
        face = cv2.warpAffine(small, m, (width, height), flags=cv2.INTER_LINEAR)
        mask = cv2.warpAffine(np.ones((side, side), np.float32), m, (width, height), flags=cv2.INTER_LINEAR)[..., None]
        frame = bg * (1 - mask) + face * mask
        writer.write(cv2.cvtColor(np.clip(np.rint(frame), 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    writer.release()
    return {"frames": n, "fps": fps, "width": width, "height": height}


def probe(path: Path) -> dict[str, Any]:
    """Frame count (decoded), fps and size of a video file."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    n, size = 0, None
    while True:
        ok, f = cap.read()
        if not ok:
            break
        n += 1
        size = (f.shape[1], f.shape[0])
    cap.release()
    return {"frames": n, "fps": fps, "width": size[0] if size else 0, "height": size[1] if size else 0}


def reference_landmarks() -> list[list[float]]:
    """The 5 MTCNN landmarks of the unscaled 240 px sprite, in sprite pixels (the path's "truth" reference)."""
    import cv2

    from facedeblur.faces import MTCNN

    sprite, suit = _assets()
    canvas = cv2.resize(suit, (640, 480), interpolation=cv2.INTER_AREA)
    canvas[100:340, 200:440] = sprite
    faces = MTCNN().detect(canvas)
    if not faces:
        raise RuntimeError("MTCNN found no face on the reference sprite")
    return (faces[0].landmarks - np.float32([200, 100])).tolist()


# ------------------------------------------------------------------------------------------------ worker


class NoisyDetector:
    """Adds seeded Gaussian noise (sigma px) to the landmarks of an inner detector."""

    def __init__(self, inner: Any, sigma: float, seed: int = 0) -> None:
        self.inner, self.sigma = inner, float(sigma)
        self.rng = np.random.default_rng(seed)

    def _noisy(self, faces: list[Any]) -> list[Any]:
        from facedeblur.data.landmarks import Face

        out = []
        for f in faces:
            lm = f.landmarks + self.rng.normal(0.0, self.sigma, f.landmarks.shape).astype(np.float32)
            out.append(Face(f.box, f.score, lm))
        return out

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Any]]:
        return [self._noisy(fs) for fs in self.inner.detect_batch(images)]

    def detect(self, rgb: np.ndarray) -> list[Any]:
        return self._noisy(self.inner.detect(rgb))


def _worker(cfg: dict[str, Any]) -> None:
    import resource

    import torch

    torch.set_num_threads(int(cfg["threads"]))
    from facedeblur import restore_video_file
    from facedeblur.faces import MTCNN

    if cfg["restorer"] == "identity":
        from facedeblur.models import get_card
        from facedeblur.restore.deblurrer import Deblurrer

        class IdentityNet(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.zero = torch.nn.Parameter(torch.zeros(()))

            def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
                return x + self.zero

        model = Deblurrer(IdentityNet(), get_card("cfmd-gan"), device=cfg["device"])
    else:
        import facedeblur

        model = facedeblur.load(cfg["model"], device=cfg["device"])
    detector = NoisyDetector(MTCNN(device=model.device, min_face_size=cfg["min_face_size"]), cfg["landmark_noise"])
    ref = np.asarray(cfg["reference"], dtype=np.float64)
    width, height, fps = cfg["width"], cfg["height"], cfg["fps"]
    err = {"raw": 0.0, "smoothed": 0.0, "n": 0, "true_d2": 0.0, "n_d2": 0}
    truth_hist: list[np.ndarray] = []
    n_frames = int(cfg["frames"])
    sample_at = {int(round(k * (n_frames - 1) / 9)) for k in range(10)}
    curve: list[tuple[int, float | None]] = []

    def current_rss_mib() -> float | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
        except (OSError, ValueError):
            return None

    def on_frame(i: int, faces: list[Any]) -> None:
        if i in sample_at:
            curve.append((i, current_rss_mib()))
        s, x, y = path_at(i / fps, width, height)
        truth = ref * s + [x, y]
        truth_hist.append(truth)
        if len(truth_hist) > 3:
            truth_hist.pop(0)
        if len(truth_hist) == 3:
            d2 = truth_hist[2] - 2 * truth_hist[1] + truth_hist[0]
            err["true_d2"] += float(np.linalg.norm(d2, axis=-1).mean())
            err["n_d2"] += 1
        for f in faces[:1]:
            if f.raw_landmarks is not None:
                err["raw"] += float(np.linalg.norm(f.raw_landmarks - truth, axis=-1).mean())
                err["smoothed"] += float(np.linalg.norm(f.landmarks - truth, axis=-1).mean())
                err["n"] += 1

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    res = restore_video_file(cfg["src"], cfg["dst"], model, detector=detector, batch_size=cfg["batch_size"],
                             smoothing=cfg["smoothing"], progress=False, audio=False, on_frame=on_frame,
                             overwrite=True)
    wall = time.perf_counter() - t0
    n = max(err["n"], 1)
    print(json.dumps({
        "model": model.name, "frames": res.frames, "frames_with_faces": res.frames_with_faces,
        "tracks": res.tracks, "wall_s": wall, "fps_processed": res.frames / wall if wall > 0 else None,
        "rss_before_video_kib": rss_before, "jitter_raw_px": res.jitter_raw_px,
        "jitter_smoothed_px": res.jitter_smoothed_px,
        "jitter_true_path_px": err["true_d2"] / err["n_d2"] if err["n_d2"] else None,
        "err_raw_px": err["raw"] / n, "err_smoothed_px": err["smoothed"] / n, "rss_curve_mib": curve}))


def _run_child(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run the worker in a fresh interpreter; its JSON result plus its peak RSS (``os.wait4``)."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(cfg["threads"]))
    if cfg.get("mmap_threshold"):
        env["MALLOC_MMAP_THRESHOLD_"] = str(int(cfg["mmap_threshold"]))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed (exit {proc.returncode}); run it alone to see why: {' '.join(cmd[:3])} ...")
    result = json.loads(out.decode().strip().splitlines()[-1])
    result["peak_rss_kib"] = usage.ru_maxrss  # Linux: KiB
    return result


# ------------------------------------------------------------------------------------------------ main


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    who = p.add_mutually_exclusive_group()
    who.add_argument("--model", help="zoo model with trained weights (facedeblur.load)")
    who.add_argument("--restorer", choices=("identity",),
                     help="identity: pipeline only (no network), to measure the pipeline's own memory and jitter")
    p.add_argument("--seconds", default="5,20", help="comma list of clip lengths in seconds (default 5,20)")
    p.add_argument("--height", type=int, default=720, help="frame height (16:9; default 720)")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--landmark-noise", type=float, default=1.0, help="extra landmark noise, px (default 1)")
    p.add_argument("--smoothing", type=int, default=3, help="smoothing radius in frames (default 3)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--min-face-size", type=float, default=20.0,
                   help="MTCNN min_face_size, px (default 20, the library's; the face is ~0.2 x the frame height)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the worker (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--mmap-threshold", type=int, default=None, metavar="BYTES",
                   help="set MALLOC_MMAP_THRESHOLD_ in the worker (glibc; e.g. 131072); default: glibc's dynamic one")
    p.add_argument("--keep", metavar="DIR", help="keep the clips and outputs in DIR (default: a temp folder)")
    p.add_argument("--out", metavar="JSON", help="write the results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is None and not (args.model or args.restorer):
        p.error("pass --model NAME (a trained zoo model) or --restorer identity (pipeline only)")
    return args


def _mib(kib: float) -> str:
    return f"{kib / 1024:.0f}"


def _f(v: Any, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker is not None:
        _worker(json.loads(args.worker))
        return 0
    seconds = [float(s) for s in args.seconds.split(",") if s.strip()]
    label = (f"model {args.model}" if args.model else
             "identity restorer -- PIPELINE ONLY (detection, tracking, smoothing, alignment, paste-back, video I/O; "
             "no network)")
    ref = reference_landmarks()
    rows = []
    with tempfile.TemporaryDirectory(prefix="video_memory_") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for sec in seconds:
            src = folder / f"clip_{sec:g}s_{args.height}p.mp4"
            dst = folder / f"restored_{sec:g}s_{args.height}p.mp4"
            made = make_clip(src, sec, args.height, args.fps)
            cfg = {"src": str(src), "dst": str(dst), "restorer": args.restorer or "model", "model": args.model,
                   "device": args.device, "threads": args.threads, "batch_size": args.batch_size,
                   "smoothing": args.smoothing, "landmark_noise": args.landmark_noise,
                   "min_face_size": args.min_face_size, "mmap_threshold": args.mmap_threshold, "reference": ref,
                   **made}
            res = _run_child(cfg)
            rows.append({"seconds": sec, "input": probe(src), "output": probe(dst), **res})
            print(f"  {sec:g} s: peak RSS {_mib(res['peak_rss_kib'])} MiB, {res['wall_s']:.1f} s", file=sys.stderr)
    lines = [f"Video face pipeline, {label}; synthetic {args.height}p clips at {args.fps:g} fps, landmark noise "
             f"{args.landmark_noise:g} px, smoothing radius {args.smoothing}, batch {args.batch_size}, "
             f"{args.threads} thread(s), "
             + (f"MALLOC_MMAP_THRESHOLD_={args.mmap_threshold}" if args.mmap_threshold else "glibc malloc defaults"),
             "",
             "| seconds | frames in/out | fps in/out | size in/out | frames with faces | peak RSS (MiB) | RSS before "
             "video (MiB) | wall (s) | frames/s | jitter raw (px) | jitter smoothed (px) | jitter of true path (px) "
             "| error raw (px) | error smoothed (px) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        i, o = r["input"], r["output"]
        lines.append(f"| {r['seconds']:g} | {i['frames']}/{o['frames']} | {i['fps']:g}/{o['fps']:g} | "
                     f"{i['width']}x{i['height']}/{o['width']}x{o['height']} | {r['frames_with_faces']} | "
                     f"{_mib(r['peak_rss_kib'])} | {_mib(r['rss_before_video_kib'])} | {r['wall_s']:.1f} | "
                     f"{_f(r['fps_processed'], 1)} | {_f(r['jitter_raw_px'])} | {_f(r['jitter_smoothed_px'])} | "
                     f"{_f(r['jitter_true_path_px'])} | {_f(r['err_raw_px'])} | {_f(r['err_smoothed_px'])} |")
    lines += ["", "Current RSS (MiB) during each run, at 10 evenly spaced frames:", ""]
    for r in rows:
        pts = ", ".join(f"{i}: {_f(v, 0)}" for i, v in r["rss_curve_mib"])
        lines.append(f"* {r['seconds']:g} s -- {pts}")
    table = "\n".join(lines)
    print(table)
    if args.out:
        record = {"label": label, "restorer": args.restorer or "model", "model": args.model,
                  "height": args.height, "fps": args.fps, "landmark_noise_px": args.landmark_noise,
                  "smoothing": args.smoothing, "batch_size": args.batch_size, "threads": args.threads,
                  "min_face_size": args.min_face_size, "mmap_threshold": args.mmap_threshold,
                  "platform": platform.platform(),
                  "python": platform.python_version(), "rows": rows, "markdown": table}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
