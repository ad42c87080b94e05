"""Causal attention over a paged KV cache with Step-1's sqrt-ALiBi, linear ALiBi or no bias.

One call serves chunked prefill (several query tokens per sequence, possibly after a cached prefix) and decode
(one query token per sequence). Shapes and conventions (the contract with lm_engine):

    q             [num_tokens, num_heads, head_dim]           fp16/bf16/fp32, packed over sequences
    k_cache       [num_blocks, block_size, num_kv_heads, head_dim]   same dtype as q
    v_cache       [num_blocks, block_size, num_kv_heads, head_dim]
    block_tables  [num_seqs, max_blocks] int32, -1 = padding
    cu_seqlens_q  [num_seqs + 1] int32, query token offsets
    context_lens  [num_seqs] int32, KV length per sequence INCLUDING the new tokens (already stored)
    alibi_slopes  [num_heads] fp32 (required unless bias == "none")

Query token t of sequence s (q_len = cu[s+1] - cu[s]) sits at absolute position p = context_len - q_len + t and
sees keys j <= p. Score = (q . k) * scale + bias, with bias "sqrt_alibi": -slope_h * sqrt(p - j),
"alibi": -slope_h * (p - j), "none": 0. Query head h reads kv head h // (num_heads / num_kv_heads) (GQA).
Softmax and accumulation are fp32; the output has q's dtype and shape.

Positions are absolute (from context_lens), so a forked sequence that shares blocks needs no fix-up.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from kernels._dispatch import triton_module

BIAS_MODES = ("sqrt_alibi", "alibi", "none")
# The GPU prefill kernel is tuned once per class of longest query length (up to 64, 512, longer); the first prefill
# of a class compiles and times its candidate tiles (seconds), so an engine runs one prefill of each class at load.
PREFILL_Q_CLASSES = (64, 512, 4096)
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# The reference attends a prefill chunk in tiles of query rows whose fp32 scores, [heads, rows, keys], hold about this
# many elements (8 MB), so that a tile's passes over them stay in the CPU's caches: a 4k-token chunk at once made
# several 1.6 GB passes per layer (20 s for a 4k prompt through the tiny Step-1 on a CPU). A tile also reads only the
# keys its rows can see, half of a fresh prompt's on average.
_TILE_SCORES = 1 << 21


# ----------------------------------------------------------------------------------------------- slopes

def alibi_slopes(num_heads: int) -> Tensor:
    """ALiBi slopes as Step-1 (and the ALiBi paper's reference code) define them.

    n = 2**floor(log2(H)); slopes 2**(-8 i / n) for i = 1..n; when H > n the remaining H - n heads take
    2**(-4 k / n) for k = 1, 3, 5, ... (every other slope of the 2n-head series).

    Returns:
        [num_heads] fp32 on the CPU.
    """
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")
    n = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = [2.0 ** (-8.0 * i / n) for i in range(1, n + 1)]
    slopes += [2.0 ** (-4.0 * k / n) for k in range(1, 2 * (num_heads - n), 2)]
    return torch.tensor(slopes, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------- store_kv

def store_kv_ref(k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, slot_mapping: Tensor) -> None:
    """Writes k[t], v[t] to cache slot slot_mapping[t] = block * block_size + offset; slot -1 is skipped."""
    block_size = k_cache.shape[1]
    valid = slot_mapping >= 0
    slots = slot_mapping[valid]
    blocks, offsets = slots // block_size, slots % block_size
    k_cache[blocks, offsets] = k[valid].to(k_cache.dtype)
    v_cache[blocks, offsets] = v[valid].to(v_cache.dtype)


def _check_store_kv(k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, slot_mapping: Tensor) -> None:
    if k.dim() != 3 or v.shape != k.shape:
        raise ValueError(f"k and v must both be [num_tokens, num_kv_heads, head_dim], got {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if k_cache.dim() != 4 or v_cache.shape != k_cache.shape:
        raise ValueError(f"caches must both be [num_blocks, block_size, num_kv_heads, head_dim], got "
                         f"{tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    if k_cache.shape[2:] != k.shape[1:]:
        raise ValueError(f"cache heads/head_dim {tuple(k_cache.shape[2:])} != k's {tuple(k.shape[1:])}")
    if slot_mapping.dim() != 1 or slot_mapping.shape[0] != k.shape[0]:
        raise ValueError(f"slot_mapping must be [num_tokens={k.shape[0]}], got {tuple(slot_mapping.shape)}")
    if slot_mapping.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"slot_mapping must be int32/int64, got {slot_mapping.dtype}")
    if k.dtype not in _FLOAT_DTYPES or k_cache.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"unsupported dtypes k {k.dtype}, cache {k_cache.dtype}")
    devices = {t.device for t in (k, v, k_cache, v_cache, slot_mapping)}
    if len(devices) != 1:
        raise ValueError(f"all tensors must be on one device, got {devices}")


def store_kv(k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, slot_mapping: Tensor) -> None:
    """Writes new keys/values into the paged cache (in place). See store_kv_ref for the semantics.

    Args:
        k, v: [num_tokens, num_kv_heads, head_dim].
        k_cache, v_cache: [num_blocks, block_size, num_kv_heads, head_dim].
        slot_mapping: [num_tokens] int64 (or int32), block * block_size + offset, -1 = skip.
    """
    _check_store_kv(k, v, k_cache, v_cache, slot_mapping)
    tri = _triton_for(k)
    if tri is not None:
        tri.store_kv_triton(k, v, k_cache, v_cache, slot_mapping)
    else:
        store_kv_ref(k, v, k_cache, v_cache, slot_mapping)


# ----------------------------------------------------------------------------------------------- attention

def _bias(mode: str, slopes: Tensor, dist: Tensor, num_kv_heads: int) -> Tensor:
    """Bias [n, G, H / G, t, L] for distances dist [n, t, L] (negative ones, masked by the caller, are clamped to
    0), fp32: head h is group h // (H / G), member h % (H / G), so it adds to the scores without a transpose."""
    d = dist.clamp(min=0).to(torch.float32)
    if mode == "sqrt_alibi":
        d = d.sqrt()
    neg = -slopes.to(device=dist.device, dtype=torch.float32).view(1, num_kv_heads, -1, 1, 1)
    return neg * d[:, None, None]


def paged_attention_ref(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    block_tables: Tensor,
    cu_seqlens_q: Tensor,
    context_lens: Tensor,
    *,
    alibi_slopes: Tensor | None,
    bias: str,
    scale: float,
    max_seqlen_q: int | None = None,
) -> Tensor:
    """The specification of paged_attention (module docstring), in fp32.

    The decode rows (q_len 1) of a step are computed together, each prefill chunk on its own: batching chunks of
    different lengths would need padding to the longest, and one call per decode row made a CPU decode step at
    batch 32 cost 32 x layers x ~20 small ops.
    """
    del max_seqlen_q  # only a launch hint for the kernel
    out = torch.empty_like(q)
    cu, ctx = cu_seqlens_q.tolist(), context_lens.tolist()
    q_lens = [b - a for a, b in zip(cu, cu[1:])]
    groups = [[s for s, n in enumerate(q_lens) if n == 1]] + [[s] for s, n in enumerate(q_lens) if n > 1]
    for seqs in groups:
        if seqs:
            _attend(q, k_cache, v_cache, block_tables, seqs, [cu[s] for s in seqs], [ctx[s] for s in seqs],
                    q_lens[seqs[0]], out, alibi_slopes, bias, scale)
    return out


def _attend(q: Tensor, k_cache: Tensor, v_cache: Tensor, block_tables: Tensor, seqs: list[int], starts: list[int],
            ctx: list[int], q_len: int, out: Tensor, slopes: Tensor | None, bias: str, scale: float) -> None:
    """Attention of sequences `seqs` (query rows from starts[i], context lengths ctx[i]), which all have q_len
    queries; writes their rows of out."""
    num_kv_heads, block_size, head_dim = k_cache.shape[2], k_cache.shape[1], k_cache.shape[3]
    n, max_ctx = len(seqs), max(ctx)
    # Each sequence's keys in order; -1 padding reads block 0, whose keys lie past ctx and are masked.
    tables = block_tables[seqs, :-(-max_ctx // block_size)].long().clamp(min=0)
    k = k_cache[tables].reshape(n, -1, num_kv_heads, head_dim)[:, :max_ctx].float().permute(0, 2, 3, 1)  # [n, G, D, L]
    v = v_cache[tables].reshape(n, -1, num_kv_heads, head_dim)[:, :max_ctx].float().permute(0, 2, 1, 3)  # [n, G, L, D]
    tile = max(1, _TILE_SCORES // (q.shape[1] * max_ctx))
    for t0 in range(0, q_len, tile):
        t1 = min(q_len, t0 + tile)
        rows = torch.tensor([a + i for a in starts for i in range(t0, t1)], device=q.device)
        pos = torch.tensor([c - q_len + i for c in ctx for i in range(t0, t1)], device=q.device)  # absolute
        # Keys past the tile's last position are masked for all its rows: leave them out (n > 1 only at q_len 1).
        # Keys up to its first position are seen by all its rows: only those after may need the mask.
        keys, seen = max_ctx - q_len + t1, min(ctx) - q_len + t0 + 1
        _attend_rows(q, rows, pos.view(n, t1 - t0, 1), k[..., :keys], v[:, :, :keys], seen, out, slopes, bias, scale)


def _attend_rows(q: Tensor, rows: Tensor, pos: Tensor, k: Tensor, v: Tensor, seen: int, out: Tensor,
                 slopes: Tensor | None, bias: str, scale: float) -> None:
    """out[rows] = attention of q[rows] (n sequences x t queries at absolute positions pos [n, t, 1]) over their
    sequences' keys k [n, G, D, L] and values v [n, G, L, D] (fp32); every row sees the first `seen` keys."""
    n, num_kv_heads, head_dim, keys = k.shape
    t, num_heads = pos.shape[1], q.shape[1]
    group = num_heads // num_kv_heads
    dist = pos - torch.arange(keys, device=q.device)  # [n, t, L]
    # Query head h reads kv head h // group: a kv head's query heads are stacked along the query axis, so one plain
    # batched matmul per kv head serves them all (no repeated K/V).
    qs = q[rows].float().view(n, t, num_kv_heads, group, head_dim).permute(0, 2, 3, 1, 4)  # [n, G, g, t, D]
    scores = torch.matmul(qs.reshape(n, num_kv_heads, group * t, head_dim), k).mul_(scale)
    scores = scores.view(n, num_kv_heads, group, t, keys)
    if bias != "none":
        assert slopes is not None
        scores += _bias(bias, slopes, dist, num_kv_heads)
    scores[..., seen:].masked_fill_((dist[..., seen:] < 0)[:, None, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1).view(n, num_kv_heads, group * t, keys)
    o = torch.matmul(probs, v).view(n, num_kv_heads, group, t, head_dim)
    out[rows] = o.permute(0, 3, 1, 2, 4).reshape(n * t, num_heads, head_dim).to(out.dtype)


def _check_attention(q: Tensor, k_cache: Tensor, v_cache: Tensor, block_tables: Tensor, cu_seqlens_q: Tensor,
                     context_lens: Tensor, alibi_slopes: Tensor | None, bias: str) -> None:
    if bias not in BIAS_MODES:
        raise ValueError(f"bias must be one of {BIAS_MODES}, got {bias!r}")
    if q.dim() != 3:
        raise ValueError(f"q must be [num_tokens, num_heads, head_dim], got {tuple(q.shape)}")
    if k_cache.dim() != 4 or v_cache.shape != k_cache.shape:
        raise ValueError(f"caches must both be [num_blocks, block_size, num_kv_heads, head_dim], got "
                         f"{tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    num_heads, head_dim = q.shape[1], q.shape[2]
    num_kv_heads = k_cache.shape[2]
    if k_cache.shape[3] != head_dim:
        raise ValueError(f"cache head_dim {k_cache.shape[3]} != q head_dim {head_dim}")
    if num_heads % num_kv_heads != 0:
        raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}")
    if q.dtype not in _FLOAT_DTYPES or k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise ValueError(f"q and caches must share one of {_FLOAT_DTYPES}, got {q.dtype}, {k_cache.dtype}, "
                         f"{v_cache.dtype}")
    if block_tables.dim() != 2 or block_tables.dtype != torch.int32:
        raise ValueError(f"block_tables must be [num_seqs, max_blocks] int32, got {tuple(block_tables.shape)} "
                         f"{block_tables.dtype}")
    num_seqs = block_tables.shape[0]
    if cu_seqlens_q.shape != (num_seqs + 1,) or cu_seqlens_q.dtype != torch.int32:
        raise ValueError(f"cu_seqlens_q must be [num_seqs + 1 = {num_seqs + 1}] int32, got "
                         f"{tuple(cu_seqlens_q.shape)} {cu_seqlens_q.dtype}")
    if context_lens.shape != (num_seqs,) or context_lens.dtype != torch.int32:
        raise ValueError(f"context_lens must be [num_seqs = {num_seqs}] int32, got {tuple(context_lens.shape)} "
                         f"{context_lens.dtype}")
    if bias != "none":
        if alibi_slopes is None:
            raise ValueError(f"bias {bias!r} needs alibi_slopes")
        if alibi_slopes.shape != (num_heads,):
            raise ValueError(f"alibi_slopes must be [num_heads = {num_heads}], got {tuple(alibi_slopes.shape)}")
    tensors = [q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens]
    if alibi_slopes is not None and bias != "none":
        tensors.append(alibi_slopes)
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"all tensors must be on one device, got {devices}")


def paged_attention(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    block_tables: Tensor,
    cu_seqlens_q: Tensor,
    context_lens: Tensor,
    *,
    alibi_slopes: Tensor | None,
    bias: str,
    scale: float,
    max_seqlen_q: int | None = None,
    new_kv: tuple[Tensor, Tensor, Tensor] | None = None,
) -> Tensor:
    """Causal (sqrt-)ALiBi attention of packed queries over the paged KV cache (see module docstring).

    max_seqlen_q: the longest q_len in the batch, if the caller knows it (saves a device->host sync; 1 = decode).
    new_kv: (k, v, slot_mapping) of the query tokens, written into the cache first exactly as store_kv does
        (context_lens then counts them). One call instead of two: in a decode step the GPU kernel stores them
        itself, which saves a launch per layer per step.

    Returns:
        [num_tokens, num_heads, head_dim], q's dtype.
    """
    _check_attention(q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, alibi_slopes, bias)
    if new_kv is not None:
        k, v, slot_mapping = new_kv
        _check_store_kv(k, v, k_cache, v_cache, slot_mapping)
        if k.shape[0] != q.shape[0] or k.dtype != q.dtype or v.dtype != q.dtype:
            raise ValueError(f"new_kv must hold one {q.dtype} row per query token ({q.shape[0]}), got "
                             f"{k.shape[0]} {k.dtype}/{v.dtype}")
    tri = _triton_for(q)
    if tri is not None:
        return tri.paged_attention_triton(q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens,
                                          alibi_slopes=alibi_slopes, bias=bias, scale=scale,
                                          max_seqlen_q=max_seqlen_q, new_kv=new_kv)
    if new_kv is not None:
        store_kv_ref(new_kv[0], new_kv[1], k_cache, v_cache, new_kv[2])
    return paged_attention_ref(q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens,
                               alibi_slopes=alibi_slopes, bias=bias, scale=scale, max_seqlen_q=max_seqlen_q)


def _triton_for(t: Tensor):  # -> kernels._attention_triton | None
    return triton_module("_attention_triton", t)
