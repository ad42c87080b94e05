"""The one error tree of the agent server.

    AgentError
    ├── ConfigError              bad configuration (our files, CLI, or a config object built wrong)
    ├── ProtocolError            with wire hints: Realtime error type/code/param, client event_id, WS close code
    │   ├── LocalProtocolError   we (the caller) misused a protocol core; maps to Realtime "server_error"
    │   └── RemoteProtocolError  the peer sent something invalid; maps to Realtime "invalid_request_error"
    ├── MediaError               audio could not be decoded/encoded/resampled
    ├── EngineError              a model backend failed
    ├── LoadCancelled            the server was stopped between two model loads (Ctrl-C while loading)
    ├── PipelineClosed           the speech pipeline was closed: its models are released
    └── SessionClosed            the session is gone; further calls are refused

Cores raise; adapters map an exception to the wire exactly once (an `error` server event, or a
close frame when `close_code` is set).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import threading

__all__ = [
    "AgentError",
    "ConfigError",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "MediaError",
    "EngineError",
    "LoadCancelled",
    "PipelineClosed",
    "SessionClosed",
    "stop_if_cancelled",
]


class AgentError(Exception):
    """Root of every error the server raises on purpose."""


class ConfigError(AgentError):
    """A configuration value is invalid (raised from __post_init__ and config loading)."""


class ProtocolError(AgentError):
    """A protocol rule was broken; the attributes are what the wire error needs.

    Attributes:
        message: human-readable text, sent as `error.message`.
        code: Realtime error code, e.g. "invalid_json", "invalid_value".
        param: dotted path of the offending field, e.g. "session.audio.input.format.type".
        event_id: the client event's own `event_id`, echoed back so the client can correlate.
        close_code: WebSocket close code when the error must also end the connection, else None.
    """

    #: Realtime `error.type` for this class of error.
    error_type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        code: str,
        param: str | None = None,
        event_id: str | None = None,
        close_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.event_id = event_id
        self.close_code = close_code

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, code={self.code!r}, param={self.param!r}, "
            f"event_id={self.event_id!r})"
        )


class LocalProtocolError(ProtocolError):
    """The local side (our own code) broke the protocol: a bug, reported as a server error."""

    error_type = "server_error"


class RemoteProtocolError(ProtocolError):
    """The peer sent an invalid event or value."""

    error_type = "invalid_request_error"


class MediaError(AgentError):
    """Audio could not be decoded, encoded or resampled."""


class EngineError(AgentError):
    """A model backend (LM, ASR, TTS) failed."""


class LoadCancelled(AgentError):
    """A model load stopped before its next model, the server having been asked to stop."""


def stop_if_cancelled(cancel: threading.Event | None) -> None:
    """Raises LoadCancelled once `cancel` is set: between two model loads, the only points where a load can stop
    (one under way cannot be cut short), so a Ctrl-C while the first one loads does not wait for all the others."""
    if cancel is not None and cancel.is_set():
        raise LoadCancelled("stopped between two model loads")


class PipelineClosed(AgentError):
    """The speech pipeline was closed (its models released); it takes no more work."""


class SessionClosed(AgentError):
    """The session has ended; no further events are accepted."""
