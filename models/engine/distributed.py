"""Device, precision and distributed set-up: :class:`_Runtime` (where and how a process computes) and
the few collectives the loop needs. Under ``torchrun`` (detected from ``WORLD_SIZE`` / ``RANK`` /
``LOCAL_RANK``) each process joins the process group (NCCL on CUDA, Gloo on CPU) and trains a
DistributedDataParallel replica; without it every helper here is a no-op."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sim2obs.device import select_device
from sim2obs.errors import ConfigError
from sim2obs.models.engine.config import TrainerConfig, resolve_precision


@dataclass
class _Runtime:
    device: torch.device
    precision: str          # fp32 | bf16 | fp16
    channels_last: bool
    rank: int
    world: int

    @property
    def autocast_dtype(self):
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self):
        dtype = self.autocast_dtype
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _dist():
    """``torch.distributed`` when a process group is initialised, else None."""
    return torch_dist if torch_dist.is_available() and torch_dist.is_initialized() else None


def setup_runtime(cfg: TrainerConfig) -> _Runtime:
    """Resolve device and precision; join the torchrun process group when launched by it."""
    device = select_device(cfg.device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = 0
    if world > 1:
        rank = int(os.environ["RANK"])
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not torch_dist.is_initialized():
            torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    precision, channels_last = resolve_precision(device, cfg.precision, cfg.channels_last)
    if cfg.batch_size % world:
        raise ConfigError("trainer.batch_size", f"must be divisible by the number of processes ({world})",
                          value=cfg.batch_size)
    return _Runtime(device, precision, channels_last, rank, world)


def wrap_ddp(rt: _Runtime, model: nn.Module) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when several processes train, else ``model``."""
    if rt.world <= 1:
        return model
    return DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)


def barrier() -> None:
    """Wait for every process (no-op outside a process group)."""
    dist = _dist()
    if dist is not None:
        dist.barrier()


def broadcast_buffers(model: nn.Module) -> None:
    """Give every process rank 0's buffers (e.g. batch-norm statistics) before evaluating shards."""
    dist = _dist()
    if dist is not None:
        for b in model.buffers():
            dist.broadcast(b, 0)


def _all_reduce_sum(*values: float, device: torch.device) -> list[float]:
    dist = _dist()
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist is not None:
        dist.all_reduce(t)
    return t.tolist()


def all_gather(obj: Any, world: int) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` outside a process group)."""
    dist = _dist()
    if dist is None:
        return [obj]
    gathered: list = [None] * world
    dist.all_gather_object(gathered, obj)
    return gathered
