"""G.711 audio in and out, API keys (header and the browser subprotocol form) and the session limit."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator

import numpy as np
import pytest
import soxr
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from clients import g711
from tests.conftest import ServerProcess
from tests.e2e.helpers import RATE, load_pcm24k, open_conversation, rms, silence

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fmt", ["audio/pcmu", "audio/pcma"])
async def test_g711_in_and_out(embedded_server, beckett_wav, fmt) -> None:
    encode, decode = (g711.ulaw_encode, g711.ulaw_decode) if fmt == "audio/pcmu" else (
        g711.alaw_encode, g711.alaw_decode)
    speech = np.concatenate([silence(0.2), load_pcm24k(beckett_wav)[: int(2.9 * RATE)], silence(0.3)])
    pcm8k = np.clip(np.round(soxr.resample(speech, RATE, 8000) * 32767), -32768, 32767).astype(np.int16)
    conv = await open_conversation(embedded_server.ws)
    try:
        await conv.send({"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"format": {"type": fmt}, "turn_detection": None},
            "output": {"format": {"type": fmt}}}}})
        await conv.wait_for("session.updated")
        data = encode(pcm8k)
        for i in range(0, len(data), 1600):  # 200 ms per event
            await conv.send({"type": "input_audio_buffer.append",
                             "audio": base64.b64encode(data[i:i + 1600]).decode()})
        await conv.send({"type": "input_audio_buffer.commit"})
        await conv.send({"type": "response.create"})
        done = await conv.wait_for("response.done", timeout=120)
        transcript = (await conv.wait_for("conversation.item.input_audio_transcription.completed"))["transcript"]
    finally:
        await conv.close()
    # Narrowband speech: Whisper hears "ever failed" reliably; "tried" vs "cried" is a coin toss at 8 kHz A-law.
    assert "ever failed" in transcript.lower()
    assert done["response"]["audio"]["output"]["format"]["type"] == fmt
    out = b"".join(base64.b64decode(e["delta"]) for e in conv.of_type("response.output_audio.delta"))
    audio = decode(out).astype(np.float32) / 32768.0
    assert len(audio) / 8000 >= 0.5  # one byte per sample at 8 kHz
    assert rms(audio) > 0.01


@pytest.fixture(scope="module")
def guarded_server() -> Iterator[ServerProcess]:
    server = ServerProcess("--profile", "embedded", "--api-key", "s3cret", "--max-sessions", "2")
    yield server
    server.stop()


AUTH = {"additional_headers": {"Authorization": "Bearer s3cret"}}


async def test_api_keys_are_required_when_configured(guarded_server) -> None:
    server = guarded_server
    with pytest.raises(InvalidStatus) as info:
            await connect(server.ws)
    assert info.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        await connect(server.ws, additional_headers={"Authorization": "Bearer wrong"})
    for kwargs in (AUTH, {"subprotocols": ["realtime", "openai-insecure-api-key.s3cret"]}):
        conv = await open_conversation(server.ws, **kwargs)
        assert conv.events[0]["type"] == "session.created"
        await conv.close()


async def test_sessions_beyond_max_sessions_are_refused_with_503_until_one_ends(guarded_server) -> None:
    server = guarded_server
    first = await open_conversation(server.ws, **AUTH)
    second = await open_conversation(server.ws, **AUTH)
    try:
        with pytest.raises(InvalidStatus) as info:
            await connect(server.ws, **AUTH)
        assert info.value.response.status_code == 503
        assert info.value.response.headers["Retry-After"] == "5"
        assert b"server full" in info.value.response.body
        # The admitted sessions are unharmed by the refusal.
        await second.update_session(instructions="Answer in one short sentence.")
    finally:
        await first.close()
    # The place is free once the first session has ended on the server (its close can end a moment after ours).
    for _ in range(300):
        if server.metrics()["stepaudio_sessions_live"] == 1:
            break
        await asyncio.sleep(0.1)
    third = await open_conversation(server.ws, **AUTH)  # the place the first session left
    assert third.events[0]["type"] == "session.created"
    assert server.metrics()["stepaudio_sessions_live"] == 2
    await third.close()
    await second.close()
    assert server.metrics()["stepaudio_sessions_refused_total"] == 1
