"""The voice a client is told is the voice it hears: a reply speaks in the voice its response.created names, so the
session's voice may not change under a reply with audio (cannot_update_voice), from its start, not only from its
first audio delta (the Realtime API: the voice is fixed "once the model has responded with audio")."""

from __future__ import annotations

import asyncio

from tests.controller.scripted_pipeline import ScriptedPipeline, conversation
from tests.realtime_schema import validate_server_event


async def test_a_voice_change_while_a_reply_waits_for_its_first_word_is_refused_and_the_reply_keeps_its_voice() -> None:
    """The LM takes a second for its first word: the reply has been announced (response.created, voice "joe") but
    has sent no audio when the client asks for "cedar". It used to be accepted (session.updated said "cedar") while
    the reply went on to speak in "joe"; now it is refused, and what the client is told and hears agree."""
    pipeline = ScriptedPipeline()
    pipeline.word_pauses = {0: 1.0}
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = await conv.ask("what time is it?")
        created = await conv.wait_for("response.created", after=n, timeout=10)
        m = len(conv.events)
        await conv.send({"type": "session.update", "event_id": "evt_voice",
                         "session": {"type": "realtime", "audio": {"output": {"voice": "cedar"}}}})
        refused = await conv.wait_for("error", after=m, timeout=5)
        done = await conv.wait_for("response.done", after=n, timeout=10)
        await asyncio.sleep(0.1)  # a session.updated would have come right after the update
    assert (refused["error"]["code"], refused["error"]["param"], refused["error"]["event_id"]) == (
        "cannot_update_voice", "session.audio.output.voice", "evt_voice")
    assert not conv.of_type("session.updated")[1:]
    assert created["response"]["audio"]["output"]["voice"] == "joe"
    assert done["response"]["audio"]["output"]["voice"] == "joe"
    assert conv.of_type("response.output_audio.delta") and set(pipeline.voices_used) == {"joe"}
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_reply_cancelled_before_its_first_audio_leaves_the_voice_free() -> None:
    """No assistant audio was ever sent: once the silent reply is cancelled the voice may change, and the next reply
    is spoken, and announced, in the new voice."""
    pipeline = ScriptedPipeline()
    pipeline.word_pauses = {0: 1.0}
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = await conv.ask("what time is it?")
        await conv.wait_for("response.created", after=n, timeout=10)
        await conv.send({"type": "response.cancel"})
        cancelled = await conv.wait_for("response.done", after=n, timeout=10)
        updated = await conv.update_session(audio={"output": {"voice": "cedar"}})
        pipeline.word_pauses = {}
        n = len(conv.events)
        await conv.send({"type": "response.create"})
        done = await conv.wait_for("response.done", after=n, timeout=10)
    assert cancelled["response"]["status"] == "cancelled" and not conv.of_type("error")
    assert {e["response_id"] for e in conv.of_type("response.output_audio.delta")} == {done["response"]["id"]}
    assert updated["session"]["audio"]["output"]["voice"] == "cedar"
    assert done["response"]["audio"]["output"]["voice"] == "cedar" and pipeline.voices_used == ["cedar"]
    for raw in conv.raw:
        validate_server_event(raw)
