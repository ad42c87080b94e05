"""Ctrl-C once the models have loaded, while the bus waits for the broker to take the node's "online" status (a
broker slow to answer: a real mosquitto held with SIGSTOP): the stop is a stop of a loaded server, and the server
never says it is ready."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.mqtt.helpers import ctrl_c_while_the_broker_takes_online


def test_ctrl_c_while_the_broker_takes_the_online_status_stops_a_loaded_server_without_a_ready_line(
        tmp_path: Path) -> None:
    """The line said 'stopping before the next model loads (the one loading now cannot be cut short ...)' of models
    all loaded, and then came 'ready: ws://...' from a server on its way out (the stop was checked only right
    after the load)."""
    code, text = ctrl_c_while_the_broker_takes_online([sys.executable, "-m", "controller.cli", "serve", "--port", "0"],
                                                      tmp_path, held_at="loading the chat LM",
                                                      loaded="llama.cpp loaded")
    assert code == 0, text
    assert "SIGINT: stopping (Ctrl-C again to stop now)" in text.partition("llama.cpp loaded")[2], text
    assert "before the next model loads" not in text and "ready:" not in text, text
    assert text.rstrip().endswith("stopped"), text
