"""Whole photos: ``Deblurrer.restore(photo, faces=...)`` and ``facedeblur restore --layout gfpgan`` (face crops,
restored faces, comparisons, restored images, JSON sidecars), EXIF orientation, grey / RGBA / 16-bit photos.

Photos are made from skimage.data.astronaut(): her suit as the background with her face pasted in at known places.
The network is a one-parameter stand-in (x + 0.1) inside a real Deblurrer with the real cfmd-gan.lite card.
"""
from __future__ import annotations

import json
import warnings

import cv2
import numpy as np
import pytest
from PIL import Image

from facedeblur import restore_faces
from facedeblur.errors import InputError
from facedeblur.faces import NoFaceWarning
from facedeblur.models import get_card
from facedeblur.restore import read_image
from facedeblur.restore.deblurrer import Deblurrer

from tinymodels import AddConst, run_cli as cli  # noqa: E402

skimage_data = pytest.importorskip("skimage.data")


def deblurrer() -> Deblurrer:
    return Deblurrer(AddConst(), get_card("cfmd-gan.lite"))


@pytest.fixture(scope="module")
def astro() -> np.ndarray:
    return skimage_data.astronaut()


def _photo(astro, h: int, w: int, faces: list[tuple[int, int, int]]) -> np.ndarray:
    canvas = np.ascontiguousarray(cv2.resize(astro[300:512], (w, h), interpolation=cv2.INTER_AREA))
    patch = astro[0:240, 100:340]
    for side, x, y in faces:
        canvas[y:y + side, x:x + side] = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
    return canvas


@pytest.fixture(scope="module")
def wide(astro) -> np.ndarray:
    """400x560 photo (wider than 1.25:1), two faces: 140 px at (20, 40) and 100 px at (380, 200)."""
    return _photo(astro, 400, 560, [(140, 20, 40), (100, 380, 200)])


@pytest.fixture(scope="module")
def det():
    from facedeblur.faces import MTCNN

    return MTCNN()


# ------------------------------------------------------------------------------------------------ Deblurrer


def test_faces_true_restores_the_faces_of_a_square_photo(astro, det):
    d = deblurrer()
    out = d.restore(astro, faces=True, face_options={"detector": det})
    assert out.shape == astro.shape and out.dtype == np.uint8
    assert d.model.shapes == [(1, 3, 256, 256)]  # one aligned face crop, not the 512x512 photo
    _, recs = restore_faces(astro, deblurrer(), detector=det)  # the same pipeline, called directly
    m = recs[0].mask(astro.shape)
    assert (out[m >= 1].astype(int) - astro[m >= 1]).mean() > 20  # +0.1 * 255 inside the face
    np.testing.assert_array_equal(out[m == 0], astro[m == 0])  # untouched outside it


def test_auto_rule(astro, wide, det):
    opts = {"detector": det}
    # a wide photo: face pipeline (two faces in one batched call), same result as faces=True
    d = deblurrer()
    auto = d.restore(wide, face_options=opts)
    assert d.model.shapes == [(2, 3, 256, 256)]
    np.testing.assert_array_equal(auto, deblurrer().restore(wide, faces=True, face_options=opts))
    far = (slice(0, 30), slice(400, 560))  # top right: no face near
    np.testing.assert_array_equal(auto[far], wide[far])
    # a square image up to twice the face size is a face crop: restored whole, as before
    for img in (astro, cv2.resize(astro, (300, 260))):
        d = deblurrer()
        out = d.restore(img)
        assert d.model.shapes == [(1, 3, *img.shape[:2])]
        diff = out.astype(int) - img
        assert (((diff >= 25) & (diff <= 26)) | (out == 255)).all()  # +0.1 everywhere: the whole image
    # faces=False: the wide photo whole
    d = deblurrer()
    d.restore(wide, faces=False)
    assert d.model.shapes == [(1, 3, 400, 560)]
    # a larger-than-crop square photo goes to the face pipeline
    d = deblurrer()
    d.restore(cv2.resize(astro, (600, 600)), face_options=opts)
    assert d.model.shapes == [(1, 3, 256, 256)]
    # too small to hold a detectable face (shorter side < 256 / 4): as it is, no detection, no warning
    d = deblurrer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d.restore(np.zeros((63, 200, 3), np.uint8), face_options={"detector": None})
    assert d.model.shapes == [(1, 3, 64, 200)]  # the whole image (63 rows padded to the pad multiple 4)
    d = deblurrer()
    with pytest.warns(NoFaceWarning):
        d.restore(np.zeros((64, 200, 3), np.uint8), face_options=opts)  # 64 px: a photo, no face: unchanged
    assert d.model.shapes == []


def test_no_face_photo_returned_unchanged_whole_image_is_opt_in(det):
    """A photo without a face comes back unchanged with a warning (auto and faces=True); faces=False is the
    opt-in whole-image mode."""
    flat = np.full((120, 300, 3), 90, np.uint8)
    flat[:, 150:] = 160
    d = deblurrer()
    with pytest.warns(NoFaceWarning, match="returned unchanged"):
        out = d.restore(flat, face_options={"detector": det})
    assert d.model.shapes == [] and np.array_equal(out, flat)
    d = deblurrer()
    out = d.restore(flat, faces=False)
    assert d.model.shapes == [(1, 3, 120, 300)] and np.all(out.astype(int) - flat >= 25)
    d = deblurrer()
    with pytest.warns(NoFaceWarning, match="returned unchanged"):
        out = d.restore(flat, faces=True, face_options={"detector": det})
    assert d.model.shapes == [] and np.array_equal(out, flat)


def test_faces_with_lists_kinds_and_options(astro, wide, det):
    d = deblurrer()
    small = np.ascontiguousarray(cv2.resize(wide, (420, 300), interpolation=cv2.INTER_AREA))
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([small, np.arange(small.size // 3, dtype=np.uint32).reshape(small.shape[:2]) % 251]
                     ).astype(np.uint8)
    u16 = small.astype(np.uint16) * 257
    outs = d.restore([grey, rgba, u16], faces=True, face_options={"detector": det})
    assert len(d.model.shapes) == 1 and d.model.shapes[0][0] >= 6  # all faces of the 3 photos: one batch
    assert outs[0].shape == grey.shape and outs[0].dtype == np.uint8
    assert outs[1].shape == rgba.shape and np.array_equal(outs[1][..., 3], rgba[..., 3])
    assert outs[2].dtype == np.uint16 and outs[2].astype(float).mean() > u16.mean()
    one = deblurrer()
    one.restore(wide, faces=True, face_options={"detector": det, "only_center_face": True})
    assert one.model.shapes == [(1, 3, 256, 256)]
    with pytest.raises(InputError, match="unknown option"):
        d.restore(wide, faces=True, face_options={"min_size": 3})
    with pytest.raises(InputError, match="faces="):
        d.restore(wide, faces="yes")
    with pytest.raises(InputError, match="face pipeline"):
        d.restore(wide, faces=False, face_options={"blend": 0.5})


def test_a_model_name_is_loaded_like_facedeblur_load(astro, det, monkeypatch):
    """``restore_faces(img, model="NAME")`` loads NAME through facedeblur.load and gives the same result as the
    loaded Deblurrer; a bad name is the loader's typed error, a wrong type an InputError naming what is accepted."""
    import facedeblur
    import facedeblur.restore.deblurrer as dm

    asked: list[str] = []

    def load(name, **kw):
        asked.append(name)
        return deblurrer()

    monkeypatch.setattr(dm, "load", load)
    by_name, recs = facedeblur.restore_faces(astro, model="cfmd-gan", detector=det)
    direct, recs2 = restore_faces(astro, deblurrer(), detector=det)
    assert asked == ["cfmd-gan"] and len(recs) == len(recs2) == 1
    np.testing.assert_array_equal(by_name, direct)
    assert not np.array_equal(by_name, astro)
    monkeypatch.undo()
    with pytest.raises(facedeblur.ModelNotFoundError, match="no-such-model"):
        restore_faces(astro, "no-such-model", detector=det)
    with pytest.raises(InputError, match="model name"):
        restore_faces(astro, 42, detector=det)


# ------------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def fake_load(monkeypatch):
    import facedeblur.restore as fr

    monkeypatch.setattr(fr, "load", lambda name, **kw: Deblurrer(AddConst(), get_card(name)))


def test_gfpgan_layout_files_and_sidecar(wide, tmp_path, capsys, fake_load):
    src = tmp_path / "in" / "sub"
    src.mkdir(parents=True)
    Image.fromarray(wide).save(src / "group.png")
    out = tmp_path / "out"
    rc, _, err = cli(["restore", str(tmp_path / "in"), "-o", str(out), "--model", "cfmd-gan", "--layout", "gfpgan",
                      "-q"], capsys)
    assert rc == 0, err
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == ["cmp/sub/group_00.png", "cmp/sub/group_01.png", "cropped_faces/sub/group_00.png",
                     "cropped_faces/sub/group_01.png", "json/sub/group.json", "restored_faces/sub/group_00.png",
                     "restored_faces/sub/group_01.png", "restored_imgs/sub/group.png"]
    meta = json.loads((out / "json/sub/group.json").read_text())
    assert meta["model"] == "cfmd-gan.lite" and meta["u"] == 0.5 and meta["aligned"] is False
    assert meta["image"] == {"width": 560, "height": 400, "channels": 3, "dtype": "uint8"}
    assert meta["detector"] == "MTCNN" and meta["crop_style"] == "cfmd-256-loose" and meta["face_size"] == 256
    assert meta["restored_img"] == "restored_imgs/sub/group.png"
    t = meta["timings_s"]
    assert all(t[k] >= 0 for k in ("read", "detect", "restore", "align_paste", "write")) and t["detect"] > 0
    assert t["total"] == pytest.approx(sum(t[k] for k in ("read", "detect", "restore", "align_paste", "write")),
                                       abs=1e-4)
    faces = meta["faces"]
    assert [f["index"] for f in faces] == [0, 1]
    for f, (side, x, y) in zip(faces, [(140, 20, 40), (100, 380, 200)]):  # largest first
        x0, y0, x1, y1 = f["box"]
        assert x <= (x0 + x1) / 2 <= x + side and y <= (y0 + y1) / 2 <= y + side
        lm = np.array(f["landmarks"])
        assert lm.shape == (5, 2) and (lm[:, 0] > x).all() and (lm[:, 0] < x + side).all()
        assert lm[0, 0] < lm[1, 0] and lm[0, 1] < lm[3, 1]  # eyes above the mouth, left eye left
        assert 0.5 < f["score"] <= 1 and np.array(f["affine"]).shape == (2, 3) and f["crop_size"] == 256
        crop = read_image(out / f["cropped_face"])
        restored = read_image(out / f["restored_face"])
        cmp = read_image(out / f["cmp"])
        assert crop.shape == restored.shape == (256, 256, 3) and cmp.shape == (256, 512, 3)
        np.testing.assert_array_equal(cmp[:, :256], crop)
        np.testing.assert_array_equal(cmp[:, 256:], restored)
        d = restored.astype(int) - crop
        assert ((d >= 25) & (d <= 26) | (restored == 255)).all()  # the restored face is this "model"'s output
        # the crop is the face aligned: the landmarks map onto the cfmd-256-loose template
        mapped = lm @ np.array(f["affine"])[:, :2].T + np.array(f["affine"])[:, 2]
        from facedeblur.faces.align import template_points

        assert np.sqrt(((mapped - template_points("cfmd-256-loose", 256)) ** 2).sum(1).mean()) < 8
    img = read_image(out / "restored_imgs/sub/group.png")
    assert img.shape == wide.shape
    np.testing.assert_array_equal(img[:30, 400:], wide[:30, 400:])
    # a second run without --overwrite refuses (face files too); with it, stale face files are removed
    rc, _, err = cli(["restore", str(tmp_path / "in"), "-o", str(out), "--model", "cfmd-gan", "--layout", "gfpgan",
                      "-q"], capsys)
    assert rc == 1 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    rc, _, err = cli(["restore", str(tmp_path / "in"), "-o", str(out), "--model", "cfmd-gan", "--layout", "gfpgan",
                      "--only-center-face", "--overwrite", "-q"], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in (out / "cmp/sub").iterdir()) == ["group_00.png"]
    assert len(json.loads((out / "json/sub/group.json").read_text())["faces"]) == 1


def test_exif_orientation_is_honoured(astro, tmp_path, capsys, fake_load):
    """The JPEG stores the photo rotated 90 degrees counter-clockwise with EXIF orientation 6 ("rotate 90 CW to
    display"): read_image and the face pipeline must see the upright photo."""
    upright = _photo(astro, 360, 300, [(150, 60, 40)])  # HxW = 360x300
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # 300x360
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "in" / "phone.jpg"
    path.parent.mkdir()
    Image.fromarray(stored).save(path, quality=95, exif=exif.tobytes())
    got = read_image(path)
    assert got.shape == upright.shape and np.abs(got.astype(int) - upright).mean() < 3
    out = tmp_path / "out"
    rc, _, err = cli(["restore", str(path), "-o", str(out), "--model", "cfmd-gan", "--layout", "gfpgan", "-q"],
                     capsys)
    assert rc == 0, err
    meta = json.loads((out / "json/phone.json").read_text())
    assert (meta["image"]["width"], meta["image"]["height"]) == (300, 360)
    assert len(meta["faces"]) == 1
    lm = np.array(meta["faces"][0]["landmarks"])
    assert 60 < lm[:, 0].mean() < 210 and 40 < lm[:, 1].mean() < 190 and lm[0, 1] < lm[3, 1]  # upright face
    assert read_image(out / "restored_imgs/phone.png").shape == upright.shape


def test_grey_rgba_16bit_photos_through_the_cli(wide, tmp_path, capsys, fake_load):
    small = np.ascontiguousarray(cv2.resize(wide, (420, 300), interpolation=cv2.INTER_AREA))
    src = tmp_path / "in"
    src.mkdir()
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    alpha = (np.indices(small.shape[:2]).sum(0) % 256).astype(np.uint8)
    u16 = small.astype(np.uint16) * 257
    Image.fromarray(grey).save(src / "grey.png")
    Image.fromarray(np.dstack([small, alpha])).save(src / "rgba.png")
    cv2.imwrite(str(src / "deep.png"), np.ascontiguousarray(u16[..., ::-1]))
    out = tmp_path / "gfp"
    rc, _, err = cli(["restore", str(src), "-o", str(out), "--model", "cfmd-gan", "--layout", "gfpgan", "-q"], capsys)
    assert rc == 0, err
    g = read_image(out / "restored_imgs/grey.png")
    assert g.ndim == 2 and g.shape == grey.shape and g.astype(float).mean() > grey.mean()
    a = read_image(out / "restored_imgs/rgba.png")
    assert a.shape == (300, 420, 4) and np.array_equal(a[..., 3], alpha)
    d = read_image(out / "restored_imgs/deep.png")
    assert d.dtype == np.uint16 and d.astype(float).mean() > u16.mean()
    assert read_image(out / "cropped_faces/deep_00.png").dtype == np.uint16
    for name, channels, dtype in (("grey", 1, "uint8"), ("rgba", 4, "uint8"), ("deep", 3, "uint16")):
        meta = json.loads((out / f"json/{name}.json").read_text())
        assert meta["image"]["channels"] == channels and meta["image"]["dtype"] == dtype and meta["faces"]
    # plain layout, auto faces: the wide photo goes through the face pipeline (no warning, faces changed)
    plain = tmp_path / "plain"
    rc, _, err = cli(["restore", str(src / "rgba.png"), "-o", str(plain), "--model", "cfmd-gan", "-q"], capsys)
    assert rc == 0 and err == ""
    p = read_image(plain / "rgba.png")
    np.testing.assert_array_equal(p[..., 3], alpha)
    np.testing.assert_array_equal(p[:20, 300:, :3], small[:20, 300:])  # far from the faces: untouched


def test_plain_layout_notes_and_errors(tmp_path, capsys, fake_load):
    src = tmp_path / "flat.png"
    Image.fromarray(np.full((100, 260, 3), 120, np.uint8)).save(src)
    rc, _, err = cli(["restore", str(src), "-o", str(tmp_path / "o"), "--model", "cfmd-gan", "-q"], capsys)
    lines = err.strip().splitlines()
    assert rc == 0 and len(lines) == 1 and lines[0].startswith("facedeblur: note: no face found")
    rc, _, err = cli(["restore", str(src), "-o", str(tmp_path / "o2"), "--model", "cfmd-gan", "--faces", "off",
                      "--blend", "0.5", "-q"], capsys)
    assert rc == 1 and "face pipeline" in err and len(err.strip().splitlines()) == 1
    rc, _, err = cli(["restore", str(src), "-o", str(tmp_path / "x.png"), "--model", "cfmd-gan", "--layout",
                      "gfpgan", "-q"], capsys)
    assert rc == 1 and "pass a folder" in err
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rc, _, err = cli(["restore", str(src), "-o", str(tmp_path / "o3"), "--model", "cfmd-gan", "--faces", "off",
                          "-q"], capsys)
    assert rc == 0 and err == ""
