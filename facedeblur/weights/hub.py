"""Finding weight files: explicit path -> embedded package file -> Hugging Face Hub (pinned revision).

``huggingface_hub`` is imported only inside the functions that need it: it reads ``HF_HUB_OFFLINE``,
``HF_ENDPOINT`` and ``HF_HUB_CACHE`` at import time, so importing it when facedeblur is imported would
freeze them too early. On top of that, the environment is read again at call time here
(``HF_HUB_OFFLINE`` -> ``local_files_only=True``, ``HF_ENDPOINT`` -> ``endpoint=``, ``HF_HUB_CACHE``/
``HF_HOME`` -> ``cache_dir``), so setting them after ``huggingface_hub`` was imported by someone else
still works.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import sys
from importlib import resources
from typing import Any

from ..cards import ModelCard, WeightsSpec
from ..errors import (ModelNotFoundError, WeightsIntegrityError, WeightsMismatchError,
                      WeightsNotAvailableError)
from .store import load_state_dict_strict, read_state_dict

__all__ = ["resolve_weights", "load_pretrained_into", "card_from_source", "download", "hub_download",
           "embedded_weights_path"]

_SHA_RE = re.compile(r"[0-9a-f]{40}")
_TRUE = {"1", "on", "yes", "true"}
_OFFICIAL_CFMD_URL = "https://github.com/dolphin0104/CFMDGAN"


# ----------------------------------------------------------------------------------------------- env


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _offline() -> bool:
    """Offline if the environment says so now, or said so when huggingface_hub was imported."""
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return True
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def _endpoint() -> str:
    env = os.environ.get("HF_ENDPOINT")
    if env:
        return env.rstrip("/")
    from huggingface_hub import constants

    return constants.ENDPOINT


def _cache_dir(cache_dir: str | os.PathLike | None) -> str | None:
    """``cache_dir`` if given, else ``HF_HUB_CACHE`` / ``$HF_HOME/hub`` as set now, else the library default."""
    if cache_dir is not None:
        return str(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _cache_text(cache_dir: str | None) -> str:
    if cache_dir is not None:
        return cache_dir
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


# ----------------------------------------------------------------------------------------------- hub


def hub_download(repo_id: str, filename: str, revision: str | None, cache_dir: str | os.PathLike | None = None, *,
                 name: str | None = None, not_found: type[Exception] = WeightsNotAvailableError) -> pathlib.Path:
    """``huggingface_hub.hf_hub_download`` with the environment honoured at call time and its errors mapped to
    facedeblur's typed errors (``not_found`` for a missing repo/revision/file, WeightsNotAvailableError when
    offline and not cached). ``name`` is the model name used in the suggested fixes."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HFValidationError, HfHubHTTPError,
                                        LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    cache = _cache_dir(cache_dir)
    kwargs: dict[str, Any] = {"repo_id": repo_id, "filename": filename, "revision": revision, "cache_dir": cache}
    if os.environ.get("HF_ENDPOINT"):
        kwargs["endpoint"] = os.environ["HF_ENDPOINT"].rstrip("/")
    offline = _offline()
    if offline:
        kwargs["local_files_only"] = True
    rev = revision or "main"
    what = f"{filename!r} of Hugging Face Hub repository {repo_id!r} at revision {rev}"
    try:
        return pathlib.Path(hf_hub_download(**kwargs))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        why = ("downloads are disabled (HF_HUB_OFFLINE is set)" if offline else
               f"the Hub at {_endpoint()} could not be reached ({str(e).splitlines()[0][:200]})")
        local = ("load a local copy of the model folder with 'local-dir:PATH'" if filename == "config.json"
                 else "pass weights=PATH to a local .safetensors file")
        dl = (f"`facedeblur download {name}`" if name
              else f"hf_hub_download({repo_id!r}, {filename!r}, revision={rev!r})")
        raise WeightsNotAvailableError(
            f"{what} is not in the local cache ({_cache_text(cache)}) and {why}. Fix one of: unset HF_HUB_OFFLINE "
            f"and connect; set HF_ENDPOINT to a reachable Hub mirror; {local}; "
            f"or run {dl} on a connected machine and copy its Hugging Face cache folder (HF_HUB_CACHE, default "
            f"~/.cache/huggingface/hub) to this one.") from None
    except GatedRepoError:
        raise WeightsNotAvailableError(
            f"{what}: the repository is gated; accept its terms on {_endpoint()}/{repo_id} and log in "
            f"(`hf auth login`, or set HF_TOKEN).") from None
    except RepositoryNotFoundError:
        raise not_found(
            f"Hugging Face Hub repository {repo_id!r} does not exist at {_endpoint()} (or it is private: log in with "
            f"`hf auth login` / HF_TOKEN). Check the name in 'hf-hub:ORG/REPO[@REVISION]'.") from None
    except RevisionNotFoundError:
        raise not_found(
            f"revision {rev!r} does not exist in Hugging Face Hub repository {repo_id!r} ({_endpoint()}). Use a "
            f"branch, tag or full 40-character commit SHA from {_endpoint()}/{repo_id}/commits/main.") from None
    except EntryNotFoundError:
        raise not_found(f"{what}: the repository has no such file at that revision.") from None
    except HFValidationError as e:
        raise not_found(f"{repo_id!r} is not a valid Hugging Face Hub repository id ('ORG/NAME'): {e}") from None
    except HfHubHTTPError as e:
        raise WeightsNotAvailableError(f"downloading {what} from {_endpoint()} failed: "
                                       f"{str(e).splitlines()[0]}. Retry, or pass weights=PATH.") from None
    except Exception as e:  # transport errors (httpx) and interrupted downloads (OSError)
        if not (isinstance(e, OSError) or type(e).__module__.split(".")[0].startswith("httpx")):
            raise
        raise WeightsNotAvailableError(f"downloading {what} from {_endpoint()} failed ({type(e).__name__}: "
                                       f"{str(e).splitlines()[0] if str(e) else ''}). Retry, or pass "
                                       f"weights=PATH.") from None


# ----------------------------------------------------------------------------------------------- resolution


def embedded_weights_path(filename: str) -> pathlib.Path:
    """The path of a weight file shipped inside the package (``facedeblur/weights/embedded/<filename>``)."""
    if not filename or pathlib.PurePath(filename).name != filename:
        raise WeightsNotAvailableError(f"embedded weights name {filename!r} must be a plain file name in "
                                       f"facedeblur/weights/embedded")
    res = resources.files("facedeblur.weights").joinpath("embedded").joinpath(filename)
    if not res.is_file() or not isinstance(res, pathlib.Path):
        raise WeightsNotAvailableError(
            f"this facedeblur installation lacks its embedded weight file facedeblur/weights/embedded/{filename} "
            f"(a partial or broken install). Reinstall facedeblur, or pass weights=PATH.")
    return res


def _official_hint(card: ModelCard) -> str:
    kw = card.arch_kwargs
    if card.name == "cfmd-gan.paper" or (card.architecture == "cfmd_gan" and kw.get("width") == 32
                                         and kw.get("num_res") == 8):
        return (f" To use the CFMD-GAN authors' released generator instead, download model_best.pth from the link in "
                f"{_OFFICIAL_CFMD_URL} and convert it once: `facedeblur import-official cfmd-gan model_best.pth "
                f"OUT_DIR`, then facedeblur.load('local-dir:OUT_DIR').")
    return ""


def _no_weights_message(card: ModelCard) -> str:
    return (f"no trained weights are published for {card.name!r} yet (its model card lists no embedded file and no "
            f"Hugging Face Hub repository). Pass your own: "
            f"facedeblur.load({card.name!r}, weights='PATH/model.safetensors') (a .safetensors file, or a folder "
            f"written by facedeblur.weights.save_pretrained), or train one with "
            f"`facedeblur train {card.name}`; facedeblur.list_models(pretrained=True) lists variants that have "
            f"weights.{_official_hint(card)}")


def _explicit_path(weights: str | os.PathLike) -> pathlib.Path:
    p = pathlib.Path(weights).expanduser()
    if p.is_dir():
        f = p / "model.safetensors"
        if f.is_file():
            return f
        others = sorted(x.name for x in p.iterdir() if x.suffix == ".safetensors")
        extra = f"; it holds {', '.join(others)}: pass one of them as weights=" if others else ""
        raise WeightsNotAvailableError(f"folder {p} has no model.safetensors{extra}")
    if not p.exists():
        raise WeightsNotAvailableError(f"weights={str(weights)!r}: no such file or folder")
    return p


def resolve_weights(card: ModelCard, weights: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The weight file for ``card``: explicit ``weights`` (a .safetensors file or a folder with
    model.safetensors) -> the card's own file (``local-dir:`` folder, embedded package file, or the Hub repo at
    its pinned revision via ``hf_hub_download``) -> WeightsNotAvailableError."""
    if weights is not None:
        return _explicit_path(weights)
    ws = card.weights
    if card.source == "local-dir" and not ws.hf_hub_id and not ws.embedded:
        p = pathlib.Path(ws.filename)
        if not p.is_file():
            raise WeightsNotAvailableError(f"model folder {p.parent} has a config.json but no {p.name}; re-export it "
                                           f"with facedeblur.weights.save_pretrained or pass weights=PATH")
        return p
    if ws.embedded:
        return embedded_weights_path(ws.embedded)
    if ws.hf_hub_id:
        if not ws.revision:
            raise WeightsNotAvailableError(
                f"the model card of {card.name!r} names Hub repository {ws.hf_hub_id!r} but no revision; weights "
                f"must be pinned to a commit SHA (weights.revision in its zoo config).")
        return hub_download(ws.hf_hub_id, ws.filename, ws.revision, cache_dir, name=card.name)
    raise WeightsNotAvailableError(_no_weights_message(card))


def _read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsIntegrityError(f"{path} is not readable JSON ({e}); re-export the folder with "
                                    f"facedeblur.weights.save_pretrained") from None


def _folder_config(path: pathlib.Path) -> dict[str, Any] | None:
    """The ``config.json`` next to a user's weight file, if it describes that file."""
    cfg = path.parent / "config.json"
    if not cfg.is_file():
        return None
    data = _read_json(cfg)
    if not isinstance(data, dict) or not isinstance(data.get("weights"), dict):
        return None
    if pathlib.PurePath(data["weights"].get("filename") or "model.safetensors").name != path.name:
        return None
    return data


def load_pretrained_into(model: Any, card: ModelCard, weights: str | os.PathLike | None = None,
                         cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Resolve, read (sha256-checked) and strictly load the weights of ``card`` into ``model``; returns the path.

    The sha256 is the card's for the card's own file; for an explicit ``weights`` it is the one in the folder's
    ``config.json`` (written by :func:`save_pretrained`), if any.
    """
    path = resolve_weights(card, weights, cache_dir)
    cfg = None
    if weights is None:
        sha = card.weights.sha256
    else:
        cfg = _folder_config(path)
        sha = cfg["weights"].get("sha256") if cfg else None
    state = read_state_dict(path, sha)
    try:
        load_state_dict_strict(model, state, arch_kwargs=dict(card.arch_kwargs), source=str(path))
    except WeightsMismatchError as e:
        if cfg and (cfg.get("architecture") != card.architecture or cfg.get("arch_kwargs") != card.arch_kwargs):
            raise WeightsMismatchError(
                f"{e}\n  {path.parent / 'config.json'} says these weights are architecture "
                f"{cfg.get('architecture')!r} with {cfg.get('arch_kwargs')}: load the folder as "
                f"facedeblur.load('local-dir:{path.parent}') instead.") from None
        raise
    return path


# ----------------------------------------------------------------------------------------------- sources


def _card_from_config(data: Any, source: str, weights: WeightsSpec, where: str) -> ModelCard:
    from .. import __version__
    from ..models import get_arch

    if not isinstance(data, dict) or "architecture" not in data or "name" not in data:
        raise ModelNotFoundError(f"{where} is not a facedeblur model config (it needs 'name' and 'architecture'); "
                                 f"model folders are written by facedeblur.weights.save_pretrained")
    try:
        get_arch(data["architecture"])
    except ModelNotFoundError as e:
        raise ModelNotFoundError(f"{where} names architecture {data['architecture']!r}, which facedeblur "
                                 f"{__version__} does not have ({e}); upgrade facedeblur.") from None
    data = {k: v for k, v in data.items() if k != "source"}
    try:
        card = ModelCard.from_dict(data, source=source, task_of=lambda arch: get_arch(arch).task)
    except (TypeError, ValueError) as e:
        raise ModelNotFoundError(f"{where} is not a valid facedeblur model config: {e}") from None
    return dataclasses.replace(card, weights=weights)


def _config_weights(data: Any) -> dict[str, Any]:
    w = data.get("weights") if isinstance(data, dict) else None
    return w if isinstance(w, dict) else {}


def _card_from_local_dir(rest: str) -> ModelCard:
    folder = pathlib.Path(rest).expanduser().absolute()
    if not folder.is_dir():
        raise ModelNotFoundError(f"local-dir:{rest}: {folder} is not a folder")
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise ModelNotFoundError(f"local-dir:{rest}: no config.json in {folder}; a model folder holds config.json + "
                                 f"model.safetensors as written by facedeblur.weights.save_pretrained (for a bare "
                                 f".safetensors file use facedeblur.load(NAME, weights=PATH))")
    data = _read_json(cfg)
    w = _config_weights(data)
    filename = pathlib.PurePath(w.get("filename") or "model.safetensors").name
    spec = WeightsSpec(filename=str(folder / filename), sha256=w.get("sha256"), dtype=w.get("dtype"))
    return _card_from_config(data, "local-dir", spec, str(cfg))


def _split_hub(rest: str) -> tuple[str, str | None]:
    repo_id, sep, revision = rest.partition("@")
    if sep and not revision:
        raise ModelNotFoundError(f"hf-hub:{rest}: nothing after '@'; write hf-hub:ORG/REPO@REVISION (a branch, tag or "
                                 f"commit SHA) or leave out '@'")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ModelNotFoundError(f"hf-hub:{rest}: expected a repository id 'ORG/REPO', got {repo_id!r}")
    return repo_id, revision or None


def _card_from_hub(rest: str, cache_dir: str | os.PathLike | None = None) -> ModelCard:
    repo_id, revision = _split_hub(rest)
    cfg_path = hub_download(repo_id, "config.json", revision, cache_dir, name=f"hf-hub:{rest}",
                            not_found=ModelNotFoundError)
    # pin everything that follows to the commit this config came from (snapshots/<sha>/config.json)
    commit = cfg_path.parent.name if _SHA_RE.fullmatch(cfg_path.parent.name) else revision
    data = _read_json(cfg_path)
    w = _config_weights(data)
    spec = WeightsSpec(hf_hub_id=repo_id, revision=commit or "main",
                       filename=w.get("filename") or "model.safetensors", sha256=w.get("sha256"), dtype=w.get("dtype"))
    return _card_from_config(data, "hf-hub", spec, f"config.json of hf-hub:{rest}")


def card_from_source(source: str, rest: str, cache_dir: str | os.PathLike | None = None) -> ModelCard:
    """The card of a ``local-dir:PATH`` folder or an ``hf-hub:ORG/REPO[@REVISION]`` repository (its config.json,
    fetched into ``cache_dir`` or the default Hugging Face cache); its weights point at the folder's / repository's
    weight file (Hub: pinned to the commit the config came from)."""
    if source == "local-dir":
        return _card_from_local_dir(rest)
    if source == "hf-hub":
        return _card_from_hub(rest, cache_dir)
    raise ModelNotFoundError(f"unknown model source {source!r}; use 'hf-hub:ORG/REPO[@REVISION]' or 'local-dir:PATH'")


# ----------------------------------------------------------------------------------------------- download


def download(card: ModelCard, cache_dir: str | os.PathLike | None = None, *, quiet: bool = False) -> pathlib.Path:
    """Fetch (and verify) the weights of ``card`` into the Hugging Face cache; for ``facedeblur download NAME``.

    Embedded and ``local-dir:`` weights need no download: their path is returned with a note on stderr.
    """
    ws = card.weights
    if card.source == "local-dir" or ws.embedded:
        path = resolve_weights(card)
        read_state_dict(path, ws.sha256)
        if not quiet:
            print(f"{card.name}: weights are already local ({path}); nothing to download.", file=sys.stderr)
        return path
    if not ws.hf_hub_id:
        raise WeightsNotAvailableError(_no_weights_message(card))
    path = resolve_weights(card, cache_dir=cache_dir)
    read_state_dict(path, ws.sha256)
    if not quiet:
        print(f"{card.name}: {ws.hf_hub_id}@{ws.revision}/{ws.filename} -> {path}", file=sys.stderr)
    return path
