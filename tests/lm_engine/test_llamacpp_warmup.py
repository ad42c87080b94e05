"""Early-prefill warm-ups with the real embedded model: a warm-up never holds a reply, and one nobody wants stops.

The voice agent warms llama.cpp's prompt cache while a user speaks; that work only pays off for a reply not asked for
yet. A reply (this session's or another's) that asks for the LM meanwhile must not wait for the warm-up's whole
prompt, nor must a session that closed keep the LM busy with its warm-up, nor a reply cancelled by barge-in with the
rest of its prompt."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from lm_engine import ChatRequest, LlamaCppBackend, embedded_gguf_path
from lm_engine.backends.llamacpp import LlamaCppConfig

pytestmark = pytest.mark.slow

# Small batches: a warm-up's prompt is many batches, so "stopped after a batch" and "ran to its end" are far apart
# in time whatever the machine's load.
N_BATCH = 32


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBackend]:
    b = LlamaCppBackend.from_config(LlamaCppConfig(gguf_path=embedded_gguf_path(), n_threads=2, n_ctx=4096,
                                                   n_batch=N_BATCH, nice=7))
    yield b
    b.close()


def _warm_up_request(tag: str, n_words: int = 120) -> ChatRequest:
    """A long user turn (about 350 prompt tokens for 120 words) that shares no words with another tag's."""
    words = " ".join(f"{tag}{i}" for i in range(n_words))
    return ChatRequest(messages=[{"role": "system", "content": f"Session {tag}."},
                                 {"role": "user", "content": words}], max_tokens=1)


def _timed_warm_up(backend: LlamaCppBackend, request: ChatRequest,
                   cancel: threading.Event | None = None) -> tuple[threading.Thread, list[float]]:
    ended: list[float] = []

    def run() -> None:
        if cancel is None:
            backend.prefill(request)
        else:
            backend.prefill(request, cancel)
        ended.append(time.monotonic())

    thread = threading.Thread(target=run)
    thread.start()
    return thread, ended


def _until_busy(backend: LlamaCppBackend) -> None:
    deadline = time.monotonic() + 30
    while backend.counters()["requests_processing"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)


def _until_idle(backend: LlamaCppBackend) -> None:
    deadline = time.monotonic() + 60
    while backend.counters()["requests_processing"] > 0 and time.monotonic() < deadline:
        time.sleep(0.02)


def _reply_during_a_warm_up(backend: LlamaCppBackend, n_words: int = 120) -> None:
    """A short reply asked for while another session's warm-up runs waits for less than half a whole warm-up.

    Counted in llama.cpp's decode calls (each a prompt batch or a token), not in seconds: timed, it failed on a box
    whose load changed between the whole warm-up measured first and the reply (the reply waited 12.1 s, the whole
    warm-up took 22.3 s, at a load average of 9 on 2 cores). With the warm-up made not to yield, this fails (10 of
    10 decodes, 12 of 13)."""
    decodes = backend.counters()["n_decode_total"]
    backend.prefill(_warm_up_request("a", n_words))
    whole_warm_up = backend.counters()["n_decode_total"] - decodes

    thread, ended = _timed_warm_up(backend, _warm_up_request("b", n_words))
    _until_busy(backend)
    asked = backend.counters()["n_decode_total"]
    first = None
    text = ""
    for delta in backend.stream(ChatRequest(messages=[{"role": "user", "content": "Say OK."}], max_tokens=3,
                                            temperature=0), threading.Event()):
        if first is None:
            first, first_at = backend.counters()["n_decode_total"], time.monotonic()
        text += delta.text or ""
    thread.join(60)
    assert text.strip() and first is not None
    waited = first - asked
    assert waited < whole_warm_up / 2, f"the reply waited {waited} decodes (a whole warm-up: {whole_warm_up})"
    assert ended and ended[0] <= first_at  # the warm-up gave the LM up


def test_a_reply_does_not_wait_for_another_sessions_warm_up(backend: LlamaCppBackend) -> None:
    _reply_during_a_warm_up(backend)


def test_with_default_settings_a_reply_does_not_wait_for_a_whole_warm_up_batch() -> None:
    # About 1,000 prompt tokens: eight batches of the default 128, so that the reply's wait (at most one batch and
    # its own prompt) stays far below half the warm-up on a loaded machine (with four batches CI saw 2.0 s of 3.9 s).
    default = LlamaCppBackend.load(embedded_gguf_path(), n_threads=2)
    try:
        _reply_during_a_warm_up(default, n_words=340)
    finally:
        default.close()


def test_a_warm_up_nobody_wants_any_more_stops(backend: LlamaCppBackend) -> None:
    t0 = time.monotonic()
    backend.prefill(_warm_up_request("c"))
    whole_warm_up = time.monotonic() - t0

    cancel = threading.Event()
    thread, ended = _timed_warm_up(backend, _warm_up_request("d"), cancel)
    _until_busy(backend)
    cancelled = time.monotonic()
    cancel.set()  # its session closed
    thread.join(60)
    assert ended[0] - cancelled < whole_warm_up / 2
    # llama.cpp itself is free again: a request now does not wait behind the rest of that prompt.
    _until_idle(backend)
    assert time.monotonic() - cancelled < whole_warm_up / 2


def test_a_reply_cancelled_during_its_long_prompt_frees_the_lm(backend: LlamaCppBackend) -> None:
    t0 = time.monotonic()
    backend.prefill(_warm_up_request("e"))
    whole_prompt = time.monotonic() - t0

    cancel = threading.Event()
    deltas = []
    consumer = threading.Thread(target=lambda: deltas.extend(backend.stream(_warm_up_request("f"), cancel)))
    consumer.start()
    _until_busy(backend)
    cancelled = time.monotonic()
    cancel.set()  # barge-in
    consumer.join(60)
    assert deltas[-1].finish_reason == "cancelled"
    # The next reply or warm-up does not wait for the rest of the cancelled reply's prompt.
    _until_idle(backend)
    assert time.monotonic() - cancelled < whole_prompt / 2
