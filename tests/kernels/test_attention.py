"""kernels.attention: reference vs an independent dense computation, Triton kernels vs the reference.

Triton tests (fixture triton_modules) run on CUDA natively or in the interpreter child (conftest.py). Shapes are
tiny because the interpreter executes every program in numpy.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from kernels import attention as A

_spec = importlib.util.spec_from_file_location("_kernels_paged", Path(__file__).with_name("_paged.py"))
P = importlib.util.module_from_spec(_spec)
sys.modules["_kernels_paged"] = P
_spec.loader.exec_module(P)  # type: ignore[union-attr]

TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
BIASES = ["sqrt_alibi", "alibi", "none"]


def _run(fn, b, slopes, bias, **kw):  # type: ignore[no-untyped-def]
    return fn(b.q, b.k_cache, b.v_cache, b.block_tables, b.cu_seqlens_q, b.context_lens,
              alibi_slopes=slopes, bias=bias, scale=b.q.shape[-1] ** -0.5, **kw)


# ------------------------------------------------------------------------------------------- slopes

@pytest.mark.parametrize("num_heads", [1, 8, 12, 48, 96])
def test_alibi_slopes_match_independent_formula(num_heads: int) -> None:
    got = A.alibi_slopes(num_heads)
    assert got.dtype == torch.float32 and got.shape == (num_heads,)
    want = torch.tensor(P.alibi_slopes_independent(num_heads), dtype=torch.float32)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_alibi_slopes_known_values() -> None:
    # H = 12: n = 8 -> 2^-1 .. 2^-8, then 2^(-4k/8) for k = 1, 3, 5, 7
    want = [2.0 ** -i for i in range(1, 9)] + [2.0 ** (-k / 2) for k in (1, 3, 5, 7)]
    assert A.alibi_slopes(12).tolist() == pytest.approx(want, rel=1e-7)
    # H = 96: n = 64, the 32 extra heads take k = 1, 3, ..., 63 of 2^(-4k/64)
    s96 = A.alibi_slopes(96).tolist()
    assert s96[63] == pytest.approx(2.0 ** -8) and s96[64] == pytest.approx(2.0 ** (-1 / 16))
    assert s96[95] == pytest.approx(2.0 ** (-63 / 16))


# ------------------------------------------------------------------------------------------- reference

@pytest.mark.parametrize("bias", BIASES)
@pytest.mark.parametrize("heads", [(4, 4, 16), (8, 2, 16), (12, 1, 32), (6, 3, 16)])
def test_reference_matches_dense(bias: str, heads: tuple[int, int, int]) -> None:
    h, g, d = heads
    b = P.make_batch([3, 1, 6, 4], [0, 5, 9, 9], num_heads=h, num_kv_heads=g, head_dim=d, page=4,
                     dtype=torch.float32, fork_of={3: 2})
    slopes = A.alibi_slopes(h)
    got = _run(A.paged_attention_ref, b, slopes, bias)
    want = P.dense_attention(b, P.alibi_slopes_independent(h), bias, d ** -0.5)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("bias", BIASES)
def test_reference_long_chunks_match_dense(bias: str) -> None:
    """Chunks long enough to be attended in several tiles of query rows: one after a 3000-token cached prefix, one
    from position 0 (each tile leaves out the keys past its last row), beside decode rows, one a fork."""
    b = P.make_batch([300, 1, 700, 1], [3000, 40, 0, 9], num_heads=6, num_kv_heads=3, head_dim=16, page=16,
                     dtype=torch.float32, fork_of={1: 0})
    got = _run(A.paged_attention_ref, b, A.alibi_slopes(6), bias)
    want = P.dense_attention(b, P.alibi_slopes_independent(6), bias, 16 ** -0.5)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5)


def test_reference_long_chunk_builds_no_chunk_by_context_tensor() -> None:
    """A 4k-token prompt made the CPU reference build [heads, 4k, 4k] fp32 scores, bias, mask and probabilities at
    once, 1.6 GB each per layer: the tiny Step-1 took 20 s on it (its real work: well under 1 s). A chunk's
    temporaries are now a few MB, whatever its length."""
    b = P.make_batch([2048], [0], num_heads=24, num_kv_heads=2, head_dim=8, page=16, dtype=torch.float32)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        _run(A.paged_attention_ref, b, A.alibi_slopes(24), "sqrt_alibi")
    largest = max(e.cpu_memory_usage for e in prof.events())  # bytes an op allocated (and had not freed)
    assert largest < 32 << 20, f"{largest >> 20} MiB"  # [24, 2048, 2048] fp32 is 384 MiB


def test_store_kv_reference_scatter() -> None:
    k_cache = torch.zeros(3, 4, 2, 8)
    v_cache = torch.zeros(3, 4, 2, 8)
    k, v = torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    A.store_kv(k, v, k_cache, v_cache, torch.tensor([9, -1, 2]))
    torch.testing.assert_close(k_cache[2, 1], k[0])
    torch.testing.assert_close(v_cache[0, 2], v[2])
    assert k_cache.abs().sum(dim=(2, 3)).count_nonzero() == 2  # slot -1 wrote nothing


def test_dispatcher_validates_inputs() -> None:
    b = P.make_batch([2], [0], num_heads=4, num_kv_heads=2, head_dim=16, page=4, dtype=torch.float32)
    with pytest.raises(ValueError, match="bias"):
        _run(A.paged_attention, b, A.alibi_slopes(4), "rope")
    with pytest.raises(ValueError, match="alibi_slopes"):
        _run(A.paged_attention, b, None, "sqrt_alibi")
    with pytest.raises(ValueError, match="block_tables"):
        A.paged_attention(b.q, b.k_cache, b.v_cache, b.block_tables.long(), b.cu_seqlens_q, b.context_lens,
                          alibi_slopes=None, bias="none", scale=1.0)
    with pytest.raises(ValueError, match="multiple"):
        A.paged_attention(b.q[:, :3], b.k_cache, b.v_cache, b.block_tables, b.cu_seqlens_q, b.context_lens,
                          alibi_slopes=None, bias="none", scale=1.0)
    with pytest.raises(ValueError, match="slot_mapping"):
        A.store_kv(torch.zeros(2, 2, 16), torch.zeros(2, 2, 16), b.k_cache, b.v_cache, torch.zeros(3).long())
    # CPU tensors go to the reference
    torch.testing.assert_close(_run(A.paged_attention, b, A.alibi_slopes(4), "sqrt_alibi"),
                               _run(A.paged_attention_ref, b, A.alibi_slopes(4), "sqrt_alibi"))


# ------------------------------------------------------------------------------------------- Triton

# (num_heads, num_kv_heads, head_dim, page): GQA ratios 1, 4, 12; non-power-of-two head counts (6, 12, 24); pages
# smaller than, equal to and larger than a tile of keys (16 under the interpreter: a tile covers whole pages, is
# one page, or starts inside one); a head dim narrower than its tile (80 in 128: the masked columns)
PREFILL_CASES = [
    (4, 4, 64, 4, torch.float32),
    (8, 2, 128, 16, torch.float16),
    (12, 1, 64, 8, torch.float32),
    (24, 2, 128, 4, torch.float16),
    (6, 6, 64, 16, torch.float16),
    (8, 2, 64, 64, torch.float32),
    (4, 2, 80, 8, torch.float32),
]


@pytest.mark.parametrize("h,g,d,page,dtype", PREFILL_CASES)
def test_triton_prefill_ragged_prefix_forks(triton_modules, h, g, d, page,  # type: ignore[no-untyped-def]
                                            dtype) -> None:
    tri = triton_modules.attention
    # ragged q_lens incl. a decode-like row, a KV prefix, a fork sharing the parent's blocks; unused pool blocks
    b = P.make_batch([5, 1, 13, 7], [0, 7, 20, 20], num_heads=h, num_kv_heads=g, head_dim=d, page=page,
                     dtype=dtype, device=triton_modules.device, fork_of={3: 2})
    slopes = A.alibi_slopes(h).to(triton_modules.device)
    for bias in (BIASES if h == 12 else ["sqrt_alibi"]):
        got = _run(tri.paged_attention_triton, b, slopes, bias, max_seqlen_q=b.max_seqlen_q)
        want = _run(A.paged_attention_ref, b, slopes, bias)
        torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=TOL[dtype], msg=bias)


@pytest.mark.parametrize("h,g", [(4, 4), (12, 1)])
def test_triton_prefill_far_tiles_match_exact_sqrt(triton_modules, h, g) -> None:  # type: ignore[no-untyped-def]
    """Keys at least far_distance before a query take the Taylor-polynomial sqrt: in these contexts most tiles do,
    and the loop bounds must hand each tile to the right path (test_attention_far.py checks the polynomial)."""
    tri = triton_modules.attention
    far = tri.far_distance(16 if triton_modules.interpret else 128)  # the interpreter's BLOCK_N; the GPU's largest
    b = P.make_batch([16, 5], [far + 300, far + 20], num_heads=h, num_kv_heads=g, head_dim=64, page=16,
                     dtype=torch.float32, device=triton_modules.device)
    slopes = A.alibi_slopes(h).to(triton_modules.device)
    got = _run(tri.paged_attention_triton, b, slopes, "sqrt_alibi", max_seqlen_q=b.max_seqlen_q)
    want = _run(A.paged_attention_ref, b, slopes, "sqrt_alibi")
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_prefill_far_tiles_in_16_bit(triton_modules, bf16_dot, dtype) -> None:  # type: ignore[no-untyped-def]
    """The far tiles' bias dot takes q's dtype: wired right in float16 and bfloat16 too (its rounding is bounded in
    test_attention_far.py, far below these dtypes' output tolerance)."""
    tri = triton_modules.attention
    far = tri.far_distance(16 if triton_modules.interpret else 128)
    b = P.make_batch([16, 5], [far + 300, far + 20], num_heads=8, num_kv_heads=2, head_dim=64, page=16,
                     dtype=dtype, device=triton_modules.device)
    slopes = A.alibi_slopes(8).to(triton_modules.device)
    got = _run(tri.paged_attention_triton, b, slopes, "sqrt_alibi", max_seqlen_q=b.max_seqlen_q)
    want = _run(A.paged_attention_ref, b, slopes, "sqrt_alibi")
    torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=TOL[dtype])


@pytest.mark.parametrize("h,g,d,page,dtype", [(4, 4, 64, 4, torch.float32), (8, 2, 128, 16, torch.float16),
                                              (12, 1, 64, 8, torch.float16), (24, 2, 64, 16, torch.float32),
                                              (8, 2, 80, 64, torch.float32)])
@pytest.mark.parametrize("num_splits", [None, 7])
def test_triton_decode_split_kv(triton_modules, h, g, d, page, dtype,  # type: ignore[no-untyped-def]
                                num_splits) -> None:
    tri = triton_modules.attention
    # contexts 1 and 6 leave most of the 7 splits empty; a zero-length query row in the middle is skipped
    b = P.make_batch([1, 1, 0, 1, 1], [0, 5, 3, 60, 40], num_heads=h, num_kv_heads=g, head_dim=d, page=page,
                     dtype=dtype, device=triton_modules.device, fork_of={4: 3})
    slopes = A.alibi_slopes(h).to(triton_modules.device)
    for bias in (BIASES if h == 12 else ["sqrt_alibi"]):
        got = _run(tri.paged_attention_triton, b, slopes, bias, max_seqlen_q=1, num_splits=num_splits)
        want = _run(A.paged_attention_ref, b, slopes, bias)
        torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=TOL[dtype], msg=bias)


def _new_kv_of(b, skip: set[int], seed: int = 5):  # type: ignore[no-untyped-def]
    """(k, v, slot_mapping) for the one query token of each decode row of batch b: its true key/value (those at
    position ctx - 1) and its cache slot; rows in `skip` get slot -1. The cached copies of those keys are then
    overwritten with garbage, so an attention that does not store (or use) the new ones first goes wrong."""
    g = torch.Generator().manual_seed(seed)
    cu, ctx, page = b.cu_seqlens_q.tolist(), b.context_lens.tolist(), b.k_cache.shape[1]
    n, kv_heads, d = b.q.shape[0], b.k_cache.shape[2], b.k_cache.shape[3]
    k = torch.zeros(n, kv_heads, d, dtype=b.q.dtype)
    v = torch.zeros_like(k)
    slots = torch.full((n,), -1, dtype=torch.int64)
    for s in range(len(ctx)):
        if cu[s + 1] == cu[s]:
            continue
        p = ctx[s] - 1
        slot = int(b.block_tables[s, p // page]) * page + p % page
        k[cu[s]], v[cu[s]] = b.keys[s][p], b.values[s][p]
        if s not in skip:
            slots[cu[s]] = slot
        b.k_cache.view(-1, kv_heads, d)[slot] = torch.randn(kv_heads, d, generator=g).to(b.q.dtype)
        b.v_cache.view(-1, kv_heads, d)[slot] = torch.randn(kv_heads, d, generator=g).to(b.q.dtype)
    dev = b.q.device
    return k.to(dev), v.to(dev), slots.to(dev)


@pytest.mark.parametrize("h,g,d,page,dtype", [(4, 4, 64, 4, torch.float32), (12, 1, 128, 8, torch.float16),
                                              (24, 2, 64, 16, torch.float32), (8, 2, 64, 64, torch.float32)])
@pytest.mark.parametrize("num_splits", [None, 7])
def test_triton_decode_stores_the_new_kv_itself(triton_modules, h, g, d, page, dtype,  # type: ignore[no-untyped-def]
                                                num_splits) -> None:
    """A decode step given new_kv equals store_kv then attention: the same output and the same cache afterwards,
    including a row whose slot is -1 (nothing stored: it attends to what the cache holds) and a fork."""
    tri = triton_modules.attention
    b = P.make_batch([1, 1, 0, 1, 1], [0, 5, 3, 60, 40], num_heads=h, num_kv_heads=g, head_dim=d, page=page,
                     dtype=dtype, device=triton_modules.device, fork_of={4: 3})
    new_kv = _new_kv_of(b, skip={1})
    slopes = A.alibi_slopes(h).to(triton_modules.device)
    k_cache, v_cache = b.k_cache.clone(), b.v_cache.clone()
    A.store_kv_ref(new_kv[0], new_kv[1], k_cache, v_cache, new_kv[2])
    want = A.paged_attention_ref(b.q, k_cache, v_cache, b.block_tables, b.cu_seqlens_q, b.context_lens,
                                 alibi_slopes=slopes, bias="sqrt_alibi", scale=d ** -0.5)
    got = _run(tri.paged_attention_triton, b, slopes, "sqrt_alibi", max_seqlen_q=1, num_splits=num_splits,
               new_kv=new_kv)
    torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=TOL[dtype])
    assert torch.equal(b.k_cache, k_cache) and torch.equal(b.v_cache, v_cache)


def test_new_kv_through_the_dispatcher() -> None:
    """paged_attention(new_kv=...) stores then attends on every path (a prefill batch here: the prefill kernel
    reads K/V from the cache, so the Triton launcher stores first), and rejects rows that do not match q."""
    b = P.make_batch([3, 1], [4, 6], num_heads=4, num_kv_heads=2, head_dim=64, page=4, dtype=torch.float32)
    want = _run(A.paged_attention_ref, b, A.alibi_slopes(4), "alibi")
    cu, ctx, page = b.cu_seqlens_q.tolist(), b.context_lens.tolist(), 4
    rows = [(s, ctx[s] - (cu[s + 1] - cu[s]) + i) for s in range(2) for i in range(cu[s + 1] - cu[s])]
    k = torch.stack([b.keys[s][p] for s, p in rows])
    v = torch.stack([b.values[s][p] for s, p in rows])
    slots = torch.tensor([int(b.block_tables[s, p // page]) * page + p % page for s, p in rows])
    cached = b.k_cache.clone(), b.v_cache.clone()
    b.k_cache.view(-1, 2, 64)[slots] = 0.0
    b.v_cache.view(-1, 2, 64)[slots] = 0.0
    got = _run(A.paged_attention, b, A.alibi_slopes(4), "alibi", new_kv=(k, v, slots))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert torch.equal(b.k_cache, cached[0]) and torch.equal(b.v_cache, cached[1])
    with pytest.raises(ValueError, match="one torch.float32 row per query token"):
        _run(A.paged_attention, b, A.alibi_slopes(4), "alibi", new_kv=(k[:2], v[:2], slots[:2]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("slot_dtype", [torch.int64, torch.int32])
def test_triton_store_kv(triton_modules, dtype, slot_dtype) -> None:  # type: ignore[no-untyped-def]
    dev = triton_modules.device
    g = torch.Generator().manual_seed(1)
    for kv_heads, d in [(2, 64), (3, 128)]:
        k = torch.randn(6, kv_heads, d, generator=g).to(dtype).to(dev)
        v = torch.randn(6, kv_heads, d, generator=g).to(dtype).to(dev)
        slots = torch.tensor([5, -1, 0, 17, 31, -1], dtype=slot_dtype, device=dev)
        caches = [torch.randn(4, 8, kv_heads, d, generator=g).to(dtype).to(dev) for _ in range(2)]
        want = [c.clone() for c in caches]
        A.store_kv_ref(k, v, want[0], want[1], slots)
        triton_modules.attention.store_kv_triton(k, v, caches[0], caches[1], slots)
        assert torch.equal(caches[0], want[0]) and torch.equal(caches[1], want[1])


def test_triton_then_attend_roundtrip(triton_modules) -> None:  # type: ignore[no-untyped-def]
    """store_kv followed by paged_attention through the Triton kernels == dense attention on the same data."""
    tri, dev = triton_modules.attention, triton_modules.device
    b = P.make_batch([4, 3], [2, 0], num_heads=4, num_kv_heads=1, head_dim=64, page=4, dtype=torch.float32)
    k_cache, v_cache = torch.zeros_like(b.k_cache), torch.zeros_like(b.v_cache)
    toks_k, toks_v, slots = [], [], []
    for s, (k, v) in enumerate(zip(b.keys, b.values)):
        for j in range(k.shape[0]):
            toks_k.append(k[j]); toks_v.append(v[j])
            slots.append(int(b.block_tables[s, j // 4]) * 4 + j % 4)
    kc, vc = k_cache.to(dev), v_cache.to(dev)
    tri.store_kv_triton(torch.stack(toks_k).to(dev), torch.stack(toks_v).to(dev), kc, vc,
                        torch.tensor(slots, device=dev))
    got = tri.paged_attention_triton(b.q.to(dev), kc, vc, b.block_tables.to(dev), b.cu_seqlens_q.to(dev),
                                     b.context_lens.to(dev), alibi_slopes=A.alibi_slopes(4).to(dev),
                                     bias="sqrt_alibi", scale=0.125)
    want = P.dense_attention(b, P.alibi_slopes_independent(4), "sqrt_alibi", 0.125)
    torch.testing.assert_close(got.double().cpu(), want, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------- GPU, real shapes

@pytest.mark.parametrize("h,g,d,dtype", [(4, 4, 64, torch.float32), (24, 2, 128, torch.float16),
                                         (12, 1, 64, torch.float16)])
def test_triton_prefill_by_tma_equals_the_reference(  # type: ignore[no-untyped-def]
        triton_modules, h, g, d, dtype) -> None:
    """Prefill with its unmasked K/V tiles loaded through tensor descriptors (tma=True, PREFILL_TMA's path): ragged
    queries, a cached prefix, a fork sharing its parent's blocks in a shuffled pool, far tiles, every bias mode;
    equal to the reference and to the pointer loads."""
    tri = triton_modules.attention
    page = max(c.kwargs["BLOCK_N"] for c in tri._prefill_configs()) * 2  # whole tiles in a page, 2 a page
    far = tri.far_distance(page // 2)
    b = P.make_batch([5, 1, 24, 7], [0, 7, far + 40, far + 40], num_heads=h, num_kv_heads=g, head_dim=d,
                     page=page, dtype=dtype, device=triton_modules.device, fork_of={3: 2})
    assert tri.tma_fits(b.k_cache, b.v_cache, d)
    slopes = A.alibi_slopes(h).to(triton_modules.device)
    for bias in BIASES:
        got = _run(tri.paged_attention_triton, b, slopes, bias, max_seqlen_q=b.max_seqlen_q, tma=True)
        want = _run(A.paged_attention_ref, b, slopes, bias)
        torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=TOL[dtype], msg=bias)
        by_pointers = _run(tri.paged_attention_triton, b, slopes, bias, max_seqlen_q=b.max_seqlen_q, tma=False)
        torch.testing.assert_close(got, by_pointers, rtol=0, atol=TOL[dtype] / 4, msg=bias)


def test_tma_takes_only_caches_it_can_describe(triton_modules) -> None:  # type: ignore[no-untyped-def]
    """Contiguous caches of power-of-two head dims with pages of whole tiles: yes; a strided view, a head dim of 80
    (its tile is 128 wide), pages smaller than the largest tile: no (those take the pointer loads)."""
    tri = triton_modules.attention
    page = max(c.kwargs["BLOCK_N"] for c in tri._prefill_configs())
    cache = torch.zeros(3, page, 4, 64, device=triton_modules.device)
    assert tri.tma_fits(cache, cache, 64)
    assert not tri.tma_fits(cache[:, :, :2], cache[:, :, :2], 64)
    wide = torch.zeros(3, page, 4, 80, device=triton_modules.device)
    assert not tri.tma_fits(wide, wide, 80)
    small = torch.zeros(3, page // 2, 4, 64, device=triton_modules.device)
    assert not tri.tma_fits(small, small, 64)


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("h,g,d", [(96, 8, 128), (48, 4, 64), (12, 1, 128)])
def test_gpu_bf16_prefill_and_decode(h: int, g: int, d: int) -> None:
    b = P.make_batch([1000, 1, 517, 1], [0, 3000, 1500, 700], num_heads=h, num_kv_heads=g, head_dim=d, page=256,
                     dtype=torch.bfloat16, device="cuda", fork_of={3: 1})
    slopes = A.alibi_slopes(h).cuda()
    for bias in BIASES:
        got = _run(A.paged_attention, b, slopes, bias)
        want = _run(A.paged_attention_ref, b, slopes, bias)
        torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=2e-2, msg=bias)
        if bias == "sqrt_alibi":  # the same through the TMA loads (bench.kernels times them; PREFILL_TMA)
            from kernels._attention_triton import paged_attention_triton

            got = _run(paged_attention_triton, b, slopes, bias, tma=True)
            torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=2e-2, msg="tma")
    dec = P.make_batch([1] * 32, [4000 + 97 * i for i in range(32)], num_heads=h, num_kv_heads=g, head_dim=d,
                       page=256, dtype=torch.bfloat16, device="cuda")
    got = _run(A.paged_attention, dec, slopes, "sqrt_alibi", max_seqlen_q=1)
    want = _run(A.paged_attention_ref, dec, slopes, "sqrt_alibi")
    torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=2e-2)
