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
