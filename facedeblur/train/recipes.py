"""Training recipes: the ``training:`` section of a zoo config, resolved with overrides.

Precedence (later wins): the card's ``training`` section, a ``--config`` YAML (either a whole zoo config
with a ``training:`` key or just that mapping), ``recipe_overrides`` from Python, then CLI flags.
The defaults are the values of the zoo's first method's paper (its §5.1.2): Adam(1e-4, 0.9, 0.999), x0.99 per
epoch, 200 epochs, batch 8, crop 256, scale augmentation 1.0-1.5, loss weights of its Eq. 13 / 18. The init
options (``zero_init_output``, ``output_init_scale``, ``mapping_init``) are applied by the method's training
wrapper (:meth:`facedeblur.train.methods.TrainingMethod.init_generator_`); a wrapper without them refuses them.
``method:`` holds options that only one method has (e.g. the extra loss weights of its paper, the weights of a frozen
stage); the method's wrapper validates them.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import FaceDeblurError
from ..cards import TRAINING_RECORD_KEYS
from .losses import LossWeights

__all__ = ["RecipeError", "Recipe", "resolve_recipe", "deep_merge", "read_config"]

# data-engine knobs (facedeblur.data.build_datasets reads them from the card's training section): passed through
DATA_KEYS = {"identity_fraction", "stills_fraction", "centre_fraction", "static_fraction", "static_noise",
             "synth_fraction", "synth_frames", "synth", "synth_val_count", "vla_fraction", "vla"}


class RecipeError(FaceDeblurError, ValueError):
    """A training recipe (zoo config ``training:`` section, ``--config`` file or override) that is invalid."""


MAPPING_INITS = ("default", "kaiming")


@dataclass(frozen=True)
class Recipe:
    """A resolved training recipe. ``epoch_samples`` samples make one epoch (one LR decay step)."""

    recipe: str = "custom"
    crop: int = 256
    batch: int = 8
    optimizer: dict[str, Any] = field(default_factory=lambda: {"name": "adam", "lr": 1e-4, "betas": [0.9, 0.999]})
    d_optimizer: dict[str, Any] | None = None
    lr_decay_per_epoch: float = 0.99
    epochs: int = 200
    epoch_samples: int = 12000
    scale_aug: tuple[float, float] = (1.0, 1.5)
    loss: LossWeights = field(default_factory=LossWeights)
    discriminator: dict[str, Any] = field(default_factory=dict)
    grad_clip: float | None = None
    ema: float | None = None
    zero_init_output: bool = False  # start G as the identity (wrappers that support it); init only
    output_init_scale: float = 1.0  # scale the output convs' initial weights (wrappers that support it)
    mapping_init: str = "default"  # "kaiming": He-init of a control-mapping network (wrappers that support it)
    data: dict[str, Any] = field(default_factory=dict)  # data-engine keys (DATA_KEYS), flat in to_dict()
    #: options of one method that no other method has (e.g. a paper's own loss weights, a frozen stage's weights):
    #: a free mapping that the method's training wrapper validates; left out of to_dict() when empty
    method: dict[str, Any] = field(default_factory=dict)

    def steps_per_epoch(self, world_size: int = 1) -> int:
        return max(1, self.epoch_samples // (self.batch * world_size))

    def total_steps(self, world_size: int = 1) -> int:
        return self.epochs * self.steps_per_epoch(world_size)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["scale_aug"] = list(self.scale_aug)
        out.update(out.pop("data"))
        if not out["method"]:
            del out["method"]
        return out


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``over``, recursing into nested mappings (inputs are not modified)."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_config(path: str | Path) -> dict[str, Any]:
    """The training mapping of a YAML file (a whole zoo config's ``training:`` section, or the mapping itself)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"--config {path}: no such file; pass a YAML file with a training mapping")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"--config {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise RecipeError(f"--config {path} must hold a mapping (training keys or a zoo config), "
                          f"got {type(data).__name__}")
    if "training" in data:
        data = data["training"] or {}
        if not isinstance(data, Mapping):
            raise RecipeError(f"--config {path}: 'training' must be a mapping")
    return dict(data)


def _positive(name: str, value: Any, kind: type = float, allow_zero: bool = False) -> Any:
    try:
        v = kind(value)
    except (TypeError, ValueError):
        raise RecipeError(f"recipe key {name!r} must be a {kind.__name__}, got {value!r}") from None
    if v < 0 or (v == 0 and not allow_zero):
        raise RecipeError(f"recipe key {name!r} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return v


def _check_optimizer(name: str, opt: Any) -> dict[str, Any]:
    if not isinstance(opt, Mapping):
        raise RecipeError(f"recipe key {name!r} must be a mapping like {{name: adam, lr: 1e-4, betas: [0.9, 0.999]}}")
    opt = dict(opt)
    kind = str(opt.get("name", "adam")).lower()
    if kind not in ("adam", "adamw"):
        raise RecipeError(f"{name}.name {kind!r} is not supported; use adam or adamw")
    unknown = set(opt) - {"name", "lr", "betas", "weight_decay", "eps"}
    if unknown:
        raise RecipeError(f"{name} has unknown keys {sorted(unknown)}; known: name, lr, betas, weight_decay, eps")
    opt["name"] = kind
    opt["lr"] = _positive(f"{name}.lr", opt.get("lr", 1e-4))
    betas = opt.get("betas", [0.9, 0.999])
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(0 <= float(b) < 1 for b in betas)):
        raise RecipeError(f"{name}.betas must be two numbers in [0, 1), got {betas!r}")
    opt["betas"] = [float(b) for b in betas]
    if "weight_decay" in opt:
        opt["weight_decay"] = _positive(f"{name}.weight_decay", opt["weight_decay"], allow_zero=True)
    if "eps" in opt:
        opt["eps"] = _positive(f"{name}.eps", opt["eps"])
    return opt


def resolve_recipe(card_training: Mapping[str, Any], *layers: Mapping[str, Any] | None,
                   pad_multiple: int = 1) -> Recipe:
    """Merge the card's training section with override ``layers`` (later wins) and validate it. ``crop`` must be
    a multiple of ``pad_multiple`` (the model card's ``input.pad_multiple``: the network's down-sampling)."""
    data: dict[str, Any] = {k: v for k, v in dict(card_training or {}).items() if k not in TRAINING_RECORD_KEYS}
    for layer in layers:
        if layer:
            data = deep_merge(data, {k: v for k, v in layer.items() if v is not None or k in ("grad_clip", "ema")})
    known = {f.name for f in dataclasses.fields(Recipe)} - {"data"}
    extra = {k: data.pop(k) for k in list(data) if k in DATA_KEYS}
    unknown = set(data) - known
    if unknown:
        raise RecipeError(f"unknown training recipe keys {sorted(unknown)}; known: {sorted(known | DATA_KEYS)}")
    for k, v in extra.items():
        if k == "static_noise":  # (low, high) noise sigma in grey levels
            if (not isinstance(v, (list, tuple)) or len(v) != 2
                    or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in v)
                    or not 0 <= v[0] <= v[1]):
                raise RecipeError(f"static_noise must be [low, high] grey levels with 0 <= low <= high, got {v!r}")
            extra[k] = [float(x) for x in v]
        elif k == "synth":  # the strong-blur engine's settings (facedeblur.data.synth.SynthConfig)
            from ..data.synth import SynthConfig

            if not isinstance(v, Mapping):
                raise RecipeError(f"recipe key 'synth' must be a mapping of strong-blur settings, got {v!r}")
            if "face_size" in v:
                raise RecipeError("recipe 'synth': face_size comes from the data engine (the model's face size); "
                                  "remove it")
            try:
                extra[k] = SynthConfig.from_mapping(v).to_dict()
            except FaceDeblurError as exc:
                raise RecipeError(f"recipe 'synth': {exc}") from None
            del extra[k]["face_size"]
        elif k == "vla":  # variable-length averaging windows (facedeblur.data.vla.VLAConfig fields + per_clip)
            from ..data.vla import VLAConfig

            if not isinstance(v, Mapping):
                raise RecipeError(f"recipe key 'vla' must be a mapping (per_clip and the fields of "
                                  f"facedeblur.data.vla.VLAConfig), got {v!r}")
            opts = dict(v)
            per_clip = _positive("vla.per_clip", opts.pop("per_clip", 20), int)
            names = {f.name for f in dataclasses.fields(VLAConfig)}
            if set(opts) - names:
                raise RecipeError(f"recipe 'vla' has unknown keys {sorted(set(opts) - names)}; known: per_clip, "
                                  f"{', '.join(sorted(names))}")
            try:
                extra[k] = {"per_clip": per_clip, **dataclasses.asdict(VLAConfig(**opts))}
            except FaceDeblurError as exc:
                raise RecipeError(f"recipe 'vla': {exc}") from None
        elif k == "synth_val_count":
            extra[k] = _positive(k, v, int)
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise RecipeError(f"{k} must be a fraction in [0, 1], got {v!r}")
    kw: dict[str, Any] = {"data": extra}
    if "recipe" in data:
        kw["recipe"] = str(data["recipe"])
    if "crop" in data:
        kw["crop"] = _positive("crop", data["crop"], int)
        if kw["crop"] % max(1, int(pad_multiple)):
            raise RecipeError(f"crop {kw['crop']} must be a multiple of {pad_multiple} (the model's input.pad_multiple: "
                              f"its down-sampling)")
    for key in ("batch", "epochs", "epoch_samples"):
        if key in data:
            kw[key] = _positive(key, data[key], int)
    if "optimizer" in data:
        kw["optimizer"] = _check_optimizer("optimizer", data["optimizer"])
    if data.get("d_optimizer") is not None:
        kw["d_optimizer"] = _check_optimizer("d_optimizer", data["d_optimizer"])
    if "lr_decay_per_epoch" in data:
        kw["lr_decay_per_epoch"] = _positive("lr_decay_per_epoch", data["lr_decay_per_epoch"])
        if kw["lr_decay_per_epoch"] > 1:
            raise RecipeError(f"lr_decay_per_epoch must be in (0, 1], got {data['lr_decay_per_epoch']}")
    if "scale_aug" in data:
        sa = data["scale_aug"]
        if not (isinstance(sa, (list, tuple)) and len(sa) == 2 and 0 < float(sa[0]) <= float(sa[1])):
            raise RecipeError(f"scale_aug must be [low, high] with 0 < low <= high, got {sa!r}")
        kw["scale_aug"] = (float(sa[0]), float(sa[1]))
    if "loss" in data:
        if not isinstance(data["loss"], Mapping):
            raise RecipeError("recipe key 'loss' must be a mapping of loss weights")
        try:
            kw["loss"] = LossWeights.from_mapping(data["loss"])
        except (TypeError, ValueError) as exc:
            raise RecipeError(f"recipe 'loss': {exc}") from None
        for k, v in dataclasses.asdict(kw["loss"]).items():
            _positive(f"loss.{k}", v, allow_zero=k not in ("charbonnier_eps", "psnr_floor"))
    if data.get("method") is not None:
        if not isinstance(data["method"], Mapping):
            raise RecipeError("recipe key 'method' must be a mapping of the training wrapper's own options")
        kw["method"] = copy.deepcopy(dict(data["method"]))
    if "discriminator" in data:
        if not isinstance(data["discriminator"], Mapping):
            raise RecipeError("recipe key 'discriminator' must be a mapping of discriminator kwargs")
        kw["discriminator"] = dict(data["discriminator"])
    if "zero_init_output" in data:
        if not isinstance(data["zero_init_output"], bool):
            raise RecipeError(f"zero_init_output must be true or false, got {data['zero_init_output']!r}")
        kw["zero_init_output"] = data["zero_init_output"]
    if "output_init_scale" in data:
        kw["output_init_scale"] = _positive("output_init_scale", data["output_init_scale"])
        if kw["output_init_scale"] > 1:
            raise RecipeError(f"output_init_scale must be in (0, 1], got {data['output_init_scale']!r} "
                              "(use zero_init_output: true for 0)")
    if "mapping_init" in data:
        if data["mapping_init"] not in MAPPING_INITS:
            raise RecipeError(f"mapping_init must be one of {list(MAPPING_INITS)}, got {data['mapping_init']!r}")
        kw["mapping_init"] = data["mapping_init"]
    if data.get("grad_clip") is not None:
        kw["grad_clip"] = _positive("grad_clip", data["grad_clip"])
    if data.get("ema") is not None:
        ema = float(data["ema"])
        if not 0 < ema < 1:
            raise RecipeError(f"ema decay must be in (0, 1), got {data['ema']!r} (e.g. 0.999)")
        kw["ema"] = ema
    return Recipe(**kw)
