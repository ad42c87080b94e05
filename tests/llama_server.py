"""A real OpenAI-compatible server for tests: xllamacpp's own HTTP server (llama.cpp's server code) serving the
embedded Qwen2.5 GGUF on 127.0.0.1, in a subprocess, logging every prompt it renders."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from lm_engine import embedded_gguf_path

# Runs in the subprocess: llama.cpp's server, as `llama-server` would run it, listening on an ephemeral port.
_SERVE = """
import sys, time, xllamacpp
params = xllamacpp.CommonParams()
params.model.path = sys.argv[1]
params.path_prompts_log_dir = sys.argv[2]  # llama.cpp writes each rendered prompt here: what the server received
params.n_ctx = 2048
params.n_parallel = 1
params.cpuparams.n_threads = 2
params.cpuparams_batch.n_threads = 2
params.use_jinja = True
params.prefill_assistant = False  # llama-server --no-prefill-assistant, as the README asks for --chat-url
params.endpoint_metrics = True
params.endpoint_slots = True
params.verbosity = 0
params.port = 0
server = xllamacpp.Server(params)
print("LISTENING", server.listening_address, flush=True)
while True:
    time.sleep(3600)
"""


class LlamaServer:
    def __init__(self, prompts_dir: Path, log_path: Path) -> None:
        self.prompts_dir = prompts_dir
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVE, str(embedded_gguf_path()), str(prompts_dir)],
                                     stdout=subprocess.PIPE, stderr=self._log)
        assert self.proc.stdout is not None
        line = b""
        for line in self.proc.stdout:  # llama.cpp logs go to stderr; our one line comes on stdout
            if line.startswith(b"LISTENING "):
                break
        else:
            raise RuntimeError(f"llama.cpp server exited early:\n{log_path.read_text(errors='replace')[-3000:]}")
        self.url = line.split()[1].decode()
        deadline = time.monotonic() + 60
        while self.get("/health").get("status") != "ok":
            if time.monotonic() > deadline:
                raise RuntimeError("llama.cpp server never became healthy")
            time.sleep(0.2)

    def get(self, path: str) -> dict:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as r:
                return json.loads(r.read())
        except OSError:
            return {}

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(f"llamacpp:{name} "):
                    return float(line.split()[1])
        raise KeyError(name)

    def busy(self) -> bool:
        with urllib.request.urlopen(self.url + "/slots", timeout=10) as r:
            return any(slot["is_processing"] for slot in json.loads(r.read()))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()
