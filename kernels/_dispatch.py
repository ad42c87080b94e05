"""Which implementation serves a call: a dispatcher asks `triton_module(name, tensor)`.

CUDA tensors go to the Triton module; so do CPU tensors while Triton's interpreter runs the process
(TRITON_INTERPRET=1, which only the kernel tests' child process sets, before anything imports triton), so that
whole models, not only single ops, run through the kernels in CI. None means: use the torch reference (no CUDA, or
Triton not installed).
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

from torch import Tensor


def triton_module(name: str, t: Tensor) -> ModuleType | None:
    """kernels.<name> (a private Triton module) if it should serve tensor t, else None."""
    if not (t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        return None
    try:
        return importlib.import_module(f"kernels.{name}")
    except ImportError:
        return None
