"""`serve --profile embedded` imports no torch or transformers, from start-up through a spoken turn: `make serve`
and `pip install stepaudio-rt[embedded]` install neither, so such an import would fail there (or, where an engine
venv has torch, add seconds and gigabytes of memory to every start)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.conftest import ServerProcess
from tests.e2e.helpers import RATE, load_pcm24k, open_conversation, rms, silence

pytestmark = pytest.mark.slow


def imported_modules(log: str) -> set[str]:
    """Top-level names of the modules `python -X importtime` reported loading ("import time: 12 | 34 | name")."""
    return {m.split(".")[0] for m in re.findall(r"^import time:[^|]*\|[^|]*\|\s*([\w.]+)\s*$", log, re.M)}


async def test_embedded_serve_and_a_spoken_turn_import_no_torch(beckett_wav) -> None:
    server = ServerProcess("--profile", "embedded", launcher=("-X", "importtime"))
    try:
        conv = await open_conversation(server.ws)
        try:
            # Beckett's pauses are longer than the default 500 ms: one turn needs a longer end-of-turn silence.
            await conv.update_session(instructions="Answer in one short sentence.", audio={"input": {
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 1200}}})
            speech = load_pcm24k(beckett_wav)[: int(2.9 * RATE)]  # "Ever tried. Ever failed."
            await conv.stream(np.concatenate([silence(0.3), speech, silence(1.5)]))
            done = await conv.wait_for("response.done", timeout=120)
        finally:
            await conv.close()
    finally:
        server.stop()
    assert done["response"]["status"] == "completed", done
    assert rms(conv.audio_of(done["response"]["id"])) > 0.01
    modules = imported_modules(server.log_path.read_text(errors="replace"))
    assert {"controller", "vad", "faster_whisper", "piper", "xllamacpp"} <= modules  # the log holds the imports
    assert modules & {"torch", "transformers"} == set()
