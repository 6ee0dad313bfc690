"""facedeblur.metrics: reference values for PSNR/SSIM, severity bins, landmark/identity/detection metrics.

Fixtures are made here or come from scikit-image's bundled images (offline). dlib tests run on one 256x256 image.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, uniform_filter
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import facedeblur.metrics as M
from facedeblur.errors import InputError


def _box_blur(img: np.ndarray) -> np.ndarray:
    """Deterministic 5x5 box blur, rounded to uint8 (no ties: sums of 25 integers / 25 are never x.5)."""
    size = (5, 5) if img.ndim == 2 else (5, 5, 1)
    return np.round(uniform_filter(img.astype(np.float64), size=size, mode="nearest")).astype(np.uint8)


@pytest.fixture(scope="module")
def camera_pair() -> tuple[np.ndarray, np.ndarray]:
    cam = data.camera()
    return _box_blur(cam), cam


@pytest.fixture(scope="module")
def astronaut_pair() -> tuple[np.ndarray, np.ndarray]:
    ast = data.astronaut()
    return _box_blur(ast), ast


def _noisy_pair(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 256, shape, dtype=np.uint8)
    img = np.clip(ref.astype(int) + rng.integers(-25, 26, shape), 0, 255).astype(np.uint8)
    return img, ref


# ----------------------------------------------------------------------------------------------- PSNR / SSIM

@pytest.mark.parametrize("shape", [(37, 45), (37, 45, 3), (64, 50, 3)])
def test_psnr_ssim_match_skimage_on_random_images(shape):
    img, ref = _noisy_pair(shape, seed=sum(shape))
    ch = -1 if len(shape) == 3 else None
    assert M.psnr(img, ref) == pytest.approx(peak_signal_noise_ratio(ref, img, data_range=255), abs=1e-10)
    assert M.ssim(img, ref, convention="skimage") == pytest.approx(
        structural_similarity(ref, img, data_range=255, channel_axis=ch), abs=1e-10)
    # the MATLAB/Wang convention equals skimage's Gaussian option (11 taps: truncate 3.5 * sigma 1.5 -> radius 5)
    assert M.ssim(img, ref, convention="matlab") == pytest.approx(structural_similarity(
        ref, img, data_range=255, channel_axis=ch, gaussian_weights=True, sigma=1.5, use_sample_covariance=False),
        abs=1e-10)


def test_psnr_ssim_match_skimage_on_real_images(camera_pair, astronaut_pair):
    for (img, ref), ch in ((camera_pair, None), (astronaut_pair, -1)):
        assert M.psnr(img, ref) == pytest.approx(peak_signal_noise_ratio(ref, img, data_range=255), abs=1e-10)
        assert M.ssim(img, ref, convention="skimage") == pytest.approx(
            structural_similarity(ref, img, data_range=255, channel_axis=ch), abs=1e-10)


def _ssim_matlab_reference(img: np.ndarray, ref: np.ndarray) -> float:
    """Independent straightforward Wang et al. SSIM (one channel, [0, 255]): 2-D Gaussian via scipy, valid region."""
    x, y = img.astype(np.float64), ref.astype(np.float64)

    def f(t: np.ndarray) -> np.ndarray:  # truncate chosen so the radius is 5 px: an 11x11 window
        return gaussian_filter(t, sigma=1.5, truncate=5 / 1.5, mode="constant")[5:-5, 5:-5]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
    return float(np.mean(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))))


def _y_reference(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def test_ssim_matlab_matches_independent_implementation(camera_pair, astronaut_pair):
    img, ref = camera_pair
    assert M.ssim(img, ref, convention="matlab") == pytest.approx(_ssim_matlab_reference(img, ref), abs=1e-10)
    a, b = astronaut_pair
    per_channel = np.mean([_ssim_matlab_reference(a[..., c], b[..., c]) for c in range(3)])
    assert M.ssim(a, b) == pytest.approx(per_channel, abs=1e-10)  # "matlab" is the default
    assert M.ssim(a, b, test_y_channel=True) == pytest.approx(
        _ssim_matlab_reference(_y_reference(a), _y_reference(b)), abs=1e-10)
    ya, yb = _y_reference(a)[4:-4, 4:-4], _y_reference(b)[4:-4, 4:-4]
    assert M.psnr(a, b, test_y_channel=True, crop_border=4) == pytest.approx(
        10 * math.log10(255 ** 2 / np.mean((ya - yb) ** 2)), abs=1e-10)


def test_pinned_reference_values(camera_pair, astronaut_pair):
    """Literal numbers, computed once (scikit-image 0.26, scipy 1.17, numpy float64) with this module for the
    box-blurred images above and cross-checked at the time against the independent implementation in
    ``_ssim_matlab_reference``, scikit-image's ``structural_similarity`` (default and ``gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False``) and ``peak_signal_noise_ratio``: they all agreed to 1e-12.
    They catch any change of convention (window, constants, Y formula, crop order)."""
    img, ref = camera_pair
    assert M.psnr(img, ref) == pytest.approx(26.73471689180069, abs=1e-9)
    assert M.ssim(img, ref, convention="matlab") == pytest.approx(0.7639886424076678, abs=1e-10)
    assert M.ssim(img, ref, convention="skimage") == pytest.approx(0.7745955464908507, abs=1e-10)
    assert M.psnr(img, ref, crop_border=4) == pytest.approx(26.70156406310509, abs=1e-9)
    assert M.ssim(img, ref, crop_border=4) == pytest.approx(0.7636047485322537, abs=1e-10)
    a, b = astronaut_pair
    assert M.psnr(a, b) == pytest.approx(26.086619534254677, abs=1e-9)
    assert M.psnr(a, b, test_y_channel=True) == pytest.approx(27.590918281489543, abs=1e-9)
    assert M.ssim(a, b) == pytest.approx(0.8452864696427308, abs=1e-10)
    assert M.ssim(a, b, test_y_channel=True) == pytest.approx(0.8709687446313603, abs=1e-10)
    assert M.ssim(a, b, test_y_channel=True, crop_border=4) == pytest.approx(0.8687447519311841, abs=1e-10)


def test_float_and_uint8_inputs_agree(astronaut_pair):
    a, b = astronaut_pair[0][100:300, 150:350], astronaut_pair[1][100:300, 150:350]
    fa, fb = a.astype(np.float64) / 255, b.astype(np.float64) / 255
    for kw in ({}, {"test_y_channel": True}, {"crop_border": 3}):
        assert M.psnr(fa, fb, **kw) == pytest.approx(M.psnr(a, b, **kw), abs=1e-9)
        assert M.ssim(fa, fb, **kw) == pytest.approx(M.ssim(a, b, **kw), abs=1e-9)
        assert M.ssim(fa, fb, convention="skimage", **kw) == pytest.approx(
            M.ssim(a, b, convention="skimage", **kw), abs=1e-9)
    # float images in [0, 255] with an explicit data range
    assert M.psnr(a.astype(np.float32), b.astype(np.float32), data_range=255) == pytest.approx(M.psnr(a, b), abs=1e-9)


def test_psnr_identical_is_inf_and_inputs_untouched(rgb_u8):
    before = rgb_u8.copy()
    assert M.psnr(rgb_u8, rgb_u8) == math.inf
    assert M.ssim(rgb_u8, rgb_u8) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(rgb_u8, before)


@pytest.mark.parametrize("call", [
    lambda a: M.psnr(a, a[:-1]),                                     # shape mismatch
    lambda a: M.psnr(a, a.astype(np.float32) / 255),                 # dtype mismatch
    lambda a: M.psnr(a.astype(np.float32), a.astype(np.float32)),    # float outside [0, 1] without data_range
    lambda a: M.psnr(a, a, crop_border=30),                          # crop removes the image
    lambda a: M.psnr(a[..., 0], a[..., 0], test_y_channel=True),     # Y of a grey image
    lambda a: M.ssim(a, a, convention="pyiqa"),                      # unknown convention
    lambda a: M.ssim(a[:9, :9], a[:9, :9]),                          # smaller than the 11x11 window
    lambda a: M.psnr(a.tolist(), a),                                 # not an array
    lambda a: M.psnr(a.astype(np.int32), a.astype(np.int32)),        # unsupported dtype
])
def test_bad_inputs_raise_input_error(rgb_u8, call):
    with pytest.raises(InputError):
        call(rgb_u8)


def test_describe_names_the_convention():
    assert "MATLAB" in M.describe("ssim") and "11x11" in M.describe("ssim")
    assert "7x7" in M.describe("ssim", convention="skimage")
    assert "Y (BT.601" in M.describe("psnr", test_y_channel=True, crop_border=4)
    assert "crop 4" in M.PSNR(4, True).convention
    assert M.SSIM(convention_name="skimage").convention == M.describe("ssim", convention="skimage")


def test_training_torch_metrics_agree():
    """train/validation.py's batched torch PSNR/SSIM equal these (data range 1, RGB, skimage SSIM)."""
    torch = pytest.importorskip("torch")
    from facedeblur.train.validation import psnr as tpsnr, ssim as tssim

    rng = np.random.default_rng(3)
    ref = rng.random((2, 20, 23, 3))
    img = np.clip(ref + rng.normal(0, 0.1, ref.shape), 0, 1)
    tp = tpsnr(torch.from_numpy(img).permute(0, 3, 1, 2), torch.from_numpy(ref).permute(0, 3, 1, 2))
    ts = tssim(torch.from_numpy(img).permute(0, 3, 1, 2), torch.from_numpy(ref).permute(0, 3, 1, 2))
    for i in range(2):
        assert float(tp[i]) == pytest.approx(M.psnr(img[i], ref[i]), abs=1e-9)
        assert float(ts[i]) == pytest.approx(M.ssim(img[i], ref[i], convention="skimage"), abs=1e-9)


# ----------------------------------------------------------------------------------------------- severity

def test_severity_bins():
    assert [b[0] for b in M.SEVERITY_BINS] == ["<28", "28-32", "32-36", ">=36"]
    cases = {-5.0: "<28", 27.999: "<28", 28.0: "28-32", 31.99: "28-32", 32.0: "32-36", 35.9: "32-36",
             36.0: ">=36", 80.0: ">=36", math.inf: ">=36", -math.inf: "<28"}
    for v, label in cases.items():
        assert M.severity_bin(v) == label, v
    with pytest.raises(InputError):
        M.severity_bin(float("nan"))
    img, ref = _noisy_pair((16, 16, 3), seed=1)
    assert M.severity_db(img, ref) == M.psnr(img, ref)


# ----------------------------------------------------------------------------------------------- no-reference

def test_noref_sharpness_matches_opencv_and_orders_blur(camera_pair):
    cv2 = pytest.importorskip("cv2")
    blur, cam = camera_pair
    g = cam.astype(np.float64)
    assert M.laplacian_variance(cam) == pytest.approx(cv2.Laplacian(g, cv2.CV_64F).var(), rel=1e-12)
    ten = np.mean(cv2.Sobel(g, cv2.CV_64F, 1, 0) ** 2 + cv2.Sobel(g, cv2.CV_64F, 0, 1) ** 2)
    assert M.tenengrad(cam) == pytest.approx(ten, rel=1e-12)
    assert M.laplacian_variance(blur) < 0.1 * M.laplacian_variance(cam)
    assert M.tenengrad(blur) < M.tenengrad(cam)
    rgb = np.stack([cam] * 3, axis=-1)  # luma of a grey RGB image is the grey image
    assert M.laplacian_variance(rgb) == pytest.approx(M.laplacian_variance(cam), rel=1e-9)
    assert M.laplacian_variance(rgb.astype(np.float64) / 255) == pytest.approx(M.laplacian_variance(rgb), rel=1e-9)
    with pytest.raises(InputError):
        M.tenengrad(rgb.astype(np.float64))  # float outside [0, 1]


# ----------------------------------------------------------------------------------------------- landmarks maths

def test_nme_auc_ced_failure_rate():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 1, (68, 2)) * [30.0, 40.0]
    gt[0], gt[1] = (0.0, 0.0), (30.0, 40.0)  # bounding box 30 x 40: diagonal 50
    assert M.nme(gt + [3.0, 4.0], gt) == pytest.approx(5.0 / 50.0)
    assert M.nme(gt, gt) == 0.0
    with pytest.raises(InputError):
        M.nme(gt[:5], gt)
    errors = [0.0, 0.02, 0.04, 0.1, math.inf]
    assert M.failure_rate(errors) == pytest.approx(0.4)
    assert M.auc(errors) == pytest.approx((1.0 + 0.75 + 0.5) / 5)
    t, ced = M.ced_curve(errors, num=8001)
    assert ced[0] == pytest.approx(0.2) and ced[-1] == pytest.approx(0.6)
    trapezoid = float(np.sum((ced[1:] + ced[:-1]) / 2 * np.diff(t)))
    assert trapezoid / 0.08 == pytest.approx(M.auc(errors), abs=1e-4)
    assert M.auc([0.0] * 3) == 1.0 and M.auc([1.0]) == 0.0
    with pytest.raises(InputError):
        M.auc([0.01, float("nan")])


# ----------------------------------------------------------------------------------------------- LPIPS / FID

def test_lpips_fid_report_unavailable_or_build():
    for fn, cls in ((M.lpips_available, M.LPIPS), (M.fid_available, M.FID)):
        ok, why = fn()
        assert isinstance(why, str) and why
        if not ok:
            with pytest.raises(M.MetricUnavailable, match=why.split(":")[0]):
                cls()


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    d1, d2 = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    expect = np.sum((mu1 - mu2) ** 2) + np.sum(d1 + d2 - 2 * np.sqrt(d1 * d2))
    assert M.frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(expect, abs=1e-9)
    a = rng.normal(size=(50, 4))
    s = np.cov(a, rowvar=False)
    assert M.frechet_distance(a.mean(0), s, a.mean(0), s) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(InputError):
        M.frechet_distance(mu1, np.diag(d1), mu2[:3], np.diag(d2))


# ----------------------------------------------------------------------------------------------- dlib metrics

@pytest.fixture(scope="module")
def face256() -> np.ndarray:
    ok, why = M.dlib_available()
    if not ok:
        pytest.skip(why)
    cv2 = pytest.importorskip("cv2")
    return cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def landmarker(face256):
    return M.LandmarkLocalisation()


@pytest.fixture(scope="module")
def ident(face256):
    return M.IdentityDistance()


def test_identity_distance_dlib(face256, ident):
    cv2 = pytest.importorskip("cv2")
    assert "Euclidean" in ident.convention and ident.threshold == 0.6
    e = ident.embed(face256)
    assert e.shape == (128,) and np.isfinite(e).all()
    assert ident.backend.distance(e, ident.embed(face256.copy())) == pytest.approx(0.0, abs=1e-9)
    soft = cv2.GaussianBlur(face256, (0, 0), 1.0)
    d = ident.distance(soft, face256)
    assert 0.0 < d < 0.6
    flat = np.full_like(face256, 128)
    misses = ident.no_face
    assert ident.distance(flat, face256) is None and ident.no_face == misses + 1
    rep = ident.evaluate([flat], [face256], blurry=[soft]).as_dict()
    assert rep["n"] == 1 and rep["no_face_restored"] == 1 and rep["no_face_blurry"] == 0
    assert math.isnan(rep["identity_distance"]) and rep["identity_distance_blurry"] == pytest.approx(d)
    assert rep["same_person_rate_blurry"] == 1.0
    with pytest.raises(InputError):
        ident.evaluate([flat], [face256, face256])


def test_identity_aligned_mode_uses_whole_crop(face256, ident):
    aligned = M.IdentityDistance(mode="aligned")
    x0, y0, x1, y1 = (int(v) for v in ident.backend.detect(face256))
    crop = face256[y0:y1, x0:x1]
    assert ident.backend.distance(aligned.embed(crop), ident.embed(face256)) < 0.6
    assert aligned.embed(np.full((40, 40, 3), 128, np.uint8)) is not None  # no detection in aligned mode
    assert "whole image" in aligned.convention
    with pytest.raises(InputError):
        M.IdentityDistance(mode="crop")


def test_landmark_localisation_oracle_blurred_and_failures(face256, landmarker):
    cv2 = pytest.importorskip("cv2")
    blurred = cv2.GaussianBlur(face256, (0, 0), 2.0)
    flat = np.full_like(face256, 90)
    rep = landmarker.evaluate([face256, blurred], [face256, face256]).as_dict()
    assert rep["n"] == 2 and rep["no_reference"] == 0
    errs = landmarker.evaluate([face256, blurred], [face256, face256]).errors
    assert errs[0] == 0.0 and 0.0 < errs[1] < 0.08  # oracle: exactly the ground truth
    assert rep["auc"] == pytest.approx(M.auc(errs)) and rep["failure_rate"] == 0.0
    det = M.LandmarkLocalisation(detector=landmarker.detector, init="detect")
    r2 = det.evaluate([flat, face256], [face256, flat])
    assert r2.no_face == 1 and r2.no_reference == 1 and r2.errors == [math.inf]
    assert r2.as_dict()["failure_rate"] == 1.0
    # annotations as ground truth: shifting them by (3, 4) px moves the oracle error to 5 / diagonal
    gt = landmarker.reference(face256)[1]
    r3 = landmarker.evaluate([face256], [face256], gt_landmarks=[gt + [3.0, 4.0]])
    diag = np.hypot(*(gt.max(0) - gt.min(0)))
    assert r3.errors[0] == pytest.approx(5.0 / diag, rel=1e-9)


def test_detection_success_rate(face256, landmarker):
    rep = M.detection_success_rate([face256, np.full_like(face256, 50), face256], detector=landmarker.detector)
    assert (rep.n, rep.detected) == (3, 2) and rep.rate == pytest.approx(2 / 3)
    assert "detect" in rep.convention
