"""CUDA streams that one worker owns alone: own_stream(device, priority).

torch.cuda.Stream() never makes a stream: it hands one out round-robin from a pool of 32 per priority level per
device (c10/cuda/CUDAStream.cpp getStreamFromPool, torch 2.11 and 2.13), shared with every other caller in the
process: torch.cuda.graph's default capture stream (one pool stream, taken the first time a graph is captured
without a stream), the side streams that libraries and our timings ask for, another engine's stream. The 33rd
request at one level returns the first stream again, so two workers can end up on one stream without knowing: their
kernels queue behind each other, and while one captures a CUDA graph there the other's kernels land in the graph
(or its synchronisations fail the capture: "operation not permitted when stream is capturing").

torch 2.11 and 2.13 have no Python call that makes a stream outside the pool: torch.cuda.ExternalStream wraps a
stream made elsewhere, and torch.cuda.cudart().cudaStreamCreate makes a blocking one (it synchronises with the
legacy default stream, where the loads and other threads launch, and a capture on it fails on their work) of the
default priority. So own_stream makes a non-blocking stream of the given priority through the CUDA driver
(libcuda, which torch and Triton load too) in torch's context of the device, and wraps it; where that fails, it
warns and falls back to a pooled stream. Such a stream is never destroyed: graphs captured on it and cuBLAS
workspaces keyed by it live until the process exits.
"""
from __future__ import annotations

import ctypes
import functools
import logging

import torch

logger = logging.getLogger(__name__)

_NON_BLOCKING = 0x1  # CU_STREAM_NON_BLOCKING: no implicit synchronisation with the legacy default stream, as torch's


@functools.cache
def _driver() -> ctypes.CDLL:
    return ctypes.CDLL("libcuda.so.1")


def _check(result: int, call: str) -> None:
    if result != 0:
        name = ctypes.c_char_p()
        _driver().cuGetErrorName(result, ctypes.byref(name))
        raise RuntimeError(f"{call} failed: {(name.value or b'CUresult %d' % result).decode()}")


def own_stream(device: torch.device, priority: int = 0) -> torch.cuda.Stream:
    """A new non-blocking CUDA stream on `device` (its index, else the current device) that torch never hands to
    anyone else. priority: lower is more urgent; the driver clamps it to the device's range, as torch does.
    Where the driver cannot be reached or refuses, a pooled stream, with a warning: serving beats failing."""
    if device.type != "cuda":
        raise ValueError(f"a CUDA stream needs a CUDA device, not {device}")
    torch.cuda.init()
    index = torch.cuda.current_device() if device.index is None else device.index
    try:
        handle = _driver_stream(index, priority)
    except (OSError, AttributeError, RuntimeError) as exc:  # no libcuda.so.1, a missing symbol, a CUresult
        logger.warning("cannot make a CUDA stream outside torch's pool (%s): using a pooled one, which another "
                       "worker may share", exc)
        return torch.cuda.Stream(torch.device("cuda", index), priority=priority)
    return torch.cuda.ExternalStream(handle, device=torch.device("cuda", index))


def _driver_stream(index: int, priority: int) -> int:
    lib = _driver()
    dev, ctx, handle = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_void_p()
    _check(lib.cuDeviceGet(ctypes.byref(dev), index), "cuDeviceGet")
    # The device's primary context is torch's (the runtime's). Retained once per stream and never released: the
    # stream lives as long as the process. Pushed for this call only: this thread's current context stays as it was.
    _check(lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
    _check(lib.cuCtxPushCurrent_v2(ctx), "cuCtxPushCurrent")
    try:
        _check(lib.cuStreamCreateWithPriority(ctypes.byref(handle), _NON_BLOCKING, priority),
               "cuStreamCreateWithPriority")
    finally:
        lib.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))
    if not handle.value:
        raise RuntimeError("cuStreamCreateWithPriority gave no stream")
    return handle.value


__all__ = ["own_stream"]
