"""Still-image face pipeline: alignment, paste-back (facedeblur.faces.{align,paste,pipeline}) and restore_faces
(facedeblur.restore.photos, which hands the pipeline a FaceRestorer).

Fixtures are built from skimage.data.astronaut(): the photo itself and composites with several copies of its face
at different sizes and positions. The "models" are plain functions on crops (identity, brightness shift, blur,
tint) behind a real zoo card, plus one real Deblurrer around a tiny torch module; no trained weights needed.
"""
from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch

from facedeblur import restore_faces
from facedeblur.errors import CapabilityError, InputError
from facedeblur.faces import MTCNN, FaceRestorer, NoFaceWarning, restore_face_arrays
from facedeblur.faces.align import (TEMPLATES, crop_style_for, five_points, similarity_transform, template_points,
                                    warp_face)
from facedeblur.faces.paste import color_match, crop_mask
from facedeblur.models import get_card

from tinymodels import FnModel, identity, shift  # noqa: E402

skimage_data = pytest.importorskip("skimage.data")


# ------------------------------------------------------------------------------------------------ fixtures


def blur():
    return FnModel(lambda x: cv2.GaussianBlur(x, (0, 0), 3))


def tint():
    return FnModel(lambda x: np.clip(x + np.float32([0.12, 0.0, -0.08]), 0, 1))


@pytest.fixture(scope="module")
def astro() -> np.ndarray:
    return skimage_data.astronaut()  # 512x512 RGB uint8, one face


@pytest.fixture(scope="module")
def det() -> MTCNN:
    return MTCNN()


def _put(canvas: np.ndarray, patch: np.ndarray, side: int, x: int, y: int) -> tuple[int, int, int, int]:
    canvas[y:y + side, x:x + side] = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
    return x, y, x + side, y + side


@pytest.fixture(scope="module")
def composite(astro):
    """400x512 photo: astronaut's suit as background, her face pasted at three sizes; the patch boxes."""
    canvas = np.ascontiguousarray(cv2.resize(astro[300:512], (512, 400), interpolation=cv2.INTER_AREA))
    patch = astro[0:240, 100:340]
    boxes = [_put(canvas, patch, 220, 10, 20), _put(canvas, patch, 120, 300, 30), _put(canvas, patch, 80, 380, 300)]
    return canvas, boxes


@pytest.fixture(scope="module")
def edge_small(astro):
    """320x320 photo: a face whose crop footprint leaves the image (top-left corner) and a small (~26 px) face."""
    canvas = np.ascontiguousarray(cv2.resize(astro[300:512, 0:300], (320, 320), interpolation=cv2.INTER_AREA))
    tight = astro[50:190, 165:285]  # face with little margin
    canvas[0:140, 0:120] = tight
    small = cv2.resize(astro[0:240, 100:340], (70, 70), interpolation=cv2.INTER_AREA)
    canvas[220:290, 200:270] = small
    return canvas, [(0, 0, 120, 140), (200, 220, 270, 290)]


def _inside(rec, box) -> bool:
    cx, cy = (rec.box[0] + rec.box[2]) / 2, (rec.box[1] + rec.box[3]) / 2
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3]


def _union_mask(recs, shape) -> np.ndarray:
    m = np.zeros(shape[:2], np.float32)
    for r in recs:
        m = np.maximum(m, r.mask(shape))
    return m


def _lum(x: np.ndarray) -> np.ndarray:
    return x[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _grad(x: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(_lum(x))
    return np.hypot(gx, gy)


def _feather_px(rec) -> float:
    return rec.feather * rec.size / np.sqrt(abs(np.linalg.det(rec.affine[:, :2])))


# ------------------------------------------------------------------------------------------------ align


def test_similarity_transform_recovers_a_similarity_and_never_reflects():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (5, 2))
    ang, s, t = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    m = similarity_transform(src, src @ (s * rot).T + t)
    np.testing.assert_allclose(m, np.hstack([s * rot, t[:, None]]), atol=1e-9)
    mirrored = src * [-1, 1]  # a reflection is not a similarity: the best fit keeps det > 0
    assert np.linalg.det(similarity_transform(src, mirrored)[:, :2]) > 0
    with pytest.raises(InputError):
        similarity_transform(np.zeros((5, 2)), src)


def test_templates_and_card_mapping():
    tpl = template_points("cfmd-256-loose", 512)
    np.testing.assert_allclose(tpl, np.asarray(TEMPLATES["cfmd-256-loose"]) * 2)
    assert tpl[0, 0] < tpl[1, 0] and tpl[3, 0] < tpl[4, 0] and tpl[0, 1] < tpl[2, 1] < tpl[3, 1]
    for name in ("cfmd-gan", "cfmd-gan.lite", "cfmd-gan.paper"):
        assert crop_style_for(get_card(name)) == "cfmd-256-loose"
    card = get_card("cfmd-gan")
    bare = type(card)(name="x", architecture=card.architecture, task=card.task)  # no face_crop text
    with pytest.raises(CapabilityError, match="template="):
        crop_style_for(bare)
    with pytest.raises(CapabilityError):
        template_points("no-such-style", 256)
    pts68 = np.arange(136, dtype=np.float64).reshape(68, 2)
    np.testing.assert_allclose(five_points(pts68)[2], pts68[30])


@pytest.mark.parametrize("scale", [2.0, 0.3])
def test_warp_face_geometry_enlarging_and_shrinking(scale):
    """A bright dot at image point p lands at crop point M p, in both the bicubic and the area-shrink branch."""
    img = np.zeros((300, 300, 3), np.float32)
    cv2.circle(img, (150, 140), 6, (1, 1, 1), -1)
    ang = 0.2
    a = scale * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    m = np.hstack([a, (np.array([64.0, 64.0]) - a @ [150.0, 140.0])[:, None]])
    crop = warp_face(img, m, 128)
    w = crop[..., 0]
    ys, xs = np.mgrid[:128, :128]
    centroid = np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()
    np.testing.assert_allclose(centroid, [64.0, 64.0], atol=0.35)
    assert crop.min() >= 0 and crop.max() <= 1


# ------------------------------------------------------------------------------------------------ pipeline


def test_every_face_found_aligned_and_restored(composite, det):
    img, boxes = composite
    model = shift(0.1)
    out, recs = restore_faces(img, model, detector=det)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert len(recs) == 3 and model.calls == [3]  # all faces in one batched call
    for box in boxes:
        assert sum(_inside(r, box) for r in recs) == 1
    tpl = template_points("cfmd-256-loose", 256)
    for r in recs:
        assert r.crop.shape == r.restored.shape == (256, 256, 3)
        mapped = r.landmarks @ r.affine[:, :2].T + r.affine[:, 2]
        assert np.sqrt(((mapped - tpl) ** 2).sum(1).mean()) < 8  # aligned onto the template
        cx, cy = ((r.box[0] + r.box[2]) / 2, (r.box[1] + r.box[3]) / 2)
        d = out[int(cy) - 3:int(cy) + 3, int(cx) - 3:int(cx) + 3].astype(int) \
            - img[int(cy) - 3:int(cy) + 3, int(cx) - 3:int(cx) + 3]
        assert 20 <= d.mean() <= 26  # +0.1 * 255 at the face centre (some pixels clip)


def test_pixels_outside_the_faces_are_exactly_unchanged(composite, det):
    img, _ = composite
    out, recs = restore_faces(img, blur(), detector=det)
    m = _union_mask(recs, img.shape)
    far = cv2.dilate((m > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
    assert far.mean() > 0.2
    np.testing.assert_array_equal(out[far], img[far])
    # and nothing changes farther than the crop's half-diagonal from a face centre
    ys, xs = np.mgrid[:img.shape[0], :img.shape[1]]
    near = np.zeros(img.shape[:2], bool)
    for r in recs:
        c = r.inverse_affine @ [r.size / 2, r.size / 2, 1]
        near |= np.hypot(xs - c[0], ys - c[1]) <= r.size / np.sqrt(abs(np.linalg.det(r.affine[:, :2]))) * 0.75
    np.testing.assert_array_equal(out[~near], img[~near])


def test_identity_model_round_trip(composite, astro, det):
    for img in (composite[0], astro):
        out, recs = restore_faces(img, identity(), detector=det)
        assert recs
        assert np.abs(out.astype(int) - img).max() <= 1


def test_no_seam_along_the_mask_boundary(astro, det):
    """Mean gradient magnitude in the feather band <= in the band around it (and a hard paste fails the check)."""

    def seam(out, recs):
        m = _union_mask(recs, astro.shape)
        band = (m > 0) & (m < 1)
        dist = cv2.distanceTransform((~band).astype(np.uint8), cv2.DIST_L2, 3)
        around = ~band & (dist <= max(3.0, min(_feather_px(r) for r in recs)))
        g = _grad(out)
        return g[band].mean(), g[around].mean()

    for model in (shift(0.1), blur()):
        on_band, around = seam(*restore_faces(astro, model, detector=det))
        assert on_band <= around, (on_band, around)
    on_band, around = seam(*restore_faces(astro, shift(0.1), detector=det, feather=0.0))
    assert on_band > 1.3 * around  # the measurement does see a seam when there is one


def test_blend(astro, det):
    out0, recs = restore_faces(astro, shift(0.1), detector=det, blend=0.0)
    assert recs
    np.testing.assert_array_equal(out0, astro)
    full, _ = restore_faces(astro, shift(0.1), detector=det)
    half, _ = restore_faces(astro, shift(0.1), detector=det, blend=0.5)
    c = (slice(100, 140), slice(200, 240))
    d_full = full[c].astype(float).mean() - astro[c].mean()
    d_half = half[c].astype(float).mean() - astro[c].mean()
    assert d_full > 15 and abs(d_half - d_full / 2) < 1.0


def test_color_match_reduces_the_colour_jump_at_the_boundary(astro, det):
    def jump(out, recs):
        m = _union_mask(recs, astro.shape)
        band = (m > 0) & (m < 1)
        dist = cv2.distanceTransform((~band).astype(np.uint8), cv2.DIST_L2, 3)
        ring = ~band & (dist <= 4)
        inner, outer = ring & (m >= 1), ring & (m == 0)
        lab = cv2.cvtColor(out, cv2.COLOR_RGB2Lab).astype(float)
        ref = cv2.cvtColor(astro, cv2.COLOR_RGB2Lab).astype(float)
        # colour step across the band, relative to the input's own step there
        return np.linalg.norm((lab[inner].mean(0) - lab[outer].mean(0)) - (ref[inner].mean(0) - ref[outer].mean(0)))

    plain = jump(*restore_faces(astro, tint(), detector=det))
    matched = jump(*restore_faces(astro, tint(), detector=det, color_match=True))
    mean_only = jump(*restore_faces(astro, tint(), detector=det, color_match="lab-mean"))
    assert plain > 5 and matched < 0.5 * plain and mean_only < 0.5 * plain, (plain, matched, mean_only)


def test_color_match_function_moves_statistics():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.2, 0.6, (32, 32, 3)).astype(np.float32)
    moved = np.clip(ref * 0.5 + np.float32([0.3, 0.1, 0.0]), 0, 1)
    back = color_match(moved, ref)
    lab = lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2Lab).reshape(-1, 3)  # noqa: E731
    np.testing.assert_allclose(lab(back).mean(0), lab(ref).mean(0), atol=0.5)
    np.testing.assert_allclose(lab(back).std(0), lab(ref).std(0), rtol=0.1, atol=0.3)
    with pytest.raises(InputError):
        color_match(moved, ref, mode="rgb")


def test_border_and_small_faces(edge_small, det):
    img, boxes = edge_small
    small_det = MTCNN(min_face_size=12)
    out, recs = restore_faces(img, shift(0.08), detector=small_det)
    for box in boxes:
        assert sum(_inside(r, box) for r in recs) >= 1, [r.box for r in recs]
    corner = next(r for r in recs if _inside(r, boxes[0]))
    corners = np.array([[0, 0, 1], [256, 256, 1]]) @ corner.inverse_affine.T
    assert corners.min() < 0  # its crop does reach outside the photo
    assert out[60, 60].astype(int).sum() > img[60, 60].astype(int).sum()
    far = _union_mask(recs, img.shape) == 0
    np.testing.assert_array_equal(out[far], img[far])
    out_id, _ = restore_faces(img, identity(), detector=small_det)
    assert np.abs(out_id.astype(int) - img).max() <= 1


def test_grey_rgba_and_uint16_inputs(astro, det):
    small = np.ascontiguousarray(cv2.resize(astro, (320, 320), interpolation=cv2.INTER_AREA))
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    out, recs = restore_faces(grey, identity(), detector=det)
    assert recs and out.shape == grey.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - grey).max() <= 1
    out, _ = restore_faces(grey, shift(0.1), detector=det)
    assert out.ndim == 2 and out[100:120, 120:150].mean() > grey[100:120, 120:150].mean() + 15

    alpha = np.random.default_rng(0).integers(0, 256, small.shape[:2], dtype=np.uint8)
    rgba = np.dstack([small, alpha])
    before = rgba.copy()
    out, recs = restore_faces(rgba, shift(0.1), detector=det)
    assert recs and out.shape == rgba.shape
    np.testing.assert_array_equal(out[..., 3], alpha)
    np.testing.assert_array_equal(rgba, before)  # the input is never overwritten

    u16 = small.astype(np.uint16) * 257
    out, recs = restore_faces(u16, identity(), detector=det)
    assert recs and out.dtype == np.uint16
    assert np.abs(out.astype(int) - u16).max() <= 257
    out, _ = restore_faces(u16, shift(0.1), detector=det)
    assert out[100:120, 120:150].astype(float).mean() > u16[100:120, 120:150].mean() + 15 * 257


def test_no_face_warns_and_returns_input_and_whole_image_mode(det):
    img = np.full((96, 128, 3), 90, np.uint8)
    img[:, 64:] = 160
    with pytest.warns(NoFaceWarning, match="whole_image=True"):
        out, recs = restore_faces(img, shift(0.1), detector=det)
    assert recs == [] and out is not img
    np.testing.assert_array_equal(out, img)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, recs = restore_faces(img, shift(0.1), whole_image=True)
    assert recs == [] and np.array_equal(out.astype(int), img.astype(int) + 26)


def test_aligned_inputs_skip_detection(astro, det):
    _, recs = restore_faces(astro, identity(), detector=det)
    crop_u8 = np.rint(recs[0].crop * 255).astype(np.uint8)

    class NoDetector:
        def detect(self, rgb):
            raise AssertionError("aligned=True must not detect")

    for crop in (crop_u8, cv2.resize(crop_u8, (200, 200), interpolation=cv2.INTER_AREA)):
        out, recs2 = restore_faces(crop, shift(0.1), aligned=True, detector=NoDetector())
        assert out.shape == crop.shape and len(recs2) == 1 and recs2[0].landmarks is None
        assert abs((out.astype(float) - crop).mean() - 25) < 3
    with pytest.raises(InputError, match="square"):
        restore_faces(crop_u8[:, :150], identity(), aligned=True)


def test_only_center_face_and_max_faces(composite, det):
    img, boxes = composite
    _, recs = restore_faces(img, identity(), detector=det, max_faces=2)
    assert len(recs) == 2 and _inside(recs[0], boxes[0])  # the largest first
    shifted = np.ascontiguousarray(img[:, 60:])  # centre (226, 200): face centres ~178, ~135 and ~193 px away
    _, recs = restore_faces(shifted, identity(), detector=det, only_center_face=True)
    x0, y0, x1, y1 = boxes[1]
    assert len(recs) == 1 and _inside(recs[0], (x0 - 60, y0, x1 - 60, y1))


def test_real_deblurrer_batches_the_faces(composite, det):
    from facedeblur.restore.deblurrer import Deblurrer

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = torch.nn.Parameter(torch.tensor(0.9))
            self.calls: list[int] = []

        def forward(self, x, u):
            self.calls.append(x.shape[0])
            assert u.shape == (x.shape[0],)
            return x * self.gain + 0.05

    net = Tiny()
    model = Deblurrer(net, get_card("cfmd-gan.lite"))
    img, _ = composite
    out, recs = restore_faces(img, model, u=0.5, detector=det)
    assert len(recs) == 3 and net.calls == [3]
    assert out.dtype == np.uint8 and not np.array_equal(out, img)
    with pytest.raises(CapabilityError):
        restore_faces(img, model, u=2.0, detector=det)


def test_the_pipeline_takes_a_restore_callable(astro, det):
    """facedeblur.faces runs on a FaceRestorer (a restore callable + the card); restore_faces builds one from a face
    model and gives the same pixels. Anything else given to the pipeline is a clear error."""
    calls: list[int] = []

    def restore(crops):
        calls.append(len(crops))
        return [np.clip(c + 0.1, 0, 1) for c in crops]

    img = astro.astype(np.float32) / 255.0
    outs, recs = restore_face_arrays([img], FaceRestorer(restore, get_card("cfmd-gan")), detector=det)
    assert calls == [1] and len(recs) == 1 and len(recs[0]) == 1
    via_model, _ = restore_faces(astro, shift(0.1), detector=det)
    np.testing.assert_array_equal(np.clip(np.rint(outs[0] * 255.0), 0, 255).astype(np.uint8), via_model)
    for wrong in (shift(0.1), "cfmd-gan", restore):
        with pytest.raises(InputError, match="FaceRestorer"):
            restore_face_arrays([img], wrong, detector=det)

    def bad(crops):
        return [c[:10] for c in crops]

    with pytest.raises(RuntimeError, match="shape"):
        restore_face_arrays([img], FaceRestorer(bad, get_card("cfmd-gan")), detector=det)
    import facedeblur.faces

    with pytest.raises(AttributeError, match="is now facedeblur.restore_faces"):
        facedeblur.faces.restore_faces  # noqa: B018 -- moved: it takes a model, the pipeline a FaceRestorer


def test_bad_options_are_clear_errors(astro, det):
    for kwargs in ({"blend": 1.5}, {"blend": "x"}, {"color_match": "rgb"}, {"max_faces": 0}, {"feather": 0.9},
                   {"paste": "add"}, {"aligned": True, "whole_image": True}, {"template": "nope"}):
        with pytest.raises((InputError, CapabilityError)):
            restore_faces(astro, identity(), detector=det, **kwargs)
    with pytest.raises(InputError, match="restore"):
        restore_faces(astro, object())
    with pytest.raises(InputError, match="one image"):
        restore_faces(np.stack([astro, astro]), identity(), detector=det)


def test_crop_mask_is_zero_on_the_rim_and_one_inside():
    m = crop_mask(64, 0.1)
    assert m[0].max() == 0 and m[:, -1].max() == 0 and m[20:44, 20:44].min() == 1
    assert crop_mask(64, 0.0).min() == 1


# ------------------------------------------------------------------------------------------------ template (dlib)


@pytest.mark.slow
def test_cfmd_template_matches_measurement(astro, det):
    """Re-measure the cfmd-256-loose template as documented in facedeblur/faces/align.py (dlib 68 points + MTCNN
    on astronaut variants) and check the stored numbers, and that the pipeline's crop is the 68-point rule's."""
    from facedeblur.data.landmarks import DlibLandmarker

    try:
        dl = DlibLandmarker(detect_size=512)
    except Exception as e:  # pragma: no cover - optional dependency
        pytest.skip(f"dlib unavailable: {e}")
    rows = []
    for flip in (False, True):
        base = astro[:, ::-1].copy() if flip else astro
        for s in (1.0, 0.75, 1.25):
            im1 = cv2.resize(base, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
            for dx, dy in ((0, 0), (7, 3), (-5, 11)):
                im = cv2.warpAffine(im1, np.float32([[1, 0, dx], [0, 1, dy]]), im1.shape[1::-1],
                                    borderMode=cv2.BORDER_REFLECT)
                f68 = dl.detect(im)
                if not f68:
                    continue
                x0, y0, x1, y1 = f68[0].landmark_box()
                inside = [f for f in det.detect(im) if x0 <= f.landmarks[:, 0].mean() <= x1
                          and y0 <= f.landmarks[:, 1].mean() <= y1]
                if not inside:
                    continue
                w, h = x1 - x0, y1 - y0
                cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(2 * w, 2 * h)
                rows.append((inside[0].landmarks - [cx - side / 2, cy - side / 2]) * 256 / side)
                if not flip and s == 1.0 and (dx, dy) == (0, 0):
                    _, recs = restore_faces(im, identity(), detector=det)
                    c = recs[0].inverse_affine @ [128, 128, 1]
                    side_pipe = 256 / np.sqrt(abs(np.linalg.det(recs[0].affine[:, :2])))
                    assert np.hypot(c[0] - cx, c[1] - cy) < 0.04 * side and abs(side_pipe / side - 1) < 0.05
    assert len(rows) >= 12
    mean = np.mean(rows, axis=0)
    mirror = np.column_stack([256 - mean[:, 0], mean[:, 1]])[[1, 0, 2, 4, 3]]
    np.testing.assert_allclose((mean + mirror) / 2, TEMPLATES["cfmd-256-loose"], atol=1.0)
