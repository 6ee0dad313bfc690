"""The shipped example image is reproducible from examples/make_example.py and really is motion-blurred."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FILES = ("astronaut_motion_blur.png", "astronaut_sharp_crop.png")


@pytest.fixture(scope="module")
def make_example():
    script = EXAMPLES / "make_example.py"
    assert script.is_file(), f"{script} is missing: the example image cannot be checked"
    spec = importlib.util.spec_from_file_location("facedeblur_make_example", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def regenerated(make_example, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("example")
    assert make_example.main(["--out-dir", str(out)]) == 0
    return out


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, f"cannot read {path}"
    return img[:, :, ::-1]


@pytest.mark.parametrize("name", FILES)
def test_regenerated_matches_committed(regenerated: Path, name: str) -> None:
    committed = _read_rgb(EXAMPLES / name)
    fresh = _read_rgb(regenerated / name)
    assert committed.shape == fresh.shape == (256, 256, 3)
    assert committed.dtype == fresh.dtype == np.uint8
    diff = np.abs(committed.astype(np.int16) - fresh.astype(np.int16))
    assert diff.max() <= 1, f"{name}: regenerated image differs by up to {diff.max()} grey levels"


def test_blurry_is_blurrier_than_sharp(make_example) -> None:
    blurry = _read_rgb(EXAMPLES / FILES[0])
    sharp = _read_rgb(EXAMPLES / FILES[1])
    lv_blurry, lv_sharp = make_example.laplacian_variance(blurry), make_example.laplacian_variance(sharp)
    assert lv_blurry < 0.5 * lv_sharp, (lv_blurry, lv_sharp)
    # Blurred, but still the same registered face: the shake path is centred on the sharp position.
    assert 20.0 < make_example.psnr(blurry, sharp) < 35.0


def test_trajectory_is_seeded_and_scaled(make_example) -> None:
    a = make_example.shake_trajectory(13, 8.0, 1.5, seed=5)
    b = make_example.shake_trajectory(13, 8.0, 1.5, seed=5)
    c = make_example.shake_trajectory(13, 8.0, 1.5, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    xy = a[:, :2]
    span = np.max(np.linalg.norm(xy[:, None] - xy[None], axis=-1))
    assert span == pytest.approx(8.0)
    np.testing.assert_allclose(xy.mean(axis=0), 0.0, atol=1e-9)
    assert a[:, 2].max() - a[:, 2].min() == pytest.approx(1.5)
    # Smooth: consecutive steps are small compared with the whole path.
    assert np.linalg.norm(np.diff(xy, axis=0), axis=1).max() < 0.3 * span


def test_identity_render_is_the_sharp_crop(make_example) -> None:
    """One frame at the identity reproduces the sharp crop; a pure shift moves the content by that shift."""
    src = make_example._source_linear()
    still = make_example.render(src, np.zeros((1, 3)))
    shifted = make_example.render(src, np.array([[3.0, 0.0, 0.0]]))
    np.testing.assert_allclose(shifted[40:-40, 43:-40], still[40:-40, 40:-43], atol=2e-3)


def test_srgb_round_trip(make_example) -> None:
    x = np.linspace(0.0, 1.0, 1001)
    np.testing.assert_allclose(make_example.linear_to_srgb(make_example.srgb_to_linear(x)), x, atol=1e-12)
