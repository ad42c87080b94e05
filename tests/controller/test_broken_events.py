"""Events that break the parser or the session itself: a client event nested thousands of levels deep is bad JSON
like any other (an `error` event, the session goes on; Python's decoder raises RecursionError for it, not a
ValueError), and a session that crashes all the same is closed as an internal error, the others untouched."""

from __future__ import annotations

import asyncio

import pytest

from controller.errors import RemoteProtocolError
from controller.realtime import client_events as ce
from controller.session import Session
from tests.controller.scripted_pipeline import ScriptedPipeline, conversation, scripted_server
from tests.e2e.helpers import open_conversation

DEEP = '{"type": "session.update", "session": ' + "[" * 100_000 + "]" * 100_000 + "}"


def test_deeply_nested_json_is_invalid_json() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        ce.parse_client_event(DEEP)
    assert caught.value.code == "invalid_json"


async def test_a_deeply_nested_event_gets_an_error_and_the_session_goes_on() -> None:
    async with conversation(ScriptedPipeline()) as (_, conv):
        await conv.ws.send(DEEP)
        error = await conv.wait_for("error", timeout=10)
        assert error["error"]["code"] == "invalid_json" and error["error"]["type"] == "invalid_request_error"
        await conv.send({"type": "input_audio_buffer.clear", "event_id": "after"})
        await conv.wait_for("input_audio_buffer.cleared", timeout=10)


@pytest.mark.parametrize("raw", [
    r'{"type": "session.update", "event_id": "ev_s", "session": {"type": "realtime", "instructions": "a\ud800b"}}',
    r'{"type": "conversation.item.create", "event_id": "ev_s", "item": {"type": "message", "role": "user", '
    r'"content": [{"type": "input_text", "text": "\udfff"}]}}',
    '{"type": "conversation.item.create", "event_id": "ev_s", "item": {"type": "message", "role": "user", '
    '"content": [{"type": "input_text", "text": "\ud800"}]}}'.encode("utf-16", "surrogatepass"),
])
async def test_a_lone_surrogate_in_a_text_is_invalid_json_and_the_session_goes_on(raw: str | bytes) -> None:
    """A text holding half of a UTF-16 surrogate pair ("\\ud800" alone, as a client that cuts a string between the
    halves of an emoji sends) is no Unicode text: it failed deep in the session, when the text was first encoded, as
    an internal server_error naming no field. It is invalid JSON (RFC 8259 section 8.2), told like any other."""
    async with conversation(ScriptedPipeline()) as (_, conv):
        await conv.ws.send(raw)
        error = await conv.wait_for("error", timeout=10)
        assert error["error"]["code"] == "invalid_json" and error["error"]["event_id"] == "ev_s", error
        await conv.send({"type": "conversation.item.create", "event_id": "after", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "\U0001f600 ok"}]}})
        await conv.wait_for("conversation.item.added", timeout=10)
        assert len(conv.of_type("error")) == 1, conv.of_type("error")


async def test_a_crashed_session_closes_with_1011_and_the_others_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    receive = Session.receive

    async def crash_on_marker(self: Session, raw: str | bytes) -> None:
        if "crash-me" in str(raw):
            raise RuntimeError("a bug outside the per-event guard")
        await receive(self, raw)

    monkeypatch.setattr(Session, "receive", crash_on_marker)
    async with scripted_server(ScriptedPipeline()) as server:
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        doomed, other = await open_conversation(url), await open_conversation(url)
        try:
            await doomed.send({"type": "input_audio_buffer.clear", "event_id": "crash-me"})
            await doomed.ws.wait_closed()
            assert doomed.ws.close_code == 1011
            await other.send({"type": "input_audio_buffer.clear", "event_id": "still-here"})
            await other.wait_for("input_audio_buffer.cleared", timeout=10)
        finally:
            await doomed.close()
            await other.close()


async def test_a_client_looping_on_invalid_events_gets_errors_at_a_bounded_rate() -> None:
    """A client sending invalid JSON in a loop got an error event back for each, ~3,500 a second: the event loop was
    busy with them and every other session's replies waited 4-20 s. Past a burst of error_burst, the session now
    reads that client's events only at error_rate a second."""
    async with conversation(ScriptedPipeline()) as (server, conv):
        started = asyncio.get_running_loop().time()
        for _ in range(600):
            await conv.ws.send("not json")
        await asyncio.sleep(3)
        elapsed = asyncio.get_running_loop().time() - started
        errors = [e for e in conv.events if e["type"] == "error"]
        defaults = server.defaults
        assert 0 < len(errors) <= defaults.error_burst + defaults.error_rate * (elapsed + 1), len(errors)
