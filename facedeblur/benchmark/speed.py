"""Inference speed of the zoo's networks: latency, throughput, peak memory and achieved GFLOP/s vs a measured peak.

What is timed: the bare network forward (``model(x, u)``; ``model(x)`` for models without ``u``) under
``torch.inference_mode()`` on an input already on the device, i.e. no image decoding, conversion or padding.
Per configuration (model x size x batch x dtype): one FLOP-counting forward, ``warmup`` untimed forwards,
then ``repeats`` timed forwards (``time.perf_counter``; on CUDA ``torch.cuda.synchronize()`` before and after
each). Reported: median, interquartile range and min/max of the repeats; latency per image = median / batch;
throughput = batch / median.

Weights: a model's trained weights when ``facedeblur.load`` finds them, else random initialisation
(``facedeblur.create_model(name)``) -- **for speed only**: a forward pass costs the same whatever the weight
values (the deformable convolution gathers four neighbours per sample whatever the offsets are).

Peak memory, over all forwards of a configuration (FLOP-counting, warm-up, timed): CUDA --
``torch.cuda.max_memory_allocated`` minus the memory allocated before the first forward (model + input), plus the
absolute peak. CPU -- the process's peak resident set size minus its resident size before the first forward
(model + input resident): the peak is reset by writing ``5`` to
``/proc/self/clear_refs`` and read from ``VmHWM`` in ``/proc/self/status`` (Linux); where that is not possible
the lifetime peak (``ru_maxrss``) is reported and labelled as such. Each configuration runs in its own
subprocess by default (``isolate``), so allocator caches of earlier runs do not hide memory.

FLOPs: :func:`count_flops` with ``torch.utils.flop_counter.FlopCounterMode``, which counts matrix-multiply
class operators (mm, addmm, bmm, baddbmm, convolution, scaled-dot-product attention) at 2 FLOPs per
multiply-accumulate. Element-wise operators, activations, normalisation, pooling, interpolation and softmax
are not counted. facedeblur adds the deformable convolution's bilinear sampling, which FlopCounterMode does
not see: the pure-PyTorch inference path gathers the four corners with ``embedding_bag`` with per-sample
weights (counted as 2 FLOPs per gathered element and channel); torchvision's ``deform_conv2d`` (used on CUDA)
is counted as its im2col matmul (2 FLOPs per MAC) plus 8 FLOPs per sampled value and channel. The peak is
measured in the same run: the best of several square matmuls (n = 2048 on CPU, 8192 on CUDA) in the
configuration's dtype, 2 n^3 FLOPs each.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["SpeedConfig", "ModelSpec", "count_flops", "matmul_peak", "time_config", "run_speed", "zoo_spec",
           "deblurrer_spec", "as_spec", "engine_ratios", "DTYPES"]

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass
class ModelSpec:
    """How to build one network for timing: ``build(device, dtype) -> (module, weights note)``."""

    name: str
    build: Callable[[str, Any], tuple[Any, str]] = field(repr=False)
    continuous: bool = False
    frame_window: int = 1
    dtypes: tuple[str, ...] = ("float32",)
    zoo: bool = False  # buildable by name in a subprocess
    engine: str = "torch"  # "torch" or "onnxruntime" (facedeblur.load(..., engine=...))
    #: the PyTorch network whose FLOPs and parameters a row reports, when ``build`` returns something else (ONNX)
    flops_build: Callable[[str, Any], Any] | None = field(default=None, repr=False)


@dataclass
class SpeedConfig:
    sizes: tuple[int, ...] = (128, 256, 512)
    batches: tuple[int, ...] = (1, 8)
    device: str = "cpu"
    dtype: str = "fp32"
    warmup: int = 2
    repeats: int = 10
    threads: int | None = None
    isolate: bool = True
    peak_n: int | None = None  # matmul size for the peak (default 2048 CPU / 8192 CUDA)
    engines: tuple[str, ...] = ("torch",)  # each model is timed on each engine
    thread_counts: tuple[int, ...] = ()  # each configuration at each thread count (overrides ``threads``)


def zoo_spec(name: str, weights: str | None = None, engine: str = "torch") -> ModelSpec:
    """A zoo model: its trained weights if ``facedeblur.load`` finds them, else random init (speed only). With
    ``engine="onnxruntime"`` the timed module is its ONNX Runtime session (exported once, cached); FLOPs and
    parameters are the PyTorch network's."""
    import facedeblur

    card = facedeblur.model_info(name)

    def build_torch(device: str, dtype: Any) -> tuple[Any, str]:
        try:
            d = facedeblur.load(name, device=device, dtype=dtype, weights=weights)
            return d.model, "trained weights"
        except facedeblur.WeightsNotAvailableError:
            import torch

            torch.manual_seed(0)
            return facedeblur.create_model(name).eval().to(device=device, dtype=dtype), "random init (speed only)"

    def build_ort(device: str, dtype: Any) -> tuple[Any, str]:
        d = facedeblur.load(name, device=device, dtype=None, weights=weights, engine="onnxruntime")
        return d.model, "trained weights (ONNX Runtime)"

    if engine not in ("torch", "onnxruntime"):
        from ..errors import InputError

        raise InputError(f"speed engine must be torch or onnxruntime, not {engine!r}")
    return ModelSpec(card.name if not name.startswith(("local-dir:", "hf-hub:")) else name,
                     build_torch if engine == "torch" else build_ort,
                     bool(card.capabilities.continuous_u), int(card.capabilities.frame_window),
                     tuple(card.capabilities.dtypes) if engine == "torch" else ("float32",), zoo=True, engine=engine,
                     flops_build=None if engine == "torch" else (lambda dev, dt: build_torch(dev, dt)[0]))


def deblurrer_spec(d: Any) -> ModelSpec:
    """A loaded :class:`~facedeblur.restore.Deblurrer`: its network with its weights, moved to each configuration's
    device and dtype (timed in this process: it cannot be rebuilt by name in a subprocess)."""
    caps = d.card.capabilities

    def build(device: str, dtype: Any) -> tuple[Any, str]:
        return d.model.to(device=device, dtype=dtype), f"loaded Deblurrer ({d.card.source})"

    return ModelSpec(d.card.name, build, bool(caps.continuous_u), int(caps.frame_window), tuple(caps.dtypes))


def as_spec(model: Any, weights: str | None = None) -> ModelSpec:
    """A :class:`ModelSpec` as it is, a model name (:func:`zoo_spec`) or a loaded Deblurrer (:func:`deblurrer_spec`)."""
    from ..errors import InputError

    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, str):
        return zoo_spec(model, weights)
    from ..restore.deblurrer import Deblurrer

    if isinstance(model, Deblurrer):
        return deblurrer_spec(model)
    raise InputError(f"a speed benchmark model must be a ModelSpec, a model name or a facedeblur Deblurrer, not "
                     f"{type(model).__name__}")


# ------------------------------------------------------------------------------------------ FLOPs


def _embedding_bag_flops(weight_shape: Any, indices_shape: Any, *args: Any, out_shape: Any = None, **kw: Any) -> int:
    psw = args[4] if len(args) > 4 else kw.get("per_sample_weights")
    n = 1
    for d in indices_shape:
        n *= int(d)
    return n * int(weight_shape[1]) * (2 if psw is not None else 1)


def _tv_deform_flops(input_shape: Any, weight_shape: Any, offset_shape: Any, *args: Any, out_shape: Any = None,
                     **kw: Any) -> int:
    n, c = int(input_shape[0]), int(input_shape[1])
    cout, cin_g, kh, kw_ = (int(v) for v in weight_shape)
    ho, wo = int(offset_shape[2]), int(offset_shape[3])
    k = kh * kw_
    return 2 * n * ho * wo * cout * cin_g * k + 8 * n * ho * wo * k * c


def _custom_flop_mapping() -> dict[Any, Any]:
    import torch

    aten = torch.ops.aten
    mapping: dict[Any, Any] = {}
    for name in ("embedding_bag", "_embedding_bag", "_embedding_bag_forward_only"):
        op = getattr(aten, name, None)
        if op is not None:
            mapping[op] = _embedding_bag_flops
    try:  # torchvision's deformable convolution, when torchvision (and so the op) is loaded
        mapping[torch.ops.torchvision.deform_conv2d] = _tv_deform_flops
    except (AttributeError, RuntimeError):
        pass
    return mapping


FLOP_CONVENTION = ("FLOPs = torch.utils.flop_counter.FlopCounterMode count (mm/addmm/bmm/baddbmm/convolution/SDPA at "
                   "2 FLOPs per MAC) + the deformable convolution's bilinear gather (embedding_bag with per-sample "
                   "weights: 2 FLOPs per gathered element and channel; torchvision deform_conv2d: im2col matmul + 8 "
                   "FLOPs per sampled value and channel); element-wise ops, activations, normalisation, pooling, "
                   "interpolation and softmax are not counted")


def count_flops(model: Any, *inputs: Any) -> tuple[int, dict[str, int]]:
    """(total FLOPs, per-operator FLOPs) of one ``model(*inputs)`` forward; see :data:`FLOP_CONVENTION`."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode():
        fc = FlopCounterMode(display=False, custom_mapping=_custom_flop_mapping())
        with fc:
            model(*inputs)
    per = {str(k): int(v) for k, v in fc.get_flop_counts().get("Global", {}).items()}
    return int(fc.get_total_flops()), per


def matmul_peak(device: str = "cpu", dtype: str = "fp32", n: int | None = None, repeats: int = 5,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Best achieved GFLOP/s of an n x n matmul (2 n^3 FLOPs) on ``device`` in ``dtype``: one untimed matmul, then the
    fastest of ``repeats`` timed ones (``clock``: seconds, default ``time.perf_counter``)."""
    import torch

    dev = torch.device(device)
    dt = getattr(torch, DTYPES[dtype])
    n = n or (8192 if dev.type == "cuda" else 2048)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dev, dt)
    b = torch.randn(n, n, generator=g).to(dev, dt)
    best = float("inf")
    with torch.inference_mode():
        torch.mm(a, b)
        for _ in range(repeats):
            _sync(dev)
            t0 = clock()
            torch.mm(a, b)
            _sync(dev)
            best = min(best, clock() - t0)
    return {"n": n, "dtype": dtype, "device": str(dev), "best_s": best, "gflops": 2 * n ** 3 / best / 1e9}


def _sync(dev: Any) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# ------------------------------------------------------------------------------------------ memory


def _status_kb(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmHWM") is not None
    except OSError:
        return False


# ------------------------------------------------------------------------------------------ timing


def time_config(spec: ModelSpec, size: int, batch: int, cfg: SpeedConfig) -> dict[str, Any]:
    """Time one configuration in this process (see the module docstring); returns a result row."""
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    row: dict[str, Any] = {"model": spec.name, "engine": spec.engine, "device": cfg.device, "dtype": cfg.dtype,
                           "size": size, "batch": batch, "threads": torch.get_num_threads(), "warmup": cfg.warmup,
                           "repeats": cfg.repeats}
    tdt = DTYPES[cfg.dtype]
    if tdt not in spec.dtypes:
        row.update(status="unsupported", reason=f"{spec.name} supports {', '.join(spec.dtypes)}, not {tdt}")
        return row
    dev = torch.device(cfg.device)
    dt = getattr(torch, tdt)
    model, note = spec.build(cfg.device, dt)
    flop_model = spec.flops_build(cfg.device, dt) if spec.flops_build is not None else model
    row["weights"] = note
    row["params"] = int(sum(p.numel() for p in flop_model.parameters()))
    g = torch.Generator(device="cpu").manual_seed(0)
    shape = (batch, 3, size, size) if spec.frame_window <= 1 else (batch, spec.frame_window, 3, size, size)
    x = torch.rand(*shape, generator=g).to(dev, dt)
    inputs = (x, torch.full((batch,), 0.5, device=dev)) if spec.continuous else (x,)
    _sync(dev)
    if dev.type == "cuda":  # memory: from here (model and input resident) to the end of the timed forwards
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        mem_method = ("torch.cuda.max_memory_allocated over this configuration's forwards minus the memory allocated "
                      "before the first (model + input)")
    else:
        reset = _reset_peak_rss()
        base = (_status_kb("VmRSS") or 0) * 1024
        mem_method = ("peak RSS (VmHWM, reset via /proc/self/clear_refs) over this configuration's forwards minus the "
                      "RSS before the first (model + input)" if reset else
                      "process lifetime peak RSS (ru_maxrss; could not reset) minus the RSS before the first forward")
    flops, per_op = count_flops(flop_model, *inputs)  # also the first (untimed) forward
    row["flops"], row["flops_by_op"] = flops, per_op
    if flop_model is not model:
        del flop_model
        model(*inputs)  # the timed module's own first call (ONNX Runtime allocates its arena here)
    with torch.inference_mode():
        for _ in range(cfg.warmup):
            model(*inputs)
        times = []
        for _ in range(cfg.repeats):
            _sync(dev)
            t0 = time.perf_counter()
            model(*inputs)
            _sync(dev)
            times.append(time.perf_counter() - t0)
    if dev.type == "cuda":
        peak_abs = torch.cuda.max_memory_allocated(dev)
    else:
        hwm = _status_kb("VmHWM") if reset else None
        peak_abs = hwm * 1024 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    med = statistics.median(times)
    row.update(status="ok", times_s=times, median_s=med, p25_s=q[0], p75_s=q[2], min_s=min(times), max_s=max(times),
               latency_ms_per_image=1000 * med / batch, throughput_img_s=batch / med,
               peak_mem_mb=max(peak_abs - base, 0) / 2 ** 20, peak_mem_abs_mb=peak_abs / 2 ** 20,
               mem_method=mem_method, gflops_per_s=flops / med / 1e9)
    return row


def _worker(payload: dict[str, Any]) -> dict[str, Any]:
    cfg = SpeedConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in payload["cfg"].items()})
    if payload.get("peak"):
        return matmul_peak(cfg.device, cfg.dtype, cfg.peak_n)
    spec = zoo_spec(payload["model"], payload.get("weights"), payload.get("engine", "torch"))
    return time_config(spec, int(payload["size"]), int(payload["batch"]), cfg)


def _spawn(payload: dict[str, Any], threads: int | None) -> dict[str, Any]:
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-m", "facedeblur.benchmark.speed", "--worker", json.dumps(payload)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"speed worker failed (exit {proc.returncode}): {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_speed(specs: Sequence[Any], cfg: SpeedConfig, out_dir: str | os.PathLike | None = None,
              progress: bool = True, command: str = "", weights: dict[str, str] | None = None) -> dict[str, Any]:
    """Time every model x size x batch of ``cfg`` (in subprocesses if ``cfg.isolate`` and the model is a zoo
    model), measure the matmul peak, and write ``speed.{csv,json,md}`` + ``plots/speed_latency.svg`` to ``out_dir``.
    ``specs``: :class:`ModelSpec` objects, model names or loaded Deblurrers (:func:`as_spec`)."""
    from tqdm.auto import tqdm

    from .common import environment

    weights = weights or {}
    specs = [as_spec(s, weights.get(s) if isinstance(s, str) else None) for s in specs]
    load_before = _loadavg()
    payload_cfg = asdict(cfg)
    if cfg.isolate:
        peak = _spawn({"cfg": payload_cfg, "peak": True}, cfg.threads)
    else:
        if cfg.threads:
            import torch

            torch.set_num_threads(cfg.threads)
        peak = matmul_peak(cfg.device, cfg.dtype, cfg.peak_n)
    rows = []
    for engine in cfg.engines:  # zoo models on other engines (a spec made by hand keeps its own engine)
        if engine != "torch":
            specs += [zoo_spec(s.name, weights.get(s.name), engine) for s in list(specs)
                      if s.zoo and s.engine == "torch" and engine not in {t.engine for t in specs if t.name == s.name}]
    threads_list = list(cfg.thread_counts) or [cfg.threads]
    jobs = [(s, size, b, t) for s in specs for t in threads_list for size in cfg.sizes for b in cfg.batches]
    bar = tqdm(jobs, desc="speed", unit="config", disable=not progress)
    for spec, size, b, threads in bar:
        bar.set_postfix_str(f"{spec.name} {spec.engine} {size}px x{b} t{threads}")
        job_cfg = dataclasses.replace(cfg, threads=threads)
        try:
            if cfg.isolate and spec.zoo:
                row = _spawn({"cfg": asdict(job_cfg), "model": spec.name, "size": size, "batch": b,
                              "weights": weights.get(spec.name), "engine": spec.engine}, threads)
            else:
                row = time_config(spec, size, b, job_cfg)
        except Exception as exc:  # one failing configuration (e.g. out of memory) must not lose the others
            row = {"model": spec.name, "engine": spec.engine, "device": cfg.device, "dtype": cfg.dtype, "size": size,
                   "batch": b, "threads": threads, "status": "error", "reason": " ".join(str(exc).split())[:500]}
        if row.get("status") == "ok":
            row["pct_of_peak"] = 100 * row["gflops_per_s"] / peak["gflops"]
        rows.append(row)
    bar.close()
    doc = {"header": {"command": command, "environment": environment(cfg.device), "load_before": load_before,
                      "load_after": _loadavg()},
           "config": payload_cfg, "peak": peak, "flop_convention": FLOP_CONVENTION, "rows": rows}
    if out_dir is not None:
        write_speed_report(Path(out_dir), doc)
    return doc


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


SPEED_CSV_FIELDS = ["model", "engine", "weights", "device", "dtype", "threads", "size", "batch", "status", "median_ms", "p25_ms",
                    "p75_ms", "min_ms", "max_ms", "latency_ms_per_image", "throughput_img_s", "peak_mem_mb",
                    "peak_mem_abs_mb", "gflop_per_forward", "gflops_per_s", "pct_of_peak", "reason"]


def engine_ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For every (model, threads, size, batch) timed on both engines: both medians (ms) and torch / onnxruntime."""
    ok = {(r["model"], r.get("threads"), r["size"], r["batch"], r.get("engine", "torch")): r["median_s"]
          for r in rows if r.get("status") == "ok"}
    out = []
    for (m, t, size, b, e), med in ok.items():
        if e == "torch" and (m, t, size, b, "onnxruntime") in ok:
            o = ok[(m, t, size, b, "onnxruntime")]
            out.append({"model": m, "threads": t, "size": size, "batch": b, "torch_ms": 1000 * med,
                        "onnxruntime_ms": 1000 * o, "speedup": med / o})
    return out


def write_speed_report(out: Path, doc: dict[str, Any]) -> None:
    import csv
    import io

    from .common import env_lines
    from .plots import Series, line_chart, write_svg, write_text_atomic

    rows = doc["rows"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SPEED_CSV_FIELDS)
    for r in rows:
        ok = r.get("status") == "ok"
        vals = {"median_ms": r.get("median_s"), "p25_ms": r.get("p25_s"), "p75_ms": r.get("p75_s"),
                "min_ms": r.get("min_s"), "max_ms": r.get("max_s")}
        cells = []
        for k in SPEED_CSV_FIELDS:
            if k in vals:
                v = vals[k]
                cells.append(f"{1000 * v:.3f}" if ok and v is not None else "")
            elif k == "gflop_per_forward":
                cells.append(f"{r['flops'] / 1e9:.4f}" if ok else "")
            else:
                v = r.get(k, "")
                cells.append(f"{v:.4f}" if isinstance(v, float) else str(v))
        w.writerow(cells)
    write_text_atomic(out / "speed.csv", buf.getvalue())
    write_text_atomic(out / "speed.json", json.dumps(doc, indent=1, default=str) + "\n")
    series = []
    keys = sorted({(r["model"], r["batch"], r["dtype"]) for r in rows if r.get("status") == "ok"})
    sizes = sorted({r["size"] for r in rows})
    for model, b, dt in keys:
        ys = []
        for s in sizes:
            r = next((r for r in rows if r.get("status") == "ok" and (r["model"], r["batch"], r["dtype"], r["size"])
                      == (model, b, dt, s)), None)
            ys.append(None if r is None else r["latency_ms_per_image"])
        series.append(Series(f"{model} b{b} {dt}", sizes, ys, dashed=b > 1))
    plot = None
    if series:
        svg = line_chart(series, title=f"Latency per image vs size ({doc['config']['device']})",
                         xlabel="input size (px, square)", ylabel="median latency per image (ms, log)", log_y=True)
        plot = write_svg(out / "plots" / "speed_latency.svg", svg).name
    h, peak, cfg = doc["header"], doc["peak"], doc["config"]
    lines = ["# facedeblur inference speed", ""]
    if h.get("command"):
        lines += [f"Command: `{h['command']}`", ""]
    lines += env_lines(h["environment"])
    lb, la = h.get("load_before"), h.get("load_after")
    if lb and la:
        lines.append(f"* load average (1 min) before / after: {lb[0]} / {la[0]}")
        if max(lb[0], la[0]) > 0.5 and cfg["device"] == "cpu":
            lines.append("* **the load average shows other work on this machine while timing: CPU numbers are "
                         "upper bounds for latency (an idle machine can only be faster)**")
    lines += [f"* measured matmul peak: **{peak['gflops']:.1f} GFLOP/s** ({peak['dtype']}, {peak['n']}x{peak['n']} "
              f"matmul, best of 5, {peak['device']})",
              f"* {cfg['warmup']} warm-up + {cfg['repeats']} timed forwards per row (after one FLOP-counting "
              f"forward); bare network forward under torch.inference_mode(), input already on the device; "
              f"{'each configuration in its own process' if cfg['isolate'] else 'all configurations in one process'}",
              f"* FLOPs: {doc['flop_convention']}",
              "* models without trained weights are timed with random initialisation: **for speed only** (the "
              "cost of a forward does not depend on the weight values)", "",
              "| model | engine | weights | dtype | threads | size | batch | median ms (IQR) | min–max ms | ms / image | "
              "images/s | peak mem MB (abs) | GFLOP / forward | GFLOP/s | % of peak |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        eng, thr = r.get("engine", "torch"), r.get("threads", "")
        if r.get("status") != "ok":
            lines.append(f"| {r['model']} | {eng} | – | {r['dtype']} | {thr} | {r['size']} | {r['batch']} | "
                         f"**{r.get('status')}**: {r.get('reason', '')} | | | | | | | |")
            continue
        lines.append(
            f"| {r['model']} | {eng} | {r['weights']} | {r['dtype']} | {thr} | {r['size']} | {r['batch']} | "
            f"{1000 * r['median_s']:.1f} ({1000 * r['p25_s']:.1f}–{1000 * r['p75_s']:.1f}) | "
            f"{1000 * r['min_s']:.1f}–{1000 * r['max_s']:.1f} | {r['latency_ms_per_image']:.1f} | "
            f"{r['throughput_img_s']:.2f} | {r['peak_mem_mb']:.0f} ({r['peak_mem_abs_mb']:.0f}) | "
            f"{r['flops'] / 1e9:.3g} | {r['gflops_per_s']:.3g} | {r['pct_of_peak']:.2g}% |")
    ratios = engine_ratios(rows)
    if ratios:
        lines += ["", "Engines side by side (median latency; speed-up = torch / onnxruntime, > 1 means ONNX Runtime is "
                  "faster):", "", "| model | threads | size | batch | torch ms | onnxruntime ms | speed-up |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {q['model']} | {q['threads']} | {q['size']} | {q['batch']} | {q['torch_ms']:.1f} | "
                  f"{q['onnxruntime_ms']:.1f} | {q['speedup']:.2f}× |" for q in ratios]
    mm = next((r["mem_method"] for r in rows if r.get("mem_method")), "")
    if mm:
        lines += ["", f"Peak memory: {mm}; 'abs' = the absolute peak of the process / device allocator."]
    if plot:
        lines += ["", f"![latency vs size](plots/{plot})"]
    write_text_atomic(out / "speed.md", "\n".join(lines) + "\n")


if __name__ == "__main__":  # subprocess worker: python -m facedeblur.benchmark.speed --worker JSON
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(_worker(json.loads(sys.argv[2]))))
        sys.exit(0)
    sys.exit("usage: facedeblur bench speed --help (this module's own entry point is the subprocess worker)")
