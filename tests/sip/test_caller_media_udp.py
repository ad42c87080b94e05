"""What a PBX or gateway may send a call's media, as a telephony operator meets it, against a SipBridge on real UDP
sockets with an in-test agent server that records what it hears (tests/sip/udp_agent.py): the caller is plain
sockets, so each packet is exactly as written here."""

from __future__ import annotations

import re
import socket
import struct
import time

from clients.sip.message import Response, parse_message
from tests.sip.udp_agent import Agent, heard_by, run_call, udp

VOICE = 0x11  # the bytes of the caller's "speech"


def request(method: str, bridge_port: int, phone: socket.socket, cseq: int, *, to_tag: str = "",
            body: bytes = b"") -> None:
    local = phone.getsockname()[1]
    head = (f"{method} sip:agent@127.0.0.1:{bridge_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-media-{method}-{cseq}\r\n"
            f"From: <sip:pbx@127.0.0.1:{local}>;tag=pbx\r\nTo: <sip:agent@127.0.0.1:{bridge_port}>{to_tag}\r\n"
            f"Call-ID: media\r\nCSeq: {cseq} {method}\r\nContact: <sip:pbx@127.0.0.1:{local}>\r\n"
            + ("Content-Type: application/sdp\r\n" if body else "") + f"Content-Length: {len(body)}\r\n\r\n")
    phone.sendto(head.encode() + body, ("127.0.0.1", bridge_port))


def final(phone: socket.socket) -> Response:
    phone.settimeout(20)
    while True:
        msg = parse_message(phone.recv(65535))
        if isinstance(msg, Response) and msg.status >= 200:
            return msg


def offer(port: int, version: int, direction: str = "sendrecv") -> bytes:
    """G.722 first, then PCMU; telephone-event as 96; 30 ms packets wanted."""
    return (f"v=0\r\no=pbx 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 9 0 96\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-16\r\na=ptime:30\r\na={direction}\r\n").encode()


def rtp(sequence: int, timestamp: int, payload: bytes, payload_type: int = 0, marker: bool = False) -> bytes:
    """RFC 3550 5.1, 5.3.1 with every optional part: 2 CSRCs, a header extension of 2 words, 3 bytes of padding."""
    head = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 2, (0x80 if marker else 0) | payload_type, sequence,
                       timestamp, 0xCA11) + struct.pack("!II", 7, 8)
    return head + struct.pack("!HH", 0xBEDE, 2) + bytes(8) + payload + b"\x00\x00\x03"


def test_a_pbxs_media_with_every_rtp_option_30_ms_packets_its_own_event_type_and_hold_is_followed() -> None:
    """A PBX offers G.722 first, then PCMU, telephone-event as 96 and a=ptime:30; the bridge answers PCMU and 96.
    The PBX sends 30 ms packets with CSRCs, a header extension and padding (RFC 3550 5.1), the first before its
    ACK: the agent hears every byte, and key 5 sent as event type 96. A re-INVITE holding the call (a=sendonly,
    then a=inactive) is answered recvonly, then inactive, and our RTP stops; the resume (sendrecv) starts it
    again; an UPDATE (not in our Allow) gets 405 with Allow and the call goes on."""
    agent = Agent()
    phone, media = udp("127.0.0.1"), udp("127.0.0.1")
    port = media.getsockname()[1]

    def ours_in_1_s() -> int:
        time.sleep(0.2)  # what was under way when the answer went
        heard_by(media)
        time.sleep(1.0)
        return len(heard_by(media))

    def call(bridge_port: int) -> dict[str, object]:
        seen: dict[str, object] = {}
        request("INVITE", bridge_port, phone, 1, body=offer(port, 1))
        ok = final(phone)
        seen["answer"] = re.findall(r"m=audio \d+ RTP/AVP .*|a=rtpmap:.*", ok.body.decode().replace("\r", ""))
        to_tag = ";tag=" + (ok.headers.get("To") or "").split(";tag=")[1]
        dest = ("127.0.0.1", int(re.findall(rb"m=audio (\d+)", ok.body)[0]))
        sequence = 1000
        for n in range(60):
            if n == 10:  # the first packets before the ACK
                request("ACK", bridge_port, phone, 1, to_tag=to_tag)
            media.sendto(rtp(sequence, n * 240, bytes([VOICE]) * 240), dest)
            sequence += 1
            time.sleep(0.03)
        for n in range(6):  # key 5 (RFC 4733): 3 packets, then the end packet 3 times
            event = struct.pack("!BBH", 5, (0x80 if n >= 3 else 0) | 10, 240 * min(n + 1, 4))
            media.sendto(rtp(sequence, 60 * 240, event, payload_type=96, marker=n == 0), dest)
            sequence += 1
            time.sleep(0.03)
        seen["talking"] = ours_in_1_s()
        for cseq, direction in ((2, "sendonly"), (3, "inactive"), (4, "sendrecv")):
            request("INVITE", bridge_port, phone, cseq, to_tag=to_tag, body=offer(port, cseq, direction))
            answer = final(phone)
            request("ACK", bridge_port, phone, cseq, to_tag=to_tag)
            seen[direction] = (answer.status, re.findall(r"a=(sendrecv|recvonly|sendonly|inactive)",
                                                         answer.body.decode()), ours_in_1_s())
        request("UPDATE", bridge_port, phone, 5, to_tag=to_tag, body=offer(port, 5))
        update = final(phone)
        seen["update"] = (update.status, update.headers.get("Allow"), ours_in_1_s())
        request("BYE", bridge_port, phone, 6, to_tag=to_tag)
        seen["bye"] = final(phone).status
        return seen

    try:
        seen, records = run_call(agent, call)
    finally:
        phone.close()
        media.close()
    assert seen["answer"] == [f"m=audio {seen['answer'][0].split()[1]} RTP/AVP 0 96", "a=rtpmap:0 PCMU/8000",
                              "a=rtpmap:96 telephone-event/8000"], seen
    assert agent.audio.count(VOICE) == 60 * 240, agent.audio.count(VOICE)  # every byte, the first before the ACK
    assert records and records[0].dtmf == ["5"] and records[0].rtp_in_bad == 0, records
    assert seen["talking"] >= 25, seen  # 50 packets of 20 ms a second (slack for a loaded box)
    assert seen["sendonly"][:2] == (200, ["recvonly"]) and seen["sendonly"][2] == 0, seen
    assert seen["inactive"][:2] == (200, ["inactive"]) and seen["inactive"][2] == 0, seen
    assert seen["sendrecv"][:2] == (200, ["sendrecv"]) and seen["sendrecv"][2] >= 25, seen
    assert seen["update"][:2] == (405, "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO") and seen["update"][2] >= 25, seen
    assert seen["bye"] == 200 and records[0].end_reason == "remote hangup", (seen, records)
