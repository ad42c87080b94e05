"""The `openai` package's own realtime client, unchanged, completes a turn against our server."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.e2e.helpers import load_pcm24k, silence, to_pcm16
from tests.realtime_schema import validate_server_event

pytestmark = pytest.mark.slow


async def test_openai_sdk_realtime_client_completes_a_spoken_turn(embedded_server, beckett_wav, monkeypatch) -> None:
    from openai import AsyncOpenAI

    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    client = AsyncOpenAI(api_key="unused", base_url=f"{embedded_server.http}/v1")
    speech = load_pcm24k(beckett_wav)[: int(2.9 * 24000)]  # "Ever tried. Ever failed."
    raw_frames: list[str] = []
    async with client.realtime.connect(model="stepaudio-rt") as conn:
        await conn.session.update(session={"type": "realtime", "instructions": "Answer in one short sentence.",
                                           "audio": {"input": {"turn_detection": None}}})
        audio = to_pcm16(np.concatenate([silence(0.2), speech, silence(0.3)]))
        for i in range(0, len(audio), 9600):
            await conn.input_audio_buffer.append(audio=base64.b64encode(audio[i:i + 9600]).decode())
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        types, transcript, audio_bytes = [], None, 0
        while True:
            raw = await conn.recv_bytes()
            raw_frames.append(raw.decode())
            event = conn.parse_event(raw)
            types.append(event.type)
            if event.type == "conversation.item.input_audio_transcription.completed":
                transcript = event.transcript
            if event.type == "response.output_audio.delta":
                audio_bytes += len(base64.b64decode(event.delta))
            if event.type == "response.done":
                assert event.response.status == "completed"
                break
    assert types[0] == "session.created"
    assert "input_audio_buffer.committed" in types
    assert transcript is not None and "ever tried" in transcript.lower()
    assert audio_bytes / 2 / 24000 >= 0.5
    for raw in raw_frames:
        validate_server_event(raw)
