"""The public engine API: load a checkpoint, score token ids, generate (blocking or as an async stream), and
fork / commit / rollback sessions.

Threading: one lock guards the LLMEngine, held by each step for its whole length (a long prefill: many ms). Blocking
calls (meant for worker threads) step the engine themselves, taking the lock step by step, until their result is
ready. Async streams register a listener and a dedicated stepping thread runs the engine; a stream takes the lock
only on a worker thread (to start and to abort) and its tokens reach the event loop through
loop.call_soon_threadsafe, so the loop never waits for the engine.
"""
from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from lm_engine.engine.config import EngineConfig, SamplingParams
from lm_engine.engine.llm_engine import EngineDown, EngineError, LLMEngine, StepError, TokenDelta
from lm_engine.engine.model_runner import ModelRunner
from lm_engine.engine.sequence import Mode
from lm_engine.models import build_model
from lm_engine.models.config import ModelConfig
from lm_engine.tokenizer import Step1Tokenizer
from lm_engine.utils.loader import iter_safetensors, load_weights


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _check_model_path(path: Path) -> None:
    """A path that holds no model, named with what it holds instead: a missing folder, or the folder above one
    (a Step-Audio model folder holds Step-Audio-TTS-3B/ and Step-Audio-Chat/, each a model)."""
    if (path.suffix == ".gguf" and path.is_file()) or (path / "config.json").is_file():
        return
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model folder or .gguf file")
    inner = sorted(p.parent.name for p in path.glob("*/config.json")) if path.is_dir() else []
    hint = f"; the model folders in it: {', '.join(inner)}" if inner else ""
    raise FileNotFoundError(f"{path}: not a model folder (it has no config.json){hint}")


class Engine:
    def __init__(self, llm: LLMEngine, model_cfg: ModelConfig, tokenizer: Step1Tokenizer | None,
                 shutdown: Callable[[], None] | None = None) -> None:
        self.llm = llm
        self.model_config = model_cfg
        self.tokenizer = tokenizer
        self._shutdown = shutdown
        self._cv = threading.Condition(threading.RLock())
        self._listeners: dict[int, Callable[[TokenDelta], object]] = {}
        self._thread: threading.Thread | None = None
        self._closed = False
        self._holds = 0  # hold() calls under way: streams take no new step meanwhile
        self._errors: dict[int, StepError] = {}  # seq_id -> the failed step that ended it, until its owner reads it
        self._down: str | None = None  # why no step can run any more

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, tp: int = 1, config: EngineConfig | None = None,
                        progress: bool = True) -> Engine:
        """Loads a Step-1 / Qwen2 HF checkpoint folder or a Qwen2 .gguf file.

        With tp > 1 the process must run under `torchrun --nproc-per-node tp`; ranks > 0 serve rank 0's steps
        inside this call and exit the process (SystemExit(0)) when rank 0 closes its engine.
        """
        from lm_engine.engine import tp_worker

        cfg = config or EngineConfig()
        dev = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        dt = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
        if isinstance(dt, str):
            dt = getattr(torch, dt.removeprefix("torch."), dt)
        if not isinstance(dt, torch.dtype) or not dt.is_floating_point:
            raise EngineError(f"dtype must be a floating torch.dtype (torch.bfloat16, torch.float16, torch.float32), "
                              f"got {dtype!r}")
        if not isinstance(tp, int) or tp < 1:
            raise EngineError(f"tp (the tensor-parallel size) must be an int >= 1, got {tp!r}")
        path = Path(path)
        _check_model_path(path)
        if path.suffix == ".gguf":
            from lm_engine.utils.gguf_loader import iter_gguf, read_gguf
            model_cfg, reader = read_gguf(path)
        else:
            model_cfg = ModelConfig.from_dir(path)
        model_cfg.check_tp(tp)  # before the ranks meet: a size that cannot split the model fails on each alike
        rank = tp_worker.init_distributed(tp, dev, cfg.tp_master_port) if tp > 1 else 0
        if path.suffix == ".gguf":
            tensors = iter_gguf(reader, progress and rank == 0)
            tokenizer = None
        else:
            tensors = iter_safetensors(path, progress and rank == 0)
            tokenizer = Step1Tokenizer.from_dir(path) if (path / "tokenizer.model").exists() else None
        return cls.from_tensors(model_cfg, tensors, dev, dt, cfg, tokenizer, rank=rank, tp=tp)

    @classmethod
    def from_tensors(cls, model_cfg: ModelConfig, tensors: Iterable[tuple[str, torch.Tensor]],
                     device: torch.device, dtype: torch.dtype, config: EngineConfig | None = None,
                     tokenizer: Step1Tokenizer | None = None, *, rank: int = 0, tp: int = 1) -> Engine:
        """Builds the engine from (HF name, tensor) pairs, e.g. weights already in memory."""
        from lm_engine.engine import tp_worker

        cfg = config or EngineConfig()
        with torch.device(device), _default_dtype(dtype):
            model = build_model(model_cfg)
        load_weights(model, tensors)
        model.to(device).eval()
        runner = ModelRunner(model, model_cfg, cfg, device, dtype)
        if rank > 0:
            tp_worker.follow(runner, cfg.tp_step_timeout_s)
            raise SystemExit(0)
        driver = tp_worker.TPDriver(runner, cfg.tp_step_timeout_s) if tp > 1 else None
        llm = LLMEngine(runner, cfg, model_cfg.eos_token_ids, run=driver.run if driver else None)
        engine = cls(llm, model_cfg, tokenizer, driver.shutdown if driver else None)
        if driver is not None:  # a script may end without close(), as it can at tp=1: the followers still must
            atexit.register(engine.close)  # hear EXIT, else they die on a closed socket and torchrun fails the run
        return engine

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join()
        shutdown, self._shutdown = self._shutdown, None  # once, even if it fails (the followers gone already):
        if shutdown is not None:  # the atexit close() then has nothing left to do
            shutdown()

    # ------------------------------------------------------------------ stepping

    def _step_locked(self) -> None:
        try:
            deltas = self.llm.step()
        except StepError as exc:
            if isinstance(exc.__cause__, EngineDown):
                self._down = str(exc.__cause__)
            # Whichever thread ran the step, each failed sequence's owner (a stream, generate(), a scoring call)
            # finds its error under its id; the listeners are told now.
            for sid in exc.seq_ids:
                self._errors[sid] = exc
                listener = self._listeners.pop(sid, None)
                if listener is not None:
                    listener(TokenDelta(sid, None, True, "error"))
            raise
        for delta in deltas:
            listener = self._listeners.get(delta.seq_id)
            if listener is not None:
                listener(delta)
                if delta.finished:
                    del self._listeners[delta.seq_id]

    def _drive(self, seq_id: int, done: Callable[[], bool]) -> None:
        """Steps until done(), the lock taken step by step: streams and other callers step in between. A failed step
        raises here if it failed seq_id, whichever thread ran it, and not if it failed only other sequences."""
        while True:
            with self._cv:
                if done():
                    return
                if (error := self._errors.pop(seq_id, None)) is not None:
                    raise EngineError(str(error)) from error
                if not self.llm.has_unfinished():
                    raise EngineError("engine is idle but the request has not completed")
                try:
                    self._step_locked()
                except StepError:
                    continue  # its sequences' owners were told; ours, if among them, is raised above

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not (self._listeners and self.llm.has_unfinished() and not self._holds):
                    self._cv.wait()
                if self._closed:
                    return
                try:
                    self._step_locked()
                except StepError:
                    continue  # its streams were told; the others go on

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Streams take no new step while this is held (a step under way finishes first), so that the caller has
        the device to itself for a moment: the speech path's first window of an utterance, say. Synchronous calls
        (generate, logits, ...) still step."""
        with self._cv:
            self._holds += 1
        try:
            yield
        finally:
            with self._cv:
                self._holds -= 1
                self._cv.notify_all()

    @property
    def problem(self) -> str | None:
        """Why the engine cannot generate any more (a tensor-parallel rank hung or exited), or None."""
        return self._down

    @property
    def active_streams(self) -> int:
        """Streams (stream()) generating now. Read without the lock, which a step holds for its whole length: the
        event loop asks (a dict's length is one atomic read)."""
        return len(self._listeners)

    # ------------------------------------------------------------------ scoring

    def logits(self, token_ids: list[int]) -> torch.Tensor:
        """Logits at every position, [len(token_ids), vocab] float32 (CPU), through the paged-cache path."""
        with self._cv:
            sid = self.llm.add_request(token_ids, mode=Mode.SCORE, all_logits=True)
        self._drive(sid, lambda: sid in self.llm.scores)
        with self._cv:
            return self.llm.scores.pop(sid)

    def open(self, token_ids: list[int]) -> int:
        """A held session over token_ids (computed lazily, reusing cached prefix blocks)."""
        with self._cv:
            return self.llm.open(token_ids)

    def next_logits(self, seq_id: int) -> torch.Tensor:
        """Logits for the token after the session's last one, [vocab] float32."""
        with self._cv:
            self.llm.score(seq_id)
            self._errors.pop(seq_id, None)  # an earlier request's failure that nobody read is not this one's
        self._drive(seq_id, lambda: seq_id in self.llm.scores)
        with self._cv:
            return self.llm.scores.pop(seq_id)[-1]

    def extend(self, seq_id: int, token_ids: list[int]) -> None:
        """Appends tokens to an idle session (open, or done generating); they are computed with its next step."""
        with self._cv:
            self.llm.extend(seq_id, token_ids)

    def tokens(self, seq_id: int) -> list[int]:
        """A session's tokens: its prompt, what it generated and what was appended."""
        with self._cv:
            return list(self.llm.seqs[seq_id].token_ids)

    # ------------------------------------------------------------------ speculation

    def fork(self, seq_id: int) -> int:
        """A new session that shares the idle session's cached blocks copy-on-write (a speculative reply starts
        here); returns its id. The parent stays usable."""
        with self._cv:
            return self.llm.fork(seq_id)

    def commit(self, fork_id: int) -> int:
        """The fork becomes its parent: the parent's id now names the fork's state and the fork's id is gone.
        Returns the parent's id."""
        with self._cv:
            return self.llm.commit(fork_id)

    def rollback(self, fork_id: int) -> int:
        """Drops the fork (a stream on it ends); the parent is exactly as before the fork. Returns the number of
        blocks freed."""
        with self._cv:
            self._listeners.pop(fork_id, None)
            return self.llm.rollback(fork_id)

    def release(self, seq_id: int) -> int:
        """Ends a session and frees the blocks only it held; returns how many."""
        with self._cv:
            self._listeners.pop(seq_id, None)
            return self.llm.release(seq_id)

    @property
    def num_free_blocks(self) -> int:
        """Free KV-cache blocks (read without the lock: a gauge, not a reservation)."""
        return self.llm.block_manager.num_free_blocks

    @property
    def num_sequences(self) -> int:
        """Sequences the engine holds: open sessions, their forks, requests under way (read without the lock)."""
        return len(self.llm.seqs)

    # ------------------------------------------------------------------ generation

    def _start(self, prompt: list[int] | None, seq_id: int | None, params: SamplingParams) -> int:
        if (prompt is None) == (seq_id is None):
            raise EngineError("give exactly one of a prompt or a session id")
        if seq_id is None:
            assert prompt is not None
            return self.llm.add_request(prompt, params)
        self.llm.generate(seq_id, params)
        return seq_id

    def generate(self, prompt: list[int] | None = None, params: SamplingParams | None = None, *,
                 seq_id: int | None = None) -> list[int]:
        """Blocking generation (worker threads only); returns the new tokens."""
        out: list[int] = []
        finished = threading.Event()

        def on_delta(d: TokenDelta) -> None:
            if d.token_id is not None:
                out.append(d.token_id)
            if d.finished:
                finished.set()

        with self._cv:
            sid = self._start(prompt, seq_id, params or SamplingParams())
            self._listeners[sid] = on_delta
        try:
            self._drive(sid, finished.is_set)
        finally:
            error = self._errors.pop(sid, None)  # a step that another thread ran failed this request
        if error is not None:
            raise EngineError(str(error)) from error
        return out

    async def stream(self, prompt: list[int] | None = None, params: SamplingParams | None = None, *,
                     seq_id: int | None = None, stop: tuple[str, ...] = ()) -> AsyncGenerator[int, None]:
        """Async token stream. Closing it early (`async with contextlib.aclosing(engine.stream(...))` around a loop
        that breaks, or cancelling the task) aborts the generation and frees its blocks.

        stop: strings that end the stream once the decoded output contains one (needs a tokenizer).
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[TokenDelta] = asyncio.Queue()
        started = loop.run_in_executor(None, self._start_stream, prompt, seq_id, params or SamplingParams(),
                                       lambda d: loop.call_soon_threadsafe(queue.put_nowait, d))
        try:
            sid = await asyncio.shield(started)
        except asyncio.CancelledError:  # the start goes on in its thread: abort what it starts
            started.add_done_callback(
                lambda f: f.cancelled() or f.exception() or loop.run_in_executor(None, self._abort_stream, f.result()))
            raise
        out: list[int] = []
        finished = False
        try:
            while True:
                d = await queue.get()
                if d.token_id is not None:
                    out.append(d.token_id)
                    yield d.token_id
                if d.finished:
                    finished = True
                    if d.finish_reason == "error":  # the stepping thread stored why before it told us
                        error = self._errors.pop(sid, None)
                        raise EngineError(str(error) if error else "engine step failed") from error
                    return
                if stop and self.tokenizer is not None:
                    text = self.tokenizer.decode(out)
                    if any(s in text for s in stop):
                        return
        finally:
            if not finished:
                await loop.run_in_executor(None, self._abort_stream, sid)

    def _start_stream(self, prompt: list[int] | None, seq_id: int | None, params: SamplingParams,
                      listener: Callable[[TokenDelta], object]) -> int:
        with self._cv:
            sid = self._start(prompt, seq_id, params)
            self._listeners[sid] = listener
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="lm-engine-steps", daemon=True)
                self._thread.start()
            self._cv.notify_all()
            return sid

    def _abort_stream(self, sid: int) -> None:
        with self._cv:
            self._listeners.pop(sid, None)
            # A stream closed before it read its error delta never pops the failure, whose traceback holds the step.
            self._errors.pop(sid, None)
            self.llm.abort(sid)

