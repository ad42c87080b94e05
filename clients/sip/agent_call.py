"""One phone call bridged to one agent session: the asyncio side of a call. It owns the call's RTP socket, the
20 ms clock and its `RealtimeClient`; what happens to the media is call_media.py's, what the agent's events do is
call_turns.py's (both without I/O); the SIP dialog itself is the UA core's (ua.py), driven by SipBridge.

- Answering: the caller's media host is looked up, then the agent server is connected, before the 200 OK (a
  server that cannot be reached gets the caller a 503, a full one's with its Retry-After). A caller that gives up
  meanwhile (CANCEL, BYE) ends the connection attempt at once: a slow server must not get a session for a call
  that is gone. The session is set to G.711 in and out (`audio/pcmu` or `audio/pcma`, as negotiated), so RTP
  payloads go to the server untouched and the server's audio deltas are already the bytes we packetize: no
  transcoding in the bridge.
- A host name in the SDP (RFC 4566 allows one in c=) is looked up once, off the loop's thread, before the call is
  answered or moved (a socket would look it up on every 20 ms send, blocking the loop); one that cannot be looked
  up gets the caller a 488.
- RTP in -> CallMedia -> input_audio_buffer.append (batched per 20 ms tick). Agent audio deltas -> AgentTurns ->
  a bounded queue -> one packet every 20 ms on an absolute schedule (marker on each talkspurt start), silence
  packets while the agent is quiet (a PBX's RTP timeout must not hang up a caller who talks, a NAT or a
  symmetric-RTP far end must see our packets from the answer on). The client truncates the agent's item to what
  was played when the caller barges in.
- A re-INVITE the UA accepted (hold, resume, a new media address) redirects or pauses our RTP at once.
- RFC 4733 DTMF (and SIP INFO, application/dtmf-relay or application/dtmf) becomes a user text item
  "DTMF <digit>" in the agent's conversation, and the agent answers once the caller paused `dtmf_pause_s`
  after its last key (the rule is key_answers.py's). Keys sent in INFO while the call still rings (an early
  dialog, where the UA core takes INFO with 200) wait for the answer: the agent gets them then, in order.
- A caller gone silent (CallMedia.liveness) is hung up with our BYE; a held one is asked with an in-dialog
  OPTIONS instead, and one that does not answer is hung up by the UA core.
- The agent hanging up (its session closed normally, code 1000) ends the call once its queued audio has played.
- The end (BYE, CANCEL, our own hang-up): the agent session is closed, the call's record is finished and
  handed back through `CallHost.call_finished`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import socket
import time
from collections.abc import Coroutine
from typing import Protocol

from websockets.exceptions import InvalidStatus

from clients import events as ev
from clients.connection import key_refusal
from clients.realtime_client import RealtimeClient, RealtimeConnectionError, ReconnectPolicy
from clients.sip.addresses import parse_ip
from clients.sip.bridge_config import BridgeConfig
from clients.sip.call_media import CallMedia, Liveness
from clients.sip.call_record import CallRecord, refusal
from clients.sip.call_turns import AgentTurns, TurnAction
from clients.sip.sdp import Negotiated
from clients.sip.ua import UserAgent
from clients.sip.ua_events import IncomingCall
from clients.sip.udp import open_rtp_socket

__all__ = ["AgentCall", "CallHost"]

logger = logging.getLogger(__name__)
TICK_S = 0.02
PLAY_OUT_S = 10.0  # the longest wait for the agent's queued audio when it hangs up


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


async def _address_of(host: str) -> str:
    """An IPv4 literal for an SDP connection address: itself, or a host name looked up (in the loop's executor)."""
    if parse_ip(host) is not None:
        return host
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    return str(infos[0][4][0])


class AgentCall:
    """The media and agent side of one call (see the module docstring)."""

    def __init__(self, bridge: CallHost, offer: IncomingCall) -> None:
        self.bridge = bridge
        self.handle = offer.call
        self.record = CallRecord(offer.call, offer.sip_call_id, offer.caller, offer.media.codec.name)
        self.log = logging.LoggerAdapter(logger, {"call_id": offer.sip_call_id})
        self.line = CallMedia(offer.media, offer.remote[0], bridge.config, bridge.rng, self.record, self.log)
        self.turns = AgentTurns(self.line.outbound, self.record, self.log)
        self.answered = False
        self.client: RealtimeClient | None = None
        self.rtp: asyncio.DatagramTransport | None = None
        self._keys_timer: asyncio.TimerHandle | None = None  # the pause after the caller's last key press
        self._ended = asyncio.Event()
        self._opening: asyncio.Future[None] | None = None  # the agent session being opened, before the answer
        self._ringing_keys: list[str] = []  # pressed before the answer, for the agent once the call is answered

    def end(self, reason: str) -> None:
        if self.record.end_reason is None:
            self.record.end_reason = reason
        self._ended.set()
        if self._opening is not None:  # a caller gone while ringing gets no agent session, nor one up to 10 s late
            self._opening.cancel()

    def media_changed(self, media: Negotiated) -> None:
        """A re-INVITE moved our RTP (a new address) or put the call on hold or off it."""
        self.line.change(media, asyncio.get_running_loop().time())
        self.log.info("call %s media now %s:%d, %s", self.handle, media.remote_host, media.remote_port,
                      media.direction)
        if parse_ip(media.remote_host) is not None:
            self.line.expect((media.remote_host, media.remote_port))
        else:  # until it is looked up, our audio goes where it went
            self._spawn(self._move_to(media))

    async def _move_to(self, media: Negotiated) -> None:
        try:
            address = await _address_of(media.remote_host)
        except OSError as exc:  # the re-INVITE was answered already: the call cannot go on without media
            self.log.warning("media host %r of %s cannot be looked up: %s", media.remote_host, self.handle, exc)
            self.hang_up("media host unknown")
            return
        if self.line.media is media:  # not overtaken by a later re-INVITE
            self.line.expect((address, media.remote_port))

    def dtmf(self, digit: str) -> None:
        self.record.dtmf.append(digit)
        self.log.info("DTMF %s on %s", digit, self.handle)
        if not self.answered:  # the 200 to the INFO said we took it: it must not be lost while the session opens
            self._ringing_keys.append(digit)
        else:
            self._key_to_agent(digit)

    def _key_to_agent(self, digit: str) -> None:
        if self.client is None:
            return
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"DTMF {digit}"}]}
        self._spawn(self.client.send({"type": "conversation.item.create", "item": item}))
        self.turns.key_pressed()
        if self._keys_timer is not None:
            self._keys_timer.cancel()
        self._keys_timer = asyncio.get_running_loop().call_later(self.bridge.config.dtmf_pause_s, self._keys_paused)

    def _keys_paused(self) -> None:
        self._keys_timer = None
        self._act(self.turns.keys_paused())

    def _act(self, actions: list[TurnAction]) -> None:
        for action in actions:
            if action is TurnAction.ASK_REPLY and self.client is not None:
                self._spawn(self.client.send(ev.create_response_event()))
            elif action is TurnAction.STOP_KEY_PAUSE and self._keys_timer is not None:
                self._keys_timer.cancel()
                self._keys_timer = None

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
            self.line.last_rtp = loop.time()
            self.answered = True
            self.bridge.pump()
            self.log.info("call %s answered: %s -> rtp %d", self.handle, self.record.codec, port)
            for digit in self._ringing_keys:
                self._key_to_agent(digit)
            tasks = [asyncio.create_task(self._agent_loop()), asyncio.create_task(self._pace())]
            await self._ended.wait()
        except Exception:
            self.log.exception("call %s failed", self.handle)
            self.hang_up("local hangup")
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
            self.hang_up(str(exc.strerror))
            return None

    async def _resolve_remote(self) -> bool:
        """The caller's media address as an IP literal (see the module docstring); False: refused with 488."""
        host, port = self.line.media.remote_host, self.line.media.remote_port
        try:
            address = await _address_of(host)
        except OSError as exc:
            self.log.warning("media host %r of %s cannot be looked up: %s", host, self.handle, exc)
            self.hang_up(f"media host {host!r} unknown", refuse_with=488)
            return False
        self.line.expect((address, port))
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
        cfg = self.bridge.config
        reason = key_refusal(cfg.server_url, cfg.api_key, exc) or f"agent server unreachable: {why}"
        self.hang_up(reason, retry_after=_retry_after(exc))  # any failure: 503
        return False

    async def _open_session(self) -> None:
        cfg = self.bridge.config
        self.client = await asyncio.wait_for(  # set at once: _teardown closes it if we are cancelled after this
            RealtimeClient.connect(cfg.server_url, cfg.api_key, cfg.model, reconnect=ReconnectPolicy(enabled=False)),
            cfg.connect_timeout_s)
        await self.client.session_update(self._session())

    def _session(self) -> dict[str, object]:
        fmt = {"type": self.line.media.codec.realtime_format}
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
        for digit in self.line.receive(data, addr, asyncio.get_running_loop().time()):
            self.dtmf(digit)

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
            out = self.line.tick(loop.time(), can_send=self.rtp is not None)
            if out is not None and self.rtp is not None:
                self.rtp.sendto(*out)
            if self.client is not None:
                audio = self.line.take_audio()
                if audio is not None:
                    await self.client.send(ev.append_event(audio))

    def _timed_out(self, now: float) -> bool:
        """Whether the caller is gone and was hung up; a held caller silent for long is asked instead."""
        liveness = self.line.liveness(now)
        if liveness is Liveness.ASK:
            if self.bridge.ua.keepalive(self.handle, now):  # else one is pending, or a re-INVITE awaits its ACK
                self.log.info("call %s on hold without RTP for %.0f s: asking the caller with OPTIONS", self.handle,
                              self.bridge.config.hold_keepalive_s)
                self.bridge.pump()
            return False
        if liveness is Liveness.ALIVE:
            return False
        self.log.warning("no RTP on %s for %.0f s: hanging up", self.handle, self.bridge.config.rtp_timeout_s)
        self.hang_up("RTP timeout")
        return True

    async def _agent_loop(self) -> None:
        assert self.client is not None
        reason = "agent session lost"
        try:
            async for event in self.client.events():
                self._on_agent_event(event)
        except RealtimeConnectionError as exc:
            if exc.close_code == 1000:  # a normal close: the agent ended the call on purpose (an operator's hangup)
                reason = "agent hung up"
                self.log.info("agent of %s hung up: %s", self.handle, exc)
                await self._play_out()
            else:
                self.log.warning("agent session of %s lost: %s", self.handle, exc)
        self.hang_up(reason)  # hang up the phone, and say why in the BYE and the call log

    async def _play_out(self) -> None:
        """The agent's last words, still queued here when it hangs up (its farewell: the server sends audio a little
        ahead of real time), reach the caller before the BYE; at most PLAY_OUT_S, since a held line plays nothing."""
        client, self.client = self.client, None  # nothing more goes to the agent (a send would wait for a reconnect)
        if client is not None:
            await client.close()
        self.line.outbound.finish()
        deadline = asyncio.get_running_loop().time() + PLAY_OUT_S
        while self.line.outbound.queued and not self._ended.is_set() \
                and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(TICK_S)

    def _on_agent_event(self, event: ev.ServerEvent) -> None:
        self._act(self.turns.on_event(event))

    def hang_up(self, reason: str, refuse_with: int = 503, retry_after: int | None = None) -> None:
        """Ends the call with `reason` in the call log: a BYE once answered, else its INVITE refused `refuse_with`
        (with Retry-After when given), logged and recorded as the UA core's refusals are ("refused 503: ...").
        A call that has ended already (the caller hung up or cancelled) is left as it is."""
        if self._ended.is_set():
            return
        if not self.answered:
            reason = refusal(self.log, self.record.sip_call_id, self.record.caller, refuse_with, reason)
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
        self.turns.call_ended()
        self.line.finish()
        self.record.ended = time.time()
        self.log.info("call %s ended (%s): %d RTP in, %d out", self.handle, self.record.end_reason,
                      self.record.rtp_in_packets, self.record.rtp_out_packets)
        self.bridge.call_finished(self)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        self.bridge.spawn(coro)
