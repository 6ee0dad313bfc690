"""ONNX export and the onnxruntime engine (facedeblur.restore.onnx); skipped without the onnx extra."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import facedeblur  # noqa: E402
from facedeblur.errors import CapabilityError  # noqa: E402
from facedeblur.models import get_arch, get_card  # noqa: E402
from facedeblur.models.layers import _deform_export, deform_conv2d_reference  # noqa: E402
from facedeblur.restore import Deblurrer  # noqa: E402
from facedeblur import export_onnx  # noqa: E402
from facedeblur.restore.onnx import OnnxError, read_onnx_card  # noqa: E402


def load_onnx(path):
    return facedeblur.load(f"onnx:{path}")


def test_exportable_deformable_conv_is_the_dcnv2_formula():
    g = torch.Generator().manual_seed(0)
    x, off = torch.rand(2, 4, 9, 11, generator=g), torch.randn(2, 18, 9, 11, generator=g) * 2
    m, w, b = torch.rand(2, 9, 9, 11, generator=g), torch.randn(5, 4, 3, 3, generator=g), torch.randn(5, generator=g)
    ref = deform_conv2d_reference(x, off, w, m, b)
    assert torch.allclose(_deform_export(x, off, w, m, b, 1, 1, 1).double(), ref, atol=1e-5)


@pytest.fixture(scope="module")
def shipped_onnx(tmp_path_factory):
    """The embedded default, exported once (the export itself checks parity at two sizes and batch sizes)."""
    path = tmp_path_factory.mktemp("onnx") / "cfmd-gan.onnx"
    return facedeblur.load("cfmd-gan", device="cpu"), export_onnx("cfmd-gan", path)


def test_shipped_model_matches_pytorch_on_real_and_random_inputs(shipped_onnx):
    d, path = shipped_onnx
    card, meta = read_onnx_card(path)
    assert card.name == d.card.name and card.source == "onnx" and meta["facedeblur.inputs"] == "image,u"
    assert float(meta["facedeblur.parity_max_abs"]) <= 1e-4
    o = load_onnx(path)
    from skimage.data import astronaut

    real = astronaut()[:200, 100:300]  # 200 x 200: padded to the multiple of 4 by restore
    rnd = (np.random.default_rng(0).random((2, 3, 36, 44))).astype(np.float32)
    for u in (0.0, 0.5, 1.0):
        ref = d.restore(real, u=u, faces=False)
        got = o.restore(real, u=u, faces=False)
        assert np.abs(ref.astype(int) - got.astype(int)).max() <= 1  # 8-bit rounding of a < 1e-4 difference
    x = torch.from_numpy(rnd)
    uu = torch.tensor([0.2, 0.9])
    with torch.no_grad():
        want = d.adapter(d.model, x, uu)
    got = o.adapter(o.model, x, uu)
    assert got.shape == want.shape and float((got - want).abs().max()) <= 1e-4
    # u is a graph input, not a constant: two u give two different outputs
    assert float((o.adapter(o.model, x, torch.tensor([0.0, 0.0])) - o.adapter(o.model, x, torch.tensor([1.0, 1.0])))
                 .abs().max()) > 1e-3


def test_onnx_deblurrer_refuses_other_devices_and_dtypes(shipped_onnx):
    _, path = shipped_onnx
    o = load_onnx(path)
    with pytest.raises(CapabilityError, match="float32 on the CPU"):
        o.model.to(torch.float16)


def test_export_refuses_existing_files_and_bad_names(shipped_onnx, tmp_path):
    d, path = shipped_onnx
    with pytest.raises(FileExistsError):
        export_onnx(d, path)
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_onnx(d, tmp_path / "model.bin")
    with pytest.raises(CapabilityError, match="already runs on ONNX Runtime"):
        export_onnx(load_onnx(path), tmp_path / "again.onnx")


def test_not_a_facedeblur_export_is_a_typed_error(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "plain.onnx"))
    with pytest.raises(OnnxError, match="no facedeblur model card"):
        read_onnx_card(tmp_path / "plain.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(OnnxError, match="not a readable ONNX file"):
        read_onnx_card(tmp_path / "junk.onnx")


def test_a_parity_failure_writes_nothing(tmp_path, monkeypatch):
    """A graph that disagrees with PyTorch (here: a session whose outputs are shifted by 1e-3) is refused."""
    import dataclasses

    from facedeblur.restore import onnx as onnx_mod

    card = get_card("cfmd-gan.lite")
    small = {**card.arch_kwargs, "width": 4, "num_res": 1}
    torch.manual_seed(0)
    d = Deblurrer(get_arch(card.architecture).builder(**small), dataclasses.replace(card, arch_kwargs=small), "cpu")
    real_session = onnx_mod._session

    class Shifted:
        def __init__(self, sess):
            self.sess = sess

        def run(self, names, feed):
            return [o + 1e-3 for o in self.sess.run(names, feed)]

    monkeypatch.setattr(onnx_mod, "_session", lambda *a, **k: Shifted(real_session(*a, **k)))
    with pytest.raises(OnnxError, match="differs from PyTorch by 0.001"):
        export_onnx(d, tmp_path / "tiny.onnx", example_size=16)
    assert not list(tmp_path.iterdir())
    monkeypatch.setattr(onnx_mod, "_session", real_session)
    assert export_onnx(d, tmp_path / "tiny.onnx", example_size=16).is_file()  # the same model, unshifted


def test_onnxruntime_engine_exports_once_and_restores_like_torch(tmp_path):
    from skimage.data import astronaut

    img = astronaut()[:128, 150:278]
    o = facedeblur.load("cfmd-gan", engine="onnxruntime", cache_dir=tmp_path)
    files = list((tmp_path / "onnx").glob("*.onnx"))
    assert len(files) == 1 and type(o.model).__name__ == "OnnxRuntimeModule"
    again = facedeblur.load("cfmd-gan", engine="onnxruntime", cache_dir=tmp_path)
    assert list((tmp_path / "onnx").glob("*.onnx")) == files and again.model.path == files[0]  # cached
    ref = facedeblur.load("cfmd-gan", device="cpu").restore(img, u=0.3, faces=False)
    assert np.abs(o.restore(img, u=0.3, faces=False).astype(int) - ref.astype(int)).max() <= 1
    with pytest.raises(CapabilityError, match="float32 on the CPU"):
        facedeblur.load("cfmd-gan", engine="onnxruntime", dtype="bfloat16", cache_dir=tmp_path)
    with pytest.raises(CapabilityError, match="engine must be one of"):
        facedeblur.load("cfmd-gan", engine="tensorrt")


def test_speed_benchmark_times_both_engines_and_reports_the_ratio(tmp_path):
    from facedeblur.benchmark import speed as S

    cfg = S.SpeedConfig(sizes=(32,), batches=(1,), warmup=0, repeats=2, isolate=False, peak_n=64,
                        engines=("torch", "onnxruntime"), thread_counts=(1, 2))
    doc = S.run_speed(["cfmd-gan"], cfg, tmp_path, progress=False)
    rows = doc["rows"]
    assert sorted((r["engine"], r["threads"]) for r in rows) == [("onnxruntime", 1), ("onnxruntime", 2),
                                                                 ("torch", 1), ("torch", 2)]
    assert all(r["status"] == "ok" for r in rows), [r.get("reason") for r in rows]
    ort_row = next(r for r in rows if r["engine"] == "onnxruntime")
    torch_row = next(r for r in rows if r["engine"] == "torch")
    assert ort_row["params"] == torch_row["params"] > 0 and ort_row["flops"] == torch_row["flops"] > 0
    ratios = S.engine_ratios(rows)
    assert len(ratios) == 2 and all(q["speedup"] == pytest.approx(q["torch_ms"] / q["onnxruntime_ms"]) for q in ratios)
    assert "speed-up = torch / onnxruntime" in (tmp_path / "speed.md").read_text()


def test_cli_exports_onnx_and_restores_with_it(tmp_path, capsys):
    from facedeblur.cli import main
    from facedeblur.restore import read_image, write_image
    from skimage.data import astronaut

    assert main(["export", "cfmd-gan", str(tmp_path / "exp"), "--format", "onnx"]) == 0
    path = tmp_path / "exp" / "cfmd-gan.lite.onnx"
    assert capsys.readouterr().out.strip().endswith("cfmd-gan.lite.onnx") and path.is_file()
    assert main(["export", "cfmd-gan", str(tmp_path / "exp"), "--format", "onnx", "--dtype", "float16"]) == 1
    write_image(tmp_path / "face.png", astronaut()[:96, 160:256])
    assert main(["restore", str(tmp_path / "face.png"), "-o", str(tmp_path / "out"), "--model", f"onnx:{path}",
                 "--faces", "off", "--u", "0.25", "-q"]) == 0
    got = read_image(tmp_path / "out" / "face.png")
    want = facedeblur.load("cfmd-gan", device="cpu").restore(read_image(tmp_path / "face.png"), u=0.25, faces=False)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


@pytest.mark.parametrize("name", ["cyclegan-srn.lite", "cyclegan-blur.lite"])
def test_weightless_architectures_export_with_dynamic_size(name, tmp_path):
    """Mechanics only (random init): the zoo's plain-conv architectures export through the same path, and the graph
    matches PyTorch within 1e-4 at a size and batch other than the export example."""
    import onnxruntime as ort

    from facedeblur.models import adapter_for
    from facedeblur.restore.onnx import export_graph

    torch.manual_seed(0)
    card = get_card(name)
    net = facedeblur.create_model(name, pretrained=False).eval()
    net = getattr(net, "net", net)
    path = export_graph(net, adapter_for(card), card, tmp_path / f"{name}.onnx", example_size=64)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 96, 128)
    with torch.inference_mode():
        ref = net(x)
    ref = ref[-1] if isinstance(ref, (list, tuple)) else ref
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == tuple(ref.shape)
    assert float(np.abs(got - ref.numpy()).max()) < 1e-4
