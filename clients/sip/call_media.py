"""One call's media, without I/O: the caller's RTP in (source check, jitter buffer, DTMF), ours out, and whether
the caller is still there. The asyncio side (agent_call.py) owns the socket and the 20 ms clock and calls in with
`now` (loop seconds).

- Only RTP from the caller's media source counts (rtp_latch.py); ours goes back there. A packet of the call's
  codec goes to the jitter buffer; any other (DTMF, comfort noise) is skipped there, so that its sequence number
  is no loss, and RFC 4733 events become key presses. A payload type our answer did not name is logged once per
  call: a caller whose offer lacked telephone-event may send key presses as events anyway, and they are lost.
- Each tick sends one packet (silence while the agent is quiet: a continuous stream) unless the call is on hold
  (then the agent's audio waits in its queue, bounded, and plays on when the caller resumes), and moves the
  caller's audio so far to a bounded queue for the agent. While the caller holds the call, what it sends (hold
  music) is dropped there: the agent would take it for a turn.
- Liveness: no RTP for `rtp_timeout_s` while the caller should send and is not holding the call means it is gone.
  A holding caller may rightly send nothing, so instead, after `hold_keepalive_s` without RTP, it is to be asked
  (an in-dialog OPTIONS, once per interval).
"""

from __future__ import annotations

import enum
import logging
import random

from clients.sip.addresses import Addr
from clients.sip.bridge_config import BridgeConfig
from clients.sip.call_record import CallRecord
from clients.sip.errors import RemoteProtocolError
from clients.sip.jitter import JitterBuffer
from clients.sip.rtp import DtmfReceiver, OutboundStream, RtpPacket, is_rtcp
from clients.sip.rtp_latch import RtpLatch
from clients.sip.sdp import Negotiated

__all__ = ["CallMedia", "Liveness"]


class Liveness(enum.Enum):
    ALIVE = "alive"
    ASK = "ask"    # held and silent for hold_keepalive_s: ask the caller whether it is still there
    GONE = "gone"  # no RTP for rtp_timeout_s while the caller should send: hang up


class CallMedia:
    """The RTP side of one call (see the module docstring). `record` gets its counters."""

    def __init__(self, media: Negotiated, signalling_host: str, config: BridgeConfig, rng: random.Random,
                 record: CallRecord, log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.media = media
        self.config = config
        self.record = record
        self.log = log
        self.latch = RtpLatch(signalling_host)  # which RTP sources are the caller, where ours goes
        codec = media.codec
        self.jitter = JitterBuffer(codec.silence_byte, depth=config.jitter_depth)
        self.outbound = OutboundStream(codec.payload_type, codec.silence_byte, rng)
        self.dtmf_rx = DtmfReceiver()
        self.last_rtp = 0.0  # time of the caller's last RTP packet (or answer, re-INVITE, keep-alive question)
        self._inbound: list[bytes] = []
        self._dest: Addr | None = None  # latch.send_to when media_to was last written
        self._unnamed_types: set[int] = set()  # payload types the caller sent that our answer did not name

    def change(self, media: Negotiated, now: float) -> None:
        """A re-INVITE moved the caller's media or put the call on hold or off it."""
        self.media = media
        self.last_rtp = now  # a resumed caller gets the whole RTP timeout again

    def expect(self, remote: Addr) -> None:
        """The caller's SDP names `remote` (an IP literal): our RTP goes there until its audio latches elsewhere."""
        self.latch.expect(remote)
        self._note_destination()

    def receive(self, data: bytes, source: Addr, now: float) -> list[str]:
        """One datagram on the call's RTP port; returns the DTMF keys it completed."""
        # A report, the caller's or a neighbouring call's (rtp.py): neither audio nor a stranger's RTP. Without
        # rtcp-mux a caller may still map a payload type of 64-95 (a telephone-event's marked first packet).
        if is_rtcp(data) and data[1] & 0x7F not in (self.media.codec.payload_type, self.media.dtmf_payload_type):
            return []
        try:
            packet = RtpPacket.parse(data)
        except RemoteProtocolError:
            self.record.rtp_in_bad += 1
            return []
        if not self.latch.receive(source, packet.sequence, packet.ssrc, now):  # not the caller's: never the agent's
            if self.latch.dropped == 1:
                self.log.info("call %s: RTP from %s:%d ignored: not the caller's media source", self.record.call,
                              *source)
            return []
        self._note_destination()
        self.last_rtp = now  # only the caller's packets show it is still there
        if packet.payload_type == self.media.codec.payload_type:
            self.record.rtp_in_packets += 1
            if self.media.held:  # counted here: tick() also drops the silence that fills a held line's quiet
                self.record.inbound_on_hold_frames += 1
            self._queue_inbound(self.jitter.push(packet, now))
            return []
        self._queue_inbound(self.jitter.skip(packet, now))
        if packet.payload_type != self.media.dtmf_payload_type:
            self._note_unnamed(packet.payload_type)
            return []
        try:
            return [d.digit for d in self.dtmf_rx.feed(packet)]
        except RemoteProtocolError:
            self.record.rtp_in_bad += 1
            return []

    def tick(self, now: float, can_send: bool) -> tuple[bytes, Addr] | None:
        """The 20 ms tick: the packet to send and where (None: nothing, e.g. on hold); the caller's audio due by
        `now` joins the queue for the agent. `can_send`: the call has a socket."""
        dest = self.latch.send_to
        self._queue_inbound(self.jitter.poll(now))
        if not (can_send and dest is not None and self.media.sends):
            self.outbound.hold()
            return None
        packet = self.outbound.tick(fill=True)  # silence while the agent is quiet: a continuous stream
        return None if packet is None else (packet, dest)

    def take_audio(self) -> bytes | None:
        """The caller's queued audio for the agent, emptied; None if there is none, or if it is hold music. (Before
        a delayed offer's answer we cannot send yet, but the caller may talk: RFC 3264 5, we offered our port.)"""
        frames, self._inbound = self._inbound, []
        if not frames or self.media.held:
            return None
        return b"".join(frames)

    def liveness(self, now: float) -> Liveness:
        """Whether the caller is still there, by its RTP (see the module docstring). ASK restarts the interval."""
        if not self.media.awaits_caller_rtp:
            interval = self.config.hold_keepalive_s
            if interval is None or now - self.last_rtp <= interval:
                return Liveness.ALIVE
            self.last_rtp = now  # the next question after another interval, if this one is answered
            return Liveness.ASK
        timeout = self.config.rtp_timeout_s
        return Liveness.ALIVE if timeout is None or now - self.last_rtp <= timeout else Liveness.GONE

    def finish(self) -> None:
        """The call is over: the media counters go into the record."""
        self.record.rtp_lost = self.jitter.stats.lost
        self.record.rtp_in_foreign = self.latch.dropped
        self.record.rtp_out_packets = self.outbound.packets_sent
        self.record.rtp_out_bytes = self.outbound.bytes_sent

    def _queue_inbound(self, frames: list[bytes]) -> None:
        self._inbound += frames
        over = len(self._inbound) - self.config.max_inbound_frames
        if over > 0:
            del self._inbound[:over]
            self.record.inbound_dropped_frames += over

    def _note_unnamed(self, payload_type: int) -> None:
        """Log, once per type, RTP of a type our answer did not name (RFC 3264 7: the caller sends only those)."""
        if payload_type in self._unnamed_types:
            return
        self._unnamed_types.add(payload_type)
        codec, dtmf = self.media.codec, self.media.dtmf_payload_type
        named = f"{codec.name} {codec.payload_type}, " + (f"telephone-event {dtmf}" if dtmf is not None else
                                                          "no telephone-event: the offer had none")
        self.log.info("call %s: RTP of payload type %d ignored: our answer named %s", self.record.call, payload_type,
                      named)

    def _note_destination(self) -> None:
        """Keep the call log's media_to on where our RTP goes, and say so when a NAT source was latched."""
        dest = self.latch.send_to
        if dest is None or dest == self._dest:
            return
        to = f"{dest[0]}:{dest[1]}"
        if self._dest is not None:
            self.log.info("call %s: the agent's audio now goes to %s (was %s)", self.record.call, to,
                          self.record.media_to)
        self._dest, self.record.media_to = dest, to
