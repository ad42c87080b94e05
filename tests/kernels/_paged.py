"""Builders shared by the kernel tests: a paged KV cache with holes, forks (shared blocks) and ragged lengths,
plus an independent dense attention written from the formula (float64, explicit per-head loop)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PagedBatch:
    q: Tensor                 # [num_tokens, H, D]
    k_cache: Tensor           # [num_blocks, page, G, D]
    v_cache: Tensor
    block_tables: Tensor      # [S, max_blocks] int32, -1 padded
    cu_seqlens_q: Tensor      # [S + 1] int32
    context_lens: Tensor      # [S] int32
    keys: list[Tensor]        # per sequence, dense [ctx, G, D] (what the cache holds for it)
    values: list[Tensor]
    max_seqlen_q: int


def make_batch(q_lens: list[int], prefix_lens: list[int], *, num_heads: int, num_kv_heads: int, head_dim: int,
               page: int, dtype: torch.dtype, device: str = "cpu", fork_of: dict[int, int] | None = None,
               seed: int = 0) -> PagedBatch:
    """Sequences s with prefix_lens[s] cached tokens and q_lens[s] new ones (their K/V already stored).

    fork_of {s: parent}: sequence s reuses the parent's full prefix blocks (same block ids, same content), like a
    speculative fork. Blocks are handed out in a shuffled order from a pool with spare (never used) blocks, and
    block tables carry -1 padding past each sequence's last block.
    """
    g = torch.Generator().manual_seed(seed)
    fork_of = fork_of or {}
    ctxs = [p + n for p, n in zip(prefix_lens, q_lens)]
    n_blocks = [-(-c // page) for c in ctxs]
    total = sum(n_blocks) + 3
    pool = torch.randperm(total, generator=g).tolist()
    k_cache = torch.randn(total, page, num_kv_heads, head_dim, generator=g).to(dtype)  # garbage in unused slots
    v_cache = torch.randn(total, page, num_kv_heads, head_dim, generator=g).to(dtype)
    tables: list[list[int]] = []
    keys, values = [], []
    for s, ctx in enumerate(ctxs):
        k = torch.randn(ctx, num_kv_heads, head_dim, generator=g).to(dtype)
        v = torch.randn(ctx, num_kv_heads, head_dim, generator=g).to(dtype)
        table: list[int] = []
        shared = 0
        if s in fork_of:
            parent = fork_of[s]
            shared = min(prefix_lens[s], prefix_lens[parent]) // page  # whole blocks of the common prefix
            table = tables[parent][:shared]
            k[: shared * page] = keys[parent][: shared * page]
            v[: shared * page] = values[parent][: shared * page]
        for b in range(shared, n_blocks[s]):
            table.append(pool.pop())
        for b, blk in enumerate(table):
            n = min(page, ctx - b * page)
            k_cache[blk, :n] = k[b * page: b * page + n]
            v_cache[blk, :n] = v[b * page: b * page + n]
        tables.append(table)
        keys.append(k)
        values.append(v)
    max_blocks = max(n_blocks) + 1
    bt = torch.full((len(ctxs), max_blocks), -1, dtype=torch.int32)
    for s, t in enumerate(tables):
        bt[s, : len(t)] = torch.tensor(t, dtype=torch.int32)
    cu = torch.tensor([0] + list(torch.tensor(q_lens).cumsum(0).tolist()), dtype=torch.int32)
    q = torch.randn(int(cu[-1]), num_heads, head_dim, generator=g).to(dtype)
    dev = torch.device(device)
    return PagedBatch(q.to(dev), k_cache.to(dev), v_cache.to(dev), bt.to(dev), cu.to(dev),
                      torch.tensor(ctxs, dtype=torch.int32, device=dev), keys, values, max(q_lens))


def alibi_slopes_independent(num_heads: int) -> list[float]:
    """The ALiBi paper's reference recursion (get_slopes), written out separately from kernels.alibi_slopes."""
    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-2 ** -(math.log2(n) - 3))
        return [start * start ** i for i in range(n)]
    if math.log2(num_heads).is_integer():
        return power_of_2(num_heads)
    closest = 2 ** math.floor(math.log2(num_heads))
    return power_of_2(closest) + alibi_slopes_independent(2 * closest)[0::2][: num_heads - closest]


def dense_attention(batch: PagedBatch, slopes: list[float] | None, bias: str, scale: float) -> Tensor:
    """Independent float64 computation from the formula, one (sequence, head, query) row at a time (vectorised
    over keys only)."""
    q = batch.q.detach().cpu().double()
    out = torch.zeros_like(q)
    num_heads = q.shape[1]
    cu = batch.cu_seqlens_q.tolist()
    for s, (k, v) in enumerate(zip(batch.keys, batch.values)):
        k, v = k.double(), v.double()
        ctx = k.shape[0]
        group = num_heads // k.shape[1]
        q_len = cu[s + 1] - cu[s]
        for h in range(num_heads):
            kh, vh = k[:, h // group], v[:, h // group]
            for t in range(q_len):
                pos = ctx - q_len + t
                j = torch.arange(pos + 1, dtype=torch.float64)
                score = kh[: pos + 1] @ q[cu[s] + t, h] * scale
                if bias == "sqrt_alibi":
                    score = score - slopes[h] * (pos - j).sqrt()
                elif bias == "alibi":
                    score = score - slopes[h] * (pos - j)
                w = torch.softmax(score, 0)
                out[cu[s] + t, h] = w @ vh[: pos + 1]
    return out
