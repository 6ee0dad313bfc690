"""The generic training loop: it trains any architecture through its training wrapper.

The wrapper (:class:`facedeblur.train.methods.TrainingMethod`, registered per architecture) builds the networks,
losses and optimisers and runs one iteration (GAN: e.g. a discriminator step, then a generator step; or
supervised). The loop around it is shared:

* Adam per recipe (the wrapper's optimisers), ExponentialLR stepped once per epoch (``epoch_samples`` samples),
  AMP on CUDA only, optional channels-last memory format on CUDA, optional gradient clipping and EMA of the
  generator.
* The sample stream is a pure function of (seed, sample position): index from a seeded permutation and a
  per-sample seed for the dataset's random augmentation. Together with the checkpointed RNG, model,
  optimizer and scheduler states this makes ``resume`` continue bit for bit.
* The datasets' sample kind (:mod:`facedeblur.data.kinds`) is checked against the wrapper's, and the first batch
  against the kind's keys and shapes.
* Validation restores the validation items through the architecture's inference adapter, scores the 8-bit output
  by severity bin, keeps the best weights; export writes them with the training record.
* DDP under ``torchrun``: each rank takes its own slice of every global batch; only rank 0 logs, validates
  and writes checkpoints. SIGTERM / SIGINT save a checkpoint and stop cleanly.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import random
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, get_worker_info
from tqdm.auto import tqdm

from ..cards import ModelCard
from ..data.kinds import SAMPLE_KINDS, check_item, compatible, dataset_kind
from ..errors import CapabilityError, DataError
from ..models import get_arch, get_card
from .checkpoint import (CHECKPOINT_NAME, CheckpointError, atomic_write_text, load_state, read_generator_state,
                         rng_state, save_state, save_tensors_atomic, set_rng_state)
from .distributed import (DistInfo, all_reduce_max, barrier, init_distributed, select_device,
                          shutdown_distributed)
from .losses import LossWeights
from .methods import StepContext, TrainingMethod, get_method, set_requires_grad, unwrap
from .recipes import Recipe, resolve_recipe
from .validation import format_table, psnr, ssim, summarize

__all__ = ["TrainOptions", "TrainResult", "Trainer", "train", "SampleStream", "SeededDataset"]

_CKPT_NAME = CHECKPOINT_NAME
_MASK64 = (1 << 64) - 1


# ------------------------------------------------------------------------------------------ options


@dataclass
class TrainOptions:
    """Run options that are not part of the recipe (the recipe is the model's training section)."""

    max_steps: int | None = None        # stop when the global step reaches this (absolute, survives resume)
    max_minutes: float | None = None    # wall-clock budget of this invocation
    val_every: int = 1000
    ckpt_every: int = 1000
    log_every: int = 50
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    amp: str = "auto"                   # auto (bf16 on CUDA if supported, else off) | off | bf16 | fp16
    workers: int = 2
    val_batch: int = 4
    val_max: int | None = None          # validate on the first N items only
    resume: bool | str = "auto"         # "auto": resume when <out_dir>/last/ has a checkpoint; True: must; path
    init: str | None = None             # start G (and its EMA) from these weights; fresh optimizer, step 0
    export: str | None = None           # also write the final generator (save_pretrained) here
    gan: bool = True                    # False: supervised even when the architecture has a discriminator
    progress: bool = True
    data_desc: str = ""                 # recorded in the training record (what data the run used)
    handle_signals: bool = True         # catch SIGTERM/SIGINT, save, stop cleanly
    channels_last: bool = False         # channels-last memory format for the networks and batches (CUDA only)


@dataclass
class TrainResult:
    """What a run did."""

    run_dir: Path
    step: int
    status: str                          # finished | max_steps | time_budget | interrupted (SIGTERM) ...
    wall_time_s: float
    best: dict[str, Any] | None = None   # validation table of the best step (by mean PSNR gain)
    last_validation: dict[str, Any] | None = None
    exported: list[str] = dataclasses.field(default_factory=list)
    perceptual_loss: str = ""

    @property
    def interrupted(self) -> bool:
        return self.status.startswith("interrupted")


# ------------------------------------------------------------------------------------------ data stream


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class SampleStream(Sampler):
    """Infinite stream of ``(index, sample_seed)`` for one rank, starting at a global step.

    Global sample position ``p`` maps to chunk ``p // n`` (a permutation of the ``n`` items seeded by
    (seed, chunk)) and a per-sample seed; global step ``s`` covers positions ``[s*B*W, (s+1)*B*W)`` and rank
    ``r`` takes the ``r``-th block of ``B`` of them (the split DistributedSampler makes, but resumable mid-epoch).
    """

    def __init__(self, n_items: int, batch: int, *, seed: int = 0, start_step: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if n_items <= 0:
            raise DataError("the training dataset is empty; check --data")
        self.n, self.batch, self.seed = n_items, batch, seed
        self.start_step, self.rank, self.world = start_step, rank, world_size
        self._chunk, self._perm = -1, None

    def _index(self, p: int) -> int:
        chunk = p // self.n
        if chunk != self._chunk:
            g = torch.Generator().manual_seed(_splitmix64(self.seed * 1_000_003 + chunk) & 0x7FFF_FFFF_FFFF_FFFF)
            self._perm, self._chunk = torch.randperm(self.n, generator=g).tolist(), chunk
        return self._perm[p % self.n]

    def sample_seed(self, p: int) -> int:
        return _splitmix64(_splitmix64(self.seed + 0x5EED) ^ p) & 0x7FFF_FFFF_FFFF_FFFF

    def __iter__(self) -> Iterator[tuple[int, int]]:
        step = self.start_step
        while True:
            base = (step * self.world + self.rank) * self.batch
            for p in range(base, base + self.batch):
                yield self._index(p), self.sample_seed(p)
            step += 1


class SeededDataset(Dataset):
    """Wraps a dataset so item ``(index, seed)`` is drawn with torch/numpy/random seeded by ``seed``.

    The dataset's random augmentation (drawn from those global generators) then depends only on the
    sample's position in the stream, not on worker count or resumption. In the main process the global
    RNG states are restored afterwards.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        main = get_worker_info() is None
        if main:
            saved = (torch.get_rng_state(), np.random.get_state(), random.getstate())
        torch.default_generator.manual_seed(seed)
        np.random.seed(seed % (1 << 32))
        random.seed(seed)
        try:
            return self.dataset[index]
        finally:
            if main:
                torch.set_rng_state(saved[0])
                np.random.set_state(saved[1])
                random.setstate(saved[2])


# ------------------------------------------------------------------------------------------ helpers


def _hardware(device: torch.device, world: int) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        name = "Apple MPS"
    else:
        name = f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    return f"{world} x {name}" if world > 1 else name


def _resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    amp = (amp or "off").lower()
    if amp not in ("auto", "off", "bf16", "fp16"):
        raise CapabilityError(f"amp must be auto, off, bf16 or fp16, not {amp!r}")
    if device.type != "cuda":
        if amp in ("bf16", "fp16"):
            raise CapabilityError(f"--amp {amp} needs a CUDA device (running on {device}); use --amp off")
        return None
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop saves a checkpoint and stops at the end of the step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


# ------------------------------------------------------------------------------------------ trainer


def _ignore_stop_signals(_worker_id: int) -> None:
    """Data-loader workers leave SIGINT/SIGTERM to the main process, which saves a checkpoint and stops them
    (Ctrl-C reaches the whole process group; a worker dying first would abort the run without saving)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class Trainer:
    """One training run of a zoo model on prepared datasets, through its training wrapper; see :func:`train`."""

    def __init__(self, model_name: str | ModelCard, train_ds: Dataset, val_ds: Dataset | None, *,
                 out_dir: str | os.PathLike, recipe_overrides: Mapping[str, Any] | None = None,
                 arch_overrides: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None,
                 options: TrainOptions | None = None) -> None:
        self.opt = opt = options or TrainOptions()
        self.card = model_name if isinstance(model_name, ModelCard) else get_card(model_name)
        self.arch = get_arch(self.card.architecture)
        self.arch_kwargs = {**self.card.arch_kwargs, **dict(arch_overrides or {})}
        self.recipe: Recipe = resolve_recipe(self.card.training, config, recipe_overrides,
                                             pad_multiple=self.card.input.pad_multiple)
        self.method: TrainingMethod = get_method(self.arch.name)(self.arch, self.arch_kwargs, self.recipe)
        self.adapter = self.method.adapter
        self.train_ds, self.val_ds = train_ds, val_ds
        self._check_dataset_kinds()
        self.gan = self.method.uses_gan(opt.gan)
        self.run_dir = Path(out_dir)
        if opt.export and Path(opt.export).exists() and (not Path(opt.export).is_dir() or
                                                         any(Path(opt.export).iterdir())):
            raise CapabilityError(f"--export {opt.export} exists and is not an empty folder; choose a new folder "
                                  f"(checked before training so the result is not lost at the end)")
        if opt.threads:
            torch.set_num_threads(int(opt.threads))

        self.device = select_device(opt.device)
        if opt.channels_last and self.device.type != "cuda":
            raise CapabilityError(f"channels_last is a CUDA option (running on {self.device}); leave it off")
        self.memory_format = torch.channels_last if opt.channels_last else torch.contiguous_format
        self.dist: DistInfo = init_distributed(self.device)
        self.main = self.dist.is_main
        self.amp_dtype = _resolve_amp(opt.amp, self.device)
        self.global_batch = self.recipe.batch * self.dist.world_size
        self.steps_per_epoch = self.recipe.steps_per_epoch(self.dist.world_size)
        self.total_steps = self.recipe.total_steps(self.dist.world_size)
        if opt.max_steps is not None:
            self.total_steps = min(self.total_steps, int(opt.max_steps))

        # identical initialisation on every rank (DDP also broadcasts rank 0's weights)
        torch.manual_seed(opt.seed)
        np.random.seed(opt.seed % (1 << 32))
        random.seed(opt.seed)
        self.g = self.method.build_generator(self.device)
        self.d: nn.Module | None = None
        if self.gan:
            self.d = self.method.build_discriminator().to(self.device)
        self.ema: nn.Module | None = None
        if self.recipe.ema:
            self.ema = self.method.build_network().to(self.device)
            self.ema.load_state_dict(self._inference().state_dict())
            self.ema.eval()
            set_requires_grad(self.ema, False)
        if opt.channels_last:
            for net in (self.g, self.d, self.ema):
                if net is not None:
                    net.to(memory_format=torch.channels_last)
        # per-rank RNG streams after initialisation (nothing in the models draws from them today)
        torch.manual_seed(opt.seed + 1 + self.dist.rank)

        self.opt_g = self.method.make_optimizer(self.g.parameters(), "g")
        self.sched_g = torch.optim.lr_scheduler.ExponentialLR(self.opt_g, gamma=self.recipe.lr_decay_per_epoch)
        self.opt_d = self.sched_d = None
        if self.d is not None:
            self.opt_d = self.method.make_optimizer(self.d.parameters(), "d")
            self.sched_d = torch.optim.lr_scheduler.ExponentialLR(self.opt_d, gamma=self.recipe.lr_decay_per_epoch)
        fp16 = self.amp_dtype == torch.float16
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=fp16)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=fp16)

        self.method.build_losses(self.device)
        self.perceptual_status = self.method.perceptual_status

        self.step = 0
        self.wall_before = 0.0  # wall time of earlier invocations (resume)
        self.best: dict[str, Any] | None = None
        self.last_val: dict[str, Any] | None = None
        self.last_val_step = -1
        self.resumed_from: str | None = None
        self.initialised_from: str | None = None
        self._maybe_resume()
        if opt.init and self.resumed_from is None:
            self._init_from(opt.init)
        elif opt.init and self.main:
            print(f"[facedeblur train] note: --init {opt.init} ignored: the run resumes from {self.resumed_from}")

        if self.dist.enabled:
            ddp_kw: dict[str, Any] = {"broadcast_buffers": False}
            if self.device.type == "cuda":
                ddp_kw["device_ids"] = [self.device.index]
            self.g = nn.parallel.DistributedDataParallel(self.g, **ddp_kw)
            if self.d is not None:
                self.d = nn.parallel.DistributedDataParallel(self.d, **ddp_kw)

    # ---------------------------------------------------------------------------------- data kinds

    def _check_dataset_kinds(self) -> None:
        """The datasets' declared sample kinds must feed the wrapper (:func:`facedeblur.data.kinds.compatible`)."""
        for ds, want, what in ((self.train_ds, self.method.sample_kind, "training"),
                               (self.val_ds, self.method.validation_kind, "validation")):
            if ds is None:
                continue
            have = dataset_kind(ds)
            if not compatible(have, want):
                raise DataError(f"{self.card.name} ({type(self.method).__name__}) trains on {want!r} samples (keys "
                                f"{sorted(SAMPLE_KINDS[want])}), but the {what} dataset {type(ds).__name__} gives "
                                f"{have!r} samples; build {want!r} data for it (facedeblur.data.kinds) or set the "
                                f"dataset's kind attribute to what its items are")

    def _check_batch(self, batch: Any, kind: str, where: str) -> None:
        check_item(kind, batch, f"{where} ({type(self.method).__name__} consumes {kind!r} samples)")

    # ---------------------------------------------------------------------------------- state

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "last" / _CKPT_NAME

    def _state(self, wall: float) -> dict[str, Any]:
        return {
            "model": self.card.name, "architecture": self.card.architecture, "arch_kwargs": self.arch_kwargs,
            "recipe": self.recipe.to_dict(), "gan": self.gan, "world_size": self.dist.world_size,
            "seed": self.opt.seed, "step": self.step, "epoch": self.step // self.steps_per_epoch,
            "g": unwrap(self.g).state_dict(), "d": unwrap(self.d).state_dict() if self.d is not None else None,
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict() if self.opt_d else None,
            "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict() if self.sched_d else None,
            "scaler_g": self.scaler_g.state_dict(), "scaler_d": self.scaler_d.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rng_state(), "best": self.best, "last_val_step": self.last_val_step, "wall_time_s": wall,
            "initialised_from": self.initialised_from, "method": self.method.method_state(),
        }

    def save_checkpoint(self, wall: float) -> None:
        """Write ``<run>/last/checkpoint.safetensors`` atomically (rank 0 only)."""
        if self.main:
            save_state(self.ckpt_path, self._state(wall))

    def _maybe_resume(self) -> None:
        res = self.opt.resume
        path: Path | None = None
        if isinstance(res, str) and res not in ("auto",):
            path = Path(res)
            if path.is_dir():
                path = path / _CKPT_NAME if (path / _CKPT_NAME).is_file() else path / "last" / _CKPT_NAME
        elif res == "auto" or res is True:
            if self.ckpt_path.is_file():
                path = self.ckpt_path
            elif res is True:
                raise CheckpointError(f"--resume: no checkpoint at {self.ckpt_path}; start without --resume")
        if path is None:
            return
        st = load_state(path)
        if st["architecture"] != self.card.architecture or st["arch_kwargs"] != self.arch_kwargs:
            raise CheckpointError(f"checkpoint {path} is of {st['architecture']} {st['arch_kwargs']}, this run builds "
                                  f"{self.card.architecture} {self.arch_kwargs}; use another --out/--name or the "
                                  f"same model")
        if bool(st["gan"]) != self.gan:
            raise CheckpointError(f"checkpoint {path} was trained {'with' if st['gan'] else 'without'} the GAN "
                                  f"losses; resume it with the same --no-gan setting")
        stored = dict(st["recipe"])
        if isinstance(stored.get("loss"), Mapping):  # weights added since the checkpoint was written: their defaults
            stored["loss"] = dataclasses.asdict(LossWeights.from_mapping(stored["loss"]))
        if stored != self.recipe.to_dict() and self.main:
            changed = sorted(k for k in stored if stored[k] != self.recipe.to_dict().get(k))
            print(f"[facedeblur train] note: the recipe differs from the checkpoint's in {changed}; continuing with "
                  f"the new values (optimizer state is restored from the checkpoint)")
        if int(st["world_size"]) != self.dist.world_size and self.main:
            print(f"[facedeblur train] note: the checkpoint was written by {st['world_size']} process(es), this run has "
                  f"{self.dist.world_size}; the global batch and the epoch length in steps change, so the run will "
                  f"not repeat the sample order of an uninterrupted one")
        unwrap(self.g).load_state_dict(st["g"])
        if self.d is not None:
            unwrap(self.d).load_state_dict(st["d"])
            self._load_optimizer(self.opt_d, self.sched_d, st["opt_d"], st["sched_d"], "d")
        self._load_optimizer(self.opt_g, self.sched_g, st["opt_g"], st["sched_g"], "g")
        if st["scaler_g"]:
            self.scaler_g.load_state_dict(st["scaler_g"])
        if st["scaler_d"]:
            self.scaler_d.load_state_dict(st["scaler_d"])
        if self.ema is not None:
            self.ema.load_state_dict(st["ema"] if st["ema"] is not None else self._inference().state_dict())
        self.method.load_method_state(st.get("method") or {})
        self.step = int(st["step"])
        self.best = st["best"]
        self.last_val_step = int(st.get("last_val_step", -1))
        self.wall_before = float(st["wall_time_s"])
        if self.dist.rank == 0 or st["world_size"] == 1:
            set_rng_state(st["rng"])
        else:
            torch.manual_seed(self.opt.seed + 1 + self.dist.rank + 7919 * self.step)
        self.initialised_from = st.get("initialised_from")
        self.resumed_from = str(path)

    def _load_optimizer(self, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.ExponentialLR,
                        opt_state: dict[str, Any], sched_state: dict[str, Any], which: str) -> None:
        """Restore an optimizer and its schedule, keeping the recipe's learning rate and decay if they changed.

        ``load_state_dict`` alone would bring back the checkpoint's rates and decay and silently ignore a recipe
        that changes them on resume. A changed base rate rescales the current rate by ``new / old`` (the decay
        already applied is kept); a changed decay applies from the next epoch on.
        """
        new_base = [float(g["initial_lr"]) for g in opt.param_groups]
        gamma = float(self.recipe.lr_decay_per_epoch)
        opt.load_state_dict(opt_state)
        sched.load_state_dict(sched_state)
        changed = False
        for group, base in zip(opt.param_groups, new_base):
            old_base = float(group.get("initial_lr", base))
            if abs(old_base - base) > 1e-12 * max(abs(base), 1.0):
                group["lr"] = float(group["lr"]) * base / old_base
                group["initial_lr"] = base
                changed = True
        sched.base_lrs = list(new_base)
        if abs(float(sched.gamma) - gamma) > 1e-12:
            sched.gamma = gamma
            changed = True
        if changed and self.main:
            rates = ", ".join(f"{float(g['lr']):.3g}" for g in opt.param_groups)
            print(f"[facedeblur train] note: optimizer {which}: the recipe's learning rate / decay differ from the "
                  f"checkpoint's; continuing at lr {rates} (base {new_base[0]:.3g}, decay {gamma} per epoch)")

    def _init_from(self, src: str) -> None:
        """Fine-tuning start: G (and the EMA) from ``src``, optimizer, schedule and step fresh.

        ``src`` is anything :func:`~facedeblur.train.checkpoint.read_generator_state` reads. Keys and shapes must
        match exactly, after the wrapper's :meth:`~facedeblur.train.methods.TrainingMethod.reset_loaded_state`
        (post-training state that training invalidates, e.g. a calibration, is replaced by the fresh network's).
        """
        from ..weights import load_state_dict_strict

        try:
            state, arch = read_generator_state(src)
        except CheckpointError as exc:
            raise CheckpointError(f"--init {exc}") from exc
        if arch is not None and arch != self.card.architecture:
            raise CheckpointError(f"--init {src}: a checkpoint of {arch}, this run trains {self.card.architecture}")
        g = self._inference()
        load_state_dict_strict(g, self.method.reset_loaded_state(state, g), arch_kwargs=self.arch_kwargs,
                               source=str(src))
        if self.ema is not None:
            self.ema.load_state_dict(g.state_dict())
        self.initialised_from = str(src)

    # ---------------------------------------------------------------------------------- logging

    def _log(self, record: Mapping[str, Any]) -> None:
        if not self.main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(dict(record), default=str) + "\n")

    def _run_meta(self, status: str, wall: float) -> dict[str, Any]:
        return {
            "model": self.card.name, "architecture": self.card.architecture, "arch_kwargs": self.arch_kwargs,
            "task": self.arch.task, "recipe": self.recipe.to_dict(), "gan": self.gan,
            "method": type(self.method).__name__, "sample_kind": self.method.sample_kind,
            "perceptual_loss": self.perceptual_status, "loss_notes": self.method.loss_notes,
            "options": {k: v for k, v in dataclasses.asdict(self.opt).items()},
            "device": str(self.device), "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
            "hardware": _hardware(self.device, self.dist.world_size), "world_size": self.dist.world_size,
            "global_batch": self.global_batch, "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps, "train_items": len(self.train_ds),  # type: ignore[arg-type]
            "val_items": len(self.val_ds) if self.val_ds is not None else 0,  # type: ignore[arg-type]
            "data": self.opt.data_desc, "torch": torch.__version__, "step": self.step, "status": status,
            "wall_time_s": wall, "resumed_from": self.resumed_from, "initialised_from": self.initialised_from,
            "best": self.best,
            "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def _write_meta(self, status: str, wall: float) -> None:
        if self.main:
            atomic_write_text(self.run_dir / "run.json", json.dumps(self._run_meta(status, wall), indent=2,
                                                                    default=str))

    # ---------------------------------------------------------------------------------- steps

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _backward_step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                       params) -> None:
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.recipe.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, self.recipe.grad_clip)
        scaler.step(opt)
        scaler.update()

    def _backward(self, net: str, loss: torch.Tensor) -> None:
        """:attr:`StepContext.backward`: the optimiser step of network ``net`` ("g" or "d")."""
        if net == "g":
            self._backward_step(loss, self.opt_g, self.scaler_g, self.g.parameters())
        elif net == "d" and self.d is not None:
            self._backward_step(loss, self.opt_d, self.scaler_d, self.d.parameters())
        else:
            raise ValueError(f"backward: net must be 'g' or 'd' (with a discriminator), not {net!r}")

    def _to_device(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The batch's tensors on the training device (images channels-last when that option is on)."""
        nb = self.device.type == "cuda"
        out: dict[str, Any] = {}
        for k, v in batch.items():
            if isinstance(v, torch.Tensor):
                v = v.to(self.device, non_blocking=nb)
                if v.dim() == 4 and self.memory_format == torch.channels_last:
                    v = v.contiguous(memory_format=torch.channels_last)
            out[k] = v
        return out

    def _update_ema(self) -> None:
        if self.ema is None:
            return
        decay = self.recipe.ema
        with torch.no_grad():
            g_mod = self._inference()
            for pe, p in zip(self.ema.parameters(), g_mod.parameters()):
                pe.lerp_(p.detach(), 1.0 - decay)
            for be, bg in zip(self.ema.buffers(), g_mod.buffers()):
                be.copy_(bg)

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """One iteration: the wrapper's step on the batch (moved to the device), then the EMA update. Returns the
        detached loss parts."""
        ctx = StepContext(g=self.g, d=self.d, device=self.device, autocast=self._autocast, backward=self._backward)
        parts = self.method.train_step(self._to_device(batch), ctx)
        self._update_ema()
        return parts

    # ---------------------------------------------------------------------------------- validation

    def _inference(self) -> nn.Module:
        """The shipped network inside the trained generator module (the wrapper's ``inference_network``)."""
        return self.method.inference_network(unwrap(self.g))

    def _eval_model(self) -> nn.Module:
        return self.ema if self.ema is not None else self._inference()

    @torch.no_grad()
    def validate(self) -> dict[str, Any] | None:
        """PSNR/SSIM of the output (rounded to 8 bits) and of the blurry input vs sharp, overall and by severity
        bin (rank 0). A validation set with ``source(i)`` (e.g. :class:`facedeblur.data.strong.InterleavedSet`:
        synthetic and video items) is also summarised per source, under ``"sources"``."""
        if self.val_ds is None or len(self.val_ds) == 0:  # type: ignore[arg-type]
            return None
        ds = self.val_ds
        if self.opt.val_max is not None and self.opt.val_max < len(ds):  # type: ignore[arg-type]
            ds = Subset(ds, range(self.opt.val_max))
        loader = DataLoader(ds, batch_size=self.opt.val_batch, shuffle=False, num_workers=0)
        model = self._eval_model()
        was_training = model.training
        model.eval()
        mult = max(1, int(self.card.input.pad_multiple))
        rows = []
        try:
            for i_batch, batch in enumerate(tqdm(loader, desc="validate", leave=False, disable=not self.opt.progress,
                                                 unit="batch")):
                if i_batch == 0:
                    self._check_batch(batch, self.method.validation_kind, "validation batch")
                x, bc, s = self.method.validation_views(batch)
                b, bc, s = x.to(self.device), bc.float(), s.float()
                h, w = b.shape[-2:]
                ph, pw = (-h) % mult, (-w) % mult
                if ph or pw:  # replicate-pad the last two dims (frames of a clip flattened into the batch)
                    bp = F.pad(b.reshape(-1, *b.shape[-3:]), (0, pw, 0, ph), mode="replicate")
                    bp = bp.reshape(*b.shape[:-2], h + ph, w + pw)
                else:
                    bp = b
                u = self.adapter.controls(batch, self.device)
                with self._autocast():
                    out = self.adapter(model, bp, u)
                # scored as the 8-bit image a user gets: a residual below half a grey level is no gain
                out = torch.round(out[..., :h, :w].float().clamp(0, 1).cpu() * 255) / 255
                p_o, s_o, p_b, s_b = psnr(out, s), ssim(out, s), psnr(bc, s), ssim(bc, s)
                sev = batch["severity"].reshape(-1).double() if "severity" in batch else p_b
                for i in range(out.shape[0]):
                    rows.append({"psnr": float(p_o[i]), "ssim": float(s_o[i]), "psnr_blurry": float(p_b[i]),
                                 "ssim_blurry": float(s_b[i]), "severity": float(sev[i])})
        finally:
            model.train(was_training)
        table = summarize(rows)
        source = getattr(self.val_ds, "source", None)
        if callable(source):
            names = [str(source(i)) for i in range(len(rows))]
            table["sources"] = {n: summarize([r for r, m in zip(rows, names) if m == n])
                                for n in dict.fromkeys(names)}
        return table

    def _save_best(self, table: Mapping[str, Any]) -> None:
        model = self._eval_model()
        meta = {"format": "facedeblur-generator", "model": self.card.name, "architecture": self.card.architecture,
                "arch_kwargs": json.dumps(self.arch_kwargs), "step": str(self.step), "ema": str(self.ema is not None),
                "validation": json.dumps(table)}
        save_tensors_atomic(self.run_dir / "best.safetensors", dict(model.state_dict()), meta)

    def _validate_and_track(self) -> None:
        table = self.validate()
        self.last_val_step = self.step
        if table is None:
            return
        self.last_val = table
        self._log({"type": "val", "step": self.step, **table})
        improved = self.best is None or table["psnr_gain"] > self.best["psnr_gain"]
        if improved:
            self.best = {**table, "step": self.step}
            self._save_best(table)
        note = f"{self.method.validation_note}; " if self.method.validation_note else ""
        tqdm.write(f"[step {self.step}] validation ({note}severity = blurry PSNR){' *best*' if improved else ''}"
                   f"\n{format_table(table)}")
        for name, sub in table.get("sources", {}).items():
            tqdm.write(f"  source {name}:\n{format_table(sub)}")

    # ---------------------------------------------------------------------------------- export

    def export(self, out_dirs: list[Path], wall: float) -> list[str]:
        """Write the trained generator (best by PSNR gain if validated) with ``facedeblur.weights.save_pretrained``."""
        from .. import weights as weights_mod

        save_pretrained = getattr(weights_mod, "save_pretrained", None)
        if save_pretrained is None:
            tqdm.write("[facedeblur train] facedeblur.weights.save_pretrained is not available; not exporting. "
                       f"The generator weights are in {self.run_dir / 'best.safetensors'} and the last checkpoint.")
            return []
        model = self.method.build_network()
        best_file = self.run_dir / "best.safetensors"
        if self.best is not None and best_file.is_file():
            model.load_state_dict(load_file(str(best_file)))
            table, step = self.best, self.best["step"]
        else:
            model.load_state_dict({k: v.cpu() for k, v in self._eval_model().state_dict().items()})
            table, step = self.last_val, self.step
        model.eval()
        record = {"data": self.opt.data_desc, "train_items": len(self.train_ds),  # type: ignore[arg-type]
                  "val_items": len(self.val_ds) if self.val_ds is not None else 0,  # type: ignore[arg-type]
                  "iterations": self.step, "exported_step": step, "samples": self.step * self.global_batch,
                  "wall_time_s": round(wall, 1), "hardware": _hardware(self.device, self.dist.world_size),
                  "torch": torch.__version__, "perceptual_loss": self.perceptual_status, "gan": self.gan,
                  "ema": self.recipe.ema, "seed": self.opt.seed,
                  "date": _dt.date.today().isoformat()}
        training = {**self.recipe.to_dict(), "record": record}
        metrics = dict(self.card.metrics)
        if table is not None:
            note = f" {self.method.validation_note}" if self.method.validation_note else ""
            metrics["validation"] = {**{k: v for k, v in table.items() if k != "step"}, "step": step,
                                     "definition": f"PSNR/SSIM (skimage, data range 1, RGB) on the validation split"
                                                   f"{note}; severity = blurry-input PSNR in dB"}
        card = dataclasses.replace(self.card, arch_kwargs=dict(self.arch_kwargs), training=training, metrics=metrics,
                                   training_data=self.opt.data_desc or self.card.training_data)
        written = []
        for d in out_dirs:
            # the run's own export/ folder is replaced; a user --export folder was checked to be empty at start
            save_pretrained(model, card, d, dtype=torch.float16, overwrite=d == self.run_dir / "export")
            written.append(str(d))
            tqdm.write(f"[facedeblur train] exported the generator to {d}")
        return written

    # ---------------------------------------------------------------------------------- loop

    def _loader(self) -> DataLoader:
        stream = SampleStream(len(self.train_ds), self.recipe.batch, seed=self.opt.seed,  # type: ignore[arg-type]
                              start_step=self.step, rank=self.dist.rank, world_size=self.dist.world_size)
        # own generator: worker base seeds are reproducible and the global RNG is not consumed
        gen = torch.Generator().manual_seed(_splitmix64(self.opt.seed * 7_919 + self.step) & 0x7FFF_FFFF_FFFF_FFFF)
        return DataLoader(SeededDataset(self.train_ds), batch_size=self.recipe.batch, sampler=stream,
                          num_workers=self.opt.workers, pin_memory=self.device.type == "cuda", drop_last=False,
                          generator=gen, worker_init_fn=_ignore_stop_signals if self.opt.workers else None)

    def run(self) -> TrainResult:
        """Train until the recipe's epochs, ``max_steps``, ``max_minutes`` or a signal; returns the result."""
        opt = self.opt
        t0 = time.monotonic()
        stop = _StopFlag()
        if opt.handle_signals:
            stop.install()
        status = "finished"
        try:
            if self.main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                print(f"[facedeblur train] {self.card.name}: {'GAN' if self.gan else 'supervised'}, "
                      f"perceptual loss: {self.perceptual_status}, device {self.device}"
                      f"{f' x{self.dist.world_size}' if self.dist.enabled else ''}, global batch {self.global_batch}, "
                      f"{self.steps_per_epoch} steps/epoch, target step {self.total_steps}"
                      + (f", resumed at step {self.step} from {self.resumed_from}" if self.resumed_from else "")
                      + (f", initialised from {self.initialised_from}"
                         if self.initialised_from and not self.resumed_from else ""))
                self._write_meta("running", self.wall_before)
                self._log({"type": "start" if not self.resumed_from else "resume", "step": self.step,
                           "perceptual_loss": self.perceptual_status, "world_size": self.dist.world_size,
                           "data": getattr(self.train_ds, "summary", None)})
            if self.step < self.total_steps:
                it = iter(self._loader())
                bar = tqdm(total=self.total_steps, initial=self.step, disable=not (self.main and opt.progress),
                           desc=self.card.name, dynamic_ncols=True, unit="it")
                sums: dict[str, torch.Tensor] = {}
                n_sum, t_win, checked, t_data = 0, time.monotonic(), False, 0.0
                self.g.train()
                if self.d is not None:
                    self.d.train()
                while self.step < self.total_steps:
                    t_wait = time.monotonic()
                    batch = next(it)
                    t_data += time.monotonic() - t_wait  # time the step waited for data (0 when workers keep up)
                    if not checked:
                        self._check_batch(batch, self.method.sample_kind, "training batch")
                        checked = True
                    parts = self.train_step(batch)
                    self.step += 1
                    if self.step % self.steps_per_epoch == 0:
                        self.sched_g.step()
                        if self.sched_d is not None:
                            self.sched_d.step()
                    for k, v in parts.items():
                        sums[k] = sums[k] + v if k in sums else v.clone()
                    n_sum += 1
                    bar.update(1)
                    if self.step % max(1, opt.log_every) == 0 or self.step == self.total_steps:
                        dt = max(time.monotonic() - t_win, 1e-9)
                        avg = {k: float(v) / n_sum for k, v in sums.items()}
                        rate = n_sum * self.global_batch / dt
                        if self.main:
                            self._log({"type": "train", "step": self.step, "epoch": self.step // self.steps_per_epoch,
                                       "lr": self.opt_g.param_groups[0]["lr"], "samples_per_s": rate,
                                       "data_wait_s_per_step": t_data / n_sum, **avg})
                            shown = {k: f"{avg[k]:.4f}" for k in self.method.progress_parts if k in avg}
                            bar.set_postfix(**shown, sps=f"{rate:.1f}")
                        sums, n_sum, t_win, t_data = {}, 0, time.monotonic(), 0.0
                    if opt.val_every and self.step % opt.val_every == 0 and self.step < self.total_steps:
                        if self.main:
                            self._validate_and_track()
                        barrier(self.dist)
                    elapsed_min = (time.monotonic() - t0) / 60
                    flag = 0.0
                    if stop.signum is not None:
                        flag = float(stop.signum)
                    elif opt.max_minutes is not None and elapsed_min >= opt.max_minutes:
                        flag = -1.0
                    flag = all_reduce_max(flag, self.dist, self.device) if self.dist.enabled else flag
                    if flag != 0.0:
                        if flag > 0:
                            try:
                                status = f"interrupted ({signal.Signals(int(flag)).name})"
                            except ValueError:
                                status = "interrupted"
                        else:
                            status = "time_budget"
                        break
                    if opt.ckpt_every and self.step % opt.ckpt_every == 0 and self.step < self.total_steps:
                        self.save_checkpoint(self.wall_before + time.monotonic() - t0)
                bar.close()
                del it
            if status == "finished" and opt.max_steps is not None and self.step >= opt.max_steps and \
                    self.step < self.recipe.total_steps(self.dist.world_size):
                status = "max_steps"
            exported: list[str] = []
            if status.startswith("interrupted"):
                self.save_checkpoint(self.wall_before + time.monotonic() - t0)
                if self.main:
                    print(f"[facedeblur train] {status} at step {self.step}; checkpoint saved to {self.ckpt_path}. "
                          f"Run the same command again to resume.")
            else:
                if self.main and self.last_val_step != self.step:
                    self._validate_and_track()
                barrier(self.dist)
                wall = self.wall_before + time.monotonic() - t0
                self.save_checkpoint(wall)
                if self.main:
                    dirs = [self.run_dir / "export"] + ([Path(opt.export)] if opt.export else [])
                    exported = self.export(dirs, wall)
            wall = self.wall_before + time.monotonic() - t0
            self._write_meta(status, wall)
            self._log({"type": "end", "step": self.step, "status": status, "wall_time_s": wall})
            barrier(self.dist)
            return TrainResult(run_dir=self.run_dir, step=self.step, status=status, wall_time_s=wall, best=self.best,
                               last_validation=self.last_val, exported=exported,
                               perceptual_loss=self.perceptual_status)
        finally:
            stop.restore()


def train(model_name: str | ModelCard, train_ds: Dataset, val_ds: Dataset | None, *, out_dir: str | os.PathLike,
          recipe_overrides: Mapping[str, Any] | None = None, arch_overrides: Mapping[str, Any] | None = None,
          config: Mapping[str, Any] | None = None, shutdown: bool = False, **options: Any) -> TrainResult:
    """Train zoo model ``model_name`` on prepared datasets and return a :class:`TrainResult`.

    ``train_ds`` / ``val_ds`` items are samples of the kind the architecture's training wrapper consumes
    (:mod:`facedeblur.data.kinds`; a dataset declares its own in a ``kind`` attribute, default ``moments``):
    dicts of float32 [3,H,W] images in [0,1] such as ``blurry`` and ``sharp`` (plus e.g. ``u``), and optionally
    ``severity``, the blurry-input PSNR (dB) that bins the validation table. ``out_dir`` is the run folder
    (``log.jsonl``, ``run.json``, ``best.safetensors``, ``last/checkpoint.safetensors``, ``export/``). The recipe is the card's ``training``
    section updated by ``config`` then ``recipe_overrides``; ``arch_overrides`` change the generator kwargs.
    ``options`` are :class:`TrainOptions` fields (``max_steps``, ``val_every``, ``seed``, ``resume``, ...).
    ``shutdown=True`` leaves the process group after the run (the CLI does this).
    """
    trainer = Trainer(model_name, train_ds, val_ds, out_dir=out_dir, recipe_overrides=recipe_overrides,
                      arch_overrides=arch_overrides, config=config, options=TrainOptions(**options))
    try:
        return trainer.run()
    finally:
        if shutdown:
            shutdown_distributed(trainer.dist)
