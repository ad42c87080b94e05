"""Ctrl-C once the models have loaded, while the bus waits for the broker to take the node's "online" status (a
broker slow to answer: a real mosquitto held with SIGSTOP): the stop is a stop of a loaded server, and the server
never says it is ready."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.mqtt.helpers import Mosquitto


def _wait_for(log: Path, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"no {text!r} in:\n{log.read_text()}"
        time.sleep(0.01)


def ctrl_c_while_the_broker_takes_online(command: list[str], tmp_path: Path, *, held_at: str, loaded: str,
                                         signalled: Callable[[int], int] = lambda pid: pid) -> str:
    """Runs `command` (a serve, --mqtt-url left to add) against a broker held once the log has `held_at`; once it
    has `loaded` (the last model's) and the bus waits for the broker to take "online", SIGINTs the process that
    `signalled` gives of the server's pid, frees the broker and returns the log of a server that must exit with
    status 0."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    log = tmp_path / "serve.log"
    try:
        with open(log, "wb") as out:
            # drain_timeout: the bus would wait this long for a broker that does not take "online"
            proc = subprocess.Popen([*command, "--mqtt-url", f"{broker.url}?drain_timeout=60"], stdout=out,
                                    stderr=subprocess.STDOUT)
        try:
            _wait_for(log, held_at)  # the bus has long connected (the earlier models took seconds)
            assert broker.proc is not None
            broker.proc.send_signal(signal.SIGSTOP)
            try:
                _wait_for(log, loaded)
                time.sleep(0.5)  # the bus has sent "online" and waits for the broker's answer
                os.kill(signalled(proc.pid), signal.SIGINT)
                time.sleep(0.5)  # the signal heard while the broker is still held
            finally:
                broker.proc.send_signal(signal.SIGCONT)
            assert proc.wait(timeout=90) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        broker.stop()
    return log.read_text()


def test_ctrl_c_while_the_broker_takes_the_online_status_stops_a_loaded_server_without_a_ready_line(
        tmp_path: Path) -> None:
    """The line said 'stopping before the next model loads (the one loading now cannot be cut short ...)' of models
    all loaded, and then came 'ready: ws://...' from a server on its way out (the stop was checked only right
    after the load)."""
    text = ctrl_c_while_the_broker_takes_online([sys.executable, "-m", "controller.cli", "serve", "--port", "0"],
                                                tmp_path, held_at="loading the chat LM", loaded="llama.cpp loaded")
    assert "SIGINT: stopping (Ctrl-C again to stop now)" in text.partition("llama.cpp loaded")[2], text
    assert "before the next model loads" not in text and "ready:" not in text, text
    assert text.rstrip().endswith("stopped"), text
