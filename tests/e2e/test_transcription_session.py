"""A Realtime transcription session (?intent=transcription) through the `openai` package: spoken turns become
transcripts, nothing answers them, and the session refuses what only a conversation has."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from tests.e2e.helpers import load_pcm24k, silence, to_pcm16
from tests.realtime_schema import validate_server_event

pytestmark = pytest.mark.slow


async def test_transcription_session_transcribes_turns_and_never_answers(embedded_server, beckett_wav,
                                                                          monkeypatch) -> None:
    from openai import AsyncOpenAI

    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    client = AsyncOpenAI(api_key="unused", base_url=f"{embedded_server.http}/v1")
    speech = load_pcm24k(beckett_wav)
    first, second = speech[: int(1.3 * 24000)], speech[int(1.5 * 24000): int(2.9 * 24000)]  # two short sentences
    raw_frames: list[str] = []

    async def until(conn, done) -> list:  # type: ignore[no-untyped-def]
        events = []
        while True:
            raw = await conn.recv_bytes()
            raw_frames.append(raw.decode())
            events.append(conn.parse_event(raw))
            if done(events[-1]):
                return events

    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = await until(conn, lambda e: e.type == "session.created")
        assert created[-1].session.type == "transcription"
        # A language Whisper does not know is refused at once (it used to fail every turn's transcription).
        await conn.session.update(session={"type": "transcription", "audio": {"input": {
            "transcription": {"model": "whisper-1", "language": "english"}}}}, event_id="evt_lang")
        refused = (await until(conn, lambda e: e.type in ("error", "session.updated")))[-1]
        assert refused.type == "error" and refused.error.code == "invalid_value", refused
        assert (refused.error.param, refused.error.event_id) == ("session.audio.input.transcription.language",
                                                                 "evt_lang")
        await conn.session.update(session={"type": "transcription", "audio": {"input": {
            "transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}})
        updated = (await until(conn, lambda e: e.type == "session.updated"))[-1]
        assert updated.session.type == "transcription"
        assert updated.session.audio.input.transcription.language == "en"

        audio = to_pcm16(np.concatenate([silence(0.3), first, silence(1.2), second, silence(1.5)]))
        for i in range(0, len(audio), 9600):
            await conn.input_audio_buffer.append(audio=base64.b64encode(audio[i:i + 9600]).decode())
        transcripts: list[str] = []

        def two_transcripts(e) -> bool:  # type: ignore[no-untyped-def]
            if e.type == "conversation.item.input_audio_transcription.completed":
                transcripts.append(e.transcript)
            return len(transcripts) == 2

        events = await until(conn, two_transcripts)

        await conn.send({"type": "response.create", "event_id": "evt_answer"})
        refused = (await until(conn, lambda e: e.type == "error"))[-1]
        await conn.send({"type": "session.update", "event_id": "evt_switch", "session": {"type": "realtime"}})
        switch = (await until(conn, lambda e: e.type == "error"))[-1]

    types = [e.type for e in events]
    assert types.count("input_audio_buffer.committed") == 2
    assert not any(t.startswith("response.") for t in types)  # nothing answered the turns
    words = " ".join(transcripts).lower()
    assert "ever tried" in words and "failed" in words
    assert refused.error.event_id == "evt_answer" and "transcription session" in refused.error.message
    assert switch.error.event_id == "evt_switch" and switch.error.param == "session.type"
    for raw in raw_frames:
        validate_server_event(raw)
    assert all(json.loads(raw)["type"] != "response.created" for raw in raw_frames)
