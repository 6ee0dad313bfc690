"""The shipped default weights (embedded in the package): the README's main job, offline.

These tests need the embedded ``cfmd-gan`` weights; in a tree without them (``model_info("cfmd-gan").pretrained``
is False) they are skipped with that reason, and ``tests/test_restore.py`` checks the WeightsNotAvailableError path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import facedeblur

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut_motion_blur.png"
SHARP = Path(__file__).resolve().parents[1] / "examples" / "astronaut_sharp_crop.png"

pytestmark = pytest.mark.skipif(not facedeblur.model_info("cfmd-gan").pretrained,
                                reason="no embedded cfmd-gan weights in this tree")


@pytest.fixture(scope="module")
def model():
    return facedeblur.load("cfmd-gan", device="cpu")


@pytest.fixture(scope="module")
def example() -> np.ndarray:
    from facedeblur.restore import read_image

    return read_image(EXAMPLE)


def test_default_is_embedded_and_loads_offline(monkeypatch, model):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    card = facedeblur.model_info("cfmd-gan")
    assert card.weights.embedded and card.weights.sha256
    assert facedeblur.load("cfmd-gan", device="cpu").card.name == card.name == model.card.name


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (data range 255), computed here, independently of facedeblur.metrics."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


#: The README's example must come out closer to the sharp crop than the blurry input, by at least this much. The
#: shipped cfmd-gan.lite gains +0.017 dB on it at u = 0.5 (README; measured 25.852 -> 25.868 dB): it sharpens
#: conservatively. Returning the input gains 0; adding 1 to every pixel loses 0.12 dB (the example is 1.95 grey
#: levels brighter than its sharp crop on average), so both fail.
EXAMPLE_MIN_GAIN_DB = 0.008


def test_restore_example_is_closer_to_the_sharp_crop(model, example):
    from facedeblur.restore import read_image

    sharp = read_image(SHARP)
    out = model.restore(example, u=0.5)
    assert out.shape == example.shape and out.dtype == example.dtype
    gain = _psnr(out, sharp) - _psnr(example, sharp)
    assert gain >= EXAMPLE_MIN_GAIN_DB, f"restored example gains {gain:+.4f} dB over the blurry input"
    # the bar itself separates a model that does nothing, or brightens, from one that deblurs
    plus_one = np.clip(example.astype(int) + 1, 0, 255).astype(np.uint8)
    assert _psnr(plus_one, sharp) - _psnr(example, sharp) < EXAMPLE_MIN_GAIN_DB
    assert np.abs(out.astype(int) - example.astype(int)).mean() < 8  # and it did not wreck the face


def test_restore_moments_are_seven_ordered_spread_moments(model, example):
    """``restore_moments(n=7)``: frame k is the moment u = k/6 (the same as ``restore(u=k/6)``); the moments move
    away from the first one and towards the last one monotonically (they are ordered along u); and they spread out:
    each step changes over 1 % of the pixels, and the two ends are the farthest apart. The shipped weights: MSE from
    moment 0 = 0, 0.011, 0.033, 0.12, 0.19, 0.23, 0.26 (grey levels squared), 1,272-6,091 pixels changed per step."""
    frames = model.restore_moments(example, n=7)
    assert len(frames) == 7
    for k in (0, 3, 6):
        np.testing.assert_array_equal(frames[k], model.restore(example, u=k / 6))
    f = [x.astype(np.float64) for x in frames]

    def mse(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean((a - b) ** 2))

    from_first = [mse(x, f[0]) for x in f]
    from_last = [mse(x, f[-1]) for x in f]
    assert all(a < b for a, b in zip(from_first, from_first[1:])), f"not ordered along u: {from_first}"
    assert all(a > b for a, b in zip(from_last, from_last[1:])), f"not ordered along u: {from_last}"
    pixels = example.shape[0] * example.shape[1]
    changed = [int((frames[k + 1] != frames[k]).any(-1).sum()) for k in range(6)]
    assert min(changed) > 0.01 * pixels, f"pixels changed between neighbouring moments: {changed}"
    assert from_first[-1] == max(mse(a, b) for a in f for b in f), "the ends are not the farthest apart"


def test_restore_faces_takes_the_zoo_name(model):
    """``facedeblur.restore_faces(img, model="cfmd-gan")`` loads the shipped weights itself (device "auto") and gives
    what the loaded model gives, up to one grey level of device rounding (issue #18)."""
    from skimage.data import astronaut

    photo = astronaut()
    by_name, faces = facedeblur.restore_faces(photo, model="cfmd-gan")
    direct, faces2 = facedeblur.restore_faces(photo, model)
    assert len(faces) == len(faces2) == 1 and by_name.shape == photo.shape
    assert np.abs(by_name.astype(int) - direct.astype(int)).max() <= 1
    assert not np.array_equal(by_name, photo)


def _trajectory_blurred_face(extent: float = 14.0, seed: int = 4):
    """The sharp example crop blurred along a straight-ish camera-shake path, with the path's two end images."""
    from facedeblur.data.synth import moment, render, shake_motion
    from facedeblur.restore import read_image

    sharp = read_image(SHARP)
    motion = shake_motion(np.random.default_rng(seed), extent)
    blurry = np.clip(np.rint(render(sharp, motion)), 0, 255).astype(np.uint8)
    return blurry, moment(sharp, motion, 0.0), moment(sharp, motion, 1.0)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def test_restore_moments_are_continuous_along_the_trajectory(model):
    """Issue #12: the restored first and last moments are closer to the trajectory's end images than the restored
    centre moment is (u runs along the motion, as CFMD-GAN's continuity claims, §3)."""
    blurry, start, end = _trajectory_blurred_face()
    frames = model.restore_moments(blurry, n=7)
    first, centre, last = frames[0], frames[3], frames[-1]
    assert _mse(first, start) < _mse(centre, start), "moment u=0 is not nearer the path's start than u=0.5"
    assert _mse(last, end) < _mse(centre, end), "moment u=1 is not nearer the path's end than u=0.5"
