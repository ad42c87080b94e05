"""`serve --profile tiny --chat-url URL`: the Chat LM runs on a real OpenAI-compatible server (llama.cpp's, serving the
embedded Qwen GGUF, standing where vLLM serves Step-Audio-Chat), the rest in this process. The user's spoken turn
must reach that server as its <audio_N> text, and the server's reply must come back as TTS-3B speech."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ServerProcess
from tests.e2e.helpers import RATE, load_pcm24k, open_conversation, rms, silence
from tests.llama_server import LlamaServer
from tests.realtime_schema import validate_server_event
from tests.step_audio.conftest import fails_in_one_line, without_chat_weights

pytestmark = pytest.mark.slow

ONE_TURN_VAD = {"type": "server_vad", "silence_duration_ms": 800, "prefix_padding_ms": 300}
AUDIO_TOKEN = re.compile(r"<audio_(\d+)>")
MAX_TOKENS = 40


async def test_spoken_turn_through_a_remote_chat_server(tiny_model_dir: Path, tmp_path: Path,
                                                        llama_server: LlamaServer, beckett_wav: Path) -> None:
    seen_before = set(llama_server.prompts_dir.iterdir())
    # No Chat weights on this host: a reply can only come from the remote server.
    model_dir = without_chat_weights(tiny_model_dir, tmp_path / "model")
    server = ServerProcess("--profile", "tiny", "--model-path", str(model_dir), "--threads", "2",
                           "--chat-url", llama_server.url + "/v1")
    try:
        conv = await open_conversation(server.ws)
        try:
            # The 0.5B model reads the audio ids as text and may ramble to the server's 256-token reply length:
            # minutes of CPU TTS. A cap the client asks for keeps the turn short, and an honest end says where it cut.
            await conv.send({"type": "session.update", "session": {
                "type": "realtime", "max_output_tokens": MAX_TOKENS,
                "audio": {"input": {"turn_detection": ONE_TURN_VAD}}}})
            await conv.wait_for("session.updated")
            # "Ever tried. Ever failed." (~2.5 s): about 100 audio ids, a short prompt for the CPU server.
            speech = load_pcm24k(beckett_wav)[: int(2.6 * RATE)]
            await conv.stream(np.concatenate([silence(0.3), speech, silence(1.5)]), pace=1.0)
            done = await conv.wait_for("response.done", timeout=180)
        finally:
            await conv.close()
    finally:
        server.stop()

    response = done["response"]
    assert response["status"] == "completed" or (response["status"], response["status_details"]["reason"]) == (
        "incomplete", "max_output_tokens"), done
    assert response["usage"]["output_token_details"]["text_tokens"] <= MAX_TOKENS, done
    said = conv.of_type("response.output_audio_transcript.done")[-1]["transcript"]
    assert said.strip()
    audio = conv.audio_of(done["response"]["id"])
    assert len(audio) / RATE >= 0.3
    assert rms(audio) > 1e-3
    for raw in conv.raw:
        validate_server_event(raw)
    # What the remote server rendered for this turn (its own chat template): the session's instructions, then the
    # turn's audio ids as text, one group of five ids (2 linguistic + 3 semantic) per 120 ms of speech.
    prompts = [p.read_text() for p in set(llama_server.prompts_dir.iterdir()) - seen_before]
    assert prompts
    prompt = max(prompts, key=len)
    assert "You are a helpful voice assistant." in prompt
    ids = [int(n) for n in AUDIO_TOKEN.findall(prompt)]
    assert len(ids) >= 5 * 15, len(ids)  # >= 1.8 s of the 2.6 s of speech
    assert len(ids) % 5 == 0
    assert all(i < 1024 for i in ids[0::5]) and all(i >= 1024 for i in ids[2::5])  # the 2:3 interleave


def test_a_chat_url_whose_v1_is_no_chat_api_is_told_in_one_line(tiny_model_dir: Path, tmp_path: Path,
                                                                 tiny_server: ServerProcess) -> None:
    """--chat-url naming a server whose /v1 is not an OpenAI API (here a voice agent's own, the Realtime API): its
    plain 404 body "not found\n" broke the error in two lines, and the hint said the URL "usually ends in /v1",
    which it did."""
    stderr = fails_in_one_line("chat", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--text", "Hi.",
                               "--out", str(tmp_path / "x.wav"), "--chat-url", f"{tiny_server.http}/v1")
    assert f"chat server {tiny_server.http}/v1/models answered HTTP 404: not found; nothing there serves the " \
           "OpenAI API: is the URL that of the Chat LM's server" in stderr, stderr
