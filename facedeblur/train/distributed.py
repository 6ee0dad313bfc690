"""Device selection and DistributedDataParallel set-up (``torchrun``: env RANK / WORLD_SIZE / LOCAL_RANK)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import CapabilityError

__all__ = ["DistInfo", "select_device", "init_distributed", "shutdown_distributed", "all_reduce_max",
           "broadcast_object", "barrier"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: ``rank`` of ``world_size`` (1 and 0 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _launched_distributed() -> bool:
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; under torchrun on CUDA, ``cuda:LOCAL_RANK``."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if _launched_distributed() else 0
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise CapabilityError(f"unknown device {name!r} ({exc}); use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CapabilityError(f"device {name!r} asked for but CUDA is not available here; use --device cpu "
                                  f"or auto")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CapabilityError("device 'mps' asked for but MPS is not available here; use --device cpu or auto")
    return dev


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (nccl on CUDA, gloo otherwise); else a 1-process info."""
    if not _launched_distributed():
        return DistInfo()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, enabled=True)


def shutdown_distributed(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_max(value: float, info: DistInfo, device: torch.device) -> float:
    """The maximum of ``value`` over all ranks (the value itself when not distributed)."""
    if not info.enabled:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64 if device.type != "mps" else torch.float32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
