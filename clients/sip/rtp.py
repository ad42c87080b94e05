"""RTP (RFC 3550) packets, our outbound G.711 stream, and RFC 4733 DTMF events. Pure: no sockets, no clock.

Rules:
- `RtpPacket.parse` accepts version 2 only, skips CSRCs and a header extension (5.3.1) and strips padding (5.1);
  anything shorter than its own header fields claim raises RemoteProtocolError.
- `OutboundStream` is our sender: random initial sequence number, timestamp and SSRC (5.1, from the Rng it is
  given), 160-sample (20 ms) frames at 8 kHz. The caller calls `tick()` once per 20 ms slot; the timestamp advances
  by one frame every slot, sent or not (silence suppression), and the first packet after an idle slot carries the
  marker bit (start of a talkspurt, RFC 3551 4.1). `tick(fill=True)` sends silence in idle slots instead: the
  bridge's stream is continuous, because PBXs and SBCs hang up a call whose RTP stops (Asterisk rtp_timeout,
  FreeSWITCH media_timeout) and a far end that latches to our source (symmetric RTP, comedia; a bridge behind
  NAT) learns where to send the caller's audio only from our first packet. Queued audio is bounded; past the
  bound the oldest audio is dropped and counted.
- `is_rtcp` tells RTCP from RTP on one port by the second octet (RFC 5761 4: 192-223, RTCP's packet types, read
  as RTP are payload types 64-95 with the marker bit: no static mapping, 72-76 reserved for this). The bridge
  sends no RTCP and binds no RTCP port; what reaches an RTP port anyway (a muxing peer's) carries no audio and no
  stranger's RTP.
- Our RTP ports are even (`rtp_ports`), RFC 3550 11: a caller sends its RTCP to the odd port above, which is then
  no other call's RTP port.
- `DtmfReceiver` turns RFC 4733 telephone-event packets into digits: one event is identified by its RTP timestamp;
  the digit is reported once, on the first packet with the End bit (the end packet is sent three times, 2.5.1.4),
  or when a new event starts before an end was seen (the end packets were lost). Only key presses are reported
  (0-9 * # A-D, events 0-15): a hook flash (16) or a tone of RFC 4734 (a fax's CNG, 36) is no key, and as text in
  the agent's conversation ("DTMF event-36") it drew a reply, as an INFO's non-keys would (body.py drops those).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

from clients.sip.errors import RemoteProtocolError

__all__ = ["DtmfDigit", "DtmfReceiver", "OutboundStream", "RtpPacket", "TelephoneEvent", "is_rtcp", "rtp_ports"]

FRAME_SAMPLES = 160  # 20 ms at 8 kHz, one byte per sample for G.711
_HEADER = struct.Struct("!BBHII")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not (0 <= self.payload_type < 128 and 0 <= self.sequence < 2**16 and 0 <= self.timestamp < 2**32
                and 0 <= self.ssrc < 2**32 and len(self.csrcs) < 16):
            raise ValueError("RTP header field out of range")

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < 12:
            raise RemoteProtocolError("RTP packet shorter than 12 bytes")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        if b0 >> 6 != 2:
            raise RemoteProtocolError(f"RTP version {b0 >> 6}")
        cc = b0 & 0x0F
        offset = 12 + 4 * cc
        if len(data) < offset:
            raise RemoteProtocolError("RTP CSRC list truncated")
        csrcs = struct.unpack_from(f"!{cc}I", data, 12)
        if b0 & 0x10:  # header extension: 16-bit profile, 16-bit length in 32-bit words
            if len(data) < offset + 4:
                raise RemoteProtocolError("RTP extension truncated")
            (words,) = struct.unpack_from("!H", data, offset + 2)
            offset += 4 + 4 * words
        end = len(data)
        if b0 & 0x20:  # padding: the last byte counts the padding bytes, itself included
            pad = data[-1]
            if pad == 0 or offset + pad > end:
                raise RemoteProtocolError("bad RTP padding")
            end -= pad
        if offset > end:
            raise RemoteProtocolError("RTP header longer than the packet")
        return cls(b1 & 0x7F, seq, ts, ssrc, bytes(data[offset:end]), bool(b1 & 0x80), tuple(csrcs))

    def serialize(self) -> bytes:
        b0 = 0x80 | len(self.csrcs)
        b1 = (0x80 if self.marker else 0) | self.payload_type
        head = _HEADER.pack(b0, b1, self.sequence, self.timestamp, self.ssrc)
        return head + b"".join(struct.pack("!I", c) for c in self.csrcs) + self.payload


def is_rtcp(data: bytes) -> bool:
    """Whether a datagram on an RTP port is an RTCP packet (version 2, packet type 192-223; RFC 5761 4)."""
    return len(data) >= 2 and data[0] >> 6 == 2 and 192 <= data[1] <= 223


def rtp_ports(low: int, high: int) -> range:
    """The RTP ports of the range `low`-`high` (inclusive): its even ports whose odd neighbour, the RTCP port (RFC
    3550 11), is in the range too; so a range holds half as many calls as ports."""
    return range(low + low % 2, high, 2)


class OutboundStream:
    """Our RTP sender for one call: a bounded queue of G.711 bytes cut into 20 ms packets, one per tick."""

    def __init__(self, payload_type: int, silence_byte: int, rng: random.Random, *,
                 max_queue_bytes: int = 8000 * 60) -> None:
        self.payload_type = payload_type
        self.silence_byte = silence_byte
        self.ssrc = rng.getrandbits(32)
        self.sequence = rng.getrandbits(16)
        self.timestamp = rng.getrandbits(32)
        self.max_queue_bytes = max_queue_bytes
        self.packets_sent = 0
        self.bytes_sent = 0
        self.bytes_dropped = 0
        self._queue = bytearray()
        self._finished = False  # the current utterance is complete: pad its last partial frame
        self._talking = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    def push(self, audio: bytes) -> None:
        """Queue G.711 bytes to send; past the bound the oldest bytes are dropped (and counted)."""
        self._queue += audio
        self._finished = False
        over = len(self._queue) - self.max_queue_bytes
        if over > 0:
            del self._queue[:over]
            self.bytes_dropped += over

    def finish(self) -> None:
        """The audio queued so far is a whole utterance: its last partial frame goes out padded with silence."""
        self._finished = True

    def flush(self) -> int:
        """Drop everything queued (barge-in); returns how many bytes were dropped."""
        n = len(self._queue)
        self._queue.clear()
        self._finished = False
        return n

    def tick(self, *, fill: bool = False) -> bytes | None:
        """One 20 ms slot: the serialized packet to send, or None (idle; the timestamp still advances). With
        `fill`, an idle slot gives a packet of silence instead (a continuous stream, see the module rules)."""
        if len(self._queue) >= FRAME_SAMPLES or (self._queue and self._finished):
            payload = bytes(self._queue[:FRAME_SAMPLES]).ljust(FRAME_SAMPLES, bytes([self.silence_byte]))
            del self._queue[:FRAME_SAMPLES]
            packet: bytes | None = self._packet(payload, marker=not self._talking)
            self._talking = True
        else:
            # the stream's first packet is marked even when it is silence (its start, as RFC 3551 4.1's talkspurts)
            packet = self._packet(bytes([self.silence_byte]) * FRAME_SAMPLES, marker=self.packets_sent == 0) \
                if fill else None
            self._talking = False
        self.timestamp = (self.timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
        return packet

    def hold(self) -> None:
        """A 20 ms slot in which nothing may be sent (the caller holds the call): the agent's queued audio waits for
        the resume rather than being lost unheard (it played on, into nothing, while its transcript said it was
        said). The timestamp follows the clock; the sequence does not move, since no packet is lost; the resumed
        audio is a new talkspurt (marked)."""
        self._talking = False
        self.timestamp = (self.timestamp + FRAME_SAMPLES) & 0xFFFFFFFF

    def _packet(self, payload: bytes, *, marker: bool) -> bytes:
        packet = RtpPacket(self.payload_type, self.sequence, self.timestamp, self.ssrc, payload,
                           marker=marker).serialize()
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packets_sent += 1
        self.bytes_sent += len(payload)
        return packet


_DIGITS = "0123456789*#ABCD"


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """An RFC 4733 2.3 payload: event, End bit, volume (-dBm0), duration in timestamp units."""

    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        if len(payload) < 4:
            raise RemoteProtocolError("telephone-event payload shorter than 4 bytes")
        event, flags, duration = struct.unpack_from("!BBH", payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def serialize(self) -> bytes:
        return struct.pack("!BBH", self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration)

    @property
    def digit(self) -> str | None:
        """"0"-"9", "*", "#", "A"-"D"; None for an event that is no key (flash, a tone)."""
        return _DIGITS[self.event] if self.event < len(_DIGITS) else None


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    digit: str
    duration_ms: int


class DtmfReceiver:
    """Reports each telephone-event once (see the module rules)."""

    def __init__(self) -> None:
        self._current: tuple[int, TelephoneEvent] | None = None  # (rtp timestamp, last payload) of an open event
        self._done: set[int] = set()  # timestamps already reported (end retransmissions are ignored)

    def feed(self, packet: RtpPacket) -> list[DtmfDigit]:
        """One telephone-event packet; returns the key presses it ended."""
        ev = TelephoneEvent.parse(packet.payload)
        ended: list[TelephoneEvent] = []
        ts = packet.timestamp
        if ts in self._done:
            return []
        if self._current is not None and self._current[0] != ts:  # a new event: the old one lost its end
            ended.append(self._current[1])
            self._done.add(self._current[0])
        if ev.end:
            ended.append(ev)
            self._done.add(ts)
            self._current = None
        else:
            self._current = (ts, ev)
        if len(self._done) > 64:  # bounded memory: keep the recent events only
            self._done = set(sorted(self._done)[-32:])
        return [DtmfDigit(key, e.duration // 8) for e in ended if (key := e.digit) is not None]
