"""Compiles an autotuned Triton kernel's candidates in parallel, before its autotuner times them.

The autotuner compiles the candidates of a key it has not met one after another (~2 s each on an H100 host).
Triton's compiler releases the GIL (two threads compiled four sm_90 variants of the prefill kernel 2.1x faster on
a 2-core box), so compiling them all at once on a GPU host's cores turns an engine's load-time tuning from a minute
into seconds. Only a speed-up: whatever is missing, the autotuner compiles itself.
"""
from __future__ import annotations

import concurrent.futures
import logging
import os
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import triton

logger = logging.getLogger(__name__)
_done: set[Hashable] = set()


def precompile(name: str, key: Hashable, launcher: Any, candidates: Callable[[], Sequence[triton.Config]],
               grid: Any, args: tuple, kwargs: dict) -> None:
    """Compiles launcher's kernel for every config candidates() gives, once per key (an autotune key: what makes
    it tune anew). candidates is called only then: callers pass this on every launch."""
    if key in _done:
        return
    _done.add(key)
    configs = candidates()
    try:
        from triton.runtime._async_compile import AsyncCompileMode  # private API (Triton >= 3.4): optional

        with concurrent.futures.ThreadPoolExecutor(min(len(configs), os.cpu_count() or 1)) as pool, \
                AsyncCompileMode(pool, ignore_errors=True):
            for cfg in configs:
                launcher.fn.warmup(*args, grid=grid, **kwargs, **cfg.all_kwargs())
    except Exception as exc:
        logger.warning("parallel compilation of the %s kernel's candidates failed (%s); compiling them one by one",
                       name, exc)
