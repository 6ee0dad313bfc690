"""Training throughput per recipe choice: samples/s of one optimizer step (forward + backward + Adam) of a zoo
architecture at a given crop, batch, width, blocks and thread count, and the data engine's time per sample.

Measure before choosing a recipe (issue #12 C): quality per CPU hour starts with samples per hour. Every
configuration runs in its own subprocess (clean thread pool); random-init weights with the deformable offsets set
to small random values (so every deformable conv samples off-grid, as a trained one does); ``--warmup`` steps,
then ``--steps`` timed steps; the loss is multi-scale Charbonnier on random targets (the cost does not depend on
the values). The data time is that of :class:`facedeblur.data.strong.SynthTrainSet` on synthetic sharp faces.

    python benchmarks/train_throughput.py --configs "cfmd-gan.lite:crop=96" "cfmd-gan.lite:crop=128" \\
        --threads 1 --out benchmarks/results/train_throughput.json

A configuration is ``VARIANT[:key=value,...]`` with keys crop, batch and any arch kwarg (width, num_res, ...).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def _parse_config(text: str) -> tuple[str, dict[str, int | float]]:
    name, _, rest = text.partition(":")
    kw: dict[str, int | float] = {}
    for part in filter(None, rest.split(",")):
        k, _, v = part.partition("=")
        kw[k.strip()] = float(v) if "." in v else int(v)
    return name, kw


def _child(cfg: str, threads: int, warmup: int, steps: int) -> dict:
    import torch

    import facedeblur
    from facedeblur.train.losses import multiscale_charbonnier

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    name, kw = _parse_config(cfg)
    crop, batch = int(kw.pop("crop", 96)), int(kw.pop("batch", 8))
    net = facedeblur.create_model(name, pretrained=False, **kw)
    net = getattr(net, "net", net)
    with torch.no_grad():  # deformable offsets off-grid, as after training
        for n, p in net.named_parameters():
            if "offset" in n or "mask" in n:
                p.normal_(0, 0.01)
    params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x, y, u = torch.rand(batch, 3, crop, crop), torch.rand(batch, 3, crop, crop), torch.rand(batch)
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        out = net(x, u)
        loss = multiscale_charbonnier(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    step_s = sorted(times)[len(times) // 2]
    return {"config": cfg, "variant": name, "crop": crop, "batch": batch, "arch_overrides": kw, "params": params,
            "threads": threads, "step_s_median": step_s, "samples_per_s": batch / step_s,
            "pixels_per_s": batch * crop * crop / step_s}


def _data_time(samples: int = 50) -> float:
    """Seconds per SynthTrainSet sample (256 px faces made from skimage's astronaut, crop 96)."""
    import tempfile

    import cv2
    import torch
    from skimage.data import astronaut

    from facedeblur.data.strong import SharpPool, SynthTrainSet
    from facedeblur.data.synth import SynthConfig

    with tempfile.TemporaryDirectory() as d:
        img = cv2.resize(astronaut()[0:300, 100:400], (256, 256), interpolation=cv2.INTER_AREA)
        p = Path(d) / "face.png"
        cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        ds = SynthTrainSet(SharpPool([p]), SynthConfig(), crop=96, scale_range=(1.0, 1.3), epoch_samples=samples)
        torch.manual_seed(0)
        t = time.perf_counter()
        for i in range(samples):
            ds[i]
        return (time.perf_counter() - t) / samples


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["cfmd-gan.lite:crop=96", "cfmd-gan.lite:crop=128"])
    p.add_argument("--threads", default="1", help="comma list of torch thread counts")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(_child(a.child[0], int(a.child[1]), int(a.child[2]), int(a.child[3]))))
        return 0
    rows = []
    for cfg in a.configs:
        for th in (int(t) for t in a.threads.split(",")):
            env = {**os.environ, "OMP_NUM_THREADS": str(th)}
            r = subprocess.run([sys.executable, __file__, "--child", cfg, str(th), str(a.warmup), str(a.steps)],
                               capture_output=True, text=True, env=env, check=False)
            if r.returncode:
                print(f"{cfg} threads={th}: failed\n{r.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            x = rows[-1]
            print(f"{cfg:45s} threads {th}  params {x['params'] / 1e6:5.2f} M  step {x['step_s_median']:6.2f} s  "
                  f"{x['samples_per_s']:6.2f} samples/s  {x['pixels_per_s'] / 1e3:7.1f} kpx/s", flush=True)
    data_s = _data_time()
    print(f"data engine (SynthTrainSet, crop 96): {data_s * 1e3:.1f} ms per sample")
    if a.out:
        out = {"rows": rows, "data_s_per_sample": data_s, "machine": platform.platform(),
               "cpu_count": os.cpu_count(), "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(a.out).with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1))
        os.replace(tmp, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
