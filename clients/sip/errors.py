"""Errors of the SIP bridge cores (one tree).

    SipError
    ├── BridgeConfigError     a BridgeConfig field with a value the bridge cannot work with (also a ValueError)
    ├── LocalProtocolError    the caller misused a core (an illegal transition, an unknown call id)
    └── RemoteProtocolError   bad input from the peer; `status` is the SIP response it deserves (400, 488, ...)
        ├── NoCommonCodec     an SDP offer with nothing we can speak (488 Not Acceptable Here)
        ├── NotSdp            a body that carries no SDP (415 Unsupported Media Type, with Accept)
        ├── IncompatibleAddress  an SDP offer whose media addresses are all IPv6 (488; we speak IPv4)
        ├── IncompatibleTransport  an SDP offer whose audio is all over SRTP or another non-RTP/AVP profile (488)
        └── IntervalTooSmall  a Session-Expires below our Min-SE (422 Session Interval Too Small, RFC 4028)

Parsers raise RemoteProtocolError; the UA core turns it into an error response or a counted drop and never
lets it escape `receive_datagram`.
"""

from __future__ import annotations

__all__ = ["BridgeConfigError", "IncompatibleAddress", "IncompatibleTransport", "IntervalTooSmall",
           "LocalProtocolError", "NoCommonCodec", "NotSdp", "RemoteProtocolError", "SipError"]


class SipError(Exception):
    """Base of every error raised by clients.sip."""


class BridgeConfigError(SipError, ValueError):
    """A field of BridgeConfig holds a value the bridge cannot work with. `field` names it so that a front end can
    name what its user typed instead (the CLI: `--rtp-timeout`, not `rtp_timeout_s`); `problem` is the rest."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


class LocalProtocolError(SipError):
    """The caller used a core wrongly (e.g. answered a call that is not ringing)."""


class RemoteProtocolError(SipError):
    """The peer sent something we cannot accept. `status`/`reason` is the SIP response hint, `warn_code` the
    Warning code (RFC 3261 20.43) that response carries with this error's text."""

    warn_code = 399  # miscellaneous
    headers: tuple[tuple[str, str], ...] = ()  # what the response carries beside the Warning

    def __init__(self, message: str, status: int = 400, reason: str = "Bad Request") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class NoCommonCodec(RemoteProtocolError):
    """The offer names no PCMU/PCMA audio stream we can answer."""

    warn_code = 305  # incompatible media format

    def __init__(self, message: str) -> None:
        super().__init__(message, 488, "Not Acceptable Here")


class NotSdp(RemoteProtocolError):
    """A request body of a type that carries no SDP: 415 naming what we accept (RFC 3261 8.2.3, 21.4.13), so that
    the caller can send the offer again as application/sdp. `accept` is the Accept header's value: body.INVITE_ACCEPT,
    the types an offer is read in (passed in, as body.py raises errors of this module)."""

    def __init__(self, message: str, accept: str) -> None:
        super().__init__(message, 415, "Unsupported Media Type")
        self.headers = (("Accept", accept),)


class IncompatibleAddress(RemoteProtocolError):
    """The offer's usable audio streams all have IPv6 connection addresses; our sockets are IPv4."""

    warn_code = 301  # incompatible network address formats

    def __init__(self, message: str) -> None:
        super().__init__(message, 488, "Not Acceptable Here")


class IncompatibleTransport(RemoteProtocolError):
    """The offer's audio streams all use a profile we do not speak (RTP/SAVP and other SRTP profiles)."""

    warn_code = 302  # incompatible transport protocol

    def __init__(self, message: str) -> None:
        super().__init__(message, 488, "Not Acceptable Here")


class IntervalTooSmall(RemoteProtocolError):
    """An INVITE's Session-Expires is below the least we take, `min_se` seconds: 422 with Min-SE (RFC 4028 6)."""

    def __init__(self, message: str, min_se: int) -> None:
        super().__init__(message, 422, "Session Interval Too Small")
        self.headers = (("Min-SE", str(min_se)),)
