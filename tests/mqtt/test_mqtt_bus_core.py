"""The bus's pure parts and its buffer, without a broker or an event loop."""

from __future__ import annotations

import base64
import json
import time

import pytest

from controller.errors import ConfigError, RemoteProtocolError, SessionClosed
from controller.metrics import Metrics
from controller.mqtt_bus import MqttBus
from controller.mqtt_protocol import (
    BadCommand, Command, Directory, command_error_message, error_topic, event_message, packet_size, parse_command,
    parse_mqtt_url, subscriptions,
)

LIMIT = 262144  # max_message's default


def test_url_defaults_and_options() -> None:
    c = parse_mqtt_url("mqtt://broker", default_node_id="host-8765")
    assert (c.host, c.port, c.tls, c.prefix, c.node_id, c.buffer) == ("broker", 1883, False, "stepaudio",
                                                                        "host-8765", 10000)
    c = parse_mqtt_url("mqtts://u%40x:p%2Fw@10.0.0.1:9000?prefix=acme/voice&node_id=n1&buffer=5"
                       "&metrics_interval=0.5&backoff_max=2", default_node_id="ignored")
    assert (c.host, c.port, c.tls, c.username, c.password) == ("10.0.0.1", 9000, True, "u@x", "p/w")
    assert (c.prefix, c.node_id, c.buffer, c.metrics_interval, c.backoff_max) == ("acme/voice", "n1", 5, 0.5, 2.0)
    assert parse_mqtt_url("mqtts://b", default_node_id="n").port == 8883


@pytest.mark.parametrize("url", [
    "http://broker", "mqtt://", "mqtt://b:99999", "mqtt://b?bogus=1", "mqtt://b?buffer=0", "mqtt://b?max_message=100",
    "mqtt://b?prefix=%24SYS/x", "mqtt://b?buffer=x", "mqtt://b?prefix=a/%23", "mqtt://b?node_id=a%2Bb",
    "mqtt://b?node_id=a/b", "mqtt://b?backoff_initial=5&backoff_max=1",
    # accepted before, then: no metrics after the first (nan, inf), a shutdown that never ended (inf), a bus that
    # failed at every connect (keepalive, a two-byte field), or a broker that dropped every connection (NUL)
    "mqtt://b?metrics_interval=nan", "mqtt://b?metrics_interval=inf", "mqtt://b?drain_timeout=inf",
    "mqtt://b?publish_timeout=nan", "mqtt://b?backoff_max=inf", "mqtt://b?keepalive=65536", "mqtt://b?prefix=a%00b",
    "mqtt://b?node_id=n%00", "mqtt://b:0", "mqtt://b?prefix=", "mqtt://b?prefix=/",
])
def test_bad_urls_raise_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_mqtt_url(url, default_node_id="n")


@pytest.mark.parametrize("url", ["http://op:s3cret@broker", "mqtt://op:s3cret@broker:x", "mqtts://op:s3#ret@broker",
                                 "mqtts://op:s3/ret@broker", "mqtts://op:s3?ret@broker"])
def test_a_bad_url_is_named_without_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_mqtt_url(url, default_node_id="n")
    assert "s3" not in str(err.value) and "op:***@broker" in str(err.value)


def test_a_password_missing_from_the_url_is_the_default_one() -> None:
    """The password may stay off the command line (where `ps` shows it): the server passes its environment's."""
    c = parse_mqtt_url("mqtts://op@broker", default_node_id="n", default_password="s3cret")
    assert (c.username, c.password) == ("op", "s3cret")
    given = parse_mqtt_url("mqtts://op:url-pw@broker", default_node_id="n", default_password="s3cret")
    assert given.password == "url-pw"
    assert parse_mqtt_url("mqtt://broker", default_node_id="n", default_password="s3cret").password is None


def test_event_topics_and_qos() -> None:
    m = event_message("p", "sess_1", {"type": "response.done", "response": {}}, LIMIT)
    assert (m.topic, m.qos, m.retain) == ("p/v1/sessions/sess_1/events/response.done", 1, False)
    assert json.loads(m.payload) == {"type": "response.done", "response": {}}
    assert event_message("p", "sess_1", {"type": "input_audio_buffer.speech_started"}, LIMIT).qos == 0
    assert event_message("p", "sess_1", {"type": "response.output_audio_transcript.delta"}, LIMIT).qos == 0
    for lifecycle in ("session.opened", "session.closed", "error", "response.output_audio_transcript.done",
                      "conversation.item.input_audio_transcription.completed"):
        assert event_message("p", "s", {"type": lifecycle}, LIMIT).qos == 1
    # ids we do not control never add topic levels or wildcards
    assert event_message("p", "a/b+#", {"type": "x/y"}, LIMIT).topic == "p/v1/sessions/a_b__/events/x_y"


def test_commands_parse_or_raise_bad_command() -> None:
    assert subscriptions("p") == ["p/v1/sessions/+/cmd/#", "p/v1/sessions/+/status", "p/v1/nodes/+/status"]
    assert parse_command("p", "p/v1/sessions/s1/cmd/say", b'{"text": "hi"}') == Command("s1", "say", {"text": "hi"})
    assert parse_command("p", "p/v1/sessions/s1/cmd/hangup", b"") == Command("s1", "hangup", {})
    assert parse_command("p", "p/v1/sessions/s1/cmd/instructions", b'{"instructions": ""}').payload == {
        "instructions": ""}
    for topic, payload in [("p/v1/sessions/s1/cmd/say", b"hi"), ("p/v1/sessions/s1/cmd/say", b'{"text": 5}'),
                           ("p/v1/sessions/s1/cmd/say", b'{"text": "  "}'), ("p/v1/sessions/s1/cmd/say", b"[1]"),
                           ("p/v1/sessions/s1/cmd/say", '{"text": "\U0001f600\U0001f389 *"}'.encode()),
                           ("p/v1/sessions/s1/cmd/instructions", b"{}"), ("p/v1/sessions/s1/cmd/hangup", b"\xff"),
                           ("p/v1/sessions/s1/cmd/reboot", b"{}"), ("q/v1/sessions/s1/cmd/say", b'{"text":"a"}')]:
        with pytest.raises(BadCommand):
            parse_command("p", topic, payload)


def test_unknown_commands_are_named_and_error_replies_are_not_commands() -> None:
    for topic, named in [("p/v1/sessions/s1/cmd/reboot", "'reboot'"), ("p/v1/sessions/s1/cmd/Say", "'Say'"),
                         ("p/v1/sessions/s1/cmd/say/now", "'say/now'"), ("p/v1/sessions/s1/cmd/error/x", "'error/x'")]:
        with pytest.raises(BadCommand, match=f"unknown command {named}; the commands are say, instructions, hangup"):
            parse_command("p", topic, b'{"text": "hi"}')
        assert error_topic("p", topic) == "p/v1/sessions/s1/cmd/error"
    # a reply (ours or another node's) on cmd/error is not answered, whatever it holds
    assert parse_command("p", "p/v1/sessions/s1/cmd/error", b'{"topic": "x", "error": "y"}') is None
    assert parse_command("p", "p/v1/sessions/s1/cmd/error", b"not json") is None


def test_a_refused_command_is_answered_with_a_stable_kind_and_its_payload() -> None:
    """A dashboard matches `kind`: codes, not Python class names ("KeyError" told an operator nothing)."""
    topic = "p/v1/sessions/s1/cmd/say"
    cases = [(BadCommand("payload must be a JSON object"), "bad_command"),
             (KeyError("no session 's1'"), "unknown_session"),
             (RemoteProtocolError("A response is already in progress", code="conversation_already_has_active_response"),
              "conversation_already_has_active_response"),
             (SessionClosed("closed"), "session_closed"), (RuntimeError("boom"), "command_failed")]
    for exc, kind in cases:
        msg = command_error_message("p", topic, b'{"text": "hi"}', exc, "n1")
        assert (msg.topic, msg.qos, msg.retain) == ("p/v1/sessions/s1/cmd/error", 1, False)
        body = json.loads(msg.payload)
        assert body == {"topic": topic, "error": str(exc.args[0]), "kind": kind, "node_id": "n1",
                        "payload": '{"text": "hi"}'}
    binary = json.loads(command_error_message("p", topic, b"\xff\xfe", BadCommand("x"), "n1").payload)
    assert base64.b64decode(binary["payload"]) == b"\xff\xfe"


def test_a_payload_that_is_not_utf8_is_called_that() -> None:
    with pytest.raises(BadCommand, match=r"payload is not UTF-8 text \(byte 0xff at 1\): commands are JSON objects"):
        parse_command("p", "p/v1/sessions/s1/cmd/hangup", b"{\xff}")


def test_an_event_too_big_for_the_broker_goes_out_as_a_stub() -> None:
    event = {"type": "session.updated", "event_id": "event_7", "session": {"instructions": "w" * 5000}}
    whole = event_message("p", "s1", event, 8192)
    assert json.loads(whole.payload) == event
    stub = event_message("p", "s1", event, 4096)
    assert (stub.topic, stub.qos) == (whole.topic, whole.qos)
    assert json.loads(stub.payload) == {"type": "session.updated", "event_id": "event_7", "truncated": True,
                                        "bytes": len(whole.payload)}
    assert packet_size(stub.topic, stub.payload) <= 4096
    # a message whose packet is exactly at the limit is kept whole, one byte more makes a stub
    exact = packet_size(whole.topic, whole.payload)
    assert event_message("p", "s1", event, exact) == whole
    assert json.loads(event_message("p", "s1", event, exact - 1).payload)["truncated"] is True


def _status(node: str, status: str) -> tuple[str, bytes]:
    return f"p/v1/nodes/{node}/status", json.dumps({"status": status, "node_id": node}).encode()


def _live(sid: str, node: str) -> tuple[str, bytes]:
    return f"p/v1/sessions/{sid}/status", json.dumps({"status": "live", "session_id": sid, "node_id": node}).encode()


def test_a_broker_holding_many_live_sessions_is_taken_in_quickly() -> None:
    """A node connecting to a broker shared by a large fleet gets every live session's retained status at once;
    the directory took 16 s of the event loop's CPU for 20000 (each status scanned every session)."""
    d = Directory("a")
    start = time.process_time()
    for i in range(20000):
        assert d.observe("p", *_live(f"s{i}", f"n{i % 50}")) == []
    assert d.observe("p", *_status("n7", "offline")) == [(f"s{i}", None) for i in range(7, 20000, 50)]
    assert time.process_time() - start < 2.0


def test_directory_knows_other_nodes_sessions_and_finds_ghosts() -> None:
    d = Directory("a")
    d.local.add("s1")
    assert d.observe("p", *_live("s1", "a")) == []  # our own, echoed
    assert d.observe("p", *_status("a", "offline")) == []  # our own will (a broker shutting down sends it)
    assert not d.offline
    assert d.observe("p", *_status("b", "online")) == []
    assert d.observe("p", *_live("s2", "b")) == []
    assert (d.owned_elsewhere("s1"), d.owned_elsewhere("s2"), d.owned_elsewhere("s3")) == (False, True, False)
    assert d.observe("p", "p/v1/sessions/s2/status", b"") == []  # s2 ended on b
    assert not d.owned_elsewhere("s2")
    # b is killed: its will marks it offline, and its sessions' statuses are ghosts, whichever arrives first
    assert d.observe("p", *_live("s4", "b")) == []
    assert d.observe("p", *_status("b", "offline")) == [("s4", None)]
    assert d.observe("p", *_live("s5", "b")) == [("s5", None)]
    assert not d.owned_elsewhere("s4")
    # a status naming this node for a session it does not have: left by this node's previous run
    assert d.observe("p", *_live("s6", "a")) == [("s6", None)]
    # One of ours cleared by another node (it saw our will on a short link loss): we say it is live again.
    assert d.observe("p", "p/v1/sessions/s1/status", b"") == [("s1", "a")]
    assert d.observe("p", "p/v1/sessions/s1/status", b"not json") == [("s1", "a")]  # unreadable: as cleared
    assert d.observe("p", *_live("s1", "a")) == []
    d.local.discard("s1")  # s1 ends here: its clear comes back to us
    assert d.observe("p", "p/v1/sessions/s1/status", b"") == []
    assert d.owners == {}
    assert d.observe("p", "p/v1/sessions/s1/cmd/say", b"{}") is None  # not a status: a command


def _bus(buffer: int) -> tuple[MqttBus, Metrics]:
    metrics = Metrics()

    async def command(session_id: str, name: str, payload: dict) -> None:
        raise AssertionError("no commands here")

    return MqttBus(parse_mqtt_url(f"mqtt://b?buffer={buffer}", default_node_id="n"), metrics, command), metrics


def test_full_buffer_drops_the_oldest_qos0_message_first_and_counts() -> None:
    """A full buffer keeps what a dashboard builds on (QoS 1: session opened/closed, its retained status set and
    cleared) and drops the oldest QoS 0 event; with none left, the oldest of all."""
    bus, metrics = _bus(buffer=4)
    bus.session_opened("s")  # session.opened and the retained status: QoS 1
    for i in range(4):
        bus.session_event("s", {"type": "conversation.item.added", "n": i})  # QoS 0
    value = metrics.registry.get_sample_value
    assert value("stepaudio_mqtt_dropped_total") == 2  # events 0 and 1
    assert value("stepaudio_mqtt_buffered") == 4
    kept = [json.loads(m.payload) if m.payload else None for m in bus._buffer]
    assert [m.get("type", m.get("status")) if m else None for m in kept] == [
        "live", "session.opened", "conversation.item.added", "conversation.item.added"]
    assert [m["n"] for m in kept[2:] if m] == [2, 3]
    bus.session_closed("s")  # session.closed and the status cleared: QoS 1, they push out the QoS 0 events
    assert [m.qos for m in bus._buffer] == [1, 1, 1, 1] and value("stepaudio_mqtt_dropped_total") == 4
    bus.session_event("s", {"type": "response.done"})  # QoS 1 into a buffer of QoS 1: the oldest goes
    assert json.loads(bus._buffer[0].payload)["type"] == "session.opened" and value("stepaudio_mqtt_dropped_total") == 5


def test_audio_deltas_are_counted_not_published() -> None:
    bus, _ = _bus(buffer=100)
    chunk = base64.b64encode(b"\x01\x02" * 100).decode()
    for _ in range(3):
        bus.session_event("s", {"type": "response.output_audio.delta", "response_id": "r1", "delta": chunk})
    bus.session_event("s", {"type": "response.output_audio.done", "response_id": "r1"})
    assert [m.topic for m in bus._buffer] == ["stepaudio/v1/sessions/s/events/response.output_audio.done"]
    done = json.loads(bus._buffer[0].payload)
    assert (done["audio_deltas"], done["audio_bytes"]) == (3, 600)


async def test_the_publish_window_is_not_reported_as_a_backlog() -> None:
    """Up to WINDOW publishes await their acknowledgement in normal flow; aiomqtt's own warning threshold (10)
    filled a busy call's log with 'There are N pending publish calls.'"""
    from controller.mqtt_bus import WINDOW

    bus, _ = _bus(buffer=3)
    assert bus._client().pending_calls_threshold == WINDOW + 1  # + the metrics loop's publish


@pytest.mark.parametrize(("url", "named"), [
    ("mqtt://b?buffer=5&keepalive=abc", "keepalive='abc' is not a whole number"),
    ("mqtt://b?metrics_interval=10s", "metrics_interval='10s' is not a number"),
])
def test_an_option_that_is_not_a_number_is_named(url: str, named: str) -> None:
    """`?buffer=5&keepalive=abc` stopped serve with "--mqtt-url: invalid literal for int() with base 10: 'abc'",
    naming no option; the error now says which one, and what it needs."""
    with pytest.raises(ConfigError) as err:
        parse_mqtt_url(url, default_node_id="n")
    assert str(err.value) == f"--mqtt-url {named}"
