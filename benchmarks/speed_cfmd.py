"""CPU inference speed of the CFMD-GAN generator (paper / lite variants), fp32 and bf16.

Every (variant, dtype, threads) configuration runs in its own subprocess (clean thread pool, its own peak RSS):
random-init weights (timing only) with the CADC offset/mask convs set to small random values so every
deformable conv really samples off-grid; warm-up runs, then ``--repeats`` timed forwards under
``torch.inference_mode()``; median, min and max. bf16 runs also report the PSNR of the bf16 output against
the fp32 output of the same weights, and both outputs' PSNR against a sharp reference (a face crop of
``skimage.data.astronaut()``, motion-blurred to make the input) -- with random weights this checks numerics,
not restoration quality. A short probe measures fp32 vs bf16 conv/matmul throughput to show what the CPU can do.

    python benchmarks/speed_cfmd.py --variants cfmd-gan.paper,cfmd-gan.lite --size 256 --batch 1 \\
        --dtypes fp32,bf16 --repeats 5 --threads 2 --out benchmarks/results
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {("cfmd-gan.paper", "fp32"): 2.5, ("cfmd-gan.paper", "bf16"): 1.2}  # seconds per 256x256 face
PSNR_TARGET_DB = 0.05  # bf16 within this of fp32 (issue text)


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="cfmd-gan.paper,cfmd-gan.lite")
    p.add_argument("--size", type=int, default=256, help="square input size (multiple of 4)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", default="2", help="torch intra-op threads; a comma list runs each")
    p.add_argument("--omp-wait-policy", default="default", choices=["passive", "active", "default"],
                   help="OMP_WAIT_POLICY for the workers (default: leave the environment alone). 'passive' keeps timings sane when another "
                        "process occupies a core (spinning OpenMP threads then lose whole scheduler slices) but "
                        "is ~30%% slower on an idle machine")
    p.add_argument("--u", type=float, default=0.5)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--name", default="speed_cfmd_cpu", help="basename of the .md/.json results")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.size % 4:
        p.error("--size must be a multiple of 4 (the generator's pad multiple)")
    bad = set(args.dtypes.split(",")) - {"fp32", "bf16"}
    if bad:
        p.error(f"unknown dtypes {sorted(bad)}; use fp32 and/or bf16")
    return args


# ------------------------------------------------------------------------------------------------ worker


def _psnr(a, b) -> float:
    import torch

    mse = (a.double().clamp(0, 1) - b.double().clamp(0, 1)).square().mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def _face_pair(size: int, batch: int):
    """(blurry input, sharp reference) in [0, 1], (batch, 3, size, size), from skimage's astronaut."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from skimage import data

    img = data.astronaut()[20:236, 140:356]  # her face, 216x216
    sharp = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255
    sharp = F.interpolate(sharp, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    k = torch.zeros(3, 1, 9, 9)
    k[:, 0, torch.arange(9), torch.arange(9)] = 1 / 9  # diagonal 9-px linear motion blur
    blurry = F.conv2d(F.pad(sharp, (4, 4, 4, 4), mode="replicate"), k, groups=3)
    return blurry.expand(batch, -1, -1, -1).contiguous(), sharp.expand(batch, -1, -1, -1).contiguous()


def _build(variant: str, seed: int = 0):
    import torch

    import facedeblur
    from facedeblur.models.cfmd_gan import CADC

    torch.manual_seed(seed)
    model = facedeblur.create_model(variant).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # zero-initialised offsets/masks would make every DCN a plain conv on the grid
        for mod in model.modules():
            if isinstance(mod, CADC):
                for conv in (mod.offset, mod.mask):
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.01)
                    conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.5)
    return model


def _run_worker(cfg: dict) -> dict:
    import torch

    torch.set_num_threads(cfg["threads"])
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[cfg["dtype"]]
    blurry, sharp = _face_pair(cfg["size"], cfg["batch"])
    model = _build(cfg["variant"])
    res: dict = {}
    with torch.inference_mode():
        if dtype != torch.float32:
            ref_out = model(blurry, cfg["u"])[-1].float()
        model = model.to(dtype)
        x = blurry.to(dtype)
        t0 = time.perf_counter()
        for _ in range(cfg["warmup"]):
            out = model(x, cfg["u"])[-1]
        res["warmup_s"] = time.perf_counter() - t0
        times = []
        for _ in range(cfg["repeats"]):
            t0 = time.perf_counter()
            out = model(x, cfg["u"])[-1]
            times.append(time.perf_counter() - t0)
    out = out.float()
    res.update(times_s=times, median_s=statistics.median(times), min_s=min(times), max_s=max(times),
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               psnr_vs_sharp_db=_psnr(out, sharp), threads=torch.get_num_threads())
    if dtype != torch.float32:
        res["psnr_vs_fp32_db"] = _psnr(out, ref_out)
        res["fp32_psnr_vs_sharp_db"] = _psnr(ref_out, sharp)
    return res


def _probe(threads: int) -> dict:
    """fp32 vs bf16 throughput of the two kernels that dominate CFMD-GAN: a 3x3 conv and the DCN matmul."""
    import torch
    import torch.nn.functional as F

    from facedeblur.models.layers import cpu_has_fast_dtype

    torch.set_num_threads(threads)
    out: dict = {"onednn_native_bf16": cpu_has_fast_dtype(torch.bfloat16)}
    x = torch.randn(1, 64, 64, 64).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3)
    s, wm = torch.randn(4096, 576), torch.randn(576, 64)
    gmac = 64 * 64 * 9 * 64 * 64 / 1e9
    with torch.inference_mode():
        for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            for kind, fn in (("conv3x3", lambda: F.conv2d(x.to(dt), w.to(dt), padding=1)),
                             ("matmul", lambda: torch.mm(s.to(dt), wm.to(dt)))):
                fn()
                ts = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    fn()
                    ts.append(time.perf_counter() - t0)
                out[f"{kind}_{name}_gmac_per_s"] = gmac / min(ts)
    return out


# ------------------------------------------------------------------------------------------------ driver


def _hardware() -> dict:
    import torch

    info: dict = {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
                  "logical_cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0))}
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
        flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    except OSError:
        model, flags = platform.processor() or "?", set()
    info["cpu_model"] = model
    info["flags"] = {f: f in flags for f in ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")}
    info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    try:
        root = Path(__file__).resolve().parents[1]
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["git_commit"] = commit + ("+uncommitted-changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = "?"
    return info


def _spawn(cfg: dict, wait_policy: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"]), MKL_NUM_THREADS=str(cfg["threads"]))
    if wait_policy != "default":
        env["OMP_WAIT_POLICY"] = wait_policy.upper()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {cfg} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _markdown(report: dict) -> str:
    hw, a = report["hardware"], report["args"]
    flags = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in hw["flags"].items())
    lines = [
        "# CFMD-GAN CPU inference speed",
        "",
        f"Command: `{report['command']}`",
        "",
        f"* CPU: {hw['cpu_model']} ({hw['usable_cpus']} usable of {hw['logical_cpus']} logical CPUs); {flags}; "
        f"torch CPU capability {hw['torch_cpu_capability']}",
        f"* torch {hw['torch']}, Python {hw['python']}, git {hw['git_commit']}",
        f"* input {a['batch']}x3x{a['size']}x{a['size']}, u={a['u']}, `torch.inference_mode()`, random-init weights "
        f"with non-zero CADC offsets/masks; {a['warmup']} warm-up + {a['repeats']} timed runs per row; "
        f"OMP_WAIT_POLICY={a['omp_wait_policy']}",
        f"* load average (1 min) before/after: {report['load_before'][0]:.2f} / {report['load_after'][0]:.2f}",
    ]
    if max(report["load_before"][0], report["load_after"][0]) > 0.5:
        lines.append("* **Note: the load average shows other work, so other processes may have been running while "
                     "these timings were taken (earlier rows of this run count too); on an idle machine the numbers "
                     "can only be lower.**")
    lines += ["", "| variant | dtype | threads | median s | min s | max s | peak RSS MB | target s | bf16 vs fp32 PSNR dB "
              "| PSNR vs sharp dB (fp32 -> this) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        tgt = TARGETS.get((r["variant"], r["dtype"]))
        tgt_s = "-" if tgt is None else f"{tgt:.1f} ({'met' if r['median_s'] <= tgt else 'missed'})"
        vs32 = f"{r['psnr_vs_fp32_db']:.1f}" if "psnr_vs_fp32_db" in r else "-"
        sharp = (f"{r['fp32_psnr_vs_sharp_db']:.3f} -> {r['psnr_vs_sharp_db']:.3f} "
                 f"(Δ {r['psnr_vs_sharp_db'] - r['fp32_psnr_vs_sharp_db']:+.3f})"
                 if "fp32_psnr_vs_sharp_db" in r else f"{r['psnr_vs_sharp_db']:.3f}")
        lines.append(f"| {r['variant']} | {r['dtype']} | {r['threads']} | {r['median_s']:.2f} | {r['min_s']:.2f} | "
                     f"{r['max_s']:.2f} | {r['peak_rss_mb']:.0f} | {tgt_s} | {vs32} | {sharp} |")
    p = report["probe"]
    lines += ["", "Kernel probe (same threads as the first row; GMAC/s, higher is better):", "",
              "| kernel | fp32 | bf16 | bf16 / fp32 |", "|---|---|---|---|"]
    for kind in ("conv3x3", "matmul"):
        f, b = p[f"{kind}_fp32_gmac_per_s"], p[f"{kind}_bf16_gmac_per_s"]
        lines.append(f"| {kind} (64 ch) | {f:.1f} | {b:.2f} | {b / f:.3f} |")
    lines += ["", f"oneDNN native bf16 on this CPU: {'yes' if p['onednn_native_bf16'] else 'no'}.", ""]
    if not p["onednn_native_bf16"]:
        lines += ["Without AVX512-BF16/AMX, bf16 convolutions and matmuls are emulated (see the probe), so a bf16 "
                  "run cannot be faster than fp32 here; the bf16 target is only reachable on CPUs with native bf16. "
                  "PSNR vs sharp uses random weights: it checks numerics, not restoration quality.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker is not None:
        print(json.dumps(_run_worker(json.loads(args.worker))))
        return 0
    threads = [int(t) for t in args.threads.split(",")]
    load_before = os.getloadavg()
    rows = []
    configs = [(v, d, t) for v in args.variants.split(",") for d in args.dtypes.split(",") for t in threads]
    from tqdm import tqdm

    for variant, dtype, t in tqdm(configs, desc="configs", unit="cfg"):
        cfg = dict(variant=variant, dtype=dtype, threads=t, size=args.size, batch=args.batch, u=args.u,
                   repeats=args.repeats, warmup=args.warmup)
        rows.append({**cfg, **_spawn(cfg, args.omp_wait_policy)})
    probe_env = dict(os.environ, OMP_NUM_THREADS=str(threads[0]))
    if args.omp_wait_policy != "default":
        probe_env["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    probe = json.loads(subprocess.run(
        [sys.executable, "-c", f"import json, sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
         f"import speed_cfmd; print(json.dumps(speed_cfmd._probe({threads[0]})))"],
        env=probe_env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    report = {"command": "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])),
              "args": {k: v for k, v in vars(args).items() if k != "worker"}, "hardware": _hardware(),
              "load_before": list(load_before), "load_after": list(os.getloadavg()), "rows": rows, "probe": probe,
              "targets_s": {f"{k[0]}/{k[1]}": v for k, v in TARGETS.items()}, "psnr_target_db": PSNR_TARGET_DB,
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    md = _markdown(report)
    out = Path(args.out)
    _write_atomic(out / f"{args.name}.json", json.dumps(report, indent=2) + "\n")
    _write_atomic(out / f"{args.name}.md", md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
