"""A reordering jitter buffer for incoming G.711 RTP. Pure: arrival time is an input.

Rules:
- Packets are released strictly in sequence order. The next expected packet goes out as soon as it is here,
  so in-order traffic passes with no added delay.
- A gap (a missing sequence number) is waited for until either `depth` later packets are buffered or the oldest
  buffered packet has waited `max_wait_s`; then the missing frames count as lost and are released as silence of
  the same length, so the agent's audio clock keeps real time.
- Duplicates and packets older than the last released one are dropped and counted.
- Sequence numbers wrap at 2**16: they are extended to a 32-bit-plus counter from the first packet (RFC 3550 A.1).
  A jump of more than `max_gap` packets restarts the stream (the sender reset), and so does a new SSRC (a new
  source, e.g. after a transfer): what the old source left is released first.
- Packets of the same source that carry no audio (RFC 4733 events, comfort noise) share its sequence numbers
  (RFC 4733 2.1): `skip()` marks their numbers as no loss. They release nothing; the time they cover is filled
  with silence like any pause.
- So the buffer never holds more than `depth` packets: that is its bound.
- When the caller stops sending (silence suppression, or a player that just stops), `poll(now)` fills the time
  since the last packet with silence once nothing arrived for `fill_after_s`: the agent's voice detector works in
  audio time and only sees the end of a turn if silence keeps flowing.
- `drain()` at the end of a call releases everything still held, gaps filled (no audio is lost at hang-up).
"""

from __future__ import annotations

from dataclasses import dataclass

from clients.sip.rtp import FRAME_SAMPLES, RtpPacket

__all__ = ["JitterBuffer", "JitterStats"]


@dataclass(slots=True)
class JitterStats:
    received: int = 0
    released: int = 0
    lost: int = 0
    duplicates: int = 0
    late: int = 0
    resets: int = 0
    filled: int = 0  # silence frames sent while the caller sent nothing


class JitterBuffer:
    def __init__(self, silence_byte: int, *, depth: int = 3, max_wait_s: float = 0.06, max_gap: int = 100,
                 fill_after_s: float = 0.1) -> None:
        if depth < 1 or max_wait_s < 0:
            raise ValueError("jitter buffer needs depth >= 1 and max_wait_s >= 0")
        self.silence_byte = silence_byte
        self.depth = depth
        self.max_wait_s = max_wait_s
        self.max_gap = max_gap
        self.fill_after_s = fill_after_s
        self.stats = JitterStats()
        self._held: dict[int, tuple[bytes, float]] = {}  # extended seq -> (payload, arrival time); b"": no audio
        self._ssrc: int | None = None
        self._next: int | None = None  # extended seq of the next packet to release
        self._frame = FRAME_SAMPLES
        self._last_arrival: float | None = None
        self._filled_until = 0.0

    def push(self, packet: RtpPacket, now: float) -> list[bytes]:
        """Add one packet; returns the payloads now ready, in order (lost frames as silence)."""
        out: list[bytes] = []
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                out = self.drain()
                self.stats.resets += 1
            self._ssrc, self._next = packet.ssrc, None
        self.stats.received += 1
        self._last_arrival = now
        self._hold(packet, packet.payload, now)
        return out + self.poll(now)

    def skip(self, packet: RtpPacket, now: float) -> list[bytes]:
        """A packet of the audio's source without audio: its sequence number is no loss. Returns what is ready."""
        if packet.ssrc == self._ssrc:
            self._hold(packet, b"", now)
        return self.poll(now)

    def _hold(self, packet: RtpPacket, payload: bytes, now: float) -> None:
        ext = self._extend(packet.sequence)
        assert self._next is not None  # set by _extend
        if ext < self._next:
            self.stats.late += 1
        elif ext in self._held:
            self.stats.duplicates += 1
        else:
            self._held[ext] = (payload, now)
            self._frame = len(payload) or self._frame

    def poll(self, now: float) -> list[bytes]:
        """Release what is due at `now` (call it every 20 ms, so a trailing gap is not held forever)."""
        out: list[bytes] = []
        while self._held and self._next is not None:
            if self._next in self._held:
                out.append(self._held.pop(self._next)[0])
                self._next += 1
                continue
            oldest = min(self._held)
            waited = now - self._held[oldest][1]
            if len(self._held) < self.depth and waited < self.max_wait_s:
                break
            out += self._skip_to(oldest)
        return self._released(out) + self._fill(now)

    def _fill(self, now: float) -> list[bytes]:
        if self._held or self._last_arrival is None or now - self._last_arrival < self.fill_after_s:
            return []
        frame_s = self._frame / 8000
        start = max(self._last_arrival, self._filled_until)
        n = int((now - start) / frame_s)
        self._filled_until = start + n * frame_s
        self.stats.filled += n
        return [bytes([self.silence_byte]) * self._frame] * n

    def drain(self) -> list[bytes]:
        """Everything still held, in order, gaps filled with silence."""
        out: list[bytes] = []
        while self._held:
            out += self._skip_to(min(self._held))
            out.append(self._held.pop(min(self._held))[0])
            assert self._next is not None
            self._next += 1
        return self._released(out)

    def _released(self, out: list[bytes]) -> list[bytes]:
        audio = [p for p in out if p]  # the placeholders of skipped packets go no further
        self.stats.released += len(audio)
        return audio

    def _skip_to(self, ext: int) -> list[bytes]:
        assert self._next is not None
        missing = ext - self._next
        self.stats.lost += missing
        self._next = ext
        return [bytes([self.silence_byte]) * self._frame] * missing

    def _extend(self, seq: int) -> int:
        if self._next is None:
            self._next = seq
            return seq
        base = self._next - 1
        # The candidate nearest to the last released/expected sequence number.
        ext = (base & ~0xFFFF) | seq
        if ext - base > 0x8000:
            ext -= 0x10000
        elif base - ext > 0x8000:
            ext += 0x10000
        if abs(ext - self._next) > self.max_gap:  # the sender restarted its sequence: start over
            self.stats.resets += 1
            self._held.clear()
            self._next = ext
        return ext
