"""The attention kernels compile for an H100 (sm_90) here, without a GPU: Triton ships ptxas, so a kernel that the
interpreter runs but the GPU compiler rejects (a layout it cannot lower, a tile that overflows shared memory) fails
in CI instead of on a lent GPU's few minutes. Compiles the configs the GPU runs, not every autotune candidate; the LM-op
and vocoder kernels too."""
from __future__ import annotations

import itertools
import os
import re
from types import SimpleNamespace

import pytest

triton = pytest.importorskip("triton")

from kernels import _attention_triton as A  # noqa: E402
from kernels import _precompile as P  # noqa: E402

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                                reason="compiles for the GPU; the interpreter child runs the kernels instead")

H100_SHARED_BYTES = 227 * 1024  # the most dynamic shared memory one block may use on sm_90


def _compile_sm90(fn, pointers: dict[str, str], constexprs: dict[str, object], floats: tuple[str, ...] = (), *,
                  num_warps: int, num_stages: int, aligned: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    """Compiles as the JIT specialises a real launch, so that this is the code the GPU runs: pointers 16-byte
    aligned (torch's allocations are), the integers named in `aligned` divisible by 16, and unit strides passed in
    `constexprs` as 1 (the JIT turns an integer equal to 1 into a constant). Without that the compiler cannot
    prove rows contiguous: it emits per-element loads and no asynchronous copies, and half the shared memory.
    Kernels with a PDL switch compile with it on, as an H100 launches them."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = fn.arg_names
    if "PDL" in names:  # launched with programmatic dependent launch on sm_90, as kernels.launch has it there
        constexprs = {"PDL": True, **constexprs}
    signature = {n: pointers.get(n) or ("constexpr" if n in constexprs else "fp32" if n in floats else "i32")
                 for n in names}
    div16 = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n in pointers or n in aligned}
    src = ASTSource(fn=fn, signature=signature,
                    constexprs={(names.index(k),): v for k, v in constexprs.items()}, attrs=div16)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                            options={"num_warps": num_warps, "num_stages": num_stages})
    assert kernel.asm["cubin"], "no cubin"
    if constexprs.get("PDL"):  # waits for the previous kernel before touching memory
        assert "griddepcontrol.wait" in kernel.asm["ptx"] and "griddepcontrol.launch_dependents" in kernel.asm["ptx"]
    assert kernel.metadata.shared <= H100_SHARED_BYTES, kernel.metadata.shared
    return kernel


QKV = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "BT": "*i32", "CU": "*i32", "CTX": "*i32", "SLOPES": "*fp32"}
# Contiguous q/out [tokens, heads, D] and caches [blocks, page, kv_heads, D]: unit head-dim strides, every other
# stride a multiple of D.
UNIT_STRIDES = {"stride_qd": 1, "stride_kd": 1, "stride_vd": 1, "stride_od": 1}
ALIGNED_STRIDES = ("stride_qt", "stride_qh", "stride_kb", "stride_ks", "stride_kh", "stride_vb", "stride_vs",
                   "stride_vh", "stride_ot", "stride_oh")


@pytest.mark.parametrize("head_dim,group,bias", [(128, 12, "sqrt_alibi"), (64, 12, "sqrt_alibi"), (64, 6, "none")])
def test_prefill_compiles_for_hopper(head_dim: int, group: int, bias: str) -> None:
    """The first autotune config the head dim keeps (the GPU's usual pick), with the far-tile polynomial in it
    exactly when the bias is sqrt-ALiBi."""
    cfg = A._prune_prefill(A._prefill_configs(), {}, HEAD_DIM=head_dim)[0]
    code = A._BIAS_CODE[bias]
    kernel = _compile_sm90(
        A._paged_prefill_kernel, {**QKV, "O": "*bf16"},
        dict(GROUP=group, HEAD_DIM=head_dim, BLOCK_D=head_dim, PAGE=256, BIAS=code, MAX_Q_BUCKET=4096, DOT="tf32",
             TMA=False, **cfg.kwargs, **UNIT_STRIDES), ("scale_log2",), num_warps=cfg.num_warps,
        num_stages=cfg.num_stages, aligned=ALIGNED_STRIDES)
    assert ("rsqrt" in kernel.asm["ptx"]) == (code == 2)
    # K/V tiles reach shared memory by 16-byte asynchronous copies (cp.async.cg exists only for 16 bytes), which
    # Triton's software pipeline overlaps with the previous tile's math.
    assert "cp.async.cg.shared.global" in kernel.asm["ptx"]
    # The far tiles' bias polynomial is a K=16 dot on Hopper's wgmma (A [BLOCK_M, 16], B [16, BLOCK_N]), not
    # per-score FMAs.
    bm, bn = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"]
    bias_dot = re.search(rf"ttng\.warp_group_dot .*: tensor<{bm}x16xbf16.* \* !ttg\.memdesc<16x{bn}xbf16",
                         kernel.asm["ttgir"])
    assert (bias_dot is not None) == (code == 2)


@pytest.mark.parametrize("head_dim", [128, 64])
def test_prefill_by_tma_compiles_for_hopper(head_dim: int) -> None:
    """The TMA variant (tma=True with pages of whole tiles) at each head dim's first autotune config: its unmasked
    tiles' K and V arrive by bulk tensor copies from descriptors built on the device (global scratch for them),
    the masked last tiles still by cp.async, and nothing spills inside the tile loops."""
    cfg = A._prune_prefill(A._prefill_configs(), {}, HEAD_DIM=head_dim)[0]
    kernel = _compile_sm90(
        A._paged_prefill_kernel, {**QKV, "O": "*bf16"},
        dict(GROUP=12, HEAD_DIM=head_dim, BLOCK_D=head_dim, PAGE=256, BIAS=2, MAX_Q_BUCKET=4096, DOT="tf32",
             TMA=True, **cfg.kwargs, **UNIT_STRIDES), ("scale_log2",), num_warps=cfg.num_warps,
        num_stages=cfg.num_stages, aligned=ALIGNED_STRIDES)
    ptx = kernel.asm["ptx"]
    # Triton 3.6 (the lent machines' python3) spells the copy's destination shared::cluster, 3.7 shared::cta: the
    # same copy to this block's shared memory (a one-block cluster)
    assert re.search(r"cp\.async\.bulk\.tensor\.2d\.shared::(cta|cluster)\.global", ptx)
    assert "cp.async.cg.shared.global" in ptx
    assert kernel.metadata.global_scratch_size > 0
    assert _spills_in_loops(kernel.asm["sass"]) == 0


def test_decode_and_its_reduce_and_store_kv_compile_for_hopper() -> None:
    """The decode kernel as the engine runs it (storing the step's K/V itself) and as a bare attention. Storing
    must not change the tile loop: the same shared memory both ways (substituting the new key inside the tiles
    had sent every K/V tile through registers and back, +16 KB, and ~1.9x the loop's instructions)."""
    shared = {}
    for store_new in (True, False):
        kernel = _compile_sm90(
            A._paged_decode_kernel, {**QKV, "MP": "*fp32", "LP": "*fp32", "ACCP": "*fp32", "KN": "*bf16",
                                     "VN": "*bf16", "SLOTS": "*i64"},
            dict(NUM_HEADS=96, NUM_SPLITS=8, GROUP=12, GROUP_PAD=16, HEAD_DIM=128, BLOCK_D=128, PAGE=16, BIAS=2,
                 BLOCK_N=64, DOT="tf32", STORE_NEW=store_new, stride_qd=1, stride_kd=1, stride_vd=1),
            ("scale_log2",), num_warps=4, num_stages=3,
            aligned=ALIGNED_STRIDES + ("stride_knt", "stride_knh", "stride_vnt", "stride_vnh"))
        shared[store_new] = kernel.metadata.shared
    assert shared[True] == shared[False], shared
    _compile_sm90(A._decode_reduce_kernel, {"MP": "*fp32", "LP": "*fp32", "ACCP": "*fp32", "O": "*bf16", "CU": "*i32"},
                  dict(NUM_HEADS=96, NUM_SPLITS=8, SPLITS_PAD=8, HEAD_DIM=128, BLOCK_D=128), num_warps=4,
                  num_stages=1)
    _compile_sm90(A._store_kv_kernel, {"K": "*bf16", "V": "*bf16", "KC": "*bf16", "VC": "*bf16", "SLOTS": "*i64"},
                  dict(NUM_KV_HEADS=8, HEADS_PAD=8, HEAD_DIM=128, BLOCK_D=128, PAGE=256), num_warps=4, num_stages=1)


def test_a_new_autotune_key_compiles_each_candidate_once_before_tuning(caplog) -> None:
    """_precompile_candidates hands every candidate the autotuner keeps for a key to the compiler (in parallel)
    the first time the key is met, and nothing after; a failure there only logs (the autotuner compiles itself)."""
    import torch

    calls: list[dict] = []
    launcher = SimpleNamespace(configs=A._prefill_configs(),
                               fn=SimpleNamespace(warmup=lambda *args, grid, **kw: calls.append(kw)))
    q = torch.zeros(2, 12, 64, dtype=torch.bfloat16)
    kwargs = dict(GROUP=12, HEAD_DIM=64, BLOCK_D=64, PAGE=16, BIAS=2, DOT="tf32", MAX_Q_BUCKET=64, TMA=False)
    P._done.clear()
    A._precompile_candidates(launcher, None, (q,), kwargs)
    assert len(calls) == len(A._prefill_configs()) == 12
    assert {(c["BLOCK_M"], c["BLOCK_N"], c["K_NMAJOR"], c["num_warps"], c["num_stages"]) for c in calls} == {
        (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["K_NMAJOR"], c.num_warps, c.num_stages)
        for c in A._prefill_configs()}
    A._precompile_candidates(launcher, None, (q,), kwargs)
    assert len(calls) == 12  # known key: nothing compiled again
    A._precompile_candidates(launcher, None, (q.float(),), {**kwargs, "DOT": "ieee"})
    assert len(calls) == 13  # fp32 parity prefill: one candidate

    def broken(*args, grid, **kw):  # type: ignore[no-untyped-def]
        raise RuntimeError("no driver")

    launcher.fn.warmup = broken
    A._precompile_candidates(launcher, None, (q,), {**kwargs, "PAGE": 256})
    assert "compiling them one by one" in caplog.text
    P._done.clear()


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_lm_op_kernels_compile_for_hopper(dtype: str) -> None:
    """RMSNorm(+residual) at TTS-3B's width (3072 -> BLOCK 4096, 16 warps) and SwiGLU as the engine launches them."""
    from kernels import _lm_ops_triton as L

    t = f"*{dtype}"
    for has_res in (False, True):
        _compile_sm90(L._rms_norm_kernel, {"X": t, "R": t, "W": t, "O": t, "H": t},
                      dict(HAS_RES=has_res, BLOCK=4096), ("eps",), num_warps=16, num_stages=1)
    _compile_sm90(L._silu_and_mul_kernel, {"X": t, "O": t}, dict(BLOCK=4096), num_warps=4, num_stages=1)


def test_vocoder_kernels_compile_for_hopper() -> None:
    """HiFT's fused ops (fp32, as the vocoder runs) with CosyVoice-300M-25Hz's constants: iSTFT n_fft 16 / hop 4,
    leaky-ReLU and snake with and without the residual sum, the NSF sine source (upsample 256, 9 harmonics)."""
    from kernels import _vocoder_triton as V

    _compile_sm90(V._istft_head_kernel, {"X": "*fp32", "Y": "*fp32"}, dict(N_FFT=16, HOP=4, BLOCK=256),
                  ("mag_clip", "audio_limit"), num_warps=4, num_stages=1)
    for act in (0, 1):
        for has_y in (False, True):
            _compile_sm90(V._act_kernel, {"X": "*fp32", "Yin": "*fp32", "ALPHA": "*fp32", "S": "*fp32", "A": "*fp32"},
                          dict(HAS_Y=has_y, ACT=act, STORE_SUM=has_y, BLOCK=1024), ("slope", "scale"),
                          num_warps=4, num_stages=1)
    for merge in (False, True):
        _compile_sm90(V._sine_source_kernel,
                      {n: "*fp32" for n in ("F0", "PREFIX", "NOISE", "PHASE", "W", "BIAS", "OUT")},
                      dict(UPSAMPLE=256, NUM_HARM=9, MERGE=merge, BLOCK=512),
                      ("inv_sr", "sine_amp", "noise_std", "voiced_threshold"), num_warps=4, num_stages=1)


def _spills_in_loops(sass: str) -> int:
    """Local-memory stores and loads inside the kernel's loops (a backward branch's range): spills there cost on
    every tile; a few around the prologue and epilogue (registers saved across the loops) do not."""
    labels: dict[str, int] = {}
    ins: list[str] = []
    for line in sass.splitlines():
        if re.match(r"^LBB\d+:", line):
            labels[line[:-1]] = len(ins)
        elif "\t" in line and not line.startswith("Function"):
            ins.append(line.split("\t", 1)[1])
    loops = [(labels[m.group(1)], i) for i, op in enumerate(ins)
             for m in [re.search(r"BRA (?:\S+ )?(LBB\d+)", op)] if m and labels.get(m.group(1), i) < i]
    assert loops, "no loop found in the SASS"
    return sum(1 for i, op in enumerate(ins)
               if ("STL" in op or "LDL" in op) and any(b <= i <= e for b, e in loops))


@pytest.mark.parametrize("page", [16, 256])
def test_no_d128_prefill_candidate_spills_registers_in_its_loops(page: int) -> None:
    """Every tile the autotuner is given at d128 (one K layout each) compiles for sm_90 without spilling inside
    its tile loops, with the engine's 16-key pages (a tile covers several) and 256-key pages (a tile in one): a
    tile that spills there only costs compile and tuning time at load."""
    kept = [c for c in A._prune_prefill(A._prefill_configs(), {}, HEAD_DIM=128) if c.kwargs["K_NMAJOR"] == 0]
    assert len(kept) == 3
    for cfg in kept:
        kernel = _compile_sm90(
            A._paged_prefill_kernel, {**QKV, "O": "*bf16"},
            dict(GROUP=12, HEAD_DIM=128, BLOCK_D=128, PAGE=page, BIAS=2, MAX_Q_BUCKET=4096, DOT="tf32", TMA=False,
                 **cfg.kwargs, **UNIT_STRIDES), ("scale_log2",), num_warps=cfg.num_warps, num_stages=cfg.num_stages,
            aligned=ALIGNED_STRIDES)
        assert _spills_in_loops(kernel.asm["sass"]) == 0, cfg


def test_gemv_candidates_compile_for_hopper() -> None:
    """Every tile the decode GEMV's autotuner may pick, in bf16, plain or with the RMSNorm (and SwiGLU) fused, in
    one pass or with K split (its partials' reduction too), fits an H100's shared memory, loads the weights by
    16-byte asynchronous copies (the software pipeline, also over a split's run-time K range) and does not spill
    (a 16 x 1024 tile in 8 warps stored 10 KB a thread to local memory). With PDL each program first asks L2 for
    its weight rows by bulk prefetches (UBLKPF in the SASS), before its wait (ACQBULK)."""
    from kernels import _gemv_triton as V

    for cfg in V._configs():
        for swiglu, norm, one, split in itertools.product((False, True), (0, 2), (False, True), (1, 4)):
            if (swiglu and not norm) or (one and not norm):  # never launched (kernels/_gemv_triton.py)
                continue
            fused = dict(SWIGLU=swiglu, NORM=norm, ONE_ROW=one, SPLIT=split)
            kernel = _compile_sm90(V._gemv_kernel, {**{n: "*bf16" for n in ("X", "W", "B", "Y", "R", "NW", "H")},
                                                    "P": "*fp32"},
                                   dict(HAS_BIAS=False, DOT="tf32", BLOCK_M=V.BLOCK_M, NORM_BLOCK=4096, **fused,
                                        **cfg.kwargs), ("eps",),
                                   num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                                   aligned=("N", "K", "stride_xm", "stride_wn", "stride_ym", "stride_rm",
                                            "PF_PER_ROW"))
            assert "cp.async.cg.shared.global" in kernel.asm["ptx"], (cfg, fused)
            assert "cp.async.bulk.prefetch.L2.global" in kernel.asm["ptx"], (cfg, fused)
            assert kernel.asm["sass"].count("STL") < 8, (cfg, fused)
    for swiglu, bias in itertools.product((False, True), (False, True)):
        _compile_sm90(V._gemv_reduce_kernel, {"P": "*fp32", "B": "*bf16", "Y": "*bf16"},
                      dict(HAS_BIAS=bias, SWIGLU=swiglu, SPLIT=4, BLOCK=1024), num_warps=4, num_stages=1,
                      aligned=("N", "stride_ym"))


def test_pipelined_tiles_keep_to_an_h100s_shared_memory_in_fp32() -> None:
    """fp32 (the GPU tests' dtype) doubles each pipeline stage: the GEMV's gate/up + residual + RMSNorm tile of 4
    stages took 256 KB, past an H100's 227 KB, and Triton refused to launch it (H100 run4), as it would the flow's
    64-row add + LayerNorm tile. Their stages come down to what fits (_compile_sm90 asserts shared memory)."""
    from kernels import _flow_ops_triton as F
    from kernels import _gemv_triton as V

    fp32 = {n: "*fp32" for n in ("X", "W", "B", "Y", "R", "NW", "H", "P")}
    for swiglu, norm in ((True, 2), (False, 0)):
        for cfg in V._fitting(V._configs(), 4, swiglu, norm, H100_SHARED_BYTES):
            _compile_sm90(V._gemv_kernel, fp32, dict(HAS_BIAS=False, DOT="ieee", BLOCK_M=V.BLOCK_M, NORM_BLOCK=4096,
                                                     SWIGLU=swiglu, NORM=norm, ONE_ROW=False, SPLIT=1,
                                                     **cfg.kwargs),
                          ("eps",), num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                          aligned=("N", "K", "stride_xm", "stride_wn", "stride_ym", "stride_rm", "PF_PER_ROW"))
    tile = F.linear_tile(66048, 256, True, False, 4, H100_SHARED_BYTES)
    _compile_sm90(F._linear_kernel, {n: "*fp32" for n in ("X", "W", "BIAS", "Y", "R", "LW", "LB", "H")},
                  dict(HAS_BIAS=True, EPILOGUE=3, DOT="ieee", **tile.kwargs), ("eps",), num_warps=tile.num_warps,
                  num_stages=tile.num_stages,
                  aligned=("N", "K", "stride_xm", "stride_wn", "stride_ym", "stride_rm", "stride_hm"))


def test_flow_op_kernels_compile_for_hopper() -> None:
    """The flow estimator's fused norms in bf16 as a streaming window launches them: GroupNorm + Mish with both
    convolution biases and the residual add (32 channels a group, a 4096-element tile in 16 warps), the residual add
    + LayerNorm at width 256."""
    from kernels import _flow_ops_triton as F

    t = "*bf16"
    # time-contiguous [B, C, T], and the estimator's channels-last activations (channel stride 1, time stride C)
    for unit, aligned in ((dict(stride_xt=1, stride_at=1, stride_ot=1), ("stride_xc", "stride_ac", "stride_oc")),
                          (dict(stride_xc=1, stride_ac=1, stride_oc=1), ("stride_xt", "stride_at", "stride_ot"))):
        gn = _compile_sm90(F._group_norm_mish_kernel, {n: t for n in ("X", "W", "B", "A", "XB", "AB", "O")},
                           dict(HAS_ADD=True, HAS_XB=True, HAS_AB=True, BLOCK_C=32, BLOCK_T=128, **unit), ("eps",),
                           num_warps=16, num_stages=1, aligned=aligned)
        assert gn.asm["sass"].count("STL") == 0, unit  # in 4 warps this tile spilled (64-bit pointer tiles)
    _compile_sm90(F._add_layer_norm_kernel, {n: t for n in ("X", "R", "W", "B", "O", "H")}, dict(BLOCK=256),
                  ("eps",), num_warps=1, num_stages=1)


@pytest.mark.parametrize("epilogue,m,n,k", [(1, 1032, 1024, 256), (2, 1032, 1024, 256), (3, 1032, 256, 256),
                                            (3, 1032, 256, 1024), (3, 66048, 256, 1024), (4, 1032, 256, 1024)])
def test_flow_linear_kernel_compiles_for_hopper_with_its_epilogues(epilogue: int, m: int, n: int, k: int) -> None:
    """The estimator's projections at CosyVoice-300M widths in bf16, with the tile linear_triton picks for a first
    window's 1032 rows (and 64 such windows batched): the first feed-forward projection + GELU (erf, tanh), the
    output and second feed-forward projections + residual add + LayerNorm over 256-wide rows, or the add alone (a
    stack's last block). Operands arrive by
    asynchronous copies (the software pipeline), products run on tensor cores, nothing spills in the K loop."""
    from kernels import _flow_ops_triton as F

    tile = F.linear_tile(m, n, epilogue == 3, interpreting=False)
    kernel = _compile_sm90(F._linear_kernel, {n_: "*bf16" for n_ in ("X", "W", "BIAS", "Y", "R", "LW", "LB", "H")},
                           dict(HAS_BIAS=True, EPILOGUE=epilogue, DOT="tf32", **tile.kwargs), ("eps",),
                           num_warps=tile.num_warps, num_stages=tile.num_stages,
                           aligned=("N", "K", "stride_xm", "stride_wn", "stride_ym", "stride_rm", "stride_hm"))
    ptx = kernel.asm["ptx"]
    assert "cp.async" in ptx and ("wgmma" in ptx or "mma.sync" in ptx)
    assert _spills_in_loops(kernel.asm["sass"]) == 0
