"""A session's turns end to end over the real server and wire, with a scripted pipeline (no models)."""

from __future__ import annotations

import asyncio

import numpy as np

from tests.controller.scripted_pipeline import (
    ScriptedPipeline, connect, scripted_server, speech, user_messages,
)
from tests.e2e.helpers import silence
from tests.realtime_schema import validate_server_event


async def test_push_to_talk_reply_hears_the_committed_turn() -> None:
    """turn_detection null: input_audio_buffer.commit then response.create at once (as the browser's push-to-talk
    and the openai SDK example do). The reply must answer what the user said, even while its transcription runs."""
    pipeline = ScriptedPipeline()
    pipeline.asr_seconds = 0.3
    async with scripted_server(pipeline) as server:
        conv = await connect(server)
        try:
            await conv.update_session(audio={"input": {"turn_detection": None}})
            await conv.stream(np.concatenate([speech(1.0), silence(0.2)]), pace=0)
            await conv.send({"type": "input_audio_buffer.commit"})
            await conv.send({"type": "response.create"})
            await conv.wait_for("response.done", timeout=10)
        finally:
            await conv.close()
    assert [user_messages(r) for r in pipeline.requests] == [["what time is it"]]
    for raw in conv.raw:
        validate_server_event(raw)
