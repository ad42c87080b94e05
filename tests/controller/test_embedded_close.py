"""EmbeddedPipeline.close() as a library user calls it (serve's process ends anyway): the chat LM's llama.cpp goes,
its threads and its loopback HTTP listener with it, a close right after the load returns, and each model used after
it says that the pipeline is closed."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from controller.pipeline import EmbeddedConfig, EmbeddedPipeline
from lm_engine.chat import ChatRequest
from tests.closed_pipeline import assert_each_use_says_closed, drain

pytestmark = pytest.mark.slow

# Loads the pipeline and closes it at once (no request in between: llama.cpp's loop may just have started), twice,
# and prints what was left of each chat LM: the threads its load started and whether its listener still answered.
_LOAD_THEN_CLOSE = """
import json
import os
import socket
import time
from urllib.parse import urlsplit

from controller.pipeline import EmbeddedConfig, EmbeddedPipeline
from lm_engine import LlamaCppBackend

def tids():
    return set(os.listdir("/proc/self/task"))

real_from_config = LlamaCppBackend.from_config.__func__
lm = {}

def from_config(cls, config):
    before = tids()
    backend = real_from_config(cls, config)
    lm.update(threads=tids() - before, port=urlsplit(backend._server.listening_address).port)
    return backend

LlamaCppBackend.from_config = classmethod(from_config)
for _ in range(2):
    pipeline = EmbeddedPipeline(EmbeddedConfig())
    started = time.monotonic()
    pipeline.close()
    took = time.monotonic() - started
    try:
        socket.create_connection(("127.0.0.1", lm["port"]), timeout=5).close()
        listening = True
    except ConnectionRefusedError:
        listening = False
    print(json.dumps({"started": len(lm["threads"]), "left": len(lm["threads"] & tids()), "listening": listening,
                      "close_s": took}), flush=True)
os._exit(0)  # what Python's exit frees is no part of the close
"""


def test_close_right_after_the_load_stops_llama_cpp_and_its_listener() -> None:
    """close() shut the worker pools and left llama.cpp running: the 10 threads its load started and its 127.0.0.1
    listener stayed until the process ended, another set with each pipeline loaded. A close in the moment after the
    load once hung for ever in xllamacpp's destructor: the subprocess's timeout catches that."""
    done = subprocess.run([sys.executable, "-c", _LOAD_THEN_CLOSE], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(line) for line in done.stdout.splitlines()[-2:])
    # The first load also started llama.cpp's log thread (common_log), one per process and kept for the next.
    assert first["started"] > 1 and first["left"] <= 1, first
    assert second["started"] > 0 and second["left"] == 0, second
    assert not first["listening"] and not second["listening"], (first, second)
    assert first["close_s"] < 5 and second["close_s"] < 5, (first, second)


async def test_each_model_used_after_the_close_says_the_pipeline_is_closed() -> None:
    """After close(), speech-to-text, text-to-speech and VAD raised AttributeError ("'EmbeddedPipeline' object has
    no attribute '_asr'"), and a reply RuntimeError("cannot schedule new futures after shutdown"): a library user
    read a bug in the pipeline. Each now says the pipeline is closed."""
    pipeline = EmbeddedPipeline(EmbeddedConfig())
    pipeline.close()
    request = ChatRequest(messages=[{"role": "user", "content": "Hello"}])

    await assert_each_use_says_closed("embedded", [
        ("voice activity detection", pipeline.new_vad),
        ("speech-to-text", lambda: pipeline.transcribe(np.zeros(16000, np.float32), None)),
        ("text-to-speech", lambda: drain(pipeline.synthesize("Hello.", pipeline.default_voice))),
        ("chat LM", lambda: drain(pipeline.reply(request))),
        ("chat LM", lambda: pipeline.prefill(request)),
        ("chat LM", lambda: pipeline.count_tokens("Hello")),
    ])
