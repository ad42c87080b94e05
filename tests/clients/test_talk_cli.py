"""`stepaudio-rt talk` as a user runs it, against the real server with a scripted pipeline (no models)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import soundfile as sf

from clients.talk import main
from tests.controller.scripted_pipeline import ScriptedPipeline, scripted_server, speech
from tests.e2e.helpers import silence


async def test_talk_sends_its_instructions_and_writes_the_reply(tmp_path: Path) -> None:
    """`stepaudio-rt talk FILE --instructions TEXT`: the reply is asked with those instructions and written out."""
    wav, out = tmp_path / "turn.wav", tmp_path / "reply.wav"
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(1.2)]), 24000)
    pipeline = ScriptedPipeline()
    async with scripted_server(pipeline) as server:
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        argv = [str(wav), "--url", url, "--out", str(out), "--fast", "--instructions", "Speak like a pirate."]
        code = await asyncio.get_running_loop().run_in_executor(None, main, argv)
    assert code == 0
    assert pipeline.requests[-1].messages[0] == {"role": "system", "content": "Speak like a pirate."}
    assert sf.info(str(out)).duration > 0.1
