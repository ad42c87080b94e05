"""sipp drives calls beyond the plain one through the bridge CLI, with a real agent server behind it.

Each scenario is one sipp UAC call; sipp exits 0 only when every expected response came, in order.
"""

from __future__ import annotations

import random
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clients.sip.rtp import RtpPacket, TelephoneEvent
from tests.conftest import ServerProcess
from tests.sip.media import decode, free_udp_port, heard_beckett, peak_rms_dbfs, read_pcap_udp, ulaw_speech, wait_for, \
    write_rtp_pcap
from tests.sip.peers import LISTEN_FOR_REPLY, BridgeProcess, Capture, agent_replied, call_until_replied, need, \
    run_sipp, sipp_call
from tests.sip.sipp_scenario import ereg, expect, request, scenario, sdp

pytestmark = pytest.mark.slow


def answered(method: str, status: str = "200 OK", *, reason: str | None = None) -> str:
    """Scenario steps: the caller waits for our `method` request and answers it `status`; `reason`: a regular
    expression the request's Reason header must match, or sipp fails the call."""
    check, used = ereg(reason, "Reason")
    return (f'<recv request="{method}" timeout="20000">{check}</recv>\n{used}<send><![CDATA[\nSIP/2.0 {status}\n'
            '[last_Via:]\n[last_From:]\n[last_To:]\n[last_Call-ID:]\n[last_CSeq:]\nContent-Length: 0\n\n]]></send>\n')


BYE_IN = answered("BYE")
# Held and silent past --hold-keepalive: the bridge asks whether the caller is still there (an in-dialog OPTIONS), the
# caller answers, and the call stays up a while more (less than the next question's timeout).
HELD_AND_ASKED = answered("OPTIONS") + '<pause milliseconds="1000"/>\n'


def phone_bridge(server_ws: str, workdir: Path) -> BridgeProcess:
    """A bridge set up for a spoken call: the caller's turn ends after 1 s of silence, the agent answers briefly."""
    return BridgeProcess(server_ws, workdir, "--silence-ms", "1000",
                         "--instructions", "You are on the phone. Answer in one short sentence.")


def speak_beckett(beckett_wav: Path, workdir: Path, media_port: int, then: str = LISTEN_FOR_REPLY) -> str:
    """Scenario steps: the caller says "Ever tried. Ever failed. No matter." from media_port (sipp's pcap player),
    then listens: by default until the test says the agent's reply came (call_until_replied)."""
    speech = ulaw_speech(beckett_wav, workdir / "beckett", lead_s=0.3, tail_s=0.2, seconds=2.9)
    seconds = write_rtp_pcap(workdir / "beckett.pcap", speech, src_port=media_port)
    return (f'<nop><action><exec play_pcap_audio="{workdir / "beckett.pcap"}"/></action></nop>\n'
            f'<pause milliseconds="{int(seconds * 1000)}"/>\n{then}')


def assert_reply_heard_at(pcap: Path, port: int, bridge: BridgeProcess) -> None:
    """The agent's RTP reached `port` and is speech, not silence."""
    ours = [RtpPacket.parse(p) for _, dport, p in read_pcap_udp(pcap) if dport == port]
    assert ours, f"no RTP reached port {port}\n{bridge.log()}"
    assert peak_rms_dbfs(decode(b"".join(p.payload for p in ours), "PCMU")) > -35.0


def assert_spoken_call(sipp: tuple[int, str], calls: list[dict], bridge: BridgeProcess, pcap: Path,
                       port: int) -> None:
    """sipp's call went as scripted and was hung up by the caller, the agent heard Beckett, and its reply reached
    `port`."""
    code, errors = sipp
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert [c["end_reason"] for c in calls] == ["remote hangup"]
    assert heard_beckett(calls[0]["user_transcripts"]), calls
    assert_reply_heard_at(pcap, port, bridge)


def test_retry_with_other_codecs_after_488_is_answered(embedded_server, tmp_path: Path) -> None:
    """RFC 3261 8.1.3.5: after 488 the caller retries in the same Call-ID with CSeq + 1 and PCMU: a new call."""
    need("sipp")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    calls = sipp_call(bridge, tmp_path, scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("18", "a=rtpmap:18 G729/8000")), expect(488),
            request("ACK", 1, in_dialog=True),
            request("INVITE", 2, in_dialog=False, body=sdp("0")), expect(200),
            request("ACK", 2, in_dialog=True),
            request("BYE", 3, in_dialog=True), expect(200, optional=())))
    assert [(c["codec"], c["end_reason"]) for c in calls] == [
        ("", "refused 488: no PCMU/PCMA audio stream in the offer"), ("PCMU", "remote hangup")]


def test_hold_resume_and_moved_media_by_reinvite(embedded_server, beckett_wav: Path, tmp_path: Path) -> None:
    """RFC 3261 14.2, RFC 3264 8.4: the caller puts the agent on hold (a=sendonly; answered a=recvonly), resumes
    with its media moved to another port (a PBX re-anchoring it, say), then speaks from there: the agent's reply
    arrives at the new port."""
    need("sipp", "sox", "tshark")
    first_port, moved_port = free_udp_port(), free_udp_port()  # sipp's own media port is the moved one
    speak = speak_beckett(beckett_wav, tmp_path, moved_port)
    bridge = phone_bridge(embedded_server.ws, tmp_path)
    capture = Capture(tmp_path / "moved.pcap", moved_port)
    try:
        code, errors = call_until_replied(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0", port=str(first_port))), expect(200),
            request("ACK", 1, in_dialog=True),
            request("INVITE", 2, in_dialog=True, body=sdp("0", "a=sendonly", port=str(first_port), version=2)),
            expect(200, optional=(100,), match="a=recvonly"),
            request("ACK", 2, in_dialog=True),
            request("INVITE", 3, in_dialog=True, body=sdp("0", version=3)),
            expect(200, optional=(100,), match="a=sendrecv"),
            request("ACK", 3, in_dialog=True), speak,
            request("BYE", 4, in_dialog=True), expect(200, optional=())),
            bridge, tmp_path, lambda: agent_replied(bridge, tmp_path / "moved.pcap", moved_port), media_port=moved_port)
        calls = wait_for(bridge.calls, 10)
    finally:
        capture.stop()
        bridge.stop()
    assert_spoken_call((code, errors), calls, bridge, tmp_path / "moved.pcap", moved_port)


def test_hold_music_does_not_reach_the_agent(embedded_server, beckett_wav: Path, tmp_path: Path) -> None:
    """A PBX that holds the call (a=sendonly) plays its hold music to us: the agent must not take it for the caller's
    turn and answer it into a held line. Here the 'music' is speech, which the agent would surely answer."""
    need("sipp", "sox", "tshark")
    media_port = free_udp_port()
    bridge = phone_bridge(embedded_server.ws, tmp_path)
    try:
        code, errors = run_sipp(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(200),
            request("ACK", 1, in_dialog=True),
            request("INVITE", 2, in_dialog=True, body=sdp("0", "a=sendonly", version=2)),
            expect(200, optional=(100,), match="a=recvonly"),
            # Listening long enough for a reply (that must not come).
            request("ACK", 2, in_dialog=True),
            speak_beckett(beckett_wav, tmp_path, media_port, then='<pause milliseconds="15000"/>\n'),
            request("BYE", 3, in_dialog=True), expect(200, optional=())),
            bridge.port, tmp_path, media_port=media_port)
        calls = wait_for(bridge.calls, 10)
    finally:
        bridge.stop()
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert calls[0]["end_reason"] == "remote hangup", calls
    assert calls[0]["rtp_in_packets"] > 100 and calls[0]["inbound_on_hold_frames"] > 100, calls
    assert calls[0]["user_transcripts"] == [] and calls[0]["agent_transcripts"] == [], calls


def test_a_gateways_sip_t_invite_with_sdp_beside_isup_is_answered(embedded_server, tmp_path: Path) -> None:
    """RFC 3204/5621: a PSTN gateway (SIP-T, SIP-I) sends its offer as one part of a multipart/mixed body, beside
    the ISUP message; the bridge answers the SDP part (it had refused the call with 488, "INVITE without SDP")."""
    need("sipp")
    isup = "Content-Type: application/ISUP;version=itu-t92+\nContent-Disposition: signal;handling=optional\n\n"
    body = (f"--unique-boundary-1\nContent-Type: application/sdp\n\n{sdp('8 0')}\n"
            f"--unique-boundary-1\n{isup}0100200a030207\n--unique-boundary-1--\n")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    calls = sipp_call(bridge, tmp_path, scenario(
            request("INVITE", 1, in_dialog=False, body=body,
                    content_type="multipart/mixed;boundary=unique-boundary-1"),
            expect(200, match="m=audio [0-9]+ RTP/AVP 8[^0-9 ]"),
            request("ACK", 1, in_dialog=True),
            request("BYE", 2, in_dialog=True), expect(200, optional=())))
    assert [(c["codec"], c["end_reason"]) for c in calls] == [("PCMA", "remote hangup")]


def test_record_route_reaches_the_caller(embedded_server, tmp_path: Path) -> None:
    """RFC 3261 12.1.1: the 200 OK copies the INVITE's Record-Route, so the caller's ACK and BYE follow the proxy."""
    need("sipp")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    sipp_call(bridge, tmp_path, records=False, scenario=scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0"),
                    headers="Record-Route: <sip:proxy.example;lr;ftag=x>\n"),
            expect(200, match="sip:proxy.example;lr;ftag=x", header="Record-Route"),
            request("ACK", 1, in_dialog=True),
            request("BYE", 2, in_dialog=True), expect(200, optional=())))


def test_a_caller_gone_silent_is_hung_up_by_rtp_timeout(embedded_server, tmp_path: Path) -> None:
    """A caller that vanished without BYE (no RTP for --rtp-timeout) gets our BYE and its agent session closes;
    a call on hold (a=inactive: no RTP expected) is never timed out."""
    need("sipp")
    bridge = BridgeProcess(embedded_server.ws, tmp_path, "--rtp-timeout", "2", "--hold-keepalive", "2")
    calls = sipp_call(bridge, tmp_path, scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0", "a=inactive")), expect(200),
            request("ACK", 1, in_dialog=True),
            HELD_AND_ASKED,  # on hold: longer than the timeout, and still up
            request("INVITE", 2, in_dialog=True, body=sdp("0", version=2)), expect(200, optional=(100,)),
            request("ACK", 2, in_dialog=True), BYE_IN))
    assert [c["end_reason"] for c in calls] == ["RTP timeout"]
    assert wait_for(lambda: embedded_server.metrics()["stepaudio_sessions_live"] == 0, 10)


def test_a_caller_holding_the_call_without_sending_is_not_hung_up(embedded_server, tmp_path: Path) -> None:
    """RFC 3264 8.4 hold, both ways phones do it (a=sendonly, the old c=0.0.0.0), with no hold music: many phones
    send no RTP while holding. The call outlasts --rtp-timeout on hold; after the resume the timeout applies."""
    need("sipp")
    bridge = BridgeProcess(embedded_server.ws, tmp_path, "--rtp-timeout", "2", "--hold-keepalive", "2")
    calls = sipp_call(bridge, tmp_path, scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(200),
            request("ACK", 1, in_dialog=True),
            request("INVITE", 2, in_dialog=True, body=sdp("0", "a=sendonly", version=2)),
            expect(200, optional=(100,), match="a=recvonly"),
            request("ACK", 2, in_dialog=True),
            HELD_AND_ASKED,  # held, silent: longer than the timeout, and still up
            request("INVITE", 3, in_dialog=True, body=sdp("0", version=3, host="IP4 0.0.0.0")),
            expect(200, optional=(100,)),
            request("ACK", 3, in_dialog=True),
            HELD_AND_ASKED,
            request("INVITE", 4, in_dialog=True, body=sdp("0", version=4)), expect(200, optional=(100,)),
            request("ACK", 4, in_dialog=True), BYE_IN))
    assert [c["end_reason"] for c in calls] == ["RTP timeout"]


def test_a_held_caller_that_is_gone_is_hung_up_with_the_rtp_timeout_off(embedded_server, tmp_path: Path) -> None:
    """With --rtp-timeout 0 (a caller may be silent for as long as it likes) the held caller is still asked after
    --hold-keepalive; one whose side of the dialog is gone (481 to our OPTIONS, RFC 3261 12.2.1.2) gets our BYE,
    and its call slot and agent session are freed: with the keep-alive off too, the call had stayed up forever."""
    need("sipp")
    bridge = BridgeProcess(embedded_server.ws, tmp_path, "--rtp-timeout", "0", "--hold-keepalive", "2")
    calls = sipp_call(bridge, tmp_path, scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0", "a=sendonly")), expect(200),
            request("ACK", 1, in_dialog=True),
            answered("OPTIONS", "481 Call/Transaction Does Not Exist"), BYE_IN))
    assert [c["end_reason"] for c in calls] == ["caller gone: 481 to OPTIONS"]
    assert wait_for(lambda: embedded_server.metrics()["stepaudio_sessions_live"] == 0, 10)


def test_the_caller_gets_bye_when_the_agent_session_is_lost(tmp_path: Path) -> None:
    """The agent server goes away mid-call: the caller is not left in a silent call until the RTP timeout but
    gets our BYE (RFC 3261 15), and the call log says why the call ended."""
    need("sipp")
    server = ServerProcess("--profile", "embedded")  # its own: this test stops it
    bridge = BridgeProcess(server.ws, tmp_path)
    outcome: list[tuple[int, str]] = []
    caller = threading.Thread(target=lambda: outcome.append(run_sipp(scenario(
        request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(200),
        request("ACK", 1, in_dialog=True), BYE_IN), bridge.port, tmp_path)))
    try:
        caller.start()
        assert wait_for(lambda: "confirmed (ACK)" in bridge.log(), 20), bridge.log()
        server.stop()
        caller.join()
        calls = wait_for(bridge.calls, 10)
    finally:
        server.stop()
        bridge.stop()
    ((code, errors),) = outcome
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert [c["end_reason"] for c in calls] == ["agent session lost"]


def test_a_call_ended_by_the_bridge_stopping_says_so(embedded_server, tmp_path: Path) -> None:
    """The bridge stops (SIGINT, as systemd's SIGTERM) with a call up: the caller's BYE carries RFC 3326's Reason
    "bridge shutting down" and the call log says the same, where both said "local hangup", as for a call whose
    handling failed, and an operator could not tell a restart from a fault."""
    need("sipp")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    outcome: list[tuple[int, str]] = []
    caller = threading.Thread(target=lambda: outcome.append(run_sipp(scenario(
        request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(200),
        request("ACK", 1, in_dialog=True), answered("BYE", reason="bridge shutting down")), bridge.port,
        tmp_path)))
    try:
        caller.start()
        assert wait_for(lambda: "confirmed (ACK)" in bridge.log(), 20), bridge.log()
        bridge.stop()
        caller.join()
    finally:
        bridge.stop()
    ((code, errors),) = outcome
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert [c["end_reason"] for c in bridge.calls()] == ["bridge shutting down"]


def _session_asked(stalled: socket.socket, held: list[socket.socket]) -> bool:
    """Whether the bridge has asked the stalled agent server for a session (a WebSocket handshake, not its
    /healthz); the connections are accepted, kept open in `held` and never answered."""
    stalled.settimeout(1)
    try:
        conn, _ = stalled.accept()
    except TimeoutError:
        return False
    held.append(conn)
    conn.settimeout(5)
    return b"/v1/realtime" in conn.recv(4096).split(b"\r\n")[0]


def test_a_call_ringing_when_the_bridge_stops_is_refused_as_every_refusal_reads(tmp_path: Path) -> None:
    """The bridge stops while a call rings (its agent session still opening): the caller gets 503 with Retry-After
    (RFC 3261 21.5.4), and the call log and the bridge's log say it was refused, in the form of every other
    refusal ("refused 503: bridge shutting down"), where the call log said "bridge shutting down" as for an
    answered call that the bridge hung up, and the log had no refusal line."""
    need("sipp")
    with socket.socket() as stalled:  # accepts TCP, never answers: the call rings until the bridge stops
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(8)
        bridge = BridgeProcess(f"ws://127.0.0.1:{stalled.getsockname()[1]}/v1/realtime", tmp_path)
        outcome: list[tuple[int, str]] = []
        held: list[socket.socket] = []
        caller = threading.Thread(target=lambda: outcome.append(run_sipp(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(503, match="^ *5 *$", header="Retry-After"),
            request("ACK", 1, in_dialog=True)), bridge.port, tmp_path)))
        try:
            caller.start()
            assert wait_for(lambda: _session_asked(stalled, held), 20), bridge.log()
            bridge.stop()
            caller.join()
        finally:
            bridge.stop()
            for conn in held:
                conn.close()
    ((code, errors),) = outcome
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert [c["end_reason"] for c in bridge.calls()] == ["refused 503: bridge shutting down"]
    assert "refused with 503: bridge shutting down" in bridge.log()

def test_reply_goes_where_the_callers_rtp_comes_from(embedded_server, beckett_wav: Path, tmp_path: Path) -> None:
    """RFC 4961 symmetric RTP: a caller behind a NAT sends from another port than its SDP names; the agent's
    reply must go back to that source, or the caller hears nothing. A packet from a host that is not the caller's,
    sent to the call's RTP port before the caller's first one, must not draw the reply away."""
    need("sipp", "sox", "tshark")
    speech = ulaw_speech(beckett_wav, tmp_path / "beckett", lead_s=0.3, tail_s=0.2, seconds=2.9)
    sdp_port, source_port = free_udp_port(), free_udp_port()
    (tmp_path / "beckett.ul").write_bytes(speech)  # rtp_stream sends from sipp's media socket (-mp)
    seconds = len(speech) / 8000
    bridge = phone_bridge(embedded_server.ws, tmp_path)
    capture = Capture(tmp_path / "source.pcap", source_port)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.2", 0))

    def stranger_first() -> None:
        answered = wait_for(lambda: re.search(r"answered: PCMU -> rtp (\d+)", bridge.log()), 20)
        assert answered, bridge.log()
        stranger.sendto(RtpPacket(0, 1, 0, 0x5EED, b"\xff" * 160).serialize(), ("127.0.0.1", int(answered[1])))

    try:
        code, errors = call_until_replied(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0", port=str(sdp_port))), expect(200),
            request("ACK", 1, in_dialog=True),
            '<pause milliseconds="3000"/>\n',  # the stranger's packet comes first
            f'<nop><action><exec rtp_stream="{tmp_path / "beckett.ul"},1,0"/></action></nop>\n'
            f'<pause milliseconds="{int(seconds * 1000)}"/>\n{LISTEN_FOR_REPLY}',
            request("BYE", 2, in_dialog=True), expect(200, optional=())), bridge, tmp_path,
            lambda: agent_replied(bridge, tmp_path / "source.pcap", source_port), media_port=source_port,
            meanwhile=stranger_first)  # sipp sends from and listens on source_port; its SDP names sdp_port
        calls = wait_for(bridge.calls, 10)
    finally:
        capture.stop()
        bridge.stop()
    stranger.setblocking(False)
    with pytest.raises(BlockingIOError):
        stranger.recv(2048)  # not one packet of the call reached the stranger
    stranger.close()
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert heard_beckett(calls[0]["user_transcripts"]), calls
    assert_reply_heard_at(tmp_path / "source.pcap", source_port, bridge)


def test_a_caller_behind_a_nat_its_proxy_left_alone_is_heard_and_answered(embedded_server, beckett_wav: Path,
                                                                         tmp_path: Path) -> None:
    """A phone behind a home NAT calls through a proxy that relays only SIP: its SDP names its private address
    (10.9.8.7 here, unreachable), and its audio comes from the NAT's public address (127.0.0.3), a host that
    neither the INVITE (from 127.0.0.1) nor the SDP named. The agent must hear it and its reply must go back to
    that source (RFC 7362 latching, as Asterisk and FreeSWITCH do); every packet was dropped as a stranger's."""
    need("sipp", "sox", "tshark")
    speech = ulaw_speech(beckett_wav, tmp_path / "beckett", lead_s=0.3, tail_s=0.2, seconds=2.9)
    (tmp_path / "beckett.ul").write_bytes(speech)
    media_port = free_udp_port()
    bridge = phone_bridge(embedded_server.ws, tmp_path)
    capture = Capture(tmp_path / "nat.pcap", media_port)
    try:
        code, errors = call_until_replied(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0", host="IP4 10.9.8.7", port="40000")), expect(200),
            request("ACK", 1, in_dialog=True),
            f'<nop><action><exec rtp_stream="{tmp_path / "beckett.ul"},1,0"/></action></nop>\n'
            f'<pause milliseconds="{len(speech) // 8}"/>\n{LISTEN_FOR_REPLY}',
            request("BYE", 2, in_dialog=True), expect(200, optional=())), bridge, tmp_path,
            lambda: agent_replied(bridge, tmp_path / "nat.pcap", media_port), media_port=media_port,
            media_ip="127.0.0.3")
        calls = wait_for(bridge.calls, 10)
    finally:
        capture.stop()
        bridge.stop()
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert heard_beckett(calls[0]["user_transcripts"]), calls
    assert calls[0]["media_to"] == f"127.0.0.3:{media_port}", calls
    assert_reply_heard_at(tmp_path / "nat.pcap", media_port, bridge)


def stream_rtp(sock: socket.socket, dest: tuple[str, int], audio: bytes, digit: int) -> None:
    """From `sock`: `audio` as 20 ms PCMU packets in real time, then an RFC 4733 key press of `digit` (PT 101)."""
    ssrc = random.getrandbits(32)
    frames = [audio[i:i + 160] for i in range(0, len(audio) - 159, 160)]
    start = time.monotonic()
    for n, frame in enumerate(frames):
        sock.sendto(RtpPacket(0, n, n * 160, ssrc, frame, marker=n == 0).serialize(), dest)
        time.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))
    key = len(frames) * 160
    for n in range(3):  # the End packet, sent three times (RFC 4733 2.5.1.4)
        event = TelephoneEvent(digit, True, 10, 800).serialize()
        sock.sendto(RtpPacket(101, len(frames) + n, key, ssrc, event).serialize(), dest)


def test_rtp_from_other_sources_never_reaches_the_agent(embedded_server, beckett_wav: Path, two_cities_wav: Path,
                                                        tmp_path: Path) -> None:
    """A call's RTP port is open to anyone (RFC 7362 5, Asterisk's strictrtp). Speech and a key press sent to it
    from a host that is not the caller's, before the caller talks, and from another port of the caller's own host
    while the caller's audio flows from its SDP address, must not reach the agent: it hears (and answers) the
    caller alone, no stranger gets the agent's audio, and the call log counts the dropped packets."""
    need("sipp", "sox")
    caller = ulaw_speech(beckett_wav, tmp_path / "beckett", lead_s=0.3, tail_s=0.2, seconds=2.9)
    (tmp_path / "beckett.ul").write_bytes(caller)
    stranger_speech = ulaw_speech(two_cities_wav, tmp_path / "cities", lead_s=0.0, tail_s=0.0, seconds=3.0)
    bridge = phone_bridge(embedded_server.ws, tmp_path)
    far, near = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far.bind(("127.0.0.2", 0))
    near.bind(("127.0.0.1", 0))  # the caller's host, another port

    def strangers_talk() -> None:
        answered = wait_for(lambda: re.search(r"answered: PCMU -> rtp (\d+)", bridge.log()), 20)
        assert answered, bridge.log()
        port = ("127.0.0.1", int(answered[1]))
        stream_rtp(far, port, stranger_speech, 9)
        time.sleep(2.0)  # the caller's stream began 4 s after the answer; its first 0.3 s are silence
        stream_rtp(near, port, stranger_speech, 7)

    try:
        code, errors = call_until_replied(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0 101", "a=rtpmap:101 telephone-event/8000")),
            expect(200), request("ACK", 1, in_dialog=True),
            '<pause milliseconds="4000"/>\n',  # the first stranger talks alone
            f'<nop><action><exec rtp_stream="{tmp_path / "beckett.ul"},1,0"/></action></nop>\n'
            f'<pause milliseconds="{int(len(caller) / 8)}"/>\n{LISTEN_FOR_REPLY}',
            request("BYE", 2, in_dialog=True), expect(200, optional=())), bridge, tmp_path,
            lambda: "agent said:" in bridge.log_path.read_text(errors="replace"), meanwhile=strangers_talk)
        calls = wait_for(bridge.calls, 10)
    finally:
        bridge.stop()
    for stranger in (far, near):
        stranger.setblocking(False)
        with pytest.raises(BlockingIOError):
            stranger.recv(2048)  # not one packet of the agent's audio went to a stranger
        stranger.close()
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert heard_beckett(calls[0]["user_transcripts"]), calls
    assert "times" not in " ".join(calls[0]["user_transcripts"]).lower(), calls
    assert calls[0]["agent_transcripts"], calls
    assert calls[0]["dtmf"] == [], calls
    assert calls[0]["rtp_in_foreign"] == 2 * (len(stranger_speech) // 160 + 3), calls


def test_listening_on_all_addresses_advertises_a_reachable_one(embedded_server, tmp_path: Path) -> None:
    """--host 0.0.0.0 alone would answer with c=IN IP4 0.0.0.0 (hold, RFC 3264 8.4) and Contact 0.0.0.0: refused
    at start; with --advertise the SDP and Contact name the advertised address."""
    need("sipp")
    refused = subprocess.run([sys.executable, "-m", "clients.sip.cli", "--host", "0.0.0.0", "--port",
                              str(free_udp_port()), "--server-url", embedded_server.ws],
                             capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert refused.returncode == 2 and "advertise" in refused.stderr, refused
    bridge = BridgeProcess(embedded_server.ws, tmp_path, "--host", "0.0.0.0", "--advertise", "127.0.0.1")
    sipp_call(bridge, tmp_path, records=False, scenario=scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(200, match="c=IN IP4 127.0.0.1"),
            request("ACK", 1, in_dialog=True),
            request("BYE", 2, in_dialog=True), expect(200, optional=())))


def test_delayed_offer_call_is_answered_and_heard(embedded_server, beckett_wav: Path, tmp_path: Path) -> None:
    """RFC 3261 13.2.1: an INVITE without SDP (trunks and PBXs send such delayed offers) gets our offer in the
    200 OK; the caller answers in the ACK, speaks, and hears the agent's reply at the port of its answer."""
    need("sipp", "sox", "tshark")
    media_port = free_udp_port()
    speak = speak_beckett(beckett_wav, tmp_path, media_port)
    bridge = phone_bridge(embedded_server.ws, tmp_path)
    capture = Capture(tmp_path / "rtp.pcap", media_port)
    try:
        code, errors = call_until_replied(scenario(
            request("INVITE", 1, in_dialog=False), expect(200, match="m=audio [0-9]+ RTP/AVP 0 101"),
            request("ACK", 1, in_dialog=True, body=sdp("0 101", "a=rtpmap:101 telephone-event/8000")),
            speak, request("BYE", 2, in_dialog=True), expect(200, optional=())),
            bridge, tmp_path, lambda: agent_replied(bridge, tmp_path / "rtp.pcap", media_port), media_port=media_port)
        calls = wait_for(bridge.calls, 10)
    finally:
        capture.stop()
        bridge.stop()
    assert_spoken_call((code, errors), calls, bridge, tmp_path / "rtp.pcap", media_port)


def test_a_media_host_name_is_looked_up_once_and_one_that_cannot_be_is_refused(embedded_server, beckett_wav: Path,
                                                                               tmp_path: Path) -> None:
    """RFC 4566 lets c= name a host. The bridge looks it up before answering (the agent's reply reaches the
    caller, and the call log names the address, not the name: a socket handed the name would look it up on every
    20 ms packet, blocking the bridge); a name that cannot be looked up gets 488, not a call without media."""
    need("sipp", "sox", "tshark")
    media_port = free_udp_port()
    speak = speak_beckett(beckett_wav, tmp_path, media_port)
    bridge = phone_bridge(embedded_server.ws, tmp_path)
    capture = Capture(tmp_path / "rtp.pcap", media_port)
    try:
        unknown, errors_unknown = run_sipp(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0", host="IP4 no-such-host.invalid")), expect(488),
            request("ACK", 1, in_dialog=True)), bridge.port, tmp_path)
        code, errors = call_until_replied(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0", host="IP4 localhost")), expect(200),
            request("ACK", 1, in_dialog=True),
            speak, request("BYE", 2, in_dialog=True), expect(200, optional=())),
            bridge, tmp_path, lambda: agent_replied(bridge, tmp_path / "rtp.pcap", media_port), media_port=media_port)
        calls = wait_for(lambda: [c for c in bridge.calls() if c["end_reason"] == "remote hangup"], 10)
    finally:
        capture.stop()
        bridge.stop()
    assert unknown == 0, f"{errors_unknown}\n{bridge.log()}"
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert calls[0]["media_to"] == f"127.0.0.1:{media_port}", calls
    assert_reply_heard_at(tmp_path / "rtp.pcap", media_port, bridge)
