"""``restore-batch --engine ray`` on a local Ray cluster that this module starts (2 CPUs) and stops: the same
outputs and manifest as the local engine, and the driver-kill fault. Skipped without the ``ray`` extra."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from facedeblur.batch import restore_many  # noqa: E402
from facedeblur.restore import read_image  # noqa: E402

from test_batch import assert_consistent, astronaut_photos, kill_and_rerun, noise_images, rows, tiny_dir  # noqa: E402,F401

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own, on its context

COMPARED = ("status", "kind", "input_sha1", "input_bytes", "width", "height", "model", "weights_sha256", "u", "mode",
            "model_key", "output", "output_bytes", "faces", "error_type", "error", "attempts")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with 2 CPUs for this module; its address for drivers in other processes."""
    if ray.is_initialized():
        pytest.skip("a Ray cluster is already connected in this process")
    ray.init(num_cpus=2, object_store_memory=150 * 1024 ** 2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def test_ray_gives_the_local_outputs_and_manifest(tmp_path, tiny_dir, cluster):
    src = tmp_path / "src"
    noise_images(src, 5)
    astronaut_photos(src / "photos", 1)
    (src / "corrupt.png").write_bytes(b"junk")
    model = f"local-dir:{tiny_dir}"
    local = restore_many(src, tmp_path / "local", model, device="cpu", batch_size=3, progress=False)
    remote = restore_many(src, tmp_path / "ray", model, engine="ray", batch_size=3, progress=False, actors=2)
    for r in (local, remote):
        assert (r.items, r.restored, r.failed, r.faces) == (7, 6, 1, 6)
    rl, rr = assert_consistent(tmp_path / "local", 7), assert_consistent(tmp_path / "ray", 7)
    assert {k: {c: v[c] for c in COMPARED} for k, v in rl.items()} == \
           {k: {c: v[c] for c in COMPARED} for k, v in rr.items()}
    for rel, row in rl.items():
        if row["status"] == "done":
            a, b = read_image(tmp_path / "local" / rel), read_image(tmp_path / "ray" / rel)
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 1, rel

    again = restore_many(src, tmp_path / "ray", model, engine="ray", batch_size=3, progress=False)
    assert (again.restored, again.skipped, again.failed) == (0, 6, 1)  # the local engine's resume rules
    Image.fromarray(np.full((32, 40, 3), 9, np.uint8)).save(src / "img000.png")
    shutil.rmtree(tmp_path / "local")
    again = restore_many(src, tmp_path / "ray", model, engine="ray", batch_size=3, progress=False, u=0.5)
    assert (again.restored, again.skipped) == (1, 5)
    assert rows(tmp_path / "ray")["img000.png"]["attempts"] == 2


@pytest.mark.slow
def test_ray_driver_killed_then_rerun(tmp_path, tiny_dir, cluster):
    src, out = tmp_path / "src", tmp_path / "out"
    n = 60
    noise_images(src, n, size=(96, 80))
    argv = ["restore-batch", str(src), str(out), "--model", f"local-dir:{tiny_dir}", "--faces", "off", "--batch-size",
            "2", "-q", "--engine", "ray", "--ray-address", cluster, "--actors", "2"]
    kill_and_rerun(src, out, argv, n, kill_at=6)
