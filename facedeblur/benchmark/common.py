"""Helpers shared by the benchmark runner, report and speed modules (so that none of them imports another's
private parts): the run environment (hardware, software, git commit), per-sample JSONL reading and result-file
names."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["environment", "env_lines", "read_jsonl", "slug"]


def _git(root: Path, *args: str) -> str:
    try:
        r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def environment(device: str = "cpu") -> dict[str, Any]:
    """Hardware and software of this run: CPU (model, usable cores, SIMD flags), GPU, torch, git commit."""
    import torch

    from .._version import __version__

    info: dict[str, Any] = {"facedeblur": __version__, "python": platform.python_version(), "torch": torch.__version__,
                            "numpy": np.__version__, "machine": platform.machine(), "system": platform.system(),
                            "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["usable_cpus"] = os.cpu_count()
    model, flags = platform.processor() or "?", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), model)
        flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    except OSError:
        pass
    info["cpu_model"] = model
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    info["cpu_flags"] = sorted(f for f in wanted if f in flags)
    try:
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:
        pass
    if str(device).startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        p = torch.cuda.get_device_properties(idx)
        info["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2 ** 30, 1),
                       "capability": f"{p.major}.{p.minor}", "cuda": torch.version.cuda}
    root = Path(__file__).resolve().parents[2]
    commit = _git(root, "rev-parse", "HEAD")
    if commit:
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
        info["git_commit"] = commit + ("+uncommitted-changes" if dirty else "")
    else:
        info["git_commit"] = "unknown (not a git checkout)"
    try:
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    info["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return info


def env_lines(env: dict[str, Any]) -> list[str]:
    lines = [f"* git {env.get('git_commit')}, facedeblur {env.get('facedeblur')}, torch {env.get('torch')}, "
             f"Python {env.get('python')}, numpy {env.get('numpy')}",
             f"* CPU: {env.get('cpu_model')} ({env.get('usable_cpus')} usable of {env.get('logical_cpus')} logical "
             f"CPUs; {', '.join(env.get('cpu_flags', [])) or 'no AVX2'}; torch capability "
             f"{env.get('torch_cpu_capability', '?')}; torch threads {env.get('torch_threads')})"]
    if "gpu" in env:
        g = env["gpu"]
        lines.append(f"* GPU: {g['name']} ({g['memory_gib']} GiB, compute capability {g['capability']}, "
                     f"CUDA {g['cuda']})")
    if "load_average" in env:
        lines.append(f"* load average at start (1/5/15 min): {' / '.join(str(v) for v in env['load_average'])}")
    lines.append(f"* time: {env.get('timestamp')}")
    return lines


# ------------------------------------------------------------------------------------------ results


def read_jsonl(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The records of a JSONL file. A last line cut short by a kill is dropped (and, with ``repair``,
    truncated away so appends start on a fresh line)."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    records, good = [], 0
    pos = 0
    while pos < len(raw):
        nl = raw.find(b"\n", pos)
        if nl < 0:
            break  # unterminated tail: a write that was interrupted
        line = raw[pos:nl]
        try:
            if line.strip():
                records.append(json.loads(line))
        except ValueError:
            break
        pos = good = nl + 1
    if repair and good < len(raw):
        with open(path, "r+b") as f:
            f.truncate(good)
    return records


def slug(key: str) -> str:
    """``key`` as a file name: characters other than letters, digits and ``-_.@`` become ``_``."""
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in key)
