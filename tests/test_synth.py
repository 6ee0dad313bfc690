"""The strong-blur engine (facedeblur.data.synth / strong / kinds): exact ground truth, schedule, datasets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facedeblur.data import kinds
from facedeblur.data.strong import (InterleavedSet, MixedTrainSet, SharpPool, SynthTrainSet, SynthValSet,
                                    split_stills)
from facedeblur.data.synth import (Motion, SynthConfig, degrade, draw_motion, head_motion, moment, moment_offsets,
                                   render, severity_histogram, shake_motion, synth_sample)
from facedeblur.errors import DataError, InputError

cv2 = pytest.importorskip("cv2")


def _face(size: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth textured test image (no faces needed for the mechanics)."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (size, size, 3)).astype(np.float32), (0, 0), 1.5)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def test_shake_path_extent_centroid_and_order() -> None:
    rng = np.random.default_rng(1)
    for extent in (3.0, 12.0, 41.0):
        m = shake_motion(rng, extent)
        assert m.kind == "shake"
        assert np.allclose(m.path.mean(axis=0), 0.0, atol=1e-9)
        assert np.ptp(m.path, axis=0).max() == pytest.approx(extent, rel=1e-6)
        assert m.path[0, 0] <= m.path[-1, 0]  # FMR-like order: u = 0 has the smaller x


def test_shake_render_is_the_mean_of_shifted_images() -> None:
    """The kernel rendering equals the exposure integral: the mean of the image shifted (bilinearly) along the
    path -- an independent computation with cv2.warpAffine, compared away from the borders."""
    img = _face(64)
    m = shake_motion(np.random.default_rng(3), 9.0)
    ref = np.mean([cv2.warpAffine(img.astype(np.float32), np.float32([[1, 0, dx], [0, 1, dy]]), (64, 64),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
                   for dx, dy in m.path], axis=0)
    got = render(img, m)
    assert np.abs(got - ref)[12:-12, 12:-12].max() < 1e-2


def test_moment_path_endpoints_and_centroid() -> None:
    path = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0]])
    assert np.allclose(moment_offsets(path, 0.0), path[0])
    assert np.allclose(moment_offsets(path, 1.0), path[-1])
    assert np.allclose(moment_offsets(path, 0.5), path.mean(axis=0))
    with pytest.raises(InputError):
        moment_offsets(path, 1.5)


def test_moments_shift_content_along_the_path() -> None:
    img = np.zeros((41, 41, 3), np.uint8)
    img[20, 20] = 255
    m = Motion("shake", np.array([[-6.0, 0.0], [0.0, 0.0], [6.0, 0.0]]))
    for u, x in ((0.0, 14), (0.5, 20), (1.0, 26)):
        out = moment(img, m, u)
        assert np.unravel_index(out[..., 0].argmax(), out.shape[:2]) == (20, x)
    blurry = render(img, m)
    assert set(np.nonzero(blurry[20, :, 0] > 1)[0]) == {14, 20, 26}  # the mean of the three poses


def test_head_motion_sweeps_the_extent_and_is_not_uniform() -> None:
    cfg = SynthConfig()
    m = head_motion(np.random.default_rng(5), 20.0, 128, cfg)
    assert m.kind == "head" and m.path.shape == (cfg.head_subframes, 4)
    img = _face(128, 2)
    blurry = render(img, m)
    sharp = moment(img, m, 0.5)
    # non-uniform: the residual differs between image regions
    err = np.abs(blurry - sharp.astype(np.float32)).mean(axis=2)
    assert err.mean() > 1.0


def test_sharp_schedule_without_degradations_is_the_identity() -> None:
    cfg = SynthConfig(sharp_fraction=1.0, near_sharp_fraction=0.0, noise_fraction=0.0, jpeg_fraction=0.0)
    img = _face()
    b, s, u, m = synth_sample(np.random.default_rng(0), img, cfg)
    assert m.kind == "none" and np.array_equal(b, img) and np.array_equal(s, img)


def test_identity_sharp_makes_sharp_samples_identity_pairs() -> None:
    cfg = SynthConfig(sharp_fraction=1.0, near_sharp_fraction=0.0, noise_fraction=1.0, jpeg_fraction=1.0)
    img = _face()
    b, s, _, _ = synth_sample(np.random.default_rng(0), img, cfg)
    assert np.array_equal(s, img) and not np.array_equal(b, img)  # default: the clean image is the target
    b2, s2, _, _ = synth_sample(np.random.default_rng(0), img, SynthConfig(**{**cfg.to_dict(), "identity_sharp": True}))
    assert np.array_equal(b2, b) and np.array_equal(s2, b2)  # same draws; the target is the degraded input
    with pytest.raises(InputError, match="identity_sharp"):
        SynthConfig(identity_sharp=1)


def test_degrade_noise_and_jpeg_change_only_the_input() -> None:
    img = _face().astype(np.float32)
    cfg = SynthConfig(noise_fraction=1.0, jpeg_fraction=1.0, noise_sigma=(2.0, 2.0), jpeg_quality=(70, 70))
    out, info = degrade(np.random.default_rng(0), img, cfg)
    assert out.dtype == np.uint8 and info == {"noise_sigma": 2.0, "jpeg_quality": 70}
    clean, info0 = degrade(np.random.default_rng(0), img, SynthConfig(noise_fraction=0.0, jpeg_fraction=0.0))
    assert info0 == {} and np.array_equal(clean, np.rint(img).astype(np.uint8))


def test_severity_histogram_tracks_the_extent() -> None:
    imgs = [_face(64, i) for i in range(4)]
    mild = severity_histogram(imgs, SynthConfig(face_size=64, sharp_fraction=0, near_sharp_fraction=0,
                                                extent=(1.0, 1.5), noise_fraction=0, jpeg_fraction=0), samples=30)
    strong = severity_histogram(imgs, SynthConfig(face_size=64, sharp_fraction=0, near_sharp_fraction=0,
                                                  extent=(10.0, 12.0), noise_fraction=0, jpeg_fraction=0), samples=30)
    assert sum(strong["bins"].values()) == 30
    assert strong["median_db"] < mild["median_db"] - 5


def test_config_errors_are_typed() -> None:
    with pytest.raises(InputError, match="sharp_fraction"):
        SynthConfig(sharp_fraction=1.5)
    with pytest.raises(InputError, match="unknown synth keys"):
        SynthConfig.from_mapping({"extnt": [1, 2]})
    with pytest.raises(InputError, match="extent"):
        SynthConfig(extent=(9.0, 3.0))
    assert SynthConfig.from_mapping({"extent": [2, 3]}).extent == (2, 3)


def test_draw_motion_scales_with_image_size() -> None:
    cfg = SynthConfig(face_size=64, sharp_fraction=0, near_sharp_fraction=0, head_fraction=0, extent=(8.0, 8.0))
    m = draw_motion(np.random.default_rng(0), 128, cfg)
    assert np.ptp(m.path, axis=0).max() == pytest.approx(16.0)


def _write_stills(tmp_path, n: int = 6) -> list:
    paths = []
    for i in range(n):
        p = tmp_path / f"still_{i}.png"
        cv2.imwrite(str(p), _face(48, i))
        paths.append(p)
    return paths


def test_split_stills_is_disjoint_and_stable(tmp_path) -> None:
    paths = [tmp_path / f"{i}.jpg" for i in range(200)]
    tr, va = split_stills(paths)
    assert set(tr).isdisjoint(va) and len(tr) + len(va) == 200 and 20 <= len(va) <= 60
    assert split_stills(list(reversed(paths)))[1] == list(reversed(va))


def test_synth_datasets_give_moments_items(tmp_path) -> None:
    pool = SharpPool(_write_stills(tmp_path), face_size=48)
    cfg = SynthConfig(face_size=48, extent=(3.0, 6.0))
    ds = SynthTrainSet(pool, cfg, crop=32, scale_range=(1.0, 1.2), epoch_samples=10)
    torch.manual_seed(0)
    a = ds[0]
    kinds.check_item(ds.kind, a)
    assert a["blurry"].shape == (3, 32, 32) and 0.0 <= float(a["u"]) <= 1.0
    torch.manual_seed(0)
    assert torch.equal(ds[0]["blurry"], a["blurry"])  # reproducible from torch's RNG
    val = SynthValSet(pool, cfg, count=3)
    assert torch.equal(val[1]["blurry"], val[1]["blurry"]) and float(val[2]["u"]) == 0.5
    assert val[0]["blurry"].shape == (3, 48, 48)
    with pytest.raises(IndexError):
        val[3]
    with pytest.raises(DataError, match="crop"):
        SynthTrainSet(pool, cfg, crop=64, scale_range=(1.0, 1.2), epoch_samples=1)


def test_mixed_and_interleaved_sets(tmp_path) -> None:
    pool = SharpPool(_write_stills(tmp_path, 3), face_size=48)
    cfg = SynthConfig(face_size=48, extent=(3.0, 6.0))
    a = SynthValSet(pool, cfg, count=3, seed=0)
    b = SynthValSet(pool, cfg, count=1, seed=1)
    inter = InterleavedSet([a, b], ["a", "b"])
    assert len(inter) == 4 and [inter.source(i) for i in range(4)] == ["a", "b", "a", "a"]
    assert torch.equal(inter[1]["blurry"], b[0]["blurry"]) and torch.equal(inter[2]["blurry"], a[1]["blurry"])
    mix = MixedTrainSet([(a, 1.0), (b, 0.0)], epoch_samples=5)
    assert mix.kind == "moments" and len(mix) == 5
    torch.manual_seed(0)
    got = mix[0]["blurry"]
    assert any(torch.equal(got, a[i]["blurry"]) for i in range(3))  # the weight-0 part is never drawn
    with pytest.raises(DataError):
        MixedTrainSet([(a, 0.0)], epoch_samples=1)


def test_kinds_contract() -> None:
    item = {"blurry": torch.zeros(3, 8, 8), "sharp": torch.zeros(3, 8, 8), "u": torch.tensor(0.5)}
    kinds.check_item("moments", item)
    kinds.check_item("pair", item)  # a moments item is also a pair
    assert kinds.compatible("moments", "pair") and not kinds.compatible("pair", "moments")
    with pytest.raises(DataError, match="missing"):
        kinds.check_item("unpaired", item)
    with pytest.raises(DataError, match="dims"):
        kinds.check_item("clip", item)
    with pytest.raises(DataError, match="unknown sample kind"):
        kinds.check_kind("triplet")


def test_recipe_synth_key_is_validated() -> None:
    from facedeblur.train.recipes import RecipeError, resolve_recipe

    r = resolve_recipe({}, {"synth_fraction": 0.5, "synth": {"extent": [4, 8]}})
    assert r.data["synth"]["extent"] == [4, 8] and r.data["synth_fraction"] == 0.5
    with pytest.raises(RecipeError, match="synth"):
        resolve_recipe({}, {"synth": {"extnt": [4, 8]}})
    with pytest.raises(RecipeError, match="synth_fraction"):
        resolve_recipe({}, {"synth_fraction": 2})


def test_clip_sample_frames_follow_one_continuous_motion() -> None:
    from facedeblur.data.synth import clip_sample

    img = np.zeros((64, 64, 3), np.uint8)
    img[32, 20] = 255
    cfg = SynthConfig(face_size=64, sharp_fraction=0, near_sharp_fraction=0, head_fraction=0, extent=(6.0, 6.0),
                      noise_fraction=0, jpeg_fraction=0)
    blurry, sharp, motion = clip_sample(np.random.default_rng(0), img, cfg, frames=4)
    assert blurry.shape == sharp.shape == (4, 64, 64, 3)
    # the sharp frames' point moves along the path: positions are the segments' centroids, in order
    per = len(motion.path) // 4
    for t in range(4):
        c = motion.path[t * per:(t + 1) * per].mean(axis=0)
        y, x = np.unravel_index(sharp[t, ..., 0].argmax(), (64, 64))
        assert abs(x - (20 + c[0])) <= 1 and abs(y - (32 + c[1])) <= 1
        # each blurry frame's mass is centred on its sharp frame's point
        m = blurry[t, ..., 0].astype(float)
        ys, xs = np.nonzero(m)
        assert abs((xs * m[ys, xs]).sum() / m.sum() - (20 + c[0])) < 1.0
    assert np.ptp(motion.path, axis=0).max() == pytest.approx(24.0)  # 4 exposures of 6 px


def test_clip_dataset_items(tmp_path) -> None:
    from facedeblur.data.strong import SynthClipSet

    pool = SharpPool(_write_stills(tmp_path, 2), face_size=48)
    ds = SynthClipSet(pool, SynthConfig(face_size=48, extent=(2.0, 4.0)), frames=3, crop=32, epoch_samples=4)
    torch.manual_seed(1)
    item = ds[0]
    kinds.check_item("clip", item)
    assert item["blurry"].shape == item["sharp"].shape == (3, 3, 32, 32)


def test_unpaired_dataset_items(tmp_path) -> None:
    from facedeblur.data.strong import UnpairedSet

    stills = _write_stills(tmp_path, 2)
    real = tmp_path / "real.png"
    cv2.imwrite(str(real), cv2.GaussianBlur(_face(80, 9), (0, 0), 2.0))
    ds = UnpairedSet(SharpPool(stills, face_size=48), [real], crop=32, epoch_samples=3)
    torch.manual_seed(0)
    item = ds[0]
    kinds.check_item("unpaired", item)
    assert item["real_blurry"].shape == (3, 32, 32)
    with pytest.raises(DataError, match="real blurry"):
        UnpairedSet(SharpPool(stills, face_size=48), [], crop=32, epoch_samples=1)


def test_recipe_synth_must_be_a_mapping_without_face_size() -> None:
    from facedeblur.train.recipes import RecipeError, resolve_recipe

    with pytest.raises(RecipeError, match="must be a mapping"):
        resolve_recipe({}, {"synth": [1, 2]})
    with pytest.raises(RecipeError, match="face_size"):
        resolve_recipe({}, {"synth": {"face_size": 128}})
