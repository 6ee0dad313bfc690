"""Writing Hub-ready model folders (model.safetensors + config.json + README.md) and uploading them.

A folder written by :func:`save_pretrained` loads with ``facedeblur.load("local-dir:FOLDER")`` and, once
uploaded with :func:`push_to_hub`, with ``facedeblur.load("hf-hub:ORG/REPO@COMMIT_SHA")``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import sys
from typing import Any

import torch
from torch import nn

from ..cards import ModelCard
from ..errors import WeightsIntegrityError, WeightsNotAvailableError
from .store import atomic_path, atomic_write_bytes, check_state_dict, sha256_file

__all__ = ["save_pretrained", "push_to_hub", "render_model_card", "FOLDER_FILES"]

FOLDER_FILES = ("model.safetensors", "config.json", "README.md")
_SPDX = {"apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0",
         "cc-by-nc-sa-4.0", "gpl-3.0", "agpl-3.0", "openrail", "other", "unknown"}


def _reference_state_dict(card: ModelCard) -> dict[str, torch.Tensor]:
    """Keys and shapes of ``card``'s architecture with its arch_kwargs (built on the meta device: no memory)."""
    from ..models import get_arch

    builder = get_arch(card.architecture).builder
    try:
        with torch.device("meta"):
            return builder(**card.arch_kwargs).state_dict()
    except (RuntimeError, NotImplementedError):  # an architecture whose init needs real data
        return builder(**card.arch_kwargs).state_dict()


def _prepare(model_or_state_dict: nn.Module | dict[str, torch.Tensor],
             dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    if isinstance(model_or_state_dict, nn.Module):
        sd = model_or_state_dict.state_dict()
    elif isinstance(model_or_state_dict, dict):
        sd = model_or_state_dict
    else:
        raise TypeError(f"save_pretrained needs an nn.Module or a state dict, got {type(model_or_state_dict).__name__}")
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype (torch.float16, torch.bfloat16, torch.float32), got {dtype}")
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"state dict entry {k!r} is a {type(v).__name__}, not a tensor")
        t = v.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[k] = t.contiguous().clone()  # own memory: safetensors refuses shared storages
    return out


def _weights_dtype(sd: dict[str, torch.Tensor]) -> str | None:
    kinds = {str(t.dtype).removeprefix("torch.") for t in sd.values() if t.is_floating_point()}
    return kinds.pop() if len(kinds) == 1 else None


def save_pretrained(model_or_state_dict: nn.Module | dict[str, torch.Tensor], card: ModelCard,
                    out_dir: str | os.PathLike, dtype: torch.dtype | None = None, *, overwrite: bool = False,
                    repo_id: str | None = None, metadata: dict[str, str] | None = None) -> pathlib.Path:
    """Write a Hub-ready model folder: ``model.safetensors`` (cast to ``dtype`` if given), ``config.json`` (the
    card, with the file's sha256) and ``README.md`` (the model card). Every file is written atomically.

    The weights are checked against ``card.architecture`` built with ``card.arch_kwargs`` first, so the folder's
    config always describes its weights (after overriding architecture kwargs, pass
    ``dataclasses.replace(card, arch_kwargs=...)``). ``repo_id`` only fills in the usage line of the README.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty (pass ``overwrite=True``).
        WeightsMismatchError: the weights do not fit the card's architecture.
    """
    from safetensors.torch import save_file

    out = pathlib.Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; choose an empty/new folder or pass overwrite=True "
                              f"(which replaces {', '.join(FOLDER_FILES)})")
    sd = _prepare(model_or_state_dict, dtype)
    check_state_dict(_reference_state_dict(card), sd, what=f"{card.name} ({card.architecture})",
                     arch_kwargs=dict(card.arch_kwargs), source="save_pretrained")
    out.mkdir(parents=True, exist_ok=True)
    from .._version import __version__

    meta = {"format": "pt", "facedeblur_version": __version__, "model": card.name, "architecture": card.architecture,
            "arch_kwargs": json.dumps(card.arch_kwargs, sort_keys=True)}
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    weights_file = out / "model.safetensors"
    with atomic_path(weights_file) as tmp:
        save_file(sd, str(tmp), metadata=meta)
    sha = sha256_file(weights_file)
    saved = dataclasses.replace(card, default=False, weights=dataclasses.replace(
        card.weights, embedded=None, hf_hub_id=None, revision=None, filename="model.safetensors", sha256=sha,
        dtype=_weights_dtype(sd)))
    config = saved.to_dict()
    config.pop("source", None)
    atomic_write_bytes(out / "config.json", (json.dumps(config, indent=2) + "\n").encode("utf-8"))
    n_params = sum(t.numel() for t in sd.values())
    atomic_write_bytes(out / "README.md", render_model_card(saved, n_params=n_params, repo_id=repo_id).encode("utf-8"))
    return out


# ----------------------------------------------------------------------------------------------- model card


def _hub_license(text: str) -> str:
    t = text.strip().lower()
    return t if t in _SPDX else "other"


def _yaml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid YAML scalar


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _metrics_md(metrics: dict[str, Any]) -> str:
    """Nested ``{benchmark: {metric: value}}`` -> one table; flat ``{metric: value}`` -> a two-column table;
    anything else -> JSON."""
    if not metrics:
        return ""
    if all(isinstance(v, dict) for v in metrics.values()):
        flat = all(not isinstance(x, dict) for v in metrics.values() for x in v.values())
        if flat:
            cols: list[str] = []
            for v in metrics.values():
                cols += [c for c in v if c not in cols]
            return _table(["benchmark", *cols], [[k, *[v.get(c, "") for c in cols]] for k, v in metrics.items()])
        return "\n\n".join(f"**{k}**\n\n{_metrics_md(v)}" for k, v in metrics.items())
    if all(not isinstance(v, (dict, list)) for v in metrics.values()):
        return _table(["metric", "value"], [[k, v] for k, v in metrics.items()])
    return "```json\n" + json.dumps(metrics, indent=2) + "\n```"


def render_model_card(card: ModelCard, *, n_params: int | None = None, repo_id: str | None = None) -> str:
    """The README.md of a model folder: YAML front matter (licence, library_name, tags), then description, paper,
    usage, input contract, capabilities, architecture, training record, metrics and licence notes."""
    tags = ["facedeblur", "image-restoration", "deblurring", "face-deblurring", "motion-deblurring", card.family,
            "pytorch", "safetensors"]
    if card.paper.arxiv:
        tags.append(f"arxiv:{card.paper.arxiv}")
    front = ["---", f"license: {_hub_license(card.license)}", "library_name: facedeblur",
             "pipeline_tag: image-to-image", "tags:"] + [f"- {_yaml_str(t)}" for t in tags] + ["---", ""]
    repo = repo_id or "ORG/REPO"
    md = [f"# {card.name}", "", card.description.strip() or f"A {card.architecture} model for facedeblur.", ""]
    p = card.paper
    if p.title:
        md += ["## Paper", "", f"**{p.title}**" + (f" — {p.authors}" if p.authors else "")
               + (f", {p.venue}" if p.venue else "") + ".", ""]
        arxiv_url = f"https://arxiv.org/abs/{p.arxiv}" if p.arxiv else ""
        links = [f"[arXiv:{p.arxiv}]({arxiv_url})"] if p.arxiv else []
        if p.url and p.url != arxiv_url:
            links.append(p.url)
        if links:
            md += [" · ".join(links), ""]
    u_arg = f", u={card.capabilities.default_u}" if card.capabilities.continuous_u else ""
    md += ["## How to load", "", "```python", "import facedeblur", "",
           f'model = facedeblur.load("hf-hub:{repo}@REVISION")  # REVISION = the commit SHA of this upload',
           f"restored = model.restore(image{u_arg})  # image: RGB uint8 array or path", "```", "",
           "Pin `REVISION` to a full commit SHA (the *Files and versions* tab, or the value `push_to_hub` returned): "
           "the download is then reproducible and a cached file loads without any request. A local copy of this "
           'folder loads with `facedeblur.load("local-dir:PATH")`.', ""]
    i = card.input
    md += ["## Input contract", "", _table(["field", "value"], [
        ["value range", list(i.value_range)], ["channel order", i.channel_order], ["face size", i.face_size],
        ["face crop", i.face_crop or "-"], ["pad multiple", i.pad_multiple]]), ""]
    c = card.capabilities
    md += ["## Capabilities", "", _table(["field", "value"], [
        ["continuous control u", c.continuous_u], ["default u", "-" if c.default_u is None else c.default_u],
        ["frame window", c.frame_window], ["aligned face input", c.aligned_face_input],
        ["dtypes", list(c.dtypes)]]), ""]
    arch_rows = [["architecture", card.architecture], ["task", card.task],
                 ["arch kwargs", json.dumps(card.arch_kwargs, sort_keys=True)]]
    if n_params is not None:
        arch_rows.append(["parameters", f"{n_params:,}"])
    w = card.weights
    arch_rows += [["weights file", w.filename], ["weights dtype", w.dtype or "-"], ["sha256", w.sha256 or "-"]]
    md += ["## Architecture and files", "", _table(["field", "value"], arch_rows), ""]
    if card.training_data or card.training:
        md += ["## Training", ""]
        if card.training_data:
            md += [f"Training data: {card.training_data}", ""]
        conv = card.training.get("converted_from") if isinstance(card.training, dict) else None
        if conv:
            md += [f"Converted from: `{json.dumps(conv, sort_keys=True)}`", ""]
        rest = {k: v for k, v in card.training.items() if k != "converted_from"}
        if rest:
            md += ["```json", json.dumps(rest, indent=2, sort_keys=True), "```", ""]
    if card.metrics:
        md += ["## Metrics", "", _metrics_md(card.metrics), ""]
    md += ["## Licence", "", card.license or "No licence stated.", ""]
    if card.notes:
        md += ["## Notes", "", card.notes.strip(), ""]
    md += ["---", "", "Written by `facedeblur.weights.save_pretrained`.", ""]
    return "\n".join(front + md)


# ----------------------------------------------------------------------------------------------- push


def _check_folder(folder: pathlib.Path) -> dict[str, Any]:
    missing = [f for f in FOLDER_FILES if not (folder / f).is_file()]
    if missing:
        raise WeightsNotAvailableError(f"{folder} lacks {', '.join(missing)}; write the folder with "
                                       f"facedeblur.weights.save_pretrained first")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WeightsIntegrityError(f"{folder / 'config.json'} is not readable JSON: {e}") from None
    expected = (config.get("weights") or {}).get("sha256") if isinstance(config, dict) else None
    actual = sha256_file(folder / "model.safetensors")
    if not expected or expected != actual:
        raise WeightsIntegrityError(
            f"{folder / 'model.safetensors'} has sha256 {actual} but config.json records {expected}; the folder was "
            f"modified after export. Re-export it with facedeblur.weights.save_pretrained before uploading.")
    return config


def push_to_hub(folder: str | os.PathLike, repo_id: str, *, revision: str | None = None, token: str | None = None,
                private: bool = False, api: Any = None) -> str:
    """Upload a :func:`save_pretrained` folder to the Hugging Face Hub; returns the commit SHA to pin.

    Creates the repository (and the branch ``revision``, if given and not ``main``) when needed, uploads
    model.safetensors, config.json and README.md in one commit, and prints how to pin it in the zoo config.
    ``api`` is an ``huggingface_hub.HfApi`` (injectable for tests).
    """
    folder = pathlib.Path(folder).expanduser()
    config = _check_folder(folder)
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id must be 'ORG/NAME', got {repo_id!r}")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token, endpoint=os.environ.get("HF_ENDPOINT") or None)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True, token=token)
    if revision and revision != "main":
        api.create_branch(repo_id=repo_id, branch=revision, repo_type="model", exist_ok=True, token=token)
    from .._version import __version__

    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", revision=revision,
                             allow_patterns=list(FOLDER_FILES), token=token,
                             commit_message=f"Upload {config.get('name', 'model')} (facedeblur {__version__})")
    sha = getattr(info, "oid", None)
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{40}", sha):
        raise RuntimeError(f"the Hub did not return a commit SHA for the upload to {repo_id} (got {sha!r}); check "
                           f"the repository's history and pin its latest commit by hand")
    w = config.get("weights") or {}
    print(f"Uploaded {folder} to {repo_id} at commit {sha}.\n"
          f"Pin it in zoo_configs/{config.get('name', 'NAME')}.yaml:\n"
          f"  weights: {{hf_hub_id: {repo_id}, revision: {sha}, filename: {w.get('filename', 'model.safetensors')}, "
          f"sha256: {w.get('sha256')}}}\n"
          f"Users can load it now with facedeblur.load(\"hf-hub:{repo_id}@{sha}\").", file=sys.stderr)
    return sha
