"""Device time of a short op as a CUDA graph replays it, for the dispatchers that choose between one of our Triton
kernels and a library op at run time (kernels.gemv).

The decode step runs as a CUDA graph, where no op pays its host launch cost. Timed as Python launches, an op of a
few microseconds measures its launcher instead: H100 run4 timed our batch-1 GEMV at 119-199 us and cuBLAS at
32-80 us for products whose weights stream in 7-35 us, and chose by that; the decode step's profile (graph replay)
put the fused gate/up GEMV at ~45 us a call against the 161 us its choice was made on.
"""
from __future__ import annotations

import logging
import statistics
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)

FLUSH_BYTES = 256 << 20  # past an H100's 50 MB and an H200's 60 MB of L2


def _replay_ms(body: Callable[[], object], replays: int) -> float:
    """Median ms of one replay of `body` captured as a CUDA graph (captured on a side stream after one run outside
    the capture, which sets libraries up)."""
    # A high-priority stream: never the default capture stream (a low-priority one from the same pool), on which
    # the engines and the speech path capture the graphs they keep. This graph is destroyed on return, and
    # destroying a graph can free the cuBLAS workspaces of the stream it was captured on (pytorch/pytorch#193402).
    side = torch.cuda.Stream(priority=-1)
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        body()
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (an LM engine, the speech path) keep launching while this one captures
        with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
            body()
        times = []
        for _ in range(replays):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    torch.cuda.current_stream().wait_stream(side)
    return statistics.median(times)


def graph_us(fn: Callable[[], object], before: Callable[[], object], device: torch.device, reps: int = 10,
             replays: int = 5) -> float:
    """Microseconds of device time per call of fn as a CUDA graph replays it: each call after an L2 flush (a decode
    step streams the rest of the model through L2 between two uses of a weight) and after `before` (the kernel fn
    follows when served, which a PDL launch overlaps), the flush's and before's own time subtracted. fn must have
    run once already (compiled, autotuned): nothing may synchronise inside a capture."""
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device=device)

    def body(with_fn: bool) -> None:
        for _ in range(reps):
            flush.zero_()
            before()
            if with_fn:
                fn()

    return (_replay_ms(lambda: body(True), replays) - _replay_ms(lambda: body(False), replays)) / reps * 1e3


__all__ = ["FLUSH_BYTES", "graph_us"]
