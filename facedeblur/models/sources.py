"""Cards of models outside the zoo: ``local-dir:PATH`` folders and ``hf-hub:ORG/REPO[@REVISION]`` repositories.

Both hold a ``config.json`` (the card, as written by :func:`facedeblur.weights.save_pretrained`) next to the weight
file; this module reads the card and points its :class:`~facedeblur.cards.WeightsSpec` at that file (Hub: pinned to
the commit the config came from). Reading the weights themselves is :mod:`facedeblur.weights`' job, which imports
this package, never the other way round.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from typing import Any

from .._version import __version__
from ..cards import ModelCard, WeightsSpec
from ..errors import ModelNotFoundError, WeightsIntegrityError
from ..hubfiles import hub_download
from ._registry import get_arch

__all__ = ["card_from_source", "read_config_json"]

_SHA_RE = re.compile(r"[0-9a-f]{40}")


def read_config_json(path: pathlib.Path) -> Any:
    """The JSON document in ``path`` (a model folder's ``config.json``); WeightsIntegrityError if unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsIntegrityError(f"{path} is not readable JSON ({e}); re-export the folder with "
                                    f"facedeblur.weights.save_pretrained") from None


def _card_from_config(data: Any, source: str, weights: WeightsSpec, where: str) -> ModelCard:
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
    data = read_config_json(cfg)
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
    data = read_config_json(cfg_path)
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
