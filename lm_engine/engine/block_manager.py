"""Paged-KV block pool: refcounted blocks, copy-on-write sharing, chained-hash prefix cache. No torch.

Rules:
- A block's refcount is the number of block tables that hold it. Fork shares every block (refcount + 1).
- Before a step writes positions [num_cached, num_cached + n) of a sequence, every block in that range that is
  shared (refcount > 1) is replaced by a fresh copy (copy-on-write); the (src, dst) pairs go to the model runner,
  which copies the KV before the forward. Positions < num_cached are never written, so they stay shared.
- A full block whose KV has been computed is registered under hash(prefix hash, its tokens). A new sequence whose
  leading full blocks match reuses them (prefix cache). A freed block keeps its hash and content until the pool
  hands it out again (least recently freed first), so a later turn can still hit it.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from lm_engine.engine.sequence import BlockTable, Sequence


class OutOfBlocks(RuntimeError):
    pass


@dataclass(slots=True)
class Block:
    block_id: int
    ref_count: int = 0
    hash: int = -1
    token_ids: tuple[int, ...] = ()


def chain_hash(prefix: int, token_ids: list[int] | tuple[int, ...]) -> int:
    return hash((prefix, tuple(token_ids)))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.hash_to_block: dict[int, int] = {}
        self.free_ids: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_ids)

    # ------------------------------------------------------------------ allocation

    def _take(self, block_id: int | None = None) -> int:
        if block_id is None:
            if not self.free_ids:
                raise OutOfBlocks("no free KV blocks")
            block_id, _ = self.free_ids.popitem(last=False)
            block = self.blocks[block_id]
            if block.hash != -1 and self.hash_to_block.get(block.hash) == block_id:
                del self.hash_to_block[block.hash]  # its content is about to be overwritten
            block.hash, block.token_ids = -1, ()
        elif self.blocks[block_id].ref_count == 0:
            del self.free_ids[block_id]
        self.blocks[block_id].ref_count += 1
        return block_id

    def _release(self, block_id: int) -> bool:
        block = self.blocks[block_id]
        block.ref_count -= 1
        if block.ref_count == 0:
            self.free_ids[block_id] = None
            return True
        return False

    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        """Fresh blocks a step computing num_tokens more tokens of seq needs (new blocks + copy-on-write)."""
        missing = max(0, seq.num_blocks - len(seq.block_table))
        first = seq.num_cached_tokens // self.block_size
        last = min(len(seq.block_table), (seq.num_cached_tokens + num_tokens + self.block_size - 1)
                   // self.block_size)
        shared = sum(1 for i in range(first, last) if self.blocks[seq.block_table[i]].ref_count > 1)
        return missing + shared

    def allocate(self, seq: Sequence) -> None:
        """Gives a sequence without blocks its block table, reusing cached prefix blocks.

        Sets num_cached_tokens to the tokens found in the cache, leaving at least one token to compute.
        """
        if seq.block_table:
            raise ValueError(f"sequence {seq.seq_id} already has blocks")
        if self.num_free_blocks < seq.num_blocks:
            raise OutOfBlocks(f"need {seq.num_blocks} blocks, {self.num_free_blocks} free")
        prefix, cached, hitting = -1, 0, not seq.all_logits  # all-position logits need every row computed
        for i in range(seq.num_blocks):
            tokens = seq.block_tokens(i)
            block_id = None
            if hitting and len(tokens) == self.block_size:
                prefix = chain_hash(prefix, tokens)
                cand = self.hash_to_block.get(prefix)
                if cand is not None and self.blocks[cand].token_ids == tuple(tokens):
                    block_id = cand
            hitting = block_id is not None
            seq.block_table.append(self._take(block_id))
            if hitting:
                cached += self.block_size
        seq.num_cached_tokens = min(cached, len(seq) - 1)

    def extend(self, seq: Sequence) -> None:
        """Appends fresh blocks until the block table covers every token of seq."""
        while len(seq.block_table) < seq.num_blocks:
            seq.block_table.append(self._take())

    def prepare_write(self, seq: Sequence, num_tokens: int) -> list[tuple[int, int]]:
        """Copy-on-write for the blocks the next num_tokens of seq land in; returns (src, dst) KV copies."""
        self.extend(seq)
        copies: list[tuple[int, int]] = []
        first = seq.num_cached_tokens // self.block_size
        last = (seq.num_cached_tokens + num_tokens + self.block_size - 1) // self.block_size
        for i in range(first, last):
            src = seq.block_table[i]
            if self.blocks[src].ref_count > 1:
                dst = self._take()
                self._release(src)
                seq.block_table[i] = dst
                copies.append((src, dst))
        return copies

    def mark_computed(self, seq: Sequence, from_token: int = 0) -> None:
        """Registers in the prefix cache the full blocks that tokens [from_token, num_cached_tokens) completed.

        A step passes where it started writing, so that long contexts are not rewalked every step (at batch 32 x
        16k tokens that walk was 32k block visits per decode step)."""
        first = from_token // self.block_size
        while first > 0 and self.blocks[seq.block_table[first - 1]].hash == -1:
            first -= 1  # chain from the last registered block
        prefix = self.blocks[seq.block_table[first - 1]].hash if first else -1
        for i in range(first, seq.num_cached_tokens // self.block_size):
            block = self.blocks[seq.block_table[i]]
            if block.hash == -1:
                tokens = seq.block_tokens(i)
                block.hash, block.token_ids = chain_hash(prefix, tokens), tuple(tokens)
                self.hash_to_block.setdefault(block.hash, block.block_id)
            prefix = block.hash

    # ------------------------------------------------------------------ sharing

    def fork(self, parent: Sequence, child: Sequence) -> None:
        child.block_table = parent.block_table.copy()
        for block_id in child.block_table:
            self.blocks[block_id].ref_count += 1

    def free(self, seq: Sequence) -> int:
        """Drops seq's references; returns how many blocks went back to the pool."""
        freed = sum(self._release(b) for b in reversed(seq.block_table))
        seq.block_table = BlockTable()
        return freed
