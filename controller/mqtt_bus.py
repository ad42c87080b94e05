"""The MQTT event bus: publishes session events and node status, takes operator commands (aiomqtt).

Topics (prefix "stepaudio" unless the URL says `?prefix=`):

    <prefix>/v1/nodes/<node>/status              retained, QoS 1: {"status": "online", ...} ("loading" while the
                                                  models load); the last will
                                                  (and a clean shutdown) sets {"status": "offline", ...}
    <prefix>/v1/nodes/<node>/metrics             QoS 0, every metrics_interval seconds
    <prefix>/v1/sessions/<id>/events/<type>      the session's server events as sent on the WebSocket, plus
                                                  our own session.opened / session.closed
    <prefix>/v1/sessions/<id>/status             retained, QoS 1: {"status": "live", "node_id", ...} while the
                                                  session lives; cleared (empty retained message) when it ends
    <prefix>/v1/sessions/<id>/cmd/say            {"text": "..."}                  (we subscribe)
    <prefix>/v1/sessions/<id>/cmd/instructions   {"instructions": "..."}          (we subscribe)
    <prefix>/v1/sessions/<id>/cmd/hangup         {} or empty                      (we subscribe)
    <prefix>/v1/sessions/<id>/cmd/error          our answer to a command we could not run
                                                  (we subscribe to cmd/#: any other cmd/... topic is
                                                  answered here as an unknown command)

Rules:
- Lifecycle events (LIFECYCLE below: opened/closed, response.done, transcripts, errors) go out at QoS 1,
  everything else (VAD, deltas, item bookkeeping) at QoS 0.
- response.output_audio.delta is never published (audio is too heavy for a bus). Instead the
  response.output_audio.done event carries "audio_deltas" and "audio_bytes": what the client was sent.
- The sink methods only build a small message and append it to a bounded buffer; one background task
  publishes. When the buffer is full the oldest QoS 0 message (else the oldest) is dropped and
  stepaudio_mqtt_dropped_total counts it. While the broker is away the buffer fills and the task
  reconnects with exponential backoff; sessions never wait on the broker.
- A command that cannot be parsed or run is answered on .../cmd/error and logged; it never raises.
  Messages on .../cmd/error (ours, or another node's on a shared broker) are replies, never answered.
- Several nodes may share a broker. Each reads every node's status and every session's retained status
  (`Directory`): a command for a session another live node has is that node's to run or refuse, so
  the others stay silent (they used to answer "no session"). A retained session status whose node is
  offline (killed: its will says so) or that names this node but not one of its sessions (left by its
  previous run) is a ghost: the node that sees it clears it.
- An event whose message would exceed `max_message` bytes (the broker's packet limit; a broker
  disconnects a client that sends more) goes out as a stub: its type and ids, "truncated": true and
  its size. Without that, the one message at the head of the buffer would be resent on every
  reconnect and the bus would never publish again. Any other message over the limit is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import Counter, Gauge

from controller.metrics import Metrics
from controller.mqtt_protocol import (
    Directory, MqttConfig, Outgoing, command_error_message, error_text, event_message, packet_size, parse_command,
    session_of, session_status_message, subscriptions,
)

logger = logging.getLogger(__name__)

AUDIO_DELTA = "response.output_audio.delta"
SESSION_EXPIRY = 60  # seconds the broker keeps our subscriptions and queued commands while we are away
SHORT_LINK_S = 5.0  # a link the broker drops sooner than this does not reset the reconnect backoff
SHORT_LINKS_SUSPECT = 3  # ... and this many in a row are logged as a likely node_id shared by two servers
WINDOW = 20  # messages in flight at once; paho's default max_inflight_messages (more would queue inside paho)
_NODE_SAMPLES = {  # metrics payload key -> Prometheus sample read from the app's registry
    "sessions_live": "stepaudio_sessions_live",
    "sessions_total": "stepaudio_sessions_total",
    "sessions_refused_total": "stepaudio_sessions_refused_total",
    "turns_total": "stepaudio_turns_total",
    "session_tasks": "stepaudio_session_tasks",
    "buffered_audio_seconds": "stepaudio_buffered_audio_seconds",
}


def _b64_len(text: object) -> int:
    if not isinstance(text, str):
        return 0
    return len(text) * 3 // 4 - text[-2:].count("=")


# ---- the adapter -------------------------------------------------------------------------------


@dataclass(slots=True)
class _BusMetrics:
    dropped: Counter
    published: Counter
    buffered: Gauge
    connected: Gauge


def _bus_metrics(metrics: Metrics, pending: Callable[[], int]) -> _BusMetrics:
    r = metrics.registry
    buffered = Gauge("stepaudio_mqtt_buffered", "Bus messages the broker does not have yet", registry=r)
    buffered.set_function(pending)
    return _BusMetrics(
        dropped=Counter("stepaudio_mqtt_dropped",
                        "Bus messages dropped: the buffer was full, or one was over max_message", registry=r),
        published=Counter("stepaudio_mqtt_published", "Bus messages published", ["qos"], registry=r),
        buffered=buffered,
        connected=Gauge("stepaudio_mqtt_connected", "1 while connected to the MQTT broker", registry=r))


@dataclass(slots=True)
class MqttBus:
    """An EventSink that mirrors sessions onto MQTT and feeds commands back to the app."""

    config: MqttConfig
    metrics: Metrics
    command: Callable[[str, str, dict[str, object]], Awaitable[None]]  # App.command
    meta: dict[str, object] = field(default_factory=dict)  # extra fields of the "online" status
    # False while the node loads its models: its status says "loading" until set_ready() (sessions are refused)
    ready: bool = True
    _buffer: deque[Outgoing] = field(init=False, default_factory=deque)
    # handed to the client, oldest first, not yet acknowledged by the broker (at most WINDOW)
    _sending: deque[tuple[Outgoing, asyncio.Task[None]]] = field(init=False, default_factory=deque)
    _m: _BusMetrics = field(init=False)
    _wake: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _stop: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = field(init=False, default=None)
    _commands: set[asyncio.Task[None]] = field(init=False, default_factory=set)
    _audio: dict[tuple[str, str], list[int]] = field(init=False, default_factory=dict)
    _started: float = field(init=False, default_factory=time.time)
    _link_up: bool = field(init=False, default=False)  # connected to the broker now
    _directory: Directory = field(init=False)

    def __post_init__(self) -> None:
        self._m = _bus_metrics(self.metrics, self._pending)
        self._directory = Directory(self.config.node_id)

    def _pending(self) -> int:
        """Messages the broker does not have yet: buffered, or sent and not acknowledged."""
        return len(self._buffer) + len(self._sending)

    @property
    def _node(self) -> str:
        return f"{self.config.prefix}/v1/nodes/{self.config.node_id}"

    # ---- EventSink: called on the event loop, enqueue only ----

    def session_opened(self, session_id: str) -> None:
        self._directory.local.add(session_id)
        # The status first: the other nodes learn whose session it is (and leave its commands alone) before an
        # operator who acts on session.opened can send one.
        self._enqueue(session_status_message(self.config.prefix, session_id, self.config.node_id, time.time()))
        self._lifecycle(session_id, "session.opened")

    def session_closed(self, session_id: str) -> None:
        for key in [k for k in self._audio if k[0] == session_id]:
            del self._audio[key]
        self._directory.local.discard(session_id)
        self._enqueue(session_status_message(self.config.prefix, session_id, None, time.time()))
        self._lifecycle(session_id, "session.closed")

    def session_event(self, session_id: str, event: dict[str, object]) -> None:
        type_ = event.get("type")
        if type_ == AUDIO_DELTA:  # counted, not published
            counts = self._audio.setdefault((session_id, str(event.get("response_id"))), [0, 0])
            counts[0] += 1
            counts[1] += _b64_len(event.get("delta"))
            return
        if type_ == "response.output_audio.done":
            deltas, nbytes = self._audio.pop((session_id, str(event.get("response_id"))), [0, 0])
            event = {**event, "audio_deltas": deltas, "audio_bytes": nbytes}
        self._enqueue(event_message(self.config.prefix, session_id, event, self.config.max_message))

    def _lifecycle(self, session_id: str, type_: str) -> None:
        self._enqueue(event_message(self.config.prefix, session_id, {
            "type": type_, "session_id": session_id, "node_id": self.config.node_id, "time": time.time()},
            self.config.max_message))

    def _enqueue(self, msg: Outgoing) -> None:
        if packet_size(msg.topic, msg.payload) > self.config.max_message:
            # Events come here as stubs; what is still too big (a cmd/error answer to a command on a very long
            # topic) would make the broker drop us on every resend: it goes, counted.
            logger.warning("mqtt: dropped a %d-byte message for %.80s...: over max_message", len(msg.payload),
                           msg.topic)
            self._m.dropped.inc()
            return
        if len(self._buffer) >= self.config.buffer:
            self._drop_one()
        self._buffer.append(msg)
        self._wake.set()

    # ---- lifecycle ----

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mqtt-bus")

    async def close(self) -> None:
        """Publish what is buffered (within drain_timeout), mark the node offline and disconnect."""
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.config.drain_timeout + 5)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._commands):
            task.cancel()
        await asyncio.gather(*self._commands, return_exceptions=True)

    async def set_ready(self) -> None:
        """The models have loaded: the node's status turns from "loading" to "online". Waits (drain_timeout at most)
        for the broker to have it, so that whoever reads the status once /healthz says ok reads "online"; a broker
        away learns it at the reconnect."""
        self.ready = True
        online = Outgoing(topic=f"{self._node}/status", payload=self._status("online"), qos=1, retain=True)
        self._enqueue(online)
        deadline = time.monotonic() + self.config.drain_timeout
        while self._link_up and time.monotonic() < deadline and (
                online in self._buffer or any(msg is online for msg, _ in self._sending)):
            await asyncio.sleep(0.02)

    def _status(self, status: str) -> bytes:
        """"online" or "loading" (with what a dashboard wants), "offline" at shutdown, or the will's "connection
        lost"."""
        body: dict[str, object] = {"status": "offline" if status == "lost" else status,
                                   "node_id": self.config.node_id}
        if status in ("online", "loading"):
            body |= {"time": time.time(), "pid": os.getpid(), "host": socket.gethostname(),
                     "started": self._started, **self.meta}
        elif status == "offline":
            body |= {"reason": "shutdown", "time": time.time()}
        else:  # the will is built at connect time and sent by the broker later: no timestamp
            body["reason"] = "connection lost"
        return json.dumps(body, separators=(",", ":")).encode()

    def _client(self) -> aiomqtt.Client:
        """Every connection resumes the node's broker session, so that the QoS 1 commands sent while the link was
        down are delivered after the reconnect instead of being lost. The first one too: mosquitto does not save
        a session begun with a clean start across its restart, which lost the commands sent while a persistent
        broker restarted for the first time. What a previous run of this node_id was sent in its last 60 s
        comes to this run, and is answered "no session" (session ids are never reused)."""
        c = self.config
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY
        client = aiomqtt.Client(
            c.host, c.port, username=c.username, password=c.password,
            identifier=f"stepaudio-rt-{c.node_id}", protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=c.keepalive, timeout=c.publish_timeout,
            tls_context=ssl.create_default_context() if c.tls else None, clean_start=False, properties=properties,
            will=aiomqtt.Will(f"{self._node}/status", self._status("lost"), qos=1, retain=True))
        # aiomqtt warns past 10 publishes awaiting their acknowledgement. Normal flow has up to WINDOW from the
        # publish loop plus the metrics loop's own publish (its QoS 0 waits too while the socket is busy).
        client.pending_calls_threshold = WINDOW + 1
        return client

    async def _run(self) -> None:
        """Connect, serve, and on any broker error reconnect after an exponential, jittered backoff."""
        delay = self.config.backoff_initial
        short_links = 0  # links in a row that the broker dropped soon after they were made
        while not self._stop.is_set():
            connected_at = None
            try:
                async with self._client() as client:
                    connected_at = time.monotonic()
                    logger.info("mqtt: connected to %s:%d as node %s", self.config.host, self.config.port,
                                self.config.node_id)
                    await self._connected(client)
                    return
            except aiomqtt.MqttError as exc:
                self._m.connected.set(0)
                lasted = None if connected_at is None else time.monotonic() - connected_at
                if lasted is not None and lasted >= SHORT_LINK_S:
                    delay, short_links = self.config.backoff_initial, 0
                elif lasted is not None:
                    short_links += 1
                    if short_links == SHORT_LINKS_SUSPECT:
                        # A broker lets one client per id in and drops the other when a second connects: two
                        # servers with one node_id take turns, forever, and each clears the other's sessions.
                        logger.error("mqtt: the broker dropped node %s %d times in a row within %.0f s of connecting: "
                                     "is another server using node_id %s? Give each server its own ?node_id=",
                                     self.config.node_id, short_links, SHORT_LINK_S, self.config.node_id)
                wait = delay * random.uniform(0.75, 1.0)
                logger.warning("mqtt: broker %s:%d unavailable (%s); %d buffered, retrying in %.1fs",
                               self.config.host, self.config.port, exc, len(self._buffer), wait)
                delay = min(delay * 2, self.config.backoff_max)
                try:
                    await asyncio.wait_for(self._stop.wait(), wait)
                except TimeoutError:
                    pass
            except Exception:  # the bus must never take the server down
                logger.exception("mqtt: bus failed; restarting it")
                await asyncio.sleep(self.config.backoff_max)
        self._m.connected.set(0)

    async def _connected(self, client: aiomqtt.Client) -> None:
        """One connection's life; returns after a clean shutdown, raises MqttError when the link breaks."""
        await client.publish(f"{self._node}/status", self._status("online" if self.ready else "loading"), qos=1,
                             retain=True)
        for topic in subscriptions(self.config.prefix):
            await client.subscribe(topic, qos=1)
        # A broker restarted without persistence has forgotten the retained statuses of our live sessions.
        for session_id in sorted(self._directory.local):
            self._enqueue(session_status_message(self.config.prefix, session_id, self.config.node_id, time.time()))
        self._m.connected.set(1)
        self._link_up = True
        workers = [asyncio.create_task(self._publish_loop(client)), asyncio.create_task(self._listen(client)),
                   asyncio.create_task(self._metrics_loop(client))]
        stop = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait([*workers, stop], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop:
                    task.result()  # a worker only ends by raising (MqttError -> reconnect)
            deadline = time.monotonic() + self.config.drain_timeout
            while self._pending() and time.monotonic() < deadline and not workers[0].done():
                await asyncio.sleep(0.02)
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await client.publish(f"{self._node}/status", self._status("offline"), qos=1, retain=True)
        finally:
            self._m.connected.set(0)
            self._link_up = False
            for task in [*workers, stop]:
                task.cancel()
            await asyncio.gather(*workers, stop, return_exceptions=True)

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        """Publish in buffer order with up to WINDOW messages unacknowledged at once: a distant broker's round
        trip is paid once per window, not once per QoS 1 message (one at a time, 50 ms away, the bus could
        not publish more than 20 events a second, and lagged further behind the sessions the more they said).
        A message counts as published once the broker has it (QoS 1: acknowledged); when the link breaks,
        `_requeue` puts the unacknowledged ones back, so that they are sent again after the reconnect."""
        try:
            while True:
                while self._sending and self._sending[0][1].done():
                    msg, task = self._sending[0]
                    task.result()  # MqttError when the link broke: the caller reconnects (and requeues msg)
                    self._sending.popleft()
                    self._m.published.labels(qos=str(msg.qos)).inc()
                if self._buffer and len(self._sending) < WINDOW:
                    msg = self._buffer.popleft()
                    # Tasks start in creation order and each hands its message to paho before its first await:
                    # the broker gets the messages in buffer order.
                    self._sending.append((msg, asyncio.create_task(
                        client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain))))
                    continue
                self._wake.clear()
                wake = asyncio.create_task(self._wake.wait())
                waits: list[asyncio.Task[object]] = [self._sending[0][1]] if self._sending else []
                if len(self._sending) < WINDOW:  # room for more: a new message wakes us too
                    waits.append(wake)
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    wake.cancel()
        finally:
            self._requeue()

    def _requeue(self) -> None:
        """The link is gone: what the broker has not acknowledged goes back to the front of the buffer, in order
        (QoS 1 is at least once: a message the broker got but whose acknowledgement was lost comes twice)."""
        while self._sending:
            msg, task = self._sending.pop()
            if task.done() and not task.cancelled() and task.exception() is None:
                self._m.published.labels(qos=str(msg.qos)).inc()
                continue
            task.cancel()
            self._buffer.appendleft(msg)
        while len(self._buffer) > self.config.buffer:  # the buffer's bound holds, as in _enqueue
            self._drop_one()

    def _drop_one(self) -> None:
        """The buffer is full: the oldest QoS 0 message goes (a delta, a VAD event: a late reader wants the newest
        state), else the oldest. The QoS 1 ones are what a dashboard builds on: a session's opening and closing,
        its retained status set and cleared (a lost clear is a ghost session), response.done."""
        oldest_qos0 = next((i for i, m in enumerate(self._buffer) if m.qos == 0), 0)
        del self._buffer[oldest_qos0]
        self._m.dropped.inc()

    async def _metrics_loop(self, client: aiomqtt.Client) -> None:
        while True:
            await client.publish(f"{self._node}/metrics", self._node_metrics(), qos=0)
            await asyncio.sleep(self.config.metrics_interval)

    def _node_metrics(self) -> bytes:
        r = self.metrics.registry
        body: dict[str, object] = {"node_id": self.config.node_id, "time": time.time(),
                                   "uptime_s": round(time.time() - self._started, 3)}
        for key, sample in _NODE_SAMPLES.items():
            body[key] = r.get_sample_value(sample)
        body["mqtt_buffered"] = self._pending()
        body["mqtt_dropped_total"] = r.get_sample_value("stepaudio_mqtt_dropped_total")
        return json.dumps(body, separators=(",", ":")).encode()

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            statuses = self._directory.observe(self.config.prefix, message.topic.value, payload)
            if statuses is not None:
                for session_id, node_id in statuses:
                    logger.info("mqtt: %s the status of session %s", "restoring" if node_id else "clearing a ghost",
                                session_id)
                    self._enqueue(session_status_message(self.config.prefix, session_id, node_id, time.time()))
                continue
            task = asyncio.create_task(self._dispatch(message.topic.value, payload))
            self._commands.add(task)
            task.add_done_callback(self._commands.discard)

    async def _dispatch(self, topic: str, payload: bytes) -> None:
        if self._directory.owned_elsewhere(session_of(self.config.prefix, topic)):
            return  # its node answers
        try:
            cmd = parse_command(self.config.prefix, topic, payload)
            if cmd is None:
                return
            logger.info("mqtt: command %s for %s", cmd.name, cmd.session_id)
            await self.command(cmd.session_id, cmd.name, cmd.payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a command's failure is answered on the bus, never raised
            logger.warning("mqtt: command on %s failed: %s", topic, error_text(exc))
            self._enqueue(command_error_message(self.config.prefix, topic, payload, exc, self.config.node_id))
