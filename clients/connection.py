"""Pure parts of the client's connection: the URL a user may type, the reconnect policy and the errors a
connection ends with. No I/O: `clients.realtime_client` owns the socket."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.exceptions import InvalidStatus

__all__ = ["HandshakeRefused", "RealtimeConnectionError", "ReconnectPolicy", "build_url", "key_refusal"]


class RealtimeConnectionError(ConnectionError):
    """The connection is gone for good (closed by the server with a final code, or reconnecting gave up), or was
    never made. `close_code`: the server's WebSocket close code when it closed the connection for good (1000: it
    ended the session on purpose, e.g. an operator's hangup), else None."""

    def __init__(self, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


class HandshakeRefused(InvalidStatus):
    """The server refused the WebSocket handshake; unlike websockets' InvalidStatus (its base, so handlers of that
    still catch it), the text carries the server's reason from the response body, e.g. "HTTP 503: full"."""

    def __str__(self) -> str:
        reason = (self.response.body or b"").decode("utf-8", "replace").strip()
        return f"{super().__str__()}: {reason}" if reason else super().__str__()


def key_refusal(url: str, api_key: str | None, exc: BaseException) -> str | None:
    """Why a connection refused for its key failed, and how to give the key to talk or sip-bridge, which share the
    option and its variable (None: not refused for the key). The server's own words ("HTTP 401: invalid or missing
    API key") named neither."""
    if not isinstance(exc, InvalidStatus) or exc.response.status_code != 401:
        return None
    said = f"HTTP 401: {(exc.response.body or b'').decode('utf-8', 'replace').strip()}".rstrip(": ")
    if api_key is None:
        return (f"the server at {url} needs an API key ({said}): give it with --api-key KEY or in env "
                "STEPAUDIO_RT_API_KEY")
    return (f"the server at {url} refused the API key ({said}): check the key given with --api-key or in env "
            "STEPAUDIO_RT_API_KEY against the server's --api-key (or its env STEPAUDIO_RT_API_KEYS)")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconnectPolicy:
    """Exponential backoff: delays initial, initial*factor, ... capped at max_delay_s, max_attempts tries."""

    enabled: bool = True
    initial_delay_s: float = 0.25
    factor: float = 2.0
    max_delay_s: float = 8.0
    max_attempts: int = 8
    final_close_codes: tuple[int, ...] = (1000, 1008)  # normal close, policy (e.g. bad key): do not retry

    def __post_init__(self) -> None:
        if self.initial_delay_s < 0 or self.factor < 1 or self.max_delay_s < 0 or self.max_attempts < 0:
            raise ValueError(f"invalid reconnect policy {self}: delays and attempts must be >= 0, factor >= 1")

    def delays(self) -> Iterator[float]:
        """The wait before each reconnect attempt (pure)."""
        if not self.enabled:
            return
        d = self.initial_delay_s
        for _ in range(self.max_attempts):
            yield min(d, self.max_delay_s)
            d *= self.factor


def build_url(url: str, model: str | None) -> str:
    """The Realtime WebSocket URL for what a user may type: the server's address alone (ws://host:port, or the
    http(s) base URL the openai SDK takes, with or without /v1) reaches /v1/realtime; ?model= is added unless the
    URL names one."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if path in ("", "/v1"):
        path = "/v1/realtime"
    query = parse_qsl(parts.query, keep_blank_values=True)
    if model and not any(k == "model" for k, _ in query):
        query.append(("model", model))
    return urlunsplit(parts._replace(scheme=scheme, path=path, query=urlencode(query)))
