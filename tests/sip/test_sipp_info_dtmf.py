"""Key presses sent in SIP INFO (sipp against the bridge CLI, a real agent server behind it, watched on MQTT).

PBXs send INFO DTMF in two bodies: application/dtmf-relay ("Signal=5") and application/dtmf (just "5"). Both must
reach the agent as RTP DTMF does: a user item "DTMF <key>" in its conversation, and the key in the call log.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.server import ServerConnection

from tests.conftest import ServerProcess
from tests.mqtt.helpers import Mosquitto
from tests.sip.media import free_udp_port, wait_for
from tests.sip.peers import LISTEN_FOR_REPLY, BridgeProcess, Capture, agent_replied, call_until_replied, need, \
    sipp_call
from tests.sip.sipp_scenario import expect, request, scenario, sdp
from tests.ws_thread import ws_server_thread

pytestmark = pytest.mark.slow


@pytest.fixture
def bus_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    """An agent server that mirrors its sessions' events to mosquitto, and the file mosquitto_sub writes them to."""
    need("mosquitto_sub")
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    events = tmp_path / "events.txt"
    with open(events, "wb") as out:
        sub = subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-v", "-t",
                                "stepaudio/v1/sessions/+/events/#"], stdout=out)
        server = ServerProcess("--profile", "embedded", "--mqtt-url", broker.url)
        try:
            yield server, events
        finally:
            server.stop()
            sub.terminate()
            sub.wait(10)
            broker.stop()


def user_texts(events: Path, session_id: str) -> list[str]:
    """The text of each user item the agent server added to `session_id`'s conversation, in order."""
    texts = []
    for line in events.read_text(errors="replace").splitlines():
        topic, _, payload = line.partition(" ")
        if topic == f"stepaudio/v1/sessions/{session_id}/events/conversation.item.added":
            item = json.loads(payload)["item"]
            if item.get("role") == "user":
                texts += [c.get("text") for c in item.get("content", []) if c.get("type") == "input_text"]
    return texts


def test_info_dtmf_in_either_body_reaches_the_agent(bus_server: tuple[ServerProcess, Path], tmp_path: Path) -> None:
    """A "5" in an application/dtmf INFO (the bridge answered 200 and dropped it) and a "#" in an
    application/dtmf-relay one both become "DTMF <key>" items of the agent's conversation and call log entries;
    a body that is no key gets 400 and reaches nobody."""
    need("sipp")
    server, events = bus_server
    bridge = BridgeProcess(server.ws, tmp_path)
    calls = sipp_call(bridge, tmp_path, scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0 101", "a=rtpmap:101 telephone-event/8000")),
            expect(200), request("ACK", 1, in_dialog=True),
            request("INFO", 2, in_dialog=True, body="5", content_type="application/dtmf"), expect(200, optional=()),
            request("INFO", 3, in_dialog=True, body="Signal=#\nDuration=160\n", content_type="application/dtmf-relay"),
            expect(200, optional=()),
            request("INFO", 4, in_dialog=True, body="call me back", content_type="application/dtmf"),
            expect(400, optional=()),
            '<pause milliseconds="1000"/>\n',
            request("BYE", 5, in_dialog=True), expect(200, optional=())))
    assert len(calls) == 1 and calls[0]["dtmf"] == ["5", "#"], calls
    session_id = calls[0]["agent_session_id"]
    assert session_id, calls
    assert wait_for(lambda: user_texts(events, session_id) == ["DTMF 5", "DTMF #"], 10), \
        (user_texts(events, session_id), server.log())


def test_the_agent_answers_a_key_press(embedded_server, tmp_path: Path) -> None:
    """A caller who presses a key (the menu choice the agent asked for) hears the agent answer, without saying a
    word: the key press is the caller's turn."""
    need("sipp", "tshark")
    media_port = free_udp_port()
    bridge = BridgeProcess(embedded_server.ws, tmp_path, "--rtp-timeout", "0",  # the caller sends no RTP
                           "--instructions", "You are on the phone. Answer in one short sentence.")
    capture = Capture(tmp_path / "rtp.pcap", media_port)
    try:
        code, errors = call_until_replied(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0 101", "a=rtpmap:101 telephone-event/8000")),
            expect(200), request("ACK", 1, in_dialog=True),
            request("INFO", 2, in_dialog=True, body="Signal=1\nDuration=160\n", content_type="application/dtmf-relay"),
            expect(200, optional=()), LISTEN_FOR_REPLY,
            request("BYE", 3, in_dialog=True), expect(200, optional=())), bridge, tmp_path,
            lambda: agent_replied(bridge, tmp_path / "rtp.pcap", media_port), media_port=media_port)
        calls = wait_for(bridge.calls, 10)
    finally:
        capture.stop()
        bridge.stop()
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert calls[0]["dtmf"] == ["1"] and calls[0]["agent_transcripts"], calls
    assert agent_replied(bridge, tmp_path / "rtp.pcap", media_port), bridge.log()


def test_keys_sent_in_info_while_the_call_rings_reach_the_agent_once_it_answers(tmp_path: Path) -> None:
    """RFC 6086 (legacy INFO usage) in the early dialog of our 180 (its To tag): the bridge answers 200, so the
    keys are taken. An agent server slow to accept the session (3 s) keeps the call ringing; the keys the caller
    pressed meanwhile reach the agent, in order, once the call is answered (they were in the call log only)."""
    need("sipp")
    texts: list[str] = []

    def agent(ws: ServerConnection) -> None:
        ws.send(json.dumps({"type": "session.created", "event_id": "e1", "session": {"id": "sess_1"}}))
        for raw in ws:
            event = json.loads(raw)
            if event.get("type") == "conversation.item.create":
                texts.extend(c.get("text") for c in event["item"]["content"])

    with ws_server_thread(agent, process_request=lambda conn, request: time.sleep(3)) as port:
        bridge = BridgeProcess(f"ws://127.0.0.1:{port}/v1/realtime", tmp_path, "--rtp-timeout", "0")
        ringing = '<recv response="100" optional="true"/>\n<recv response="180"/>\n'
        calls = sipp_call(bridge, tmp_path, scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0 101", "a=rtpmap:101 telephone-event/8000")), ringing,
            request("INFO", 2, in_dialog=True, body="4", content_type="application/dtmf"), expect(200, optional=()),
            request("INFO", 3, in_dialog=True, body="Signal=2\n", content_type="application/dtmf-relay"),
            expect(200, optional=()),
            expect(200, optional=(180,)), request("ACK", 1, in_dialog=True), '<pause milliseconds="1500"/>\n',
            request("BYE", 4, in_dialog=True), expect(200, optional=())))
    assert calls[0]["dtmf"] == ["4", "2"], calls
    assert texts == ["DTMF 4", "DTMF 2"], (texts, bridge.log())


# A SIP-T gateway's INFO: the key press beside the ISUP it carries
MULTIPART_DTMF = ("--b1\nContent-Type: application/dtmf-relay\n\nSignal=3\n--b1\nContent-Type: application/isup\n\n"
                  "x\n--b1--\n")


def test_an_info_body_of_a_type_the_bridge_cannot_read_gets_415_with_accept(embedded_server, tmp_path: Path) -> None:
    """RFC 3261 8.2.3: a key press sent in an INFO body of a type the bridge does not read (a vendor's
    application/vnd.nortelnetworks.digits) was answered 200 and dropped, so the sender took it for delivered. It
    gets 415 with the Accept of the types an INFO is read in (a sender can fall back to one): the DTMF types, not
    the multipart/mixed a SIP-T gateway's INFO came in, which that Accept named as well; an optional body
    (Content-Disposition handling=optional) and an INFO without a body still get 200, and the call goes on."""
    need("sipp")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    calls = sipp_call(bridge, tmp_path, scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(200), request("ACK", 1, in_dialog=True),
            request("INFO", 2, in_dialog=True, body="d=5\n", content_type="application/vnd.nortelnetworks.digits"),
            expect(415, optional=(), match="^ *application/dtmf-relay, application/dtmf *$", header="Accept"),
            request("INFO", 3, in_dialog=True, body=MULTIPART_DTMF, content_type="multipart/mixed;boundary=b1"),
            expect(415, optional=(), match="^ *application/dtmf-relay, application/dtmf *$", header="Accept"),
            request("INFO", 4, in_dialog=True, body="<x/>\n", content_type="application/media_control+xml",
                    headers="Content-Disposition: signal;handling=optional\n"), expect(200, optional=()),
            request("INFO", 5, in_dialog=True), expect(200, optional=()),
            request("INFO", 6, in_dialog=True, body="Signal=5\nDuration=160\n", content_type="application/dtmf-relay"),
            expect(200, optional=()),
            request("BYE", 7, in_dialog=True), expect(200, optional=())))
    assert [(c["end_reason"], c["dtmf"]) for c in calls] == [("remote hangup", ["5"])], bridge.log()


def test_an_info_whose_dtmf_body_names_no_key_gets_400_and_one_after_the_bye_481(tmp_path: Path) -> None:
    """A key press in a DTMF body that names no key (Signal=Z, or a dtmf-relay body without Signal) was answered
    200 and dropped, so the sender took it for delivered; it gets 400 with a Warning saying why (RFC 3261 21.4.1),
    and the call goes on. A hook flash (Signal=!) is read and is no key: 200. An INFO after the BYE gets 481 (12.2.2:
    no such dialog), whatever its body. The agent server takes the session and says nothing."""
    need("sipp")

    def agent(ws: ServerConnection) -> None:
        for _ in ws:
            pass

    def info(cseq: int, body: str, ctype: str = "application/dtmf-relay") -> str:
        return request("INFO", cseq, in_dialog=True, body=body, content_type=ctype)

    with ws_server_thread(agent) as port:
        bridge = BridgeProcess(f"ws://127.0.0.1:{port}/v1/realtime", tmp_path, "--rtp-timeout", "0")
        calls = sipp_call(bridge, tmp_path, scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(200), request("ACK", 1, in_dialog=True),
            info(2, "Signal=Z\nDuration=160\n"),
            expect(400, optional=(), match="^ *399 [^ ]+ \"application/dtmf-relay body: 'Z' is no key\"$",
                   header="Warning"),
            info(3, "Duration=160\n"),
            expect(400, optional=(), match="application/dtmf-relay body without Signal", header="Warning"),
            info(4, "hello", "application/dtmf"), expect(400, optional=()),
            info(5, "Signal=!\nDuration=100\n"), expect(200, optional=()),
            info(6, "Signal=5\nDuration=160\n"), expect(200, optional=()),
            request("BYE", 7, in_dialog=True), expect(200, optional=()),
            info(8, "Signal=6\n"), expect(481, optional=())))
    assert [(c["end_reason"], c["dtmf"]) for c in calls] == [("remote hangup", ["5"])], bridge.log()
