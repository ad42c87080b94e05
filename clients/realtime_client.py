"""Asyncio transport of the Python client: one WebSocket to a Realtime server, with reconnect and barge-in.

The protocol parts live in pure modules (events, audio, playback, connection, session_tracker); this module only owns
the socket, the reader task, sleeping for pacing and the monotonic clock.

Reconnect: when the connection drops (anything but a close code in `ReconnectPolicy.final_close_codes`), the
reader retries with exponential backoff and, once connected, re-sends every session field set so far (all the
session.updates merged into one, less those the server refused) and puts a `client.reconnected` event into the
stream. A reply under way when the connection dropped never gets its response.done: the client ends it with a
`client.response_lost` event (data: response_id) as soon as the drop is seen. The server session is a new one:
conversation state is gone, and input audio timestamps restart at 0.
Sends made while reconnecting wait for it; when the policy gives up, `events()` raises `RealtimeConnectionError`
and sends raise it too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Coroutine, Mapping

import numpy as np
from websockets.asyncio.client import ClientConnection, connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from clients import events as ev
from clients.audio import WIRE_RATE, AudioSource, Chunker, Pacing, SendLog, chunk_samples, float_to_pcm16, wire_blocks
from clients.connection import HandshakeRefused, RealtimeConnectionError, ReconnectPolicy, build_url
from clients.events import ServerEvent
from clients.playback import Playback
from clients.session_tracker import SessionTracker

__all__ = ["AudioSource", "HandshakeRefused", "RealtimeClient", "RealtimeConnectionError", "ReconnectPolicy",
           "build_url"]

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 2**20  # the Realtime API allows 15 MiB events; leave headroom
# The socket's send buffer (the kernel doubles it). Audio streamed faster than the server reads it (a server that reads
# input only as fast as it transcribes it) waits there, and this client's keepalive pings behind it: Linux grew it to
# 4 MB on loopback, 45 s of audio ahead of a ping, and the connection closed with 1011 keepalive ping timeout.
SEND_BUFFER_BYTES = 64 * 1024
NOT_CONNECTED = "not connected: open the client with `await RealtimeClient.connect(url)`, not its constructor"


class RealtimeClient:
    """A Realtime API session over one (reconnecting) WebSocket. Build it with `await RealtimeClient.connect(...)`.

    Not thread-safe: call it only on the event loop it was connected on. A thread-based program runs that loop in a
    thread of its own and hands it each call, e.g. `asyncio.run_coroutine_threadsafe(rt.commit(), loop).result()`.

    Attributes:
        playback: barge-in bookkeeping of received audio (a virtual real-time player); its `now` arguments are
            the event loop's clock, `asyncio.get_running_loop().time()`.
        input_samples_sent: 24 kHz samples appended in the current server session.
        reconnects: how many times the connection was re-established.
    """

    def __init__(self, url: str, *, api_key: str | None = None, model: str | None = "stepaudio-rt",
                 reconnect: ReconnectPolicy = ReconnectPolicy(), auto_truncate: bool = True,
                 open_timeout: float = 10.0, ping_interval: float | None = 20.0,
                 ping_timeout: float | None = 20.0) -> None:
        self.url = build_url(url, model)
        self.api_key = api_key
        self.policy = reconnect
        self.auto_truncate = auto_truncate
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._tracker = SessionTracker()
        self.input_samples_sent = 0
        self.reconnects = 0
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._queue: asyncio.Queue[ServerEvent | None] = asyncio.Queue()
        self._failure: BaseException | None = None
        self._closing = False
        self._reader: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()  # truncates and replays sent by the reader, kept until done

    @classmethod
    async def connect(cls, url: str, api_key: str | None = None, model: str | None = "stepaudio-rt", *,
                      reconnect: ReconnectPolicy = ReconnectPolicy(), auto_truncate: bool = True,
                      open_timeout: float = 10.0, ping_interval: float | None = 20.0,
                      ping_timeout: float | None = 20.0) -> RealtimeClient:
        """Open the WebSocket (no retry for the first connection: a wrong URL or key should fail fast). Raises what
        the connection attempt met: OSError for a refused, unreachable or unknown host (ConnectionRefusedError,
        socket.gaierror, TimeoutError after `open_timeout`), HandshakeRefused (an InvalidStatus) for a refused handshake
        (its response: 401 a key, 404 a path, 503 a full or loading server; its text ends with the server's reason),
        InvalidMessage when what answered is not a WebSocket server (a wrong port), InvalidURI for a URL that is not
        ws(s)/http(s). A server that stops answering is found by websockets' keepalive: a ping every
        `ping_interval` s, the connection lost (and reconnected, per `reconnect`) when no pong comes within
        `ping_timeout` s and websockets' 10 s close timeout (None turns either off)."""
        client = cls(url, api_key=api_key, model=model, reconnect=reconnect, auto_truncate=auto_truncate,
                     open_timeout=open_timeout, ping_interval=ping_interval, ping_timeout=ping_timeout)
        client._ws = await client._open()
        client._connected.set()
        client._reader = asyncio.create_task(client._read_loop(), name="realtime-client-reader")
        return client

    async def __aenter__(self) -> RealtimeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def playback(self) -> Playback:
        return self._tracker.playback

    @property
    def connected(self) -> bool:
        """Whether the WebSocket is up now (False while a reconnect is under way, and after close())."""
        return self._connected.is_set()

    # ----- sending -----

    async def send(self, event: Mapping[str, object]) -> None:
        """Send one client event (a dict); waits while reconnecting, re-sends once on the new connection."""
        data = json.dumps(event, separators=(",", ":"))
        for _ in range(2):
            ws = await self._wait_connected()
            try:
                await ws.send(data)
                return
            except ConnectionClosed:
                # The reader notices the drop too and reconnects; wait for it, then try once more.
                if self._ws is ws:
                    self._connected.clear()
        raise RealtimeConnectionError("connection lost while sending")

    async def session_update(self, session: Mapping[str, object] | None = None, **fields: object) -> None:
        """session.update with `session` and/or keyword fields. After a reconnect the new server session gets every
        field set so far, merged as the server merged them (a later update's field wins), in one session.update."""
        await self.send(self._tracker.session.update({**(session or {}), **fields}))

    async def append_audio(self, pcm16: bytes) -> None:
        """input_audio_buffer.append of PCM16 24 kHz mono bytes.

        Raises:
            ValueError: this client set the session's input format to G.711 (audio/pcmu, audio/pcma), which the
                server would read these bytes as; send G.711 bytes with `send(clients.events.append_event(...))`.
        """
        fmt = ev.input_format(self._tracker.session.merged() or {})
        encoder = ev.G711_ENCODERS.get(fmt)
        if encoder is not None:
            raise ValueError(f"append_audio and stream_audio send PCM16 at 24 kHz, but this session's input format "
                             f"is {fmt}: set audio.input.format to audio/pcm, or send G.711 bytes yourself with "
                             f"send(clients.events.append_event(clients.g711.{encoder}(pcm16_at_8khz)))")
        await self.send(ev.append_event(pcm16))
        self.input_samples_sent += len(pcm16) // 2

    async def commit(self) -> None:
        """input_audio_buffer.commit: the audio appended so far is the user's turn (push-to-talk's release)."""
        await self.send(ev.commit_event())

    async def clear_audio(self) -> None:
        """input_audio_buffer.clear: drop the audio appended since the last commit."""
        await self.send(ev.clear_event())

    async def create_response(self, response: Mapping[str, object] | None = None) -> None:
        """response.create, with `response` as its overrides (instructions, conversation "none", input, ...)."""
        await self.send(ev.create_response_event(response))

    async def cancel_response(self, response_id: str | None = None) -> None:
        """response.cancel: the reply in progress, or the one named (an out-of-band reply needs its id)."""
        await self.send(ev.cancel_response_event(response_id))

    async def truncate(self, item_id: str, audio_end_ms: int, content_index: int = 0) -> None:
        """conversation.item.truncate: the user heard assistant item `item_id` only up to `audio_end_ms` (ms of that
        item's audio); the server stops that reply and keeps only the heard words. With auto_truncate the client
        sends it itself when the server reports speech over a playing reply; for a barge-in of your own (say,
        push-to-talk), send each of `self.playback.interrupt(loop.time())`'s truncations (with `loop` the running
        event loop): the reply stops, and its audio still to come is no longer counted as played."""
        await self.send(ev.truncate_event(item_id, audio_end_ms, content_index))

    async def stream_audio(self, source: AudioSource, sample_rate: int, realtime: bool | float = True, *,
                           chunk_ms: int = 20, silence_ms: int = 0, log: SendLog | None = None) -> SendLog:
        """Resample `source` to 24 kHz PCM16 and append it in `chunk_ms` chunks, paced like a microphone.

        Args:
            source: a whole array ([n] or [n, channels], float or int16) or whole PCM16 bytes (mono), or a (async)
                iterable of such blocks or PCM16 bytes, all at `sample_rate`.
            realtime: True = real time, False = as fast as possible, a float = that speed factor.
            silence_ms: digital silence appended after the source (lets server VAD end the turn).
            log: an empty SendLog to fill while streaming (lets a concurrent task read send times live).
        Returns:
            The send log: when each chunk left, in samples of this stream (base = session offset).
        """
        pacing = Pacing.from_arg(realtime)
        chunker = Chunker(chunk_samples(chunk_ms))
        if log is None:
            log = SendLog()
        elif log.ends:
            raise ValueError("stream_audio needs an empty SendLog")
        log.base = self.input_samples_sent
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def emit(chunks: list[np.ndarray]) -> None:
            for chunk in chunks:
                end = log.samples_sent + chunk.size
                await asyncio.sleep(pacing.delay(end, t0, loop.time()))  # sleep(0) still yields when unpaced
                await self.append_audio(float_to_pcm16(chunk))
                log.record(end, loop.time())

        async for block in wire_blocks(source, sample_rate):
            await emit(chunker.push(block))
        if silence_ms > 0:
            await emit(chunker.push(np.zeros(WIRE_RATE * silence_ms // 1000, np.float32)))
        await emit(chunker.flush())
        return log

    # ----- receiving -----

    async def events(self) -> AsyncIterator[ServerEvent]:
        """Server events in order (plus local client.* events) until close(); raises RealtimeConnectionError
        if the connection is lost for good."""
        if self._reader is None and not self._closing:
            raise RealtimeConnectionError(NOT_CONNECTED)
        while True:
            event = await self._queue.get()
            if event is None:
                self._queue.put_nowait(None)  # keep the end marker for any later reader
                if self._failure is not None and not self._closing:
                    raise self._ended_error() from self._failure
                return
            yield event

    async def recv(self, timeout: float | None = None) -> ServerEvent:
        """The next event; raises TimeoutError, or RealtimeConnectionError when the stream has ended."""
        if self._reader is None and not self._closing:
            raise RealtimeConnectionError(NOT_CONNECTED)
        # asyncio.timeout, not wait_for: Python 3.11's wait_for can drop a cancellation (Ctrl-C) that meets an event
        # arriving at the same moment, and the caller then runs on (CPython gh-86296)
        async with asyncio.timeout(timeout):
            event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)
            raise self._ended_error()
        return event

    def _ended_error(self) -> RealtimeConnectionError:
        """The error for a reader of the ended event stream, with the server's close code when it closed it."""
        code = self._failure.close_code if isinstance(self._failure, RealtimeConnectionError) else None
        return RealtimeConnectionError(str(self._failure or "connection closed"), close_code=code)

    async def close(self) -> None:
        """Close the connection for good (no reconnect); events() then ends. Calling it again is harmless."""
        self._closing = True
        # A send still pending would only fail on the closed socket (and be garbage-collected pending).
        for task in self._sends:
            task.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
        self._connected.clear()
        self._queue.put_nowait(None)

    # ----- internals -----

    async def _open(self) -> ClientConnection:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
        try:
            ws = await ws_connect(self.url, additional_headers=headers, max_size=MAX_MESSAGE_BYTES,
                                  open_timeout=self.open_timeout, ping_interval=self.ping_interval,
                                  ping_timeout=self.ping_timeout)
        except InvalidStatus as exc:
            raise HandshakeRefused(exc.response) from exc
        sock = ws.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        return ws

    async def _wait_connected(self) -> ClientConnection:
        while not self._connected.is_set():
            if self._failure is not None or self._closing:
                raise RealtimeConnectionError(str(self._failure or "client closed"))
            if self._reader is None:  # built with the constructor: nothing would ever connect it
                raise RealtimeConnectionError(NOT_CONNECTED)
            waiter = asyncio.ensure_future(self._connected.wait())
            done = self._reader if self._reader is not None else waiter
            await asyncio.wait({waiter, done}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        assert self._ws is not None  # invariant: _connected is set only with a live socket
        return self._ws

    async def _read_loop(self) -> None:
        try:
            while True:
                ws = self._ws
                assert ws is not None
                try:
                    async for raw in ws:
                        self._on_frame(raw)
                except ConnectionClosed:
                    pass
                self._connected.clear()
                if self._closing:
                    return
                for lost in self._tracker.lost_responses():
                    self._queue.put_nowait(lost)
                code = ws.close_code if ws.close_code is not None else 1006
                if code in self.policy.final_close_codes or not (self.policy.enabled and self.policy.max_attempts):
                    raise RealtimeConnectionError(_closed_text(code, ws.close_reason), close_code=code)
                logger.warning("realtime connection dropped (code %s); reconnecting", code)
                await self._reconnect()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # task root: record, end the event stream, wake waiting senders
            self._failure = exc
            self._queue.put_nowait(None)

    async def _reconnect(self) -> None:
        last: BaseException | None = None
        for attempt, delay in enumerate(self.policy.delays(), start=1):
            await asyncio.sleep(delay)
            try:
                ws = await self._open()
            except InvalidStatus as exc:
                if exc.response.status_code in (401, 403):
                    raise RealtimeConnectionError(f"reconnect refused: HTTP {exc.response.status_code}") from exc
                last = exc
                continue
            except (OSError, WebSocketException, TimeoutError) as exc:
                last = exc
                continue
            if (replay := self._tracker.session.replay()) is not None:
                try:
                    await ws.send(json.dumps(replay, separators=(",", ":")))
                except ConnectionClosed as exc:
                    last = exc
                    continue
            self._ws = ws
            self.reconnects += 1
            self.input_samples_sent = 0  # a new server session: its audio clock starts again
            self.playback.reset()
            self._connected.set()
            self._queue.put_nowait(ServerEvent(ev.CLIENT_RECONNECTED, {"type": ev.CLIENT_RECONNECTED,
                                                                          "attempt": attempt}))
            return
        raise RealtimeConnectionError(f"reconnecting gave up: {last}")

    def _on_frame(self, raw: str | bytes) -> None:
        try:
            event = ev.parse_server_event(raw)
        except ev.ServerEventError as exc:
            logger.warning("ignoring a bad server frame: %s", exc)
            return
        self._queue.put_nowait(event)
        try:
            self._track(event, asyncio.get_running_loop().time())
        except ev.ServerEventError as exc:  # one bad audio delta must not end the session (its reader is this task)
            logger.warning("not playing a bad server event: %s", exc)

    def _track(self, event: ServerEvent, now: float) -> None:
        """The tracker's bookkeeping, and the truncations it asks for sent (automatic barge-in)."""
        for tr in self._tracker.on_event(event, now, auto_truncate=self.auto_truncate):
            self._send_soon(self.truncate(tr.item_id, tr.audio_end_ms, tr.content_index))
            self._queue.put_nowait(ServerEvent(ev.CLIENT_TRUNCATED, {
                "type": ev.CLIENT_TRUNCATED, "item_id": tr.item_id, "content_index": tr.content_index,
                "audio_end_ms": tr.audio_end_ms}))
        if (replay := self._tracker.replay_again) is not None:
            self._tracker.replay_again = None
            self._send_soon(self.send(replay))

    def _send_soon(self, sending: Coroutine[object, object, None]) -> None:
        # A task keeps the reader reading; frames still go out in order on the one socket.
        task = asyncio.ensure_future(sending)
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)
        task.add_done_callback(_log_send_failure)


def _log_send_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("sending a truncate or the session's fields failed: %s", task.exception())


def _closed_text(code: int, reason: str | None) -> str:
    """Why the connection ended, from its close code and the server's reason."""
    if code == 1006:  # no close frame came: "server closed the connection" read as if the server had chosen to
        return "the server sent no close (code 1006: it stopped, or the network failed)"
    # With the server's reason: "code 1000" alone reads as a fault where an operator hung up.
    return f"server closed the connection (code {code}{f': {reason}' if reason else ''})"
