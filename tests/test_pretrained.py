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


def test_restore_example_changes_it_within_bounds(model, example):
    out = model.restore(example, u=0.5)
    assert out.shape == example.shape and out.dtype == example.dtype
    diff = np.abs(out.astype(int) - example.astype(int))
    assert diff.max() > 0  # the network did something
    assert diff.mean() < 8  # and did not wreck the face


def test_restore_moments_gives_seven_distinct_frames(model, example):
    frames = model.restore_moments(example, n=7)
    assert len(frames) == 7
    for i in range(7):
        for j in range(i + 1, 7):
            assert not np.array_equal(frames[i], frames[j]), f"moments {i} and {j} are identical"


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
