"""Weights layer without any Hub: safetensors reading, strict loading, resolution, local folders, export, push."""
from __future__ import annotations

import dataclasses
import json
import pathlib
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

import facedeblur
from facedeblur.errors import (ModelNotFoundError, WeightsIntegrityError, WeightsMismatchError,
                               WeightsNotAvailableError)
from facedeblur.models import get_card
from facedeblur.models._registry import WeightsSpec
from facedeblur.weights import (card_from_source, download, load_pretrained_into, load_state_dict_strict,
                                push_to_hub, read_state_dict, resolve_weights, save_pretrained, sha256_file)
from facedeblur.weights import hub as hubmod

from tinymodels import TINY, forward_probe, tiny_card, tiny_model  # noqa: E402


def _forward(model: torch.nn.Module) -> torch.Tensor:
    return forward_probe(model, 0.3)


@pytest.fixture
def tiny_file(tmp_path) -> pathlib.Path:
    path = tmp_path / "w.safetensors"
    save_file(tiny_model().state_dict(), str(path))
    return path


@pytest.fixture
def no_hub(monkeypatch):
    """Fail loudly if anything reaches huggingface_hub.hf_hub_download."""
    import huggingface_hub

    def boom(*a, **k):
        raise AssertionError("hf_hub_download must not be called here")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", boom)


# ----------------------------------------------------------------------------------------------- read_state_dict


def test_read_state_dict_round_trip_and_sha(tiny_file):
    sd = read_state_dict(tiny_file, sha256_file(tiny_file))
    ref = tiny_model().state_dict()
    assert sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in ref)


def test_read_state_dict_sha_mismatch(tiny_file):
    with pytest.raises(WeightsIntegrityError) as e:
        read_state_dict(tiny_file, "0" * 64)
    msg = str(e.value)
    assert str(tiny_file) in msg and "0" * 64 in msg and sha256_file(tiny_file) in msg and "delete" in msg


def test_read_state_dict_truncated_and_garbage(tiny_file, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(tiny_file.read_bytes()[:-100])
    with pytest.raises(WeightsIntegrityError, match="truncated or corrupt"):
        read_state_dict(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 5)
    with pytest.raises(WeightsIntegrityError):
        read_state_dict(junk)


def test_read_state_dict_refuses_pickles(tmp_path):
    pth = tmp_path / "model_best.pth"
    torch.save({"w": torch.zeros(1)}, pth)
    with pytest.raises(WeightsIntegrityError, match="import-official"):
        read_state_dict(pth)
    disguised = tmp_path / "model.safetensors"
    disguised.write_bytes(pth.read_bytes())
    with pytest.raises(WeightsIntegrityError, match="zip archive"):
        read_state_dict(disguised)
    with pytest.raises(WeightsIntegrityError, match="not a .safetensors"):
        (tmp_path / "w.npz").write_bytes(b"x")
        read_state_dict(tmp_path / "w.npz")


def test_read_state_dict_missing(tmp_path):
    with pytest.raises(WeightsNotAvailableError, match="does not exist"):
        read_state_dict(tmp_path / "nope.safetensors")


# ----------------------------------------------------------------------------------------------- strict loading


def test_strict_load_casts_dtype():
    src = tiny_model(seed=1)
    dst = tiny_model(seed=2)
    load_state_dict_strict(dst, {k: v.half() for k, v in src.state_dict().items()})
    for k, v in dst.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, src.state_dict()[k].half().float())


def test_strict_load_reports_depth_mismatch():
    dst = tiny_model()
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    other = tiny_model(num_res=2).state_dict()
    with pytest.raises(WeightsMismatchError) as e:
        load_state_dict_strict(dst, other, arch_kwargs=TINY)
    msg = str(e.value)
    assert "unexpected key(s)" in msg and "encoder.0.1.conv1.weight" in msg and "in all)" in msg
    assert "num_res" in msg and "'width': 4" in msg
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())  # nothing half-loaded


def test_strict_load_reports_width_mismatch_and_missing():
    dst = tiny_model()
    other = tiny_model(width=8).state_dict()
    del other["head.bias"]
    with pytest.raises(WeightsMismatchError) as e:
        load_state_dict_strict(dst, other)
    msg = str(e.value)
    assert "1 missing key(s): head.bias" in msg and "shape mismatch(es)" in msg
    assert "enc_heads.0.weight: file (8, 32, 1, 1) vs model (4, 32, 1, 1)" in msg
    assert "width" in msg


def test_strict_load_hints_dataparallel_prefix():
    dst = tiny_model()
    other = {"module." + k: v for k, v in dst.state_dict().items()}
    with pytest.raises(WeightsMismatchError, match="module."):
        load_state_dict_strict(dst, other)


# ----------------------------------------------------------------------------------------------- resolution


def test_resolve_explicit_file_and_folder(tiny_file, tmp_path, no_hub):
    card = tiny_card()
    assert resolve_weights(card, tiny_file) == tiny_file
    folder = tmp_path / "f"
    folder.mkdir()
    with pytest.raises(WeightsNotAvailableError, match="no model.safetensors"):
        resolve_weights(card, folder)
    (folder / "other.safetensors").write_bytes(tiny_file.read_bytes())
    with pytest.raises(WeightsNotAvailableError, match="other.safetensors"):
        resolve_weights(card, folder)
    (folder / "model.safetensors").write_bytes(tiny_file.read_bytes())
    assert resolve_weights(card, folder) == folder / "model.safetensors"
    with pytest.raises(WeightsNotAvailableError, match="no such file"):
        resolve_weights(card, tmp_path / "missing.safetensors")


def _without_weights(name: str):
    """A zoo card as it is before any weights are published (the state of a variant that is still training)."""
    return dataclasses.replace(get_card(name), weights=WeightsSpec())


def test_no_weights_message(no_hub):
    with pytest.raises(WeightsNotAvailableError) as e:
        resolve_weights(_without_weights("cfmd-gan.lite"))
    msg = str(e.value)
    assert "no trained weights are published" in msg and "weights=" in msg and "import-official" not in msg
    with pytest.raises(WeightsNotAvailableError, match="facedeblur import-official cfmd-gan model_best.pth"):
        resolve_weights(get_card("cfmd-gan.paper"))
    with pytest.raises(WeightsNotAvailableError, match="no trained weights"):
        facedeblur.create_model("cfmd-gan.paper", pretrained=True)


def test_embedded_precedes_hub_and_explicit_precedes_embedded(tiny_file, tmp_path, monkeypatch, no_hub):
    pkg = tmp_path / "pkg"
    (pkg / "embedded").mkdir(parents=True)
    (pkg / "embedded" / "tiny.safetensors").write_bytes(tiny_file.read_bytes())
    real_files = hubmod.resources.files
    monkeypatch.setattr(hubmod, "resources", SimpleNamespace(
        files=lambda name: pkg if name == "facedeblur.weights" else real_files(name)))
    card = dataclasses.replace(tiny_card(), weights=WeightsSpec(
        embedded="tiny.safetensors", hf_hub_id="org/never-used", revision="a" * 40, sha256=sha256_file(tiny_file)))
    assert resolve_weights(card) == pkg / "embedded" / "tiny.safetensors"
    model = tiny_model(seed=5)
    assert load_pretrained_into(model, card) == pkg / "embedded" / "tiny.safetensors"
    assert torch.equal(_forward(model), _forward(tiny_model(seed=0)))
    assert resolve_weights(card, weights=tiny_file) == tiny_file
    assert download(card, quiet=True) == pkg / "embedded" / "tiny.safetensors"
    bad = dataclasses.replace(card, weights=dataclasses.replace(card.weights, sha256="f" * 64))
    with pytest.raises(WeightsIntegrityError):
        load_pretrained_into(tiny_model(), bad)
    gone = dataclasses.replace(card, weights=dataclasses.replace(card.weights, embedded="gone.safetensors"))
    with pytest.raises(WeightsNotAvailableError, match="Reinstall facedeblur"):
        resolve_weights(gone)


def test_hub_card_without_revision_is_refused(no_hub):
    card = dataclasses.replace(tiny_card(), weights=WeightsSpec(hf_hub_id="org/repo"))
    with pytest.raises(WeightsNotAvailableError, match="pinned to a commit SHA"):
        resolve_weights(card)


def test_download_without_weights(no_hub):
    with pytest.raises(WeightsNotAvailableError, match="no trained weights"):
        download(_without_weights("cfmd-gan.lite"))


# ----------------------------------------------------------------------------------------------- save / local-dir


def test_local_dir_round_trip(tmp_path, no_hub):
    model = tiny_model(seed=3)
    out = save_pretrained(model, tiny_card(), tmp_path / "export")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["weights"]["sha256"] == sha256_file(out / "model.safetensors")
    assert cfg["weights"]["filename"] == "model.safetensors" and cfg["weights"]["embedded"] is None
    assert cfg["arch_kwargs"]["width"] == 4 and cfg["weights"]["dtype"] == "float32" and "source" not in cfg

    card = card_from_source("local-dir", str(out))
    assert card.source == "local-dir" and card.arch_kwargs["width"] == 4
    assert facedeblur.model_info(f"local-dir:{out}").name == "cfmd-gan.lite"
    loaded = facedeblur.create_model(f"local-dir:{out}", pretrained=True)
    assert torch.equal(_forward(loaded), _forward(model))
    # the same folder as explicit weights= is sha-checked through its config.json
    target = tiny_model(seed=9)
    assert load_pretrained_into(target, tiny_card(), weights=out) == out / "model.safetensors"
    assert torch.equal(_forward(target), _forward(model))


def test_save_fp16_and_load(tmp_path):
    model = tiny_model(seed=4)
    out = save_pretrained(model, tiny_card(), tmp_path / "half", dtype=torch.float16)
    assert json.loads((out / "config.json").read_text())["weights"]["dtype"] == "float16"
    assert all(v.dtype == torch.float16 for v in read_state_dict(out / "model.safetensors").values())
    loaded = facedeblur.create_model(f"local-dir:{out}", pretrained=True)
    assert next(loaded.parameters()).dtype == torch.float32
    assert torch.allclose(_forward(loaded), _forward(model), atol=2e-2)


def test_save_refuses_mismatched_card_and_nonempty_folder(tmp_path):
    model = tiny_model()
    with pytest.raises(WeightsMismatchError, match="shape mismatch"):
        save_pretrained(model, get_card("cfmd-gan.lite"), tmp_path / "a")  # card says width 16
    assert not (tmp_path / "a" / "model.safetensors").exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("user file")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_pretrained(model, tiny_card(), tmp_path / "b")
    save_pretrained(model, tiny_card(), tmp_path / "b", overwrite=True)
    assert (tmp_path / "b" / "keep.txt").read_text() == "user file"
    assert not [p for p in (tmp_path / "b").iterdir() if p.name.endswith(".tmp")]


def test_tampered_local_folder_is_detected(tmp_path):
    out = save_pretrained(tiny_model(), tiny_card(), tmp_path / "t")
    other = tmp_path / "o.safetensors"
    save_file(tiny_model(seed=7).state_dict(), str(other))
    (out / "model.safetensors").write_bytes(other.read_bytes())
    with pytest.raises(WeightsIntegrityError, match="sha256 mismatch"):
        facedeblur.create_model(f"local-dir:{out}", pretrained=True)
    with pytest.raises(WeightsIntegrityError, match="sha256 mismatch"):
        load_pretrained_into(tiny_model(), tiny_card(), weights=out)


def test_explicit_folder_of_other_variant_says_so(tmp_path):
    out = save_pretrained(tiny_model(num_res=2), tiny_card(num_res=2), tmp_path / "n2")
    with pytest.raises(WeightsMismatchError, match=r"local-dir:"):
        load_pretrained_into(tiny_model(), tiny_card(), weights=out)


def test_model_card_readme(tmp_path):
    card = dataclasses.replace(tiny_card(), metrics={"300VW-blur": {"psnr": 27.123456, "ssim": 0.8312},
                                                     "MSPL": {"psnr": 25.5}})
    out = save_pretrained(tiny_model(), card, tmp_path / "r", repo_id="someone/cfmd-tiny")
    text = (out / "README.md").read_text()
    front = text.split("---\n")[1]
    assert "license: other" in front and "library_name: facedeblur" in front and '- "arxiv:2207.06626"' in front
    assert 'facedeblur.load("hf-hub:someone/cfmd-tiny@REVISION")' in text
    assert "| benchmark | psnr | ssim |" in text and "| 300VW-blur | 27.12 | 0.8312 |" in text
    assert "| MSPL | 25.5 |  |" in text
    assert "Continuous Facial Motion Deblurring" in text and "## Input contract" in text


def test_local_dir_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a folder"):
        card_from_source("local-dir", str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        facedeblur.model_info(f"local-dir:{tmp_path / 'empty'}")
    out = save_pretrained(tiny_model(), tiny_card(), tmp_path / "x")
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "architecture": "nonexistent_arch"}))
    with pytest.raises(ModelNotFoundError, match="nonexistent_arch.*upgrade facedeblur"):
        card_from_source("local-dir", str(out))
    (out / "config.json").write_text(json.dumps({**cfg, "bogus": 1}))
    with pytest.raises(ModelNotFoundError, match="bogus"):
        card_from_source("local-dir", str(out))
    (out / "config.json").write_text("{not json")
    with pytest.raises(WeightsIntegrityError, match="not readable JSON"):
        card_from_source("local-dir", str(out))
    (out / "config.json").write_text(json.dumps(cfg))
    (out / "model.safetensors").unlink()
    with pytest.raises(WeightsNotAvailableError, match="no model.safetensors"):
        facedeblur.create_model(f"local-dir:{out}", pretrained=True)


def test_hub_name_errors(no_hub):
    with pytest.raises(ModelNotFoundError, match="nothing after '@'"):
        facedeblur.model_info("hf-hub:org/repo@")
    with pytest.raises(ModelNotFoundError, match="ORG/REPO"):
        facedeblur.model_info("hf-hub:just-a-name")


# ----------------------------------------------------------------------------------------------- push_to_hub


class FakeApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, **kw):
        self.calls.append(("create_repo", kw))

    def create_branch(self, **kw):
        self.calls.append(("create_branch", kw))

    def upload_folder(self, **kw):
        files = sorted(p.name for p in pathlib.Path(kw["folder_path"]).iterdir()
                       if any(p.match(pat) for pat in kw["allow_patterns"]))
        self.calls.append(("upload_folder", {**kw, "files": files}))
        return SimpleNamespace(oid="c0ffee" + "0" * 34, commit_url="http://example.invalid/commit")


def test_push_to_hub_with_mocked_api(tmp_path, capsys):
    out = save_pretrained(tiny_model(), tiny_card(), tmp_path / "push")
    (out / "notes.txt").write_text("not uploaded")
    api = FakeApi()
    sha = push_to_hub(out, "someone/cfmd-tiny", revision="v1", private=True, api=api)
    assert sha == "c0ffee" + "0" * 34
    names = [c[0] for c in api.calls]
    assert names == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][1]["repo_id"] == "someone/cfmd-tiny" and api.calls[0][1]["private"] is True
    assert api.calls[0][1]["exist_ok"] is True and api.calls[1][1]["branch"] == "v1"
    upload = api.calls[2][1]
    assert upload["files"] == ["README.md", "config.json", "model.safetensors"] and upload["revision"] == "v1"
    err = capsys.readouterr().err
    assert f"revision: {sha}" in err and "hf_hub_id: someone/cfmd-tiny" in err
    assert "zoo_configs/cfmd-gan.lite.yaml" in err


def test_push_to_hub_checks_folder_first(tmp_path):
    out = save_pretrained(tiny_model(), tiny_card(), tmp_path / "p")
    save_file(tiny_model(seed=8).state_dict(), str(out / "model.safetensors"))
    api = FakeApi()
    with pytest.raises(WeightsIntegrityError, match="modified after export"):
        push_to_hub(out, "someone/x", api=api)
    (out / "README.md").unlink()
    with pytest.raises(WeightsNotAvailableError, match="README.md"):
        push_to_hub(out, "someone/x", api=api)
    assert api.calls == []
