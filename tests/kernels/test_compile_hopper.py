"""The attention kernels compile for an H100 (sm_90) here, without a GPU: Triton ships ptxas, so a kernel that the
interpreter runs but the GPU compiler rejects (a layout it cannot lower, a tile that overflows shared memory) fails
in CI instead of on a lent GPU's few minutes. Compiles the configs the GPU runs, not every autotune candidate."""
from __future__ import annotations

import os
import re

import pytest

triton = pytest.importorskip("triton")

from kernels import _attention_triton as A  # noqa: E402

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                                reason="compiles for the GPU; the interpreter child runs the kernels instead")

H100_SHARED_BYTES = 227 * 1024  # the most dynamic shared memory one block may use on sm_90


def _compile_sm90(fn, pointers: dict[str, str], constexprs: dict[str, object], floats: tuple[str, ...] = (), *,
                  num_warps: int, num_stages: int):  # type: ignore[no-untyped-def]
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = fn.arg_names
    signature = {n: pointers.get(n) or ("constexpr" if n in constexprs else "fp32" if n in floats else "i32")
                 for n in names}
    src = ASTSource(fn=fn, signature=signature,
                    constexprs={(names.index(k),): v for k, v in constexprs.items()})
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                            options={"num_warps": num_warps, "num_stages": num_stages})
    assert kernel.asm["cubin"], "no cubin"
    assert kernel.metadata.shared <= H100_SHARED_BYTES, kernel.metadata.shared
    return kernel


QKV = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "BT": "*i32", "CU": "*i32", "CTX": "*i32", "SLOPES": "*fp32"}


@pytest.mark.parametrize("head_dim,group,bias", [(128, 12, "sqrt_alibi"), (64, 12, "sqrt_alibi"), (64, 6, "none")])
def test_prefill_compiles_for_hopper(head_dim: int, group: int, bias: str) -> None:
    """The first autotune config the head dim keeps (the GPU's usual pick), with the far-tile polynomial in it
    exactly when the bias is sqrt-ALiBi."""
    cfg = A._prune_prefill(A._prefill_configs(), {}, HEAD_DIM=head_dim)[0]
    code = A._BIAS_CODE[bias]
    kernel = _compile_sm90(
        A._paged_prefill_kernel, {**QKV, "O": "*bf16"},
        dict(GROUP=group, HEAD_DIM=head_dim, BLOCK_D=head_dim, PAGE=256, BIAS=code, MAX_Q_BUCKET=4096, DOT="tf32",
             **cfg.kwargs), ("scale_log2",), num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    assert ("rsqrt" in kernel.asm["ptx"]) == (code == 2)
    # The far tiles' bias polynomial is a K=16 dot on Hopper's wgmma (A [BLOCK_M, 16], B [16, BLOCK_N]), not
    # per-score FMAs.
    bm, bn = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"]
    bias_dot = re.search(rf"ttng\.warp_group_dot .*: tensor<{bm}x16xbf16.* \* !ttg\.memdesc<16x{bn}xbf16",
                         kernel.asm["ttgir"])
    assert (bias_dot is not None) == (code == 2)


def test_decode_and_its_reduce_and_store_kv_compile_for_hopper() -> None:
    _compile_sm90(A._paged_decode_kernel, {**QKV, "MP": "*fp32", "LP": "*fp32", "ACCP": "*fp32"},
                  dict(NUM_HEADS=96, NUM_SPLITS=8, GROUP=12, GROUP_PAD=16, HEAD_DIM=128, BLOCK_D=128, PAGE=256,
                       BIAS=2, BLOCK_N=64, DOT="tf32"), ("scale_log2",), num_warps=4, num_stages=3)
    _compile_sm90(A._decode_reduce_kernel, {"MP": "*fp32", "LP": "*fp32", "ACCP": "*fp32", "O": "*bf16", "CU": "*i32"},
                  dict(NUM_HEADS=96, NUM_SPLITS=8, SPLITS_PAD=8, HEAD_DIM=128, BLOCK_D=128), num_warps=4,
                  num_stages=1)
    _compile_sm90(A._store_kv_kernel, {"K": "*bf16", "V": "*bf16", "KC": "*bf16", "VC": "*bf16", "SLOTS": "*i64"},
                  dict(NUM_KV_HEADS=8, HEADS_PAD=8, HEAD_DIM=128, BLOCK_D=128, PAGE=256), num_warps=4, num_stages=1)
