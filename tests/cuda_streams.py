"""Torch's pool of CUDA streams, for the GPU tests that check a worker's streams are its own and none is drawn
from the pool: torch.cuda.Stream() returns the pool's 32 streams of a priority level round-robin."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

POOL = 32  # streams per priority level (c10/cuda/CUDAStream.cpp kStreamsPerPool)


def pooled_streams(device: torch.device) -> set[int]:
    """Every stream torch.cuda.Stream() can return on `device` (each priority level drawn twice round), plus
    torch.cuda.graph's default capture stream: their cuda_stream handles."""
    drawn = {torch.cuda.Stream(device, priority=p).cuda_stream for p in range(0, -8, -1) for _ in range(2 * POOL)}
    return drawn | {torch.cuda.graph(torch.cuda.CUDAGraph()).capture_stream.cuda_stream}


@contextlib.contextmanager
def pool_draws(device: torch.device, priorities: Sequence[int]) -> Iterator[dict[int, int]]:
    """{priority: how many streams were drawn from torch's pool at it during the block} (modulo 32), filled in on
    exit. Nothing else may draw meanwhile (one thread)."""
    def draw(p: int) -> int:
        return int(torch.cuda.Stream(device, priority=p).cuda_stream)

    cycles = {p: [draw(p) for _ in range(POOL)] for p in priorities}
    first = {p: cycles[p].index(draw(p)) for p in priorities}
    counts: dict[int, int] = {}
    yield counts
    for p in priorities:
        counts[p] = (cycles[p].index(draw(p)) - first[p] - 1) % POOL
