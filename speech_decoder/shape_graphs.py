"""CUDA graphs of one computation per input shape, for the speech path's launch-bound steps (flow windows,
HiFT windows): `graphs(key, fn, inputs, eager)` replays fn(*inputs) from the graph captured for `key`.

Launched op by op from Python each small op costs host time whatever its size: a first flow window is ~18,500 ops
and a HiFT window a few hundred, and H100 run4 measured one second of HiFT at 11-13 ms launched and 2.0 ms replayed.
A graph is fixed to its shapes, so each key (the caller's shape description) has its own. A key is captured the
second time it is seen, not the first (one-off shapes stay eager), where the caller allows it, up to `max_graphs`
keys; later keys run eagerly. A capture that fails turns graphs off for good: everything then runs eagerly.
No graph is ever destroyed, not even with its ShapeGraphs (kernels.launch.keep_until_exit says why).

All graphs of one ShapeGraphs share a memory pool; a graph's output is valid only until the next replay of any of
them, so the output is copied out under the lock that also serialises replays and captures.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from kernels.launch import keep_until_exit, pdl_off_after_failed_capture
from kernels.streams import own_stream

logger = logging.getLogger(__name__)
# The speech path's captures stay one at a time, though each ShapeGraphs captures on a stream of its own:
# torch.cuda.graph's entry synchronises the whole device, which CUDA refuses while any of its streams captures (and
# empties the allocator's cache, which some torch versions refuse during a capture too), so a flow and a vocoder
# capture on two threads would fail the second (and turn its graphs off for good).
_capturing = threading.Lock()


K = TypeVar("K", bound=Hashable)
# What the captured function returns: one tensor (the flow) or several (the vocoder's step).
Output = TypeVar("Output", torch.Tensor, tuple[torch.Tensor, ...])


@dataclass(frozen=True, slots=True)
class _Captured(Generic[Output]):
    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, ...]  # static copies the replays read
    output: Output


class ShapeGraphs(Generic[K, Output]):
    """Captured graphs by key, for one CUDA device."""

    def __init__(self, device: torch.device, name: str, max_graphs: int = 64) -> None:
        if device.type != "cuda":
            raise ValueError(f"{name} graphs need a CUDA device, not {device}")
        self.device, self.name, self.max_graphs = device, name, max_graphs
        self.captures = 0
        self.replays = 0
        self.failed = False
        self._graphs: dict[K, _Captured[Output]] = {}
        self._seen: OrderedDict[K, None] = OrderedDict()  # keys run once, eagerly
        self._pool: torch.cuda._POOL_HANDLE | None = None
        self._lock = threading.Lock()  # serialises replays and captures (module docstring)
        # Captures (and the run before each) go to a stream of their own (kernels.streams), not torch's default
        # capture stream, shared with whatever else in the process captures without naming a stream (the LM
        # engines did): a stream takes one capture at a time, and what any thread launches there while it captures
        # lands in the graph.
        self._capture_stream = own_stream(device)

    @torch.inference_mode()
    def __call__(self, key: K, fn: Callable[..., Output], inputs: tuple[torch.Tensor, ...],
                 eager: Callable[[], Output], capture: bool = True) -> Output:
        """fn(*inputs) replayed from key's graph (a copy of its output tensor or tensors), captured now if
        `capture` allows it and the key was seen before; else eager(), which computes the same (without padding,
        say). Whatever varies between calls of one key must be in `inputs` (device tensors): anything else fn
        reads is fixed in the graph when it is captured."""
        with self._lock:
            captured = None if self.failed else self._graphs.get(key)
            if (captured is None and capture and not self.failed and len(self._graphs) < self.max_graphs
                    and self._seen_before(key)):
                captured = self._capture_or_none(key, fn, inputs)
            if captured is None:
                return eager()
            for static, x in zip(captured.inputs, inputs):
                static.copy_(x)
            captured.graph.replay()
            self.replays += 1
            out = captured.output
            return out.clone() if isinstance(out, torch.Tensor) else tuple(t.clone() for t in out)

    def keys(self) -> list[K]:
        """The keys that have a graph, in the order they were captured."""
        with self._lock:
            return list(self._graphs)

    def _seen_before(self, key: K) -> bool:
        if key in self._seen:
            del self._seen[key]
            return True
        self._seen[key] = None
        while len(self._seen) > 4 * self.max_graphs:
            self._seen.popitem(last=False)
        return False

    def _capture_or_none(self, key: K, fn: Callable[..., Output],
                         inputs: tuple[torch.Tensor, ...]) -> _Captured[Output] | None:
        try:
            try:
                return self._capture(key, fn, inputs)
            except Exception:
                if not pdl_off_after_failed_capture(self.device):
                    raise
                logger.exception("capturing a %s graph failed with programmatic dependent launch; again without",
                                 self.name)
                return self._capture(key, fn, inputs)
        except Exception:  # out of memory, an op that cannot be captured, ...
            logger.exception("capturing a %s graph failed; it runs eagerly from now on", self.name)
            self.failed = True  # the graphs captured so far stay referenced, unused (module docstring)
            return None

    def _capture(self, key: K, fn: Callable[..., Output],
                 inputs: tuple[torch.Tensor, ...]) -> _Captured[Output]:
        static = tuple(x.clone() for x in inputs)
        # One run outside the capture, on the capture stream, as CUDA graphs require: cuBLAS / cuDNN set up lazily.
        side = self._capture_stream
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            fn(*static)
        torch.cuda.current_stream(self.device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        keep_until_exit(graph)
        # thread_local: the LM engine keeps launching (and syncing) on its own thread while this one captures.
        with _capturing, torch.cuda.device(self.device), torch.cuda.graph(graph, pool=self._pool, stream=side,
                                                                          capture_error_mode="thread_local"):
            output = fn(*static)
        captured = _Captured(graph, static, output)
        self._graphs[key] = captured
        self.captures += 1
        return captured


__all__ = ["ShapeGraphs"]
