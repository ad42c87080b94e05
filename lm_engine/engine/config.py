"""Engine and sampling configs (frozen; derived values such as the KV block count live in runtime state)."""
from __future__ import annotations

from dataclasses import dataclass


class EngineConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    block_size: int = 16                 # tokens per KV block
    num_kv_blocks: int | None = None     # None: sized from kv_cache_memory_gib / free GPU memory
    kv_cache_memory_gib: float = 1.0     # CPU, or GPU when gpu_memory_utilization is None
    gpu_memory_utilization: float | None = 0.85
    max_num_seqs: int = 64               # sequences in one step
    max_num_batched_tokens: int = 4096   # tokens in one step (prefill chunks + decodes)
    max_model_len: int | None = None     # None: the model's max_seq_len
    enforce_eager: bool = False          # no CUDA graphs
    cuda_graph_max_batch: int = 64
    # CUDA: the engine's work goes to a stream of its own at this priority (lower is more urgent; kernels.streams,
    # never shared), so that two engines and the speech path on one GPU do not queue behind each other's kernels;
    # None: the default stream.
    stream_priority: int | None = 0
    tp_master_port: int = 29533          # only when the engine itself initialises torch.distributed
    # tp > 1: how long a step's collectives wait for the other ranks. Past it a rank counts as hung and the engine
    # refuses every later step (the ranks are out of step for good); gloo's own default is 30 min.
    tp_step_timeout_s: float = 60.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.block_size <= 0 or self.block_size & (self.block_size - 1):
            raise EngineConfigError(f"block_size must be a power of two, got {self.block_size}")
        if self.num_kv_blocks is not None and self.num_kv_blocks <= 0:
            raise EngineConfigError("num_kv_blocks must be > 0")
        if self.max_num_seqs <= 0 or self.max_num_batched_tokens <= 0:
            raise EngineConfigError("max_num_seqs and max_num_batched_tokens must be > 0")
        if not self.tp_step_timeout_s > 0:
            raise EngineConfigError(f"tp_step_timeout_s must be > 0, got {self.tp_step_timeout_s!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingParams:
    temperature: float = 1.0             # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0                       # 0 = off
    repetition_penalty: float = 1.0      # 1 = off (HF/CTRL rule over prompt + output)
    repetition_aware: bool = False       # Step-Audio TTS: ban the last token if it occurs > 1 time in the last 10
    max_tokens: int = 256
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        bad = [f"{name} must be {rule}, got {value!r}" for name, value, ok, rule in (
            ("temperature", self.temperature, self.temperature >= 0, ">= 0 (0: greedy)"),
            ("top_p", self.top_p, 0 < self.top_p <= 1, "in (0, 1]"),
            ("top_k", self.top_k, self.top_k >= 0, ">= 0 (0: off)"),
            ("repetition_penalty", self.repetition_penalty, self.repetition_penalty > 0, "> 0 (1: off)"),
            ("max_tokens", self.max_tokens, self.max_tokens >= 1, ">= 1"),
        ) if not ok]
        if bad:
            raise EngineConfigError("; ".join(bad))
