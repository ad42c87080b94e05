"""EmbeddedPipeline.close() as a library user calls it (serve's process ends anyway): the chat LM's llama.cpp goes,
its threads and its loopback HTTP listener with it, and a close right after the load returns."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

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
