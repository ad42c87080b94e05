"""LlamaCppBackend with the real embedded model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M, 2 threads)."""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator

import pytest

from lm_engine import ChatBackendError, ChatDelta, ChatRequest, LlamaCppBackend, embedded_gguf_path

pytestmark = pytest.mark.slow

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                   "required": ["city"]}}}
SYSTEM = {"role": "system", "content": "You are a helpful voice assistant. Keep answers short."}
NICE = 7  # the voice agent runs llama.cpp below ASR and TTS; the fixture does too


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBackend]:
    b = LlamaCppBackend.load(embedded_gguf_path(), n_threads=2, n_ctx=4096, nice=NICE)
    yield b
    b.close()


def collect(backend: LlamaCppBackend, request: ChatRequest, cancel: threading.Event | None = None) -> list[ChatDelta]:
    return list(backend.stream(request, cancel or threading.Event()))


def test_short_question_gets_a_sensible_answer(backend: LlamaCppBackend) -> None:
    question = {"role": "user", "content": "What is the capital of France?"}
    deltas = collect(backend, ChatRequest(messages=[SYSTEM, question], temperature=0, max_tokens=40))
    text = "".join(d.text for d in deltas)
    assert "Paris" in text
    assert deltas[-1].finish_reason == "stop"
    assert all(d.finish_reason is None for d in deltas[:-1])


def _cpu_ticks_per_thread() -> dict[int, int]:
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[int(tid)] = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="per-thread niceness is read from Linux /proc")
def test_generation_runs_on_threads_at_the_configured_niceness(backend: LlamaCppBackend) -> None:
    before = _cpu_ticks_per_thread()
    collect(backend, ChatRequest(messages=[{"role": "user", "content": "Write a long story about a dragon."}],
                                 temperature=0, max_tokens=60))
    used = {tid: t - before.get(tid, 0) for tid, t in _cpu_ticks_per_thread().items()}
    busy = sorted(used, key=used.__getitem__, reverse=True)[:backend.config.n_threads]
    assert sum(used[t] for t in busy) >= 0.8 * sum(used.values())  # the compute ran on these threads
    assert {os.getpriority(os.PRIO_PROCESS, t) for t in busy} == {NICE}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0  # the caller's thread is untouched


def test_max_tokens_gives_length(backend: LlamaCppBackend) -> None:
    deltas = collect(backend, ChatRequest(messages=[{"role": "user", "content": "Write a long story about a dragon."}],
                                          temperature=0, max_tokens=5))
    assert deltas[-1].finish_reason == "length"
    assert 1 <= sum(1 for d in deltas if d.text) <= 5


def test_cancel_stops_promptly_and_cancels_the_llama_task(backend: LlamaCppBackend) -> None:
    """Timing-free where the machine's load matters: tokens are counted by llama.cpp itself."""
    before = backend.counters()["tokens_predicted_total"]
    cancel = threading.Event()
    request = ChatRequest(messages=[{"role": "user", "content": "Write a very long story about a dragon."}],
                          temperature=0, max_tokens=400)
    texts = 0
    last: ChatDelta | None = None
    for delta in backend.stream(request, cancel):
        last = delta
        if delta.text:
            texts += 1
            if texts == 3:
                cancel.set()
                t_cancel = time.perf_counter()
    assert time.perf_counter() - t_cancel < 0.5  # the consumer side returns without waiting for llama.cpp
    assert last == ChatDelta(finish_reason="cancelled")
    assert texts == 3
    # The next request queues behind the cancelled task, so once it is done the cancelled one has stopped.
    collect(backend, ChatRequest(messages=[{"role": "user", "content": "Say hi."}], temperature=0, max_tokens=8))
    generated = backend.counters()["tokens_predicted_total"] - before
    assert generated <= 3 + 8 + 8, f"cancelled task went on generating ({generated} tokens)"


def test_closing_the_generator_early_cancels(backend: LlamaCppBackend) -> None:
    before = backend.counters()["tokens_predicted_total"]
    gen = backend.stream(ChatRequest(messages=[{"role": "user", "content": "Count from 1 to 300."}],
                                     temperature=0, max_tokens=400), threading.Event())
    next(gen)
    gen.close()
    deltas = collect(backend, ChatRequest(messages=[{"role": "user", "content": "Say hi."}], temperature=0,
                                          max_tokens=8))
    assert deltas[-1].finish_reason in ("stop", "length")
    generated = backend.counters()["tokens_predicted_total"] - before
    assert generated <= 1 + 8 + 8 + 8, f"abandoned task went on generating ({generated} tokens)"


def test_follow_up_turn_reuses_the_cached_prefix(backend: LlamaCppBackend) -> None:
    system = {"role": "system", "content": "You are Ada, a friendly voice assistant for a bakery in Lyon. "
              "You know the opening hours (7 am to 7 pm, closed on Mondays), the menu (croissants, baguettes, "
              "tarts, macarons) and you answer in one or two short sentences."}
    turn1 = [system, {"role": "user", "content": "When are you open?"}]
    reply = "".join(d.text for d in collect(backend, ChatRequest(messages=turn1, temperature=0, max_tokens=40)))
    before = backend.counters()
    turn2 = turn1 + [{"role": "assistant", "content": reply}, {"role": "user", "content": "Do you sell macarons?"}]
    collect(backend, ChatRequest(messages=turn2, temperature=0, max_tokens=20))
    after = backend.counters()
    cached = after["prompt_tokens_cached_total"] - before["prompt_tokens_cached_total"]
    evaluated = after["prompt_tokens_total"] - before["prompt_tokens_total"]
    assert cached >= 60, "system prompt and first turn should come from the KV cache"
    assert evaluated < 30, "only the new user message (and template tokens) should be evaluated"


def test_dropping_the_oldest_turns_reuses_the_rest_of_the_prompt(backend: LlamaCppBackend) -> None:
    """The context manager drops a long session's oldest turns; the turns kept move forward in the prompt. Only the
    common prefix was reused, so the whole rest was evaluated again (a reply ~30 s late on 2 cores, every ~13 turns);
    llama.cpp now shifts the kept turns' cache to their new place."""
    turns: list[dict[str, str]] = []
    for i in range(12):
        turns += [{"role": "user", "content": f"Question {i}: what is a good name for a pet number {i}, and why?"},
                  {"role": "assistant", "content": f"For pet {i}, I would pick Biscuit {i}: short, friendly and easy "
                                                   "to call out in a park, which matters for a small dog."}]
    ask = [{"role": "user", "content": "Which name did you like best?"}]
    collect(backend, ChatRequest(messages=[SYSTEM, *turns, *ask], temperature=0, max_tokens=1))
    before = backend.counters()
    collect(backend, ChatRequest(messages=[SYSTEM, *turns[8:], *ask], temperature=0, max_tokens=1))
    after = backend.counters()
    evaluated = after["prompt_tokens_total"] - before["prompt_tokens_total"]
    assert evaluated < 150, f"{evaluated} prompt tokens evaluated again after dropping the first four turns"


def test_weather_tool_call_then_tool_result_gives_text(backend: LlamaCppBackend) -> None:
    messages = [SYSTEM, {"role": "user", "content": "What's the weather like in Paris right now?"}]
    deltas = collect(backend, ChatRequest(messages=messages, tools=[WEATHER_TOOL], temperature=0, max_tokens=80))
    calls = [d.tool_call for d in deltas if d.tool_call is not None]
    assert calls, f"no tool call in {deltas}"
    assert {c.call_id for c in calls} == {calls[0].call_id} and calls[0].name == "get_weather"
    arguments = json.loads("".join(c.arguments_delta for c in calls))
    assert "paris" in arguments["city"].lower()
    assert deltas[-1].finish_reason == "tool_calls"

    followup = messages + [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": calls[0].call_id, "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps(arguments)}}]},
        {"role": "tool", "tool_call_id": calls[0].call_id,
         "content": json.dumps({"temperature_c": 18, "condition": "light rain"})}]
    deltas = collect(backend, ChatRequest(messages=followup, tools=[WEATHER_TOOL], temperature=0, max_tokens=60))
    text = "".join(d.text for d in deltas)
    assert deltas[-1].finish_reason == "stop"
    assert not any(d.tool_call for d in deltas)
    assert "{" not in text and ("rain" in text.lower() or "18" in text)


def test_tool_choice_required_gives_the_call_without_running_on_to_max_tokens(backend: LlamaCppBackend) -> None:
    messages = [SYSTEM, {"role": "user", "content": "What's the weather in Paris?"}]
    before = backend.counters()
    deltas = collect(backend, ChatRequest(messages=messages, tools=[WEATHER_TOOL], tool_choice="required",
                                          temperature=0, max_tokens=256))
    calls = [d.tool_call for d in deltas if d.tool_call is not None]
    assert [c.name for c in calls] == ["get_weather"], deltas
    assert "paris" in json.loads(calls[0].arguments_delta)["city"].lower()
    assert deltas[-1].finish_reason == "tool_calls" and not any(d.text for d in deltas)
    generated = backend.counters()["tokens_predicted_total"] - before["tokens_predicted_total"]
    assert generated < 64, generated  # stopped after the call (the model writes on to 256 tokens otherwise)


def test_concurrent_streams_are_served_one_after_another(backend: LlamaCppBackend) -> None:
    results: dict[int, str] = {}

    def ask(i: int, city: str) -> None:
        deltas = collect(backend, ChatRequest(messages=[{"role": "user", "content": f"What country is {city} in?"}],
                                              temperature=0, max_tokens=24))
        results[i] = "".join(d.text for d in deltas)

    threads = [threading.Thread(target=ask, args=(0, "Tokyo")), threading.Thread(target=ask, args=(1, "Madrid"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert "Japan" in results[0] and "Spain" in results[1]


def test_prompt_longer_than_context_raises(backend: LlamaCppBackend) -> None:
    with pytest.raises(ChatBackendError, match="context"):
        collect(backend, ChatRequest(messages=[{"role": "user", "content": "hello " * 5000}], max_tokens=4))


def test_characters_split_across_tokens_stream_whole(backend: LlamaCppBackend) -> None:
    """Qwen's byte-level BPE spells 龘, 𠀀 and 🦜 as two or three tokens each, partial UTF-8 alone: llama.cpp holds
    the bytes back until the character is whole, so no delta holds U+FFFD and the deltas joined are the text."""
    text = "你好，世界！😀🎉 龘𠀀 🦜"
    split = [c for c in "龘𠀀🦜" if backend.count_tokens(c) > 1]
    assert split == ["龘", "𠀀", "🦜"]
    repeat = {"role": "system", "content": "You repeat the user's text exactly, nothing else."}
    deltas = [d.text for d in collect(backend, ChatRequest(messages=[repeat, {"role": "user", "content": text}],
                                                           temperature=0, max_tokens=40)) if d.text]
    assert not [d for d in deltas if "\ufffd" in d], deltas
    assert "".join(deltas) == text, deltas
