"""Model cards: what facedeblur knows about one model variant, as plain frozen dataclasses.

A low-level module: it imports nothing from ``facedeblur.models`` or ``facedeblur.weights`` (both import it),
and nothing heavy (no torch). The registry (:mod:`facedeblur.models`) builds cards from zoo configs; the weights
code (:mod:`facedeblur.weights`) reads and writes them as ``config.json``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["ModelCard", "PaperRef", "InputContract", "Capabilities", "WeightsSpec", "TRAINING_RECORD_KEYS", "bench_text",
           "benchmark_rows"]


@dataclass(frozen=True)
class PaperRef:
    """The paper a method implements."""

    title: str = ""
    authors: str = ""
    venue: str = ""
    arxiv: str = ""
    url: str = ""


@dataclass(frozen=True)
class InputContract:
    """What the network expects: value range, colour order, face crop and size, pad multiple."""

    value_range: tuple[float, float] = (0.0, 1.0)
    channel_order: str = "rgb"
    face_size: int = 256
    face_crop: str = ""
    pad_multiple: int = 1


@dataclass(frozen=True)
class Capabilities:
    """What a model can do: a continuous control ``u`` (and its default), frames per input, aligned faces, dtypes."""

    continuous_u: bool = False
    default_u: float | None = None
    frame_window: int = 1
    aligned_face_input: bool = True
    dtypes: tuple[str, ...] = ("float32",)


@dataclass(frozen=True)
class WeightsSpec:
    """Where trained weights live. ``embedded`` is a file inside ``facedeblur/weights/embedded``."""

    embedded: str | None = None
    hf_hub_id: str | None = None
    revision: str | None = None
    filename: str = "model.safetensors"
    sha256: str | None = None
    dtype: str | None = None

    @property
    def available(self) -> bool:
        return bool(self.embedded or (self.hf_hub_id and self.revision))


#: keys of a card's ``training`` section that record finished work, not the recipe: a run's record and notes, a
#: post-training calibration (``gate_calibration``) and the stages that made shipped weights (tools/embed_weights.py)
TRAINING_RECORD_KEYS = frozenset({"record", "notes", "gate_calibration", "stages"})

_NESTED: dict[str, type] = {"paper": PaperRef, "input": InputContract, "capabilities": Capabilities,
                            "weights": WeightsSpec}


@dataclass(frozen=True)
class ModelCard:
    """Everything facedeblur knows about one model variant (built from its zoo config)."""

    name: str
    architecture: str
    task: str
    description: str = ""
    default: bool = False
    paper: PaperRef = field(default_factory=PaperRef)
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    input: InputContract = field(default_factory=InputContract)
    capabilities: Capabilities = field(default_factory=Capabilities)
    weights: WeightsSpec = field(default_factory=WeightsSpec)
    license: str = ""
    training_data: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    source: str = "zoo"  # zoo | hf-hub | local-dir

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def pretrained(self) -> bool:
        return self.weights.available or self.source == "local-dir"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "zoo",
                  task_of: Callable[[str], str] | None = None) -> "ModelCard":
        """Build a card from a zoo config / ``config.json`` mapping; unknown keys are an error.

        A mapping without ``task`` (zoo configs leave it to the architecture) needs ``task_of``, which maps an
        architecture name to its task; :func:`facedeblur.models.card_from_dict` passes the registry's.
        """
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"model config {data.get('name', '?')!r} has unknown keys {sorted(unknown)}")
        for key, typ in _NESTED.items():
            if key in data and isinstance(data[key], dict):
                sub = dict(data[key])
                bad = set(sub) - {f.name for f in dataclasses.fields(typ)}
                if bad:
                    raise ValueError(f"model config {data.get('name', '?')!r}: unknown {key} keys {sorted(bad)}")
                for k, v in sub.items():
                    if isinstance(v, list):
                        sub[k] = tuple(v)
                data[key] = typ(**sub)
        if "task" not in data:
            if task_of is None:
                raise ValueError(f"model config {data.get('name', '?')!r} has no 'task'; add it, or build the card "
                                 f"with facedeblur.models.card_from_dict, which takes the architecture's task")
            data["task"] = task_of(data["architecture"])
        data["source"] = source
        return cls(**data)


def bench_text(row: dict[str, Any]) -> str:
    """One line from a card's benchmark summary of one set (``metrics.benchmark.<set>``, written by
    tools/embed_weights.py): gain overall and by bin, the baselines beside it."""
    parts = [f"gain {row['psnr_gain_db']:+.3f} dB (n={row.get('n', '?')})"] if "psnr_gain_db" in row else []
    bins = row.get("bins_psnr_gain_db") or {}
    counts = row.get("bins_n") or {}
    if bins:
        parts.append("by bin " + ", ".join(f"{b} {v:+.3f} (n={counts.get(b, '?')})" for b, v in bins.items()
                                           if v is not None))
    if "unsharp_psnr_gain_db" in row:
        parts.append(f"unsharp masking {row['unsharp_psnr_gain_db']:+.3f} dB")
    for key, label in (("id_dist", "identity distance"), ("lm_auc", "landmark AUC")):
        if key in row:
            parts.append(f"{label} {row[key]:.4f} (blurry {row.get(key + '_blurry', float('nan')):.4f})")
    return "; ".join(parts) or json.dumps(row, default=str)


def benchmark_rows(card: ModelCard) -> list[tuple[str, dict[str, Any]]]:
    """``(set name, summary)`` for every benchmark set of the card's ``metrics.benchmark`` (empty if none)."""
    bench = card.metrics.get("benchmark")
    if not isinstance(bench, dict):
        return []
    return [(name, row) for name, row in bench.items() if isinstance(row, dict)]
