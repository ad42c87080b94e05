"""The input audio a session keeps is bounded (--max-input-audio-s): past it, the oldest audio of the turn under way is
dropped and the client is told when that starts, once a turn; the session goes on."""

from __future__ import annotations

import asyncio

import numpy as np

from tests.controller.scripted_pipeline import ScriptedPipeline, conversation, speech
from tests.e2e.helpers import silence
from tests.realtime_schema import validate_server_event


async def test_a_buffer_never_committed_is_told_when_it_outgrows_the_cap_and_the_session_goes_on() -> None:
    """turn_detection null and no commit: the buffer grew until the 300 s kept were full, then lost its start with no
    word to the client (it learnt only at a commit, which may never come). It is told when the start goes, once;
    the commit then answers the turn from the audio kept."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline, max_input_audio_s=10.0) as (server, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        await conv.stream(speech(12.0), pace=0)
        told = await conv.wait_for("error", timeout=5)
        await conv.stream(speech(3.0), pace=0)  # more of the same buffer: told once
        await conv.send({"type": "input_audio_buffer.commit"})
        await conv.send({"type": "response.create"})
        done = await conv.wait_for("response.done", timeout=10)
        kept = server.sessions[conv.events[0]["session"]["id"]].audio.kept_seconds
    assert told["error"]["code"] == "input_audio_truncated" and "at most 10 s" in told["error"]["message"]
    errors = [e["error"]["message"] for e in conv.of_type("error")]
    assert len(errors) == 2 and "only its last" in errors[1]  # the commit's: what was transcribed and answered
    assert done["response"]["status"] == "completed"
    assert kept <= 10.0
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_turn_a_huge_silence_duration_never_ends_is_told_and_the_idle_audio_of_a_huge_padding_is_not() -> None:
    """server_vad with silence_duration_ms of an hour: the turn never ends, and its audio outgrew the cap unseen. With a
    prefix padding of an hour, the audio between turns is kept for it up to the cap, and dropping that cuts no turn:
    no error then."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline, max_input_audio_s=10.0) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                      "prefix_padding_ms": 3_600_000}}})
        await conv.stream(np.concatenate([speech(0.5), silence(14.0)]), pace=0)
        await conv.wait_for("response.done", timeout=10)
        await asyncio.sleep(0.2)
        assert conv.of_type("error") == []
        await conv.update_session(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                      "silence_duration_ms": 3_600_000}}})
        await conv.stream(np.concatenate([speech(6.0), silence(6.0)]), pace=0)
        told = await conv.wait_for("error", timeout=5)
    assert told["error"]["code"] == "input_audio_truncated"
    assert len(conv.of_type("error")) == 1
