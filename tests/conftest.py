"""Shared fixtures: real speech from the moonshine-voice wheel and a real running server."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

# Before any test imports onnxruntime: the suite leaves no onnxruntime telemetry behind either (controller/__init__.py)
import controller  # noqa: F401,E402

if TYPE_CHECKING:
    from tests.llama_server import LlamaServer


def missing_peer(reason: str) -> None:
    """A real peer (browser, SIP caller, broker) is not installed: skip here, fail in CI.

    .ci/run sets STEPAUDIO_RT_REQUIRE_PEERS=1 after installing them, so a broken install can never
    turn the real-peer tests into silent skips.
    """
    if os.environ.get("STEPAUDIO_RT_REQUIRE_PEERS"):
        pytest.fail(f"required peer missing: {reason}")
    pytest.skip(reason)


def speech_asset(name: str) -> Path:
    """A wav shipped in the moonshine-voice wheel (found without importing the package)."""
    spec = importlib.util.find_spec("moonshine_voice")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("moonshine-voice is not installed (make test installs it)")
    return Path(list(spec.submodule_search_locations)[0]) / "assets" / name


@pytest.fixture(scope="session")
def beckett_wav() -> Path:
    return speech_asset("beckett.wav")


@pytest.fixture(scope="session")
def two_cities_wav() -> Path:
    return speech_asset("two_cities.wav")


@pytest.fixture(scope="session")
def beckett(beckett_wav: Path) -> np.ndarray:
    """16 kHz float32: "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better." (10 s)."""
    import soundfile as sf  # imported here so GPU-only runs (kernels, engine) need no audio libraries

    audio, rate = sf.read(beckett_wav, dtype="float32")
    assert rate == 16_000
    return audio


@pytest.fixture(scope="session")
def two_cities_48k(two_cities_wav: Path) -> np.ndarray:
    """48 kHz float32: the opening of A Tale of Two Cities (44 s)."""
    import soundfile as sf

    audio, rate = sf.read(two_cities_wav, dtype="float32")
    assert rate == 48_000
    return audio


# name -> (profile, what, config overrides): the TTS 48:4 and Chat 96:8 ratios at tiny size, and a 6:2 one.
TINY_STEP1 = {
    "tts": ("tiny", "tts", None),        # 12 heads : 1 group (slopes of a non-power-of-two head count)
    "chat": ("tiny", "chat", None),      # 24 heads : 2 groups
    "h6g2": ("tiny", "tts", {"num_attention_heads": 6, "num_attention_groups": 2, "hidden_size": 48}),
    # the real head counts themselves (head_dim 8): TTS-3B's 48 : 4 and Chat's 96 : 8
    "h48g4": ("tiny", "tts", {"num_attention_heads": 48, "num_attention_groups": 4, "hidden_size": 384}),
    "h96g8": ("tiny", "chat", {"num_attention_heads": 96, "num_attention_groups": 8, "hidden_size": 768}),
}


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory):
    """name in TINY_STEP1 -> a random-initialised Step-1 checkpoint folder in the real layout (written once)."""
    from lm_engine.checkpoint import write_step1_checkpoint

    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            profile, what, dims = TINY_STEP1[name]
            cache[name] = write_step1_checkpoint(tmp_path_factory.mktemp(name), profile, what, dims=dims)
        return cache[name]

    return get


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`stepaudio-rt serve` in a subprocess, as a user runs it."""

    def __init__(self, *args: str, timeout: float = 300.0, env: dict[str, str] | None = None,
                 launcher: tuple[str, ...] = ()) -> None:
        """launcher: interpreter options before `-m controller.cli`, e.g. ("-m", "torch.distributed.run", ...)."""
        self.port = free_port()
        self.log_path = Path(os.environ.get("PYTEST_TMP", "/tmp")) / f"stepaudio-serve-{self.port}.log"
        cmd = [sys.executable, *launcher, "-m", "controller.cli", "serve", "--port", str(self.port), *args]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.http}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as exc:  # loaded, yet full or its --chat-url server down: a test's case
                if exc.code == 503 and json.loads(exc.read() or b"{}").get("status") != "loading":
                    return
            except OSError:
                pass
            time.sleep(0.5)
        log = self.log()
        self.stop()
        raise RuntimeError(f"server not healthy after {timeout}s:\n{log}")

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.http}/metrics", timeout=5) as r:
            text = r.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


@pytest.fixture(scope="session")
def embedded_server() -> Iterator[ServerProcess]:
    server = ServerProcess("--profile", "embedded")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """A real OpenAI-compatible chat server (llama.cpp's) on 127.0.0.1; see tests/llama_server.py."""
    from tests.llama_server import LlamaServer

    tmp = tmp_path_factory.mktemp("llama_server")
    (tmp / "prompts").mkdir()
    server = LlamaServer(tmp / "prompts", tmp / "server.log")
    yield server
    server.stop()
