"""One phone call bridged to one agent session: the call's RTP socket, jitter buffer, 20 ms pacing, and its
`RealtimeClient`. The asyncio side of a call; the SIP dialog itself is the UA core's (ua.py), driven by SipBridge.

- Answering: the caller's media host is looked up, then the agent server is connected, before the 200 OK (a
  server that cannot be reached gets the caller a 503, a full one's with its Retry-After). A caller that gives up
  meanwhile (CANCEL, BYE) ends the connection attempt at once: a slow server must not get a session for a call
  that is gone. The session is set to G.711 in and out (`audio/pcmu` or `audio/pcma`, as negotiated), so RTP
  payloads go to the server untouched and the server's audio deltas are already the bytes we packetize: no
  transcoding in the bridge.
- Only RTP from the caller's media source reaches the agent, and ours goes back there (rtp_latch.py: the SDP
  address, or a NAT's source latched after a few packets in a row; any other source is dropped). A host name
  in the SDP (RFC 4566 allows one in c=) is looked up once, off the loop's thread, before the call is answered
  or moved (a socket would look it up on every 20 ms send, blocking the loop); one that cannot be looked up
  gets the caller a 488.
- RTP in -> jitter buffer -> input_audio_buffer.append (batched per 20 ms tick). Agent audio deltas -> a bounded
  queue -> one packet every 20 ms on an absolute schedule (marker on each talkspurt start), silence packets while
  the agent is quiet (a PBX's RTP timeout must not hang up a caller who talks, a NAT or a symmetric-RTP far end
  must see our packets from the answer on). speech_started from
  the server (the caller talks over the agent) flushes the queue and drops the rest of that response's audio;
  the client truncates the agent's item to what was played.
- A re-INVITE the UA accepted (hold, resume, a new media address) redirects or pauses our RTP at once. While the
  caller holds the call, its audio (hold music) does not reach the agent, which would take it for a turn.
- RFC 4733 DTMF (and SIP INFO, application/dtmf-relay or application/dtmf) becomes a user text item
  "DTMF <digit>" in the agent's conversation, and the agent answers once the caller paused `dtmf_pause_s`
  after its last key (a reply under way first ends; one started by the caller's speech meanwhile answers them,
  unless it says nothing because the speech held no words: then the keys' reply is asked for after it;
  the rule is key_answers.py's).
- No RTP from the caller for `rtp_timeout_s` while it should send and is not holding the call (a=sendonly,
  a=inactive or c=0.0.0.0: a held phone often sends nothing) ends the call with our BYE: a caller that vanished
  without BYE must not hold an agent session and a call slot forever. A holding caller is not hung up for its
  silence (a long hold is legitimate, so no hold timeout); after `hold_keepalive_s` without RTP it is asked with
  an in-dialog OPTIONS instead, and one that does not answer is hung up by the UA core. The two are apart: with
  no RTP timeout (a caller that may stay silent), a held caller that vanished is still found.
- The end (BYE, CANCEL, our own hang-up): the agent session is closed, the call's record is finished and
  handed back through `CallHost.call_finished`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from typing import Protocol

from websockets.exceptions import InvalidStatus

from clients import events as ev
from clients.realtime_client import RealtimeClient, RealtimeConnectionError, ReconnectPolicy
from clients.sip.bridge_config import BridgeConfig
from clients.sip.errors import RemoteProtocolError
from clients.sip.jitter import JitterBuffer
from clients.sip.key_answers import KeyAnswers
from clients.sip.rtp import DtmfReceiver, OutboundStream, RtpPacket
from clients.sip.rtp_latch import RtpLatch
from clients.sip.sdp import Negotiated
from clients.sip.ua import UserAgent
from clients.sip.ua_events import IncomingCall
from clients.sip.udp import open_rtp_socket

__all__ = ["AgentCall", "CallHost", "CallRecord"]

logger = logging.getLogger(__name__)
TICK_S = 0.02


@dataclass
class CallRecord:
    """What happened on one call (the bridge's per-call log)."""

    call: str
    sip_call_id: str
    caller: str
    codec: str
    started: float = field(default_factory=time.time)
    ended: float | None = None
    end_reason: str | None = None
    agent_session_id: str | None = None
    user_transcripts: list[str] = field(default_factory=list)
    agent_transcripts: list[str] = field(default_factory=list)
    dtmf: list[str] = field(default_factory=list)
    rtp_in_packets: int = 0
    rtp_in_bad: int = 0
    rtp_in_foreign: int = 0  # well-formed RTP dropped for its source (not the caller's, see rtp_latch.py)
    rtp_lost: int = 0
    rtp_out_packets: int = 0
    rtp_out_bytes: int = 0
    inbound_dropped_frames: int = 0
    inbound_on_hold_frames: int = 0  # the audio packets the caller sent while it held the call (kept from the agent)
    barge_ins: int = 0
    media_to: str | None = None  # "address:port" the agent's audio went to last

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class CallHost(Protocol):
    """What a call needs from the bridge that owns it: the shared UA core and the means to act on it."""

    config: BridgeConfig
    ua: UserAgent
    rng: random.Random

    def pump(self) -> None:
        """Apply what the UA core asked for (datagrams, timers, call events)."""

    def spawn(self, coro: Coroutine[object, object, None]) -> None:
        """Run `coro` as a task the bridge waits for on close()."""

    def call_finished(self, call: AgentCall) -> None:
        """The call is over and its record final."""


def _retry_after(exc: BaseException) -> int | None:
    """The Retry-After seconds of a full agent server's handshake refusal (HTTP 503, --max-sessions), passed on
    to the caller: a PBX or proxy then tries another bridge, or this one later, instead of taking it for broken."""
    if not isinstance(exc, InvalidStatus) or exc.response.status_code != 503:
        return None
    value = (exc.response.headers.get("Retry-After") or "").strip()
    return int(value) if value.isdigit() else None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _address_of(host: str) -> str:
    """An IPv4 literal for an SDP connection address: itself, or a host name looked up (in the loop's executor)."""
    if _is_address(host):
        return host
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    return str(infos[0][4][0])


class AgentCall:
    """The media and agent side of one call (see the module docstring)."""

    def __init__(self, bridge: CallHost, offer: IncomingCall) -> None:
        self.bridge = bridge
        self.handle = offer.call
        self.media = offer.media
        self.latch = RtpLatch(offer.remote[0])  # which RTP sources are the caller, where ours goes
        self._dest: tuple[str, int] | None = None  # latch.send_to when media_to was last written
        codec = offer.media.codec
        self.record = CallRecord(offer.call, offer.sip_call_id, offer.caller, codec.name)
        self.log = logging.LoggerAdapter(logger, {"call_id": offer.sip_call_id})
        self.answered = False
        self.jitter = JitterBuffer(codec.silence_byte, depth=bridge.config.jitter_depth)
        self.outbound = OutboundStream(codec.payload_type, codec.silence_byte, bridge.rng)
        self.dtmf_rx = DtmfReceiver()
        self.client: RealtimeClient | None = None
        self.rtp: asyncio.DatagramTransport | None = None
        self._inbound: list[bytes] = []
        self._dropped_responses: set[str] = set()
        self._response_id: str | None = None
        self._responding = False  # between response.created and response.done
        self.keys = KeyAnswers()
        self._keys_timer: asyncio.TimerHandle | None = None  # the pause after the caller's last key press
        self._last_rtp = 0.0  # loop time of the caller's last RTP packet (or answer, re-INVITE, keep-alive)
        self._ended = asyncio.Event()
        self._opening: asyncio.Future[None] | None = None  # the agent session being opened, before the answer

    def end(self, reason: str) -> None:
        if self.record.end_reason is None:
            self.record.end_reason = reason
        self._ended.set()
        if self._opening is not None:  # a caller gone while ringing gets no agent session, nor one up to 10 s late
            self._opening.cancel()

    def media_changed(self, media: Negotiated) -> None:
        """A re-INVITE moved our RTP (a new address) or put the call on hold or off it."""
        self.media = media
        self._last_rtp = asyncio.get_running_loop().time()  # a resumed caller gets the whole RTP timeout again
        self.log.info("call %s media now %s:%d, %s", self.handle, media.remote_host, media.remote_port,
                      media.direction)
        if _is_address(media.remote_host):
            self._expect((media.remote_host, media.remote_port))
        else:  # until it is looked up, our audio goes where it went
            self._spawn(self._move_to(media))

    async def _move_to(self, media: Negotiated) -> None:
        try:
            address = await _address_of(media.remote_host)
        except OSError as exc:  # the re-INVITE was answered already: the call cannot go on without media
            self.log.warning("media host %r of %s cannot be looked up: %s", media.remote_host, self.handle, exc)
            self._hang_up_quietly("media host unknown")
            return
        if self.media is media:  # not overtaken by a later re-INVITE
            self._expect((address, media.remote_port))

    def _expect(self, remote: tuple[str, int]) -> None:
        """The caller's SDP names `remote` (an IP literal): our RTP goes there until its audio latches elsewhere."""
        self.latch.expect(remote)
        self._note_destination()

    def _note_destination(self) -> None:
        """Keep the call log's media_to on where our RTP goes, and say so when a NAT source was latched."""
        dest = self.latch.send_to
        if dest is None or dest == self._dest:
            return
        to = f"{dest[0]}:{dest[1]}"
        if self._dest is not None:
            self.log.info("call %s: the agent's audio now goes to %s (was %s)", self.handle, to,
                          self.record.media_to)
        self._dest, self.record.media_to = dest, to

    def dtmf(self, digit: str) -> None:
        self.record.dtmf.append(digit)
        self.log.info("DTMF %s on %s", digit, self.handle)
        if self.client is None:
            return
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"DTMF {digit}"}]}
        self._spawn(self.client.send({"type": "conversation.item.create", "item": item}))
        self.keys.key_pressed()
        if self._keys_timer is not None:
            self._keys_timer.cancel()
        self._keys_timer = asyncio.get_running_loop().call_later(self.bridge.config.dtmf_pause_s, self._keys_paused)

    def _keys_paused(self) -> None:
        self._keys_timer = None
        if self.keys.pause_ended(replying=self._responding):
            self._answer_keys()

    def _stop_keys_timer(self) -> None:
        """The keys' answer was left to a reply (KeyAnswers): their pause no longer matters."""
        if self._keys_timer is not None and not self.keys.pausing:
            self._keys_timer.cancel()
            self._keys_timer = None

    def _reply_started(self, response_id: str | None) -> None:
        self._response_id, self._responding = response_id, True
        self.keys.reply_started(response_id)
        self._stop_keys_timer()

    def _reply_done(self, event: ev.ServerEvent) -> None:
        # A turn of the caller's that held no words (a cough, a noise its VAD took for speech) gets a reply that
        # says nothing: keys left to it were not answered.
        self._responding = False
        response = event.get("response")
        said_nothing = isinstance(response, dict) and response.get("status") == "completed" \
            and response.get("output") == []
        if self.keys.reply_done(event.response_id, said_nothing):
            self._answer_keys()

    def _answer_keys(self) -> None:
        if self.client is not None:
            self._spawn(self.client.send(ev.create_response_event()))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []
        try:
            if not await self._resolve_remote() or not await self._connect():
                return
            rtp = await self._open_rtp()
            if rtp is None or self._ended.is_set():  # no port free, or CANCEL arrived while we were connecting
                return
            port = rtp.get_extra_info("sockname")[1]
            self.bridge.ua.answer(self.handle, port, loop.time())
            self._last_rtp = loop.time()
            self.answered = True
            self.bridge.pump()
            self.log.info("call %s answered: %s -> rtp %d", self.handle, self.record.codec, port)
            tasks = [asyncio.create_task(self._agent_loop()), asyncio.create_task(self._pace())]
            await self._ended.wait()
        except Exception:
            self.log.exception("call %s failed", self.handle)
            self._hang_up_quietly("local hangup")
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await self._teardown()

    async def _open_rtp(self) -> asyncio.DatagramTransport | None:
        """This call's RTP socket (kept in self.rtp for the teardown); None: every port of --rtp-ports is taken,
        and the call was refused with 503."""
        config = self.bridge.config
        try:
            self.rtp = await open_rtp_socket(self._on_rtp, config.host, config.rtp_ports, self.bridge.rng)
            return self.rtp
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or config.rtp_ports is None:
                raise
            self.log.warning("call %s refused: %s", self.handle, exc.strerror)
            if not self._ended.is_set():
                self._hang_up_quietly(str(exc.strerror))
            return None

    async def _resolve_remote(self) -> bool:
        """The caller's media address as an IP literal (see the module docstring); False: refused with 488."""
        host, port = self.media.remote_host, self.media.remote_port
        try:
            address = await _address_of(host)
        except OSError as exc:
            self.log.warning("media host %r of %s cannot be looked up: %s", host, self.handle, exc)
            if not self._ended.is_set():
                self._hang_up_quietly(f"media host {host!r} unknown", refuse_with=488)
            return False
        self._expect((address, port))
        return True

    async def _connect(self) -> bool:
        """Open the agent session; False: the caller got a 503, or is gone (end() abandons the attempt)."""
        if self._ended.is_set():
            return False
        self._opening = asyncio.ensure_future(self._open_session())
        try:
            await asyncio.wait([self._opening])
        except asyncio.CancelledError:  # the bridge is closing: the attempt must not go on without us
            self._opening.cancel()
            raise
        if self._opening.cancelled():
            self.log.info("call %s ended while its agent session was opening: abandoned", self.handle)
            return False
        exc = self._opening.exception()
        if exc is None:
            return True
        why = f"no answer within {self.bridge.config.connect_timeout_s:g} s" if isinstance(exc, TimeoutError) \
            else str(exc) or type(exc).__name__
        self.log.warning("agent server unreachable for %s: %s", self.handle, why)  # any failure: 503
        if not self._ended.is_set():
            self._hang_up_quietly(f"agent server unreachable: {why}", retry_after=_retry_after(exc))
        return False

    async def _open_session(self) -> None:
        cfg = self.bridge.config
        self.client = await asyncio.wait_for(  # set at once: _teardown closes it if we are cancelled after this
            RealtimeClient.connect(cfg.server_url, cfg.api_key, cfg.model, reconnect=ReconnectPolicy(enabled=False)),
            cfg.connect_timeout_s)
        await self.client.session_update(self._session())

    def _session(self) -> dict[str, object]:
        fmt = {"type": self.media.codec.realtime_format}
        audio_in: dict[str, object] = {"format": fmt}
        cfg = self.bridge.config
        if cfg.silence_duration_ms is not None:
            audio_in["turn_detection"] = {"type": "server_vad", "silence_duration_ms": cfg.silence_duration_ms}
        session: dict[str, object] = {"type": "realtime", "audio": {"input": audio_in, "output": {"format": fmt}}}
        if cfg.instructions:
            session["instructions"] = cfg.instructions
        return session

    # ----- media -----

    def _on_rtp(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            packet = RtpPacket.parse(data)
        except RemoteProtocolError:
            self.record.rtp_in_bad += 1
            return
        now = asyncio.get_running_loop().time()
        if not self.latch.receive(addr, packet.sequence, packet.ssrc, now):  # not the caller's: never the agent's
            if self.latch.dropped == 1:
                self.log.info("call %s: RTP from %s:%d ignored: not the caller's media source", self.handle, *addr)
            return
        self._note_destination()
        self._last_rtp = now  # only the caller's packets show it is still there
        if packet.payload_type == self.media.codec.payload_type:
            self.record.rtp_in_packets += 1
            if not self.media.sends:  # counted here: _pace also drops the silence that fills a held line's quiet
                self.record.inbound_on_hold_frames += 1
            self._queue_inbound(self.jitter.push(packet, now))
            return
        self._queue_inbound(self.jitter.skip(packet, now))  # DTMF or comfort noise: its sequence number is no loss
        if packet.payload_type == self.media.dtmf_payload_type:
            try:
                digits = self.dtmf_rx.feed(packet)
            except RemoteProtocolError:
                self.record.rtp_in_bad += 1
                return
            for d in digits:
                self.dtmf(d.digit)

    def _queue_inbound(self, frames: list[bytes]) -> None:
        self._inbound += frames
        over = len(self._inbound) - self.bridge.config.max_inbound_frames
        if over > 0:
            del self._inbound[:over]
            self.record.inbound_dropped_frames += over

    async def _pace(self) -> None:
        """Every 20 ms: one RTP packet out (or none), and the caller's audio so far to the agent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            deadline += TICK_S
            delay = deadline - loop.time()
            if delay < -0.2:  # the loop stalled: resync rather than burst packets out
                deadline = loop.time()
            elif delay > 0:
                await asyncio.sleep(delay)
            if self._timed_out(loop.time()):
                return
            dest = self.latch.send_to
            sending = self.rtp is not None and dest is not None and self.media.sends  # on hold: audio skipped
            packet = self.outbound.tick(fill=sending)  # silence while the agent is quiet: a continuous stream
            if packet is not None and sending:
                assert self.rtp is not None and dest is not None
                self.rtp.sendto(packet, dest)
            self._queue_inbound(self.jitter.poll(loop.time()))
            if self._inbound and self.client is not None:
                frames, self._inbound = self._inbound, []
                if self.media.sends:  # else the caller holds the call: what it sends is hold music, not words
                    await self.client.send(ev.append_event(b"".join(frames)))

    def _timed_out(self, now: float) -> bool:
        """No RTP from the caller for rtp_timeout_s: hung up (True). While it holds the call (a held phone may send
        nothing), after hold_keepalive_s without RTP it is asked with an in-dialog OPTIONS whether it is still
        there instead; the UA core ends the call if not, so a held caller that vanished does not keep its agent
        session and call slot forever."""
        config = self.bridge.config
        if not self.media.awaits_caller_rtp:
            self._ask_if_held_caller_is_there(now, config.hold_keepalive_s)
            return False
        if config.rtp_timeout_s is None or now - self._last_rtp <= config.rtp_timeout_s:
            return False
        self.log.warning("no RTP on %s for %.0f s: hanging up", self.handle, config.rtp_timeout_s)
        self._hang_up_quietly("RTP timeout")
        return True

    def _ask_if_held_caller_is_there(self, now: float, interval: float | None) -> None:
        if interval is None or now - self._last_rtp <= interval:
            return
        self._last_rtp = now  # the next question after another interval, if this one is answered
        if self.bridge.ua.keepalive(self.handle, now):  # else one is pending, or a re-INVITE awaits its ACK
            self.log.info("call %s on hold without RTP for %.0f s: asking the caller with OPTIONS", self.handle,
                          interval)
            self.bridge.pump()

    async def _agent_loop(self) -> None:
        assert self.client is not None
        try:
            async for event in self.client.events():
                self._on_agent_event(event)
        except RealtimeConnectionError as exc:
            self.log.warning("agent session of %s lost: %s", self.handle, exc)
        if not self._ended.is_set():  # the agent went away: hang up the phone, and say why in the call log
            self._hang_up_quietly("agent session lost")

    def _on_agent_event(self, event: ev.ServerEvent) -> None:
        t = event.type
        if t == "response.output_audio.delta":
            if event.response_id not in self._dropped_responses:
                self.outbound.push(event.audio)
        elif t == "response.output_audio.done":
            self.outbound.finish()
        elif t == "response.created":
            self._reply_started(event.response_id)
        elif t == "response.done":
            self._reply_done(event)
        elif t == "input_audio_buffer.speech_started":
            # The caller talks over the agent: while its audio is queued, and also while its reply is under way
            # with the queue empty for a moment (between two synthesized pieces), when the rest still to come must
            # not play over the caller either.
            if (self.outbound.flush() or self._responding) and self._response_id is not None:
                self.record.barge_ins += 1
                self._dropped_responses.add(self._response_id)
            self.keys.caller_speaks()  # no reply asked for while the caller speaks
            self._stop_keys_timer()
        elif t == "conversation.item.input_audio_transcription.completed":
            self.record.user_transcripts.append(event.transcript or "")
            self.log.debug("caller said: %s", event.transcript)
        elif t == "response.output_audio_transcript.done":
            self.record.agent_transcripts.append(event.transcript or "")
            self.log.debug("agent said: %s", event.transcript)
        elif t == "session.created":
            session = event.get("session")
            if isinstance(session, dict):
                sid = session.get("id")
                self.record.agent_session_id = sid if isinstance(sid, str) else None
                self.log.info("call %s: agent session %s", self.handle, sid)
        elif t == "error":
            self.log.warning("agent error on %s: %s", self.handle, event.error)

    def _hang_up_quietly(self, reason: str, refuse_with: int = 503, retry_after: int | None = None) -> None:
        """Ends the call with `reason` in the call log: a BYE once answered, else its INVITE refused `refuse_with`
        (with Retry-After when given)."""
        self.end(reason)  # first: the UA's own CallEnded ("rejected") must not overwrite the reason
        now = asyncio.get_running_loop().time()
        with contextlib.suppress(Exception):
            if self.answered:
                self.bridge.ua.hangup(self.handle, now, reason)
            else:
                self.bridge.ua.reject(self.handle, refuse_with, now, retry_after=retry_after)
        self.bridge.pump()

    async def _teardown(self) -> None:
        if self._keys_timer is not None:
            self._keys_timer.cancel()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
        if self.rtp is not None:
            self.rtp.close()
        self.record.rtp_lost = self.jitter.stats.lost
        self.record.rtp_in_foreign = self.latch.dropped
        self.record.rtp_out_packets = self.outbound.packets_sent
        self.record.rtp_out_bytes = self.outbound.bytes_sent
        self.record.ended = time.time()
        self.log.info("call %s ended (%s): %d RTP in, %d out", self.handle, self.record.end_reason,
                      self.record.rtp_in_packets, self.record.rtp_out_packets)
        self.bridge.call_finished(self)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        self.bridge.spawn(coro)
