"""`serve --speculation off`: the reply starts at end of turn, answers the committed turn, speculates never."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import ServerProcess
from tests.e2e.helpers import RATE, load_pcm24k, open_conversation, rms, silence

pytestmark = pytest.mark.slow


async def test_spoken_turn_without_speculation(beckett_wav) -> None:
    server = ServerProcess("--profile", "embedded", "--speculation", "off")
    try:
        conv = await open_conversation(server.ws)
        try:
            speech = load_pcm24k(beckett_wav)[: int(2.9 * RATE)]
            await conv.send({"type": "session.update", "session": {
                "type": "realtime", "instructions": "Answer in one short sentence.",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 800}}}}})
            await conv.stream(np.concatenate([silence(0.3), speech, silence(1.5)]))
            done = await conv.wait_for("response.done", timeout=120)
            heard = await conv.wait_for("conversation.item.input_audio_transcription.completed")
        finally:
            await conv.close()
        metrics = server.metrics()
    finally:
        server.stop()
    assert "ever tried" in heard["transcript"].lower()
    assert done["response"]["status"] == "completed"
    assert [o["type"] for o in done["response"]["output"]] == ["message"]
    assert rms(conv.audio_of(done["response"]["id"])) > 0.01
    # The reply started only after the end of turn.
    stopped = conv.time_of(conv.of_type("input_audio_buffer.speech_stopped")[0])
    assert conv.time_of(conv.of_type("response.created")[0]) >= stopped
    assert metrics["stepaudio_speculations_started_total"] == 0
