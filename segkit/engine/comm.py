"""Helpers around ``torch.distributed`` that also work when it is not initialised."""
from __future__ import annotations

import os
from typing import Any, List

import torch
import torch.distributed as dist

__all__ = ["get_world_size", "get_rank", "get_local_rank", "is_main_process", "synchronize", "all_gather_object"]


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if _initialized() else 1


def get_rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    return dist.get_rank() if _initialized() else 0


def get_local_rank() -> int:
    """Rank within this machine (``LOCAL_RANK`` from the launcher, else 0)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if _initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; a no-op without distributed training."""
    if get_world_size() > 1:
        if dist.get_backend() == "nccl" and torch.cuda.is_available():
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_gather_object(obj: Any) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process (``[obj]`` when alone)."""
    if get_world_size() == 1:
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out
