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
import threading
from collections.abc import Callable

import torch

from kernels.streams import own_stream

logger = logging.getLogger(__name__)

FLUSH_BYTES = 256 << 20  # past an H100's 50 MB and an H200's 60 MB of L2


_threads = threading.local()  # .streams: {device index: the thread's timing stream}


def _timing_stream(device: torch.device) -> torch.cuda.Stream:
    """This thread's stream for timings on `device`, made once (kernels.streams). Never a stream on which anything
    else captures or runs: a timing graph is destroyed on return, which can free the cuBLAS workspaces of the
    stream it was captured on (pytorch/pytorch#193402), and two threads timing at once each capture on their own.
    A pooled stream (torch.cuda.Stream()) could be any of those: the engines' and the speech path's streams, the
    streams their kept graphs were captured on, another thread's timing stream."""
    streams: dict[int, torch.cuda.Stream] = _threads.__dict__.setdefault("streams", {})
    index = torch.cuda.current_device() if device.index is None else device.index
    if index not in streams:
        streams[index] = own_stream(torch.device("cuda", index), priority=-1)
    return streams[index]


def _replay_ms(body: Callable[[], object], device: torch.device, replays: int) -> float:
    """Median ms of one replay of `body` captured as a CUDA graph (captured on this thread's timing stream after one
    run outside the capture, which sets libraries up)."""
    side = _timing_stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
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
    torch.cuda.current_stream(device).wait_stream(side)
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

    return (_replay_ms(lambda: body(True), device, replays)
            - _replay_ms(lambda: body(False), device, replays)) / reps * 1e3


__all__ = ["FLUSH_BYTES", "graph_us"]
