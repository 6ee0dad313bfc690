"""The ``facedeblur`` command line: list, info, restore (with exported random-init weights: mechanics only),
refusals, and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facedeblur.cli import main


def run(argv, capsys) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse usage errors and --help
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(err: str) -> None:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("facedeblur: error: "), err
    assert "Traceback" not in err


@pytest.fixture
def face_png(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (30, 26, 3), dtype=np.uint8)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(img).save(src / "face.png")
    return src / "face.png", img


def test_list(capsys):
    rc, out, _ = run(["list"], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "TASK", "WEIGHTS", "DEFAULT"]
    lite = next(x for x in lines if x.startswith("cfmd-gan.lite"))
    assert "image-continuous" in lite and "*" in lite
    paper = next(x for x in lines if x.startswith("cfmd-gan.paper"))
    assert "*" not in paper
    rc, out, _ = run(["list", "--params"], capsys)  # builds the networks on the meta device
    lines = out.splitlines()
    assert rc == 0 and lines[0].split()[:4] == ["NAME", "TASK", "PARAMS", "WEIGHTS"]
    paper = next(x for x in lines if x.startswith("cfmd-gan.paper"))
    assert "9.25M" in paper  # 9,246,323 parameters, as in the authors' released generator
    rc, out, err = run(["list", "cfmd-gan.p*"], capsys)
    assert rc == 0 and "cfmd-gan.paper" in out and "cfmd-gan.lite" not in out
    rc, out, err = run(["list", "--task", "video"], capsys)
    assert rc == 0 and "cfmd-gan" not in out and "finenet.lite" in out and "finenet.paper" in out
    rc, out, err = run(["list", "cfmd-gan*", "--task", "video"], capsys)
    assert rc == 0 and "cfmd-gan" not in out and "no models match" in err
    rc, out, err = run(["list", "--task", "nope"], capsys)
    assert rc == 2
    assert_one_line_error(err)


def test_list_pretrained(capsys):
    import facedeblur

    rc, out, err = run(["list", "--pretrained"], capsys)
    assert rc == 0
    for name in facedeblur.list_models():
        assert (name in out) == facedeblur.model_info(name).pretrained


def test_info(capsys):
    import facedeblur

    rc, out, _ = run(["info", "cfmd-gan"], capsys)
    assert rc == 0
    assert out.startswith("cfmd-gan.lite") and "image-continuous" in out and "default 0.5" in out
    assert "2207.06626" in out and "parameters:" not in out  # counting them builds the network: --params
    if facedeblur.model_info("cfmd-gan").pretrained:  # a shipped card: its record is summarised, not dumped
        assert "trained:" in out and "stage 1" in out and "gate:" in out
        card = facedeblur.model_info("cfmd-gan")
        if "benchmark" in card.metrics:  # the measured gains, one line per set
            gain = card.metrics["benchmark"]["kernel"]["psnr_gain_db"]
            assert f"kernel: gain {gain:+.3f} dB" in out and '"manifest"' not in out
        else:
            assert "bar met" in out
        assert '"stages"' not in out and '"gate_calibration"' not in out
    rc, out, _ = run(["info", "cfmd-gan.paper", "--params"], capsys)
    assert rc == 0 and "parameters:    9,246,323" in out
    rc, out, _ = run(["info", "cfmd-gan.paper", "--json", "--params"], capsys)
    assert rc == 0 and json.loads(out)["parameters"] == 9_246_323
    rc, out, _ = run(["info", "cfmd-gan.paper", "--json"], capsys)
    data = json.loads(out)
    assert rc == 0 and data["name"] == "cfmd-gan.paper" and data["arch_kwargs"]["width"] == 32


def test_list_and_info_import_no_heavy_stack():
    """``facedeblur list`` / ``info`` read the zoo configs only: no torch, OpenCV or scikit-image is imported and no
    network is built (benchmarks/cli_startup.py measures their time)."""
    code = ("import sys; from facedeblur.cli import main; "
            "rc = main(['list']) + main(['list', '--pretrained']) + main(['info', 'cfmd-gan']) "
            "+ main(['info', 'cfmd-gan.paper', '--json']); "
            "print('RC', rc, 'HEAVY', sorted(m for m in ('torch', 'cv2', 'skimage', 'facedeblur.models.cfmd_gan') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "RC 0 HEAVY []", r.stdout


def test_unknown_model_one_line(capsys):
    rc, _, err = run(["info", "no-such-model"], capsys)
    assert rc == 1
    assert_one_line_error(err)
    assert "no-such-model" in err


def test_debug_shows_traceback(capsys):
    rc, _, err = run(["--debug", "info", "no-such-model"], capsys)
    assert rc == 1 and "Traceback" in err
    rc, _, err = run(["info", "no-such-model", "--debug"], capsys)
    assert rc == 1 and "Traceback" in err


def test_restore_missing_file_one_line(tmp_path, capsys):
    rc, _, err = run(["restore", str(tmp_path / "nope.png"), "-o", str(tmp_path / "out"), "--model", "cfmd-gan"],
                     capsys)
    assert rc == 1
    assert_one_line_error(err)
    assert "nope.png" in err


def test_restore_unknown_model_one_line(face_png, tmp_path, capsys):
    rc, _, err = run(["restore", str(face_png[0]), "-o", str(tmp_path / "out"), "--model", "nope"], capsys)
    assert rc == 1
    assert_one_line_error(err)


@pytest.mark.parametrize("u", ["1.5", "abc", "nan", "-0.2"])
def test_restore_bad_u_one_line(face_png, tmp_path, capsys, u):
    rc, _, err = run(["restore", str(face_png[0]), "-o", str(tmp_path / "out"), "--model", "cfmd-gan", f"--u={u}"],
                     capsys)
    assert rc == 2
    assert_one_line_error(err)
    assert "--u" in err
    assert not (tmp_path / "out").exists()


def test_restore_bad_moments(face_png, tmp_path, capsys):
    rc, _, err = run(["restore", str(face_png[0]), "-o", str(tmp_path / "o"), "--model", "cfmd-gan", "--moments",
                      "1"], capsys)
    assert rc == 2
    assert_one_line_error(err)
    rc, _, err = run(["restore", str(face_png[0]), "-o", str(tmp_path / "o"), "--model", "cfmd-gan", "--moments",
                      "3", "--u", "0.5"], capsys)
    assert rc == 2


def test_restore_without_weights(face_png, tmp_path, capsys):
    import facedeblur

    assert not facedeblur.model_info("cfmd-gan.paper").pretrained  # no weights ship for the paper variant
    rc, _, err = run(["restore", str(face_png[0]), "-o", str(tmp_path / "out"), "--model", "cfmd-gan.paper"], capsys)
    assert rc == 1
    assert_one_line_error(err)
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_restore_with_weights_folder(face_png, tmp_path, capsys, lite_random_folder):
    src, img = face_png
    folder, model = lite_random_folder
    out = tmp_path / "out"
    rc, _, err = run(["restore", str(src), "-o", str(out), "--model", "cfmd-gan", "--weights", str(folder),
                      "--u", "0.25", "-q"], capsys)
    assert rc == 0, err
    res = np.asarray(Image.open(out / "face.png"))
    assert res.shape == img.shape and res.dtype == np.uint8

    import facedeblur
    from facedeblur.models import get_card

    expected = facedeblur.Deblurrer(model, get_card("cfmd-gan.lite"), "cpu").restore(img, u=0.25)
    np.testing.assert_array_equal(res, expected)

    # existing outputs are refused unless --overwrite
    rc, _, err = run(["restore", str(src), "-o", str(out), "--model", "cfmd-gan", "--weights", str(folder), "-q"],
                     capsys)
    assert rc == 1 and "--overwrite" in err
    assert_one_line_error(err)
    rc, _, err = run(["restore", str(src), "-o", str(out), "--model", "cfmd-gan", "--weights", str(folder), "-q",
                      "--overwrite"], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["face.png"]  # no temp files left


def test_restore_moments_and_folders(face_png, tmp_path, capsys, lite_random_folder):
    src, img = face_png
    folder, _ = lite_random_folder
    (src.parent / "sub").mkdir()
    Image.fromarray(img[:16, :20]).save(src.parent / "sub" / "small.jpg")
    out = tmp_path / "moments"
    rc, _, err = run(["restore", str(src.parent), "-o", str(out), "--model", "cfmd-gan", "--weights", str(folder),
                      "--moments", "3", "-q"], capsys)
    assert rc == 0, err
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert names == ["face_m00.png", "face_m01.png", "face_m02.png",
                     "sub/small_m00.png", "sub/small_m01.png", "sub/small_m02.png"]
    assert np.asarray(Image.open(out / "sub" / "small_m02.png")).shape == (16, 20, 3)


def test_restore_refuses_to_overwrite_input(face_png, capsys, lite_random_folder):
    src, img = face_png
    folder, _ = lite_random_folder
    before = src.read_bytes()
    for extra in ([], ["--overwrite"]):
        rc, _, err = run(["restore", str(src), "-o", str(src.parent), "--model", "cfmd-gan", "--weights",
                          str(folder), "-q", *extra], capsys)
        assert rc == 1
        assert_one_line_error(err)
        assert "overwrite the input" in err
        assert src.read_bytes() == before
    rc, _, err = run(["restore", str(src), "-o", str(src), "--model", "cfmd-gan", "--weights", str(folder), "-q",
                      "--overwrite"], capsys)
    assert rc == 1 and "overwrite the input" in err
    assert src.read_bytes() == before


def test_restore_single_file_to_file(face_png, tmp_path, capsys, lite_random_folder):
    src, img = face_png
    folder, _ = lite_random_folder
    dst = tmp_path / "restored.png"
    rc, _, err = run(["restore", str(src), "-o", str(dst), "--model", "cfmd-gan.lite", "--weights", str(folder),
                      "-q"], capsys)
    assert rc == 0, err
    assert dst.is_file() and np.asarray(Image.open(dst)).shape == img.shape


def test_export_and_local_dir(tmp_path, capsys, lite_random_folder):
    folder, _ = lite_random_folder
    out = tmp_path / "exported"
    rc, stdout, err = run(["export", "cfmd-gan.lite", str(out), "--weights", str(folder), "--dtype", "float16"],
                          capsys)
    assert rc == 0, err
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert json.loads((out / "config.json").read_text())["weights"]["dtype"] == "float16"
    rc, _, err = run(["export", "cfmd-gan.lite", str(out), "--weights", str(folder)], capsys)
    assert rc == 1  # not empty, no --overwrite
    assert_one_line_error(err)


def test_download_without_weights(capsys, tmp_path):
    import facedeblur

    assert not facedeblur.model_info("cfmd-gan.paper").pretrained
    rc, _, err = run(["download", "cfmd-gan.paper", "--cache-dir", str(tmp_path)], capsys)
    assert rc == 1
    assert_one_line_error(err)
    if facedeblur.model_info("cfmd-gan").weights.embedded:  # embedded weights: nothing to fetch, said so, offline
        rc, _, err = run(["download", "cfmd-gan", "--cache-dir", str(tmp_path)], capsys)
        assert rc == 0 and "already local" in err and not any(tmp_path.iterdir())


def test_train_help(capsys):
    """``facedeblur train --help`` shows the trainer's own options: a broken ``facedeblur.train`` must fail here,
    not be replaced by a stand-in parser (the trainer imports no optional extra)."""
    rc, out, err = run(["train", "--help"], capsys)
    assert rc == 0, err
    assert "usage: facedeblur train" in out
    for option in ("--data", "--init", "--config", "--out", "--resume"):
        assert option in out, f"{option} missing from 'facedeblur train --help'"


def test_python_m_and_no_command():
    r = subprocess.run([sys.executable, "-m", "facedeblur", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    for cmd in ("list", "info", "restore", "download", "export", "import-official", "train"):
        assert cmd in r.stdout
    r = subprocess.run([sys.executable, "-m", "facedeblur"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert_one_line_error(r.stderr)


def test_u_on_model_without_u(face_png, tmp_path, capsys, weights_api):
    import dataclasses

    import facedeblur
    from facedeblur.models import get_card

    lite = get_card("cfmd-gan.lite")
    card = dataclasses.replace(lite, name="no-u-test", arch_kwargs={**lite.arch_kwargs, "width": 4, "num_res": 1},
                               capabilities=dataclasses.replace(lite.capabilities, continuous_u=False, default_u=None))
    folder = tmp_path / "no_u"
    weights_api.save_pretrained(facedeblur.create_model("cfmd-gan", width=4, num_res=1), card, folder)
    for flag in (["--u", "0.5"], ["--moments", "3"]):
        rc, _, err = run(["restore", str(face_png[0]), "-o", str(tmp_path / "out"), "--model", f"local-dir:{folder}",
                          *flag], capsys)
        assert rc == 1
        assert_one_line_error(err)
        assert "has no control factor u" in err and flag[0] in err


def test_import_official_missing_checkpoint(tmp_path, capsys):
    rc, _, err = run(["import-official", "cfmd-gan", str(tmp_path / "missing.pth"), str(tmp_path / "out")], capsys)
    assert rc == 1
    assert_one_line_error(err)
    assert "missing.pth" in err
    rc, _, err = run(["import-official", "other-method", str(tmp_path / "x.pth"), str(tmp_path / "out")], capsys)
    assert rc == 2
    assert_one_line_error(err)
