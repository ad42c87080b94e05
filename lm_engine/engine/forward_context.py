"""Per-step attention metadata, visible to the attention layers while one forward runs.

Set and reset only through `forward_context(...)`; outside a forward there is no context and asking for one raises.
The stack is per thread: two engines in one process (the Chat LM and the TTS LM of the Step-Audio profile)
step on their own threads at the same time, and each must see its own metadata.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class ForwardContext:
    slot_mapping: torch.Tensor   # [num_tokens] int64, block * block_size + offset, -1 = skip
    block_tables: torch.Tensor   # [num_seqs, max_blocks] int32, -1 padding
    cu_seqlens_q: torch.Tensor   # [num_seqs + 1] int32
    context_lens: torch.Tensor   # [num_seqs] int32, KV length incl. this step's tokens
    max_seqlen_q: int


class _Stack(threading.local):
    def __init__(self) -> None:
        self.contexts: list[ForwardContext] = []


_CURRENT = _Stack()


@contextmanager
def forward_context(ctx: ForwardContext) -> Iterator[ForwardContext]:
    _CURRENT.contexts.append(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.contexts.pop()


def get_forward_context() -> ForwardContext:
    if not _CURRENT.contexts:
        raise RuntimeError("attention called outside engine.forward_context.forward_context(...)")
    return _CURRENT.contexts[-1]
