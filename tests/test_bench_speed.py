"""Speed runner (facedeblur.benchmark.speed): rows, FLOP counting, peak, report files. Tiny random-init models."""
from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET

import pytest
import torch

import facedeblur

from facedeblur.benchmark import speed as S
from tinymodels import tiny_model


def _spec(**kw) -> S.ModelSpec:
    return S.ModelSpec("tiny", lambda dev, dt: (tiny_model().eval().to(dev, dt), "random init (speed only)"),
                       continuous=True, **kw)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("speed")
    cfg = S.SpeedConfig(sizes=(16, 32), batches=(1, 2), warmup=1, repeats=3, isolate=False, peak_n=128)
    return {"doc": S.run_speed([_spec()], cfg, out, progress=False, command="test"), "out": out}


def test_speed_rows(run):
    rows = run["doc"]["rows"]
    assert [(r["size"], r["batch"]) for r in rows] == [(16, 1), (16, 2), (32, 1), (32, 2)]
    for r in rows:
        assert r["status"] == "ok" and r["weights"] == "random init (speed only)"
        assert len(r["times_s"]) == 3 and r["min_s"] <= r["p25_s"] <= r["median_s"] <= r["p75_s"] <= r["max_s"]
        assert r["throughput_img_s"] == pytest.approx(r["batch"] / r["median_s"])
        assert r["latency_ms_per_image"] == pytest.approx(1000 * r["median_s"] / r["batch"])
        assert r["gflops_per_s"] == pytest.approx(r["flops"] / r["median_s"] / 1e9)
        assert r["pct_of_peak"] == pytest.approx(100 * r["gflops_per_s"] / run["doc"]["peak"]["gflops"])
        assert r["peak_mem_mb"] >= 0 and r["peak_mem_abs_mb"] > 0
    by = {(r["size"], r["batch"]): r["flops"] for r in rows}
    # every counted operator works per image and per pixel (the u mapping network is per image too):
    # batch 2 costs exactly twice batch 1, and 4x the pixels almost 4x (the mapping MLP does not grow)
    assert by[(16, 2)] == 2 * by[(16, 1)] and by[(32, 2)] == 2 * by[(32, 1)]
    assert 3.9 < by[(32, 1)] / by[(16, 1)] <= 4.0
    assert run["doc"]["peak"]["gflops"] > 0


def test_speed_report_files(run):
    out = run["out"]
    lines = (out / "speed.csv").read_text().splitlines()
    assert lines[0].split(",") == S.SPEED_CSV_FIELDS and len(lines) == 5
    doc = json.loads((out / "speed.json").read_text())
    assert doc["flop_convention"] == S.FLOP_CONVENTION and len(doc["rows"]) == 4
    md = (out / "speed.md").read_text()
    assert "measured matmul peak" in md and "random init (speed only)" in md and "for speed only" in md
    root = ET.parse(out / "plots" / "speed_latency.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"


def test_count_flops_conv_matches_formula():
    conv = torch.nn.Conv2d(3, 5, 3, padding=1, bias=True)
    flops, per = S.count_flops(conv, torch.rand(2, 3, 10, 12))
    assert flops == 2 * 2 * 10 * 12 * 5 * 3 * 9  # 2 FLOPs per multiply-accumulate; the bias add is not counted


def test_count_flops_includes_the_deformable_gather():
    from facedeblur.models.layers import deform_conv2d

    n, c, cout, h, w = 1, 4, 6, 9, 11
    x, weight = torch.rand(n, c, h, w), torch.rand(cout, c, 3, 3)
    offset, mask = torch.rand(n, 18, h, w) - 0.5, torch.rand(n, 9, h, w)
    flops, per = S.count_flops(lambda *a: deform_conv2d(*a), x, offset, weight, mask)
    k = 9
    matmul = 2 * n * h * w * cout * c * k  # im2col matmul
    gather = 2 * 4 * n * h * w * k * c  # 4 bilinear corners per sample and channel, multiply + add
    assert flops == matmul + gather
    assert any("embedding_bag" in op for op in per)


def test_unsupported_dtype_row():
    row = S.time_config(_spec(dtypes=("float32",)), 16, 1, S.SpeedConfig(dtype="fp16", isolate=False))
    assert row["status"] == "unsupported" and "float16" in row["reason"]


def test_zoo_spec_without_weights_is_random_init_for_speed_only():
    assert not facedeblur.model_info("cfmd-gan.paper").pretrained  # no weights ship for the paper variant
    spec = S.zoo_spec("cfmd-gan.paper")
    assert spec.continuous and spec.zoo and "bfloat16" in spec.dtypes
    model, note = spec.build("cpu", torch.float32)
    assert note == "random init (speed only)"
    assert sum(p.numel() for p in model.parameters()) > 0


def test_names_and_deblurrers_are_accepted(tmp_path):
    """run_speed takes model names and loaded Deblurrers as well as ModelSpecs (the benchmark API accepts a model
    wherever it takes one)."""
    from facedeblur.models import get_card
    from facedeblur.restore.deblurrer import Deblurrer

    d = Deblurrer(tiny_model(), dataclasses.replace(get_card("cfmd-gan.lite"), name="tiny-loaded"))
    cfg = S.SpeedConfig(sizes=(16,), batches=(1,), warmup=0, repeats=1, isolate=False, peak_n=64)
    doc = S.run_speed(["cfmd-gan.paper", d], cfg, progress=False)
    rows = {r["model"]: r for r in doc["rows"]}
    assert set(rows) == {"cfmd-gan.paper", "tiny-loaded"} and all(r["status"] == "ok" for r in rows.values())
    assert rows["tiny-loaded"]["params"] == sum(p.numel() for p in d.model.parameters())
    assert rows["tiny-loaded"]["weights"].startswith("loaded Deblurrer")
    with pytest.raises(facedeblur.InputError, match="ModelSpec, a model name or a facedeblur Deblurrer"):
        S.run_speed([object()], cfg, progress=False)


def test_zoo_spec_with_weights_times_the_trained_model():
    if not facedeblur.model_info("cfmd-gan.lite").pretrained:
        pytest.skip("no embedded cfmd-gan.lite weights in this tree")
    model, note = S.zoo_spec("cfmd-gan.lite").build("cpu", torch.float32)
    assert note == "trained weights"
    reference = facedeblur.load("cfmd-gan.lite", device="cpu").model
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_matmul_peak_is_torchs_flop_count_over_the_fastest_repeat():
    """The peak divides the FLOPs of one n x n matmul -- as torch's own FlopCounterMode counts them, not the
    implementation's formula -- by the fastest timed repeat. A scripted clock makes the repeats take 0.5, 0.2 and
    0.3 s: the answer must use 0.2 s (not the mean, the first, or the untimed warm-up)."""
    from torch.utils.flop_counter import FlopCounterMode

    n = 48
    counter = FlopCounterMode(display=False)
    with counter:
        torch.mm(torch.ones(n, n), torch.ones(n, n))
    flops = counter.get_total_flops()
    ticks = iter([0.0, 0.5, 1.0, 1.2, 2.0, 2.3])  # (start, stop) of each timed repeat

    p = S.matmul_peak("cpu", "fp32", n=n, repeats=3, clock=lambda: next(ticks))
    assert next(ticks, None) is None  # the clock was read exactly twice per repeat
    assert p["n"] == n and p["best_s"] == pytest.approx(0.2)
    assert p["gflops"] == pytest.approx(flops / 0.2 / 1e9)


@pytest.mark.slow
def test_isolated_subprocess_rows(tmp_path):
    cfg = S.SpeedConfig(sizes=(16,), batches=(1,), warmup=0, repeats=2, threads=1, isolate=True, peak_n=128)
    doc = S.run_speed([S.zoo_spec("cfmd-gan.lite")], cfg, tmp_path, progress=False)
    (row,) = doc["rows"]
    expected = "trained weights" if facedeblur.model_info("cfmd-gan.lite").pretrained else "random init (speed only)"
    assert row["status"] == "ok" and row["threads"] == 1 and row["weights"] == expected


class _Hungry(torch.nn.Module):
    """Touches a 64 MiB temporary in every forward: the peak-memory measure must see it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        tmp = torch.ones(16 * 2 ** 20)  # 64 MiB of float32
        return x * self.w + tmp[0]


def test_peak_memory_sees_temporary_allocations():
    from pathlib import Path

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc")
    spec = S.ModelSpec("hungry", lambda dev, dt: (_Hungry().to(dev, dt), "test"))
    row = S.time_config(spec, 8, 1, S.SpeedConfig(warmup=1, repeats=2, isolate=False))
    assert row["status"] == "ok" and 56 <= row["peak_mem_mb"] <= 200
    assert row["flops"] == 0  # element-wise work only: nothing FlopCounterMode counts
