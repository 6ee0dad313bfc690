"""Benchmark sets and manifest (facedeblur.benchmark.data), on synthetic media made here.

A face (skimage's astronaut) moves along known paths in PNG frame folders; stills and "real" images are
astronaut crops; a fake landmark detector finds the face by template matching. No dlib, no ../shared/data.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from facedeblur.benchmark import data as D
from facedeblur.data import Face, average_frames
from facedeblur.errors import DataError, InputError
from facedeblur.metrics import psnr, severity_bin

FRAME, FACE = 96, 48


def _face() -> np.ndarray:
    from skimage.data import astronaut

    return cv2.resize(astronaut()[20:230, 150:360], (FACE, FACE), interpolation=cv2.INTER_AREA)


def _frame(face: np.ndarray, x: int, y: int) -> np.ndarray:
    img = np.full((FRAME, FRAME, 3), (40, 90, 140), np.uint8)
    img[y:y + FACE, x:x + FACE] = face
    return img


class FakeDetector:
    """Finds the pasted face by template matching; 68 fixed points inside it."""

    def __init__(self, face: np.ndarray) -> None:
        self.template = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
        self.pattern = np.random.default_rng(5).uniform((8, 10), (40, 42), size=(68, 2)).astype(np.float32)
        self.pattern[0], self.pattern[1] = (6, 8), (42, 44)

    def _locate(self, rgb: np.ndarray) -> Face:
        res = cv2.matchTemplate(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), self.template, cv2.TM_SQDIFF)
        x, y = cv2.minMaxLoc(res)[2]
        return Face((float(x), float(y), float(x + FACE), float(y + FACE)), 1.0, self.pattern + np.float32([x, y]))

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return [self._locate(rgb)]

    def refine(self, rgb: np.ndarray, box) -> Face:
        return self._locate(rgb)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def make_data(root: Path) -> dict:
    """data/videos/{walk, sway} (PNG frame folders), data/faces/*.png, data/real_lq/{*.png, clip.mp4}."""
    face = _face()
    xs_walk = [8 + 2 * t for t in range(20)]  # steady motion to the right
    xs_sway = [20 + (3 if t % 2 else 0) for t in range(20)]  # back and forth: oscillation
    for name, xs in (("walk", xs_walk), ("sway", xs_sway)):
        for t, x in enumerate(xs):
            _write_png(root / "videos" / name / f"f{t:03d}.png", _frame(face, x, 20 + t // 4))
    with open(root / "clips.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "identity_group"])
        w.writerow(["videos/walk", "person_a"])
        w.writerow(["videos/sway", "person_b"])
    from skimage.data import astronaut

    big = astronaut()
    for i in range(6):
        _write_png(root / "faces" / f"still_{i}.png", cv2.resize(big[10 + 8 * i:230 + 8 * i, 140:360], (64, 64),
                                                                  interpolation=cv2.INTER_AREA))
    for i in range(2):
        _write_png(root / "real_lq" / f"lq_{i}.png", cv2.GaussianBlur(_frame(face, 20 + 5 * i, 24), (5, 5), 2))
    vw = cv2.VideoWriter(str(root / "real_lq" / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (FRAME, FRAME))
    for t in range(8):
        vw.write(cv2.cvtColor(_frame(face, 10 + t, 20), cv2.COLOR_RGB2BGR))
    vw.release()
    return {"root": root, "face": face}


CFG = D.BuildConfig(split="all", face_size=48, vla_per_clip=2, vla_max_len=7, vla_min_len=3, vla_min_psnr=10.0,
                    kernel_count=4, kernel_sizes=(5, 7), stills_min_sharpness=10.0, real_frame_step=3,
                    real_per_video=2)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("benchdata"))


def _build(media, cache: Path, cfg: D.BuildConfig = CFG) -> dict:
    det = FakeDetector(media["face"])
    return D.build_manifest(D.find_sources(media["root"]), cfg, cache_dir=cache, bench_cache=cache / "bench",
                            detector=det, progress=False)


@pytest.fixture(scope="module")
def built(media, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return {"manifest": _build(media, cache), "cache": cache}


def test_find_sources(media, tmp_path):
    s = D.find_sources(media["root"])
    assert (s.videos, s.stills, s.real) == (media["root"] / "videos", media["root"] / "faces",
                                            media["root"] / "real_lq")
    plain = D.find_sources(media["root"] / "videos")  # a plain folder of clips: the videos themselves
    assert plain.videos == media["root"] / "videos" and plain.stills is None
    with pytest.raises(DataError):
        D.find_sources(tmp_path / "missing")


def test_manifest_has_every_set_with_severity(built):
    m = built["manifest"]
    assert set(m["counts"]) == set(D.SETS) and all(m["counts"][s] > 0 for s in D.SETS)
    ids = [s["id"] for s in m["samples"]]
    assert len(ids) == len(set(ids))
    assert m["counts"]["kernel"] == 4 and m["counts"]["real"] == 2 + 2
    for s in m["samples"]:
        data = D.load_sample(s)  # content re-checked against the manifest
        assert data.blurry.dtype == np.uint8 and data.blurry.shape == (48, 48, 3)
        if s["set"] == "real":
            assert data.gt is None and s["severity"] is None
            continue
        assert s["severity"] == pytest.approx(psnr(data.blurry, data.gt))
        assert s["bin"] == severity_bin(s["severity"])
        if s["set"] in ("pravg", "vla"):
            n = len(data.frames)
            assert n == s["n"] and n % 2 == 1
            assert np.array_equal(data.blurry, average_frames(data.frames))
            # GT = the temporal centre frame, found in the FMR-ordered stack through fmr_order
            assert s["fmr_order"][s["gt_index"]] == (n - 1) // 2
        if s["set"] == "kernel":
            assert data.kernel.shape == (s["kernel_size"],) * 2
            assert np.array_equal(data.blurry, D.convolve_kernel(data.gt, data.kernel))


def test_manifest_deterministic(media, built, tmp_path):
    again = _build(media, tmp_path / "other_cache")  # everything rebuilt from scratch
    assert again["sha256"] == built["manifest"]["sha256"]
    assert [s["id"] for s in again["samples"]] == [s["id"] for s in built["manifest"]["samples"]]
    D.check_manifest(again, built["manifest"])
    path = D.write_manifest(tmp_path / "m.json", again)
    assert D.read_manifest(path)["sha256"] == again["sha256"]


def test_manifest_mismatch_is_refused(media, built, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(media["root"], root)
    moved = dict(media, root=root)
    first = _build(moved, tmp_path / "c1")
    still = next(s for s in first["samples"] if s["set"] == "kernel")
    path = Path(still["source"]["path"])
    img = cv2.imread(str(path))
    cv2.imwrite(str(path), 255 - img)  # the data changed under the manifest
    with pytest.raises(D.ManifestMismatchError, match="differs from the manifest"):
        D.load_sample(still)
    second = _build(moved, tmp_path / "c2")
    with pytest.raises(D.ManifestMismatchError, match="different content"):
        D.check_manifest(second, first)
    fewer = _build(moved, tmp_path / "c3", D.BuildConfig.from_dict({**CFG.to_dict(), "kernel_count": 3,
                                                                    "sets": ["kernel"]}))
    with pytest.raises(D.ManifestMismatchError, match="missing"):
        D.check_manifest(fewer, first)
    bad = dict(first, sha256="0" * 64)
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(D.ManifestMismatchError, match="does not match"):
        D.read_manifest(tmp_path / "bad.json")


def test_max_samples_and_split(media, tmp_path):
    m = _build(media, tmp_path / "c", D.BuildConfig.from_dict({**CFG.to_dict(), "max_samples": 2}))
    assert all(v <= 2 for v in m["counts"].values())
    with pytest.raises(InputError):
        D.BuildConfig(sets=("nope",))
    with pytest.raises(InputError):
        D.BuildConfig(split="test")


def test_kernel_set_draws_from_its_side_of_the_still_split(media, tmp_path):
    from facedeblur.data.strong import still_is_val

    stills = tmp_path / "stills"
    img = cv2.imread(str(media["root"] / "faces" / "still_0.png"))
    names = [f"s{i}.png" for i in range(30)]
    assert {still_is_val(n) for n in names} == {True, False}  # both sides are populated, so the check can fail
    stills.mkdir()
    for n in names:
        cv2.imwrite(str(stills / n), img)
    src = D.find_sources(stills=stills)
    base = {**CFG.to_dict(), "sets": ["kernel"], "kernel_count": 50, "stills_min_sharpness": 0.0}
    sizes = {}
    for split in ("val", "train", "all"):
        got = D.build_kernel(src, D.BuildConfig.from_dict({**base, "split": split}), progress=False)
        sizes[split] = len(got)
        if split != "all":
            assert got and all(still_is_val(Path(r["source"]["path"]).name) == (split == "val") for r in got)
    assert sizes["val"] + sizes["train"] == sizes["all"] == 30


# ------------------------------------------------------------------------------------------ VLA stop rules


def _static(n: int = 11, size: int = 32):
    img = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return [img.copy() for _ in range(n)], [(0.0, 0.0, 100.0, 100.0)] * n


def test_vla_static_face_grows_to_max_len():
    crops, boxes = _static(11)
    cfg = D.BuildConfig(vla_max_len=9)
    assert D.vla_length(crops, boxes, cfg) == (9, "max_len")


def test_vla_clip_end_and_no_face():
    crops, boxes = _static(5)
    assert D.vla_length(crops, boxes, D.BuildConfig(vla_max_len=13)) == (5, "clip_end")
    crops, boxes = _static(9)
    crops[1] = None  # the face is lost 3 frames before the centre
    assert D.vla_length(crops, boxes, D.BuildConfig(vla_max_len=13)) == (5, "no_face")
    crops, boxes = _static(9)
    crops[4] = None
    assert D.vla_length(crops, boxes) == (0, "no_face")


def test_vla_overlap_condition_matches_iou():
    # 100 px boxes moving 10 px per frame: the first/last frames of a window of half-width h are 20h px apart,
    # IoU = (100 - d) / (100 + d) >= 0.5 exactly when d <= 33.3 px, i.e. h <= 1 -> L = 3
    crops, _ = _static(13)
    boxes = [(10.0 * t, 0.0, 10.0 * t + 100, 100.0) for t in range(13)]
    assert D.vla_length(crops, boxes, D.BuildConfig(vla_min_iou=0.5)) == (3, "overlap")
    # a looser overlap requirement: IoU >= 0.25 <=> d <= 60 <=> h <= 3 -> L = 7
    assert D.vla_length(crops, boxes, D.BuildConfig(vla_min_iou=0.25)) == (7, "overlap")


def test_vla_oscillation_condition():
    crops, boxes = _static(13)
    xs = [0, 8, 0, 8, 0, 8, 0, 8, 0, 8, 0, 8, 0]  # back and forth, 8 px (> 5% of the 141 px diagonal)
    pts = np.array([(50.0 + x, 50.0) for x in xs])
    assert D.vla_length(crops, boxes, D.BuildConfig(), pts) == (1, "oscillation")
    # the same jitter below the static threshold is no motion at all
    tiny = np.array([(50.0 + x / 20, 50.0) for x in xs])  # 12 steps of 0.4 px: 4.8 px < 7.07 px
    assert D.vla_length(crops, boxes, D.BuildConfig(vla_max_len=13), tiny) == (13, "max_len")
    # steady motion is one-directional: never "oscillation"
    steady = np.array([(50.0 + 2 * t, 50.0) for t in range(13)])
    assert D.vla_length(crops, boxes, D.BuildConfig(vla_max_len=13), steady) == (13, "max_len")


def test_vla_fidelity_condition():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    crops = [base.copy() for _ in range(9)]
    for t in (0, 1, 7, 8):  # frames 3+ away from the centre are unrelated content
        crops[t] = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    boxes = [(0.0, 0.0, 100.0, 100.0)] * 9
    cfg = D.BuildConfig(vla_min_psnr=25.0, vla_max_len=9)
    length, reason = D.vla_length(crops, boxes, cfg)
    assert (length, reason) == (5, "fidelity")
    # the independent check of condition (ii) on both sides of the stop
    assert psnr(average_frames(np.stack(crops[2:7])), crops[4]) >= 25.0
    assert psnr(average_frames(np.stack(crops[1:8])), crops[4]) < 25.0


def test_vla_builder_on_synthetic_clips(built):
    vla = [s for s in built["manifest"]["samples"] if s["set"] == "vla"]
    # "sway" swings 3 px back and forth every frame (the 36 px landmark box has a 51 px diagonal, so more than
    # the 5% static threshold): oscillation stops it at L = 1 < min_len, so it gives no sample
    assert {s["clip"] for s in vla} == {"walk"}
    for s in vla:
        # "walk" moves 2 px/frame right (and 1 px down every 4 frames) with a 36 px box: first/last frames of
        # L = 7 are 12 px apart in x plus a row, IoU < 0.5 -> the window stops at L = 5 by the overlap rule
        assert (s["n"], s["stop"]) == (5, "overlap")
        data = D.load_sample(s)
        assert np.array_equal(data.gt, data.frames[s["gt_index"]])


# ------------------------------------------------------------------------------------------ kernels


def test_trajectory_kernel_properties():
    for size in (5, 9, 15):
        k = D.trajectory_kernel(np.random.default_rng(size), size)
        assert k.shape == (size, size) and (k >= 0).all() and k.sum() == pytest.approx(1.0)
        ys, xs = np.mgrid[:size, :size]
        # centroid at the centre: the blurry image is not shifted against the sharp one
        assert (k * xs).sum() == pytest.approx(size // 2, abs=1e-9)
        assert (k * ys).sum() == pytest.approx(size // 2, abs=1e-9)
    a = D.trajectory_kernel(np.random.default_rng(3), 9)
    assert np.array_equal(a, D.trajectory_kernel(np.random.default_rng(3), 9))
    with pytest.raises(InputError):
        D.trajectory_kernel(np.random.default_rng(0), 4)


def test_convolve_kernel_is_a_convolution():
    img = np.zeros((21, 21, 3), np.uint8)
    img[10, 10] = 200  # an impulse reproduces the kernel (flipped would mean correlation)
    k = np.zeros((5, 5))
    k[1, 3], k[2, 2] = 0.75, 0.25
    out = D.convolve_kernel(img, k)
    assert out[9, 11, 0] == 150 and out[10, 10, 0] == 50 and out[11, 9, 0] == 0
    delta = np.zeros((3, 3))
    delta[1, 1] = 1
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert np.array_equal(D.convolve_kernel(rgb, delta), rgb)
