"""Triton kernels behind kernels.attention (imported only by its dispatchers and by tests).

Three kernels:
* _paged_prefill_kernel: flash-attention forward over the paged cache for any q_len (chunked prefill, mixed batches).
  One program per (query tile, kv head, sequence). The query heads that share a kv head are packed into the rows of
  the tile (row r = token r // GROUP, head kv_head * GROUP + r % GROUP), so every K/V tile loaded from memory serves
  the whole GQA group, and a tile of BLOCK_M rows covers BLOCK_M / GROUP tokens.
* _paged_decode_kernel + _decode_reduce_kernel: q_len == 1 for every sequence. Split-KV: program (split, kv head,
  seq) reduces its slice of the context to a partial (max, sum, unnormalised acc) per query head; the reduce pass
  merges the splits. A split that starts past the context is empty and writes max = -inf, sum = 0. With STORE_NEW the
  split holding the last position also writes the step's new K/V row to the cache (the engine's decode path).
* _store_kv_kernel: one program per new token, scatters its K and V rows to its cache slot (prefill steps).

Softmax runs in the log2 domain: scores are pre-multiplied by log2(e) (folded into the scale and the slopes), so the
inner loop uses exp2. Bias modes are a constexpr: 0 none, 1 linear ALiBi, 2 sqrt-ALiBi.

sqrt-ALiBi far from the diagonal: a sqrt per score is a second MUFU op beside exp2's, and the MUFU pipe has 1/8 of the
FMA pipe's throughput (16 vs 128 lanes per clock per SM). Where every key of a tile lies at least FAR positions
before every query of it, each row's bias -slope * log2e * sqrt(pos - key) is its cubic Taylor polynomial
c0 + c1 w + c2 w^2 + c3 w^3 in the key's offset w from the tile's centre (one rsqrt per row). FAR (far_distance)
keeps the truncation error within 2^-20 * slope * log2e: one float32 ulp of sqrt(FAR) at BLOCK_N 16, a quarter of
one at 64. Evaluating the polynomial per score costs ~5 FMA-pipe ops beside the softmax's, and at d64 the FMA pipe
is then the bottleneck (H100, bf16: +44% over no bias), so no per-score op is added:
* c0 is constant along a row: it enters the row max and the exp2 shift, not the scores.
* The rest is a [BLOCK_M, 16] x [16, BLOCK_N] dot accumulated by the tensor cores onto QK^T. B (one per program) holds
  u, u, u^2, u^3 and zero rows, u = w / (BLOCK_N / 2) in (-1, 1); A (per tile and row) the u^k coefficients divided by
  the softmax scale (one multiply scales both), the u coefficient as hi (its rounding to q's dtype) and lo (the
  remainder, rounded), both against the same u row.
Its rounding in log2 units per unit slope * log2e, eps the dtype's unit roundoff (2^-8 bfloat16, 2^-11 float16): u is
exact (2w is an odd integer below 256), the u term carries eps^2 |c1 w| (hi/lo), the u^2 and u^3 terms
2 eps (|c2 w^2| + |c3 w^3|) (A's rounding and B's). Over far tiles |c1 w|, |c2 w^2|, |c3 w^3| <= 0.64, 0.0042, 5.4e-5 at
BLOCK_N 128 (0.26, 0.0022, 3.9e-5 at 16), so <= 4.3e-5 in bfloat16 and 4.3e-6 in float16 (plus float16 underflow
in A, <= 2^-23 * scale * log2e), beside bfloat16's own 2^-8 relative rounding of P; c1 in one column would cost up to
eps |c1 w| = 2.5e-3 in bfloat16. float32 inputs (the 'ieee' path) are not cast: float32 roundings only, as before.
"""
from __future__ import annotations

import logging
import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from triton import knobs

from kernels._pdl import begin
from kernels._precompile import precompile
from kernels.attention import PREFILL_Q_CLASSES
from kernels.launch import use_pdl

logger = logging.getLogger(__name__)
LOG2E = 1.4426950408889634
_BIAS_CODE = {"none": 0, "alibi": 1, "sqrt_alibi": 2}
FAR_ERROR = 2.0 ** -20
# Whether prefill takes its unmasked K/V tiles by TMA (tensor descriptors) where tma_fits: off until an H100 run
# times it faster than the pointer loads (bench.kernels times both).
PREFILL_TMA = False


def far_distance(block_n: int) -> int:
    """The smallest key distance from which the cubic Taylor polynomial of sqrt stays within FAR_ERROR over a tile
    of block_n keys: its remainder is (5/128) h^4 x^-3.5 for offsets |w| <= h = (block_n - 1) / 2 from the tile's
    centre, at the tile's nearest key x."""
    h = (block_n - 1) / 2
    return math.ceil((5 / 128 * h ** 4 / FAR_ERROR) ** (2 / 7))


def _interpreting() -> bool:
    return bool(knobs.runtime.interpret)


# ------------------------------------------------------------------------------------------------ shared


@triton.jit
def _scores(qk, slope2, pos_f, start, scale_log2, BIAS: tl.constexpr, CLAMP: tl.constexpr, BLOCK_N: tl.constexpr):
    """log2-domain scores of keys [start, start + BLOCK_N): qk * scale * log2e - slope * log2e * f(pos - key).
    pos_f [M]: the rows' positions as float32."""
    s = qk * scale_log2
    if BIAS != 0:
        # In float32 from the start (exact: positions < 2^24): an int -> float conversion per score is not a
        # full-rate instruction; this way a tile costs one subtraction per row, the column offsets are constants.
        dist = (pos_f - start)[:, None] - tl.arange(0, BLOCK_N).to(tl.float32)[None, :]
        if CLAMP:
            dist = tl.maximum(dist, 0.0)  # masked (future) keys: keep sqrt finite, they are set to -inf later
        if BIAS == 2:
            dist = tl.sqrt(dist)
        s = s - slope2[:, None] * dist
    return s


@triton.jit
def _far_bias_powers(DTYPE: tl.constexpr, BLOCK_N: tl.constexpr):
    """B of the far-tile bias dot, [16, BLOCK_N] in DTYPE: rows 0 and 4 hold u, row 8 u^2, row 12 u^3 (matching A's
    columns, _far_bias_rows), the others zero; u = w / (BLOCK_N / 2) is the key's offset w from the tile's centre
    scaled into (-1, 1) by a power of two, so it stays exact (2w is an odd integer below 256). |u^k| < 1 keeps u^3
    within float16's range (w^3 reaches 2.6e5 at BLOCK_N 128) and float16's absolute underflow in A harmless.
    Independent of the tile: built once per program."""
    half: tl.constexpr = (BLOCK_N - 1) * 0.5
    inv_hs: tl.constexpr = 2.0 / BLOCK_N
    u = ((tl.arange(0, BLOCK_N).to(tl.float32) - half) * inv_hs)[None, :]
    k = tl.arange(0, 16)[:, None]
    b = tl.where(k % 4 != 0, 0.0, tl.where(k < 8, u, tl.where(k == 8, u * u, u * u * u)))
    return b.to(DTYPE)


@triton.jit
def _far_bias_rows(slope2, pos, start, scale_log2, DTYPE: tl.constexpr, BLOCK_N: tl.constexpr):
    """Per-row constant c0 [BLOCK_M] (float32) and A [BLOCK_M, 16] (DTYPE) of sqrt-ALiBi on a tile of keys
    [start, start + BLOCK_N) at least FAR before every row's pos: -slope2 * sqrt(pos - key) ~= c0 + (A @ B) *
    scale_log2 with B from _far_bias_powers (module docstring).

    With e the row's distance to the tile's centre and w = u * BLOCK_N / 2 a key's offset from it, the distance is
    e - w and sqrt(e - w) ~= sqrt(e) - w / (2 sqrt(e)) - w^2 / (8 e^1.5) - w^3 / (16 e^2.5). A's columns 0, 4, 8,
    12 hold the u coefficient's hi part (its rounding to DTYPE) and lo part (the rounded remainder), both against
    B's exact u rows, then the u^2 and u^3 coefficients; all times -slope2 and divided by scale_log2, so the
    caller's one multiply by scale_log2 scales the dot product and the bias together. In one bfloat16 column the u
    coefficient's rounding would cost up to 2^-8 * 0.64 * slope2 at BLOCK_N 128."""
    half: tl.constexpr = (BLOCK_N - 1) * 0.5
    hs: tl.constexpr = BLOCK_N // 2
    e = (pos - start).to(tl.float32) - half
    c0 = -slope2 * e * tl.rsqrt(e)
    # A is assembled by joins from a [BLOCK_M, 2] grid (column j = 0: hi, lo; j = 1: u^2, u^3 coefficients): that
    # grid's layout gives each thread about one row, where a [BLOCK_M, 16] select chain's layout made each thread
    # redo the rsqrt and the casts of the 8 rows it holds (SASS: 8 rsqrt and 16 conversions per thread per tile,
    # against 34 exp2, on the same quarter-rate pipe).
    j = tl.arange(0, 2)[None, :]
    r = tl.rsqrt(e[:, None] + tl.zeros([1, 2], dtype=tl.float32))
    r2 = r * r
    g = slope2[:, None] * r * (hs / scale_log2)
    a1 = 0.5 * g
    a2 = (0.125 * hs) * g * r2
    a3 = (0.0625 * hs * hs) * g * r2 * r2
    a1_hi = a1.to(DTYPE).to(tl.float32)
    a1_lo = (a1 - a1_hi).to(DTYPE).to(tl.float32)  # a1 - a1_hi is exact in float32
    # hi and lo are DTYPE values already: the casts below round only a2 and a3
    a = tl.join(tl.where(j == 0, a1_hi, a2).to(DTYPE), tl.where(j == 0, a1_lo, a3).to(DTYPE))
    a = tl.join(a, tl.zeros_like(a))
    a = tl.reshape(tl.join(a, tl.zeros_like(a)), [e.shape[0], 16])  # A[:, 8 j + 4 i]: operand i of the first join
    return c0, a


@triton.jit
def _kv_offsets(bt_row, start, n_ok, stride_b, stride_s, PAGE: tl.constexpr, BLOCK_N: tl.constexpr):
    """Where the keys [start, start + BLOCK_N) lie in the paged cache, start a multiple of BLOCK_N: (base, offsets),
    element offsets base + offsets[j]. Both sizes are powers of two, so the tile lies inside one page (one
    block-table entry, loaded once per tile: a scalar base and 32-bit offsets that are the same every tile, so
    their address arithmetic leaves the loop) or covers whole pages (a page entry per key, no division)."""
    j = tl.arange(0, BLOCK_N)
    if BLOCK_N <= PAGE:
        page = tl.load(bt_row + start // PAGE).to(tl.int64)
        return page * stride_b + (start % PAGE) * stride_s, j * stride_s
    else:
        page = tl.load(bt_row + start // PAGE + j // PAGE, mask=n_ok, other=0).to(tl.int64)
        return 0, page * stride_b + (j % PAGE).to(tl.int64) * stride_s


@triton.jit
def _load_kv(ptrs, n_ok, d_ok, N_ROWS: tl.constexpr, MASK_N: tl.constexpr, MASK_D: tl.constexpr):
    """A K or V tile, keys along the rows (N_ROWS) or the columns. Masks only what can be out of range: a tile of
    keys all inside the context with BLOCK_D == HEAD_DIM loads with no per-element predicate (and no address
    arithmetic for one) in the loop."""
    if N_ROWS:
        n_m = n_ok[:, None]
        d_m = d_ok[None, :]
    else:
        n_m = n_ok[None, :]
        d_m = d_ok[:, None]
    if MASK_N and MASK_D:
        return tl.load(ptrs, mask=n_m & d_m, other=0.0)
    elif MASK_N:
        return tl.load(ptrs, mask=n_m, other=0.0)
    elif MASK_D:
        return tl.load(ptrs, mask=d_m, other=0.0)
    else:
        return tl.load(ptrs)


# ------------------------------------------------------------------------------------------------ prefill


@triton.jit
def _prefill_tile(acc, m_i, l_i, q, slope2, pos, K, V, bt_row, start, kv_end, kv_head_off_k, kv_head_off_v,
                  offs_d, d_ok, scale_log2, far_b, k_desc, v_desc, kv_col,
                  stride_kb, stride_ks, stride_kd, stride_vb, stride_vs, stride_vd,
                  BIAS: tl.constexpr, MASKED: tl.constexpr, PAGE: tl.constexpr, BLOCK_N: tl.constexpr,
                  DOT: tl.constexpr, K_NMAJOR: tl.constexpr, FAR_TILE: tl.constexpr, MASK_D: tl.constexpr,
                  TMA_TILE: tl.constexpr):
    offs_n = start + tl.arange(0, BLOCK_N)
    n_ok = offs_n < kv_end
    if FAR_TILE:  # before the loads: A's layout conversions (shared memory, CTA barriers) overlap their latency
        c0, far_a = _far_bias_rows(slope2, pos, start, scale_log2, far_b.dtype, BLOCK_N)
    if TMA_TILE:
        # Keys all inside the context, the tile inside one page: K and V each arrive by one tensor-memory-accelerator
        # copy of rows [row, row + BLOCK_N) of the cache seen as [slots, kv_heads * HEAD_DIM], columns this kv head's.
        row = tl.load(bt_row + start // PAGE) * PAGE + start % PAGE
        qk = tl.dot(q, tl.trans(k_desc.load([row, kv_col])), input_precision=DOT)
    else:
        # Only the last loop's tiles (MASKED) reach past kv_end; the others hold keys of the context only.
        k_base, k_off = _kv_offsets(bt_row, start, n_ok, stride_kb, stride_ks, PAGE, BLOCK_N)
        v_base, v_off = _kv_offsets(bt_row, start, n_ok, stride_vb, stride_vs, PAGE, BLOCK_N)
        k_tile = K + (kv_head_off_k + k_base)
        if K_NMAJOR:  # K tile loaded [BLOCK_N, BLOCK_D] and transposed in shared memory
            k = _load_kv(k_tile + k_off[:, None] + offs_d[None, :] * stride_kd, n_ok, d_ok, True, MASKED, MASK_D)
            qk = tl.dot(q, tl.trans(k), input_precision=DOT)
        else:  # K^T tile loaded [BLOCK_D, BLOCK_N] directly
            k = _load_kv(k_tile + k_off[None, :] + offs_d[:, None] * stride_kd, n_ok, d_ok, False, MASKED, MASK_D)
            qk = tl.dot(q, k, input_precision=DOT)
    if FAR_TILE:
        # The bias less its per-row constant c0 rides on the tensor cores (far_b: _far_bias_powers); c0 enters
        # through the row max and the exp2 shift instead of per score: m_new stays the running max of the full
        # scores (max over keys commutes with adding c0, and with the multiply by scale_log2 > 0), and
        # qk * scale_log2 - (m_new - c0) is s - m_new, one FMA per score as without a bias.
        qk = tl.dot(far_a, far_b, qk, input_precision=DOT)
        m_new = tl.maximum(m_i, tl.max(qk, 1) * scale_log2 + c0)
        p = tl.exp2(qk * scale_log2 - (m_new - c0)[:, None])
    else:
        s = _scores(qk, slope2, pos.to(tl.float32), start, scale_log2, BIAS, MASKED, BLOCK_N)
        if MASKED:
            s = tl.where((offs_n[None, :] <= pos[:, None]) & n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    if TMA_TILE:
        v = v_desc.load([row, kv_col])
    else:
        v = _load_kv(V + (kv_head_off_v + v_base) + v_off[:, None] + offs_d[None, :] * stride_vd, n_ok, d_ok, True,
                     MASKED, MASK_D)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT)
    return acc, m_new, l_i


@triton.jit
def _paged_prefill_kernel(
    Q, K, V, O, BT, CU, CTX, SLOPES,
    scale_log2,
    stride_qt, stride_qh, stride_qd,
    stride_kb, stride_ks, stride_kh, stride_kd,
    stride_vb, stride_vs, stride_vh, stride_vd,
    stride_ot, stride_oh, stride_od,
    stride_bt, kv_slots,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, PAGE: tl.constexpr,
    BIAS: tl.constexpr, MAX_Q_BUCKET: tl.constexpr, DOT: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, K_NMAJOR: tl.constexpr, FAR: tl.constexpr, TMA: tl.constexpr, PDL: tl.constexpr,
):
    begin(PDL)
    # MAX_Q_BUCKET (prefill_q_class of the longest q_len) is unused in the body: it only keys the autotuner, so
    # short, chunk-sized and long prefills each get their own tile shape.
    tl.static_assert(BLOCK_D >= HEAD_DIM)
    # TMA: the unmasked tiles' K and V by tensor descriptors over the caches as [kv_slots, kv_heads * HEAD_DIM]
    # (the host passes it only for contiguous caches, BLOCK_D == HEAD_DIM, pages of BLOCK_N keys or more).
    if TMA:
        k_desc = tl.make_tensor_descriptor(K, [kv_slots, stride_ks], [stride_ks, 1], [BLOCK_N, BLOCK_D])
        v_desc = tl.make_tensor_descriptor(V, [kv_slots, stride_vs], [stride_vs, 1], [BLOCK_N, BLOCK_D])
    else:
        k_desc = K
        v_desc = V
    tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16)
    # Causal tiles get longer down the sequence: the GPU starts blocks in grid order, so the longest tiles go
    # first and the short ones fill the last wave (otherwise the last wave is the longest tiles, a ~1/waves tail).
    tile = tl.num_programs(0) - 1 - tl.program_id(0)
    kv_head = tl.program_id(1)
    seq = tl.program_id(2)
    q_start = tl.load(CU + seq)
    q_len = tl.load(CU + seq + 1) - q_start
    m_start = tile * BLOCK_M
    if m_start >= q_len * GROUP:  # the grid is sized for the longest sequence
        return
    ctx = tl.load(CTX + seq)

    offs_m = m_start + tl.arange(0, BLOCK_M)
    row_ok = offs_m < q_len * GROUP
    tok = offs_m // GROUP
    head = kv_head * GROUP + offs_m % GROUP
    pos = ctx - q_len + tok  # absolute position of each row's token
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM

    q_ptrs = Q + (q_start + tok).to(tl.int64)[:, None] * stride_qt + head[:, None] * stride_qh \
        + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    if BIAS != 0:
        slope2 = tl.load(SLOPES + head, mask=row_ok, other=0.0) * 1.4426950408889634
    else:
        slope2 = tl.zeros([BLOCK_M], dtype=tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    bt_row = BT + seq.to(tl.int64) * stride_bt
    koff = kv_head.to(tl.int64) * stride_kh
    voff = kv_head.to(tl.int64) * stride_vh
    kv_col = kv_head * HEAD_DIM
    last_tok = tl.minimum((m_start + BLOCK_M - 1) // GROUP, q_len - 1)
    kv_end = ctx - q_len + last_tok + 1  # keys past the tile's last valid position are never needed
    first_pos = ctx - q_len + m_start // GROUP
    # Keys [0, full_end) are visible to every row of the tile: no causal mask there.
    full_end = ((first_pos + 1) // BLOCK_N) * BLOCK_N
    # Keys [0, far_end) lie at least FAR before every row: sqrt-ALiBi by polynomial there (module docstring). The
    # constexpr branch keeps that loop out of the other bias modes' compiled kernels.
    far_end = 0
    if BIAS == 2:
        far_end = (tl.maximum(first_pos + 1 - FAR, 0) // BLOCK_N) * BLOCK_N
        far_b = _far_bias_powers(q.dtype, BLOCK_N)
        for start in range(0, far_end, BLOCK_N):
            acc, m_i, l_i = _prefill_tile(acc, m_i, l_i, q, slope2, pos, K, V, bt_row, start, kv_end, koff, voff,
                                          offs_d, d_ok, scale_log2, far_b, k_desc, v_desc, kv_col, stride_kb,
                                          stride_ks, stride_kd, stride_vb, stride_vs, stride_vd, BIAS, False, PAGE,
                                          BLOCK_N, DOT, K_NMAJOR, True, BLOCK_D != HEAD_DIM, TMA)
    # far_b = 0: these tiles take _scores, the bias dot's B is not needed.
    for start in range(far_end, full_end, BLOCK_N):
        acc, m_i, l_i = _prefill_tile(acc, m_i, l_i, q, slope2, pos, K, V, bt_row, start, kv_end, koff, voff,
                                      offs_d, d_ok, scale_log2, 0, k_desc, v_desc, kv_col, stride_kb, stride_ks,
                                      stride_kd, stride_vb, stride_vs, stride_vd, BIAS, False, PAGE, BLOCK_N, DOT,
                                      K_NMAJOR, False, BLOCK_D != HEAD_DIM, TMA)
    for start in range(full_end, kv_end, BLOCK_N):
        acc, m_i, l_i = _prefill_tile(acc, m_i, l_i, q, slope2, pos, K, V, bt_row, start, kv_end, koff, voff,
                                      offs_d, d_ok, scale_log2, 0, k_desc, v_desc, kv_col, stride_kb, stride_ks,
                                      stride_kd, stride_vb, stride_vs, stride_vd, BIAS, True, PAGE, BLOCK_N, DOT,
                                      K_NMAJOR, False, BLOCK_D != HEAD_DIM, False)
    # Every valid row saw key 0 <= pos in its first tile, so l_i > 0; padded rows are never stored.
    out = acc / l_i[:, None]
    o_ptrs = O + (q_start + tok).to(tl.int64)[:, None] * stride_ot + head[:, None] * stride_oh \
        + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


# ------------------------------------------------------------------------------------------------ decode


@triton.jit
def _paged_decode_kernel(
    Q, K, V, BT, CU, CTX, SLOPES, MP, LP, ACCP, KN, VN, SLOTS,
    scale_log2,
    stride_qt, stride_qh, stride_qd,
    stride_kb, stride_ks, stride_kh, stride_kd,
    stride_vb, stride_vs, stride_vh, stride_vd,
    stride_bt, stride_knt, stride_knh, stride_vnt, stride_vnh,
    NUM_HEADS: tl.constexpr, NUM_SPLITS: tl.constexpr,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    PAGE: tl.constexpr, BIAS: tl.constexpr, BLOCK_N: tl.constexpr, DOT: tl.constexpr, STORE_NEW: tl.constexpr,
    PDL: tl.constexpr,
):
    begin(PDL)
    tl.static_assert(GROUP_PAD >= GROUP and GROUP_PAD >= 16)
    split = tl.program_id(0)
    kv_head = tl.program_id(1)
    seq = tl.program_id(2)
    q_start = tl.load(CU + seq)
    q_len = tl.load(CU + seq + 1) - q_start
    ctx = tl.load(CTX + seq)

    offs_g = tl.arange(0, GROUP_PAD)
    g_ok = offs_g < tl.where(q_len > 0, GROUP, 0)  # no query row at all when q_len == 0
    head = kv_head * GROUP + offs_g
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    # Each split covers a BLOCK_N-aligned slice of this sequence's own context; trailing splits may be empty.
    split_len = tl.cdiv(tl.cdiv(ctx, NUM_SPLITS), BLOCK_N) * BLOCK_N
    start = split * split_len
    end = tl.minimum(start + split_len, ctx)
    if q_len == 0:
        end = start  # no query for this sequence: nothing to do (the reduce pass skips it too)
    koff = kv_head.to(tl.int64) * stride_kh
    voff = kv_head.to(tl.int64) * stride_vh
    # STORE_NEW: the step's key/value (row q_start of KN/VN, position ctx - 1) are not in the cache yet. The split
    # holding ctx - 1 stores them, stops its loop before that position and adds the new key from registers after
    # it, so no program ever reads that slot and nothing waits on the store: store_kv's launch per layer is saved.
    # (Substituting the new column inside the tile loop cost a select per element of every K and V tile and a
    # trip of the tiles through registers: ~1.9x the loop's instructions in the sm_90 SASS.)
    new_pos = -1
    loop_end = end
    if STORE_NEW:
        one = tl.arange(0, 1)  # a one-element load: the interpreter rejects a masked scalar load
        slot = tl.max(tl.load(SLOTS + q_start + one, mask=one < q_len, other=-1), 0).to(tl.int64)
        mine = (q_len > 0) & (slot >= 0) & (start <= ctx - 1) & (ctx - 1 < end)
        new_pos = tl.where(mine, ctx - 1, -1)
        new_ok = d_ok & (offs_d * 0 + new_pos >= 0)  # a vector mask: the interpreter takes no int1 scalar
        k_new = tl.load(KN + q_start.to(tl.int64) * stride_knt + kv_head * stride_knh + offs_d, mask=new_ok)
        v_new = tl.load(VN + q_start.to(tl.int64) * stride_vnt + kv_head * stride_vnh + offs_d, mask=new_ok)
        blk, off = slot // PAGE, slot % PAGE
        tl.store(K + blk * stride_kb + off * stride_ks + koff + offs_d * stride_kd, k_new, mask=new_ok)
        tl.store(V + blk * stride_vb + off * stride_vs + voff + offs_d * stride_vd, v_new, mask=new_ok)
        loop_end = tl.where(new_pos >= 0, new_pos, end)

    q = tl.load(Q + q_start.to(tl.int64) * stride_qt + head[:, None] * stride_qh + offs_d[None, :] * stride_qd,
                mask=g_ok[:, None] & d_ok[None, :], other=0.0)
    if BIAS != 0:
        slope2 = tl.load(SLOPES + head, mask=g_ok, other=0.0) * 1.4426950408889634
    else:
        slope2 = tl.zeros([GROUP_PAD], dtype=tl.float32)
    pos_f = tl.zeros([GROUP_PAD], dtype=tl.float32) + (ctx - 1).to(tl.float32)

    m_i = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([GROUP_PAD, BLOCK_D], dtype=tl.float32)
    bt_row = BT + seq.to(tl.int64) * stride_bt
    for n0 in range(start, loop_end, BLOCK_N):
        # keys < end <= ctx are all causal-visible to the single query at ctx - 1: only the length mask applies.
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < loop_end
        k_base, k_off = _kv_offsets(bt_row, n0, n_ok, stride_kb, stride_ks, PAGE, BLOCK_N)
        v_base, v_off = _kv_offsets(bt_row, n0, n_ok, stride_vb, stride_vs, PAGE, BLOCK_N)
        k = tl.load(K + (koff + k_base) + k_off[None, :] + offs_d[:, None] * stride_kd,
                    mask=n_ok[None, :] & d_ok[:, None], other=0.0)
        s = _scores(tl.dot(q, k, input_precision=DOT), slope2, pos_f, n0, scale_log2, BIAS, True, BLOCK_N)
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + (voff + v_base) + v_off[:, None] + offs_d[None, :] * stride_vd,
                    mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT)
        m_i = m_new
    if STORE_NEW:
        if new_pos >= 0:  # the new key: at distance 0, so no bias in any mode
            s_new = tl.sum(q.to(tl.float32) * k_new.to(tl.float32)[None, :], 1) * scale_log2
            m_new = tl.maximum(m_i, s_new)
            alpha = tl.exp2(m_i - m_new)  # 0 when the loop was empty (m_i = -inf)
            p_new = tl.exp2(s_new - m_new)
            l_i = l_i * alpha + p_new
            acc = acc * alpha[:, None] + p_new[:, None] * v_new.to(tl.float32)[None, :]
            m_i = m_new

    # partials laid out [num_seqs, num_heads, NUM_SPLITS(, BLOCK_D)]
    part = (seq * NUM_HEADS + head).to(tl.int64) * NUM_SPLITS + split
    tl.store(MP + part, m_i, mask=g_ok)
    tl.store(LP + part, l_i, mask=g_ok)
    tl.store(ACCP + part[:, None] * BLOCK_D + offs_d[None, :], acc, mask=g_ok[:, None])


@triton.jit
def _decode_reduce_kernel(
    MP, LP, ACCP, O, CU,
    stride_ot, stride_oh, stride_od,
    NUM_HEADS: tl.constexpr, NUM_SPLITS: tl.constexpr, SPLITS_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, PDL: tl.constexpr,
):
    begin(PDL)
    head = tl.program_id(0)
    seq = tl.program_id(1)
    q_start = tl.load(CU + seq)
    if tl.load(CU + seq + 1) == q_start:
        return
    offs_s = tl.arange(0, SPLITS_PAD)
    s_ok = offs_s < NUM_SPLITS
    offs_d = tl.arange(0, BLOCK_D)
    base = (seq * NUM_HEADS + head).to(tl.int64) * NUM_SPLITS
    m = tl.load(MP + base + offs_s, mask=s_ok, other=float("-inf"))
    l = tl.load(LP + base + offs_s, mask=s_ok, other=0.0)
    acc = tl.load(ACCP + (base + offs_s)[:, None] * BLOCK_D + offs_d[None, :], mask=s_ok[:, None], other=0.0)
    m_max = tl.max(m, 0)  # finite: split 0 always holds key 0
    w = tl.where(m == float("-inf"), 0.0, tl.exp2(m - m_max))  # empty splits weigh 0 (avoid -inf - -inf)
    total = tl.sum(w * l, 0)
    out = tl.sum(w[:, None] * acc, 0) / total
    tl.store(O + q_start.to(tl.int64) * stride_ot + head * stride_oh + offs_d * stride_od,
             out.to(O.dtype.element_ty), mask=offs_d < HEAD_DIM)


# ------------------------------------------------------------------------------------------------ store_kv


@triton.jit
def _store_kv_kernel(
    K, V, KC, VC, SLOTS,
    stride_kt, stride_kh, stride_kd, stride_vt, stride_vh, stride_vd,
    stride_kcb, stride_kcs, stride_kch, stride_kcd, stride_vcb, stride_vcs, stride_vch, stride_vcd,
    NUM_KV_HEADS: tl.constexpr, HEADS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    PAGE: tl.constexpr, PDL: tl.constexpr,
):
    begin(PDL)
    tok = tl.program_id(0)
    slot = tl.load(SLOTS + tok).to(tl.int64)
    if slot < 0:
        return
    blk = slot // PAGE
    off = slot % PAGE
    offs_h = tl.arange(0, HEADS_PAD)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_h < NUM_KV_HEADS)[:, None] & (offs_d < HEAD_DIM)[None, :]
    t = tok.to(tl.int64)
    k = tl.load(K + t * stride_kt + offs_h[:, None] * stride_kh + offs_d[None, :] * stride_kd, mask=mask)
    v = tl.load(V + t * stride_vt + offs_h[:, None] * stride_vh + offs_d[None, :] * stride_vd, mask=mask)
    tl.store(KC + blk * stride_kcb + off * stride_kcs + offs_h[:, None] * stride_kch + offs_d[None, :] * stride_kcd,
             k.to(KC.dtype.element_ty), mask=mask)
    tl.store(VC + blk * stride_vcb + off * stride_vcs + offs_h[:, None] * stride_vch + offs_d[None, :] * stride_vcd,
             v.to(VC.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------------------------ launchers


def store_kv_triton(k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, slot_mapping: Tensor) -> None:
    num_tokens, num_kv_heads, head_dim = k.shape
    if num_tokens == 0:
        return
    pdl = use_pdl(k)
    _store_kv_kernel[(num_tokens,)](
        k, v, k_cache, v_cache, slot_mapping,
        *k.stride(), *v.stride(), *k_cache.stride(), *v_cache.stride(),
        NUM_KV_HEADS=num_kv_heads, HEADS_PAD=triton.next_power_of_2(num_kv_heads), HEAD_DIM=head_dim,
        BLOCK_D=max(16, triton.next_power_of_2(head_dim)), PAGE=k_cache.shape[1], PDL=pdl, launch_pdl=pdl,
        num_warps=4 if num_kv_heads * head_dim >= 1024 else 1,
    )


def _prefill_configs() -> list[triton.Config]:
    if _interpreting():  # the interpreter cannot autotune over several configs
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "K_NMAJOR": 1, "FAR": far_distance(16)},
                              num_warps=4, num_stages=1)]
    tiles = [(128, 64, 8, 3), (128, 128, 8, 2), (128, 64, 4, 3), (64, 64, 4, 3), (128, 32, 4, 4), (64, 128, 4, 2)]
    # Which K layout feeds Hopper's wgmma better depends on the tile: let the autotuner time both.
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "K_NMAJOR": kn, "FAR": far_distance(bn)}, num_warps=w,
                          num_stages=s)
            for bm, bn, w, s in tiles for kn in (0, 1)]


def _prune_prefill(configs, named_args, **kwargs):  # type: ignore[no-untyped-def]
    """Drop configs whose K/V tile does not fit the head dim's shared-memory budget (d128: BLOCK_N <= 64 at 3
    stages). fp32 ('ieee') prefill serves parity checks, where speed does not matter: one config, the one with the
    smallest K/V tiles, instead of compiling and timing all of them. At d128 a 4-warp tile (one warpgroup) other
    than 64 x 64 spills inside its loop (sm_90 compiles: a 128-row tile keeps a 128 x 128 fp32 accumulator in 128
    registers per thread, ~150 local stores per loop at 128 x 64; 64 x 128, 10-26 with Triton 3.6): not worth
    compiling and timing."""
    head_dim = kwargs["HEAD_DIM"]
    kept = [c for c in configs if not (head_dim > 64 and c.kwargs["BLOCK_N"] * c.num_stages > 256)] or configs[:1]
    if kwargs.get("DOT") == "ieee":
        return [min(kept, key=lambda c: (c.kwargs["BLOCK_N"], c.kwargs["K_NMAJOR"]))]
    if head_dim > 64:
        kept = [c for c in kept if not (c.num_warps == 4 and max(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) > 64)] \
            or kept
    return kept


def prefill_q_class(max_seqlen_q: int) -> int:
    """The autotuning key for a batch's longest query: the smallest PREFILL_Q_CLASSES entry that holds it. The
    autotuner compiles and times every config the first time it meets a key (about 2 s per config on an H100
    host: a 24-token prefill after a cached prefix, a new power-of-two bucket then, stalled 24.6 s in run3), so
    the classes are few and the engine runs one prefill of each at load (ModelRunner.warm_up_prefill)."""
    return next((c for c in PREFILL_Q_CLASSES if max_seqlen_q <= c), PREFILL_Q_CLASSES[-1])


_TUNE_KEY = ["GROUP", "HEAD_DIM", "BIAS", "PAGE", "MAX_Q_BUCKET", "DOT", "TMA"]
_prefill_launcher = None


def _get_prefill_launcher():  # type: ignore[no-untyped-def]
    global _prefill_launcher
    if _prefill_launcher is None:
        if _interpreting():
            _prefill_launcher = _paged_prefill_kernel
        else:
            _prefill_launcher = triton.autotune(
                configs=_prefill_configs(), key=_TUNE_KEY,
                prune_configs_by={"early_config_prune": _prune_prefill},
                cache_results=True,  # the choice persists on disk (Triton's cache dir): a restart times nothing
            )(_paged_prefill_kernel)
    return _prefill_launcher


def _precompile_candidates(launcher, grid, args: tuple, kwargs: dict) -> None:  # type: ignore[no-untyped-def]
    """The prefill candidates this key keeps, compiled in parallel before the autotuner times them."""
    precompile("prefill", ("prefill", args[0].dtype, *(kwargs[k] for k in _TUNE_KEY)), launcher,
               lambda: _prune_prefill(launcher.configs, {}, **kwargs), grid, args, kwargs)


def tma_fits(k_cache: Tensor, v_cache: Tensor, head_dim: int) -> bool:
    """Whether the prefill kernel can load K/V tiles by TMA: contiguous caches (rows of kv_heads * head_dim, 16-byte
    aligned), a power-of-two head dim (BLOCK_D == HEAD_DIM), pages that hold whole tiles of the largest BLOCK_N
    the candidates use, and on a GPU an sm_90 or later one (under the interpreter: always, for the tests)."""
    page = k_cache.shape[1]
    largest_tile = max(c.kwargs["BLOCK_N"] for c in _prefill_configs())
    device_ok = _interpreting() or (k_cache.is_cuda and torch.cuda.get_device_capability(k_cache.device)[0] >= 9)
    return (device_ok and k_cache.is_contiguous() and v_cache.is_contiguous() and head_dim >= 16
            and head_dim == triton.next_power_of_2(head_dim) and page >= largest_tile
            and k_cache.data_ptr() % 16 == 0 and v_cache.data_ptr() % 16 == 0
            and k_cache.shape[0] * page < 2 ** 31)


def _num_splits(q: Tensor, num_seqs: int, num_kv_heads: int, max_ctx: int, block_n: int) -> int:
    """Enough (seq, kv head, split) programs to fill the GPU about twice, each split at least 256 keys long."""
    sms = torch.cuda.get_device_properties(q.device).multi_processor_count if q.is_cuda else 8
    want = triton.cdiv(2 * sms, max(1, num_seqs * num_kv_heads))
    return max(1, min(want, triton.cdiv(max_ctx, max(256, block_n)), 128))


def paged_attention_triton(q: Tensor, k_cache: Tensor, v_cache: Tensor, block_tables: Tensor, cu_seqlens_q: Tensor,
                           context_lens: Tensor, *, alibi_slopes: Tensor | None, bias: str, scale: float,
                           max_seqlen_q: int | None = None, num_splits: int | None = None,
                           new_kv: tuple[Tensor, Tensor, Tensor] | None = None, tma: bool | None = None) -> Tensor:
    """Launches the decode (all q_len <= 1) or the prefill kernel. Inputs are validated by the dispatcher.

    new_kv (k, v, slot_mapping): stored into the cache first; the decode kernel does it itself (one launch less).
    num_splits overrides the split-KV heuristic (tests use it to force empty splits).
    tma: prefill loads its unmasked K/V tiles by tensor descriptors where the caches allow it (tma_fits); None takes
    PREFILL_TMA.
    """
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads, page = k_cache.shape[2], k_cache.shape[1]
    group = num_heads // num_kv_heads
    num_seqs = block_tables.shape[0]
    out = torch.empty_like(q)
    if max_seqlen_q is None:
        max_seqlen_q = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max().item()) if num_seqs else 0
    if new_kv is not None and (num_seqs == 0 or max_seqlen_q > 1):
        # Not a decode step: the prefill kernel reads every key from the cache, so they are stored first.
        store_kv_triton(new_kv[0], new_kv[1], k_cache, v_cache, new_kv[2])
        new_kv = None
    if num_tokens == 0 or num_seqs == 0:
        return out
    code = _BIAS_CODE[bias]
    slopes = alibi_slopes if (alibi_slopes is not None and code != 0) else q.new_zeros(1, dtype=torch.float32)
    slopes = slopes.to(torch.float32).contiguous()
    scale_log2 = float(scale) * LOG2E
    block_d = max(16, triton.next_power_of_2(head_dim))
    common_k = (*k_cache.stride(), *v_cache.stride())
    # fp32 in means fp32 math (the engine's parity runs); Triton would otherwise round fp32 dots to TF32.
    dot = "ieee" if q.dtype == torch.float32 else "tf32"
    pdl = use_pdl(q)

    if max_seqlen_q <= 1:
        if new_kv is None:
            k_new = v_new = slots = q.new_zeros(1, 1, head_dim)  # never read: STORE_NEW is off
        else:
            k_new, v_new, slots = (t if t.stride(-1) == 1 else t.contiguous() for t in new_kv)
        block_n = 16 if _interpreting() else (64 if head_dim > 64 else 128)
        max_ctx = block_tables.shape[1] * page
        splits = num_splits or _num_splits(q, num_seqs, num_kv_heads, max_ctx, block_n)
        group_pad = max(16, triton.next_power_of_2(group))
        m_part = torch.empty((num_seqs, num_heads, splits), dtype=torch.float32, device=q.device)
        l_part = torch.empty_like(m_part)
        acc_part = torch.empty((num_seqs, num_heads, splits, block_d), dtype=torch.float32, device=q.device)
        _paged_decode_kernel[(splits, num_kv_heads, num_seqs)](
            q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, slopes, m_part, l_part, acc_part,
            k_new, v_new, slots, scale_log2, *q.stride(), *common_k, block_tables.stride(0),
            k_new.stride(0), k_new.stride(1), v_new.stride(0), v_new.stride(1),
            NUM_HEADS=num_heads, NUM_SPLITS=splits, GROUP=group, GROUP_PAD=group_pad, HEAD_DIM=head_dim,
            BLOCK_D=block_d, PAGE=page, BIAS=code, BLOCK_N=block_n, DOT=dot, STORE_NEW=new_kv is not None,
            PDL=pdl, launch_pdl=pdl, num_warps=4, num_stages=1 if _interpreting() else 3,
        )
        _decode_reduce_kernel[(num_heads, num_seqs)](
            m_part, l_part, acc_part, out, cu_seqlens_q, *out.stride(),
            NUM_HEADS=num_heads, NUM_SPLITS=splits, SPLITS_PAD=max(2, triton.next_power_of_2(splits)),
            HEAD_DIM=head_dim, BLOCK_D=block_d, PDL=pdl, launch_pdl=pdl, num_warps=4 if head_dim > 64 else 2,
        )
        return out

    launcher = _get_prefill_launcher()

    def grid(meta):  # type: ignore[no-untyped-def]
        return (triton.cdiv(max_seqlen_q * group, meta["BLOCK_M"]), num_kv_heads, num_seqs)

    tma = (PREFILL_TMA if tma is None else tma) and tma_fits(k_cache, v_cache, head_dim)
    if tma and not _interpreting():
        # descriptors built on the device live in global scratch memory that Triton asks for at launch
        triton.set_allocator(lambda size, alignment, stream: torch.empty(size, dtype=torch.int8, device=q.device))
    kwargs = dict(GROUP=group, HEAD_DIM=head_dim, BLOCK_D=block_d, PAGE=page, BIAS=code, DOT=dot,
                  MAX_Q_BUCKET=prefill_q_class(max_seqlen_q), TMA=tma, PDL=pdl, launch_pdl=pdl)
    args = (q, k_cache, v_cache, out, block_tables, cu_seqlens_q, context_lens, slopes,
            scale_log2, *q.stride(), *common_k, *out.stride(), block_tables.stride(0),
            k_cache.shape[0] * page)
    if _interpreting():
        cfg = _prefill_configs()[0]
        kwargs.update(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    else:
        _precompile_candidates(launcher, grid, args, kwargs)
    launcher[grid](*args, **kwargs)
    return out


__all__ = ["paged_attention_triton", "store_kv_triton"]
