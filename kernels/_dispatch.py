"""Which implementation serves a call: a dispatcher asks `triton_module(name, tensor)`.

CUDA tensors go to the Triton module; so do CPU tensors while Triton's interpreter runs the process
(TRITON_INTERPRET=1, which only the kernel tests' child process sets, before anything imports triton), so that
whole models, not only single ops, run through the kernels in CI. None means: use the torch reference (no CUDA,
Triton not installed, or inside `reference_ops()`).
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
from collections.abc import Iterator
from types import ModuleType

from torch import Tensor

_REFERENCE_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("kernels_reference_only", default=False)


@contextlib.contextmanager
def reference_ops() -> Iterator[None]:
    """Inside this block every dispatcher runs its torch reference, on CUDA too: the eager baseline benchmarks
    compare the fused kernels with, and a way to rule the kernels out when chasing a difference."""
    token = _REFERENCE_ONLY.set(True)
    try:
        yield
    finally:
        _REFERENCE_ONLY.reset(token)


# Read once: the interpreter's child process has it set from its start (tests/kernels/conftest.py), and a lookup per
# call cost ~1 us in every dispatcher call of an eager step.
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def triton_module(name: str, t: Tensor) -> ModuleType | None:
    """kernels.<name> (a private Triton module) if it should serve tensor t, else None."""
    if _REFERENCE_ONLY.get() or not (t.is_cuda or _INTERPRET):
        return None
    try:
        return importlib.import_module(f"kernels.{name}")
    except ImportError:
        return None
