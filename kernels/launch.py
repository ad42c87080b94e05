"""How our Triton kernels are launched: programmatic dependent launch (kernels._pdl) on or off.

On by default where the device is sm_90 or later; STEPAUDIO_PDL=0 turns it off, set_pdl switches it at run time
(benchmarks measure both; CUDA graphs keep what they captured). Imports no Triton: the engine and the speech path
call it on any machine.
"""
from __future__ import annotations

import functools
import os

import torch

_enabled = os.environ.get("STEPAUDIO_PDL", "1") != "0"


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
