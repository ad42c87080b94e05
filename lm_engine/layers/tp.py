"""Tensor-parallel rank/size: (0, 1) when torch.distributed is not initialised."""
from __future__ import annotations

import torch
import torch.distributed as dist


def tp_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def tp_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    if tp_size() > 1:
        dist.all_reduce(x)
    return x


def divide(n: int, d: int) -> int:
    if n % d != 0:
        raise ValueError(f"{n} is not divisible by the tensor-parallel size {d}")
    return n // d
