"""``facedeblur.batch``: restore_many / ``restore-batch`` -- sources, resume rules, atomic two-phase commits, bad items,
cross-image face batching, the SIGKILL fault, setup errors. Models are random-init tiny CFMD-GANs (mechanics only);
photos are crops of skimage's astronaut (a real face)."""
from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import facedeblur
from facedeblur.batch import MANIFEST_NAME, Manifest, NoFaceFoundError, restore_many
from facedeblur.batch.cli import main
from facedeblur.batch.sources import PARTIAL_TAG, collect
from facedeblur.errors import CapabilityError, InputError
from facedeblur.restore import read_image

from tinymodels import tiny_card, tiny_model

OUT_FILES = {MANIFEST_NAME, "facedeblur-failures.tsv", ".facedeblur-batch.lock", MANIFEST_NAME + "-wal",
             MANIFEST_NAME + "-shm"}


# ------------------------------------------------------------------------------------------------ helpers


def tiny_deblurrer(model: torch.nn.Module | None = None) -> facedeblur.Deblurrer:
    return facedeblur.Deblurrer(model if model is not None else tiny_model(), tiny_card(), "cpu")


def noise_images(folder: Path, n: int, size: tuple[int, int] = (40, 32), seed: int = 0, sub_every: int = 3) -> list[Path]:
    """``n`` random RGB PNGs (w x h = size), every ``sub_every``-th in a sub-folder."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / ("sub" if i % sub_every == 1 else "") / f"img{i:03d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def astronaut_photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` 4:3 photos (200x150) of the astronaut's face at random shifts: the auto rule sends them through the face
    pipeline, and MTCNN finds the face."""
    import cv2
    from skimage.data import astronaut

    a = astronaut()
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        y, x = (int(v) for v in rng.integers(0, 40, 2))
        crop = a[y:y + 300, 40 + x:40 + x + 400]
        p = folder / f"photo{i:02d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(cv2.resize(crop, (200, 150), interpolation=cv2.INTER_AREA)).save(p)
        paths.append(p)
    return paths


def rows(out: Path) -> dict[str, dict]:
    db = sqlite3.connect(out / MANIFEST_NAME)
    db.row_factory = sqlite3.Row
    try:
        return {r["rel"]: dict(r) for r in db.execute("SELECT * FROM items")}
    finally:
        db.close()


def output_files(out: Path) -> set[str]:
    """The outputs in OUT (not the manifest, lock and failure list; not temp files)."""
    return {p.relative_to(out).as_posix() for p in out.rglob("*")
            if p.is_file() and p.name not in OUT_FILES and PARTIAL_TAG not in p.name}


def assert_consistent(out: Path, n_items: int | None = None) -> dict[str, dict]:
    """The manifest and OUT agree: every done row's output exists, has the recorded size, decodes at the input's size;
    no row is mid-commit; OUT holds no temp file and no output without a done row."""
    rs = rows(out)
    if n_items is not None:
        assert len(rs) == n_items
    done = {r["output"] for r in rs.values() if r["status"] == "done"}
    assert not [r for r in rs.values() if r["status"] == "writing"]
    for r in rs.values():
        if r["status"] != "done":
            continue
        p = out / r["output"]
        assert p.stat().st_size == r["output_bytes"], r
        if r["kind"] == "image":
            img = read_image(p)
            assert img.shape[:2] == (r["height"], r["width"]), r
    assert output_files(out) == done
    assert not [p for p in out.rglob(f"*{PARTIAL_TAG}*")]
    return rs


def stamps(out: Path) -> dict[str, tuple[int, int]]:
    return {rel: ((out / rel).stat().st_ino, (out / rel).stat().st_mtime_ns) for rel in output_files(out)}


class Recording(torch.nn.Module):
    """Wraps a network: records the batch size of every forward; raises on a batch holding an all-black image."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.batches: list[int] = []

    def forward(self, x, u):
        self.batches.append(int(x.shape[0]))
        if bool((x.flatten(1).amax(1) < 0.01).any()):
            raise RuntimeError("poisoned input")
        return self.inner(x, u)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A ``local-dir:`` model folder with a random-init tiny CFMD-GAN (mechanics only), for name-based runs."""
    from facedeblur.weights import save_pretrained

    folder = tmp_path_factory.mktemp("batch_model") / "tiny"
    save_pretrained(tiny_model(), dataclasses.replace(tiny_card(), name="batch-tiny"), folder)
    return folder


# ------------------------------------------------------------------------------------------------ sources


def test_collect_sources(tmp_path):
    src = tmp_path / "src"
    noise_images(src, 4)
    (src / ".hidden").mkdir()
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(src / ".hidden" / "x.png")
    (src / "notes.md").write_text("not an image")
    items, sources = collect([src], ".png")
    assert sorted(i.rel for i in items) == ["img000.png", "img002.png", "img003.png", "sub/img001.png"]
    assert sources[0].kind == "folder" and sources[0].root == src

    other = tmp_path / "other"
    noise_images(other, 1, sub_every=99)
    lst = tmp_path / "list.txt"
    lst.write_text(f"# archive\n{other / 'img000.png'}\n\n../{tmp_path.name}/other/missing.jpg\n")
    items, sources = collect([lst], ".webp")
    assert [(i.rel, i.kind, i.out_rel) for i in items] == [("img000.png", "image", "img000.webp"),
                                                          ("missing.jpg", "image", "missing.webp")]
    items, sources = collect([str(src / "**" / "*.png")], ".png")  # a quoted glob, expanded here
    assert sources[0].kind == "glob" and sources[0].root == src and len(items) == 4
    with pytest.raises(InputError, match="have the same path 'img000.png'"):
        collect([src / "img000.png", other / "img000.png"], ".png")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(src / "img000.jpg")
    with pytest.raises(InputError, match="would both be written to 'img000.png'"):
        collect([src], ".png")
    with pytest.raises(InputError, match="no such file"):
        collect([tmp_path / "nope"], ".png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        collect([tmp_path / "empty"], ".png")
    with pytest.raises(InputError, match="unsupported file type"):
        collect([src / "notes.md"], ".png")


def test_auto_rule_matches_deblurrer():
    """batch's copy of restore's faces=None rule gives the Deblurrer's answer on a grid of sizes."""
    from facedeblur.batch.work import looks_like_photo

    d = tiny_deblurrer()
    if not hasattr(d, "_is_photo"):
        pytest.skip("Deblurrer no longer has _is_photo; compare looks_like_photo with the documented rule instead")
    for h in (16, 63, 64, 100, 256, 320, 511, 512, 513, 700, 1100):
        for w in (16, 64, 80, 256, 300, 400, 512, 640, 1024, 1100):
            assert looks_like_photo(h, w, d.card) == d._is_photo(torch.zeros(3, h, w), None), (h, w)


# ------------------------------------------------------------------------------------------------ jobs


def test_whole_images_resume_and_model_change(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    paths = noise_images(src, 6)
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.fromarray(np.zeros((20, 20), np.float32), mode="F").save(src / "float.tif")  # a mode restore refuses
    d = tiny_deblurrer()
    r = restore_many(src, out, d, faces=False, batch_size=4, progress=False)
    assert (r.items, r.restored, r.skipped, r.failed, r.exit_code) == (8, 6, 0, 2, 1)
    assert {f[0]: f[1] for f in r.failures} == {"corrupt.png": "InputError", "float.tif": "InputError"}
    assert (out / "facedeblur-failures.tsv").read_text().count("\n") == 3  # header + 2
    rs = assert_consistent(out, 8)
    for p in paths:  # same as the plain per-image call (batching may change float rounding by one grey level)
        rel = p.relative_to(src).as_posix()
        want = d.restore(read_image(p), faces=False)
        got = read_image(out / rel)
        assert np.abs(want.astype(int) - got.astype(int)).max() <= 1
        assert np.abs(got.astype(int) - read_image(p).astype(int)).mean() > 1  # the model did change it
        assert rs[rel]["faces"] == 1 and rs[rel]["u"] == 0.5 and rs[rel]["weights_sha256"].startswith("tensors:")
    assert rs["corrupt.png"]["input_sha1"] and rs["corrupt.png"]["error_type"] == "InputError"

    before = stamps(out)
    r = restore_many(src, out, d, faces=False, batch_size=4, progress=False)  # rerun: nothing redone
    assert (r.restored, r.skipped, r.failed) == (0, 6, 2)
    assert stamps(out) == before

    changed = paths[2]
    Image.fromarray(np.full((32, 40, 3), 7, np.uint8)).save(changed)  # new content (and mtime)
    r = restore_many(src, out, d, faces=False, batch_size=4, progress=False)
    assert (r.restored, r.skipped) == (1, 5)
    after = stamps(out)
    assert [k for k in before if before[k] != after[k]] == [changed.relative_to(src).as_posix()]

    r = restore_many(src, out, d, u=0.25, faces=False, batch_size=4, progress=False)  # another u: all redone
    assert (r.restored, r.skipped, r.failed) == (6, 0, 2)
    rs = assert_consistent(out, 8)
    assert {v["u"] for v in rs.values() if v["status"] == "done"} == {0.25}
    r = restore_many(src, out, d, u=0.25, faces=False, batch_size=4, progress=False, ext="bmp")  # another format
    assert r.restored == 6
    rs = assert_consistent(out, 8)  # the .png outputs of the earlier runs are gone
    assert {v["output"].rsplit(".", 1)[1] for v in rs.values() if v["status"] == "done"} == {"bmp"}


def test_rehash_catches_content_change_with_same_size_and_mtime(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    p = noise_images(src, 2)[0]
    d = tiny_deblurrer()
    assert restore_many(src, out, d, faces=False, progress=False).restored == 2
    st = p.stat()
    data = bytearray(p.read_bytes())
    img = np.asarray(Image.open(p)).copy()
    img[0, 0] ^= 255
    Image.fromarray(img).save(p)
    if p.stat().st_size != st.st_size:  # PNG compression changed the size: compare like for like
        pytest.skip("the edited PNG changed size")
    assert p.read_bytes() != bytes(data)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert restore_many(src, out, d, faces=False, progress=False).restored == 0  # size + mtime: taken as unchanged
    r = restore_many(src, out, d, faces=False, progress=False, rehash=True)
    assert (r.restored, r.skipped) == (1, 1)


def test_faces_batched_across_images_and_no_face(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    photos = astronaut_photos(src, 3)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(100, 140, (150, 200, 3), dtype=np.uint8)).save(src / "noface.png")
    net = Recording(tiny_model())
    d = tiny_deblurrer(net)
    r = restore_many(src, out, d, batch_size=4, progress=False)  # auto: 4:3 photos go through the face pipeline
    assert (r.restored, r.failed, r.faces) == (3, 1, 3)
    assert r.failures[0][:2] == ("noface.png", NoFaceFoundError.__name__)
    assert net.batches == [3]  # the faces of three images in one forward
    net.batches.clear()
    for p in photos:  # the plain per-image loop gives the same pictures
        want = d.restore(read_image(p), faces=True)
        got = read_image(out / p.name)
        assert np.abs(want.astype(int) - got.astype(int)).max() <= 1
    assert net.batches == [1, 1, 1]

    r = restore_many(src, tmp_path / "keep", d, batch_size=4, progress=False, no_face="keep")
    assert (r.restored, r.failed) == (4, 0)
    assert np.array_equal(read_image(tmp_path / "keep" / "noface.png"), read_image(src / "noface.png"))
    assert rows(tmp_path / "keep")["noface.png"]["faces"] == 0


def test_worker_raising_on_one_item_fails_only_that_item(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    noise_images(src, 5, sub_every=99)
    Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(src / "img002.png")  # the model raises on this one
    net = Recording(tiny_model())
    r = restore_many(src, out, tiny_deblurrer(net), faces=False, batch_size=8, progress=False)
    assert (r.restored, r.failed) == (4, 1)
    rs = assert_consistent(out, 5)
    assert rs["img002.png"]["status"] == "failed" and rs["img002.png"]["error_type"] == "RuntimeError"
    assert "poisoned input" in rs["img002.png"]["error"]
    assert net.batches[0] == 5 and sorted(net.batches[1:]) == [1] * 5  # the batch, then each item alone


def test_video_item(tmp_path):
    import cv2

    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    w = cv2.VideoWriter(str(src / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 40))
    rng = np.random.default_rng(0)
    for _ in range(5):
        w.write(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    w.release()
    r = restore_many(src, out, tiny_deblurrer(), faces=False, progress=False)
    assert (r.restored, r.failed, r.faces) == (1, 0, 5)
    cap = cv2.VideoCapture(str(out / "clip.avi"))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    assert len(frames) == 5 and frames[0].shape == (40, 48, 3)
    rs = assert_consistent(out, 1)
    assert (rs["clip.avi"]["frames"], rs["clip.avi"]["width"], rs["clip.avi"]["height"]) == (5, 48, 40)
    assert (out / "clip.avi").stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------------------------------------ setup errors


def test_setup_errors_before_any_work(tmp_path):
    src = tmp_path / "src"
    noise_images(src, 2)
    d = tiny_deblurrer()
    with pytest.raises(InputError, match="inside the source"):
        restore_many(src, src / "out", d, progress=False)
    assert not (src / "out").exists()
    with pytest.raises(InputError, match="inside the output folder"):
        restore_many(src, tmp_path, d, progress=False)
    assert not (tmp_path / MANIFEST_NAME).exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="not writable"):
        restore_many(src, blocker / "out", d, progress=False)
    with pytest.raises(InputError, match="is a file"):
        restore_many(src, blocker, d, progress=False)
    if os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(InputError, match="not writable"):
            restore_many(src, ro, d, progress=False)
    out = tmp_path / "out"
    out.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(out / "img000.png")  # a file the manifest does not know
    with pytest.raises(InputError, match="not in this folder's manifest"):
        restore_many(src, out, d, faces=False, progress=False)
    assert restore_many(src, out, d, faces=False, progress=False, overwrite=True).restored == 2
    with pytest.raises(InputError, match="would overwrite the input"):
        restore_many([src / "img000.png"], src, d, progress=False, ext="png")
    with pytest.raises(CapabilityError, match="model name"):
        restore_many(src, tmp_path / "r", d, engine="ray", progress=False)


def test_second_job_on_same_out_is_refused(tmp_path):
    from facedeblur.batch.job import _Lock

    src, out = tmp_path / "src", tmp_path / "out"
    noise_images(src, 1)
    out.mkdir()
    with _Lock(out):
        with pytest.raises(InputError, match="another restore-batch job"):
            restore_many(src, out, tiny_deblurrer(), faces=False, progress=False)
    assert restore_many(src, out, tiny_deblurrer(), faces=False, progress=False).restored == 1


def test_interrupted_commit_is_recovered(tmp_path):
    """A kill between the commit's phases: the temp file is moved into place by the next run, not rewritten."""
    from facedeblur.batch.work import recover

    out = tmp_path / "out"
    out.mkdir()
    with Manifest(out / MANIFEST_NAME) as m:
        for rel, tmp_there, dst_there in (("a.png", True, False), ("b.png", False, True), ("c.png", False, False)):
            tmp = out / f".{rel[0]}{PARTIAL_TAG}.png"
            if tmp_there:
                tmp.write_bytes(b"A")
            if dst_there:
                (out / rel).write_bytes(b"BB")
            m.mark_writing(rel, {"output": rel, "model_key": "k"}, tmp.name)
        assert recover(m, out) == 2
        rs = m.rows()
    assert (out / "a.png").read_bytes() == b"A" and not (out / f".a{PARTIAL_TAG}.png").exists()
    assert (rs["a.png"].status, rs["a.png"].output_bytes) == ("done", 1)
    assert (rs["b.png"].status, rs["b.png"].output_bytes) == ("done", 2)
    assert "c.png" not in rs  # nothing to finish: the item is redone


def test_ray_engine_without_ray_names_the_extra(monkeypatch):
    from facedeblur.batch.engine_ray import EngineUnavailableError, import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(EngineUnavailableError, match=r"facedeblur\[ray\]"):
        import_ray()


# ------------------------------------------------------------------------------------------------ command line


def test_cli_summary_line_and_exit_codes(tmp_path, tiny_dir, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    noise_images(src, 3)
    (src / "bad.jpg").write_bytes(b"junk")
    argv = ["restore-batch", str(src), str(out), "--model", f"local-dir:{tiny_dir}", "--faces", "off", "--device",
            "cpu", "-q"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("restore-batch: 4 items, 3 done (3 restored now, 0 already done), "
                                               "1 failed (list: ")
    assert str(out / "facedeblur-failures.tsv") in err[0]
    rs = assert_consistent(out, 4)
    assert rs["img000.png"]["model"] == "batch-tiny"
    assert rs["img000.png"]["weights_sha256"] == facedeblur.model_info(f"local-dir:{tiny_dir}").weights.sha256
    assert main(argv) == 1
    assert "0 restored now, 3 already done" in capsys.readouterr().err
    bad = out / "bad.jpg"
    assert not bad.exists()
    (src / "bad.jpg").unlink()
    assert main(argv) == 0  # the failed item is gone from the sources: every item is done
    assert main(["restore-batch", str(src), str(src / "o"), "--model", f"local-dir:{tiny_dir}", "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("facedeblur: error: output folder") and "inside the source" in err[-1]
    assert main(["restore-batch", str(src)]) == 1
    with pytest.raises(SystemExit) as e:
        main(["restore-batch", str(src), str(out), "--u", "2"])
    assert e.value.code == 2


def _launch(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(facedeblur.__file__).parent.parent)}
    return subprocess.Popen([sys.executable, "-m", "facedeblur.batch.cli", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _kill_when(proc: subprocess.Popen, out: Path, at_least: int, timeout: float = 120.0) -> int:
    """SIGKILL ``proc`` once ``out`` holds ``at_least`` outputs; returns how many there were. Fails if the job ended
    first."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"the job finished before it could be killed: {proc.stderr.read()}")
        n = len(output_files(out)) if out.exists() else 0
        if n >= at_least:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return n
        time.sleep(0.01)
    proc.kill()
    pytest.fail("the job wrote too few outputs in time")


def kill_and_rerun(src: Path, out: Path, argv: list[str], n_items: int, kill_at: int) -> None:
    """The SIGKILL fault: kill the job halfway, check OUT, rerun, check every output and the manifest."""
    n_at_kill = _kill_when(_launch(argv), out, kill_at)
    assert kill_at <= n_at_kill < n_items
    for rel in output_files(out):  # a kill leaves no half-written output
        assert read_image(out / rel).shape[:2] == read_image(src / rel).shape[:2]
    after_kill = stamps(out)
    done = _launch(argv)
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    summary = err.strip().splitlines()[-1]
    restored_now = int(summary.split(" restored now")[0].rsplit("(", 1)[1])
    assert restored_now == n_items - len(after_kill), summary  # nothing that was done is redone
    rs = assert_consistent(out, n_items)
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in rs.values())  # none written twice
    final = stamps(out)
    assert all(final[k] == v for k, v in after_kill.items())  # outputs present at the kill are untouched
    assert set(final) == {p.relative_to(src).as_posix() for p in src.rglob("*.png")}


def test_sigkill_halfway_then_rerun(tmp_path, tiny_dir):
    src, out = tmp_path / "src", tmp_path / "out"
    n = 120
    noise_images(src, n, size=(96, 80))
    argv = [str(src), str(out), "--model", f"local-dir:{tiny_dir}", "--faces", "off", "--device", "cpu",
            "--batch-size", "2", "-q"]
    kill_and_rerun(src, out, ["restore-batch", *argv], n, kill_at=15)


def test_sigterm_stops_cleanly(tmp_path, tiny_dir):
    """SIGTERM (a scheduler's stop) ends the job like Ctrl-C: exit 130, writes in flight committed, the run recorded as
    interrupted; a rerun finishes the rest."""
    src, out = tmp_path / "src", tmp_path / "out"
    n = 80
    noise_images(src, n, size=(96, 80))
    argv = ["restore-batch", str(src), str(out), "--model", f"local-dir:{tiny_dir}", "--faces", "off", "--device",
            "cpu", "-q"]
    proc = _launch(argv)
    t0 = time.monotonic()
    while len(output_files(out) if out.exists() else ()) < 8:
        assert proc.poll() is None and time.monotonic() - t0 < 120
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    rs = assert_consistent(out)
    assert 8 <= len(rs) < n and all(r["status"] == "done" for r in rs.values())
    with Manifest(out / MANIFEST_NAME) as m:
        assert m.runs()[-1]["interrupted"] == 1
    rerun = _launch(argv)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0 and f"{n - len(rs)} restored now, {len(rs)} already done" in err
    assert_consistent(out, n)
