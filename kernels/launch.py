"""How our kernels are launched: programmatic dependent launch (kernels._pdl) on or off, how long the CUDA graphs
that replay them live, and which of several graphs captured for one job replays fastest.

PDL is on by default where the device is sm_90 or later; STEPAUDIO_PDL=0 turns it off, set_pdl switches it at run
time (benchmarks measure both; CUDA graphs keep what they captured). Imports no Triton: the engine and the speech
path call it on any machine.
"""
from __future__ import annotations

import functools
import os
import statistics
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

K = TypeVar("K")

_enabled = os.environ.get("STEPAUDIO_PDL", "1") != "0"
_kept_graphs: list[torch.cuda.CUDAGraph] = []


@functools.cache
def _capable(index: int) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 9


def use_pdl(t: torch.Tensor) -> bool:
    """Whether kernels launched for tensor t use PDL: a CUDA device of compute capability 9 or later, unless turned
    off. Never under the interpreter (CPU tensors)."""
    return _enabled and t.is_cuda and _capable(t.device.index if t.device.index is not None else 0)


def set_pdl(on: bool) -> None:
    """Turns PDL on or off for launches from now on."""
    global _enabled
    _enabled = on


def pdl_off_after_failed_capture(device: torch.device) -> bool:
    """A CUDA-graph capture that failed with PDL on: turns it off for good and returns True, so that the caller
    captures once more without it (graphs are worth more than PDL); False when PDL was not in play."""
    if not (device.type == "cuda" and use_pdl(torch.empty(0, device=device))):
        return False
    set_pdl(False)
    return True


def keep_until_exit(graph: torch.cuda.CUDAGraph) -> None:
    """Holds a captured graph until the process exits, whatever happens to its owner. PyTorch keys cuBLAS
    workspaces by capture stream, and versions with pytorch/pytorch#175276 free a stream's workspaces when any graph
    captured on it is destroyed, while every other graph captured there keeps the freed address and may fault at
    its next replay (pytorch/pytorch#193402). An engine's decode graphs share its capture stream, and the speech
    path's flow graphs (and its HiFT graphs) theirs, so an engine capturing again after a failed capture, or a
    speech model's graphs dropped, would put the graphs captured beside them at risk. A graph's memory is its
    pool's: small for these."""
    _kept_graphs.append(graph)


def fastest(candidates: Sequence[K], time_ms: Callable[[K], float], rounds: int = 3) -> tuple[K, dict[K, float]]:
    """The candidate with the least median of time_ms over `rounds` rounds, and every candidate's median. Each round
    times every candidate once, in turn, so that drift (clocks, another process's load) hits all alike; a tie goes
    to the earlier candidate."""
    samples: dict[K, list[float]] = {c: [] for c in candidates}
    for _ in range(rounds):
        for c in candidates:
            samples[c].append(time_ms(c))
    medians = {c: statistics.median(v) for c, v in samples.items()}
    return min(candidates, key=medians.__getitem__), medians


def graph_replay_ms(graph: torch.cuda.CUDAGraph, replays: int = 10) -> float:
    """Mean device ms of one replay of a captured graph, over `replays` back-to-back replays on the current stream
    after one untimed replay."""
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / replays
