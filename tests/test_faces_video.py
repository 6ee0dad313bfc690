"""Video face pipeline (facedeblur.faces.video, run by facedeblur.restore_video_file) and ``facedeblur restore
clip.mp4``.

Clips are tiny (112x160, 12-20 frames) and made here from skimage.data.astronaut(): the astronaut's suit as the
background and her face pasted as a moving patch. Most clips use the lossless FFV1 codec, so pixel comparisons are
exact; one uses the default .mp4 codec and compares against the decoded input. The "models" are stand-ins (identity,
brightness shift, previous-frame picker) behind real zoo cards; no trained weights are needed.
"""
from __future__ import annotations

import dataclasses
import stat
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facedeblur.errors import CapabilityError, InputError
from facedeblur.faces import NoFaceWarning
from facedeblur.faces import video as fv
from facedeblur.faces.align import warp_face
from facedeblur.faces.paste import paste_back
from facedeblur.models import get_card
from facedeblur.restore import restore_video_file
from facedeblur.restore.deblurrer import Deblurrer

from tinymodels import AddConst, identity, run_cli as cli, shift  # noqa: E402

skimage_data = pytest.importorskip("skimage.data")

H, W = 112, 160
FACE = 72


# ------------------------------------------------------------------------------------------------ fixtures


class PickFrame(torch.nn.Module):
    """A multi-frame "network": (N, T, 3, H, W) -> frame ``index`` of each window."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index
        self.w = torch.nn.Parameter(torch.ones(1))
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x, u):
        self.shapes.append(tuple(x.shape))
        return x[:, self.index] * self.w


@pytest.fixture(scope="module")
def sprites():
    astro = skimage_data.astronaut()
    bg = np.ascontiguousarray(cv2.resize(astro[300:512], (W, H), interpolation=cv2.INTER_AREA))
    face = cv2.resize(astro[0:240, 100:340], (FACE, FACE), interpolation=cv2.INTER_AREA)
    return bg, face


def face_x(i: int, step: int = 3) -> int:
    return 10 + step * i


def make_frames(sprites, n: int = 16, face: bool = True, brightness_step: int = 0, step: int = 3) -> list[np.ndarray]:
    """RGB frames: the face patch moves ``step`` px right per frame (top-left (face_x(i, step), 20))."""
    bg, sprite = sprites
    frames = []
    for i in range(n):
        f = bg.copy()
        if face:
            x = face_x(i, step)
            f[20:20 + FACE, x:x + FACE] = sprite
        frames.append(np.clip(f.astype(int) + brightness_step * i, 0, 255).astype(np.uint8))
    return frames


def write_clip(path: Path, frames: list[np.ndarray], fourcc: str = "FFV1", fps: float = 12.0) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (frames[0].shape[1], frames[0].shape[0]))
    assert w.isOpened()
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()
    return path


def read_clip(path: Path) -> tuple[np.ndarray, float]:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(frames), fps


@pytest.fixture(scope="module")
def clip(sprites, tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.avi", make_frames(sprites))


@pytest.fixture(autouse=True)
def no_ffmpeg(monkeypatch):
    """Deterministic: behave as if ffmpeg were not installed (tests that want one install a fake)."""
    monkeypatch.setattr(fv, "_find_ffmpeg", lambda: None)


def run_video(src, dst, model, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fv.AudioNotCopiedWarning)
        return restore_video_file(src, dst, model, progress=False, codec=kw.pop("codec", "FFV1"), **kw)


# ------------------------------------------------------------------------------------------------ smoothing


def test_smoothing_is_exact_for_steady_motion_and_removes_jitter():
    rng = np.random.default_rng(0)
    n = 60
    t = np.arange(n, dtype=float)
    base = np.array([[30, 40], [60, 40], [45, 55], [33, 70], [57, 70]], float)
    # steady motion: no lag at all (local-linear fit), also at the ends of the track
    linear = base[None] + t[:, None, None] * np.array([2.5, -1.0])
    np.testing.assert_allclose(fv.smooth_track(linear, 3), linear, atol=1e-9)
    # a curved path with detector-like noise (sigma 1 px)
    truth = base[None] + np.stack([20 * np.sin(t / 12), 10 * np.cos(t / 9)], -1)[:, None, :]
    noisy = truth + rng.normal(0, 1.0, truth.shape)
    smooth = fv.smooth_track(noisy, 3)
    j_raw, j_smooth, j_true = fv.landmark_jitter(noisy), fv.landmark_jitter(smooth), fv.landmark_jitter(truth)
    assert j_true < 0.2 and j_raw > 1.5  # white noise: E|second difference| = sqrt(6) * sigma * sqrt(pi/4) ~ 2.2
    assert j_smooth < 0.25 * j_raw, (j_raw, j_smooth)
    err_raw = np.linalg.norm(noisy - truth, axis=-1).mean()
    err_smooth = np.linalg.norm(smooth - truth, axis=-1).mean()
    assert err_smooth < 0.6 * err_raw, (err_raw, err_smooth)  # closer to the truth, not just flatter
    np.testing.assert_array_equal(fv.smooth_track(noisy, 0), noisy)  # radius 0 = off


def test_smooth_at_weights_and_gap_fill():
    times = [0, 1, 3, 4]  # frame 2 missing: interpolated by the fit
    pts = np.array([[0.0], [2.0], [6.0], [8.0]])
    assert fv.smooth_at(times, pts, 2, 3)[0] == pytest.approx(4.0)
    assert fv.smooth_at([5], np.array([[1.0, 2.0]]), 5, 3).tolist() == [1.0, 2.0]
    with pytest.raises(InputError):
        fv.smooth_at([0], np.array([[1.0]]), 10, 3)  # nothing within the radius


def test_tracker_keeps_ids_and_starts_new_tracks():
    class F:
        def __init__(self, box):
            self.box = box

    tr = fv.FaceTracker(max_missing=1)
    a0 = tr.update([F((0, 0, 40, 40)), F((100, 0, 140, 40))])
    assert [k for k, _ in a0] == [0, 1]
    a1 = tr.update([F((106, 2, 146, 42)), F((5, 1, 45, 41))])  # order swapped, both moved
    assert [k for k, _ in a1] == [1, 0]
    a2 = tr.update([F((40, 0, 60, 20))])  # small fast face near neither track's box: IoU 0 -> new track
    assert [k for k, _ in a2] == [2]
    tr.update([])
    tr.update([])
    a5 = tr.update([F((8, 2, 48, 42))])  # track 0 unseen for > max_missing frames: a new id
    assert [k for k, _ in a5] == [3]
    tr2 = fv.FaceTracker()
    tr2.update([F((0, 0, 20, 20))])
    assert [k for k, _ in tr2.update([F((9, 0, 29, 20))])] == [0]  # IoU 0.38 >= 0.3
    assert [k for k, _ in tr2.update([F((17, 2, 37, 22))])] == [0]  # IoU < 0.3, centre 8 px < 0.5 x side


# ------------------------------------------------------------------------------------------------ frame helpers


@pytest.mark.parametrize("scale", [2.5, 0.4])
def test_region_crop_and_paste_equal_the_full_frame_versions(scale):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    ang = 0.3
    a = scale * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    m = np.hstack([a, (np.array([32.0, 32.0]) - a @ [20.0, 30.0])[:, None]])  # crop reaches outside the frame
    full = rgb.astype(np.float32) / 255
    crop = fv.crop_from_u8(rgb, m, 64)
    ref = warp_face(full, m, 64)
    assert np.abs(crop - ref).max() < 2e-3 and np.abs(crop - ref).mean() < 1e-5
    restored = np.clip(crop + rng.uniform(-0.2, 0.2, crop.shape).astype(np.float32), 0, 1)
    out = fv.paste_into_u8(rgb, [(m, crop, restored)], feather=0.1, blend=1.0, mode="residual")
    ref_out = np.clip(np.rint(paste_back(full, [(m, crop, restored)]) * 255), 0, 255).astype(np.uint8)
    assert np.abs(out.astype(int) - ref_out).max() <= 1
    assert not np.array_equal(out, rgb)


# ------------------------------------------------------------------------------------------------ round trips


def test_identity_round_trip_keeps_everything(clip, tmp_path):
    model = identity()
    seen: list[tuple[int, list]] = []
    res = run_video(clip, tmp_path / "out.avi", model, batch_size=4, on_frame=lambda i, f: seen.append((i, f)))
    src, fps_in = read_clip(clip)
    out, fps_out = read_clip(tmp_path / "out.avi")
    assert out.shape == src.shape == (16, H, W, 3) and fps_out == fps_in == 12.0
    assert (res.frames, res.fps, res.width, res.height) == (16, 12.0, W, H)
    np.testing.assert_array_equal(out, src)  # lossless codec + residual paste of an identity model: exact
    assert res.frames_with_faces == 16 and res.tracks == 1 and res.audio == "not copied: ffmpeg not found"
    assert [i for i, _ in seen] == list(range(16))
    assert all(len(f) == 1 and f[0].track == 0 for _, f in seen)
    assert max(model.calls) > 1 and sum(model.calls) == 16  # faces batched across frames
    for i, faces in seen:  # the smoothed landmarks sit on the moving face
        lm = faces[0].landmarks
        assert face_x(i) < lm[:, 0].mean() < face_x(i) + FACE and 20 < lm[:, 1].mean() < 20 + FACE
    assert res.jitter_smoothed_px is not None and res.jitter_smoothed_px < res.jitter_raw_px


def test_shift_changes_only_the_faces(clip, tmp_path):
    res = run_video(clip, tmp_path / "out.avi", shift(0.1), batch_size=8)
    src, _ = read_clip(clip)
    out, _ = read_clip(tmp_path / "out.avi")
    diff = out.astype(int) - src
    for i in range(len(src)):
        cx = face_x(i) + FACE // 2
        assert 20 <= diff[i, 50:62, cx - 6:cx + 6].mean() <= 26  # +0.1 * 255 in the face
    # columns right of the last crop footprint never change (the crop of a 72 px face is ~2x its size)
    assert res.frames_with_faces == 16
    np.testing.assert_array_equal(diff[:6, :, 150:], 0)
    changed = np.abs(diff).sum(-1) > 0
    assert 0.05 < changed.mean() < 0.6


def test_default_mp4_codec_keeps_count_fps_size(sprites, tmp_path):
    src = write_clip(tmp_path / "in.mp4", make_frames(sprites, n=12), fourcc="mp4v", fps=24.0)
    res = run_video(src, tmp_path / "out.mp4", identity(), codec=None)
    dec_in, fps_in = read_clip(src)
    dec_out, fps_out = read_clip(tmp_path / "out.mp4")
    assert res.codec == "mp4v" and dec_out.shape == dec_in.shape and fps_out == fps_in == 24.0
    assert np.abs(dec_out.astype(float) - dec_in).mean() < 4.0  # one more lossy generation, nothing else


def test_streaming_holds_a_bounded_window(sprites):
    frames = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in make_frames(sprites, n=30, step=2)]
    consumed = [0]

    def gen():
        for f in frames:
            consumed[0] += 1
            yield f

    from facedeblur.faces.mtcnn import MTCNN
    from facedeblur.restore.photos import face_restorer

    restorer = face_restorer(identity())
    stream = fv._FaceStream(restorer, MTCNN(), 4, 3, False, None, 1.0, None, 0.1, "residual", None, None)
    it = stream.run(gen())
    first = next(it)
    bound = stream.lookahead + 4 + fv._DETECT_CHUNK
    assert consumed[0] <= bound and first.shape == frames[0].shape
    rest = list(it)
    assert len(rest) == 29 and consumed[0] == 30
    assert stream.max_buffer <= stream.past + bound  # independent of the clip length


def test_a_model_name_is_loaded_like_facedeblur_load(clip, tmp_path, monkeypatch):
    """``restore_video_file(src, dst, "NAME")`` loads NAME (through facedeblur.load) and gives the same video as the
    loaded Deblurrer; the paths are checked before anything is loaded."""
    import facedeblur.restore.deblurrer as dm

    asked: list[str] = []

    def load(name, **kw):
        asked.append(name)
        return Deblurrer(AddConst(), get_card(name))

    monkeypatch.setattr(dm, "load", load)
    with pytest.raises(InputError, match="no such file"):
        run_video(tmp_path / "missing.avi", tmp_path / "x.avi", "cfmd-gan.lite")
    assert asked == []
    res = run_video(clip, tmp_path / "named.avi", "cfmd-gan.lite")
    assert asked == ["cfmd-gan.lite"] and res.frames_with_faces > 0
    run_video(clip, tmp_path / "direct.avi", Deblurrer(AddConst(), get_card("cfmd-gan.lite")))
    np.testing.assert_array_equal(read_clip(tmp_path / "named.avi")[0], read_clip(tmp_path / "direct.avi")[0])
    with pytest.raises(InputError, match="model name"):
        run_video(clip, tmp_path / "y.avi", 3)


def test_multi_frame_model_gets_aligned_windows(sprites, tmp_path):
    """A T=3 model returning the *previous* frame of its window: the face of frame i then shows frame i-1's
    brightness (frames get 6 levels brighter each), frame 0 frame 1's (edges reflected: its window is 1, 0, 1)."""
    base = get_card("cfmd-gan.lite")
    card = dataclasses.replace(base, name="test.video", task="video",
                               capabilities=dataclasses.replace(base.capabilities, frame_window=3))
    net = PickFrame(0)
    frames = make_frames(sprites, n=8, brightness_step=6, step=0)  # a still face, brighter every frame
    src = write_clip(tmp_path / "bright.avi", frames)
    res = run_video(src, tmp_path / "out.avi", Deblurrer(net, card), batch_size=4)
    out, _ = read_clip(tmp_path / "out.avi")
    assert res.frames == 8 and all(s[1:3] == (3, 3) for s in net.shapes)  # (N, T=3, 3, 256, 256)
    centre = (slice(50, 62), slice(40, 52))
    got = [out[i][centre].astype(float).mean() for i in range(8)]
    want = [frames[abs(i - 1)][centre].astype(float).mean() for i in range(8)]
    assert frames[7][centre].mean() - frames[6][centre].mean() > 4  # the test does see a step
    np.testing.assert_allclose(got, want, atol=1.0)


def test_whole_frame_mode_and_model_checks(clip, tmp_path):
    net = AddConst()
    d = Deblurrer(net, get_card("cfmd-gan.lite"))
    res = run_video(clip, tmp_path / "whole.avi", d, faces=False)
    src, _ = read_clip(clip)
    out, _ = read_clip(tmp_path / "whole.avi")
    assert not res.face_pipeline and res.frames == 16
    assert net.shapes[0][-2:] == (H, W)  # whole frames, not crops
    diff = out.astype(int) - src
    assert (((diff >= 25) & (diff <= 26)) | (out == 255)).all()  # +0.1 * 255 everywhere
    with pytest.raises(CapabilityError):
        run_video(clip, tmp_path / "x.avi", identity(), faces=False)  # whole frames need a Deblurrer
    with pytest.raises(CapabilityError):
        run_video(clip, tmp_path / "x.avi", d, u=1.5)
    assert not (tmp_path / "x.avi").exists()


# ------------------------------------------------------------------------------------------------ failures


class Boom(Exception):
    pass


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_failure_leaves_no_output_and_no_temp_file(clip, tmp_path, exc):
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def explode(i, faces):
        if i == 5:
            raise exc()

    with pytest.raises(exc):
        run_video(clip, out_dir / "out.avi", identity(), batch_size=2, on_frame=explode)
    assert list(out_dir.iterdir()) == []
    # an existing output survives a failed --overwrite run untouched
    (out_dir / "out.avi").write_bytes(b"previous result")
    with pytest.raises(exc):
        run_video(clip, out_dir / "out.avi", identity(), batch_size=2, on_frame=explode, overwrite=True)
    assert [p.name for p in out_dir.iterdir()] == ["out.avi"]
    assert (out_dir / "out.avi").read_bytes() == b"previous result"


def test_no_face_anywhere_passes_frames_through(sprites, tmp_path):
    src = write_clip(tmp_path / "empty.avi", make_frames(sprites, n=6, face=False))
    with pytest.warns(NoFaceWarning, match="no face found in any of the 6 frames"):
        res = run_video(src, tmp_path / "out.avi", shift(0.1))
    assert res.frames_with_faces == 0 and res.frames == 6
    np.testing.assert_array_equal(read_clip(tmp_path / "out.avi")[0], read_clip(src)[0])


def test_bad_inputs_are_typed_errors(clip, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 50)
    with pytest.raises(InputError, match="cannot open this file as a video|no frame could be decoded"):
        run_video(bad, tmp_path / "o.mp4", identity())
    with pytest.raises(InputError, match="no such file"):
        run_video(tmp_path / "missing.mp4", tmp_path / "o.mp4", identity())
    flv = tmp_path / "clip.flv"
    flv.write_bytes(clip.read_bytes())
    with pytest.raises(InputError, match="unsupported video format '.flv'"):
        run_video(flv, tmp_path / "o.mp4", identity())
    with pytest.raises(InputError, match="unsupported video format"):
        run_video(clip, tmp_path / "o.gif", identity())
    with pytest.raises(InputError, match="is the input"):
        run_video(clip, clip, identity(), overwrite=True)
    (tmp_path / "exists.avi").write_bytes(b"x")
    with pytest.raises(InputError, match="exists"):
        run_video(clip, tmp_path / "exists.avi", identity())
    for kw in ({"smoothing": -1}, {"batch_size": 0}, {"blend": 2.0}, {"codec": "H264X"}, {"faces": "yes"}):
        with pytest.raises(InputError):
            run_video(clip, tmp_path / "o.avi", identity(), **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4", "clip.flv", "exists.avi"]


# ------------------------------------------------------------------------------------------------ audio


def test_audio_notice_without_ffmpeg(clip, tmp_path):
    with pytest.warns(fv.AudioNotCopiedWarning, match="needs ffmpeg on PATH"):
        res = restore_video_file(clip, tmp_path / "o.avi", identity(), progress=False, codec="FFV1")
    assert res.audio == "not copied: ffmpeg not found" and len(res.notes) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = restore_video_file(clip, tmp_path / "o2.avi", identity(), progress=False, codec="FFV1", audio=False)
    assert res.audio == "off"


FAKE_FFMPEG = r'''#!{python}
"""Fake ffmpeg: 'ffmpeg -i SRC' lists one audio stream (exit 1, like ffmpeg); a mux copies input 0 to OUT."""
import shutil, sys
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(" ".join(args) + "\n")
ins = [args[i + 1] for i, a in enumerate(args) if a == "-i"]
if len(ins) == 1:
    sys.stderr.write("Input #0, avi, from 'x':\n  Stream #0:0: Video: ffv1\n  Stream #0:1: Audio: pcm_s16le\n")
    sys.exit(1)
if {fail}:
    sys.stderr.write("Could not write header: Invalid argument\n")
    sys.exit(1)
shutil.copyfile(ins[0], args[-1])
'''


@pytest.mark.parametrize("fail", [False, True])
def test_audio_is_muxed_with_ffmpeg_when_present(clip, tmp_path, monkeypatch, fail):
    log = tmp_path / "ffmpeg.log"
    exe = tmp_path / "ffmpeg"
    exe.write_text(FAKE_FFMPEG.format(python=sys.executable, log=str(log), fail=fail))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(fv, "_find_ffmpeg", lambda: str(exe))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = restore_video_file(clip, out_dir / "o.avi", identity(), progress=False, codec="FFV1")
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and calls[0].endswith(f"-i {clip}")
    mux = calls[1].split()
    assert mux[mux.index("-c") + 1] == "copy" and "0:v:0" in mux and "1:a" in mux
    ins = [mux[i + 1] for i, a in enumerate(mux) if a == "-i"]
    assert len(ins) == 2 and ins[0] != str(clip) and ins[1] == str(clip)  # restored video + the source's audio
    notes = [w for w in caught if issubclass(w.category, fv.AudioNotCopiedWarning)]
    if fail:
        assert res.audio.startswith("not copied: Could not write header") and len(notes) == 1
    else:
        assert res.audio == "copied" and not notes
    assert [p.name for p in out_dir.iterdir()] == ["o.avi"]  # temp files removed either way
    np.testing.assert_array_equal(read_clip(out_dir / "o.avi")[0], read_clip(clip)[0])


# ------------------------------------------------------------------------------------------------ CLI


def assert_one_line_error(err: str) -> None:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("facedeblur: error: ") and "Traceback" not in err, err


@pytest.fixture
def fake_load(monkeypatch):
    """``facedeblur restore`` with a Deblurrer around AddConst (no trained weights needed)."""
    import facedeblur.restore as fr

    made = []

    def load(name, **kw):
        d = Deblurrer(AddConst(), get_card(name))
        made.append(d)
        return d

    monkeypatch.setattr(fr, "load", load)
    return made


def test_cli_restores_a_video(clip, tmp_path, capsys, fake_load):
    dst = tmp_path / "restored.avi"
    rc, _, err = cli(["restore", str(clip), "-o", str(dst), "--model", "cfmd-gan", "--codec", "FFV1", "-q"], capsys)
    assert rc == 0, err
    notes = [x for x in err.splitlines() if x.strip()]
    assert len(notes) == 1 and notes[0].startswith("facedeblur: note: ") and "without audio" in notes[0]
    src, fps_in = read_clip(clip)
    out, fps_out = read_clip(dst)
    assert out.shape == src.shape and fps_out == fps_in
    assert out[:, 50:62].astype(float).mean() > src[:, 50:62].astype(float).mean() + 5  # faces restored
    np.testing.assert_array_equal(out[:6, :, 150:], src[:6, :, 150:])
    # into a folder: same name; existing output refused without --overwrite
    rc, _, err = cli(["restore", str(clip), "-o", str(tmp_path / "dir"), "--model", "cfmd-gan", "--codec", "FFV1",
                      "-q"], capsys)
    assert rc == 0 and (tmp_path / "dir" / "clip.avi").exists()
    rc, _, err = cli(["restore", str(clip), "-o", str(dst), "--model", "cfmd-gan", "-q"], capsys)
    assert rc == 1 and "--overwrite" in err
    assert_one_line_error(err)


@pytest.mark.parametrize("case", ["garbage", "flv", "gfpgan", "moments", "image_to_video_name"])
def test_cli_video_errors_are_one_line(clip, tmp_path, capsys, fake_load, case):
    if case == "garbage":
        bad = tmp_path / "bad.mp4"
        bad.write_bytes(b"\x00\x01 not a video" * 100)
        argv, match = [str(bad), "-o", str(tmp_path / "o")], "as a video"
    elif case == "flv":
        bad = tmp_path / "clip.flv"
        bad.write_bytes(b"FLV")
        argv, match = [str(bad), "-o", str(tmp_path / "o")], "unsupported file type '.flv'"
    elif case == "gfpgan":
        argv, match = [str(clip), "-o", str(tmp_path / "o"), "--layout", "gfpgan"], "--layout gfpgan is for images"
    elif case == "moments":
        argv, match = [str(clip), "-o", str(tmp_path / "o"), "--moments", "3"], "--moments"
    else:
        img = tmp_path / "a.png"
        cv2.imwrite(str(img), np.zeros((16, 16, 3), np.uint8))
        argv, match = [str(img), "-o", str(tmp_path / "o.mp4")], "one output video"
    rc, _, err = cli(["restore", *argv, "--model", "cfmd-gan", "-q"], capsys)
    assert rc == 1
    assert_one_line_error(err)
    assert match in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
