"""Finding weight files: explicit path -> embedded package file -> Hugging Face Hub (pinned revision).

Hub files are fetched with :func:`facedeblur.hubfiles.hub_download` (the environment read at call time, typed
errors). The cards of ``local-dir:`` / ``hf-hub:`` names are read by :mod:`facedeblur.models.sources`;
:func:`card_from_source` is re-exported here.
"""
from __future__ import annotations

import os
import pathlib
import sys
from importlib import resources
from typing import Any

from ..cards import ModelCard
from ..errors import WeightsMismatchError, WeightsNotAvailableError
from ..hubfiles import hub_download
from ..models.sources import card_from_source, read_config_json
from .store import load_state_dict_strict, read_state_dict

__all__ = ["resolve_weights", "load_pretrained_into", "card_from_source", "download", "hub_download",
           "embedded_weights_path"]

_OFFICIAL_CFMD_URL = "https://github.com/dolphin0104/CFMDGAN"


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


def _folder_config(path: pathlib.Path) -> dict[str, Any] | None:
    """The ``config.json`` next to a user's weight file, if it describes that file."""
    cfg = path.parent / "config.json"
    if not cfg.is_file():
        return None
    data = read_config_json(cfg)
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
