"""DistributedDataParallel plumbing of head training: the process group, rank-wide means and flags, buffer sync.

Under torchrun (WORLD_SIZE > 1) `setup_distributed` initialises the process group itself (NCCL on
CUDA, each rank on ``cuda:<LOCAL_RANK>``; gloo on CPU) unless the caller already did; without it
every function here is the identity.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["DistInfo", "all_mean", "any_rank", "setup_distributed", "sync_buffers"]


@dataclass
class DistInfo:
    """Process-group facts of this run."""

    world: int = 1
    rank: int = 0
    owned: bool = False  # we initialised the group and destroy it at the end

    @property
    def active(self) -> bool:
        return self.world > 1


def setup_distributed(device: str) -> tuple[DistInfo, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), torch.device(device)
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    owned = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owned = True
    info = DistInfo(dist.get_world_size(), dist.get_rank(), owned)
    logger.info("DDP: rank %d of %d on %s (%s)", info.rank, info.world, dev, dist.get_backend())
    return info, dev


def all_mean(values: Sequence[float], info: DistInfo, device: torch.device) -> list[float]:
    """Mean of per-rank values across ranks (identity without DDP)."""
    if not info.active:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / info.world).tolist()


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    if not info.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def sync_buffers(module: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank."""
    if info.active:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)
