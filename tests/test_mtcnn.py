"""MTCNN face detector (facedeblur.faces) with its embedded weights, and the one-off weight converter.

Fixtures come from scikit-image (astronaut, coffee) and composites made here; nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
import pathlib
import pickle
import sys
from collections import OrderedDict

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from facedeblur.data.landmarks import Face, left_eye, track_faces
from facedeblur.errors import InputError, WeightsIntegrityError, WeightsMismatchError
from facedeblur.faces import MTCNN, WEIGHTS_PATH, WEIGHTS_SHA256
from facedeblur.faces import mtcnn as mtcnn_mod
from facedeblur.weights.store import sha256_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
AST_FACE_CENTRE = np.array([222.0, 118.0])  # the astronaut's face (eyes-to-mouth) centre, x, y
AST_CROP = (150, 30, 300, 200)  # x0, y0, x1, y1 around the face, with margin
AST_FACE_W = 87.0  # MTCNN face box width in the astronaut image


@pytest.fixture(scope="module")
def det() -> MTCNN:
    return MTCNN()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


@pytest.fixture(scope="module")
def ast_face(det, astronaut) -> Face:
    faces = det.detect(astronaut)
    assert len(faces) == 1
    return faces[0]


def _paste_face(canvas: np.ndarray, astronaut: np.ndarray, face_px: float, x: int, y: int) -> np.ndarray:
    """Paste the astronaut's face scaled so its box is ~face_px wide, crop top-left at (x, y) (may be cut by the
    border); returns the expected face centre (x, y) in the canvas."""
    x0, y0, x1, y1 = AST_CROP
    k = face_px / AST_FACE_W
    patch = cv2.resize(astronaut[y0:y1, x0:x1], (round((x1 - x0) * k), round((y1 - y0) * k)),
                       interpolation=cv2.INTER_AREA)
    h, w = canvas.shape[:2]
    ph, pw = patch.shape[:2]
    cx0, cy0, cx1, cy1 = max(x, 0), max(y, 0), min(x + pw, w), min(y + ph, h)
    canvas[cy0:cy1, cx0:cx1] = patch[cy0 - y:cy1 - y, cx0 - x:cx1 - x]
    return np.array([x, y]) + (AST_FACE_CENTRE - [x0, y0]) * k


@pytest.fixture(scope="module")
def composite(astronaut) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """480x640 noise with three faces: big (~115 px) on the left, small (~40 px) at the centre, medium (~78 px)
    cut by the right border."""
    canvas = np.random.default_rng(0).normal(128, 12, (480, 640, 3)).clip(0, 255).astype(np.uint8)
    centres = {"big": _paste_face(canvas, astronaut, 115, 20, 150),
               "small": _paste_face(canvas, astronaut, 40, 287, 200),
               "border": _paste_face(canvas, astronaut, 78, 640 - 95, 260)}
    return canvas, centres


def _centre(f: Face) -> np.ndarray:
    return np.array([(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2])


def _which(f: Face, centres: dict[str, np.ndarray]) -> str:
    name = min(centres, key=lambda n: np.linalg.norm(_centre(f) - centres[n]))
    assert np.linalg.norm(_centre(f) - centres[name]) < 0.3 * (f.box[2] - f.box[0]) + 3, (f.box, centres)
    return name


def _check_layout(f: Face) -> None:
    """5 landmarks inside the box: image-left eye, image-right eye, nose, mouth left, mouth right."""
    pts = f.landmarks
    assert pts.shape == (5, 2) and pts.dtype == np.float32
    x0, y0, x1, y1 = f.box
    assert (pts[:, 0] > x0).all() and (pts[:, 0] < x1).all() and (pts[:, 1] > y0).all() and (pts[:, 1] < y1).all()
    le, re, nose, ml, mr = pts
    assert le[0] < re[0] and ml[0] < mr[0]
    assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1])
    assert min(le[0], re[0]) < nose[0] < max(le[0], re[0])


# ---------------------------------------------------------------------------------------------- detection


def test_astronaut_face_box_score_landmarks(ast_face):
    assert ast_face.score > 0.99
    assert np.linalg.norm(_centre(ast_face) - AST_FACE_CENTRE) < 10
    assert 70 < ast_face.box[2] - ast_face.box[0] < 110
    _check_layout(ast_face)
    eye_dist = ast_face.landmarks[1, 0] - ast_face.landmarks[0, 0]
    assert 30 < eye_dist < 60
    np.testing.assert_array_equal(left_eye(ast_face), ast_face.landmarks[0])


def test_composite_three_faces_small_and_border(det, composite):
    img, centres = composite
    faces = det.detect(img)
    assert len(faces) == 3
    names = [_which(f, centres) for f in faces]
    assert names == ["big", "border", "small"]  # largest first
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces]
    assert areas == sorted(areas, reverse=True)
    assert all(f.score > 0.9 for f in faces)
    small = faces[2]
    assert 30 < small.box[2] - small.box[0] < 55
    border = faces[1]
    assert border.box[2] > 630  # reaches the right border (box may extend past it)
    for f in faces:
        _check_layout(f)


@pytest.mark.parametrize("angle", [-20, 20])
def test_rotated_face(det, astronaut, ast_face, angle):
    m = cv2.getRotationMatrix2D((256.0, 256.0), angle, 1.0)
    rotated = cv2.warpAffine(astronaut, m, (512, 512), borderMode=cv2.BORDER_REFLECT)
    faces = [f for f in det.detect(rotated) if f.score > 0.9]
    assert len(faces) == 1
    expected = np.c_[ast_face.landmarks, np.ones(5)] @ m.T  # the upright landmarks, rotated
    err = np.linalg.norm(faces[0].landmarks - expected, axis=1)
    assert err.max() < 8, err
    eye = faces[0].landmarks[1] - faces[0].landmarks[0]
    assert abs(np.degrees(np.arctan2(-eye[1], eye[0])) - angle) < 8  # cv2: positive angle = counter-clockwise


def test_max_faces_and_sort_by_score(det, composite):
    img, centres = composite
    two = det.detect(img, max_faces=2)
    assert [_which(f, centres) for f in two] == ["big", "border"]
    by_score = det.detect(img, sort_by="score")
    scores = [f.score for f in by_score]
    assert len(by_score) == 3 and scores == sorted(scores, reverse=True)
    assert len(det.detect(img, max_faces=1, sort_by="score")) == 1


def test_only_center_face(det, composite):
    img, centres = composite
    faces = det.detect(img, only_center_face=True)
    assert len(faces) == 1 and _which(faces[0], centres) == "small"  # not the largest
    assert det.detect(np.full((64, 64, 3), 90, np.uint8), only_center_face=True) == []


def test_min_face_size(det, composite):
    img, centres = composite
    faces = det.detect(img, min_face_size=70)  # the small face's box is ~40x52 px
    assert sorted(_which(f, centres) for f in faces) == ["big", "border"]
    assert all(max(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= 70 for f in faces)
    assert len(MTCNN(min_face_size=70).detect(img)) == 2
    assert det.min_face_size == 20  # a per-call override does not stick
    assert len(det._scales(480, 640, 70)) < len(det._scales(480, 640, 20))
    assert det._scales(480, 640, 20)[0] == pytest.approx(12 / 20)
    assert det._scales(10, 640, 20) == []


def test_no_face(det):
    assert det.detect(skdata.coffee()) == []
    assert det.detect(np.full((200, 300, 3), 127, np.uint8)) == []
    assert det.detect(np.zeros((8, 8, 3), np.uint8)) == []  # smaller than a P-Net window: nothing to search


def test_detect_batch_matches_single(det, astronaut, composite):
    img, _ = composite
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    batch = det.detect_batch([astronaut, img, flipped, skdata.coffee()])
    assert [len(b) for b in batch] == [1, 3, 1, 0]
    for single, got in zip([det.detect(astronaut), det.detect(img)], batch):
        for a, b in zip(single, got):
            np.testing.assert_allclose(a.box, b.box, atol=1e-2)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-2)
    # mirrored image: the image-left eye is still landmark 0, at the mirrored position of the right eye
    f, g = batch[0][0], batch[2][0]
    assert abs((511 - g.landmarks[0, 0]) - f.landmarks[1, 0]) < 4
    _check_layout(g)


def test_refine_from_a_rough_box(det, astronaut, ast_face):
    x0, y0, x1, y1 = ast_face.box
    w = x1 - x0
    rough = (x0 - 0.1 * w + 6, y0 - 0.05 * w - 4, x1 + 0.1 * w + 6, y1 + 0.05 * w - 4)
    f = det.refine(astronaut, rough)
    assert f.score > 0.9
    assert np.abs(f.landmarks - ast_face.landmarks).max() < 4
    assert det.refine(np.full((200, 200, 3), 127, np.uint8), (50, 50, 150, 150)).score < 0.5


def test_track_faces_protocol(det, astronaut):
    frames = [np.ascontiguousarray(np.roll(astronaut, 4 * i, axis=1)) for i in range(3)]
    tracked = list(track_faces(frames, det, redetect_every=10))  # frame 0 detect, frames 1-2 refine
    assert all(f is not None for f in tracked)
    xs = [left_eye(f)[0] for f in tracked]
    np.testing.assert_allclose(np.diff(xs), 4, atol=2)


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad, words", [
    (np.zeros((64, 64, 3), np.float32), "uint8"),
    (np.zeros((64, 64), np.uint8), "greyscale"),
    (np.zeros((64, 64, 4), np.uint8), "alpha"),
    (np.zeros((3, 64, 64), np.uint8), "HxWx3"),
    (np.zeros((0, 64, 3), np.uint8), "empty"),
    (torch.zeros(3, 64, 64), "numpy"),
    ([[1, 2, 3]], "numpy array"),
])
def test_bad_images(det, bad, words):
    with pytest.raises(InputError, match=words):
        det.detect(bad)


def test_bad_options(det, astronaut):
    with pytest.raises(InputError, match="min_face_size"):
        MTCNN(min_face_size=2)
    with pytest.raises(InputError, match="thresholds"):
        MTCNN(thresholds=(0.6, 0.7, 1.5))
    with pytest.raises(InputError, match="factor"):
        MTCNN(factor=1.2)
    with pytest.raises(InputError, match="device"):
        MTCNN(device="gpu0")
    with pytest.raises(InputError, match="max_faces"):
        det.detect(astronaut, max_faces=0)
    with pytest.raises(InputError, match="sort_by"):
        det.detect(astronaut, sort_by="area")
    with pytest.raises(InputError, match="non-empty list"):
        det.detect_batch([])
    with pytest.raises(InputError, match=r"images\[1\]"):
        det.detect_batch([astronaut, astronaut.astype(np.float64)])
    with pytest.raises(InputError, match="x1 > x0"):
        det.refine(astronaut, (10, 10, 5, 20))
    with pytest.raises(InputError, match="4 numbers"):
        det.refine(astronaut, ("a", "b"))


def test_input_not_modified(det, astronaut):
    before = astronaut.copy()
    det.detect(astronaut)
    np.testing.assert_array_equal(astronaut, before)


# ---------------------------------------------------------------------------------------------- weights


def test_weights_sha256_and_licence():
    assert WEIGHTS_PATH.is_file()
    assert sha256_file(WEIGHTS_PATH) == WEIGHTS_SHA256
    assert 1_900_000 < WEIGHTS_PATH.stat().st_size < 2_100_000
    licence = (WEIGHTS_PATH.parent / "LICENSE-mtcnn.txt").read_text()
    assert "MIT License" in licence and "facenet-pytorch" in licence and WEIGHTS_SHA256 in licence


def test_weights_strict_keys():
    from safetensors import safe_open

    with safe_open(str(WEIGHTS_PATH), framework="pt") as f:
        file_shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    own = {k: tuple(v.shape) for k, v in mtcnn_mod.MTCNNNets().state_dict().items()}
    assert file_shapes == own


def test_weights_mismatch_and_corruption(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(WEIGHTS_PATH))
    sd.pop("onet.landmarks.bias")
    save_file(sd, str(tmp_path / "bad.safetensors"))
    with pytest.raises(WeightsMismatchError, match="onet.landmarks.bias"):
        MTCNN(weights=tmp_path / "bad.safetensors")
    monkeypatch.setattr(mtcnn_mod, "WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(WeightsIntegrityError, match="sha256"):
        MTCNN()


# ---------------------------------------------------------------------------------------------- converter


@pytest.fixture(scope="module")
def conv_tool():
    spec = importlib.util.spec_from_file_location("convert_mtcnn_weights", ROOT / "tools" / "convert_mtcnn_weights.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


def _legacy_bytes(obj, path: pathlib.Path) -> bytes:
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    return path.read_bytes()


def test_legacy_reader_roundtrip(conv_tool, tmp_path):
    torch.manual_seed(0)
    base = torch.randn(4, 6)
    sd = OrderedDict(a=torch.randn(3, 2, 2, 2), t=base.t(), view=base[1:3], b=torch.arange(5, dtype=torch.int64))
    got = conv_tool.read_checkpoint(_legacy_bytes(sd, tmp_path / "x.pt"), "x.pt")
    assert list(got) == list(sd)
    for k in sd:
        assert torch.equal(got[k], sd[k]) and got[k].dtype == sd[k].dtype


def test_legacy_reader_refuses_code(conv_tool, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    raw = _legacy_bytes(OrderedDict(w=torch.zeros(2)), tmp_path / "ok.pt")
    assert torch.equal(conv_tool.read_checkpoint(raw, "ok.pt")["w"], torch.zeros(2))
    evil = raw.replace(b"ccollections\nOrderedDict\n", b"cposix\nsystem\n", 1)
    assert evil != raw
    with pytest.raises(conv_tool.UnsafePickleError, match="posix.system"):
        conv_tool.read_checkpoint(evil, "evil.pt")
    with pytest.raises(conv_tool.UnsafePickleError, match=r"io\.open|builtins\.open"):
        conv_tool.read_legacy_checkpoint(pickle.dumps(Evil(), protocol=2), "evil.pt")
    assert not marker.exists()
    with pytest.raises(ValueError, match="truncated"):
        conv_tool.read_checkpoint(raw[:-3], "cut.pt")


def _facenet_style_fc_input(feat: torch.Tensor) -> torch.Tensor:
    """facenet-pytorch's layout fact: its fc layers read the feature map flattened in (W, H, C) order."""
    return feat.permute(0, 3, 2, 1).reshape(feat.shape[0], -1)


def test_convert_maps_keys_and_fc_layout(conv_tool, tmp_path):
    """Random facenet-style state dicts (mechanics only) -> our keys; R/O-Net outputs equal facenet's layout."""
    torch.manual_seed(0)
    nets = mtcnn_mod.MTCNNNets()
    for p in nets.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ours = nets.state_dict()
    sources = {}
    for net, mapping in conv_tool._MAPS.items():
        theirs = OrderedDict()
        for o, t in mapping:
            for kind in ("weight", "bias"):
                k = f"{net}.{o}.{kind}"
                if k in ours:
                    theirs[f"{t}.{kind}"] = ours[k].clone()
        sources[net] = _legacy_bytes(theirs, tmp_path / f"{net}.pt")
    conv = conv_tool.convert(sources)
    assert set(conv) == set(ours)
    ref = mtcnn_mod.MTCNNNets()
    ref.load_state_dict(conv, strict=True)

    x = torch.randn(2, 3, 24, 24)
    r = nets.rnet  # facenet-style forward: the same weights, (W, H, C) flattening
    feat = F.max_pool2d(r.prelu1(r.conv1(x)), 3, 2, ceil_mode=True)
    feat = r.prelu3(r.conv3(F.max_pool2d(r.prelu2(r.conv2(feat)), 3, 2, ceil_mode=True)))
    h = r.prelu4(r.fc(_facenet_style_fc_input(feat)))
    prob, reg = ref.rnet(x)
    assert torch.allclose(prob, torch.softmax(r.cls(h), 1)[:, 1], atol=1e-5)
    assert torch.allclose(reg, r.reg(h), atol=1e-4)
    assert not torch.allclose(conv["rnet.fc.weight"], ours["rnet.fc.weight"])  # the permutation did something
