"""Start-up time of the ``facedeblur`` commands that only read model cards: ``--help``, ``list``, ``info`` (issue #18:
under 1 s of CPU on an idle 2-core machine; they used to take ~4 s because they imported torch and built networks).

Each command runs ``--repeats`` times as a fresh ``python -m facedeblur ...`` subprocess (a cold interpreter, as a
user's shell starts it; the OS file cache is warm after the first run). Per run: wall time, and the CPU time (user +
system) of the child process from ``os.wait4``. CPU time is the figure to compare with the target: on a busy machine
the wall time also holds the time spent waiting for a core. ``list --params`` (builds every network on the meta
device, so it imports torch) is timed too, as the cost that plain ``list`` / ``info`` no longer pay. Once per command
the script also records which of the heavy modules (torch, cv2, skimage, the model file) were imported.

Run from the repository root, in the environment whose facedeblur you want to time::

    git archive 571dcf3 facedeblur | tar -x -C /tmp/before     # optional: the code before issue #18, to compare
    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/cli_startup.py --repeats 10 --compare /tmp/before

``--compare DIR`` times the same commands with the ``facedeblur`` package found in DIR (run with DIR as the working
directory, so ``python -m facedeblur`` imports it instead of the installed one; its zoo configs still come from the
installed package). Writes ``benchmarks/results/cli_startup.json`` and ``cli_startup.md`` (``--out DIR`` to change).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COMMANDS: list[list[str]] = [["--help"], ["list"], ["info", "cfmd-gan"], ["info", "cfmd-gan.paper", "--json"],
                             ["list", "--params"]]
HEAVY = ("torch", "cv2", "skimage", "facedeblur.models.cfmd_gan")
TARGET_CPU_S = 1.0


def _run_once(argv: list[str], cwd: str) -> tuple[float, float, int]:
    """(wall s, child CPU s, exit status) of one ``python -m facedeblur ARGV``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "facedeblur", *argv], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def _heavy_imports(argv: list[str], cwd: str) -> list[str]:
    """The modules of :data:`HEAVY` that the command imports (run in a child that reports ``sys.modules``)."""
    code = ("import contextlib, io, json, sys\nfrom facedeblur.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()):\n    try:\n        main({argv!r})\n"
            "    except SystemExit:  # --help\n        pass\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _git_commit() -> str:
    try:
        r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                           timeout=10)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return r.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "?"


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10, help="runs per command (default 10)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="results folder")
    ap.add_argument("--compare", type=Path, metavar="DIR",
                    help="also time the facedeblur package in DIR (e.g. an older commit, see the module doc)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.compare is not None and not (args.compare / "facedeblur" / "__init__.py").is_file():
        ap.error(f"--compare {args.compare}: no facedeblur/__init__.py in that folder")

    import facedeblur

    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as empty:  # not the checkout: the installed facedeblur is what runs
        versions = [("installed", empty)] + ([(str(args.compare), str(args.compare))] if args.compare else [])
        for version, cwd in versions:
            for cmd in COMMANDS:
                if version != "installed" and "--params" in cmd:
                    continue  # no such option before issue #18
                walls, cpus = [], []
                for _ in range(args.repeats):
                    wall, cpu, rc = _run_once(cmd, cwd)
                    if rc != 0:
                        raise SystemExit(f"facedeblur {' '.join(cmd)} ({version}) exited with {rc}")
                    walls.append(wall)
                    cpus.append(cpu)
                rows.append({"version": version, "command": "facedeblur " + " ".join(cmd), "runs": args.repeats,
                             "wall_s": _summary(walls), "cpu_s": _summary(cpus), "wall_samples_s": walls,
                             "cpu_samples_s": cpus, "heavy_imports": _heavy_imports(cmd, cwd)})
                print(f"{version[:12]:<12} {rows[-1]['command']:<40} cpu median {rows[-1]['cpu_s']['median']:.3f} s, "
                      f"wall median {rows[-1]['wall_s']['median']:.3f} s, imports "
                      f"{rows[-1]['heavy_imports'] or 'none'}")
    env = {"facedeblur": facedeblur.__version__, "git": _git_commit(), "python": platform.python_version(),
           "machine": platform.machine(), "system": platform.system(), "logical_cpus": os.cpu_count(),
           "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
           "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
           "niceness": os.nice(0), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    doc = {"command": "python benchmarks/cli_startup.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "environment": env, "target_cpu_s": TARGET_CPU_S, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    _write(args.out / "cli_startup.json", json.dumps(doc, indent=1) + "\n")
    _write(args.out / "cli_startup.md", _markdown(doc))
    return 0


def _markdown(doc: dict[str, Any]) -> str:
    env = doc["environment"]
    lines = ["# `facedeblur` start-up: commands that only read model cards", "",
             f"Command: `{doc['command']}` (each row: {doc['rows'][0]['runs']} fresh `python -m facedeblur ...` "
             f"processes). facedeblur {env['facedeblur']}, git {env['git']}, Python {env['python']}, "
             f"{env['system']} {env['machine']}, {env['usable_cpus']} usable CPUs, niceness {env['niceness']}, "
             f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}; load average before / after: "
             f"{', '.join(f'{v:.2f}' for v in env['loadavg_before'])} / "
             f"{', '.join(f'{v:.2f}' for v in env['loadavg_after'])}.", "",
             f"Target (issue #18): `list` / `info` under {doc['target_cpu_s']:g} s of CPU on an idle machine. CPU = "
             "user + system time of the child process (`os.wait4`); wall time also counts waiting for a core, which "
             "a busy machine inflates.", "",
             "| facedeblur | command | CPU s, median (min–max) | wall s, median (min–max) | heavy modules "
             "imported |",
             "|---|---|---|---|---|"]
    for r in doc["rows"]:
        c, w = r["cpu_s"], r["wall_s"]
        version = "this tree (installed)" if r["version"] == "installed" else f"`{r['version']}` (--compare)"
        lines.append(f"| {version} | `{r['command']}` | {c['median']:.3f} ({c['min']:.3f}–{c['max']:.3f}) | "
                     f"{w['median']:.3f} ({w['min']:.3f}–{w['max']:.3f}) | "
                     f"{', '.join(r['heavy_imports']) or 'none'} |")
    lines += ["", "`list --params` and `info --params` build each network on the meta device to count its "
              "parameters, which needs torch: that is what plain `list` and `info` cost before issue #18.", ""]
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    """Write ``text`` atomically (temp file + ``os.replace``)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


if __name__ == "__main__":
    sys.exit(main())
