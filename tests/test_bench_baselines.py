"""Classical baselines (facedeblur.benchmark.baselines) on a face crop of skimage's astronaut."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from facedeblur.benchmark import baselines as B
from facedeblur.benchmark.data import convolve_kernel, trajectory_kernel
from facedeblur.errors import InputError
from facedeblur.metrics import psnr


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    from skimage.data import astronaut

    return cv2.resize(astronaut()[20:236, 140:356], (128, 128), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("size,seed", [(9, 0), (15, 1)])
def test_oracle_deconvolution_beats_the_blurry_input(face, size, seed):
    k = trajectory_kernel(np.random.default_rng(seed), size)
    blurry = convolve_kernel(face, k)
    base = psnr(blurry, face)
    wiener, _ = B.BASELINES["wiener-oracle"](blurry, k)
    rl, _ = B.BASELINES["rl-oracle"](blurry, k)
    assert psnr(wiener, face) > base + 3.0
    assert psnr(rl, face) > base + 2.0
    # with a wrong kernel (a 90-degree rotated one) the same deconvolution is clearly worse than with the true one
    assert psnr(B.wiener_deconvolve(blurry, np.rot90(k)), face) < psnr(wiener, face) - 2.0


def test_oracle_baselines_need_a_kernel(face):
    with pytest.raises(InputError, match="kernel"):
        B.BASELINES["wiener-oracle"](face, None)
    with pytest.raises(InputError):
        B.wiener_deconvolve(face, np.ones((4, 4)))  # even size: not centred
    with pytest.raises(InputError):
        B.wiener_deconvolve(face.astype(np.float32), np.ones((3, 3)))


@pytest.mark.parametrize("length,angle", [(9, 30), (13, 120), (5, 0)])
def test_cepstrum_recovers_a_linear_motion_blur(face, length, angle):
    blurry = convolve_kernel(face, B.linear_motion_psf(length, angle))
    est_len, est_angle, z, psf = B.estimate_motion_psf(blurry)
    assert abs(est_len - length) <= 1
    assert min(abs(est_angle - angle), 180 - abs(est_angle - angle)) <= 5
    assert z < B.CEPSTRUM_Z
    out, info = B.BASELINES["wiener-motion"](blurry)
    assert info["psf_length"] == est_len and psnr(out, face) > psnr(blurry, face) + 2.0


def test_cepstrum_leaves_a_sharp_image_alone(face):
    length, _, z, psf = B.estimate_motion_psf(face)
    assert length == 0 and z > B.CEPSTRUM_Z and psf.shape == (1, 1)
    out, info = B.BASELINES["wiener-motion"](face)
    assert np.array_equal(out, face) and info["psf_length"] == 0


def test_linear_motion_psf_geometry():
    k = B.linear_motion_psf(8, 0)
    assert k.shape == (9, 9) and k.sum() == pytest.approx(1.0)
    assert np.count_nonzero(k.sum(axis=1)) == 1  # horizontal: one row
    ys, xs = np.mgrid[:9, :9]
    assert (k * xs).sum() == pytest.approx(4) and (k * ys).sum() == pytest.approx(4)
    v = B.linear_motion_psf(8, 90)
    assert np.allclose(v, k.T)
    assert B.linear_motion_psf(0, 45).tolist() == [[1.0]]


def test_unsharp_mask_matches_its_formula(face):
    from scipy.ndimage import gaussian_filter

    out = B.unsharp_mask(face, radius=2.0, amount=1.0)
    x = face.astype(np.float64) / 255
    # independent reference: scipy's Gaussian (truncated at 3 sigma = the same 13 taps, mirror border)
    low = np.stack([gaussian_filter(x[..., c], 2.0, mode="mirror", truncate=3.0) for c in range(3)], axis=-1)
    ref = np.clip(np.rint((x + (x - low)) * 255), 0, 255)
    assert np.abs(out.astype(int) - ref).max() <= 1
    flat = np.full((32, 32, 3), 77, np.uint8)
    assert np.array_equal(B.unsharp_mask(flat), flat)


def test_blurry_is_identity_and_keys_follow_parameters(face):
    out, _ = B.BASELINES["blurry"](face)
    assert np.array_equal(out, face) and out is not face
    keys = {b.key for b in B.BASELINES.values()}
    assert len(keys) == len(B.BASELINES)
    changed = B.Baseline("unsharp", "", B.BASELINES["unsharp"].fn, {"radius": 3.0, "amount": 1.0})
    assert changed.key != B.BASELINES["unsharp"].key


def test_get_baselines():
    assert [b.name for b in B.get_baselines("all")] == list(B.BASELINES)
    assert B.get_baselines("none") == []
    assert [b.name for b in B.get_baselines("unsharp,blurry")] == ["unsharp", "blurry"]
    with pytest.raises(InputError, match="unknown baseline"):
        B.get_baselines("deblurgan")
