"""A seeded random client against the real server (scripted pipeline): valid and invalid Realtime client events in
random order, then the invariants a client relies on.

Each seed sends a random sequence of events to one session while a second session holds a conversation of its own.
Afterwards: the connection is still open; every event the server could not take got exactly one `error` carrying its
event_id (and no valid event got more than one); every server event is a valid GA event; each response's events come
between its response.created and its response.done, each output item and content part is opened and closed once;
conversation.item.* events name items that exist; audio deltas are whole samples; the session still answers a spoken
turn; the other session saw no error and got its replies.

A seed also draws the scripted models' speed (instant, or slow enough that events arrive while a turn is heard and
a reply streams), whether the LM calls a tool, and whether it reads audio ids with the transcript coming later.

By default the test runs FUZZ_SEEDS=4 seeds of FUZZ_EVENTS=60 events from FUZZ_FIRST_SEED=1 (about 20 s on two
cores). A longer search, by hand (about 10 s a seed at 500 events):
    FUZZ_FIRST_SEED=1000 FUZZ_SEEDS=100 FUZZ_EVENTS=500 .venv/bin/pytest -q tests/controller/test_protocol_fuzz.py
The test id names a failing seed (test_random_client_events_keep_the_protocol[705]): rerun it alone with
FUZZ_FIRST_SEED=705 FUZZ_SEEDS=1 and the same FUZZ_EVENTS (the events depend on the seed only; the server's
interleaving of them may differ from run to run).
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
from collections.abc import AsyncIterator

import pytest

from controller.pipeline import PromptCut
from lm_engine.chat import ChatDelta, ChatRequest, ToolCallDelta
from tests.controller.fuzz_client import EventMaker, Sent
from tests.controller.scripted_pipeline import ScriptedPipeline, scripted_server, speak_turn
from tests.e2e.helpers import Conversation, open_conversation
from tests.realtime_schema import validate_server_event

SEEDS = int(os.environ.get("FUZZ_SEEDS", "4"))
EVENTS = int(os.environ.get("FUZZ_EVENTS", "60"))
FIRST_SEED = int(os.environ.get("FUZZ_FIRST_SEED", "1"))
PROBE = "probe_"  # the event_id prefix of the checks' own events, whose errors are no finding


def _check_responses(events: list[dict]) -> None:
    """Each response's events between its created and done; output items and content parts opened and closed once,
    in order; every item added is done before the response is."""
    open_resp: dict[str, set] = {}
    closed: set[str] = set()
    for i, e in enumerate(events):
        t = e["type"]
        rid = e.get("response", {}).get("id") if t in ("response.created", "response.done") else e.get("response_id")
        if t == "response.created":
            assert rid not in open_resp and rid not in closed, (i, e)
            open_resp[rid] = set()
        elif t == "response.done":
            assert rid in open_resp, (i, "done without created", e)
            assert not open_resp.pop(rid), (i, "done with parts left open", e)
            closed.add(rid)
        elif t.startswith("response.") and rid is not None and t != "response.output_audio_buffer.cleared":
            assert rid in open_resp, (i, "event outside its response", e)
            parts = open_resp[rid]
            key = ("item", e.get("item", {}).get("id") or e.get("item_id"), e.get("output_index"))
            if t == "response.output_item.added":
                assert key not in parts, (i, e)
                parts.add(key)
            elif t == "response.output_item.done":
                assert key in parts, (i, "item done never added", e)
                parts.discard(key)
            else:
                assert key in parts, (i, "event for an item not open", e)
            pkey = ("part", e.get("item_id"), e.get("content_index"))
            if t == "response.content_part.added":
                assert pkey not in parts, (i, e)
                parts.add(pkey)
            elif t == "response.content_part.done":
                assert pkey in parts, (i, "part done never added", e)
                parts.discard(pkey)
            elif t.endswith(".delta") or (t.endswith(".done") and "content_index" in e and "part" not in t):
                assert pkey in parts or "function_call" in t, (i, "delta outside its content part", e)


ITEM_EVENTS_NAMING = ("conversation.item.done", "conversation.item.retrieved", "conversation.item.truncated",
                      "conversation.item.input_audio_transcription.delta",
                      "conversation.item.input_audio_transcription.completed",
                      "conversation.item.input_audio_transcription.failed", "input_audio_buffer.committed")


def _check_items(events: list[dict]) -> None:
    """conversation.item.* events name items the conversation holds at that point."""
    live: set[str] = set()
    for i, e in enumerate(events):
        t = e["type"]
        if t in ("conversation.item.added", "conversation.item.created"):
            assert e["item"]["id"] not in live, (i, "added twice", e)
            prev = e.get("previous_item_id")
            assert prev is None or prev in live, (i, "previous_item_id unknown", e)
            live.add(e["item"]["id"])
        elif t == "conversation.item.deleted":
            assert e["item_id"] in live, (i, "deleted unknown item", e)
            live.discard(e["item_id"])
        elif t in ITEM_EVENTS_NAMING and t != "input_audio_buffer.committed":
            item_id = e["item"]["id"] if "item" in e else e["item_id"]
            assert item_id in live, (i, "names an item not in the conversation", e)


def _check_outputs(events: list[dict]) -> None:
    """response.done lists the items its output_item.done events closed, in output_index order and as they were sent
    (a function call is closed once whole, while the message before it may still be speaking); an item of a reply in
    the conversation is added to it (conversation.item.added) before its response is done."""
    done_items: dict[str, list[tuple[int, dict]]] = {}
    added: set[str] = set()
    for i, e in enumerate(events):
        t = e["type"]
        if t == "conversation.item.added":
            added.add(e["item"]["id"])
        elif t == "response.output_item.done":
            done_items.setdefault(e["response_id"], []).append((e["output_index"], e["item"]))
        elif t == "response.done":
            resp = e["response"]
            mine = [item for _, item in sorted(done_items.get(resp["id"], []), key=lambda d: d[0])]
            assert [o["id"] for o in resp["output"]] == [o["id"] for o in mine], (i, e, mine)
            assert resp["output"] == mine, (i, "response.done's items differ from their output_item.done", e, mine)
            if resp.get("conversation_id") is not None:
                assert all(o["id"] in added for o in mine), (i, "reply item never added to the conversation", e)


def _check_turns(events: list[dict]) -> None:
    """speech_started, speech_stopped and committed of one turn name one item, and audio times never run back."""
    started: str | None = None
    last_ms = 0
    for i, e in enumerate(events):
        t = e["type"]
        if t == "input_audio_buffer.speech_started":
            started = e["item_id"]
            assert e["audio_start_ms"] >= 0, (i, e)
        elif t == "input_audio_buffer.speech_stopped":
            assert e["item_id"] == started, (i, "stopped a turn that did not start", started, e)
            assert e["audio_end_ms"] >= last_ms, (i, e, last_ms)
            last_ms = e["audio_end_ms"]


def _check_audio(events: list[dict]) -> None:
    for e in events:
        if e["type"] == "response.output_audio.delta":
            data = base64.b64decode(e["delta"], validate=True)
            assert data, e
            # pcm16 deltas are whole samples; G.711 (one byte a sample) is whole by construction
            assert len(data) % 2 == 0 or _g711_possible(events), len(data)


def _g711_possible(events: list[dict]) -> bool:
    """An output format of one byte a sample was set at some point."""
    return any(e["type"] == "session.updated" and e["session"]["audio"]["output"]["format"]["type"] != "audio/pcm"
               for e in events)


def _check_errors(sent: list[Sent], events: list[dict], seed: int) -> None:
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert not [e for e in errors if e["type"] == "server_error"], (seed, "internal errors", errors)
    by_id: dict[str | None, int] = {}
    for err in errors:
        by_id[err.get("event_id")] = by_id.get(err.get("event_id"), 0) + 1
    for s in sent:
        if s.event_id is not None:
            got = by_id.get(s.event_id, 0)
            assert got == 1 if s.must_fail else got <= 1, (seed, s.raw[:300], got)
    anonymous = sum(s.event_id is None for s in sent)
    assert by_id.get(None, 0) == anonymous, (seed, "errors without an event_id", by_id.get(None, 0), anonymous,
                                             [e for e in errors if e.get("event_id") is None])
    ours = {s.event_id for s in sent}
    assert all(k in ours for k in by_id), (seed, [k for k in by_id if k not in ours])


def _live_items(events: list[dict]) -> list[str]:
    live: list[str] = []
    for e in events:
        if e["type"] == "conversation.item.added":
            live.append(e["item"]["id"])
        elif e["type"] == "conversation.item.deleted":
            live.remove(e["item_id"])
    return live


async def _check_items_retrievable(conv: Conversation, seed: int) -> None:
    """The server holds every item the client was told of: none of them is 'not found'."""
    n = len(conv.events)
    live = _live_items(conv.events)
    for i, item_id in enumerate(live):
        await conv.send({"type": "conversation.item.retrieve", "event_id": f"{PROBE}{i}", "item_id": item_id})
    await _settle(conv)
    missing = [e["error"] for e in conv.events[n:] if e["type"] == "error" and e["error"]["code"] == "item_not_found"]
    assert not missing, (seed, missing)


async def _settle(conv: Conversation, quiet: float = 0.5, limit: float = 30.0) -> None:
    """Wait until the server has sent nothing for `quiet` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    n = -1
    while n != len(conv.events) and loop.time() < end:
        n = len(conv.events)
        await asyncio.sleep(quiet)


async def _fuzz_one(seed: int, url: str) -> None:
    rng = random.Random(seed)
    fuzzed, other = await open_conversation(url), await open_conversation(url)
    try:
        await other.ask("Hello?")
        maker = EventMaker(rng, fuzzed.events)
        sent: list[Sent] = []
        while len(sent) < EVENTS:
            for s in maker.next():
                sent.append(s)
                await fuzzed.ws.send(s.raw)
            if rng.random() < 0.3:
                await asyncio.sleep(rng.choice([0.0, 0.01, 0.05, 0.2]))
        # Quiet the session: no reply left, and the settings a spoken turn needs.
        await _settle(fuzzed)
        await fuzzed.send({"type": "session.update", "event_id": f"{PROBE}reset", "session": {
            "type": "realtime", "output_modalities": ["audio"], "max_output_tokens": "inf", "tools": [],
            "tool_choice": "auto", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                                       "turn_detection": {"type": "server_vad"}},
                                             "output": {"format": {"type": "audio/pcm", "rate": 24000}}}}})
        await fuzzed.send({"type": "input_audio_buffer.clear", "event_id": f"{PROBE}clear"})
        await _settle(fuzzed)
        assert fuzzed.ws.close_code is None, (seed, fuzzed.ws.close_code, fuzzed.ws.close_reason)
        await _check_items_retrievable(fuzzed, seed)
        done = await speak_turn(fuzzed)
        assert done["response"]["status"] == "completed", (seed, done)
        assert fuzzed.audio_of(done["response"]["id"]).size, seed
        await other.wait_for("response.done", timeout=30)
        n = len(other.events)
        await other.ask("Still there?")
        await other.wait_for("response.done", after=n, timeout=30)
    finally:
        await fuzzed.close()
        await other.close()
    for raw in fuzzed.raw + other.raw:
        validate_server_event(raw)
    for conv in (fuzzed, other):
        _check_responses(conv.events)
        _check_items(conv.events)
        _check_outputs(conv.events)
        _check_turns(conv.events)
        _check_audio(conv.events)
    _check_errors(sent, [e for e in fuzzed.events if not str(e.get("error", {}).get("event_id")).startswith(PROBE)],
                  seed)
    assert not other.of_type("error"), (seed, other.of_type("error"))


class ToolPipeline(ScriptedPipeline):
    """The scripted LM, which calls get_time (a new call_id each time) in some of the replies given tools."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng
        self.calls = 0

    async def reply(self, request: ChatRequest) -> AsyncIterator[ChatDelta | PromptCut]:
        self.calls += 1
        self.tool_calls = [ToolCallDelta(call_id=f"call_{self.calls}", name="get_time", arguments_delta="{}")] \
            if request.tools and self.rng.random() < 0.7 else []
        async for delta in super().reply(request):
            yield delta


def _pipeline(rng: random.Random) -> ScriptedPipeline:
    """Models as fast as none, or slow enough that events arrive while a turn is heard and a reply streams."""
    pipeline = ToolPipeline(rng)
    pipeline.asr_seconds = rng.choice([0.0, 0.02, 0.2])
    pipeline.word_seconds = rng.choice([0.0, 0.01, 0.05])
    pipeline.reply_words = ["word"] * rng.choice([1, 3, 20])
    pipeline.tool_call_seconds = rng.choice([0.0, 0.05])
    if rng.random() < 0.3:  # Step-Audio's way: the LM reads audio ids, the transcript comes later
        pipeline.heard_as = "<audio_1>"
        pipeline.transcript_lag_seconds = rng.choice([0.0, 0.3])
    return pipeline


@pytest.mark.parametrize("seed", range(FIRST_SEED, FIRST_SEED + SEEDS))
async def test_random_client_events_keep_the_protocol(seed: int) -> None:
    async with scripted_server(_pipeline(random.Random(-seed))) as server:
        await _fuzz_one(seed, f"ws://127.0.0.1:{server.server.port}/v1/realtime")
