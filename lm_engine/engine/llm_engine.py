"""Glue: sequences in, one scheduled step at a time, token deltas out. No policy of its own.

Sessions: a sequence added with hold=True keeps its KV blocks when a generation ends (status IDLE), so later turns
extend it and reuse its cache. fork() shares a sequence's blocks copy-on-write; rollback() frees the fork;
commit() makes the fork the sequence (the parent's id now names the fork's state).
"""
from __future__ import annotations

import itertools
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lm_engine.engine.block_manager import BlockManager
from lm_engine.engine.config import EngineConfig, SamplingParams
from lm_engine.engine.model_runner import ModelRunner
from lm_engine.engine.scheduler import ScheduledBatch, Scheduler, StepInput, build_step_input
from lm_engine.engine.sequence import BlockTable, Mode, Sequence, SequenceStatus


class EngineError(RuntimeError):
    """Caller misuse of the engine (unknown sequence, forking a busy one, ...)."""


class EngineDown(EngineError):
    """The engine can run no step any more (a tensor-parallel rank hung or exited): every later step fails alike.
    Its message is written for the engine's users; the cause holds the detail."""


class StepError(EngineError):
    """A step failed (its sequences were ended with finish_reason "error"); the cause is __cause__."""

    def __init__(self, cause: BaseException, seq_ids: list[int]) -> None:
        # EngineDown's text is already written for the engine's users; sequence ids would only hide it
        super().__init__(str(cause) if isinstance(cause, EngineDown)
                         else f"engine step failed for sequences {seq_ids}: {type(cause).__name__}: {cause}")
        self.seq_ids = seq_ids


@dataclass(frozen=True, slots=True)
class TokenDelta:
    seq_id: int
    token_id: int | None          # None when a sequence ends without a new token (abort)
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"


class LLMEngine:
    def __init__(self, runner: ModelRunner, cfg: EngineConfig, eos_token_ids: tuple[int, ...],
                 run: Callable[[StepInput], torch.Tensor] | None = None) -> None:
        self.runner = runner
        self.cfg = cfg
        self.eos = frozenset(eos_token_ids)
        # Past it a RoPE model has no position table and an ALiBi model was never trained: refused, not run.
        self.max_model_len = min(cfg.max_model_len or runner.model_cfg.max_seq_len, runner.model_cfg.max_seq_len)
        self._run = run or runner.run
        self.block_manager = BlockManager(runner.num_blocks, cfg.block_size)
        self.scheduler = Scheduler(self.block_manager, cfg.max_num_seqs, cfg.max_num_batched_tokens)
        self.seqs: dict[int, Sequence] = {}
        self.scores: dict[int, torch.Tensor] = {}   # seq_id -> logits of a finished SCORE request
        self._ids = itertools.count()

    # ------------------------------------------------------------------ requests

    def add_request(self, token_ids: list[int], params: SamplingParams | None = None, *, hold: bool = False,
                    mode: Mode = Mode.GENERATE, all_logits: bool = False) -> int:
        if not token_ids:
            raise EngineError("a request needs at least one token")
        self._check_length(len(token_ids))
        self._check_ids(token_ids)
        seq = Sequence(next(self._ids), list(token_ids), self.cfg.block_size, params or SamplingParams(),
                       mode=mode, hold=hold, all_logits=all_logits)
        self.seqs[seq.seq_id] = seq
        self.scheduler.add(seq)
        return seq.seq_id

    def open(self, token_ids: list[int]) -> int:
        """A held, idle session over token_ids; nothing is computed until it is scored or generates."""
        if not token_ids:
            raise EngineError("a session needs at least one token")
        self._check_length(len(token_ids))
        self._check_ids(token_ids)
        seq = Sequence(next(self._ids), list(token_ids), self.cfg.block_size, hold=True,
                       status=SequenceStatus.IDLE)
        self.seqs[seq.seq_id] = seq
        return seq.seq_id

    def _idle(self, seq_id: int) -> Sequence:
        seq = self.seqs.get(seq_id)
        if seq is None:
            raise EngineError(f"unknown sequence {seq_id}")
        if seq.status is not SequenceStatus.IDLE:
            raise EngineError(f"sequence {seq_id} is {seq.status.value}, not idle")
        return seq

    def _restart(self, seq: Sequence, mode: Mode, params: SamplingParams | None) -> None:
        self._check_length(len(seq))  # a session at the limit got one more token sampled; it cannot be computed
        if seq.num_pending == 0:
            seq.num_cached_tokens -= 1  # recompute the last token to get its logits
        seq.mode = mode
        seq.params = params or seq.params
        seq.num_prompt_tokens = len(seq)
        seq.finish_reason = None
        self.scheduler.add(seq)

    def extend(self, seq_id: int, token_ids: list[int]) -> None:
        """Appends tokens to an idle session (computed with its next request)."""
        seq = self._idle(seq_id)
        self._check_length(len(seq) + len(token_ids))
        self._check_ids(token_ids)
        seq.token_ids.extend(token_ids)

    def _check_ids(self, token_ids: list[int]) -> None:
        """Refuses ids outside the vocabulary before they reach a step: there they fail the whole batch (the
        embedding lookup), every later step with it, and on CUDA as a device-side assert."""
        vocab = self.runner.model_cfg.vocab_size
        bad = [t for t in token_ids if not isinstance(t, numbers.Integral) or isinstance(t, bool) or not 0 <= t < vocab]
        if bad:
            raise EngineError(f"token ids must be ints in [0, {vocab}) (the model's vocab_size); got {bad[:4]}")

    def _check_length(self, n: int) -> None:
        if n > self.max_model_len:
            raise EngineError(f"{n} tokens exceed the model's context of {self.max_model_len} (max_model_len)")

    def generate(self, seq_id: int, params: SamplingParams) -> None:
        """Starts a generation on an idle session; its tokens arrive as deltas."""
        self._restart(self._idle(seq_id), Mode.GENERATE, params)

    def score(self, seq_id: int) -> None:
        """Computes the next-token logits of an idle session into self.scores[seq_id]."""
        self._restart(self._idle(seq_id), Mode.SCORE, None)

    def abort(self, seq_id: int) -> list[TokenDelta]:
        seq = self.seqs.get(seq_id)
        if seq is None or seq.status in (SequenceStatus.IDLE, SequenceStatus.FINISHED):
            return []
        self.scheduler.finish(seq, "cancelled")
        if seq.status is SequenceStatus.FINISHED:
            del self.seqs[seq_id]
        return [TokenDelta(seq_id, None, True, "cancelled")]

    def release(self, seq_id: int) -> int:
        """Ends a sequence of any status and frees its blocks; returns the blocks that went back to the pool."""
        seq = self.seqs.pop(seq_id, None)
        if seq is None:
            raise EngineError(f"unknown sequence {seq_id}")
        self.scheduler.remove(seq)
        seq.status = SequenceStatus.FINISHED
        self.scores.pop(seq_id, None)
        return self.block_manager.free(seq)

    # ------------------------------------------------------------------ speculation

    def fork(self, seq_id: int) -> int:
        """A new idle sequence sharing seq_id's tokens and KV blocks (copy-on-write)."""
        parent = self._idle(seq_id)
        child = Sequence(next(self._ids), list(parent.token_ids), self.cfg.block_size, parent.params,
                         hold=True, status=SequenceStatus.IDLE, num_cached_tokens=parent.num_cached_tokens,
                         parent_id=seq_id)
        self.block_manager.fork(parent, child)
        self.seqs[child.seq_id] = child
        return child.seq_id

    def rollback(self, fork_id: int) -> int:
        """Drops a fork (cancelling its generation); returns the blocks freed."""
        if self.seqs.get(fork_id) is None or self.seqs[fork_id].parent_id is None:
            raise EngineError(f"{fork_id} is not a fork")
        return self.release(fork_id)

    def commit(self, fork_id: int) -> int:
        """The fork becomes its parent: the parent's id now holds the fork's tokens and blocks. Returns that id."""
        fork = self.seqs.get(fork_id)
        if fork is None or fork.parent_id is None:
            raise EngineError(f"{fork_id} is not a fork")
        parent = self._idle(fork.parent_id)
        if fork.status is not SequenceStatus.IDLE:
            self.abort(fork_id)
        self.block_manager.free(parent)
        parent.token_ids, parent.block_table = fork.token_ids, fork.block_table
        parent.num_cached_tokens, parent.num_prompt_tokens = fork.num_cached_tokens, fork.num_prompt_tokens
        fork.block_table = BlockTable()
        del self.seqs[fork_id]
        return parent.seq_id

    # ------------------------------------------------------------------ stepping

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    def step(self) -> list[TokenDelta]:
        batch = self.scheduler.schedule()
        if batch is None:
            return []
        step = build_step_input(batch, self.cfg.block_size)
        try:
            with self.runner.on_stream():  # the logits are read on the stream that made them
                return self._finish_step(batch, self._run(step))
        except Exception as exc:
            # Left scheduled, the batch would fail again at every later step: the engine would be wedged for
            # every session. End its sequences (held ones go idle, keeping what was cached before this step).
            for seq in batch.seqs:
                if seq.seq_id in self.seqs and seq.status is SequenceStatus.RUNNING:
                    self._end(seq, "error")
            raise StepError(exc, [seq.seq_id for seq in batch.seqs]) from exc

    def _finish_step(self, batch: ScheduledBatch, logits: torch.Tensor) -> list[TokenDelta]:
        # Map logits rows back to sequences: each completing sequence owns 1 row (or all its rows).
        sampled: dict[int, int] = {}
        gen_rows, gen_seqs, row = [], [], 0
        for i, seq in enumerate(batch.seqs):
            if not batch.completes(i):
                continue
            n = batch.num_tokens[i] if seq.all_logits else 1
            if seq.mode is Mode.SCORE:
                self.scores[seq.seq_id] = logits[row:row + n].float().cpu()
            else:
                gen_rows.append(row + n - 1)
                gen_seqs.append(seq)
            row += n
        if gen_seqs:
            toks = self.runner.sample(logits[gen_rows], [s.params for s in gen_seqs], [s.token_ids for s in gen_seqs])
            sampled = {s.seq_id: t for s, t in zip(gen_seqs, toks)}
        deltas: list[TokenDelta] = []
        for seq in self.scheduler.update(batch, sampled):
            if seq.mode is Mode.SCORE:
                self._end(seq, "scored")
                continue
            tok = seq.last_token
            reason = None
            if tok in seq.params.stop_token_ids or (not seq.params.ignore_eos and tok in self.eos):
                reason = "stop"
            elif seq.num_output_tokens >= seq.params.max_tokens or len(seq) >= self.max_model_len:
                reason = "length"
            if reason:
                self._end(seq, reason)
            deltas.append(TokenDelta(seq.seq_id, tok, reason is not None, reason))
        return deltas

    def _end(self, seq: Sequence, reason: str) -> None:
        self.scheduler.finish(seq, reason)
        if seq.status is SequenceStatus.FINISHED:
            del self.seqs[seq.seq_id]
