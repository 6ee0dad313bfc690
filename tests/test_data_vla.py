"""Variable-length averaging windows for training (facedeblur.data.vla, engine.prepare_vla_windows), on the
synthetic moving-face clips of test_bench_data (a fake template-matching landmark detector; no dlib)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facedeblur.benchmark import data as D
from facedeblur.data import average_frames, engine
from facedeblur.data.blur import psnr_uint8
from facedeblur.data.vla import VLAConfig, clip_vla_windows, vla_length
from facedeblur.data.sources import find_clips
from facedeblur.errors import DataError, InputError
from test_bench_data import FakeDetector, make_data

VLA = VLAConfig(min_len=3, max_len=7, min_psnr=10.0)
PREP = engine.PrepConfig(face_size=48, min_sharpness=1.0)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("vladata"))


@pytest.fixture(scope="module")
def prepared(media, tmp_path_factory):
    cache = tmp_path_factory.mktemp("vlacache")
    det = FakeDetector(media["face"])
    manifest = engine.prepare_vla_windows(media["root"], cache, PREP, VLA, per_clip=3, detector=det, progress=False)
    return {"cache": cache, "manifest": manifest, **dict(zip(("root", "windows"), engine.load_manifest(manifest)))}


def test_config_is_checked():
    with pytest.raises(InputError, match="odd"):
        VLAConfig(min_len=4)
    with pytest.raises(InputError, match="odd"):
        VLAConfig(min_len=9, max_len=7)
    with pytest.raises(InputError, match="min_iou"):
        VLAConfig(min_iou=1.5)


def test_benchmark_and_training_share_one_stop_rule():
    crops = [np.full((8, 8, 3), 100, np.uint8)] * 11
    boxes = [(0.0, 0.0, 8.0, 8.0)] * 11
    assert vla_length(crops, boxes, VLAConfig(max_len=9)) == D.vla_length(crops, boxes, D.BuildConfig(vla_max_len=9)) \
        == (9, "max_len")
    assert D.BuildConfig(vla_min_psnr=20.0, vla_min_iou=0.3).vla() == VLAConfig(min_psnr=20.0, min_iou=0.3)


def test_training_windows_follow_the_stop_rule_and_the_split(media, prepared):
    wins = prepared["windows"]
    # "walk" moves steadily: the overlap rule stops it at L = 5; "sway" oscillates: L = 1 < min_len, no window
    assert wins and {w["clip"] for w in wins} == {"walk"}
    assert all((w["kind"], w["n"], w["stop"], w["stride"]) == ("vla", 5, "overlap", 1) for w in wins)
    assert len({w["centre_frame"] for w in wins}) == len(wins)  # disjoint neighbourhoods
    for w in wins:
        frames = np.load(prepared["root"] / w["file"])
        assert frames.shape == (5, 48, 48, 3) and frames.dtype == np.uint8
        assert sorted(w["fmr_order"]) == list(range(5)) and w["fmr_order"][w["centre_index"]] == 2
        # the face moves right: FMR order (left-eye x) is the temporal order here
        assert w["fmr_order"] == [0, 1, 2, 3, 4]
        blurry = average_frames(frames)
        assert w["severity"] == pytest.approx(psnr_uint8(blurry, frames[2]), abs=1e-6)
        assert w["split"] == ("val" if engine._is_val(w["identity"], PREP) else "train")
        assert w["start_frame"] == w["centre_frame"] - 2


def test_same_windows_as_the_benchmark_cuts(media, prepared, tmp_path):
    """One implementation: the benchmark's VLA samples of the same clip are the same frames."""
    cfg = D.BuildConfig(sets=("vla",), split="all", face_size=48, vla_per_clip=3, vla_max_len=7, vla_min_len=3,
                        vla_min_psnr=10.0)
    built = D.build_manifest(D.find_sources(media["root"]), cfg, cache_dir=tmp_path, bench_cache=tmp_path / "b",
                             detector=FakeDetector(media["face"]), progress=False)
    bench = {s["centre_frame"]: D.load_sample(s) for s in built["samples"]}
    train = {w["centre_frame"]: w for w in prepared["windows"]}
    assert bench.keys() == train.keys()
    for c, w in train.items():
        assert np.array_equal(np.load(prepared["root"] / w["file"]), bench[c].frames)


def test_prepared_windows_are_cached_and_keyed_by_config(media, prepared):
    class NoDetector:
        def detect(self, rgb):  # pragma: no cover - must not be called
            raise AssertionError("cached clips must not be detected again")

        refine = detect

    again = engine.prepare_vla_windows(media["root"], prepared["cache"], PREP, VLA, per_clip=3,
                                       detector=NoDetector(), progress=False)
    assert again == prepared["manifest"]
    other = engine.prepare_vla_windows(media["root"], prepared["cache"], PREP, VLAConfig(min_len=3, max_len=5,
                                       min_psnr=10.0), per_clip=3, detector=FakeDetector(media["face"]),
                                       progress=False)
    assert other.parent != prepared["manifest"].parent
    assert {w["n"] for w in engine.load_manifest(other)[1]} == {5}  # max_len 5 reached before the overlap rule
    with pytest.raises(InputError, match="per_clip"):
        engine.prepare_vla_windows(media["root"], prepared["cache"], PREP, VLA, per_clip=0)
    meta = json.loads(prepared["manifest"].read_text())
    assert meta["config"]["vla"]["max_len"] == 7 and meta["config"]["per_clip"] == 3


def test_no_window_passes_gives_a_typed_error(media, tmp_path):
    with pytest.raises(DataError, match="no usable VLA windows"):
        engine.prepare_vla_windows(media["root"], tmp_path, PREP, VLAConfig(min_len=7, max_len=7, min_psnr=10.0),
                                   per_clip=2, detector=FakeDetector(media["face"]), progress=False)


def test_clip_windows_use_the_whole_clip(media):
    clip = next(c for c in find_clips(media["root"] / "videos") if c.name == "walk")
    wins = list(clip_vla_windows(clip, FakeDetector(media["face"]), VLA, per_clip=10, face_size=48, enlarge=0.5,
                                 min_sharpness=1.0, duplicate_threshold=0.3))
    # 20 frames, 7-frame neighbourhoods that may not overlap: at most 2 centres
    assert 1 <= len(wins) <= 2 and all(w.length == 5 for w in wins)


def test_train_set_draws_vla_windows_by_fraction(prepared, tmp_path):
    wins = prepared["windows"]
    # a fixed-length window that is plain grey: any sample from it has a flat blurry input
    grey = np.full((5, 48, 48, 3), 128, np.uint8)
    np.save(tmp_path / "grey.npy", grey)
    fixed = [{"file": "grey.npy", "n": 5, "fmr_order": [0, 1, 2, 3, 4]}]
    kw = dict(crop=48, scale_range=(1.0, 1.0), epoch_samples=16, identity_fraction=0.0, stills=None)
    only_vla = engine.WindowTrainSet(tmp_path, fixed, vla_root=prepared["root"], vla_windows=wins, vla_fraction=1.0,
                                     **kw)
    never = engine.WindowTrainSet(tmp_path, fixed, vla_root=prepared["root"], vla_windows=wins, vla_fraction=0.0,
                                  **kw)
    torch.manual_seed(0)
    assert all(float(only_vla[i]["blurry"].std()) > 0.01 for i in range(8))
    assert all(float(never[i]["blurry"].std()) == 0.0 for i in range(8))
    with pytest.raises(DataError, match="needs VLA windows"):
        engine.WindowTrainSet(tmp_path, fixed, vla_fraction=0.5, **kw)
    with pytest.raises(DataError, match="vla_fraction"):
        engine.WindowTrainSet(tmp_path, fixed, vla_root=prepared["root"], vla_windows=wins, vla_fraction=1.5, **kw)


def test_build_datasets_with_vla_fraction(media, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(engine, "default_detector", lambda: FakeDetector(media["face"]))
    recipe = {"crop": 48, "scale_aug": [1.0, 1.0], "epoch_samples": 8, "identity_fraction": 0.0,
              "stills_fraction": 0.0, "vla_fraction": 0.5,
              "vla": {"per_clip": 3, "min_len": 3, "max_len": 7, "min_psnr": 10.0}}
    prep = engine.PrepConfig(face_size=48, min_sharpness=1.0, frame_counts=(5,), strides=(1,), val_percent=50)
    train, val = engine.build_datasets(media["root"], None, cache_dir=tmp_path, progress=False, prep=prep,
                                       recipe=recipe)
    out = capsys.readouterr().out
    assert "VLA windows (Chrysos et al. §3.4)" in out and "lengths 5:" in out
    assert train.vla_fraction == 0.5 and train.vla_windows and all(w["kind"] == "vla" for w in train.vla_windows)
    item = train[0]
    assert item["blurry"].shape == (3, 48, 48)
    with pytest.raises(DataError, match="training recipe 'vla'"):
        engine.build_datasets(media["root"], None, cache_dir=tmp_path, progress=False, prep=prep,
                              recipe={**recipe, "vla": {"max_len": 4}})
    with pytest.raises(DataError, match="training recipe 'vla'"):
        engine.build_datasets(media["root"], None, cache_dir=tmp_path, progress=False, prep=prep,
                              recipe={**recipe, "vla": {"maxlen": 7}})
