"""The network face: one port serving the Realtime WebSocket, the browser page, /healthz, /voices and /metrics."""

from __future__ import annotations

import asyncio
import errno
import hmac
import http
import json
import logging
import mimetypes
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidMessage
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol

from controller.errors import ConfigError
from controller.metrics import Metrics

logger = logging.getLogger(__name__)

REALTIME_PATH = "/v1/realtime"
SHUTDOWN_REASON = "server shutting down"  # the close reason of every session at Ctrl-C or SIGTERM (1001)
# Browsers cannot set headers on a WebSocket: they pass the key as a subprotocol, as OpenAI's API accepts.
KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
WEB_ROOT = Path(__file__).resolve().parent.parent / "clients" / "web"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    api_keys: tuple[str, ...] = ()
    # The transport limit sits above the protocol's 15 MiB so that an oversized event gets a clear
    # error event from the protocol layer instead of a bare close.
    ws_max_size: int = 32 * 1024 * 1024
    max_event_bytes: int = 15 * 1024 * 1024
    web_root: Path = WEB_ROOT
    # Sessions beyond this get HTTP 503 at the handshake (a load balancer retries another server) instead of
    # slowing every session down: each one needs real-time speech recognition, LM and synthesis. None: no limit.
    max_sessions: int | None = None
    retry_after_s: int = 5
    # Each connection's socket receive buffer (the kernel doubles it; 0: the kernel's, which it grows by itself). A
    # session that reads its input only as fast as it transcribes it (max_pending_turns) leaves a fast sender's data
    # in this buffer, and the sender's keepalive pings behind it: Linux grew it to 3 MB, 35 s of audio ahead of a
    # ping, and the sender's websockets closed with 1011 keepalive ping timeout (one seen under a 15x sender).
    # 128 KB is 1.5 s of 24 kHz audio events, and takes a 15 MiB event in 6 s over a 50 ms round trip.
    recv_buffer_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:  # 0: any free port (tests)
            raise ConfigError(f"--port must be between 0 and 65535, got {self.port}")
        if any(not key.strip() for key in self.api_keys):  # `--api-key "$KEY"` with KEY unset
            raise ConfigError("--api-key is empty")


REFUSAL_LOG_EVERY_S = 60.0

SessionHandler = Callable[[ServerConnection, str | None, str], Awaitable[None]]  # (connection, ?model=, session kind)
ChatCheck = Callable[[], Awaitable[str | None]]  # why the chat LM cannot answer a reply now, or None


@dataclass(frozen=True, slots=True, kw_only=True)
class VoiceList:
    """The voices a session may pick (audio.output.voice), for /voices: the browser page offers them."""

    default: str
    names: tuple[str, ...]


VoiceLister = Callable[[], VoiceList | None]  # None while the models load
# Read-only answers a page served from another host may read: a browser shows it only code 1006 for a refused
# WebSocket, and a voice picker needs the list.
CORS = ("Access-Control-Allow-Origin", "*")


def _text(status: http.HTTPStatus, body: str | bytes, content_type: str = "text/plain; charset=utf-8",
          extra: list[tuple[str, str]] | None = None) -> Response:
    data = body.encode() if isinstance(body, str) else body
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(data))),
                       ("Cache-Control", "no-store"), *(extra or [])])
    return Response(status.value, status.phrase, headers, data)


def _offered_key(request: Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    for value in request.headers.get_all("Sec-WebSocket-Protocol"):
        for proto in (p.strip() for p in value.split(",")):
            if proto.startswith(KEY_SUBPROTOCOL_PREFIX):
                return proto[len(KEY_SUBPROTOCOL_PREFIX):]
    return None


def _bind_failure(exc: OSError) -> str:
    # asyncio rewords a bind error as "error while attempting to bind on address (...): ..."; say it once.
    if isinstance(exc, socket.gaierror) or not exc.errno:
        return exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        # Most often a second `make serve`, where --port is not the way to say it (make refuses the option).
        return "address already in use (another server? choose a free one with --port, or make serve PORT=N)"
    if exc.errno == errno.EADDRNOTAVAIL:  # the system's words alone did not say which address would do
        return (f"{os.strerror(exc.errno)} (not an address of this machine: give one of its own, or 0.0.0.0 to "
                "listen on all of them)")
    return os.strerror(exc.errno)


class _ConnectionLog(logging.LoggerAdapter[logging.Logger]):
    """websockets' log of the server's connections, less a traceback at ERROR for every client that hung up or sent
    no HTTP request before the handshake ended: a TCP health check, a port scan, a probe that gave up waiting.
    That is the client's doing, not a server failure: one DEBUG line says what happened."""

    # kwargs: logging's own keywords (exc_info, stack_info, stacklevel, extra), each of its own type, passed on.
    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc = sys.exc_info()[1]  # websockets logs this from inside its `except`
        if msg == "opening handshake failed" and isinstance(exc, (InvalidMessage, ConnectionClosed)):
            level, msg, args = logging.DEBUG, "opening handshake failed: %s", (exc,)
            kwargs = {**kwargs, "exc_info": False}
        super().log(level, msg, *args, **kwargs)


class RealtimeServer:
    """Routes HTTP requests and hands each accepted WebSocket to `handler` with the requested model and session
    kind ("transcription" for ?intent=transcription, as the Realtime API's transcription sessions connect)."""

    def __init__(self, config: ServerConfig, metrics: Metrics, handler: SessionHandler,
                 chat_check: ChatCheck | None = None, voices: VoiceLister | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.handler = handler
        self.chat_check = chat_check
        self.voices = voices
        self.ready = False
        self._server: Server | None = None
        # Counted from the handshake, so that handshakes racing for the last place cannot both take it.
        self._admitted: set[ServerConnection] = set()
        self._in_session: set[ServerConnection] = set()  # admitted connections whose session has begun
        self._refused_unlogged = 0
        self._refusal_logged_at: float | None = None

    def _authorized(self, request: Request) -> bool:
        if not self.config.api_keys:
            return True
        key = _offered_key(request)
        return key is not None and any(hmac.compare_digest(key, k) for k in self.config.api_keys)

    def _static(self, path: str) -> Response:
        root = self.config.web_root.resolve()
        target = (root / (path.lstrip("/") or "index.html")).resolve()
        if root not in target.parents and target != root or not target.is_file():
            return _text(http.HTTPStatus.NOT_FOUND, "not found\n")
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript",):
            ctype += "; charset=utf-8"
        return _text(http.HTTPStatus.OK, target.read_bytes(), ctype)

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if path == "/healthz":
            return await self._health()
        if path == "/voices":
            return self._voices()
        if path == "/metrics":
            return _text(http.HTTPStatus.OK, self.metrics.render(),
                         "text/plain; version=0.0.4; charset=utf-8")
        if path in (REALTIME_PATH, REALTIME_PATH + "/"):
            # The key before the upgrade: a client whose handshake was refused (a browser sees no status) asks again
            # as a plain request with the key, and 401 or 426 tells a wrong key from a proxy that drops upgrades.
            if not self._authorized(request):
                return _text(http.HTTPStatus.UNAUTHORIZED, "invalid or missing API key\n")
            if not upgrade:
                return _text(http.HTTPStatus.UPGRADE_REQUIRED, "WebSocket upgrade required\n",
                             extra=[("Upgrade", "websocket")])
            if not self.ready:
                return self._loading()
            if not self._admit(connection):
                self.metrics.sessions_refused.inc()
                self._log_refusal(time.monotonic())
                return _text(http.HTTPStatus.SERVICE_UNAVAILABLE,
                             f"server full (--max-sessions {self.config.max_sessions}), retry later\n",
                             extra=[("Retry-After", str(self.config.retry_after_s))])
            return None
        if upgrade:  # most likely a client configured without /v1 (the openai SDK's base_url) or with a typo
            logger.warning("refused a WebSocket to %s (404): the Realtime API is at %s", path, REALTIME_PATH)
            return _text(http.HTTPStatus.NOT_FOUND, f"not found: the Realtime API is at {REALTIME_PATH}\n")
        return self._static(path)

    def _log_refusal(self, now: float) -> None:
        """A full server says so in its log, at most once a minute (a load balancer's retries would flood it): an
        operator reading the log saw nothing of the clients it turned away."""
        self._refused_unlogged += 1
        if self._refusal_logged_at is None or now - self._refusal_logged_at >= REFUSAL_LOG_EVERY_S:
            logger.warning("server full (--max-sessions %d): refused %d session(s)%s", self.config.max_sessions,
                           self._refused_unlogged, "" if self._refusal_logged_at is None else
                           f" in the last {now - self._refusal_logged_at:.0f} s")
            self._refused_unlogged, self._refusal_logged_at = 0, now

    async def _health(self) -> Response:
        """/healthz: whether a new session would be served. 200 {"status": "ok"}; else 503 with Retry-After and
        {"status": "loading" | "full" | "chat_lm_down", "reason": ...}; both with the sessions and --max-sessions."""
        taken = self._places_taken()
        places = {"sessions": taken, "max_sessions": self.config.max_sessions}
        reason: str | None
        if not self.ready:
            status, reason = "loading", "the models are loading"
        elif self.config.max_sessions is not None and taken >= self.config.max_sessions:
            status, reason = "full", f"server full (--max-sessions {self.config.max_sessions})"
        else:
            status, reason = "chat_lm_down", await self.chat_check() if self.chat_check is not None else None
        if reason is None:
            return _text(http.HTTPStatus.OK, json.dumps({"status": "ok", **places}) + "\n", "application/json", [CORS])
        return _text(http.HTTPStatus.SERVICE_UNAVAILABLE,
                     json.dumps({"status": status, "reason": reason, **places}) + "\n", "application/json",
                     extra=[("Retry-After", str(self.config.retry_after_s)), CORS])

    def _voices(self) -> Response:
        """/voices: 200 {"default": name, "voices": [names]}; 503 while the models load."""
        voices = self.voices() if self.voices is not None and self.ready else None
        if voices is None:
            return self._loading()
        body = json.dumps({"default": voices.default, "voices": list(voices.names)}) + "\n"
        return _text(http.HTTPStatus.OK, body, "application/json", [CORS])

    def _loading(self) -> Response:
        # With when to come back: a 503 without Retry-After tells a load balancer or client nothing of it.
        return _text(http.HTTPStatus.SERVICE_UNAVAILABLE, "loading\n",
                     extra=[("Retry-After", str(self.config.retry_after_s))])

    def _places_taken(self) -> int:
        # A handshake that failed after being admitted never reaches _handle: its connection is closed by now. A
        # session's connection keeps its place until the session has ended, closed or not: a client that hung up
        # leaves a session stopping its replies, which still counts (else max + 1 ran, and sessions_live said so).
        self._admitted = {c for c in self._admitted if c in self._in_session or c.state is not State.CLOSED}
        return len(self._admitted)

    def _admit(self, connection: ServerConnection) -> bool:
        if self.config.max_sessions is not None and self._places_taken() >= self.config.max_sessions:
            return False
        self._admitted.add(connection)
        return True

    @staticmethod
    def _select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        # Echo the browser's key subprotocol (or "realtime"): a browser refuses a handshake that
        # doesn't pick one of the protocols it offered.
        for proto in offered:
            if proto == "realtime" or proto.startswith(KEY_SUBPROTOCOL_PREFIX):
                return proto
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        sock = connection.transport.get_extra_info("socket")
        if self.config.recv_buffer_bytes and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.recv_buffer_bytes)
        query = parse_qs(urlsplit(connection.request.path if connection.request else "").query)
        model = query["model"][0] if query.get("model") else None
        kind = "transcription" if (query.get("intent") or [""])[0] == "transcription" else "realtime"
        self._in_session.add(connection)
        try:
            await self.handler(connection, model, kind)
        finally:
            self._admitted.discard(connection)
            self._in_session.discard(connection)

    async def start(self) -> Server:
        """Listen; raises ConfigError when --host/--port cannot be bound (in use, not an address here)."""
        try:
            self._server = await serve(
                self._handle, self.config.host, self.config.port,
                process_request=self.process_request,
                select_subprotocol=self._select_subprotocol,
                max_size=self.config.ws_max_size, compression=None,
                # Audio deltas can back up behind a slow client; the session's own queues bound that.
                write_limit=4 * 1024 * 1024, max_queue=64, ping_interval=20, ping_timeout=60,
                logger=_ConnectionLog(logging.getLogger("websockets.server")),
            )
        except OSError as exc:  # EADDRINUSE, EADDRNOTAVAIL, EACCES, or a host name that does not resolve
            where = f"{self.config.host}:{self.config.port}"
            raise ConfigError(f"cannot listen on {where}: {_bind_failure(exc)}") from exc
        return self._server

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            # With a reason, which clients show: websockets' own 1001 has none, and talk said "connection lost:
            # server closed the connection (code 1001)", a fault to the user who had only stopped the server.
            await asyncio.gather(*(c.close(1001, SHUTDOWN_REASON) for c in self._server.connections))
            self._server.close()
            await self._server.wait_closed()


