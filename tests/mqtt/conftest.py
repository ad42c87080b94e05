"""Fixtures of the MQTT bus tests: a real mosquitto, and a real server publishing to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import ServerProcess
from tests.mqtt.helpers import Mosquitto


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    mosq = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    mosq.start()
    yield mosq
    mosq.stop()


@pytest.fixture(scope="module")
def bus_server(broker: Mosquitto) -> Iterator[ServerProcess]:
    server = ServerProcess("--profile", "embedded", "--mqtt-url", f"{broker.url}?metrics_interval=1")
    yield server
    server.stop()

