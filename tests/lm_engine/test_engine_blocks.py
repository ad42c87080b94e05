"""BlockManager and Scheduler as plain Python: refcounts, copy-on-write, prefix cache, preemption; and sampling."""
from __future__ import annotations

import numpy as np
import torch

from lm_engine.engine.block_manager import BlockManager
from lm_engine.engine.config import SamplingParams
from lm_engine.engine.sampling import apply_repetition_penalty, repetition_aware_banned, sample, top_k_top_p_mask
from lm_engine.engine.scheduler import ScheduledBatch, Scheduler, build_step_input
from lm_engine.engine.sequence import Sequence, SequenceStatus


def seq(i: int, n: int, bs: int = 4, start: int = 0) -> Sequence:
    return Sequence(i, list(range(start, start + n)), bs)


def test_fork_shares_blocks_and_copy_on_write_only_touches_the_written_block():
    bm = BlockManager(16, 4)
    a = seq(0, 10)
    bm.allocate(a)
    assert a.block_table == [0, 1, 2] and a.num_cached_tokens == 0
    a.num_cached_tokens = 10
    bm.mark_computed(a)
    b = Sequence(1, list(a.token_ids), 4, num_cached_tokens=10)
    bm.fork(a, b)
    assert [bm.blocks[x].ref_count for x in a.block_table] == [2, 2, 2]
    b.append_token(99)
    copies = bm.prepare_write(b, 1)  # position 10 lands in the shared, partly filled block 2
    assert copies == [(2, 3)] and b.block_table == [0, 1, 3]
    assert [bm.blocks[x].ref_count for x in (0, 1, 2, 3)] == [2, 2, 1, 1]
    assert bm.free(b) == 1 and bm.num_free_blocks == 13
    assert bm.free(a) == 3 and bm.num_free_blocks == 16


def test_step_block_tables_are_the_sequences_tables_as_int32_rows_padded_with_minus_one():
    bm = BlockManager(64, 4)
    a, c = seq(0, 70), seq(1, 5, start=100)  # a: 18 blocks, past a block table's first buffer (16)
    for s in (a, c):
        bm.allocate(s)
        s.num_cached_tokens = len(s)
    b = Sequence(2, list(a.token_ids), 4, num_cached_tokens=70)
    bm.fork(a, b)
    for s in (b, a, c):
        s.append_token(1)
    copies = [cp for s in (b, a, c) for cp in bm.prepare_write(s, 1)]
    assert len(copies) == 1 and b.block_table[:17] == a.block_table[:17] and b.block_table[17] != a.block_table[17]
    tables = build_step_input(ScheduledBatch([a, b, c], [1, 1, 1], copies), 4).block_tables
    assert tables.dtype == np.int32
    assert tables.tolist() == [list(a.block_table), list(b.block_table), list(c.block_table) + [-1] * 16]


def test_prefix_cache_reuses_computed_full_blocks_even_after_free():
    bm = BlockManager(8, 4)
    a = seq(0, 9)
    bm.allocate(a)
    a.num_cached_tokens = 9
    bm.mark_computed(a)  # blocks 0, 1 are full and registered
    bm.free(a)
    b = seq(1, 11)  # same first 8 tokens
    bm.allocate(b)
    assert b.block_table[:2] == [0, 1] and b.num_cached_tokens == 8
    c = seq(2, 8)  # all of it cached: keeps one token to compute
    bm.allocate(c)
    assert c.block_table == [0, 1] and c.num_cached_tokens == 7
    assert bm.prepare_write(c, 1) == [(1, bm.blocks[c.block_table[1]].block_id)]


def test_scheduler_batches_prefill_and_decode_within_the_token_budget():
    bm = BlockManager(64, 4)
    sch = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=10)
    a, b = seq(0, 6), seq(1, 7, start=50)
    sch.add(a)
    sch.add(b)
    batch = sch.schedule()
    assert batch is not None and batch.num_tokens == [6, 4]  # b's prefill is chunked
    step = build_step_input(batch, 4)
    assert step.cu_seqlens_q == [0, 6, 10] and step.context_lens == [6, 4]
    assert step.logits_rows == [5]  # only a completes
    assert step.slot_mapping[:6] == [0, 1, 2, 3, 4, 5]
    sch.update(batch, {0: 7})
    batch = sch.schedule()
    assert batch is not None and [s.seq_id for s in batch.seqs] == [0, 1] and batch.num_tokens == [1, 3]


def test_scheduler_preempts_the_newest_sequence_when_blocks_run_out():
    bm = BlockManager(4, 4)
    sch = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=64)
    a, b = seq(0, 7), seq(1, 7, start=20)
    sch.add(a)
    sch.add(b)
    batch = sch.schedule()
    assert batch is not None and len(batch.seqs) == 2 and bm.num_free_blocks == 0
    sch.update(batch, {0: 1, 1: 2})
    for s in (a, b):  # both need a third block for position 8
        s.append_token(3)
    batch = sch.schedule()
    assert batch is not None and [s.seq_id for s in batch.seqs] == [0]
    assert b.status is SequenceStatus.WAITING and b.block_table == [] and b.num_cached_tokens == 0


def test_repetition_penalty_and_repetition_aware_ban():
    logits = torch.tensor([2.0, -2.0, 1.0, 0.5])
    apply_repetition_penalty(logits, [0, 1, 1], 2.0)
    assert logits.tolist() == [1.0, -4.0, 1.0, 0.5]
    assert repetition_aware_banned([1, 2, 3, 0, 1, 2, 3, 0, 1, 2]) == 2  # 2 occurs twice in the last 10
    assert repetition_aware_banned([0, 1, 3, 3, 0, 1, 3, 0, 1, 2]) is None  # 2 once in the last 10: allowed
    assert repetition_aware_banned([2, 2, 2]) is None  # fewer than 10 tokens: rule off
    # In a batch, each row's banned token is masked in that row only (greedy would pick it: logit 5).
    logits = torch.zeros(3, 4)
    logits[:, 2] = 5.0
    histories = [[1, 2, 3, 0, 1, 2, 3, 0, 1, 2], [2] * 3, [0, 1, 3, 3, 0, 1, 3, 0, 1, 2]]
    params = [SamplingParams(temperature=0.0, repetition_aware=True)] * 3
    assert sample(logits, params, histories) == [0, 2, 2]


def test_top_k_top_p_and_sampling():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.5, 0.3, 0.15, 0.05]]))
    masked = top_k_top_p_mask(logits.clone(), torch.tensor([2, 0]), torch.tensor([1.0, 0.7]))
    assert torch.isinf(masked[0, 2:]).all() and torch.isfinite(masked[0, :2]).all()
    assert torch.isinf(masked[1, 2:]).all()  # 0.5 + 0.3 reaches 0.7: the crossing token (0.3) is kept
    g = torch.Generator().manual_seed(0)
    params = [SamplingParams(temperature=1.0)] * 4000
    draws = sample(logits[:1].repeat(4000, 1), params, [[]] * 4000, g)
    freq = torch.bincount(torch.tensor(draws), minlength=4).float() / 4000
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03)
    assert sample(logits.clone(), [SamplingParams(temperature=0.0)] * 2, [[], []]) == [0, 0]
