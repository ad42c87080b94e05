"""One request or session: its tokens, how many of them are in the KV cache, and its block table. No torch.

Invariant: tokens [0, num_cached_tokens) have their K/V in the blocks of block_table. Blocks for pending tokens
are added (BlockManager.prepare_write) just before a step writes them.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from lm_engine.engine.config import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"    # needs blocks (admission)
    RUNNING = "running"    # scheduled every step until it finishes
    IDLE = "idle"          # a held session: blocks kept, not scheduled
    FINISHED = "finished"  # blocks freed


class Mode(enum.Enum):
    GENERATE = "generate"  # sample a token after the last prompt token, then keep decoding
    SCORE = "score"        # compute logits for the pending tokens, then go IDLE (no sampling)


@dataclass(slots=True, eq=False)  # an entity: `in` and remove() compare identity, not every field
class Sequence:
    seq_id: int
    token_ids: list[int]
    block_size: int
    params: SamplingParams = field(default_factory=SamplingParams)
    mode: Mode = Mode.GENERATE
    hold: bool = False                # keep the blocks when generation ends (sessions, forks)
    all_logits: bool = False          # return logits for every computed position (Engine.logits)
    status: SequenceStatus = SequenceStatus.WAITING
    num_cached_tokens: int = 0
    num_prompt_tokens: int = 0        # length when the current generation started
    block_table: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    parent_id: int | None = None      # set on forks

    def __post_init__(self) -> None:
        self.num_prompt_tokens = len(self.token_ids)

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_blocks(self) -> int:
        return (len(self.token_ids) + self.block_size - 1) // self.block_size

    @property
    def num_pending(self) -> int:
        return len(self.token_ids) - self.num_cached_tokens

    @property
    def last_token(self) -> int:
        return self.token_ids[-1]

    def block_tokens(self, i: int) -> list[int]:
        return self.token_ids[i * self.block_size:(i + 1) * self.block_size]

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)
