"""A distant broker (a proxy adds a delay each way): the bus keeps up with the sessions, in order."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ServerProcess
from tests.e2e.helpers import Conversation, open_conversation
from tests.mqtt.helpers import DelayProxy, Mosquitto, eventually, publish, watch

pytestmark = pytest.mark.slow

ROUND_TRIP = 1.0  # seconds the proxy adds to each acknowledgement (half each way)


async def _ten_updates_at_once(conv: Conversation) -> str:
    """Sends ten session.updates (instructions i0 ... i9), so that the bus has ten QoS 1 events (session.updated) to
    publish at once, and waits until the client has the last; returns the session id."""
    for i in range(10):
        await conv.send({"type": "session.update", "session": {"type": "realtime", "instructions": f"i{i}"}})
    await conv.wait_for("session.updated", where={"session.instructions": "i9"}, timeout=30)
    return str(conv.events[0]["session"]["id"])


async def test_a_distant_broker_gets_a_burst_of_qos1_events_without_a_round_trip_each(broker: Mosquitto) -> None:
    proxy = DelayProxy(broker.port, ROUND_TRIP / 2)
    await proxy.start()
    server = ServerProcess("--profile", "embedded", "--mqtt-url", f"mqtt://127.0.0.1:{proxy.port}?node_id=far")
    w = await watch(broker.port, "stepaudio/v1/sessions/#")  # the watcher is near the broker
    try:
        conv = await open_conversation(server.ws)
        try:
            sid = await _ten_updates_at_once(conv)
            await eventually(lambda: len(w.on(f"{sid}/events/session.updated")) >= 10, timeout=60)
        finally:
            await conv.close()
    finally:
        await w.close()
        server.stop()
        await proxy.close()
    updated = w.on(f"{sid}/events/session.updated")
    assert [m.json()["session"]["instructions"] for m in updated] == [f"i{i}" for i in range(10)]  # in order
    assert all(m.qos == 1 for m in updated)
    # One at a time, each waiting for the broker's acknowledgement, they arrive a round trip apart: 9 s from the
    # first to the last. In flight together they arrive within about one; half the serial time leaves a loaded
    # machine room.
    assert updated[-1].at - updated[0].at < 9 * ROUND_TRIP / 2


async def test_events_in_flight_when_the_link_breaks_are_sent_again_in_order(broker: Mosquitto) -> None:
    proxy = DelayProxy(broker.port, ROUND_TRIP / 2)
    await proxy.start()
    server = ServerProcess("--profile", "embedded", "--mqtt-url",
                           f"mqtt://127.0.0.1:{proxy.port}?node_id=cut&backoff_initial=0.2&backoff_max=1")
    w = await watch(broker.port, "stepaudio/v1/sessions/#")
    try:
        await eventually(lambda: server.metrics()["stepaudio_mqtt_connected"] == 1, timeout=30)
        conv = await open_conversation(server.ws)
        try:
            sid = await _ten_updates_at_once(conv)
            proxy.cut()  # the ten are on their way (the proxy holds them half a second): lost with the link
            await eventually(lambda: len({m.payload for m in w.on(f"{sid}/events/session.updated")}) >= 10, timeout=60)
        finally:
            await conv.close()
    finally:
        await w.close()
        server.stop()
        await proxy.close()
    got = [m.json()["session"]["instructions"] for m in w.on(f"{sid}/events/session.updated")]
    firsts = list(dict.fromkeys(got))  # QoS 1 is at least once: one whose acknowledgement was lost may come twice
    assert firsts == [f"i{i}" for i in range(10)]


async def test_a_command_sent_while_the_node_reconnects_is_run_after_the_reconnect(broker: Mosquitto) -> None:
    proxy = DelayProxy(broker.port, 0.0)
    await proxy.start()
    server = ServerProcess("--profile", "embedded", "--mqtt-url",
                           f"mqtt://127.0.0.1:{proxy.port}?node_id=away&backoff_initial=3&backoff_max=3")
    try:
        await eventually(lambda: server.metrics()["stepaudio_mqtt_connected"] == 1, timeout=30)
        conv = await open_conversation(server.ws)
        try:
            sid = conv.events[0]["session"]["id"]
            await eventually(lambda: server.metrics()["stepaudio_mqtt_buffered"] == 0)
            proxy.cut()  # the node's link breaks; it waits about 3 s before it reconnects
            await eventually(lambda: server.metrics()["stepaudio_mqtt_connected"] == 0)
            # QoS 1, to a subscription made at QoS 1: the broker keeps it for the node while it is away
            await publish(broker.port, f"stepaudio/v1/sessions/{sid}/cmd/instructions",
                          json.dumps({"instructions": "Sent while you were away."}))
            updated = await conv.wait_for("session.updated", timeout=30,
                                          where={"session.instructions": "Sent while you were away."})
        finally:
            await conv.close()
    finally:
        server.stop()
        await proxy.close()
    assert updated["session"]["instructions"] == "Sent while you were away."
