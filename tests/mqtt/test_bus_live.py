"""`stepaudio-rt serve --mqtt-url` against a real mosquitto: events, node status, commands, last will."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from collections.abc import Callable

import numpy as np
import pytest

from tests.conftest import ServerProcess
from tests.e2e.helpers import RATE, load_pcm24k, open_conversation, silence
from tests.mqtt.helpers import Mosquitto, Received, eventually, publish, retained_session_statuses, watch

pytestmark = pytest.mark.slow

ONE_TURN_VAD = {"type": "server_vad", "silence_duration_ms": 1200, "prefix_padding_ms": 300}
OURS = ("session.opened", "session.closed")  # published by the bus, not sent on the WebSocket


def spoken_turn(wav) -> np.ndarray:  # noqa: ANN001
    """"Ever tried. Ever failed." and the silence that ends the turn."""
    return np.concatenate([silence(0.3), load_pcm24k(wav)[: int(3.5 * RATE)], silence(1.6)])


async def test_node_status_is_retained_online_and_metrics_are_periodic(broker, bus_server) -> None:
    # /healthz turns ready before the bus has connected: wait for it, then subscribe as a latecomer
    await eventually(lambda: bus_server.metrics()["stepaudio_mqtt_connected"] == 1)
    w = await watch(broker.port, "stepaudio/v1/nodes/#")
    try:
        status = await w.wait_for("/status", timeout=10)
        metrics = await w.wait_for("/metrics", timeout=10)
    finally:
        await w.close()
    assert status.retain and status.qos == 1  # a late subscriber still learns the node is up
    body = status.json()
    assert body["status"] == "online" and body["port"] == bus_server.port and body["profile"] == "embedded"
    assert status.topic == f"stepaudio/v1/nodes/{body['node_id']}/status"
    assert metrics.qos == 0 and not metrics.retain
    assert set(metrics.json()) == {  # as the README lists them
        "node_id", "time", "uptime_s", "sessions_live", "sessions_total", "sessions_refused_total", "turns_total",
        "session_tasks", "buffered_audio_seconds", "mqtt_buffered", "mqtt_dropped_total"}
    assert metrics.json()["node_id"] == body["node_id"]


async def test_session_events_topics_qos_and_say_instructions_hangup(broker, bus_server, beckett_wav) -> None:
    w = await watch(broker.port, "stepaudio/v1/sessions/#")
    conv = await open_conversation(bus_server.ws)
    try:
        sid = conv.events[0]["session"]["id"]
        base = f"stepaudio/v1/sessions/{sid}"
        await conv.send({"type": "session.update", "session": {
            "type": "realtime", "max_output_tokens": 16,  # a short reply keeps the test short
                "audio": {"input": {"turn_detection": ONE_TURN_VAD}}}})
        await conv.wait_for("session.updated")
        # 1. A spoken turn.
        await conv.stream(spoken_turn(beckett_wav), pace=1.0)
        turn_done = await conv.wait_for("response.done", timeout=60)
        await w.wait_for(f"{sid}/events/response.done", timeout=10)

        # 2. instructions, then say: the WebSocket client hears what the bus asked for.
        await publish(broker.port, f"{base}/cmd/instructions", json.dumps({"instructions": "Talk like a pirate."}))
        updated = await conv.wait_for("session.updated", timeout=10,
                                      where={"session.instructions": "Talk like a pirate."})
        mark = len(conv.events)
        await publish(broker.port, f"{base}/cmd/say", json.dumps({"text": "The bus says hello."}))
        say_done = await conv.wait_for("response.done", after=mark, timeout=30)

        # 3. hangup closes the WebSocket.
        await publish(broker.port, f"{base}/cmd/hangup", b"")
        await asyncio.wait_for(conv.ws.wait_closed(), 10)
        assert conv.ws.close_code == 1000
        await w.wait_for(f"{sid}/events/session.closed", timeout=10)
    finally:
        await conv.close()
        await w.close()

    assert updated["session"]["instructions"] == "Talk like a pirate."
    said = [e for e in conv.events[mark:] if e["type"] == "response.output_audio_transcript.done"]
    assert [e["transcript"] for e in said] == ["The bus says hello."]
    assert conv.audio_of(say_done["response"]["id"]).size > 0.3 * RATE  # it spoke, with real audio
    assert turn_done["response"]["status"] in ("completed", "incomplete")  # incomplete: cut at the 16 tokens

    mine = [m for m in w.messages if m.topic.startswith(base + "/events/")]
    # Every message is the event named by its topic; the bus keeps the WebSocket's order, minus audio.
    for m in mine:
        assert m.topic == f"{base}/events/{m.json()['type']}" and not m.retain
    sent = [e["type"] for e in conv.events if e["type"] != "response.output_audio.delta"]
    assert [m.json()["type"] for m in mine] == ["session.opened", *sent, "session.closed"]
    qos = {m.json()["type"]: m.qos for m in mine}
    for t in ("session.opened", "session.created", "session.updated", "response.created", "response.done",
              "conversation.item.input_audio_transcription.completed", "response.output_audio_transcript.done",
              "response.output_audio.done", "session.closed"):
        assert qos[t] == 1, t
    for t in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
              "input_audio_buffer.committed", "response.output_audio_transcript.delta", "conversation.item.added"):
        assert qos[t] == 0, t

    # Audio stays off the bus; output_audio.done says how much the client got.
    for done in [m.json() for m in mine if m.topic.endswith("/response.output_audio.done")]:
        deltas = [e for e in conv.of_type("response.output_audio.delta") if e["response_id"] == done["response_id"]]
        assert done["audio_deltas"] == len(deltas) > 0
        assert done["audio_bytes"] == sum(len(base64.b64decode(e["delta"])) for e in deltas)
    heard = [m.json()["transcript"] for m in mine
             if m.topic.endswith("/conversation.item.input_audio_transcription.completed")]
    assert heard == [e["transcript"] for e in conv.of_type("conversation.item.input_audio_transcription.completed")]
    assert "tried" in heard[0].lower()


async def test_bad_commands_are_answered_on_cmd_error_and_change_nothing(broker, bus_server) -> None:
    w = await watch(broker.port, "stepaudio/v1/sessions/+/cmd/error")
    conv = await open_conversation(bus_server.ws)
    try:
        sid = conv.events[0]["session"]["id"]
        base = f"stepaudio/v1/sessions/{sid}/cmd"
        # First a reply on cmd/error, as another node on this broker sends: answering it would start a loop.
        await publish(broker.port, f"{base}/error", json.dumps({"topic": f"{base}/say", "error": "elsewhere"}))
        bad = [(f"{base}/reboot", b"{}"), (f"{base}/Say", b'{"text": "hi"}'), (f"{base}/say/now", b'{"text": "hi"}'),
               (f"{base}/say", b"not json"), (f"{base}/say", b'{"text": 5}'), (f"{base}/say", b"[1]"),
               (f"{base}/instructions", b"{}"), (f"{base}/hangup", b"\xff\xfe"),
               ("stepaudio/v1/sessions/sess_nope/cmd/hangup", b"{}")]
        for topic, payload in bad:
            await publish(broker.port, topic, payload)
        for _ in range(200):
            if len(w.messages) >= len(bad) + 1:  # + the reply from "elsewhere"
                break
            await asyncio.sleep(0.05)
        # the session is untouched and still answers
        await conv.send({"type": "session.update", "session": {"type": "realtime", "instructions": "still here"}})
        ok = await conv.wait_for("session.updated", where={"session.instructions": "still here"}, timeout=10)
    finally:
        await conv.close()
        await w.close()
    assert ok and bus_server.proc.poll() is None
    errors = [m.json() for m in w.messages if m.json()["error"] != "elsewhere"]
    assert [e["topic"] for e in errors] == [t for t, _ in bad]  # one answer each, and none to a reply
    assert all(m.qos == 1 for m in w.messages)
    for m in w.messages:  # each answer is on the cmd/error of the session its command named
        assert m.topic == "/".join(m.json()["topic"].split("/")[:4]) + "/cmd/error"
    assert [e["error"] for e in errors[:3]] == [f"unknown command {name!r}; the commands are say, instructions, hangup"
                                                for name in ("reboot", "Say", "say/now")]
    assert errors[3]["kind"] == "bad_command" and "JSON" in errors[3]["error"]
    assert errors[-2]["kind"] == "bad_command" and errors[-2]["error"].startswith("payload is not UTF-8 text")
    assert errors[-1]["kind"] == "unknown_session" and errors[-1]["error"] == "no session 'sess_nope'"
    assert w.messages[-1].topic == "stepaudio/v1/sessions/sess_nope/cmd/error"
    # the log said `failed: "no session 'sess_nope'"`, the KeyError's repr in quotes: it now says what the bus says
    assert "/sess_nope/cmd/hangup failed: no session 'sess_nope'\n" in bus_server.log()


async def test_last_will_marks_a_killed_node_offline(broker: Mosquitto) -> None:
    server = ServerProcess("--profile", "embedded", "--mqtt-url", f"{broker.url}?node_id=doomed&keepalive=5")
    w = await watch(broker.port, "stepaudio/v1/nodes/doomed/status")

    def status(name: str) -> Callable[[Received], bool]:
        return lambda m: m.json()["status"] == name

    # A node stalled past 1.5 keepalives (here 5 s, two busy cores) is dropped by the broker, its will published, and
    # it says "online" again on reconnecting: the statuses before the kill may be more than the one "online".
    try:
        online = await w.wait_for("/status", timeout=30, where=status("online"))
        server.proc.send_signal(signal.SIGKILL)  # no chance to say goodbye: only the will can
        offline = await w.wait_for("/status", start=w.messages.index(online) + 1, timeout=15, where=status("offline"))
    finally:
        server.stop()
        await w.close()
    assert offline.json() == {"status": "offline", "node_id": "doomed", "reason": "connection lost"}  # the will
    late = await watch(broker.port, "stepaudio/v1/nodes/doomed/status")
    try:
        retained = await late.wait_for("/status", timeout=5)
    finally:
        await late.close()
    assert retained.retain and retained.json()["status"] == "offline"


async def test_say_while_a_reply_plays_is_refused_to_the_operator_not_the_client(broker, bus_server) -> None:
    w = await watch(broker.port, "stepaudio/v1/sessions/+/cmd/error")
    conv = await open_conversation(bus_server.ws)
    try:
        sid = conv.events[0]["session"]["id"]
        base = f"stepaudio/v1/sessions/{sid}/cmd"
        # ~10 s of speech: output audio is paced in real time, so the reply is still playing when the next say lands
        long_text = "A long announcement from the control room. " * 4
        await publish(broker.port, f"{base}/say", json.dumps({"text": long_text}))
        first = await conv.wait_for("response.created", timeout=30)
        await conv.wait_for("response.output_audio.delta", timeout=30)
        await publish(broker.port, f"{base}/say", json.dumps({"text": "Interrupting you."}))
        refused = await w.wait_for(f"{sid}/cmd/error", timeout=15)
        first_done = await conv.wait_for("response.done", timeout=60)
        mark = len(conv.events)
        await publish(broker.port, f"{base}/say", json.dumps({"text": "Now it is my turn."}))
        await conv.wait_for("response.done", after=mark, timeout=30)
    finally:
        await conv.close()
        await w.close()
    assert refused.qos == 1 and refused.json() == {
        "topic": f"{base}/say", "kind": "conversation_already_has_active_response",
        "payload": '{"text": "Interrupting you."}',
        "node_id": refused.json()["node_id"],
        "error": "A response is already in progress; say again after its response.done."}
    assert first_done["response"]["id"] == first["response"]["id"]
    assert conv.of_type("error") == []  # the client asked for nothing and is told nothing
    said = [e["transcript"] for e in conv.of_type("response.output_audio_transcript.done")]
    assert said[1:] == ["Now it is my turn."]  # the refusal left nothing behind for the next reply


async def test_a_transcription_session_refuses_say_and_instructions(broker, bus_server) -> None:
    w = await watch(broker.port, "stepaudio/v1/sessions/+/cmd/error")
    conv = await open_conversation(bus_server.ws + "?intent=transcription")
    try:
        sid = conv.events[0]["session"]["id"]
        base = f"stepaudio/v1/sessions/{sid}/cmd"
        await publish(broker.port, f"{base}/say", json.dumps({"text": "Hello."}))
        await publish(broker.port, f"{base}/instructions", json.dumps({"instructions": "Talk like a pirate."}))
        await eventually(lambda: len(w.messages) >= 2, timeout=15)
        # the session still transcribes: a transcription session accepts its own kind of update
        await conv.send({"type": "session.update", "session": {"type": "transcription"}})
        await conv.wait_for("session.updated", timeout=10)
    finally:
        await conv.close()
        await w.close()
    assert [(m.json()["topic"], m.json()["error"]) for m in w.messages] == [
        (f"{base}/say", "A transcription session has no responses: it only transcribes the input audio."),
        (f"{base}/instructions", "A transcription session has no instructions: it only transcribes the input audio.")]
    assert {m.json()["kind"] for m in w.messages} == {"unsupported_in_transcription_session"}
    assert [e["type"] for e in conv.events] == ["session.created", "session.updated"]  # no reply, nothing else


async def test_two_nodes_share_a_broker_without_cross_answers_or_ghost_sessions(broker, bus_server) -> None:
    other = ServerProcess("--profile", "embedded", "--mqtt-url", f"{broker.url}?node_id=other&keepalive=2")
    errors = await watch(broker.port, "stepaudio/v1/sessions/+/cmd/error")
    statuses = await watch(broker.port, "stepaudio/v1/sessions/+/status")
    try:
        ours = await open_conversation(bus_server.ws)
        theirs = await open_conversation(other.ws)
        sid, other_sid = ours.events[0]["session"]["id"], theirs.events[0]["session"]["id"]
        await statuses.wait_for(f"{other_sid}/status", timeout=10)
        live = await retained_session_statuses(broker.port)
        first_node = live[sid]["node_id"]
        assert live[other_sid]["node_id"] == "other" != first_node
        assert live[sid] == {"status": "live", "session_id": sid, "node_id": first_node, "time": live[sid]["time"]}

        # A good command and a bad one for the other node's session; then one for a session nobody has, which
        # both nodes answer: once those two answers are in, anything the first node had to say about the
        # other's session would be in too.
        base = f"stepaudio/v1/sessions/{other_sid}/cmd"
        await publish(broker.port, f"{base}/instructions", json.dumps({"instructions": "From the bus."}))
        await theirs.wait_for("session.updated", where={"session.instructions": "From the bus."}, timeout=10)
        await publish(broker.port, f"{base}/say", b'{"text": 5}')
        await publish(broker.port, "stepaudio/v1/sessions/sess_nobody/cmd/hangup", b"{}")
        await eventually(lambda: len(errors.on("sess_nobody/cmd/error")) == 2, timeout=15)
        nobody = "stepaudio/v1/sessions/sess_nobody/cmd/hangup"
        # the owner alone answers for its session
        assert sorted((m.json()["node_id"], m.json()["topic"]) for m in errors.messages) == sorted(
            [("other", f"{base}/say"), ("other", nobody), (first_node, nobody)])

        # The other node is killed: its will marks it offline, and the first node clears its session's status.
        other.proc.send_signal(signal.SIGKILL)
        cleared = await statuses.wait_for(f"{other_sid}/status", start=len(statuses.messages), timeout=30)
        assert cleared.payload == b""
        assert set(await retained_session_statuses(broker.port)) == {sid}
        await ours.close()
        await theirs.close()
        await eventually(lambda: statuses.on(f"{sid}/status")[-1].payload == b"", timeout=15)
        assert await retained_session_statuses(broker.port) == {}  # no ghost for a dashboard opened now
    finally:
        other.stop()
        await errors.close()
        await statuses.close()


async def test_the_node_status_says_loading_while_the_models_load(broker, monkeypatch) -> None:
    """The bus connected only once the models had loaded (minutes with the real checkpoints): till then a dashboard
    saw nothing of the node, or its previous run's "offline". It now says "loading", then "online" when ready."""
    import threading

    from controller import app as app_module
    from controller.app import App, AppConfig
    from controller.server import ServerConfig
    from tests.controller.scripted_pipeline import ScriptedPipeline

    release = threading.Event()

    def slow_load(config: AppConfig, cancel: threading.Event) -> ScriptedPipeline:
        release.wait(60)
        return ScriptedPipeline()

    monkeypatch.setattr(app_module, "load_pipeline", slow_load)
    app = App(AppConfig(server=ServerConfig(port=0), mqtt_url=f"{broker.url}?node_id=loading-node"))
    w = await watch(broker.port, "stepaudio/v1/nodes/loading-node/status")
    starting = asyncio.create_task(app.start())
    try:
        loading = await w.wait_for("/status", timeout=30)
        assert loading.json()["status"] == "loading", loading.json()
        assert loading.json()["port"] == app.server.port and not app.server.ready
        release.set()
        await asyncio.wait_for(starting, 60)
        online = await w.wait_for("/status", timeout=30, start=w.messages.index(loading) + 1)
        assert online.json()["status"] == "online", online.json()
    finally:
        release.set()
        await asyncio.gather(starting, return_exceptions=True)
        await app.close()
        await w.close()
