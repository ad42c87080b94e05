"""The embedded profile's chat LM: llama.cpp in-process through `xllamacpp.Server`.

One `xllamacpp.Server` (one model, one llama.cpp task queue) is shared by every session. Concurrent `stream()`
calls are safe: llama.cpp's server queues tasks itself. We default to ONE slot (n_parallel=1), so requests are
served one after another: one slot keeps the active session's prompt prefix (system prompt + history) in the KV
cache, and llama.cpp's host-RAM prompt cache (cache_ram_mib) restores other prompts' prefixes when sessions
alternate. But then a session's reply waits until another session's whole reply is written (tens of seconds for a
long one). With n_parallel=2 (`serve --lm-slots 2`) two replies decode in one batch: on 2 loaded cores each ran at
12-15 tokens/s (one alone: 34), still several times speaking pace (bench/RESULTS.md).

Cancellation: xllamacpp calls our streaming callback once per generated chunk; returning True from it makes the
server cancel the task (it frees the slot before the next token). The consumer side does not wait for that:
`stream()` polls `cancel` every few ms and returns at once. Every request also asks for llama.cpp's prompt progress,
a callback after each batch of n_batch prompt tokens, so that a long prompt nobody wants any more (a reply cancelled
by barge-in, a warm-up whose session closed or that a waiting reply pre-empts) stops after the batch under way.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lm_engine.backends.oai_stream import (
    END, TAKEN, OaiChunkTranslator, OaiStreamError, chat_completion_body, drain, tool_names,
)
from lm_engine.backends.slots import Slots
from lm_engine.chat import ChatBackendError, ChatDelta, ChatRequest, PrefillBackend
from model_files.native import native_name

logger = logging.getLogger(__name__)

TOKENIZE_TIMEOUT_S = 30.0  # a loopback call that tokenizes in the server's HTTP thread, beside any decode


class LlamaCppConfigError(ValueError):
    """Invalid LlamaCppConfig values."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LlamaCppConfig:
    """Settings of the in-process llama.cpp server.

    Attributes:
        gguf_path: the model file.
        n_threads: CPU threads for decode and prompt processing (leave cores for ASR/TTS: see load()).
        n_ctx: total KV-cache tokens (shared by the slots).
        n_parallel: slots, i.e. requests decoded concurrently; more queue inside llama.cpp.
        n_batch: prompt tokens evaluated per llama_decode call, and so the most a reply waits behind a warm-up's
            batch under way (or a cancelled request behind its own). 128 evaluated prompts as fast as 512 on 2
            cores (31 vs 33 tokens/s, loaded) while a 512-token batch kept a reply waiting 13 s.
        cache_ram_mib: host-RAM prompt cache that keeps other sessions' prefixes (0 disables it).
        cache_reuse: the shortest run of a cached prompt (tokens) that llama.cpp reuses at a new position by shifting
            its KV cache (RoPE), as llama-server's --cache-reuse; 0 turns it off. When a long session's oldest turns
            are dropped to keep its prompt within budget, the rest of the prompt moves forward, and only the common
            prefix (the system message) was reused: every ~13 turns a reply waited for the whole prompt again
            (28.6 s for ~2,000 tokens on 2 cores, against 0.10 s with reuse). The reused turns' keys were computed
            while the dropped turns were still in view: an approximation, which llama.cpp makes the same way.
        log_verbosity: llama.cpp log threshold (0 = quiet, 3 = per-request timings).
        tool_result_hint: a system line appended after trailing tool results. The 0.5B model otherwise repeats
            its tool call and echoes the result JSON instead of answering (seen with the native template);
            with this line it answers in words. None sends the messages unchanged.
        nice: niceness given to llama.cpp's own threads (Linux; 0 leaves them as they are). The voice agent runs
            ASR and TTS on the same cores; both are short and on the critical path of the first audio, while the
            LM's later tokens are needed only at speaking pace. A positive value lets them win the cores, but the LM
            then also loses them to any other nice-0 process of its scheduler group (a CI job, a shared host): beside
            two busy loops its replies came minutes late at nice 5 and 10 (bench/RESULTS.md), so serve defaults to 0.
    """

    gguf_path: Path
    n_threads: int = 2
    n_ctx: int = 4096
    n_parallel: int = 1
    n_batch: int = 128
    cache_ram_mib: int = 1024
    cache_reuse: int = 256
    log_verbosity: int = 0
    tool_result_hint: str | None = "Answer the user's question in plain words using the tool result."
    nice: int = 0

    def __post_init__(self) -> None:
        if self.n_threads < 1:
            raise LlamaCppConfigError(f"n_threads must be >= 1, got {self.n_threads}")
        if self.n_ctx < 256:
            raise LlamaCppConfigError(f"n_ctx must be >= 256, got {self.n_ctx}")
        if self.n_parallel < 1:
            raise LlamaCppConfigError(f"n_parallel must be >= 1, got {self.n_parallel}")
        if self.n_batch < 1:
            raise LlamaCppConfigError(f"n_batch must be >= 1, got {self.n_batch}")
        if self.cache_reuse < 0:
            raise LlamaCppConfigError(f"cache_reuse must be >= 0, got {self.cache_reuse}")
        if self.cache_ram_mib < 0:
            raise LlamaCppConfigError(f"cache_ram_mib must be >= 0, got {self.cache_ram_mib}")
        if not 0 <= self.nice <= 19:
            raise LlamaCppConfigError(f"nice must be in 0..19, got {self.nice}")


class LlamaCppBackend(PrefillBackend):
    """A ChatBackend over an in-process llama.cpp server. Thread-safe; share one per process."""

    def __init__(self, server: Any, config: LlamaCppConfig) -> None:
        self._server = server
        self.config = config
        self._closing = threading.Event()  # makes every in-flight callback stop its llama.cpp task
        self._producers: set[threading.Thread] = set()
        self._warmups: set[threading.Event] = set()  # each set when its prefill() call is out of llama.cpp
        self._producers_lock = threading.Lock()
        # Requests wait here, not in llama.cpp's own queue: llama.cpp evaluates a queued request's whole prompt before
        # its first callback can say that nobody wants it any more (a session that hung up, a reply cancelled by
        # barge-in), and every live session's reply would wait behind that work. Replies go before warm-ups.
        self._slots = Slots(config.n_parallel)

    @classmethod
    def load(cls, gguf_path: Path | str, n_threads: int = 2, n_ctx: int = 4096, *,
             n_parallel: int = 1, nice: int = 0) -> LlamaCppBackend:
        """Load a GGUF model (blocking, ~2.5 s for the 0.5B model on 2 cores)."""
        return cls.from_config(LlamaCppConfig(gguf_path=Path(gguf_path), n_threads=n_threads, n_ctx=n_ctx,
                                              n_parallel=n_parallel, nice=nice))

    @classmethod
    def from_config(cls, config: LlamaCppConfig) -> LlamaCppBackend:
        import xllamacpp  # heavy native module: imported only when a model is loaded

        if not config.gguf_path.is_file():
            raise ChatBackendError(f"GGUF model not found: {config.gguf_path}")
        params = xllamacpp.CommonParams()
        params.n_ctx = config.n_ctx
        params.n_parallel = config.n_parallel
        # With several slots, a unified KV pool lets one long conversation use more than n_ctx / n_parallel.
        params.kv_unified = config.n_parallel > 1
        params.n_batch = config.n_batch
        params.cpuparams.n_threads = config.n_threads
        params.cpuparams_batch.n_threads = config.n_threads
        params.cache_prompt = True   # reuse the longest common prefix already in the slot's KV cache
        params.cache_ram_mib = config.cache_ram_mib
        params.n_cache_reuse = config.cache_reuse
        params.use_jinja = True      # the GGUF's own Jinja chat template renders tools and tool results
        # A prompt that ends with an assistant message (a client's conversation.item.create, or the last reply
        # followed by another response.create) still asks for a new assistant message, as the Realtime API's
        # response.create does: llama.cpp would otherwise continue that message (an empty reply) or refuse two.
        params.prefill_assistant = False
        params.verbosity = config.log_verbosity
        params.endpoint_metrics = True  # counters() reads llama.cpp's Prometheus counters
        # The server also listens on 127.0.0.1 (an ephemeral port); of its endpoints only /tokenize and
        # /apply-template are used (count_tokens, render_prompt), the rest through the in-process calls.
        params.port = 0
        before = _native_threads()
        try:
            with native_name(config.gguf_path) as name:  # llama.cpp maps the file: the name is needed only here
                params.model.path = name
                server = xllamacpp.Server(params)
        except RuntimeError as exc:
            raise ChatBackendError(f"llama.cpp failed to load {config.gguf_path}: {exc}") from exc
        # xllamacpp's constructor returns before its loop thread enters server_queue::start_loop, which sets
        # `running` without a lock: a destructor's terminate() in between was lost, and the destructor then joined
        # that thread forever, with the GIL held (a close() soon after a load on a loaded box). Metrics are a task
        # that the loop itself answers: once they come, the loop is running and terminate() reaches it.
        server.handle_metrics()
        if config.nice:
            # The server's loop and compute threads are created by its constructor (the compute threads the
            # loop starts later inherit its niceness); a thread another part of the process starts meanwhile
            # would only run at the lower priority too.
            _renice(_native_threads() - before, config.nice)
        logger.info("llama.cpp loaded %s (threads=%d, n_ctx=%d, slots=%d)", config.gguf_path.name,
                    config.n_threads, config.n_ctx, config.n_parallel)
        return cls(server, config)

    def stream(self, request: ChatRequest, cancel: threading.Event) -> Iterator[ChatDelta]:
        """Stream the reply (see ChatBackend.stream). Raises ChatBackendError if llama.cpp rejects the request."""
        server = self._server
        if server is None:
            raise ChatBackendError("backend is closed")
        chunks: queue.Queue[object] = queue.Queue()
        consumer_gone = threading.Event()
        # Not a daemon: killing a thread inside llama.cpp at interpreter exit aborts the process, while letting
        # it finish costs at most one more token once its consumer is gone.
        producer = threading.Thread(
            target=self._produce,
            args=(server, _request_body(request, self.config.tool_result_hint), chunks, cancel, consumer_gone),
            name="llamacpp-stream")
        with self._producers_lock:
            self._producers.add(producer)
        producer.start()
        translator = OaiChunkTranslator(tool_names(request))
        try:
            yield from drain(chunks, cancel, translator, _failure)
        finally:
            # Also reached when the consumer closes the generator early: the next callback stops llama.cpp.
            consumer_gone.set()

    def _produce(self, server: Any, body: dict[str, Any], chunks: queue.Queue[object], cancel: threading.Event,
                 consumer_gone: threading.Event) -> None:
        on_chunk = _make_callback(chunks, cancel, consumer_gone, self._closing)

        def unwanted() -> bool:
            return cancel.is_set() or consumer_gone.is_set() or self._closing.is_set()

        slot = False
        try:
            slot = self._slots.acquire(reply=True, unwanted=unwanted)
            if slot:
                chunks.put(TAKEN)
                result = server.handle_chat_completions(body, on_chunk)
                if isinstance(result, dict):  # an error answered without streaming
                    chunks.put(result)
        except Exception as exc:  # a worker-thread root: hand the error to the consumer
            chunks.put(exc)
        finally:
            if slot:
                self._slots.release(reply=True)
            chunks.put(END)
            with self._producers_lock:
                self._producers.discard(threading.current_thread())

    def prefill(self, request: ChatRequest, cancel: threading.Event | None = None) -> None:
        """Evaluate the request's prompt into the slot's KV cache and generate (almost) nothing: a later request
        that starts with the same prompt only evaluates what follows. Blocking; errors are raised. The voice
        agent calls it with the words heard so far while the user is still speaking.

        A warm-up gives way: it waits while a reply waits for the slot, and stops after the prompt batch under way
        once `cancel` is set or a reply asks for the slot (what it evaluated so far stays in the cache)."""
        server = self._server
        if server is None:
            raise ChatBackendError("backend is closed")
        body = _request_body(request, self.config.tool_result_hint)
        # max_tokens 0 still samples one token in llama.cpp's chat endpoint; ask for that one explicitly.
        body.update(max_tokens=1, temperature=0.0)
        stop = cancel or threading.Event()
        errors: list[object] = []

        def unwanted() -> bool:
            return stop.is_set() or self._closing.is_set() or self._slots.replies_waiting

        def on_chunk(chunk: Any) -> bool:
            if isinstance(chunk, dict) and "error" in chunk:
                errors.append(chunk["error"])
            return unwanted()  # True cancels the llama.cpp task after its current batch

        if not self._slots.acquire(reply=False, unwanted=unwanted):
            return
        done = threading.Event()  # close() waits for it as for a stream's producer
        with self._producers_lock:
            self._warmups.add(done)
        try:
            result = server.handle_chat_completions(body, on_chunk)
        finally:
            self._slots.release(reply=False)
            with self._producers_lock:
                self._warmups.discard(done)
            done.set()
        if isinstance(result, dict) and "error" in result:
            errors.append(result["error"])
        if errors:
            raise _failure(str(errors[0]))

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in the model's own vocabulary (special tokens such as <|im_start|> in it count as one).

        Blocking (1-5 ms for 2,000 characters on 2 loaded cores): call it off the event loop. It asks the loopback
        HTTP server that xllamacpp starts beside the model: its /tokenize runs in an HTTP thread on the loaded
        vocabulary, without waiting for the decode under way, and xllamacpp has no in-process tokenize call."""
        return len(self._loopback("/tokenize", {"content": text}, "tokenize")["tokens"])

    def render_prompt(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        """The prompt text the LM reads for these messages and tools: the GGUF's chat template applied (and the
        tool_result_hint added) as stream() sends them, the reply opened. Blocking, as count_tokens."""
        body: dict[str, Any] = {"messages": _with_hint(messages, self.config.tool_result_hint)}
        if tools:
            body["tools"] = tools
        return str(self._loopback("/apply-template", body, "apply its chat template")["prompt"])

    def _loopback(self, path: str, body: dict[str, Any], doing: str) -> dict[str, Any]:
        """POST to the loopback HTTP server xllamacpp runs beside the model (see count_tokens)."""
        server = self._server
        if server is None:
            raise ChatBackendError("backend is closed")
        address = urlsplit(server.listening_address)
        conn = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=TOKENIZE_TIMEOUT_S)
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = conn.getresponse()
            answer = response.read()
        except OSError as exc:
            raise ChatBackendError(f"llama.cpp could not {doing}: {exc}") from exc
        finally:
            conn.close()
        if response.status != 200:
            raise ChatBackendError(f"llama.cpp could not {doing}: HTTP {response.status} {answer[:200]!r}")
        return json.loads(answer)

    def counters(self) -> dict[str, float]:
        """llama.cpp's cumulative counters and gauges (Prometheus names without the `llamacpp:` prefix), e.g.
        tokens_predicted_total, prompt_tokens_total, prompt_tokens_cached_total, requests_processing."""
        server = self._server
        if server is None:
            raise ChatBackendError("backend is closed")
        values: dict[str, float] = {}
        for line in server.handle_metrics().splitlines():
            if line.startswith("llamacpp:"):
                name, _, value = line.partition(" ")
                try:
                    values[name.removeprefix("llamacpp:")] = float(value)
                except ValueError:
                    continue
        return values

    def close(self, timeout_s: float = 10.0) -> None:
        """Cancel in-flight requests, wait for them, stop the llama.cpp server and free the model.
        The backend is unusable afterwards."""
        self._closing.set()
        with self._producers_lock:
            producers = list(self._producers)
            warmups = list(self._warmups)
        for producer in producers:
            producer.join(timeout_s)
        for warmup in warmups:
            warmup.wait(timeout_s)
        self._server = None  # the last reference: xllamacpp's destructor stops its loop thread


def _native_threads() -> set[int]:
    """Thread ids of this process (Linux /proc; empty elsewhere)."""
    try:
        return {int(tid) for tid in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def _renice(tids: set[int], nice: int) -> None:
    if not tids:
        logger.warning("cannot set the niceness of llama.cpp's threads here (no /proc/self/task)")
        return
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:  # the thread ended meanwhile
            continue
    # all the threads the library started (its pools and workers), of which `threads` compute a token at a time
    logger.info("llama.cpp's %d threads run at nice %d (thread ids %s)", len(tids), nice, sorted(tids))


def _make_callback(chunks: queue.Queue[object], cancel: threading.Event, consumer_gone: threading.Event,
                   closing: threading.Event) -> Callable[[Any], bool]:
    def on_chunk(chunk: Any) -> bool:
        if cancel.is_set() or consumer_gone.is_set() or closing.is_set():
            return True  # tells xllamacpp to stop reading, which cancels the llama.cpp task
        chunks.put(chunk)
        return False
    return on_chunk


def _with_hint(messages: list[dict], tool_result_hint: str | None) -> list[dict]:
    if tool_result_hint and messages[-1].get("role") == "tool":
        return [*messages, {"role": "system", "content": tool_result_hint}]
    return messages


def _request_body(request: ChatRequest, tool_result_hint: str | None) -> dict[str, Any]:
    messages = _with_hint(request.messages, tool_result_hint)
    # return_progress: a callback after each prompt batch, the first chance to stop a request nobody wants any more
    # (without it the first comes with the first token, after the whole prompt). Its chunks carry no content.
    return chat_completion_body(request, messages=messages, cache_prompt=True, return_progress=True)


def _failure(cause: BaseException | str) -> ChatBackendError:
    if isinstance(cause, OaiStreamError):
        return ChatBackendError(f"llama.cpp rejected the request: {cause}")
    return ChatBackendError(f"llama.cpp failed: {cause}")
