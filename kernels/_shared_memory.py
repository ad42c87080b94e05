"""How deep a software-pipelined Triton tile may go on this GPU (imported only by the Triton modules).

A tile that streams its operands through shared memory takes num_stages times one stage's bytes; past the GPU's
limit Triton refuses to launch it (OutOfResources) rather than shrinking it. The tiles are sized for 2-byte
weights, and fp32 (the GPU tests' dtype) doubles every stage: an H100's 227 KB per block held the gate/up + norm
GEMV tile in bf16 but not in fp32 (256 KB). So the stage count comes down to what fits.
"""
from __future__ import annotations

import functools

import torch
import triton


@functools.cache
def _limit(device_index: int) -> int:
    return int(triton.runtime.driver.active.utils.get_device_properties(device_index)["max_shared_mem"])


def shared_memory_limit(device: torch.device | int | None = None) -> int:
    """Bytes of shared memory one program may take on `device` (default: the current CUDA device)."""
    if isinstance(device, torch.device):
        device = device.index
    return _limit(torch.cuda.current_device() if device is None else device)


def fitting_stages(stages: int, stage_bytes: int, limit: int) -> int:
    """The most pipeline stages, up to `stages`, whose stage_bytes each fit in `limit` (at least 1: one stage that
    does not fit is left to Triton to refuse)."""
    return max(1, min(stages, limit // max(stage_bytes, 1)))


__all__ = ["fitting_stages", "shared_memory_limit"]
