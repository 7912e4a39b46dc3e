"""Sharding work across processes started by ``torchrun`` (gloo on CPU, nccl on GPU).

Outside torchrun every helper here is a no-op for a single process (rank 0 of 1).
"""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_environment(device: str) -> str:
    """Join the process group when launched by torchrun; return this process's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    backend = "nccl" if device.startswith("cuda") else "gloo"
    # Training happens on rank 0 while the others wait, so the timeout covers a long training run.
    dist.init_process_group(backend=backend, timeout=dt.timedelta(hours=12))
    if device.startswith("cuda"):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return f"cuda:{local_rank}"
    return device


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def shard(n_items: int, align: int = 1) -> range:
    """This process's contiguous share of ``range(n_items)``, its bounds multiples of ``align``.

    Aligning shards to the evaluation chunk keeps every chunk the same as in a single process,
    so floating-point results are identical bit for bit.
    """
    rank, size = world()
    n_blocks = -(-n_items // align)
    bounds = np.minimum(np.linspace(0, n_blocks, size + 1).round().astype(int) * align, n_items)
    return range(int(bounds[rank]), int(bounds[rank + 1]))


def gather_concatenated(values: np.ndarray) -> np.ndarray:
    """Every process's ``values`` concatenated in rank order (on every process)."""
    if world()[1] == 1:
        return values
    parts: list = [None] * world()[1]
    dist.all_gather_object(parts, values)
    return np.concatenate(parts)


def close() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
