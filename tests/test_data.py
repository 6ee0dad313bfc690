"""Data engine (facedeblur.data): sources, FMR/blur helpers, window preparation, datasets.

Everything is synthetic and made here: a face (skimage's astronaut) moved along a known path, written as a
folder of PNG frames and as mp4v videos, with exactly repeated frames; a fake landmark detector finds the face
by template matching and returns 68 landmarks that follow the known motion. No dlib, no ../shared/data.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facedeblur.data import (Clip, Face, PrepConfig, WindowTrainSet, WindowValSet, average_frames, build_datasets,
                             find_clips, fmr_order, fmr_u, iter_frames, load_manifest, prepare_windows, psnr_uint8,
                             render_trajectory, severity_bin, shake_trajectory, track_faces)
from facedeblur.data import engine
from facedeblur.errors import DataError, InputError

# ----------------------------------------------------------------------------------------------- synthetic clips

FRAME = 112  # frame size (px)
FACE = 56  # pasted face size (px)
BG = (40, 90, 140)
EYE = (15.0, 22.0)  # landmark 36 (image-left eye, outer corner) relative to the face's top-left corner


def _face() -> np.ndarray:
    from skimage.data import astronaut

    return cv2.resize(astronaut()[20:230, 150:360], (FACE, FACE), interpolation=cv2.INTER_AREA)


def _landmark_pattern() -> np.ndarray:
    """68 points inside the face, (x, y) relative to its top-left corner; the box is [8, 48] x [10, 50]."""
    pts = np.random.default_rng(5).uniform((10, 12), (46, 48), size=(68, 2))
    pts[0], pts[1], pts[36] = (8, 10), (48, 50), EYE
    return pts.astype(np.float32)


def _frame(face: np.ndarray, x: int, y: int, bg=BG) -> np.ndarray:
    img = np.empty((FRAME, FRAME, 3), np.uint8)
    img[:] = bg
    img[y:y + FACE, x:x + FACE] = face
    return img


# unique positions (top-left corner of the face) of the PNG clip: x goes right, back left, right again; some
# frames share x but not y (c2), some are exact revisits (c3: t=12/14 and t=13/15)
PNG_XS = [10, 12, 14, 16, 18, 20, 22, 24, 22, 20, 18, 16, 14, 16, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32]
PNG_YS = [20, 21, 22, 23, 24, 25, 26, 27, 27, 27, 26, 26, 25, 25, 25, 25, 24, 24, 24, 24, 24, 24, 24, 24]
PNG_REPEAT_AFTER = (2, 7, 12, 17)  # these unique frames are written twice in a row
# mp4 clips stay under 12 frames (one mp4v GOP), so a repeated frame decodes exactly like its original
MP4_XS = [30, 27, 24, 21, 18, 21, 24, 27, 30, 33]
MP4_YS = [20, 22, 24, 26, 28, 28, 28, 26, 24, 22]
MP4_REPEAT_AFTER = (3, 7)

CFG = PrepConfig(face_size=64, frame_counts=(5, 7), strides=(1, 2), max_span=9, start_step=2, windows_per_clip=6,
                 min_sharpness=50.0, val_percent=50, seed=0)


def _sequence(xs, ys, repeat_after):
    """Written frame index -> (x, y), and the written indices of the unique (kept) frames."""
    seq, kept = [], []
    for t, (x, y) in enumerate(zip(xs, ys)):
        kept.append(len(seq))
        seq.append((x, y))
        if t in repeat_after:
            seq.append((x, y))
    return seq, kept


def _write_pngs(folder: Path, face: np.ndarray, seq) -> None:
    folder.mkdir(parents=True)
    for i, (x, y) in enumerate(seq):
        cv2.imwrite(str(folder / f"frame_{i}.png"), cv2.cvtColor(_frame(face, x, y), cv2.COLOR_RGB2BGR))  # unpadded


def _write_mp4(path: Path, frames) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
    assert vw.isOpened(), "OpenCV cannot write mp4v here"
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()


class FakeDetector:
    """A LandmarkDetector: finds the pasted face by template matching, returns the known 68-point pattern there."""

    def __init__(self, face: np.ndarray) -> None:
        self.template = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
        self.pattern = _landmark_pattern()
        self.calls = 0
        self.seen: list[tuple[int, int]] = []

    def _locate(self, rgb: np.ndarray) -> Face:
        self.calls += 1
        res = cv2.matchTemplate(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), self.template, cv2.TM_SQDIFF)
        x, y = cv2.minMaxLoc(res)[2]
        self.seen.append((x, y))
        pts = self.pattern + np.array([x, y], np.float32)
        return Face((float(x), float(y), float(x + FACE), float(y + FACE)), 1.0, pts)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return [self._locate(rgb)]

    def refine(self, rgb: np.ndarray, box) -> Face:
        return self._locate(rgb)


def _split_identities(cfg: PrepConfig) -> tuple[str, str]:
    """Two identity names that fall into different splits under ``cfg`` (so both splits are populated)."""
    val = next(f"person{i}" for i in range(100) if engine._is_val(f"person{i}", cfg))
    train = next(f"person{i}" for i in range(100) if not engine._is_val(f"person{i}", cfg))
    return train, val


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """data/videos/{anna_a (PNG frames), anna_b.mp4, ben.mp4, solo.mp4}, data/clips.csv; anna_* share one identity."""
    root = tmp_path_factory.mktemp("data")
    face = _face()
    id_train, id_val = _split_identities(CFG)
    png_seq, png_kept = _sequence(PNG_XS, PNG_YS, PNG_REPEAT_AFTER)
    _write_pngs(root / "videos" / "anna_a", face, png_seq)
    mp4_seq, mp4_kept = _sequence(MP4_XS, MP4_YS, MP4_REPEAT_AFTER)
    _write_mp4(root / "videos" / "anna_b.mp4", [_frame(face, x, y) for x, y in mp4_seq])
    _write_mp4(root / "videos" / "more" / "ben.mp4", [_frame(face, x, y, bg=(150, 60, 60)) for x, y in mp4_seq])
    _write_mp4(root / "videos" / "solo.mp4", [_frame(face, x, y, bg=(60, 150, 60)) for x, y in mp4_seq])
    with open(root / "clips.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "frames", "identity_group", "notes"])
        w.writerow(["videos/anna_a", len(png_seq), id_train, ""])
        w.writerow(["videos/anna_b.mp4", len(mp4_seq), id_train, ""])
        w.writerow(["videos/more/ben.mp4", len(mp4_seq), id_val, ""])  # solo.mp4 is not listed
    truth = {"anna_a": (png_seq, png_kept), "anna_b": (mp4_seq, mp4_kept), "ben": (mp4_seq, mp4_kept),
             "solo": (mp4_seq, mp4_kept)}
    return {"root": root, "face": face, "truth": truth, "ids": (id_train, id_val)}


@pytest.fixture(scope="module")
def prepared(dataset, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    det = FakeDetector(dataset["face"])
    manifest = prepare_windows(dataset["root"], cache, CFG, detector=det, progress=False)
    return {"manifest": manifest, "cache": cache, "detector": det}


# ------------------------------------------------------------------------------------------------------ sources


def test_find_clips_videos_folders_and_identities(dataset):
    id_train, id_val = dataset["ids"]
    clips = find_clips(dataset["root"] / "videos")
    by_name = {c.name: c for c in clips}
    assert sorted(by_name) == ["anna_a", "anna_b", "ben", "solo"]
    assert by_name["anna_a"].path.is_dir() and by_name["ben"].path.suffix == ".mp4"
    assert by_name["anna_a"].identity == by_name["anna_b"].identity == id_train
    assert by_name["ben"].identity == id_val
    assert by_name["solo"].identity == "solo"  # not in clips.csv: its own identity
    # a relative root (clips.csv in the parent of ".") resolves the same identities
    cwd = os.getcwd()
    try:
        os.chdir(dataset["root"] / "videos")
        assert {c.name: c.identity for c in find_clips(".")} == {n: c.identity for n, c in by_name.items()}
    finally:
        os.chdir(cwd)


def test_find_clips_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no videos"):
        find_clips(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        find_clips(tmp_path / "missing")
    bad = tmp_path / "bad"
    (bad / "clip").mkdir(parents=True)
    cv2.imwrite(str(bad / "clip" / "0.png"), np.zeros((8, 8, 3), np.uint8))
    (bad / "clips.csv").write_text("file,person\nclip,p1\n")
    with pytest.raises(DataError, match="identity_group"):
        find_clips(bad)


def test_iter_frames_rgb_order_png_and_mp4(tmp_path):
    red = np.zeros((32, 48, 3), np.uint8)
    red[..., 0] = 220  # RGB red
    red[:, :8] = (10, 200, 30)  # a green band on the left
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), cv2.cvtColor(red, cv2.COLOR_RGB2BGR))
    frames = list(iter_frames(folder))
    assert len(frames) == 1 and frames[0].dtype == np.uint8 and frames[0].shape == (32, 48, 3)
    np.testing.assert_array_equal(frames[0], red)
    _write_mp4(tmp_path / "v.mp4", [red] * 3)
    got = list(iter_frames(Clip(tmp_path / "v.mp4", "x")))
    assert len(got) == 3
    assert np.abs(got[1][8:, 16:40].astype(int) - red[8:, 16:40]).mean() < 12  # R stays R (not swapped to B)
    assert got[1][8:, 16:40, 0].mean() > 180 and got[1][8:, 16:40, 2].mean() < 40
    (tmp_path / "not_a_video.mp4").write_text("hello")
    with pytest.raises(DataError, match="cannot open video"):
        list(iter_frames(tmp_path / "not_a_video.mp4"))


def test_iter_frames_natural_order(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    for i in (0, 1, 2, 10, 11):  # unpadded numbers: "frame_10" sorts after "frame_2"
        cv2.imwrite(str(folder / f"frame_{i}.png"), np.full((4, 4, 3), i, np.uint8))
    assert [int(f[0, 0, 0]) for f in iter_frames(folder)] == [0, 1, 2, 10, 11]


def test_dedup_drops_exact_repeats(dataset):
    seq, kept = dataset["truth"]["anna_a"]
    got: list[int] = []
    frames = list(engine._dedup(iter_frames(dataset["root"] / "videos" / "anna_a"), CFG.duplicate_threshold, got))
    assert got == kept and len(frames) == len(PNG_XS) < len(seq)


# --------------------------------------------------------------------------------------------------- FMR and blur


def test_fmr_order_x_then_y_then_time():
    eyes = np.array([[5, 9], [3, 7], [5, 2], [3, 7], [1, 100], [5, 2]], dtype=float)
    assert fmr_order(eyes) == [4, 1, 3, 2, 5, 0]  # x asc; y asc within x; time within (x, y)
    # positions are compared on the integer grid: 10.2 and 9.9 are both x=10, so y decides; 7.4/6.6 tie on y
    assert fmr_order(np.array([[10.2, 5.0], [9.9, 4.0], [10.4, 7.4], [9.6, 6.6]])) == [1, 0, 2, 3]
    assert fmr_order(np.array([[3, 3], [2, 9]])) == [1, 0]
    with pytest.raises(InputError):
        fmr_order(np.zeros((4, 3)))


def test_fmr_u():
    np.testing.assert_allclose(fmr_u(5), [0, 0.25, 0.5, 0.75, 1.0])
    assert fmr_u(2).tolist() == [0.0, 1.0]
    u = fmr_u(13)
    assert u[0] == 0.0 and u[-1] == 1.0 and u[6] == 0.5 and np.all(np.diff(u) > 0)
    for n in (1, 0):
        with pytest.raises(ValueError, match="at least 2"):
            fmr_u(n)


def test_average_frames_rounds_to_nearest():
    a = np.full((2, 3, 3), 10, np.uint8)
    b = np.full((2, 3, 3), 11, np.uint8)
    assert average_frames([a, b, b])[0, 0, 0] == 11  # 10.67 -> 11 (not truncated to 10)
    assert average_frames([a, a, b])[0, 0, 0] == 10  # 10.33 -> 10
    stack = np.random.default_rng(0).integers(0, 256, (7, 5, 4, 3), dtype=np.uint8)
    out = average_frames(stack)
    assert out.dtype == np.uint8 and out.shape == (5, 4, 3)
    assert np.abs(out.astype(float) - stack.astype(float).mean(0)).max() <= 0.5
    assert average_frames(np.full((1, 2, 2, 3), 255, np.uint8)).max() == 255
    with pytest.raises(InputError):
        average_frames(np.zeros((0, 4, 4, 3), np.uint8))


def test_psnr_uint8_matches_skimage():
    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)
    assert psnr_uint8(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-9)
    assert psnr_uint8(a, a) == float("inf")


def test_severity_bin_edges():
    assert [severity_bin(v) for v in (-float("inf"), 10.0, 27.999)] == ["<28"] * 3
    assert [severity_bin(v) for v in (28.0, 31.999)] == ["28-32"] * 2
    assert [severity_bin(v) for v in (32.0, 35.999)] == ["32-36"] * 2
    assert [severity_bin(v) for v in (36.0, 50.0, float("inf"))] == [">=36"] * 3


def test_shake_trajectory_seeded_centred_extent():
    t1 = shake_trajectory(np.random.default_rng(3), 9, 7.5, max_angle_deg=2.0)
    t2 = shake_trajectory(np.random.default_rng(3), 9, 7.5, max_angle_deg=2.0)
    t3 = shake_trajectory(np.random.default_rng(4), 9, 7.5, max_angle_deg=2.0)
    assert t1.shape == (9, 3) and t1.dtype == np.float32
    np.testing.assert_array_equal(t1, t2)
    assert not np.allclose(t1, t3)
    np.testing.assert_allclose(t1[:, :2].mean(axis=0), 0, atol=1e-5)
    assert np.ptp(t1[:, :2], axis=0).max() == pytest.approx(7.5, rel=1e-5)  # longest axis spans the extent
    assert np.abs(t1[:, 2]).max() <= 2.0 + 1e-6
    np.testing.assert_allclose(t1[:, 2], -t1[::-1, 2], atol=1e-6)  # rotation is centred too


def test_render_trajectory_pure_shift():
    img = np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    out = render_trajectory(img, np.array([[0, 0, 0], [3, -2, 0]], np.float32))
    assert out.shape == (2, 40, 50, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], img)
    np.testing.assert_array_equal(out[1][2:38, 3:48], img[4:40, 0:45])  # content moved right 3, up 2


# ----------------------------------------------------------------------------------------------- crop geometry


def _blob(h: int, w: int, px: float, py: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    g = np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * sigma ** 2))
    return np.repeat(np.rint(g * 250)[..., None], 3, axis=2).astype(np.uint8)


def _centroid(img: np.ndarray) -> np.ndarray:
    g = img[..., 1].astype(np.float64)
    yy, xx = np.mgrid[0:g.shape[0], 0:g.shape[1]]
    return np.array([(g * xx).sum(), (g * yy).sum()]) / g.sum()


@pytest.mark.parametrize("side,size", [(100.0, 64), (200.0, 50), (97.3, 64), (50.0, 64), (64.0, 64)])
def test_crop_geometry_same_in_both_branches(side, size):
    """A source point p lands at (p - (c - side/2)) * size/side, whether the crop shrinks (area branch) or not."""
    cx, cy, px, py = 150.3, 140.7, 160.2, 130.9
    k = size / side
    out = engine._crop(_blob(300, 300, px, py, sigma=4 / k), cx, cy, side, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    want = np.array([(px - (cx - side / 2)) * k, (py - (cy - side / 2)) * k])
    np.testing.assert_allclose(_centroid(out), want, atol=0.08)


@pytest.mark.parametrize("side,size", [(60.0, 32), (20.0, 32)])
def test_crop_near_border_pads_without_shifting(side, size):
    # box sticking out of the top-left corner of the image: padded by replication, content still where it belongs
    img = np.zeros((80, 90, 3), np.uint8)
    img[10:14, 6:10] = 255  # a 4x4 square centred at (7.5, 11.5)
    cx, cy = 8.0, 6.0
    out = engine._crop(img, cx, cy, side, size)
    k = size / side
    want = np.array([(7.5 - (cx - side / 2)) * k, (11.5 - (cy - side / 2)) * k])
    np.testing.assert_allclose(_centroid(out), want, atol=0.15)


# --------------------------------------------------------------------------------------------- prepare_windows


def _window_truth(rec, truth):
    """Known positions of the window's frames (temporal order) and the FMR order they imply."""
    seq, kept = truth[rec["clip"]]
    j0 = kept.index(rec["start_frame"])
    pos = [seq[kept[j0 + j * rec["stride"]]] for j in range(rec["n"])]
    order = sorted(range(rec["n"]), key=lambda j: (pos[j][0] + EYE[0], pos[j][1] + EYE[1], j))
    return pos, order


def test_prepare_windows_end_to_end(dataset, prepared):
    root, recs = load_manifest(prepared["manifest"])
    truth = dataset["truth"]
    assert root == prepared["manifest"].parent and root.name == f"windows-{CFG.digest()}"
    assert {r["clip"] for r in recs} == set(truth)
    # the detector saw each unique frame once: repeats were dropped before landmarks and windows
    assert prepared["detector"].calls == sum(len(k) for _, k in truth.values())
    assert prepared["detector"].seen[:len(PNG_XS)] == list(zip(PNG_XS, PNG_YS))  # anna_a comes first
    keys = {"file", "clip", "identity", "n", "stride", "start_frame", "fmr_order", "severity",
            "severity_temporal_centre", "split"}
    n_reordered = 0
    for rec in recs:
        assert set(rec) == keys
        assert rec["n"] in CFG.frame_counts and rec["stride"] in CFG.strides
        assert (rec["n"] - 1) * rec["stride"] + 1 <= CFG.max_span
        frames = np.load(root / rec["file"], allow_pickle=False)
        assert frames.shape == (rec["n"], 64, 64, 3) and frames.dtype == np.uint8
        pos, order = _window_truth(rec, truth)
        assert rec["fmr_order"] == order  # x, then y, then time, from the known motion
        n_reordered += order != sorted(order)
        # the stored pixels are in that order: the face's x shift from stored frame 0 follows the known path
        g0 = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY).astype(np.float64)
        shifts = [cv2.phaseCorrelate(g0, cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float64))[0][0]
                  for f in frames]
        k = 64 / (40 * (1 + 2 * CFG.enlarge))  # landmark box is 40 px; enlarged 0.5x per side
        want = [k * (pos[o][0] - pos[order[0]][0]) for o in order]
        np.testing.assert_allclose(shifts, want, atol=0.35)
        assert np.all(np.diff(shifts) > -0.35)  # left-eye x of the stored frames is non-decreasing
        blurry = average_frames(frames)
        assert rec["severity"] == pytest.approx(psnr_uint8(blurry, frames[(rec["n"] - 1) // 2]))
    assert n_reordered > 0  # the path goes back and forth, so FMR differs from time order somewhere
    assert sum(1 for r in recs if r["clip"] == "anna_a") == CFG.windows_per_clip  # capped per clip


def test_prepare_windows_split_by_identity(dataset, prepared):
    _, recs = load_manifest(prepared["manifest"])
    id_train, id_val = dataset["ids"]
    splits: dict[str, set[str]] = {}
    for r in recs:
        splits.setdefault(r["identity"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits.values())  # no identity in both splits
    assert splits[id_train] == {"train"} and splits[id_val] == {"val"}
    assert {r["clip"] for r in recs if r["identity"] == id_train} == {"anna_a", "anna_b"}


def test_prepare_windows_reuses_cache(dataset, prepared):
    first = json.loads(prepared["manifest"].read_text())
    det = FakeDetector(dataset["face"])
    again = prepare_windows(dataset["root"], prepared["cache"], CFG, detector=det, progress=False)
    assert again == prepared["manifest"] and det.calls == 0
    assert json.loads(again.read_text()) == first
    assert not list(prepared["manifest"].parent.rglob("*.tmp"))


def test_prepare_windows_deterministic_and_atomic(dataset, prepared, tmp_path, monkeypatch):
    replaced = []
    real_replace = os.replace

    def spy(src, dst):
        replaced.append((Path(src), Path(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    man2 = prepare_windows(dataset["root"], tmp_path / "c2", CFG, detector=FakeDetector(dataset["face"]),
                           progress=False)
    monkeypatch.setattr(os, "replace", real_replace)
    assert man2.name == "manifest.json" and [d for _, d in replaced].count(man2) == 1
    src = next(s for s, d in replaced if d == man2)  # written to a temp file beside it, then renamed into place
    assert src.parent == man2.parent and src != man2 and not src.exists()
    # same seed -> same windows and same pixels
    a, b = json.loads(prepared["manifest"].read_text()), json.loads(man2.read_text())
    assert a["windows"] == b["windows"] and a["config"] == b["config"]
    for rec in a["windows"]:
        np.testing.assert_array_equal(np.load(prepared["manifest"].parent / rec["file"]),
                                      np.load(man2.parent / rec["file"]))
    # a failure while publishing the manifest leaves the previous one intact
    copy = tmp_path / "c3"
    shutil.copytree(prepared["cache"], copy)
    manifest = copy / prepared["manifest"].parent.name / "manifest.json"
    manifest.write_text('{"sentinel": true}')

    def fail(src, dst):
        if Path(dst).name == "manifest.json":
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        prepare_windows(dataset["root"], copy, CFG, detector=FakeDetector(dataset["face"]), progress=False)
    assert manifest.read_text() == '{"sentinel": true}'


def test_prepare_windows_exact_length_and_errors(tmp_path):
    face = _face()
    cfg = PrepConfig(face_size=32, frame_counts=(5,), strides=(1,), max_span=5, start_step=1, min_sharpness=0.0)
    data = tmp_path / "d"
    _write_pngs(data / "c", face, [(10 + 3 * i, 20) for i in range(5)])  # exactly N frames: one window
    recs = load_manifest(prepare_windows(data, tmp_path / "cache", cfg, detector=FakeDetector(face),
                                         progress=False))[1]
    assert [(r["start_frame"], r["n"]) for r in recs] == [(0, 5)]
    short = tmp_path / "short"
    _write_pngs(short / "c", face, [(10 + 3 * i, 20) for i in range(4)])  # N-1 frames: none
    with pytest.raises(DataError, match="no usable windows"):
        prepare_windows(short, tmp_path / "cache2", cfg, detector=FakeDetector(face), progress=False)
    # the cache is keyed by clip name: another data folder must not reuse the first folder's "c" windows
    det = FakeDetector(face)
    with pytest.raises(DataError, match="was prepared from"):
        prepare_windows(short, tmp_path / "cache", cfg, detector=det, progress=False)
    assert det.calls == 0
    dup = tmp_path / "dup"
    _write_pngs(dup / "x" / "clip", face, [(10, 20)])
    _write_pngs(dup / "y" / "clip", face, [(10, 20)])
    with pytest.raises(DataError, match="both named 'clip'"):
        prepare_windows(dup, tmp_path / "cache", cfg, detector=FakeDetector(face), progress=False)
    with pytest.raises(DataError, match="no prepared windows"):
        load_manifest(tmp_path / "nowhere" / "manifest.json")


def test_track_faces_redetects_and_refines():
    class Scripted:
        """Frames whose pixel (0, 0) is 1 have no findable face: refine drifts (2x size), detect finds nothing."""

        def __init__(self):
            self.log: list[tuple[str, int]] = []

        def detect(self, rgb):
            self.log.append(("detect", int(rgb[0, 0, 1])))
            return [] if rgb[0, 0, 0] == 1 else [Face((0, 0, 10, 10), 1.0, _landmark_pattern())]

        def refine(self, rgb, box):
            self.log.append(("refine", int(rgb[0, 0, 1])))
            return Face(box, 1.0, _landmark_pattern() * (2.0 if rgb[0, 0, 0] == 1 else 1.0))

    frames = [np.zeros((4, 4, 3), np.uint8) for _ in range(12)]
    for i, f in enumerate(frames):
        f[0, 0, 1] = i
    frames[3][0, 0, 0] = 1
    det = Scripted()
    faces = list(track_faces(frames, det, redetect_every=5))
    assert [f is None for f in faces] == [i == 3 for i in range(12)]
    assert [i for kind, i in det.log if kind == "detect"] == [0, 3, 4, 5, 10]  # every 5th, after a loss, and lost
    assert [i for kind, i in det.log if kind == "refine"] == [1, 2, 3, 6, 7, 8, 9, 11]


# ---------------------------------------------------------------------------------------------------- datasets


def _train_set(prepared, **kw) -> WindowTrainSet:
    root, recs = load_manifest(prepared["manifest"])
    args = dict(crop=48, scale_range=(1.0, 1.5), epoch_samples=6)
    args.update(kw)
    return WindowTrainSet(root, [r for r in recs if r["split"] == "train"], **args)


def _green_stills(folder: Path, count: int = 2) -> list[Path]:
    """Sharp, textured, strongly green stills (so their samples are recognisable)."""
    from skimage.data import astronaut

    folder.mkdir(parents=True, exist_ok=True)
    grey = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2GRAY)
    paths = []
    for i in range(count):
        g = grey[40 * i:40 * i + 72, 150:222].astype(np.float32)
        img = np.stack([g * 0.1, 120 + g * 0.5, g * 0.1], axis=-1).astype(np.uint8)
        paths.append(folder / f"still_{i}.jpg")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
    return paths


def test_window_train_set_items(prepared):
    ds = _train_set(prepared, identity_fraction=0.0)
    assert len(ds) == 6
    torch.manual_seed(0)
    ns = {r["n"] for r in ds.windows}
    grid = {i / (n - 1) for n in ns for i in range(n)}
    for item in (ds[i] for i in range(len(ds))):
        assert set(item) == {"blurry", "sharp", "u", "severity"}
        assert item["blurry"].shape == item["sharp"].shape == (3, 48, 48)
        assert item["blurry"].dtype == torch.float32
        for t in (item["blurry"], item["sharp"]):
            assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
        u = float(item["u"])
        assert 0.0 <= u <= 1.0 and min(abs(u - g) for g in grid) < 1e-6
        assert not torch.equal(item["blurry"], item["sharp"])  # an averaged window, not its own frame
        assert float(item["severity"]) < 100
    # determinism under torch.manual_seed
    torch.manual_seed(7)
    a = [ds[i] for i in range(3)]
    torch.manual_seed(7)
    b = [ds[i] for i in range(3)]
    for x, y in zip(a, b):
        assert all(torch.equal(x[k], y[k]) for k in x)


def test_window_train_set_identity_pairs(prepared):
    ds = _train_set(prepared, identity_fraction=1.0)
    torch.manual_seed(1)
    for i in range(4):
        item = ds[i]
        assert torch.equal(item["blurry"], item["sharp"])
        assert float(item["severity"]) == 100.0  # capped PSNR of identical images


def test_window_train_set_stills(prepared, tmp_path):
    src = engine.StillsSource(_green_stills(tmp_path / "stills"))
    ds = _train_set(prepared, stills=src, stills_fraction=1.0, identity_fraction=0.0, crop=40)
    torch.manual_seed(3)
    for i in range(4):
        item = ds[i]
        assert item["sharp"].shape == (3, 40, 40)
        r, g, b = item["sharp"].mean(dim=(1, 2)).tolist()
        assert g > 0.45 and r < 0.2 and b < 0.2  # a still, not an astronaut window
        assert not torch.equal(item["blurry"], item["sharp"])
        assert 0.0 <= float(item["u"]) <= 1.0
    torch.manual_seed(3)
    again = ds[0]
    torch.manual_seed(3)
    assert torch.equal(ds[0]["blurry"], again["blurry"])
    # the sample itself: a blurry mean, one of its frames, u = i/(N-1) with N one of the frame counts
    torch.manual_seed(4)
    blurry, sharp, u = src.sample(1)
    assert blurry.shape == sharp.shape == (72, 72, 3) and blurry.dtype == np.uint8
    assert any(abs(u * (n - 1) - round(u * (n - 1))) < 1e-9 for n in src.frame_counts)
    assert psnr_uint8(blurry, sharp) < 60


def test_window_val_set_items(prepared):
    root, recs = load_manifest(prepared["manifest"])
    val = [r for r in recs if r["split"] == "val"]
    ds = WindowValSet(root, val)
    assert len(ds) == len(val) > 0
    for i in range(len(ds)):
        item, frames = ds[i], ds.frames(i)
        n = len(frames)
        assert n % 2 == 1 and float(item["u"]) == 0.5
        mid = frames[(n - 1) // 2]  # the FMR-middle frame (frames are stored FMR-ordered)
        assert torch.equal(item["sharp"], torch.from_numpy(mid).permute(2, 0, 1).float() / 255)
        assert torch.equal(item["blurry"], torch.from_numpy(average_frames(frames)).permute(2, 0, 1).float() / 255)
        assert float(item["severity"]) == pytest.approx(val[i]["severity"], rel=1e-6)
    with pytest.raises(DataError, match="no validation windows"):
        WindowValSet(root, [])
    with pytest.raises(DataError, match="no training windows"):
        WindowTrainSet(root, [], crop=8, scale_range=(1, 1), epoch_samples=1)


def test_build_datasets(dataset, prepared, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(dataset["root"], data)
    cache = tmp_path / "cache"
    prepare_windows(data, cache, CFG, detector=FakeDetector(dataset["face"]), progress=False)
    recipe = {"crop": 32, "epoch_samples": 5, "identity_fraction": 0.0, "stills_fraction": 0.0}
    # windows are cached, so no detector (dlib) is needed here
    train, val = build_datasets(data, None, cache_dir=cache, prep=CFG, progress=False, recipe=recipe)
    _, recs = load_manifest(cache / f"windows-{CFG.digest()}" / "manifest.json")
    assert len(train) == 5 and train.crop == 32 and train.stills is None
    assert len(train.windows) + len(val) == len(recs)
    assert {w["split"] for w in train.windows} == {"train"} and {w["split"] for w in val.windows} == {"val"}
    assert train[0]["sharp"].shape == (3, 32, 32)
    n_val = len(val)
    _, val1 = build_datasets(data, None, cache_dir=cache, prep=CFG, progress=False, recipe=recipe, max_val=1)
    assert len(val1) == 1 and n_val > 1
    _, val2 = build_datasets(data, None, cache_dir=cache, prep=CFG, progress=False, recipe=recipe, max_val=1)
    assert val1.windows == val2.windows  # the seeded shuffle is reproducible
    # stills under faces/utkface are picked up: the training side of the still split only
    from facedeblur.data.engine import _find_stills
    from facedeblur.data.strong import InterleavedSet, MixedTrainSet, split_stills

    _green_stills(data / "faces" / "utkface")
    train_s, _ = build_datasets(data, None, cache_dir=cache, prep=CFG, progress=False,
                                recipe={**recipe, "stills_fraction": 1.0})
    side, held = split_stills(_find_stills(data), seed=CFG.seed, val_percent=CFG.val_percent)
    assert train_s.stills is not None and train_s.stills.paths == side and train_s.stills_fraction == 1.0
    assert set(side).isdisjoint(held)
    # the strong-blur engine: a mix of synthetic and window samples, validation interleaved
    mix, val_m = build_datasets(data, None, cache_dir=cache, prep=CFG, progress=False,
                                recipe={**recipe, "synth_fraction": 0.5, "synth_val_count": 3,
                                        "synth": {"extent": [2.0, 4.0], "identity_sharp": True}})
    assert isinstance(mix, MixedTrainSet) and isinstance(val_m, InterleavedSet) and mix.kind == "moments"
    assert mix.summary["synth_fraction"] == 0.5 and sum(mix.summary["severity_histogram"]["bins"].values()) == 300
    assert val_m.source(0) == "synth" and val_m.source(1) == "video" and len(val_m) == 3 + n_val
    assert mix.parts[0].cfg.identity_sharp and not val_m.sets[0].cfg.identity_sharp  # validation: clean targets
    torch.manual_seed(0)
    assert mix[0]["sharp"].shape == (3, 32, 32)


def test_build_datasets_clip_kind(dataset, prepared, tmp_path):
    """kind="clip" (what ``facedeblur train`` asks for a clip wrapper such as FineNet's): strong-blur clips of the
    card's frame window from the split sharp pools; validation items are seeded."""
    from facedeblur.data.kinds import check_item
    from facedeblur.data.strong import SynthClipSet, SynthClipValSet
    from facedeblur.models import get_card

    data = tmp_path / "data"
    shutil.copytree(dataset["root"], data)
    cache = tmp_path / "cache"
    prepare_windows(data, cache, CFG, detector=FakeDetector(dataset["face"]), progress=False)
    recipe = {"crop": 32, "epoch_samples": 3, "synth_val_count": 2, "synth": {"extent": [2.0, 4.0]}}
    train, val = build_datasets(data, get_card("finenet.lite"), cache_dir=cache, prep=CFG, progress=False,
                                recipe=recipe, kind="clip")
    assert isinstance(train, SynthClipSet) and isinstance(val, SynthClipValSet)
    assert train.kind == val.kind == "clip" and len(train) == 3 and len(val) == 2 and train.frames == 5
    assert {w["split"] for w in train.pool.windows} == {"train"} and {w["split"] for w in val.pool.windows} == {"val"}
    torch.manual_seed(0)
    item = train[0]
    check_item("clip", item)
    assert item["blurry"].shape == item["sharp"].shape == (5, 3, 32, 32)
    v0, v0_again = val[0], val[0]
    assert v0["blurry"].shape == (5, 3, CFG.face_size, CFG.face_size)
    assert torch.equal(v0["blurry"], v0_again["blurry"]) and float(v0["severity"]) > 0


def test_pick_frame_centre_fraction():
    """centre_fraction: the FMR-middle frame with that probability, else the uniform draw."""
    from facedeblur.data.engine import _pick_frame

    assert _pick_frame(0.2, 9, 0.5, 0) == 4 and _pick_frame(0.7, 9, 0.5, 0) == 0
    assert _pick_frame(0.0, 6, 0.0, 5) == 5  # fraction 0: always the uniform draw (the paper)
    assert _pick_frame(0.99, 6, 1.0, 5) == 2


def test_window_train_set_static_exposures(prepared):
    """static_fraction: N noisy captures of one frame, averaged; the target is one capture. The pair's PSNR is
    that of a static window (high, but finite: the captures' noise differs), and the sampling is seeded."""
    ds = _train_set(prepared, identity_fraction=0.0, stills_fraction=0.0, static_fraction=1.0,
                    static_noise=(0.5, 0.5))
    torch.manual_seed(5)
    for i in range(4):
        item = ds[i]
        b, s = item["blurry"] * 255, item["sharp"] * 255
        assert torch.equal(b, b.round()) and torch.equal(s, s.round())  # 8-bit images
        diff = (b - s).pow(2).mean().sqrt().item()
        assert 0.3 < diff < 1.0  # ~ sigma * sqrt(1 - 1/N), rounded: nothing moved, only noise differs
        assert 45.0 < float(item["severity"]) < 60.0
    torch.manual_seed(5)
    again = ds[0]
    torch.manual_seed(5)
    first = ds[0]
    assert torch.equal(first["blurry"], again["blurry"]) and torch.equal(first["sharp"], again["sharp"])
    # fractions are checked
    root, recs = load_manifest(prepared["manifest"])
    train = [r for r in recs if r["split"] == "train"]
    with pytest.raises(DataError, match="must not exceed 1"):
        WindowTrainSet(root, train, crop=8, scale_range=(1, 1), epoch_samples=1, identity_fraction=0.5,
                       stills_fraction=0.0, static_fraction=0.6)
    with pytest.raises(DataError, match="static_noise"):
        WindowTrainSet(root, train, crop=8, scale_range=(1, 1), epoch_samples=1, static_noise=(1.0, 0.5))
    # without static samples nothing changes: the default draws no extra random numbers
    plain = _train_set(prepared, identity_fraction=0.0)
    torch.manual_seed(2)
    x = plain[0]
    torch.manual_seed(2)
    y = _train_set(prepared, identity_fraction=0.0, static_fraction=0.0)[0]
    assert torch.equal(x["blurry"], y["blurry"])


def test_build_datasets_prepares_faces_at_the_cards_face_size(tmp_path, monkeypatch):
    """Without ``prep``, windows are cut at the card's face size (DFPGnet: 128 px), not at a fixed 256 px."""
    import dataclasses

    from facedeblur.models import get_card

    from facedeblur.data import engine

    seen = []

    class Stop(Exception):
        pass

    def fake_prepare(data_dir, cache_dir, cfg, progress=True):
        seen.append(cfg)
        raise Stop

    monkeypatch.setattr(engine, "prepare_windows", fake_prepare)
    for name, size in (("dfpgnet.lite", 128), ("cfmd-gan.lite", 256)):
        with pytest.raises(Stop):
            build_datasets(tmp_path, get_card(name), cache_dir=tmp_path / "cache", progress=False)
        assert seen[-1].face_size == size
        assert dataclasses.replace(seen[-1], face_size=256) == PrepConfig()  # only the size follows the card
    with pytest.raises(Stop):
        build_datasets(tmp_path, None, cache_dir=tmp_path / "cache", progress=False)
    assert seen[-1] == PrepConfig()


def test_real_faces_images_and_cached_video_crops(tmp_path):
    """DATA/real_lq: images are taken as they are, videos give aligned face crops (largest face, every stride-th
    frame, at most per_video), cached so the detector runs once; no real_lq is a typed error."""
    from facedeblur.data.real import real_faces
    from facedeblur.errors import DataError
    from facedeblur.metrics.face_landmarks import Face as Det

    with pytest.raises(DataError, match="real_lq"):
        real_faces(tmp_path / "nothing", tmp_path / "cache", progress=False)
    lq = tmp_path / "data" / "real_lq"
    (lq / "crops").mkdir(parents=True)
    cv2.imwrite(str(lq / "crops" / "a.png"), np.full((64, 64, 3), 100, np.uint8))
    (lq / "vids").mkdir()
    w = cv2.VideoWriter(str(lq / "vids" / "v.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 96))
    for i in range(12):
        w.write(np.full((96, 96, 3), 20 * i, np.uint8))
    w.release()

    class FivePoints:
        calls = 0

        def detect(self, rgb, max_faces=None):
            FivePoints.calls += 1
            pts = np.array([[38, 40], [58, 40], [48, 52], [40, 64], [56, 64]], np.float64)
            return [Det((28.0, 28.0, 68.0, 78.0), 0.99, pts)]

    got = real_faces(tmp_path / "data", tmp_path / "cache", face_size=32, per_video=3, stride=2,
                     detector=FivePoints(), progress=False)
    assert got[0] == lq / "crops" / "a.png" and len(got) == 4 and FivePoints.calls == 3  # frames 0, 2, 4
    crops = [cv2.imread(str(p)) for p in got[1:]]
    assert all(c.shape == (32, 32, 3) for c in crops)
    assert crops[0].mean() < crops[1].mean() < crops[2].mean()  # frames in order
    again = real_faces(tmp_path / "data", tmp_path / "cache", face_size=32, per_video=3, stride=2,
                       detector=FivePoints(), progress=False)
    assert again == got and FivePoints.calls == 3  # cached: no detection the second time
