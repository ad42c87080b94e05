"""Timing for the GPU benchmarks: medians of CUDA-event timings after warm-up (perf_counter on the CPU), and of
CUDA-graph replays."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def bench(fn: Callable[[], object], *, warmup: int = 5, iters: int = 20) -> float:
    """Median milliseconds of fn() (CUDA events after warm-up; perf_counter on CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def attempt(fn: Callable[[], float]) -> float | str:
    try:
        return fn()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "oom"
    except Exception as exc:  # a baseline that cannot run here is reported, not fatal
        return f"error: {type(exc).__name__}: {str(exc)[:160]}"


def graphed(fn: Callable[[], object], iters: int) -> float:
    """Median ms of fn captured once in a CUDA graph and replayed (no Python launch cost in the timing)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return bench(graph.replay, iters=iters)
