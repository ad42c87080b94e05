"""OaiChunkTranslator: OpenAI chat.completion.chunk dicts -> ChatDeltas (pure, no model)."""
from __future__ import annotations

import json
import queue
import threading

import pytest

from lm_engine.backends.oai_stream import END, OaiChunkTranslator, OaiStreamError, drain
from lm_engine.chat import ChatDelta, ChatRequest, ChatRequestError, ToolCallDelta


def chunk(content: str | None = None, finish: str | None = None, tool_calls: list[dict] | None = None) -> dict:
    delta: dict = {}
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def run(translator: OaiChunkTranslator, chunks: list[dict]) -> list[ChatDelta]:
    out: list[ChatDelta] = []
    for c in chunks:
        out.extend(translator.feed(c))
    return out + translator.finish()


def test_text_streams_through_and_finishes() -> None:
    deltas = run(OaiChunkTranslator(None), [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}]},
        chunk("Hello"), chunk(" there."), chunk(finish="stop")])
    assert deltas == [ChatDelta(text="Hello"), ChatDelta(text=" there."), ChatDelta(finish_reason="stop")]


def test_length_finish_is_kept() -> None:
    assert run(OaiChunkTranslator(None), [chunk("a"), chunk(finish="length")])[-1] == ChatDelta(finish_reason="length")


def test_plain_text_with_tools_is_not_held_back() -> None:
    t = OaiChunkTranslator(["get_weather"])
    assert t.feed(chunk("  ")) == []          # undecided: only whitespace so far
    assert t.feed(chunk("Sure")) == [ChatDelta(text="  Sure")]
    assert t.feed(chunk(" {x}")) == [ChatDelta(text=" {x}")]


def test_bare_json_tool_call_becomes_a_tool_call() -> None:
    pieces = ['{"', 'name', '":', ' "', 'get', '_weather', '",', ' "arguments', '": {"', 'city', '": "Paris"}}']
    deltas = run(OaiChunkTranslator(["get_weather"]), [chunk(p) for p in pieces] + [chunk(finish="stop")])
    assert len(deltas) == 2
    call = deltas[0].tool_call
    assert call is not None and call.name == "get_weather" and call.call_id.startswith("call_")
    assert json.loads(call.arguments_delta) == {"city": "Paris"}
    assert deltas[1] == ChatDelta(finish_reason="tool_calls")


def test_tagged_and_multiple_calls() -> None:
    text = ('<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
            '<tool_call>\n{"name": "b", "arguments": "{}"}\n</tool_call>')
    deltas = run(OaiChunkTranslator(["a", "b"]), [chunk(text[:5]), chunk(text[5:]), chunk(finish="stop")])
    calls = [d.tool_call for d in deltas if d.tool_call]
    assert [(c.name, json.loads(c.arguments_delta)) for c in calls] == [("a", {"x": 1}), ("b", {})]
    assert calls[0].call_id != calls[1].call_id
    assert deltas[-1].finish_reason == "tool_calls"


def test_json_calling_an_unknown_tool_is_salvaged_as_its_strings() -> None:
    text = '{"name": "Joke", "arguments": {"joke": "Why did the tomato turn red?"}}'
    deltas = run(OaiChunkTranslator(["get_weather"]), [chunk(text), chunk(finish="stop")])
    assert deltas == [ChatDelta(text="Why did the tomato turn red?"), ChatDelta(finish_reason="stop")]


@pytest.mark.parametrize(("text", "spoken"), [
    ('{"name": "hi", "arguments": {}}', []),  # a made-up call with nothing to say: silence, not JSON read aloud
    ('{"name": "say", "arguments": {"text": "Hi there! How can I he', ["Hi there! How can I he"]),  # cut at max_tokens
    ('<tool_call>{"name": "greet", "arguments": {"to": "you", "msg": "Hello \\"friend\\"', ["you Hello \"friend\""]),
])
def test_a_made_up_call_that_is_empty_or_cut_short_is_not_spoken_as_json(text: str, spoken: list[str]) -> None:
    """A small model with tools answered "Say hi." with `{"name": "hi", "arguments": ...}`, and that JSON was
    spoken aloud: a made-up call without strings, or one that does not parse (cut short), was returned as it came."""
    deltas = run(OaiChunkTranslator(["get_weather"]), [chunk(text), chunk(finish="stop")])
    assert [d.text for d in deltas if d.text] == spoken
    assert deltas[-1].finish_reason == "stop"


def test_held_text_that_is_not_json_comes_back_unchanged() -> None:
    deltas = run(OaiChunkTranslator(["f"]), [chunk("{not json"), chunk(finish="stop")])
    assert deltas == [ChatDelta(text="{not json"), ChatDelta(finish_reason="stop")]


def test_native_tool_call_deltas_keep_id_and_name() -> None:
    deltas = run(OaiChunkTranslator(["get_weather"]), [
        chunk(tool_calls=[{"index": 0, "id": "call_9", "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"city": '}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": '"Oslo"}'}}]),
        chunk(finish="tool_calls")])
    assert deltas == [
        ChatDelta(tool_call=ToolCallDelta(call_id="call_9", name="get_weather", arguments_delta="")),
        ChatDelta(tool_call=ToolCallDelta(call_id="call_9", name="get_weather", arguments_delta='{"city": ')),
        ChatDelta(tool_call=ToolCallDelta(call_id="call_9", name="get_weather", arguments_delta='"Oslo"}')),
        ChatDelta(finish_reason="tool_calls")]


def test_error_object_raises() -> None:
    with pytest.raises(OaiStreamError) as info:
        OaiChunkTranslator(None).feed(
            {"error": {"code": 400, "message": "too long", "type": "exceed_context_size_error"}})
    assert info.value.code == 400 and info.value.error_type == "exceed_context_size_error"


def test_request_and_delta_validation() -> None:
    with pytest.raises(ChatRequestError):
        ChatRequest(messages=[])
    with pytest.raises(ChatRequestError):
        ChatRequest(messages=[{"role": "robot", "content": "x"}])
    with pytest.raises(ChatRequestError):
        ChatRequest(messages=[{"role": "user", "content": "x"}], max_tokens=0)
    with pytest.raises(ChatRequestError):
        ChatDelta(finish_reason="exploded")


def test_a_call_followed_by_junk_is_the_call_and_ends_the_reply_early() -> None:
    """What Qwen2.5-Coder-0.5B writes under tool_choice "required" (seen through llama.cpp): the call, then ".json"
    and made-up calls until max_tokens. The call is taken as soon as something other than a call follows it."""
    t = OaiChunkTranslator(["get_weather"])
    first = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    assert t.feed(chunk(first[:20])) == [] and not t.complete
    assert t.feed(chunk(first[20:])) == [] and not t.complete  # a second call may follow
    assert t.feed(chunk('.json\n{"name": "get_weather", "arguments": {"city": "London"}}')) == []
    assert t.complete
    deltas = t.finish()
    calls = [d.tool_call for d in deltas if d.tool_call]
    assert [(c.name, json.loads(c.arguments_delta)) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert deltas[-1] == ChatDelta(finish_reason="tool_calls")


def test_the_same_call_written_again_in_fences_ends_the_reply_early_and_is_one_call() -> None:
    """Qwen2.5-Coder-0.5B under tool_choice "required" (seen through llama.cpp's server with --chat-url, tokens as it
    streamed them) also writes its call, then the same call in ```json fences over and over until max_tokens: minutes
    of silence on a busy CPU, the server's slot held, and then the client was asked to run the same call 3 times."""
    call = ['{"', 'name', '":', ' "', 'get', '_weather', '",', ' "', 'arguments', '":', ' {"', 'city', '":', ' "',
            'Paris', '"}}']
    t = OaiChunkTranslator(["get_weather"])
    for piece in call + [" ```", "json", "\n"] + call[:-1]:
        assert t.feed(chunk(piece)) == [] and not t.complete
    t.feed(chunk(call[-1]))
    assert t.complete  # the repeat is whole: nothing more is needed
    for piece in ["```", "json", "\n"] + call + ["\n", "```", "json", "\n"]:  # had the reader gone on
        t.feed(chunk(piece))
    deltas = t.finish()
    calls = [d.tool_call for d in deltas if d.tool_call]
    assert [(c.name, json.loads(c.arguments_delta)) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert deltas[-1] == ChatDelta(finish_reason="tool_calls")


def test_drain_stops_reading_once_the_call_is_decided() -> None:
    chunks: queue.Queue[object] = queue.Queue()
    for piece in ['{"name": "f", "arguments": {}}', " Sure! ", "more text"] + [f" {i}" for i in range(50)]:
        chunks.put(chunk(piece))
    chunks.put(END)
    deltas = list(drain(chunks, threading.Event(), OaiChunkTranslator(["f"]), RuntimeError))
    assert [d.tool_call.name for d in deltas if d.tool_call] == ["f"] and deltas[-1].finish_reason == "tool_calls"
    assert chunks.qsize() == 52  # the rest of the reply was never read (the backend then stops the server's task)


def test_a_call_followed_by_blank_lines_ends_the_reply_early() -> None:
    """Qwen2.5-Coder-0.5B under tool_choice "required" (through llama.cpp) also writes its call and then newlines until
    max_tokens: with nothing sent meanwhile and the LM's one slot held, every session waited minutes on a busy CPU.
    A run of blank lines after whole JSON decides the reply, a made-up call's (salvaged as its strings) too."""
    t = OaiChunkTranslator(["get_time"])
    assert t.feed(chunk('{"name": "get_time", "arguments": {}}')) == [] and not t.complete
    assert t.feed(chunk("\n\n")) == [] and not t.complete  # a second call may still follow a blank line
    for _ in range(3):
        t.feed(chunk("\n"))
    assert t.complete
    deltas = t.finish()
    assert [(d.tool_call.name, d.tool_call.arguments_delta) for d in deltas if d.tool_call] == [("get_time", "{}")]
    made_up = OaiChunkTranslator(["get_time"])
    made_up.feed(chunk('{"name": "OK", "arguments": {"text": "OK"}}'))
    made_up.feed(chunk("\n" * 6))
    assert made_up.complete
    assert [d.text for d in made_up.finish() if d.text] == ["OK"]
    unfinished = OaiChunkTranslator(["get_time"])
    unfinished.feed(chunk('{"name": "get_time", "arguments": {\n\n\n\n\n\n'))
    assert not unfinished.complete  # inside the call: whitespace there is the call's own


def test_calls_cut_at_max_tokens_keep_the_length_finish() -> None:
    """Qwen2.5-Coder-0.5B under tools (through llama.cpp) may write call after call until max_tokens: the whole calls
    are kept, and the reply still ends "length" (the response is incomplete at max_output_tokens), not "tool_calls",
    which reported it completed. (The same call written again ends the reply early: see the test above.)"""
    calls = [f'<tool_call>\n{{"name": "get_time", "arguments": {{"tz": "{tz}"}}}}\n</tool_call>\n'
             for tz in ("UTC", "CET", "PST")]
    deltas = run(OaiChunkTranslator(["get_time"]), [chunk(call) for call in calls]
                 + [chunk('<tool_call>\n{"name": "get_'), chunk(finish="length")])
    assert [d.tool_call.name for d in deltas if d.tool_call] == ["get_time"] * 3
    assert deltas[-1].finish_reason == "length"
    native = run(OaiChunkTranslator(["get_time"]), [
        chunk(tool_calls=[{"index": 0, "id": "call_a", "function": {"name": "get_time", "arguments": "{}"}}]),
        chunk(finish="length")])
    assert native[-1].finish_reason == "length"
    whole = run(OaiChunkTranslator(["get_time"]), [chunk(calls[0]), chunk(finish="stop")])
    assert whole[-1].finish_reason == "tool_calls"
