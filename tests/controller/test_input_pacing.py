"""Input audio sent faster than real time is read only as fast as the session's turns are transcribed."""

from __future__ import annotations

import asyncio

import numpy as np

from tests.controller.scripted_pipeline import ScriptedPipeline, conversation, speech
from tests.e2e.helpers import Conversation, silence

TURNS = 12
DONE = ("conversation.item.input_audio_transcription.completed", "conversation.item.input_audio_transcription.failed")


def most_turns_waiting(conv: Conversation) -> int:
    """The most turns the client had seen committed and not yet transcribed, at any point of its event stream."""
    waiting = most = 0
    for ev in conv.events:
        if ev["type"] == "input_audio_buffer.committed":
            waiting += 1
            most = max(most, waiting)
        elif ev["type"] in DONE:
            waiting -= 1
    return most


async def test_turns_sent_faster_than_transcribed_wait_for_the_transcripts_and_none_is_lost() -> None:
    """A client streaming speech with pauses ~15x faster than real time was read as fast as it sent: 215 turns in
    2 minutes in a soak, each queued for speech recognition, the server's tasks 14 -> 70, and the other clients'
    replies 5-22 s late. The session now stops reading while max_pending_turns of its turns wait for their
    transcripts (the socket holds the client back): its turns stay bounded, and every turn is still heard and
    transcribed, in order."""
    pipeline = ScriptedPipeline()
    pipeline.asr_seconds, pipeline.asr_lock = 0.5, asyncio.Lock()  # 6 s of speech recognition for the 12 turns
    async with conversation(pipeline) as (server, conv):
        await conv.stream(np.tile(np.concatenate([speech(0.4), silence(0.8)]), TURNS), pace=0)
        async with asyncio.timeout(120):
            while len(conv.of_type(DONE[0])) < TURNS:
                await conv.wait_for(DONE[0], after=len(conv.events))
        committed = [ev["item_id"] for ev in conv.of_type("input_audio_buffer.committed")]
        transcribed = [(ev["item_id"], ev["transcript"]) for ev in conv.of_type(DONE[0])]
        assert transcribed == [(item_id, pipeline.transcript) for item_id in committed]
        assert len(committed) == TURNS
        assert most_turns_waiting(conv) <= server.defaults.max_pending_turns + 1
