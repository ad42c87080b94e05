"""The asyncio shell of the SIP bridge: the SIP socket, the UA core's timers, and one AgentCall per call.

Everything that decides lives in the pure cores (ua, sdp, rtp, jitter); this module moves bytes and time:
- SIP: one UDP socket. Each datagram goes to `UserAgent.receive_datagram(data, addr, loop.time())`; its drains
  are applied at once (datagrams sent, timers scheduled with loop.call_at, call events dispatched). A failure in
  a core while handling one datagram is logged and the bridge carries on.
- The agent server's /healthz is asked every HEALTH_EVERY_S (server_health.py), and whether it refuses the bridge's
  key, and the UA core told, so that an OPTIONS ping gets the 503 an INVITE would while the server is down, full or
  refusing the key (a ping before the first answer, at the start, gets 200).
- Per call: an `AgentCall` (agent_call.py) owns the call's RTP socket and agent session; the bridge hands it the
  UA's events for that call (media changed, DTMF, the end) and, once it is over, its record to `on_call_end`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine

from clients.sip.agent_call import AgentCall
from clients.sip.call_record import CallRecord, refusal
from clients.sip.bridge_config import BridgeConfig
from clients.sip.server_health import HEALTH_EVERY_S, agent_health, agent_refuses_key
from clients.sip.ua import RETRY_AFTER_S, UserAgent
from clients.sip.ua_events import CallConfirmed, CallEnded, CancelTimer, DtmfReceived, IncomingCall, MediaChanged, \
    Refused, StartTimer, UaConfig
from clients.sip.udp import DatagramHandler

__all__ = ["BridgeConfig", "CallRecord", "SipBridge"]

logger = logging.getLogger(__name__)
SHUTTING_DOWN = "bridge shutting down"  # why the calls still up when the bridge stops end
HEALTH_TIMEOUT_S = 2.0  # a /healthz that takes longer counts as down (the first one delays the start this long)


class SipBridge:
    """Answers SIP calls on UDP host:port and bridges each to an agent session at `config.server_url`."""

    def __init__(self, config: BridgeConfig, *, on_call_end: Callable[[CallRecord], None] | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.on_call_end = on_call_end
        self.rng = rng or random.Random()
        self.ua = UserAgent(UaConfig(host=config.public_host, port=config.port, max_calls=config.max_calls), self.rng)
        self.records: dict[str, CallRecord] = {}
        self._calls: dict[str, AgentCall] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._health: asyncio.Task[None] | None = None
        self._server_state: str | None = None  # as last logged ("available", ...); None: not asked yet

    @property
    def calls_up(self) -> int:
        """Calls ringing or answered now."""
        return len(self._calls)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: DatagramHandler(self._on_sip), local_addr=(self.config.host, self.config.port))
        self._health = asyncio.create_task(self._watch_server())
        logger.info("sip-bridge listening on udp:%s:%d -> %s", self.config.host, self.config.port,
                    self.config.server_url)

    async def close(self) -> None:
        """Hang up every call, wait for their agent sessions to close, release the socket."""
        if self._health is not None:
            self._health.cancel()
        for call in list(self._calls.values()):
            # The call log and our BYE's Reason (for the far end's CDR) say so, not "local hangup" as for a call
            # whose handling failed; a call still ringing is refused 503 and logged as every refusal is.
            call.hang_up(SHUTTING_DOWN)
        self.pump()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        for h in self._timers.values():
            h.cancel()
        if self._transport is not None:
            self._transport.close()

    async def _check_server(self) -> None:
        cfg = self.config
        down = await agent_health(cfg.server_url, HEALTH_TIMEOUT_S, RETRY_AFTER_S)
        # Up, but refusing our key, it refuses every call: OPTIONS get the 503 an INVITE would (it said available).
        key_refused = down is None and await agent_refuses_key(cfg.server_url, cfg.api_key, HEALTH_TIMEOUT_S)
        self.ua.agent_server(RETRY_AFTER_S if key_refused else down)
        state = "refuses the bridge's API key" if key_refused else "available" if down is None else "unavailable"
        if self._server_state != state:  # logged when it changes, not every HEALTH_EVERY_S
            self._server_state = state
            how = (": OPTIONS get 503, calls are refused; give the key with --api-key KEY or in env "
                   "STEPAUDIO_RT_API_KEY") if key_refused else "" if down is None else ": OPTIONS get 503"
            logger.log(logging.INFO if state == "available" else logging.WARNING, "agent server %s %s%s",
                       cfg.server_url, state, how)

    async def _watch_server(self) -> None:
        while True:
            await self._check_server()
            await asyncio.sleep(HEALTH_EVERY_S)

    # ----- the SIP side -----

    def _on_sip(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.ua.receive_datagram(data, addr, asyncio.get_running_loop().time())
        except Exception:  # a bug in a core must not take the bridge down with every call on it
            logger.exception("SIP core failed on a datagram from %s:%d", *addr)
        self.pump()

    def _on_timer(self, key: str) -> None:
        self._timers.pop(key, None)
        try:
            self.ua.timer_fired(key, asyncio.get_running_loop().time())
        except Exception:
            logger.exception("SIP core failed on timer %s", key)
        self.pump()

    def pump(self) -> None:
        """Apply everything the UA core asked for."""
        loop = asyncio.get_running_loop()
        for d in self.ua.data_to_send():
            if self._transport is not None:
                self._transport.sendto(d.data, d.addr)
        for t in self.ua.timer_actions():
            old = self._timers.pop(t.key, None)
            if old is not None:
                old.cancel()
            if isinstance(t, StartTimer):
                self._timers[t.key] = loop.call_at(t.deadline, self._on_timer, t.key)
            else:
                assert isinstance(t, CancelTimer)
        for event in self.ua.events_received():
            if isinstance(event, IncomingCall):
                call = AgentCall(self, event)
                self._calls[event.call] = call
                self.records[event.call] = call.record
                self.spawn(call.run())
            elif isinstance(event, CallConfirmed):
                logger.info("call %s confirmed (ACK)", event.call)
            elif isinstance(event, MediaChanged):
                changed = self._calls.get(event.call)
                if changed is not None:
                    changed.media_changed(event.media)
            elif isinstance(event, CallEnded):
                ended = self._calls.get(event.call)
                if ended is not None:
                    ended.end(event.reason)
            elif isinstance(event, Refused):
                reason = refusal(logger, event.sip_call_id, event.caller, event.status, event.why)
                if not any(c.record.sip_call_id == event.sip_call_id for c in self._calls.values()):  # a new call's
                    now = time.time()
                    self._record(CallRecord(call="", sip_call_id=event.sip_call_id, caller=event.caller, codec="",
                                            started=now, ended=now, end_reason=reason))
            elif isinstance(event, DtmfReceived):
                target = self._calls.get(event.call)
                if target is not None:
                    target.dtmf(event.digit)

    def spawn(self, coro: Coroutine[object, object, None]) -> None:
        """Run `coro` as a task the bridge waits for on close(); its failure is logged."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    def call_finished(self, call: AgentCall) -> None:
        self._calls.pop(call.handle, None)
        self._record(call.record)

    def _record(self, record: CallRecord) -> None:
        """The call log's line for a call that ended, or for an INVITE refused before it became one."""
        if self.on_call_end is not None:
            try:
                self.on_call_end(record)
            except Exception:
                logger.exception("on_call_end callback failed")


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("bridge task failed: %r", task.exception())
