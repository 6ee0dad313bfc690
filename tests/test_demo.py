"""The web demo's callbacks as plain functions, without gradio or a server (issue #21): uploads of every awkward
kind, the photo / moments / video buttons with the embedded default, the shared model pool, the CLI without the
extra."""
from __future__ import annotations

import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import facedeblur
from facedeblur.demo import callbacks as cb
from facedeblur.demo.callbacks import DemoInputError, DemoLimits, ModelPool

FACE = cb.example_path("astronaut_face_shake8.png")
PHOTO = cb.example_path("astronaut_photo_shake15.png")


@pytest.fixture(scope="module")
def pool() -> ModelPool:
    return ModelPool(device="cpu")


@pytest.fixture(scope="module")
def api():
    return facedeblur.load("cfmd-gan", device="cpu")


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# ------------------------------------------------------------------------------------------------------ uploads
def test_examples_are_installed_and_blurred():
    for name in cb.EXAMPLES:
        p = cb.example_path(name)
        assert p.is_file(), p
        img = rgb(p)
        assert cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() < 150  # visibly blurred
    assert rgb(PHOTO).shape == (384, 512, 3)
    with pytest.raises(DemoInputError, match="no bundled example"):
        cb.example_path("nope.png")


def test_load_image_refuses_non_images_and_truncated_files(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(DemoInputError, match="not an image"):
        cb.load_image(text)
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(PHOTO.read_bytes()[:3000])
    with pytest.raises(DemoInputError, match="truncated"):
        cb.load_image(trunc)
    with pytest.raises(DemoInputError, match="no such file"):
        cb.load_image(tmp_path / "missing.png")
    with pytest.raises(DemoInputError, match="no image"):
        cb.load_image(None)


def test_load_image_converts_cmyk_palette_16bit_and_keeps_alpha(tmp_path):
    base = rgb(FACE)
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(base).convert("CMYK").save(cmyk, quality=95)
    arr, notes = cb.load_image(cmyk)
    assert arr.shape == base.shape and arr.dtype == np.uint8
    assert any("CMYK" in n for n in notes)
    assert np.abs(arr.astype(int) - base.astype(int)).mean() < 8  # the same picture, not a channel mix-up
    rgba = np.dstack([base, np.full(base.shape[:2], 77, np.uint8)])
    arr, notes = cb.load_image(rgba)
    assert arr.shape[2] == 4 and (arr[..., 3] == 77).all() and any("alpha" in n for n in notes)
    grey16 = tmp_path / "grey16.png"
    Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)).save(grey16)
    arr, notes = cb.load_image(grey16)
    assert arr.shape == (64, 64, 3) and arr.max() > 200 and any("8 bits" in n for n in notes)
    pal = tmp_path / "pal.png"
    Image.fromarray(base).convert("P").save(pal)
    arr, notes = cb.load_image(pal)
    assert arr.shape == base.shape and any("converted" in n for n in notes)


def test_load_image_downscales_large_and_refuses_huge(tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((300, 900, 3), np.uint8)).save(big)
    arr, notes = cb.load_image(big, DemoLimits(max_side=450, refuse_side=1000))
    assert arr.shape == (150, 450, 3)
    assert any("downscaled from 900x300 to 450x150" in n for n in notes)
    with pytest.raises(DemoInputError, match="at most 800 px"):
        cb.load_image(big, DemoLimits(max_side=400, refuse_side=800))
    with pytest.raises(DemoInputError, match="too small"):
        cb.load_image(np.zeros((4, 4, 3), np.uint8))


# ------------------------------------------------------------------------------------------------------ photos
def test_menu_lists_the_weighted_zoo_with_card_numbers():
    entries = cb.zoo_entries()
    names = [e.name for e in entries]
    assert names == facedeblur.list_models(pretrained=True) or set(names) == set(facedeblur.list_models(pretrained=True))
    lite = next(e for e in entries if e.name == "cfmd-gan.lite")
    assert lite.continuous_u and lite.params and lite.params > 100_000
    md = lite.markdown()
    assert "Licence" in md and "research" in md
    card = facedeblur.model_info("cfmd-gan.lite")
    gain = card.metrics["benchmark"]["kernel"]["psnr_gain_db"]
    assert f"{gain:+.3f} dB" in md  # the card's measured gain, not a fixed text


def test_restore_photo_equals_the_python_api(pool, api, tmp_path):
    r = cb.restore_photo(pool, "cfmd-gan", FACE, u=0.3, mode="auto", out_dir=tmp_path)
    expected = api.restore(rgb(FACE), u=0.3)
    assert r.after.dtype == np.uint8 and np.array_equal(r.after, expected)
    assert not np.array_equal(r.after, r.before)  # the model changed something
    assert r.boxes is None and "whole image" in r.message and "u = 0.30" in r.message
    assert np.array_equal(rgb(r.png), expected)  # the PNG download is the result, lossless
    other = cb.restore_photo(pool, "cfmd-gan", FACE, u=0.7, out_dir=tmp_path)
    assert not np.array_equal(other.after, r.after)  # u reaches the network


def test_restore_photo_detected_faces_draws_boxes(pool, api, tmp_path):
    r = cb.restore_photo(pool, "cfmd-gan", PHOTO, u=0.5, mode="auto", out_dir=tmp_path)
    assert r.faces == 1 and r.boxes is not None and r.boxes.shape == (384, 512, 3)
    assert np.array_equal(r.after, api.restore(rgb(PHOTO), u=0.5))  # auto = the API's auto rule
    assert "1 face restored" in r.message
    changed = np.abs(r.after.astype(int) - r.before.astype(int)).sum(axis=2) > 0
    ys, xs = np.nonzero(changed)
    assert 60 < xs.mean() < 400 and ys.mean() < 250  # the change is where the face is (upper middle)
    whole = cb.restore_photo(pool, "cfmd-gan", PHOTO, u=0.5, mode="whole image", out_dir=tmp_path)
    assert whole.boxes is None and np.array_equal(whole.after, api.restore(rgb(PHOTO), u=0.5, faces=False))


def test_restore_photo_without_a_face_says_so(pool, tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (240, 480, 3), dtype=np.uint8)
    r = cb.restore_photo(pool, "cfmd-gan", noise, mode="detected faces", out_dir=tmp_path)
    assert r.faces == 0 and np.array_equal(r.after, noise)
    assert "no face found" in r.message


def test_bad_settings(pool, tmp_path):
    with pytest.raises(DemoInputError, match="outside"):
        cb.restore_photo(pool, "cfmd-gan", FACE, u=1.5, out_dir=tmp_path)
    with pytest.raises(DemoInputError, match="unknown mode"):
        cb.restore_photo(pool, "cfmd-gan", FACE, mode="faces please", out_dir=tmp_path)
    with pytest.raises(DemoInputError, match="2 to 13"):
        cb.restore_moments_gallery(pool, "cfmd-gan", FACE, n=40, out_dir=tmp_path)
    no_u = types.SimpleNamespace(card=types.SimpleNamespace(capabilities=types.SimpleNamespace(continuous_u=False)))
    fake = ModelPool(loader=lambda name, device: no_u)
    with pytest.raises(DemoInputError, match="no control factor u"):
        cb.restore_moments_gallery(fake, "plain", FACE, n=5, out_dir=tmp_path)
    with pytest.raises(facedeblur.ModelNotFoundError):
        cb.restore_photo(ModelPool(), "no-such-model", FACE, out_dir=tmp_path)


def test_moments_gallery_and_scrub(pool, api, tmp_path):
    gallery, gif, message = cb.restore_moments_gallery(pool, "cfmd-gan", FACE, n=5, out_dir=tmp_path)
    assert [c for _, c in gallery] == ["u = 0.00", "u = 0.25", "u = 0.50", "u = 0.75", "u = 1.00"]
    expected = api.restore_moments(rgb(FACE), n=5)
    for (img, _), exp in zip(gallery, expected):
        assert np.array_equal(img, exp)
    assert not np.array_equal(gallery[0][0], gallery[-1][0])
    with Image.open(gif) as im:
        assert im.n_frames == 8 and im.info.get("loop") == 0  # 0..4 then 3..1: forth and back
    assert "5 moments" in message


def test_pool_loads_each_model_once():
    calls = []

    def loader(name, device):
        calls.append(name)
        return object()

    p = ModelPool(loader=loader)
    a, b = p.get("m"), p.get("m")
    assert a is b and calls == ["m"] and p.loads == 1 and p.loaded == ["m"]


# ------------------------------------------------------------------------------------------------------ videos
def _clip(path: Path, frames: int, fps: float, size=(96, 64)) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    face = cv2.resize(cv2.imread(str(FACE)), size)
    for i in range(frames):
        w.write(np.roll(face, i, axis=1))
    w.release()
    return path


def test_probe_video_limits(tmp_path):
    clip = _clip(tmp_path / "c.mp4", 30, 10.0)
    info = cb.probe_video(clip)
    assert info["frames"] == 30 and abs(info["seconds"] - 3.0) < 0.01
    with pytest.raises(DemoInputError, match="at most 2 s"):
        cb.probe_video(clip, DemoLimits(max_video_seconds=2.0))
    with pytest.raises(DemoInputError, match="at most 80x60"):
        cb.probe_video(clip, DemoLimits(max_video_size=(80, 60)))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(DemoInputError, match="not a video|no readable frames"):
        cb.probe_video(bad)


def test_restore_video_clip_keeps_frames_and_reports_progress(pool, tmp_path):
    clip = _clip(tmp_path / "c.mp4", 6, 12.0, size=(128, 128))
    seen: list[float] = []
    webm, mp4, message = cb.restore_video_clip(pool, "cfmd-gan", clip, u=0.5, out_dir=tmp_path / "out",
                                               progress=lambda f, text: seen.append(f))
    for path in (webm, mp4):
        cap = cv2.VideoCapture(str(path))
        n = 0
        while cap.read()[0]:
            n += 1
        assert n == 6, path
        assert abs(cap.get(cv2.CAP_PROP_FPS) - 12.0) < 0.01
        assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (128, 128)
        cap.release()
    assert webm.suffix == ".webm" and mp4.suffix == ".mp4"
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    assert "6 frames" in message and "ms per frame" in message


# ------------------------------------------------------------------------------------------------------ the CLI
def test_cli_demo_without_the_extra_names_it(monkeypatch, capsys):
    import importlib.util

    from facedeblur import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert cli.main(["demo"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install "facedeblur[demo]"' in err[0]


def test_cli_demo_help_defaults():
    from facedeblur import cli

    args = cli.build_parser(["demo"]).parse_args(["demo"])
    assert (args.host, args.port, args.device, args.share) == ("127.0.0.1", 7860, "cpu", False)
