"""The session counts its prompts' tokens with the pipeline's counter, which may be the LM's tokenizer (milliseconds
a long text: a loopback call to llama.cpp). Counting every text of the history for every reply, on the event loop,
held every session's audio and events meanwhile; each text is now counted once, on a worker thread."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest

from tests.controller.scripted_pipeline import ScriptedPipeline, conversation, scripted_server
from tests.e2e.helpers import open_conversation
from tests.realtime_schema import validate_server_event


class RecordingCounter(ScriptedPipeline):
    def __init__(self) -> None:
        super().__init__()
        self.counted: list[tuple[str, int]] = []  # (text, thread id)

    def count_tokens(self, text: str) -> int:
        self.counted.append((text, threading.get_ident()))
        return super().count_tokens(text)


async def test_each_prompt_text_is_counted_once_and_off_the_event_loop() -> None:
    pipeline = RecordingCounter()
    questions = ["what time is it?", "and in Tokyo?", "thanks, and tomorrow?"]
    async with conversation(pipeline) as (_, conv):
        for question in questions:
            n = await conv.ask(question)
            await conv.wait_for("response.done", after=n, timeout=10)
    assert len(pipeline.requests) == 3
    texts = Counter(text for text, _ in pipeline.counted)
    assert set(questions) | {"It is noon."} <= set(texts)
    assert max(texts.values()) == 1, texts
    assert threading.get_ident() not in {thread for _, thread in pipeline.counted}  # this test runs the event loop


async def test_long_instructions_and_items_are_counted_off_the_event_loop() -> None:
    """A text that must fit the budget alone is counted when it arrives; one pasted by a client may be a megabyte
    (1.1 s in llama.cpp's tokenizer), which held every session's audio and events while it was counted."""
    pipeline = RecordingCounter()
    long_text = "word " * 5000  # over the budget: refused, with its token count
    fitting = "word " * 1000  # longer than the budget in characters, within it in tokens
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(instructions=fitting)
        await conv.send({"type": "conversation.item.create", "event_id": "ev_long", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": long_text}]}})
        await conv.send({"type": "response.create", "event_id": "ev_inline", "response": {
            "conversation": "none", "instructions": long_text}})
        for event_id in ("ev_long", "ev_inline"):
            await conv.wait_for("error", where={"error.event_id": event_id}, timeout=10)
    errors = {e["error"]["event_id"]: e["error"]["message"] for e in conv.of_type("error")}
    assert set(errors) == {"ev_long", "ev_inline"} and all("6250 tokens" in m for m in errors.values()), errors
    assert {text for text, _ in pipeline.counted} >= {long_text, fitting}
    assert threading.get_ident() not in {thread for _, thread in pipeline.counted}


def _user_item(text: str, event_id: str | None = None) -> dict:
    event = {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}
    return event if event_id is None else {**event, "event_id": event_id}


@pytest.mark.timeout(300)
async def test_a_long_history_is_counted_once_and_refused_texts_are_not_kept() -> None:
    """The counts kept were the 4,096 texts used last: a longer conversation (2,000 turns and their replies) had its
    oldest texts counted again for every reply, and a refused text was kept among them, so that a client could fill
    the server's memory with megabyte items sent to be refused."""
    pipeline = RecordingCounter()
    refused = "word " * 5000
    async with conversation(pipeline) as (server, conv):
        for i in range(4200):
            await conv.send(_user_item(f"note {i}"))
        await conv.send(_user_item(refused, "ev_long"))
        await conv.wait_for("error", where={"error.event_id": "ev_long"}, timeout=120)
        (session,) = server.sessions.values()
        assert session.budget.counts.missing([refused]) == [refused]
        for question in ("first?", "second?"):
            n = await conv.ask(question)
            await conv.wait_for("response.done", after=n, timeout=120)
    texts = Counter(text for text, _ in pipeline.counted)
    assert len(texts) > 4200 and max(texts.values()) == 1, texts.most_common(3)


class HeldCounter(ScriptedPipeline):
    """Counting a text holds its worker thread until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.counting = threading.Event()
        self.release = threading.Event()

    def count_tokens(self, text: str) -> int:
        self.counting.set()
        assert self.release.wait(60), "the test never released the count"
        return super().count_tokens(text)


@pytest.mark.timeout(120)
async def test_bus_instructions_sent_while_a_session_update_is_being_checked_are_not_lost() -> None:
    """session.update's long instructions are counted on a worker thread; an operator's instructions command that
    came meanwhile was applied, then overwritten by the update's config, built before it: every later reply
    followed the client's older instructions, though the operator's session.updated had been sent."""
    pipeline = HeldCounter()
    client_instructions = "You answer questions about the weather. " * 50  # longer than the budget in bytes
    async with conversation(pipeline) as (server, conv):
        await conv.send({"type": "session.update", "session": {"type": "realtime",
                                                                 "instructions": client_instructions}})
        assert await asyncio.to_thread(pipeline.counting.wait, 30)
        (session_id,) = server.sessions
        operator = asyncio.ensure_future(server.command(session_id, "instructions", {"instructions": "Speak French."}))
        await asyncio.wait([operator], timeout=0)  # the command runs up to its first wait, as the bus's would
        pipeline.release.set()
        await asyncio.wait_for(operator, 30)
        n = await conv.ask("what time is it?")
        await conv.wait_for("response.done", after=n, timeout=10)
    updated = [e["session"]["instructions"] for e in conv.of_type("session.updated")]
    assert updated[-1] == "Speak French.", updated
    assert pipeline.requests[-1].messages[0] == {"role": "system", "content": "Speak French."}


async def test_a_reply_cancelled_while_queued_for_the_lm_counts_no_input_tokens() -> None:
    """Two sessions share the LM, which takes one reply at a time. The second session's reply has its prompt built
    but waits behind the first's when it is cancelled: the LM read none of it, and its response.done said it had read
    the whole prompt (input_tokens as the prompt's length). It now counts 0, as a reply cancelled before its prompt
    was built does; the first reply, cancelled while the LM generates it, counts its prompt."""
    pipeline = ScriptedPipeline()
    pipeline.lm_lock = asyncio.Lock()
    pipeline.word_pauses = {0: 3.0}  # the first reply holds the LM, reading its prompt, for three seconds
    question = "what is the time in Tokyo, London and New York right now, please? " * 3
    async with scripted_server(pipeline) as server:
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        first, second = await open_conversation(url), await open_conversation(url)
        try:
            for conv in (first, second):
                await conv.update_session(audio={"input": {"turn_detection": None}})
            for conv, requests in ((first, 1), (second, 2)):
                await conv.ask(question)
                while len(pipeline.requests) < requests:  # the reply's prompt is built and with the LM (queued)
                    await asyncio.sleep(0.01)
            for conv in (second, first):
                await conv.send({"type": "response.cancel"})
            done = [await conv.wait_for("response.done", timeout=10) for conv in (first, second)]
        finally:
            for conv in (first, second):
                await conv.close()
    assert [d["response"]["status"] for d in done] == ["cancelled", "cancelled"]
    read, queued = (d["response"]["usage"] for d in done)
    assert read["input_tokens"] > pipeline.count_tokens(question)  # the question, the instructions, the template
    assert queued["input_tokens"] == 0 and queued["output_tokens"] == 0
    for conv in (first, second):
        for raw in conv.raw:
            validate_server_event(raw)
