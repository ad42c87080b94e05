"""The only owner of device tensors: the model, the paged KV cache, input tensors, CUDA graphs and sampling.

One runner per tensor-parallel rank; every rank runs the same StepInput (rank 0 sends it, tp_worker.py).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
import torch.distributed as dist

from kernels import gemv
from kernels.attention import PREFILL_Q_CLASSES
from kernels.launch import fastest, graph_replay_ms, keep_until_exit, pdl_off_after_failed_capture
from kernels.streams import own_stream
from lm_engine.engine import sampling
from lm_engine.engine.config import EngineConfig, SamplingParams
from lm_engine.engine.forward_context import ForwardContext, forward_context
from lm_engine.engine.scheduler import StepInput
from lm_engine.layers.attention import PagedAttention
from lm_engine.layers.tp import tp_size
from lm_engine.models.config import ModelConfig

if TYPE_CHECKING:
    # CUDAGraph.pool()'s type, the handle torch.cuda.graph takes to share a pool: torch names it only privately.
    from torch.cuda import _POOL_HANDLE as GraphPool

logger = logging.getLogger(__name__)


class CausalLM(Protocol):
    """The model a runner steps (models.decoder.DecoderForCausalLM)."""

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor: ...  # [T] -> [T, hidden]
    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor: ...  # [n, hidden] -> [n, vocab] fp32
    def attention_layers(self) -> list[PagedAttention]: ...


class ModelRunner:
    def __init__(self, model: CausalLM, model_cfg: ModelConfig, cfg: EngineConfig,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.model = model
        self.model_cfg = model_cfg
        self.cfg = cfg
        self.device = device
        self.dtype = dtype
        self.block_size = cfg.block_size
        cuda = device.type == "cuda"
        # Streams of the runner's own (kernels.streams: never one of torch's pooled streams, which another engine,
        # the speech path or torch.cuda.graph's default capture stream may hold too). The decode graphs are captured
        # on the runner's stream, or on one made for them when the steps run on the default stream.
        self.stream = own_stream(device, cfg.stream_priority) if cuda and cfg.stream_priority is not None else None
        self.capture_stream = (self.stream if self.stream is not None else own_stream(device)) if cuda else None
        if cuda:
            torch.cuda.synchronize(device)  # the weights, copied on the default stream
        self.num_blocks = self._count_blocks()
        with self.on_stream():
            self._allocate_kv_cache()
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, dict[str, torch.Tensor]]] = {}
        # batch size -> (the GEMV side its graph was captured with, ms a replay of each side's graph): see
        # _capture_fastest_step; benchmarks report it
        self.graph_sides: dict[int, tuple[str | None, dict[str | None, float]]] = {}
        self._graph_max_blocks = 0  # block-table width the graphs were captured for
        if cuda:
            self.warm_up_prefill()
            if not cfg.enforce_eager:
                self.capture_cuda_graphs()

    def on_stream(self) -> torch.cuda.StreamContext:
        """`with runner.on_stream():` around the engine's device work (EngineConfig.stream_priority): the runner
        enters it to load, warm up and capture; its callers enter it once a step (LLMEngine.step around the
        forward, sampling and the logits' copies to the host; the tensor-parallel followers around the forward).
        Everything the engine hands out (tokens, scores) reaches the host inside it, so no other stream ever reads
        its tensors."""
        return torch.cuda.stream(self.stream)

    # ------------------------------------------------------------------ KV cache

    def _kv_bytes_per_block(self) -> int:
        m = self.model_cfg
        kv_local = m.num_kv_heads // tp_size()
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return 2 * m.num_layers * self.block_size * kv_local * m.head_dim * itemsize

    def _count_blocks(self) -> int:
        if self.cfg.num_kv_blocks is not None:
            n = self.cfg.num_kv_blocks
        elif self.device.type == "cuda" and self.cfg.gpu_memory_utilization is not None:
            free, total = torch.cuda.mem_get_info(self.device)
            used = total - free
            budget = total * self.cfg.gpu_memory_utilization - used
            n = int(budget // self._kv_bytes_per_block())
        else:
            n = int(self.cfg.kv_cache_memory_gib * (1 << 30) // self._kv_bytes_per_block())
        if tp_size() > 1:  # every rank must hold the same pool
            t = torch.tensor([n], dtype=torch.int64, device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
            n = int(t.item())
        if n <= 0:
            raise RuntimeError("no memory left for the KV cache")
        return n

    def _allocate_kv_cache(self) -> None:
        m = self.model_cfg
        layers = self.model.attention_layers()
        kv_local = m.num_kv_heads // tp_size()
        # [2, layers, num_blocks, block_size, kv_heads_local, head_dim]; zeros so padded graph rows stay finite.
        self.kv_cache = torch.zeros(2, len(layers), self.num_blocks, self.block_size, kv_local, m.head_dim,
                                    dtype=self.dtype, device=self.device)
        for i, layer in enumerate(layers):
            layer.k_cache = self.kv_cache[0, i]
            layer.v_cache = self.kv_cache[1, i]

    def copy_blocks(self, copies: Seq[tuple[int, int]]) -> None:
        if not copies:
            return
        src = torch.tensor([c[0] for c in copies], device=self.device)
        dst = torch.tensor([c[1] for c in copies], device=self.device)
        self.kv_cache[:, :, dst] = self.kv_cache[:, :, src]

    # ------------------------------------------------------------------ forward

    def _tensor(self, values: list[int], dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=self.device)

    @torch.inference_mode()
    def run(self, step: StepInput) -> torch.Tensor:
        """Runs one packed forward; returns logits [len(step.logits_rows), vocab] float32. Call it inside
        on_stream()."""
        self.copy_blocks(step.copies)
        n_seqs = len(step.context_lens)
        if (step.is_decode and self.graphs and n_seqs <= max(self.graphs)
                and step.block_tables.shape[1] <= self._graph_max_blocks):  # longer than max_model_len: eager
            logits = self._replay(step)  # every row's logits, computed inside the graph
            if step.logits_rows == list(range(n_seqs)):
                return logits
            return logits[self._tensor(step.logits_rows, torch.int64)]
        ctx = ForwardContext(
            slot_mapping=self._tensor(step.slot_mapping, torch.int64),
            block_tables=torch.from_numpy(step.block_tables).to(self.device),
            cu_seqlens_q=self._tensor(step.cu_seqlens_q, torch.int32),
            context_lens=self._tensor(step.context_lens, torch.int32),
            max_seqlen_q=step.max_seqlen_q,
        )
        with forward_context(ctx):
            hidden = self.model(self._tensor(step.input_ids, torch.int64), self._tensor(step.positions, torch.int64))
        if not step.logits_rows:
            return torch.empty(0, self.model_cfg.vocab_size, device=self.device)
        rows = self._tensor(step.logits_rows, torch.int64)
        return self.model.compute_logits(hidden[rows])

    @torch.inference_mode()
    def warm_up_prefill(self) -> None:
        """Runs one prefill per query-length class the scheduler can produce (kernels.attention.PREFILL_Q_CLASSES),
        at a multiple of 16 and at one less (Triton specialises integer arguments on divisibility by 16), so the
        kernels compile and the prefill kernel's autotuning runs now rather than inside the first reply whose prompt
        falls in a new class (a 24.6 s stall measured on an H100). Writes no KV (slot -1) and reads block 0 only."""
        t0 = time.perf_counter()
        limit = min(self.cfg.max_num_batched_tokens, self.cfg.max_model_len or self.model_cfg.max_seq_len)
        lower = 1  # a single query token is decode, another kernel (warmed by the graph capture or the first step)
        lengths = []
        for cls in PREFILL_Q_CLASSES:
            lengths += [n for n in sorted({min(cls, limit) - 1, min(cls, limit)}) if n > lower]
            lower = min(cls, limit)
        with self.on_stream():
            for n in lengths:
                ctx = ForwardContext(
                    slot_mapping=torch.full((n,), -1, dtype=torch.int64, device=self.device),
                    block_tables=torch.zeros(1, -(-n // self.block_size), dtype=torch.int32, device=self.device),
                    cu_seqlens_q=self._tensor([0, n], torch.int32), context_lens=self._tensor([n], torch.int32),
                    max_seqlen_q=n)
                with forward_context(ctx):
                    ids = torch.zeros(n, dtype=torch.int64, device=self.device)
                    self.model(ids, torch.arange(n, device=self.device))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        logger.info("prefill kernels compiled and tuned in %.1f s", time.perf_counter() - t0)

    def sample(self, logits: torch.Tensor, params: Seq[SamplingParams], histories: Seq[Seq[int]]) -> list[int]:
        return sampling.sample(logits, params, histories, self.generator)

    # ------------------------------------------------------------------ CUDA graphs (decode only)

    def _graph_batch_sizes(self) -> list[int]:
        top = min(self.cfg.max_num_seqs, self.cfg.cuda_graph_max_batch)
        sizes = [b for b in (1, 2, 4, 8) if b <= top] + list(range(16, top + 1, 16))
        return sizes

    def _graph_inputs(self, bs: int, max_blocks: int) -> dict[str, torch.Tensor]:
        """A graph's inputs as views of one int64 and one int32 device buffer, each with a pinned host twin: a
        decode step then refills them all with two asynchronous copies (host-side numpy writes, no kernels),
        instead of a synchronous copy per input plus the fills (~15 launches of host time per step)."""
        buf = {"dev64": torch.zeros(3 * bs, dtype=torch.int64, device=self.device),
               "dev32": torch.zeros(bs + bs * max_blocks, dtype=torch.int32, device=self.device)}
        buf["host64"] = torch.zeros(3 * bs, dtype=torch.int64).pin_memory()
        buf["host32"] = torch.zeros(bs + bs * max_blocks, dtype=torch.int32).pin_memory()
        dev64, dev32 = buf["dev64"], buf["dev32"]
        buf.update(input_ids=dev64[:bs], positions=dev64[bs:2 * bs], slot_mapping=dev64[2 * bs:],
                   context_lens=dev32[:bs], block_tables=dev32[bs:].view(bs, max_blocks),
                   cu_seqlens_q=torch.arange(bs + 1, dtype=torch.int32, device=self.device))
        buf["slot_mapping"].fill_(-1)  # padded rows write no KV and attend to one (zero) cached key
        buf["context_lens"].fill_(1)
        return buf

    @torch.inference_mode()
    def capture_cuda_graphs(self) -> None:
        """(Re)captures the decode graphs, one per batch size; kernels' launch settings (kernels.launch) are fixed
        at capture."""
        with self.on_stream():
            self._capture_cuda_graphs()

    def _capture_cuda_graphs(self) -> None:
        self.graphs.clear()
        self.graph_sides.clear()
        max_blocks = -(-(self.cfg.max_model_len or self.model_cfg.max_seq_len) // self.block_size)
        self._graph_max_blocks = max_blocks
        pool = None
        self._inputs_staged = torch.cuda.Event()
        try:
            for bs in reversed(self._graph_batch_sizes()):
                buf = self._graph_inputs(bs, max_blocks)
                ctx = ForwardContext(buf["slot_mapping"], buf["block_tables"], buf["cu_seqlens_q"],
                                     buf["context_lens"], 1)
                with forward_context(ctx):
                    graph, buf["logits"], pool = self._capture_fastest_step(bs, buf, pool)
                self.graphs[bs] = (graph, buf)
            torch.cuda.synchronize()
        except Exception as exc:  # e.g. the torch reference attention (host syncs) cannot be captured
            self.graphs.clear()
            if pdl_off_after_failed_capture(self.device):
                logger.warning("CUDA graph capture failed with programmatic dependent launch (%s); capturing "
                               "again without it", exc)
                self.capture_cuda_graphs()
                return
            logger.warning("CUDA graph capture failed (%s); decoding eagerly", exc)

    def _capture_step(self, buf: dict[str, torch.Tensor], pool: GraphPool | None
                      ) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        """One decode step captured on buf's inputs: (the graph, its logits). The LM head runs inside the graph too:
        a step's logits need no launch of their own."""
        # Warm-up, run with the kernels the capture will launch (each GEMV side its own mix): compiles and tunes
        # them, and the first one times this batch size's GEMV shapes (kernels.gemv). A kernel first met inside
        # the capture would compile and load its module there (a Triton kernel launched with PDL off is another
        # compile of it: after set_pdl(False) the sides' kernels that the timed mix does not use were all new).
        self.model.compute_logits(self.model(buf["input_ids"], buf["positions"]))
        graph = torch.cuda.CUDAGraph()
        keep_until_exit(graph)  # never destroyed: other graphs share its capture stream
        # thread_local: another engine or the flow may be launching on other threads meanwhile.
        with torch.cuda.graph(graph, pool, stream=self.capture_stream, capture_error_mode="thread_local"):
            logits = self.model.compute_logits(self.model(buf["input_ids"], buf["positions"]))
        return graph, logits

    def _capture_fastest_step(self, bs: int, buf: dict[str, torch.Tensor], pool: GraphPool | None
                              ) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, GraphPool]:
        """The step captured with each GEMV side (kernels.gemv.serve_all_by: each shape by its timing, all on our
        kernel, all on cuBLAS) where the batch is GEMV-sized, and the one that replays fastest kept: (its graph,
        its logits, the memory pool all share). The per-shape timings see one kernel after a norm; a step's
        kernels overlap and prefetch across each other, so the mix they pick need not be the fastest step. With
        tensor parallelism every rank must launch the same collectives: one capture, the timed mix."""
        sides: tuple[str | None, ...] = (None,)
        if bs <= gemv.MAX_ROWS and tp_size() == 1:
            sides += gemv.SIDES
        captured = {}
        for side in sides:
            with gemv.serve_all_by(side):
                captured[side] = self._capture_step(buf, pool)
            pool = pool or captured[side][0].pool()
        side, ms = (None, {}) if len(sides) == 1 else \
            fastest(sides, lambda s: graph_replay_ms(captured[s][0]))
        self.graph_sides[bs] = (side, ms)
        if ms:
            logger.info("decode graph, batch %d: %s -> GEMVs %s", bs,
                        ", ".join(f"{s or 'as timed'} {t:.3f} ms" for s, t in ms.items()), side or "as timed")
        assert pool is not None  # for mypy: sides is never empty, and the first capture made the pool
        return (*captured[side], pool)

    def _replay(self, step: StepInput) -> torch.Tensor:
        """One decode step through the smallest graph that fits: logits [n, vocab] float32, valid until the next."""
        n = len(step.context_lens)
        bs = min(b for b in self.graphs if b >= n)
        graph, buf = self.graphs[bs]
        self._inputs_staged.synchronize()  # the previous step's copies have left the pinned buffers
        h64, h32 = buf["host64"].numpy(), buf["host32"].numpy()
        h64[:n] = step.input_ids
        h64[bs:bs + n] = step.positions
        h64[2 * bs:2 * bs + n] = step.slot_mapping
        h64[2 * bs + n:] = -1
        h32[:n] = step.context_lens
        h32[n:bs] = 1
        tables = h32[bs:].reshape(bs, -1)
        tables.fill(0)
        np.maximum(step.block_tables, 0, out=tables[:n, :step.block_tables.shape[1]])
        buf["dev64"].copy_(buf["host64"], non_blocking=True)
        buf["dev32"].copy_(buf["host32"], non_blocking=True)
        self._inputs_staged.record()
        graph.replay()
        return buf["logits"][:n]
