"""Programmatic dependent launch (PDL, sm_90 and later): the device side (imported only by the Triton modules; the
switch, kernels.launch, imports no Triton).

A decode step at batch 1 is a chain of ~300 short kernels, each reading what the one before wrote; between two
kernels the GPU drains the first, then launches and sets up the second. Launched with PDL (Triton's `launch_pdl`),
a kernel may start while the kernel before it is still running: its programs wait at `griddepcontrol.wait` until
that kernel has completed and its memory is visible, so only the launch and the set-up overlap, never the data.
CUDA graphs keep the dependency (the decode step and the flow run as graphs).

The rule that keeps it exact: a kernel launched with PDL calls `begin(PDL)` before its first global memory access,
reads and writes alike (a write before the wait could race with the previous kernel still reading). Waiting on the
previous kernel also orders everything before it, as that kernel waited in turn or was launched normally.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def begin(PDL: tl.constexpr):
    """A kernel's first statement: with PDL, wait for the previous kernel, then let the next one launch (it waits
    for this one in turn: releasing it early costs nothing in exactness)."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def prefetch_l2(ptr, n_elems, LANES: tl.constexpr):
    """Asks L2 for n_elems contiguous elements from ptr (16-byte aligned): LANES bulk prefetches
    (cp.async.bulk.prefetch.L2, sm_90: a hint, nothing reaches registers, nothing to wait for), sizes rounded down
    to 16 bytes. Before `begin` only for memory no kernel writes (weights): the one exception to the rule above.
    Few lanes: each warp issues its distinct addresses one by one (the instruction takes uniform registers)."""
    elem_bytes: tl.constexpr = ptr.dtype.element_ty.primitive_bitwidth // 8
    per16: tl.constexpr = 16 // elem_bytes
    lane = tl.arange(0, LANES)
    chunk = tl.cdiv(tl.cdiv(n_elems, LANES), per16) * per16
    start = lane * chunk
    size = tl.maximum(tl.minimum(n_elems - start, chunk), 0) // per16 * 16
    tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.gt.s32 p, $2, 0; @p cp.async.bulk.prefetch.L2.global [$1], $2; mov.u32 $0, 0; }",
        "=r,l,r", [ptr + start, size], dtype=tl.int32, is_pure=False, pack=1)
