"""Hugging Face Hub paths without network (PEERS.md §2.6 / Appendix C).

(1) a hand-built Hub cache with HF_HUB_OFFLINE=1; (2) a loopback fake Hub (tests/fakehub.py) reached
through HF_ENDPOINT. facedeblur reads HF_HUB_OFFLINE / HF_ENDPOINT / HF_HUB_CACHE at call time, so the
in-process tests set them with monkeypatch; ``test_env_set_before_import_subprocess`` checks the
import-time route (fresh interpreter, variables set before huggingface_hub is imported).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save as save_bytes
from safetensors.torch import save_file

import facedeblur
from facedeblur.errors import (ModelNotFoundError, WeightsIntegrityError, WeightsMismatchError,
                               WeightsNotAvailableError)
from facedeblur.models._registry import WeightsSpec
from facedeblur.weights import (card_from_source, download, load_pretrained_into, resolve_weights,
                                save_pretrained)

from fakehub import FakeHub

from tinymodels import forward_probe, tiny_card, tiny_model  # noqa: E402

REPO = "facedeblur-test/cfmd-tiny"


def _forward(model: torch.nn.Module) -> torch.Tensor:
    return forward_probe(model, 0.7)


def hub_card(repo: str, revision: str, sha256: str | None) -> "facedeblur.ModelCard":
    """A zoo-style card whose weights live on the Hub at a pinned revision."""
    return dataclasses.replace(tiny_card(), weights=WeightsSpec(hf_hub_id=repo, revision=revision, sha256=sha256))


def export_files(tmp_path: pathlib.Path, seed: int, name: str) -> dict[str, bytes]:
    out = save_pretrained(tiny_model(seed), tiny_card(), tmp_path / name)
    return {f: (out / f).read_bytes() for f in ("config.json", "model.safetensors", "README.md")}


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------- (1) offline cache


def build_cache(cache: pathlib.Path, repo: str, commit: str, files: dict[str, bytes]) -> pathlib.Path:
    """models--org--name/{blobs,snapshots/<sha>,refs/main} with plain files (no symlinks needed)."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    (root / "blobs").mkdir()
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    for name, data in files.items():
        (snap / name).write_bytes(data)
    return snap


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    files = export_files(tmp_path, seed=11, name="exp")
    cache = tmp_path / "hub-cache"
    commit = "1a2b3c4d" * 5
    snap = build_cache(cache, REPO, commit, files)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache, commit, snap, files


def test_offline_cache_loads(offline_cache, tmp_path):
    cache, commit, snap, files = offline_cache
    card = facedeblur.model_info(f"hf-hub:{REPO}")
    assert card.source == "hf-hub" and card.weights.hf_hub_id == REPO
    assert card.weights.revision == commit  # pinned from refs/main through the snapshot path
    assert card.weights.sha256 == _sha(files["model.safetensors"])
    model = facedeblur.create_model(f"hf-hub:{REPO}@{commit}", pretrained=True)
    assert torch.equal(_forward(model), _forward(tiny_model(11)))
    # a zoo card pinned to the commit, cache passed explicitly
    zoo = hub_card(REPO, commit, _sha(files["model.safetensors"]))
    assert resolve_weights(zoo, cache_dir=cache) == snap / "model.safetensors"
    assert download(zoo, quiet=True) == snap / "model.safetensors"


def test_offline_cache_dir_argument(offline_cache, tmp_path, monkeypatch):
    cache, commit, snap, _ = offline_cache
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-home"))  # the default cache is now empty
    card = card_from_source("hf-hub", f"{REPO}@{commit}", cache_dir=cache)
    assert card.weights.revision == commit
    assert resolve_weights(card, cache_dir=cache) == snap / "model.safetensors"
    with pytest.raises(WeightsNotAvailableError, match="empty-home"):
        resolve_weights(card)


def test_offline_not_cached_is_a_clear_error(offline_cache):
    cache, commit, _, _ = offline_cache
    card = hub_card("facedeblur-test/not-cached", commit, None)
    with pytest.raises(WeightsNotAvailableError) as e:
        load_pretrained_into(tiny_model(), dataclasses.replace(card, name="cfmd-gan.lite"))
    msg = str(e.value)
    for part in ("facedeblur-test/not-cached", "model.safetensors", commit, "HF_HUB_OFFLINE", "HF_ENDPOINT",
                 "weights=", "facedeblur download cfmd-gan.lite", str(cache)):
        assert part in msg, part
    with pytest.raises(WeightsNotAvailableError, match="HF_HUB_OFFLINE"):
        facedeblur.model_info("hf-hub:facedeblur-test/not-cached")
    other_rev = hub_card(REPO, "f" * 40, None)  # repo cached, but not at this revision
    with pytest.raises(WeightsNotAvailableError, match="f{40}"):
        resolve_weights(other_rev)


# ----------------------------------------------------------------------------------------------- (2) fake Hub


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    hub = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # in case the suite runs under HF_HUB_OFFLINE=1
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "dl-cache"))
    yield hub
    hub.stop()


def test_download_at_pinned_revision(fake_hub, tmp_path):
    old = export_files(tmp_path, seed=1, name="old")
    new = export_files(tmp_path, seed=2, name="new")
    old_sha = fake_hub.add_commit(REPO, old)
    new_sha = fake_hub.add_commit(REPO, new)  # main now points here
    assert old_sha != new_sha

    card = hub_card(REPO, old_sha, _sha(old["model.safetensors"]))
    model = tiny_model(seed=99)
    path = load_pretrained_into(model, card)
    assert path.parent.name == old_sha and torch.equal(_forward(model), _forward(tiny_model(1)))
    assert ("GET", f"/{REPO}/resolve/{old_sha}/model.safetensors") in fake_hub.requests
    n = len(fake_hub.requests)
    load_pretrained_into(tiny_model(), card)  # pinned + cached: no request at all
    assert len(fake_hub.requests) == n

    latest = facedeblur.create_model(f"hf-hub:{REPO}", pretrained=True)
    assert facedeblur.model_info(f"hf-hub:{REPO}").weights.revision == new_sha
    assert torch.equal(_forward(latest), _forward(tiny_model(2)))
    pinned = facedeblur.create_model(f"hf-hub:{REPO}@{old_sha}", pretrained=True)
    assert torch.equal(_forward(pinned), _forward(tiny_model(1)))
    assert download(card, quiet=True) == path


def test_revision_that_does_not_exist(fake_hub, tmp_path):
    fake_hub.add_commit(REPO, export_files(tmp_path, seed=1, name="e"))
    with pytest.raises(WeightsNotAvailableError, match=r"revision '0{40}' does not exist"):
        resolve_weights(hub_card(REPO, "0" * 40, None))
    with pytest.raises(ModelNotFoundError, match="revision 'v9' does not exist"):
        facedeblur.model_info(f"hf-hub:{REPO}@v9")


def test_repo_that_does_not_exist(fake_hub):
    with pytest.raises(ModelNotFoundError, match="'facedeblur-test/nothing-here' does not exist"):
        facedeblur.create_model("hf-hub:facedeblur-test/nothing-here", pretrained=True)
    with pytest.raises(WeightsNotAvailableError, match="does not exist"):
        resolve_weights(hub_card("facedeblur-test/nothing-here", "a" * 40, None))


def test_repo_without_config(fake_hub, tmp_path):
    files = export_files(tmp_path, seed=1, name="nc")
    del files["config.json"]
    fake_hub.add_commit("facedeblur-test/no-config", files)
    with pytest.raises(ModelNotFoundError, match="'config.json'.*no such file"):
        facedeblur.model_info("hf-hub:facedeblur-test/no-config")


def test_sha256_mismatch(fake_hub, tmp_path):
    files = export_files(tmp_path, seed=1, name="m")
    expected = _sha(export_files(tmp_path, seed=2, name="m2")["model.safetensors"])  # the card expects other bytes
    sha = fake_hub.add_commit(REPO, files)
    with pytest.raises(WeightsIntegrityError) as e:
        load_pretrained_into(tiny_model(), hub_card(REPO, sha, expected))
    msg = str(e.value)
    assert expected in msg and _sha(files["model.safetensors"]) in msg and "delete" in msg
    assert "dl-cache" in msg  # names the cached file to delete


def test_truncated_file(fake_hub, tmp_path):
    files = export_files(tmp_path, seed=1, name="t")
    good = files["model.safetensors"]
    files["model.safetensors"] = good[: len(good) - 256]
    sha = fake_hub.add_commit(REPO, files)
    with pytest.raises(WeightsIntegrityError, match="truncated or corrupt"):
        load_pretrained_into(tiny_model(), hub_card(REPO, sha, None))
    with pytest.raises(WeightsIntegrityError, match="sha256 mismatch"):
        load_pretrained_into(tiny_model(), hub_card(REPO, sha, _sha(good)))
    # a Hub folder whose config.json records the untruncated file's sha256
    with pytest.raises(WeightsIntegrityError, match="sha256 mismatch"):
        facedeblur.create_model(f"hf-hub:{REPO}@{sha}", pretrained=True)


def test_keys_and_shapes_that_do_not_fit(fake_hub, tmp_path):
    wide = save_bytes(tiny_model(width=8).state_dict())
    sha = fake_hub.add_commit(REPO, {"model.safetensors": wide})
    with pytest.raises(WeightsMismatchError, match=r"(?s)shape mismatch\(es\).*different channel widths"):
        load_pretrained_into(tiny_model(), hub_card(REPO, sha, _sha(wide)))
    deep = save_bytes(tiny_model(num_res=2).state_dict())
    sha = fake_hub.add_commit(REPO, {"model.safetensors": deep})
    with pytest.raises(WeightsMismatchError, match=r"(?s)unexpected key\(s\).*num_res"):
        load_pretrained_into(tiny_model(), hub_card(REPO, sha, None))


# ----------------------------------------------------------------------------------------------- import-time env


_SCRIPT = """
import os, sys, torch
from safetensors.torch import load_file
sys.path.insert(0, {tests!r})
import facedeblur
from test_hub import _forward

def check(name):
    model = facedeblur.create_model(name, pretrained=True)
    print("MATCH" if torch.equal(_forward(model), load_file({expected!r})["out"]) else "DIFFERENT", flush=True)

check(sys.argv[1])
if len(sys.argv) > 2 and sys.argv[2] == "then-offline":
    # huggingface_hub is imported by now; facedeblur still sees the variables set now
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
    check(sys.argv[1])
    try:
        facedeblur.model_info("hf-hub:facedeblur-test/never-downloaded")
    except facedeblur.WeightsNotAvailableError as e:
        print("OFFLINE-ERROR", "HF_HUB_OFFLINE" in str(e))
"""


def _subprocess_env(tmp_path: pathlib.Path) -> tuple[dict[str, str], pathlib.Path]:
    save_file({"out": _forward(tiny_model(5))}, str(tmp_path / "expected.safetensors"))
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT.format(tests=str(pathlib.Path(__file__).parent),
                                     expected=str(tmp_path / "expected.safetensors")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(OMP_NUM_THREADS="1", HF_HUB_CACHE=str(tmp_path / "sp-cache"), HF_HUB_DISABLE_XET="1",
               HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
    return env, script


def _run(script: pathlib.Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=300)


def test_env_set_before_import_subprocess(tmp_path):
    """A fresh interpreter with HF_ENDPOINT / HF_HUB_DISABLE_XET / HF_HUB_CACHE set before import downloads from
    the fake Hub at a pinned SHA; switching to HF_HUB_OFFLINE=1 afterwards loads the cached file and reports
    uncached repositories with our error."""
    files = export_files(tmp_path, seed=5, name="sp")
    env, script = _subprocess_env(tmp_path)
    with FakeHub() as hub:
        sha = hub.add_commit(REPO, files)
        r = _run(script, {**env, "HF_ENDPOINT": hub.url}, f"hf-hub:{REPO}@{sha}", "then-offline")
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.split() == ["MATCH", "MATCH", "OFFLINE-ERROR", "True"], r.stdout + r.stderr[-3000:]
        assert ("GET", f"/{REPO}/resolve/{sha}/model.safetensors") in hub.requests
        assert all(sha in path or "config.json" in path for _, path in hub.requests)


@pytest.mark.slow
def test_offline_before_import_subprocess(tmp_path):
    """PEERS.md recipe (a) literally: HF_HUB_OFFLINE=1 set before import, hand-built cache."""
    files = export_files(tmp_path, seed=5, name="off")
    env, script = _subprocess_env(tmp_path)
    commit = "9" * 40
    build_cache(tmp_path / "sp-cache", REPO, commit, files)
    env = {**env, "HF_HUB_OFFLINE": "1"}
    r = _run(script, env, f"hf-hub:{REPO}")
    assert r.returncode == 0 and r.stdout.split() == ["MATCH"], r.stderr[-3000:]
    shutil.rmtree(tmp_path / "sp-cache")
    r = _run(script, env, f"hf-hub:{REPO}@{commit}")
    assert r.returncode != 0 and "WeightsNotAvailableError" in r.stderr and "HF_HUB_OFFLINE" in r.stderr
