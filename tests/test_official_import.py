"""The CFMD-GAN official-checkpoint importer and its restricted (no torch.load) reader.

The fake official checkpoint is built from the official module's names and shapes (CMD_MIMOUNet in
scripts/model/mimo_conada.py of dolphin0104/CFMDGAN: base width 32, num_res 8), independently of our
key mapping, so a wrong mapping or a wrong shape in either model fails here.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys
import zipfile
from collections import OrderedDict

import pytest
import torch

import facedeblur
from facedeblur.errors import WeightsIntegrityError, WeightsMismatchError
from facedeblur.weights import read_state_dict
from facedeblur.weights.official import (OFFICIAL_LICENSE, UnsafeCheckpointError, import_cfmd_gan_official,
                                         read_torch_zip_checkpoint)

PAPER_PARAMS = 9_246_323  # measured on the released generator (REFERENCE_FACTS §1.5)


def _official_shapes(base: int = 32, num_res: int = 8) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official generator's state dict, written from its module definitions."""
    s: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cout: int, cin: int, k: int, bias: bool = True) -> None:
        s[f"{name}.weight"] = (cout, cin, k, k)
        if bias:
            s[f"{name}.bias"] = (cout,)

    for i in range(8):
        conv(f"mapping_net.shared.{i}.layer.0", base, 1 if i == 0 else base, 1)
    for lvl in range(3):
        conv(f"mapping_net.enc_unshared.{lvl}.layer.0", base * 2 ** lvl, base, 1)
        conv(f"mapping_net.dec_unshared.{lvl}.layer.0", base * 2 ** (2 - lvl), base, 1)
    for group, widths in (("Encoder", (1, 2, 4)), ("Decoder", (4, 2, 1))):
        for i, mult in enumerate(widths):
            c = base * mult
            for b in range(num_res):
                p = f"{group}.{i}.layers.{b}"
                conv(f"{p}.conv1.main.0", c, c, 3)
                conv(f"{p}.conv2.conv", c, 2 * c, 1, bias=False)
                conv(f"{p}.conv2.offset_conv", 18, c, 3)
                conv(f"{p}.conv2.modulator_conv", 9, c, 3)
                conv(f"{p}.conv2.regular_conv", c, c, 3, bias=False)
                conv(f"{p}.ch_att.conv", c, 2 * c, 1, bias=False)
                conv(f"{p}.ch_att.conv_du.0", c // 4, c, 1, bias=False)
                conv(f"{p}.ch_att.conv_du.2", c, c // 4, 1, bias=False)
    c1, c2, c4 = base, 2 * base, 4 * base
    conv("feat_extract.0.main.0", c1, 3, 3)
    conv("feat_extract.1.main.0", c2, c1, 3)
    conv("feat_extract.2.main.0", c4, c2, 3)
    s["feat_extract.3.main.0.weight"], s["feat_extract.3.main.0.bias"] = (c4, c2, 4, 4), (c2,)  # ConvTranspose2d
    s["feat_extract.4.main.0.weight"], s["feat_extract.4.main.0.bias"] = (c2, c1, 4, 4), (c1,)
    conv("feat_extract.5.main.0", 3, c1, 3)
    conv("Convs.0.main.0", c2, c4, 1)
    conv("Convs.1.main.0", c1, c2, 1)
    conv("ConvsOut.0.main.0", 3, c4, 3)
    conv("ConvsOut.1.main.0", 3, c2, 3)
    for i, cout in enumerate((c1, c2)):
        conv(f"AFFs.{i}.conv.0.main.0", cout, 7 * base, 1)
        conv(f"AFFs.{i}.conv.1.main.0", cout, cout, 3)
    conv("FAM1.merge.main.0", c4, c4, 3)
    conv("FAM2.merge.main.0", c2, c2, 3)
    for name, p in (("SCM1", c4), ("SCM2", c2)):
        conv(f"{name}.main.0.main.0", p // 4, 3, 3)
        conv(f"{name}.main.1.main.0", p // 2, p // 4, 1)
        conv(f"{name}.main.2.main.0", p // 2, p // 2, 3)
        conv(f"{name}.main.3.main.0", p - 3, p // 2, 1)
        conv(f"{name}.conv.main.0", p, p, 1)
    return s


@pytest.fixture(scope="module")
def official_sd() -> OrderedDict:
    g = torch.Generator().manual_seed(0)
    return OrderedDict((k, torch.randn(shape, generator=g)) for k, shape in _official_shapes().items())


@pytest.fixture(scope="module")
def official_pth(tmp_path_factory, official_sd) -> pathlib.Path:
    """The way a DataParallel training script saves: wrapped, 'module.'-prefixed, with extra entries."""
    path = tmp_path_factory.mktemp("official") / "model_best.pth"
    prefixed = OrderedDict(("module." + k, v) for k, v in official_sd.items())
    wrapped = {"epoch": 187, "best_psnr": 30.5, "model": prefixed}
    torch.save(wrapped, path)
    return path


def test_fake_official_matches_published_parameter_count(official_sd):
    assert sum(v.numel() for v in official_sd.values()) == PAPER_PARAMS


def test_import_maps_every_parameter(official_pth, official_sd, tmp_path):
    out = import_cfmd_gan_official(official_pth, tmp_path / "cfmd-official")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arch_kwargs"]["mask_scale"] == 2.0
    assert cfg["license"] == OFFICIAL_LICENSE and "no licence stated" in cfg["license"]
    conv = cfg["training"]["converted_from"]
    assert conv["file"] == "model_best.pth" and conv["state_dict_key"] == "'model'"
    assert conv["stripped_prefixes"] == ["module."] and len(conv["sha256"]) == 64

    ours = read_state_dict(out / "model.safetensors", cfg["weights"]["sha256"])
    assert sum(v.numel() for v in ours.values()) == PAPER_PARAMS
    assert len(ours) == len(official_sd)
    # spot checks across every renaming rule (values must be the official tensors, not just shapes)
    pairs = {
        "mapping_net.shared.0.layer.0.weight": "mapping.trunk.0.weight",
        "mapping_net.enc_unshared.2.layer.0.bias": "mapping.enc_heads.2.bias",
        "mapping_net.dec_unshared.0.layer.0.weight": "mapping.dec_heads.2.weight",
        "mapping_net.dec_unshared.2.layer.0.weight": "mapping.dec_heads.0.weight",
        "feat_extract.3.main.0.weight": "up2.weight",
        "feat_extract.5.main.0.bias": "head.bias",
        "Encoder.1.layers.7.conv1.main.0.weight": "encoder.1.7.conv1.weight",
        "Encoder.0.layers.3.conv2.conv.weight": "encoder.0.3.cadc.fuse.weight",
        "Encoder.2.layers.0.conv2.offset_conv.bias": "encoder.2.0.cadc.offset.bias",
        "Encoder.2.layers.5.conv2.modulator_conv.weight": "encoder.2.5.cadc.mask.weight",
        "Encoder.0.layers.0.conv2.regular_conv.weight": "encoder.0.0.cadc.deform.weight",
        "Decoder.0.layers.2.ch_att.conv.weight": "decoder.2.2.caca.fuse.weight",
        "Decoder.2.layers.6.ch_att.conv_du.0.weight": "decoder.0.6.caca.se.reduce.weight",
        "Decoder.1.layers.1.ch_att.conv_du.2.weight": "decoder.1.1.caca.se.expand.weight",
        "Convs.0.main.0.weight": "fuse2.weight", "Convs.1.main.0.bias": "fuse1.bias",
        "ConvsOut.0.main.0.weight": "out4.weight", "ConvsOut.1.main.0.weight": "out2.weight",
        "AFFs.0.conv.0.main.0.weight": "aff1.reduce.weight", "AFFs.1.conv.1.main.0.bias": "aff2.conv.bias",
        "FAM1.merge.main.0.weight": "fam4.merge.weight", "FAM2.merge.main.0.bias": "fam2.merge.bias",
        "SCM1.main.3.main.0.weight": "scm4.body.3.weight", "SCM2.conv.main.0.weight": "scm2.merge.weight",
    }
    for off, mine in pairs.items():
        assert torch.equal(ours[mine], official_sd[off]), (off, mine)
    # every official tensor landed somewhere, exactly once
    official_bytes = sorted(hash(v.numpy().tobytes()) for v in official_sd.values())
    assert sorted(hash(v.numpy().tobytes()) for v in ours.values()) == official_bytes

    model = facedeblur.create_model(f"local-dir:{out}", pretrained=True)
    assert model.encoder[0][0].cadc.mask_scale == 2.0
    assert torch.equal(model.mapping.dec_heads[2].weight, official_sd["mapping_net.dec_unshared.0.layer.0.weight"])
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMS
    readme = (out / "README.md").read_text()
    assert "no licence stated" in readme and "dolphin0104/CFMDGAN" in readme


def _save(tmp_path: pathlib.Path, sd: dict, name: str = "model_best.pth") -> pathlib.Path:
    path = tmp_path / name
    torch.save(sd, path)
    return path


def test_renamed_key_is_an_error(official_sd, tmp_path):
    sd = OrderedDict(official_sd)
    sd["Encoder.0.layers.0.conv2.modulator.weight"] = sd.pop("Encoder.0.layers.0.conv2.modulator_conv.weight")
    with pytest.raises(WeightsMismatchError, match=r"conv2\.modulator\.weight"):
        import_cfmd_gan_official(_save(tmp_path, sd), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extra_key_is_an_error(official_sd, tmp_path):
    sd = OrderedDict(official_sd)
    sd["SCM1.extra.weight"] = torch.zeros(3)
    with pytest.raises(WeightsMismatchError, match=r"1 key\(s\) with no counterpart.*SCM1\.extra\.weight"):
        import_cfmd_gan_official(_save(tmp_path, sd), tmp_path / "out")


def test_missing_key_is_an_error(official_sd, tmp_path):
    sd = OrderedDict(official_sd)
    del sd["Decoder.0.layers.4.conv2.offset_conv.bias"]
    with pytest.raises(WeightsMismatchError, match=r"1 missing key\(s\): decoder\.2\.4\.cadc\.offset\.bias"):
        import_cfmd_gan_official(_save(tmp_path, sd), tmp_path / "out")


def test_wrong_shape_is_an_error(official_sd, tmp_path):
    sd = OrderedDict(official_sd)
    sd["AFFs.1.conv.0.main.0.weight"] = torch.zeros(64, 200, 1, 1)
    with pytest.raises(WeightsMismatchError, match=r"aff2\.reduce\.weight: file \(64, 200, 1, 1\)"):
        import_cfmd_gan_official(_save(tmp_path, sd), tmp_path / "out")


def test_variant_with_other_width_is_refused(official_pth, tmp_path):
    with pytest.raises(WeightsMismatchError, match="width 32 with 8 ContAda.*cfmd-gan.lite"):
        import_cfmd_gan_official(official_pth, tmp_path / "out", variant="cfmd-gan.lite")


def test_not_a_generator_checkpoint(tmp_path):
    path = _save(tmp_path, {"D": OrderedDict(conv=torch.zeros(2))})
    with pytest.raises(WeightsMismatchError, match="no CFMD-GAN generator state dict"):
        import_cfmd_gan_official(path, tmp_path / "out")


# ----------------------------------------------------------------------------------------------- reader


class _Evil:
    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_reader_refuses_foreign_globals_without_running_them(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": OrderedDict(w=torch.zeros(2)), "payload": _Evil(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|os|nt)\.system.*Nothing from the file was executed"):
        read_torch_zip_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError):
        import_cfmd_gan_official(path, tmp_path / "out")
    assert not marker.exists()


def test_reader_round_trips_tensors(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd = OrderedDict(
        view=base[:, 1:4],  # non-contiguous view into a shared storage
        full=base,
        half=torch.randn(3, 5).half(),
        bf16=torch.randn(2, 2).bfloat16(),
        idx=torch.arange(7),
        flag=torch.tensor([True, False]),
        param=torch.nn.Parameter(torch.ones(2, 3)),
        scalar=torch.tensor(3.5, dtype=torch.float64),
        empty=torch.zeros(0, 3),
    )
    path = _save(tmp_path, {"state_dict": sd, "epoch": 3, "args": {"lr": 1e-4, "name": b"bytes"}})
    got = read_torch_zip_checkpoint(path)
    assert got["epoch"] == 3 and got["args"] == {"lr": 1e-4, "name": b"bytes"}
    for k, v in sd.items():
        assert got["state_dict"][k].dtype == v.dtype and torch.equal(got["state_dict"][k], v.detach()), k
    assert type(got["state_dict"]["param"]) is torch.Tensor


def test_reader_big_endian_records(tmp_path):
    sd = OrderedDict(a=torch.randn(3, 4), b=torch.arange(5), c=torch.randn(2).half())
    little = _save(tmp_path, sd, "little.pth")
    big = tmp_path / "big.pth"
    with zipfile.ZipFile(little) as zin, zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as zout:
        pkl = next(n for n in zin.namelist() if n.endswith("/data.pkl"))
        prefix = pkl[: -len("data.pkl")]
        sizes = {}
        got = read_torch_zip_checkpoint(little)  # map storage keys to item sizes via the little-endian file
        assert all(torch.equal(got[k], v) for k, v in sd.items())
        for i, k in enumerate(sd):  # torch.save numbers storages in first-use order
            sizes[f"{prefix}data/{i}"] = sd[k].element_size()
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == prefix + "byteorder":
                data = b"big"
            elif info.filename in sizes:
                n = sizes[info.filename]
                data = b"".join(data[j:j + n][::-1] for j in range(0, len(data), n))
            zout.writestr(info.filename, data)
    got = read_torch_zip_checkpoint(big)
    for k, v in sd.items():
        assert torch.equal(got[k], v), k
    assert sys.byteorder == "little"  # otherwise this test proves the reverse direction


def test_reader_rejects_legacy_and_truncated_files(tmp_path):
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsIntegrityError, match="legacy"):
        read_torch_zip_checkpoint(legacy)
    good = _save(tmp_path, {"w": torch.randn(64, 64)}, "good.pth")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsIntegrityError):
        read_torch_zip_checkpoint(cut)
    corrupt = tmp_path / "corrupt.pth"
    data = bytearray(good.read_bytes())
    start = data.find(b"data/0") + 200  # inside the tensor record: the CRC check must catch it
    data[start:start + 16] = bytes(16)
    corrupt.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match="truncated or corrupt"):
        read_torch_zip_checkpoint(corrupt)


def test_importer_registry_drives_the_cli(official_pth, tmp_path, capsys, monkeypatch):
    """Importers are registered per method; `facedeblur import-official` offers exactly the registered ones and
    calls the registered converter with its default variant."""
    from facedeblur.cli import main
    from facedeblur.errors import WeightsNotAvailableError
    from facedeblur.weights import official

    assert official.list_importers() == ["cfmd-gan"]
    imp = official.get_importer("cfmd-gan")
    assert imp.convert is import_cfmd_gan_official and imp.architecture == "cfmd_gan"
    assert imp.default_variant == "cfmd-gan.paper" and imp.source == official.OFFICIAL_REPO
    with pytest.raises(WeightsNotAvailableError, match="importable: cfmd-gan"):
        official.get_importer("dfpgnet")
    with pytest.raises(ValueError, match="registered twice"):
        official.register_importer("cfmd-gan", architecture="cfmd_gan", default_variant="x")(lambda *a, **k: None)
    calls = []

    def fake(pth, out_dir, variant="toy.base", *, overwrite=False):
        calls.append((pth, out_dir, variant, overwrite))
        return pathlib.Path(out_dir)

    monkeypatch.setattr(official, "_IMPORTERS", dict(official._IMPORTERS))  # the real registry stays as it is
    official.register_importer("toy", architecture="toy_arch", default_variant="toy.base")(fake)
    assert official.list_importers() == ["cfmd-gan", "toy"]
    assert main(["import-official", "toy", "x.pth", str(tmp_path / "o"), "--overwrite"]) == 0
    assert calls == [("x.pth", str(tmp_path / "o"), "toy.base", True)]
    with pytest.raises(SystemExit):
        main(["import-official", "--help"])
    assert "cfmd-gan, toy" in capsys.readouterr().out
    assert main(["import-official", "cfmd-gan", str(official_pth), str(tmp_path / "real")]) == 0
    assert (tmp_path / "real" / "config.json").is_file()
