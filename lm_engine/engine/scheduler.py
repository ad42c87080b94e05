"""Continuous batching: every step packs decodes of running sequences and (chunked) prefills of new ones into one
forward, within max_num_seqs and max_num_batched_tokens. No torch.

Order: running sequences first (in arrival order), then waiting ones. When the pool runs out of blocks, the most
recently admitted running sequence is preempted: its blocks are freed and it goes back to the head of the queue to
be recomputed (its tokens are kept, so the result is unchanged).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from lm_engine.engine.block_manager import BlockManager
from lm_engine.engine.sequence import Mode, Sequence, SequenceStatus


@dataclass(slots=True)
class ScheduledBatch:
    seqs: list[Sequence]
    num_tokens: list[int]                       # tokens computed this step per sequence
    copies: list[tuple[int, int]] = field(default_factory=list)  # copy-on-write KV block copies (src, dst)

    def completes(self, i: int) -> bool:
        """Whether sequence i's pending tokens are all computed by this step (then it gets logits)."""
        seq = self.seqs[i]
        return seq.num_cached_tokens + self.num_tokens[i] == len(seq)


@dataclass(frozen=True, slots=True)
class StepInput:
    """What one forward needs, as plain lists and one int32 array (sent to the other tensor-parallel ranks as is)."""
    input_ids: list[int]
    positions: list[int]
    slot_mapping: list[int]
    cu_seqlens_q: list[int]
    context_lens: list[int]
    block_tables: np.ndarray                    # [num_seqs, max_blocks] int32, -1 padded
    logits_rows: list[int]                      # rows of the packed tokens whose logits are needed
    copies: list[tuple[int, int]]
    max_seqlen_q: int

    @property
    def is_decode(self) -> bool:
        return self.max_seqlen_q == 1


def build_step_input(batch: ScheduledBatch, block_size: int) -> StepInput:
    ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    cu = [0]
    ctx: list[int] = []
    rows: list[int] = []
    for i, (seq, n) in enumerate(zip(batch.seqs, batch.num_tokens)):
        start = seq.num_cached_tokens
        ids += seq.token_ids[start:start + n]
        positions += range(start, start + n)
        slots += [seq.block_table[p // block_size] * block_size + p % block_size for p in range(start, start + n)]
        cu.append(cu[-1] + n)
        ctx.append(start + n)
        if batch.completes(i):
            rows += range(cu[-2], cu[-1]) if seq.all_logits else [cu[-1] - 1]
    tables = np.full((len(batch.seqs), max(len(s.block_table) for s in batch.seqs)), -1, dtype=np.int32)
    for i, seq in enumerate(batch.seqs):
        table = seq.block_table.array
        tables[i, :len(table)] = table
    return StepInput(ids, positions, slots, cu, ctx, tables, rows, list(batch.copies), max(batch.num_tokens))


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int) -> None:
        self.bm = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        """Queues a sequence; one that already holds blocks (a session) goes straight to running."""
        if seq.block_table:
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
        else:
            seq.status = SequenceStatus.WAITING
            self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)

    @staticmethod
    def _chunk(seq: Sequence, budget: int) -> int:
        n = min(seq.num_pending, budget)
        if seq.mode is Mode.SCORE and not seq.all_logits and seq.num_pending > 1:
            # Next-token scores compute the last token alone (q_len 1), so that they depend on the KV cache only
            # and are bit-reproducible across fork/rollback, whatever the prefill chunking was.
            n = min(n, seq.num_pending - 1)
        return n

    def schedule(self) -> ScheduledBatch | None:
        batch = ScheduledBatch([], [])
        budget = self.max_num_batched_tokens
        for seq in list(self.running):
            if seq not in self.running:  # preempted below while making room
                continue
            if len(batch.seqs) >= self.max_num_seqs or budget == 0:
                break
            n = self._chunk(seq, budget)
            while (need := self.bm.blocks_needed(seq, n)) > self.bm.num_free_blocks:
                victim = self._pick_victim(batch, seq)
                if victim is None:
                    break
                self._preempt(victim)
            if need > self.bm.num_free_blocks:
                self._preempt(seq)
                continue
            batch.copies += self.bm.prepare_write(seq, n)
            batch.seqs.append(seq)
            batch.num_tokens.append(n)
            budget -= n
        while self.waiting and len(batch.seqs) < self.max_num_seqs and budget > 0:
            seq = self.waiting[0]
            if self.bm.num_free_blocks < seq.num_blocks:
                break
            self.bm.allocate(seq)
            n = self._chunk(seq, budget)
            if self.bm.blocks_needed(seq, n) > self.bm.num_free_blocks:
                self.bm.free(seq)
                seq.num_cached_tokens = 0
                break
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.copies += self.bm.prepare_write(seq, n)
            batch.seqs.append(seq)
            batch.num_tokens.append(n)
            budget -= n
        return batch if batch.seqs else None

    def _pick_victim(self, batch: ScheduledBatch, current: Sequence) -> Sequence | None:
        for seq in reversed(self.running):
            if seq is not current and seq not in batch.seqs:
                return seq
        return None

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.bm.free(seq)
        seq.num_cached_tokens = 0
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)

    def update(self, batch: ScheduledBatch, sampled: dict[int, int]) -> list[Sequence]:
        """Advances the cache counters and appends sampled tokens; returns the sequences that completed their
        pending tokens this step (the caller decides whether they stop)."""
        done: list[Sequence] = []
        for i, seq in enumerate(batch.seqs):
            completed = batch.completes(i)
            start = seq.num_cached_tokens
            seq.num_cached_tokens += batch.num_tokens[i]
            self.bm.mark_computed(seq, start)
            if completed:
                if seq.mode is Mode.GENERATE:
                    seq.append_token(sampled[seq.seq_id])
                done.append(seq)
        return done

    def finish(self, seq: Sequence, reason: str) -> None:
        """Takes seq out of the schedule: held sequences go idle with their blocks, others free them."""
        self.remove(seq)
        seq.finish_reason = reason
        if seq.hold:
            seq.status = SequenceStatus.IDLE
        else:
            self.bm.free(seq)
            seq.status = SequenceStatus.FINISHED
