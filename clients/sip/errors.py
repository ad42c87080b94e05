"""Errors of the SIP bridge cores (one tree).

    SipError
    ├── LocalProtocolError    the caller misused a core (an illegal transition, an unknown call id)
    └── RemoteProtocolError   bad input from the peer; `status` is the SIP response it deserves (400, 488, ...)
        └── NoCommonCodec     an SDP offer with nothing we can speak (488 Not Acceptable Here)

Parsers raise RemoteProtocolError; the UA core turns it into an error response or a counted drop and never
lets it escape `receive_datagram`.
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "NoCommonCodec", "RemoteProtocolError", "SipError"]


class SipError(Exception):
    """Base of every error raised by clients.sip."""


class LocalProtocolError(SipError):
    """The caller used a core wrongly (e.g. answered a call that is not ringing)."""


class RemoteProtocolError(SipError):
    """The peer sent something we cannot accept. `status`/`reason` is the SIP response hint."""

    def __init__(self, message: str, status: int = 400, reason: str = "Bad Request") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class NoCommonCodec(RemoteProtocolError):
    """The offer names no PCMU/PCMA audio stream we can answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 488, "Not Acceptable Here")
