"""Quality runner (facedeblur.benchmark.runner/report/plots/cli): resume, report files, SVG, no-weights rows.

The samples are tiny synthetic windows and kernel-blurred crops built here (no faces: the dlib face metrics are
off, except in one test that uses skimage's astronaut). Models are random-init (mechanics only) or callables.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from facedeblur.benchmark import data as D
from facedeblur.benchmark import runner as R
from facedeblur.benchmark.plots import Series, bar_chart, line_chart, nice_ticks
from facedeblur.errors import DataError

SVG = "{http://www.w3.org/2000/svg}"


def _astronaut(size: int) -> np.ndarray:
    from skimage.data import astronaut

    return cv2.resize(astronaut()[20:236, 140:356], (size, size), interpolation=cv2.INTER_AREA)


def make_manifest(root: Path, n_windows: int = 5, n_kernel: int = 3, size: int = 32) -> dict:
    """Windows of N = 3, 5 frames (a shifting astronaut) + kernel-blurred crops + two GT-less images."""
    face = _astronaut(size + 16)
    samples = []
    for i in range(n_windows):
        n = 3 if i % 2 else 5
        step = 1 + i  # stronger motion -> lower severity
        frames = np.stack([np.roll(face, (t - n // 2) * step, axis=1)[8:8 + size, 8:8 + size] for t in range(n)])
        order = list(range(n))
        path = root / f"w{i}.npz"
        D._save_npz(path, frames=frames)
        data = D.SampleData(D.average_frames(frames), frames[n // 2], frames)
        samples.append(D._record(f"pravg/w{i}", "pravg", data, {"kind": "npz", "path": str(path)}, n=n, stride=1,
                                 fmr_order=order, gt_index=n // 2, clip="c", identity="p"))
    for i in range(n_kernel):
        k = D.trajectory_kernel(np.random.default_rng(i), 5 + 2 * i)
        sharp = face[i:i + size, 4:4 + size].copy()
        path = root / f"k{i}.npz"
        data = D.SampleData(D.convolve_kernel(sharp, k), sharp, None, k)
        D._save_npz(path, blurry=data.blurry, gt=data.gt, kernel=data.kernel)
        samples.append(D._record(f"kernel/k{i}", "kernel", data, {"kind": "npz", "path": str(path)}))
    for i in range(2):
        path = root / f"r{i}.npz"
        data = D.SampleData(cv2.GaussianBlur(face[:size, i:i + size], (5, 5), 1.5))
        D._save_npz(path, blurry=data.blurry)
        samples.append(D._record(f"real/r{i}", "real", data, {"kind": "npz", "path": str(path)}))
    return {"format": D.MANIFEST_FORMAT, "sha256": D.manifest_sha256(samples), "config": D.BuildConfig().to_dict(),
            "engine_config": {}, "sources": {}, "counts": {"pravg": n_windows, "kernel": n_kernel, "real": 2},
            "notes": [], "samples": samples}


OPTS = R.QualityOptions(face_metrics=False, progress=False)


class Counting:
    """A method that counts its calls and can 'die' (KeyboardInterrupt) after a number of them."""

    def __init__(self, die_after: int | None = None) -> None:
        self.calls, self.die_after = 0, die_after

    def restore(self, b: np.ndarray, k) -> tuple[np.ndarray, dict]:
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt
        self.calls += 1
        return cv2.GaussianBlur(b, (3, 3), 0.8), {"calls": self.calls}


def _methods(counting: Counting) -> list[R.Method]:
    return R.baseline_methods("blurry,unsharp,wiener-oracle") + [
        R.Method("smooth", "model", "smooth@v1", "a 3x3 Gaussian (test)", restore=counting.restore)]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_manifest(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="module")
def full_run(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    c = Counting()
    doc = R.run_quality(manifest, _methods(c), out, OPTS)
    return {"out": out, "doc": doc, "calls": c.calls}


def test_resume_after_a_kill_does_only_the_rest(manifest, full_run, tmp_path):
    out = tmp_path / "killed"
    first = Counting(die_after=4)
    with pytest.raises(KeyboardInterrupt):
        R.run_quality(manifest, _methods(first), out, OPTS)
    path = out / "per_sample" / "smooth@v1.jsonl"
    assert len(R.read_jsonl(path)) == 4
    with open(path, "a") as f:  # a line torn by the kill
        f.write('{"manifest": "ab')
    second = Counting()
    R.run_quality(manifest, _methods(second), out, OPTS)
    total = len(manifest["samples"])
    assert full_run["calls"] == total and second.calls == total - 4
    recs = R.read_jsonl(path)
    assert len(recs) == total and len({r["id"] for r in recs}) == total
    assert (out / "results.csv").read_text() == (full_run["out"] / "results.csv").read_text()
    third = Counting()  # everything done: nothing is recomputed
    R.run_quality(manifest, _methods(third), out, OPTS)
    assert third.calls == 0


def test_results_are_correct_and_complete(manifest, full_run):
    doc = full_run["doc"]
    pr = doc["sets"]["pravg"]["methods"]
    assert set(pr) == {"blurry", "unsharp", "smooth"}  # the oracle baseline runs on the kernel set only
    assert set(doc["sets"]["kernel"]["methods"]) == {"blurry", "unsharp", "wiener-oracle", "smooth"}
    sev = [s["severity"] for s in manifest["samples"] if s["set"] == "pravg"]
    blurry = pr["blurry"]["groups"]["all"]
    assert blurry["psnr"] == pytest.approx(np.mean(sev)) and blurry["psnr_gain"] == pytest.approx(0.0)
    for b, st in pr["blurry"]["groups"].items():  # bins partition the samples
        if b != "all":
            assert st["n"] == sum(1 for s in manifest["samples"] if s["set"] == "pravg" and s.get("bin") == b)
    k = doc["sets"]["kernel"]["methods"]
    assert k["wiener-oracle"]["groups"]["all"]["psnr_gain"] > 1.0
    real = doc["sets"]["real"]["methods"]["unsharp"]["groups"]["all"]
    assert real["lapvar"] > doc["sets"]["real"]["methods"]["blurry"]["groups"]["all"]["lapvar"]


def test_report_files_and_svg(full_run):
    out = full_run["out"]
    for name in ("results.csv", "results.json", "report.md", "manifest.json", "run.json"):
        assert (out / name).is_file()
    md = (out / "report.md").read_text()
    for word in ("blurry", "unsharp", "wiener-oracle", "smooth", "PSNR (dB) by severity bin", "git ", "CPU:"):
        assert word in md
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("set,method,kind,status,group,n")
    svgs = sorted((out / "plots").glob("*.svg"))
    assert {p.name for p in svgs} >= {"pravg_psnr_gain.svg", "kernel_psnr_gain.svg", "real_sharpness.svg"}
    for p in svgs:
        root = ET.parse(p).getroot()
        assert root.tag == f"{SVG}svg"
        assert f"![{p.name}](plots/{p.name})" in md
    gain = ET.parse(out / "plots" / "kernel_psnr_gain.svg").getroot()
    labels = [t.text for t in gain.iter(f"{SVG}text")]
    assert {"blurry", "unsharp", "wiener-oracle", "smooth"} <= set(labels)


def test_moments_protocol_and_continuous_callable(manifest, tmp_path):
    def moments(b, us):
        return [b.copy() for _ in us]  # "restores" the blurry input at every u: gain 0 by construction

    m = R.callable_method("same", lambda b: b.copy(), moments=moments)
    doc = R.run_quality(manifest, [m], tmp_path / "mom", OPTS)
    table = doc["sets"]["pravg"]["methods"]["same"]["moments"]
    ns = [s["n"] for s in manifest["samples"] if s["set"] == "pravg"]
    assert table["ALL"]["pairs"] == sum(ns)
    assert {k for k in table if k != "ALL"} == {str(n) for n in set(ns)}
    for row in table.values():
        assert row["psnr"] == pytest.approx(row["psnr_blurry"])
    assert "Table 4 protocol" in (tmp_path / "mom" / "report.md").read_text()


def test_models_without_weights_get_a_row(manifest, tmp_path):
    methods = R.model_methods(["cfmd-gan.paper", "no-such-model"])
    assert [m.status for m in methods] == ["no weights", "error"]
    assert "no trained weights" in methods[0].reason and "unknown model" in methods[1].reason
    doc = R.run_quality(manifest, R.baseline_methods("blurry") + methods, tmp_path / "nw", OPTS)
    md = (tmp_path / "nw" / "report.md").read_text()
    assert "**no weights**" in md and "cfmd-gan.paper" in md
    csv = (tmp_path / "nw" / "results.csv").read_text()
    assert ",cfmd-gan.paper,model,no weights," in csv
    assert "cfmd-gan.paper" not in doc["sets"]["pravg"]["methods"]


def test_local_dir_model_runs(manifest, tmp_path, lite_random_folder):
    folder, model = lite_random_folder  # RANDOM-INIT weights: mechanics only
    methods = R.model_methods([f"local-dir:{folder}"])
    m = methods[0]
    assert m.status == "ok" and m.continuous and m.weights_sha256 == R.state_sha256(model)
    assert m.key.endswith(m.weights_sha256[:12])
    small = dict(manifest, samples=[s for s in manifest["samples"] if s["id"] in ("pravg/w1", "kernel/k0")])
    small["sha256"] = D.manifest_sha256(small["samples"])
    doc = R.run_quality(small, methods, tmp_path / "ld", OPTS)
    res = doc["sets"]["pravg"]["methods"][m.name]
    assert res["n"] == 1 and res["moments"]["ALL"]["pairs"] == 3


def test_run_quality_takes_model_names_and_deblurrers(manifest, tmp_path, lite_random_folder):
    """The benchmark API takes a model wherever it takes one: run_quality accepts a model name and a loaded
    Deblurrer next to Method rows, and scores them exactly like the Method built from the same weights."""
    import facedeblur

    folder, model = lite_random_folder  # RANDOM-INIT weights: mechanics only
    small = dict(manifest, samples=[s for s in manifest["samples"] if s["id"] in ("pravg/w1", "kernel/k0")])
    small["sha256"] = D.manifest_sha256(small["samples"])
    loaded = facedeblur.load(f"local-dir:{folder}", device="cpu")
    doc = R.run_quality(small, [f"local-dir:{folder}", loaded] + R.baseline_methods("blurry"), tmp_path / "mix",
                        OPTS)
    rows = doc["sets"]["kernel"]["methods"]
    by_name = rows[f"local-dir:{folder}"]["groups"]["all"]["psnr"]
    by_object = rows[loaded.card.name]["groups"]["all"]["psnr"]
    assert by_name == pytest.approx(by_object) and "blurry" in rows
    (m,) = R.model_methods([loaded])
    assert m.status == "ok" and m.weights_sha256 == R.state_sha256(model)
    with pytest.raises(Exception, match="model names or facedeblur Deblurrers"):
        R.model_methods([object()])


def test_evaluate_windows_takes_a_model_name_or_a_deblurrer(lite_random_folder):
    """benchmark.quality.evaluate_windows (the quality-bar evaluator) takes a model like everything else."""
    import facedeblur
    from facedeblur.benchmark.quality import evaluate_windows

    folder, _ = lite_random_folder
    frames = np.stack([np.roll(_astronaut(48), 2 * t, axis=1)[8:40, 8:40] for t in range(5)])
    loaded = facedeblur.load(f"local-dir:{folder}", device="cpu")

    def fn(blurry, us):
        return np.stack(loaded.restore_moments(blurry, us=list(us)))

    ref = evaluate_windows(fn, [frames], progress=False)
    for model in (f"local-dir:{folder}", loaded):
        got = evaluate_windows(model, [frames], progress=False)
        assert got["centre"][0]["psnr"] == pytest.approx(ref["centre"][0]["psnr"])
        assert got["moments"] == ref["moments"]


def test_refuses_other_manifest_or_options(manifest, full_run, tmp_path):
    other = make_manifest(tmp_path / "s2", n_windows=4)
    with pytest.raises(D.ManifestMismatchError):
        R.run_quality(other, R.baseline_methods("blurry"), full_run["out"], OPTS)
    with pytest.raises(DataError, match="metric options"):
        R.run_quality(manifest, R.baseline_methods("blurry"), full_run["out"],
                      R.QualityOptions(crop_border=4, face_metrics=False, progress=False))


def test_read_jsonl_drops_and_repairs_a_torn_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n{"a":')
    assert R.read_jsonl(p) == [{"a": 1}, {"a": 2}]
    assert p.read_text().endswith("{\"a\":")  # reading alone changes nothing
    R.read_jsonl(p, repair=True)
    assert p.read_text() == '{"a": 1}\n{"a": 2}\n'


def test_parse_weights_and_resolve_models():
    assert R.parse_weights(["/w"], ["m"]) == {"m": "/w"}
    assert R.parse_weights(["a=/x", "b=/y"], ["a", "b"]) == {"a": "/x", "b": "/y"}
    with pytest.raises(Exception, match="NAME=PATH"):
        R.parse_weights(["/w"], ["a", "b"])
    assert R.resolve_models("none") == []
    assert "cfmd-gan.lite" in R.resolve_models("all")


def test_face_metrics_on_a_real_face(tmp_path):
    from facedeblur.metrics import dlib_available

    if not dlib_available()[0]:
        pytest.skip("dlib is not installed")
    fm = R.FaceMetrics()
    sharp = _astronaut(160)
    ref = fm.reference(sharp)
    assert ref["face"] and len(ref["landmarks"]) == 68 and len(ref["embedding"]) == 128
    assert ref["oracle_lm_err"] == 0.0
    same = fm.measure(sharp, ref)
    assert same["detected"] and same["lm_err"] == 0.0 and same["id_dist"] == pytest.approx(0.0, abs=1e-6)
    blurred = fm.measure(cv2.GaussianBlur(sharp, (0, 0), 3.0), ref)
    assert blurred["lm_err"] > 0 and 0 < blurred["id_dist"] < 0.6  # the same person, further away
    view = np.stack([sharp[..., c] for c in range(3)], axis=-1)[:, :, :]  # models may return views like this
    assert fm.measure(np.asfortranarray(view), ref)["id_dist"] == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------------------ plots


def test_svg_writer_is_well_formed_and_escapes():
    svg = line_chart([Series("a <b> & c", [0, 1, 2], [1.0, None, 3.0]), Series("d", [0, 1, 2], [2.0, 2.5, 1.0])],
                     title="t & <u>", xlabel="x", ylabel="y", hline=0.0)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "a <b> & c" in texts and "t & <u>" in texts
    polylines = list(root.iter(f"{SVG}polyline"))
    assert len(polylines) == 1  # series "a" is broken by the missing value into two single points (no line)
    assert len(list(root.iter(f"{SVG}circle"))) == 5
    bars = ET.fromstring(bar_chart(["x", "y"], [Series("s", [0, 1], [1.0, -2.0])], title="b", xlabel="", ylabel=""))
    assert len([r for r in bars.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]) == 2
    log = ET.fromstring(line_chart([Series("s", [128, 256, 512], [10.0, 40.0, 160.0])], title="l", xlabel="",
                                   ylabel="", log_y=True))
    assert log.tag == f"{SVG}svg"


def test_nice_ticks_cover_the_range():
    for lo, hi in ((0.0, 1.0), (-3.2, 7.9), (23.1, 23.4), (0.0, 0.08), (5.0, 5.0)):
        t = nice_ticks(lo, hi)
        assert t[0] <= lo and t[-1] >= hi and len(t) >= 2
        steps = np.diff(t)
        assert np.allclose(steps, steps[0])


# ------------------------------------------------------------------------------------------ CLI


def test_cli_bench_quality_and_compare(tmp_path, capsys, monkeypatch):
    """``facedeblur bench quality`` / ``compare`` end to end. The real set crops the faces of its videos with the
    data engine's default landmark detector (dlib, an optional extra); the test swaps in test_bench_data's
    template-matching detector so that it runs, and means the same, with or without dlib."""
    import facedeblur.data.landmarks as landmarks
    from facedeblur.cli import main

    from test_bench_data import FakeDetector, make_data

    media = make_data(tmp_path / "data")
    monkeypatch.setattr(landmarks, "default_detector", lambda: FakeDetector(media["face"]))

    def args(k: int, out: str) -> list[str]:
        return ["bench", "quality", "--data", str(media["root"]), "--sets", "kernel,real", "--split", "all",
                "--models", "none", "--baselines", "blurry,unsharp", "--no-face-metrics", "--max-samples", str(k), "--face-size", "48",
                "--stills-min-sharpness", "10", "--cache-dir",
                str(tmp_path / "cache"), "-q", "--out", str(tmp_path / out)]

    assert main(args(2, "a")) == 0
    assert main(args(2, "b")) == 0
    assert (tmp_path / "a" / "results.csv").read_text() == (tmp_path / "b" / "results.csv").read_text()
    capsys.readouterr()
    assert main(["bench", "compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "| kernel | unsharp | all |" in capsys.readouterr().out
    # a third run on other samples: comparing is refused with a clear error
    assert main(args(1, "c")) == 0
    assert main(["bench", "compare", str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    assert "differ from" in capsys.readouterr().err
    # --manifest pins the samples: the same data rebuilds them, and other options are refused
    assert main(["bench", "quality", "--data", str(media["root"]), "--manifest", str(tmp_path / "a" / "manifest.json"),
                 "--models", "none", "--baselines", "blurry", "--no-face-metrics", "-q", "--cache-dir",
                 str(tmp_path / "cache"), "--out", str(tmp_path / "d")]) == 0
    assert main(["bench", "quality", "--data", str(media["root"]), "--manifest", str(tmp_path / "a" / "manifest.json"),
                 "--max-samples", "3", "--out", str(tmp_path / "e"), "-q"]) == 1
    assert "--max-samples" in capsys.readouterr().err
    # a named set that comes out empty is an error, not a silently missing table
    assert main(args(2, "f")[:-2] + ["--stills-min-sharpness", "1e9", "--out", str(tmp_path / "f")]) == 1
    assert "kernel: no sample passed" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_lpips_and_fid_plumbing_with_test_doubles(manifest, tmp_path, monkeypatch):
    """The real LPIPS/FID networks are not installed here; test doubles check that their values reach the
    tables (mechanics only: the doubles live in this test, nothing is reported under their names elsewhere)."""
    from facedeblur.metrics import perceptual

    class FakeLPIPS:
        def __init__(self, device="cpu"):
            pass

        def __call__(self, img, ref):
            return float(np.abs(img.astype(float) - ref.astype(float)).mean() / 255)

    class FakeFID:
        def __init__(self, device="cpu"):
            pass

        def features(self, images):
            return np.stack([np.concatenate([i.reshape(-1, 3).mean(0), i.reshape(-1, 3).std(0)]) for i in images])

    monkeypatch.setattr(perceptual, "lpips_available", lambda *a, **k: (True, "test double"))
    monkeypatch.setattr(perceptual, "fid_available", lambda *a, **k: (True, "test double"))
    monkeypatch.setattr(perceptual, "LPIPS", FakeLPIPS)
    monkeypatch.setattr(perceptual, "FID", FakeFID)
    doc = R.run_quality(manifest, R.baseline_methods("blurry,wiener-oracle"), tmp_path / "p", OPTS)
    k = doc["sets"]["kernel"]["methods"]
    assert k["wiener-oracle"]["groups"]["all"]["lpips"] < k["blurry"]["groups"]["all"]["lpips"]
    assert k["blurry"]["groups"]["all"]["fid"] >= 0 and "fid" in k["wiener-oracle"]["groups"]["all"]
    assert "test double" in (tmp_path / "p" / "report.md").read_text()
