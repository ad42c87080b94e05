"""SIP messages (RFC 3261 section 7): pure parse and serialize of one datagram. No I/O.

Rules this module keeps:
- Over UDP a datagram holds exactly one message (RFC 3261 18.3). The head ends at the first empty line; CRLF is
  the line end but a bare LF is accepted (7.5 "SHOULD be tolerant"). Folded header lines (starting with SP/HT)
  are joined to the previous header (7.3.1).
- Header names are case-insensitive; compact forms (7.3.3: i, m, e, l, c, f, s, k, t, v, ...) are expanded, and
  every name is stored in one canonical spelling, so `get("call-id")`, `get("i")` and `get("Call-ID")` agree.
- Content-Length (18.3, 20.14): when present it must be a non-negative integer no larger than the bytes that
  follow the head; extra bytes are discarded. When absent (allowed over UDP) the body is the rest of the datagram.
- A request line's elements may be set apart by more than one SP, and followed by some (RFC 4475's lwsstart and
  trws allow that liberal reading). One with a space inside its Request-URI (lwsruri) keeps its headers in the
  error, so that the request gets its 400 (a retransmitting sender is told why, not left to time out); so does
  one whose Request-URI does not start with a scheme (ltgtruri's "<sip:...>").
- A request must carry Via, From, To, Call-ID and CSeq, and the CSeq method must equal the request method (8.1.1).
  From, To, Call-ID, CSeq and Max-Forwards hold one value: a second line of one is an error (7.3.1; RFC 4475's
  multi01), for the dialog and transaction a request belongs to would be ambiguous.
- `serialize()` always writes Content-Length from the actual body (a stale value is replaced).
- Every syntax error raises RemoteProtocolError (status 400; a request of another SIP version 505).
  `parse_message` attaches whatever it could parse (`exc.partial`) so the UA can still address a 400 response to
  a request whose start line and Via were readable; a head that is not UTF-8 (25.1) is read for that with its bad
  bytes replaced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from clients.sip.errors import RemoteProtocolError

__all__ = [
    "CSeq", "Headers", "NameAddr", "Request", "Response", "SipParseError", "Via", "parse_message", "reason_phrase",
]

MAX_MESSAGE_BYTES = 65535  # the largest UDP payload; the UA may set a lower bound

COMPACT = {"i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length", "c": "Content-Type",
           "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via", "o": "Event", "r": "Refer-To",
           "u": "Allow-Events", "x": "Session-Expires", "a": "Accept-Contact", "b": "Referred-By",
           "j": "Reject-Contact", "d": "Request-Disposition", "y": "Identity", "n": "Identity-Info"}
_CANONICAL = {n.lower(): n for n in (
    "Call-ID", "CSeq", "WWW-Authenticate", "Max-Forwards", "Record-Route", "MIME-Version", "Content-Length",
    "Content-Type", "User-Agent", "Proxy-Authenticate", "Proxy-Authorization", "Accept-Encoding", "Content-Encoding",
    "Content-Disposition", "Allow-Events", "Refer-To", "Session-Expires", "Min-SE")}
_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # RFC 3986 3.1
# A Via element: protocol name / version / transport, then sent-by and its parameters.
_SENT_PROTOCOL = re.compile(r"\s*([^\s/]+)\s*/\s*([^\s/]+)\s*/\s*([^\s/]+)\s+(\S.*)", re.DOTALL)
_SINGLE = ("From", "To", "Call-ID", "CSeq", "Max-Forwards")  # headers that may not appear twice in a request
_REASONS = {100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK", 400: "Bad Request",
            405: "Method Not Allowed", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
            420: "Bad Extension", 422: "Session Interval Too Small", 481: "Call/Transaction Does Not Exist",
            482: "Loop Detected", 486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
            491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable",
            505: "Version Not Supported", 513: "Message Too Large"}


def reason_phrase(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def canonical_name(name: str) -> str:
    """The one spelling we store a header under (compact forms expanded)."""
    low = name.lower()
    if low in COMPACT:
        return COMPACT[low]
    return _CANONICAL.get(low) or "-".join(p[:1].upper() + p[1:].lower() for p in low.split("-"))


class SipParseError(RemoteProtocolError):
    """A malformed message; `partial` is the request/response as far as it could be read, or None."""

    def __init__(self, message: str, partial: Request | Response | None = None, status: int = 400) -> None:
        super().__init__(message, status, reason_phrase(status))
        self.partial = partial


@dataclass(frozen=True, slots=True)
class Headers:
    """An ordered, immutable list of (canonical name, value) pairs."""

    items: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> Headers:
        return cls(tuple((canonical_name(n), v) for n, v in pairs))

    def get(self, name: str) -> str | None:
        """The first value of `name`, or None."""
        key = canonical_name(name)
        return next((v for n, v in self.items if n == key), None)

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`, comma-joined header lines split into their elements (7.3.1)."""
        key = canonical_name(name)
        return [part for n, v in self.items if n == key for part in split_commas(v)]

    def lines(self, name: str) -> list[str]:
        """The raw header lines of `name`, unsplit (copied as they are into responses)."""
        key = canonical_name(name)
        return [v for n, v in self.items if n == key]

    def without(self, name: str) -> Headers:
        key = canonical_name(name)
        return Headers(tuple((n, v) for n, v in self.items if n != key))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)


def split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quotes and <...> (a URI may hold commas)."""
    out: list[str] = []
    depth, quoted, start = 0, False, 0
    for i, ch in enumerate(value):
        if ch == '"' and (i == 0 or value[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and not quoted and depth == 0:
            out.append(value[start:i].strip())
            start = i + 1
    out.append(value[start:].strip())
    return [p for p in out if p]


def _params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for p in text.split(";"):
        p = p.strip()
        if p:
            k, eq, v = p.partition("=")
            params[k.strip().lower()] = v.strip() if eq else None
    return params


@dataclass(frozen=True, slots=True)
class Via:
    """One Via element: `SIP/2.0/UDP host[:port];branch=...` (20.42)."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str) -> Via:
        # sent-protocol's SLASH may have whitespace around it (25.1 SWS "/" SWS; RFC 4475 3.1.1.1 "SIP  /   2.0 /UDP")
        match = _SENT_PROTOCOL.match(value)
        if match is None or match[1].upper() != "SIP" or match[2] != "2.0":
            raise SipParseError(f"bad Via protocol {value.strip().partition(' ')[0]!r}")
        sent_by, _, params = match[4].strip().partition(";")
        host, port = _host_port(sent_by.strip())
        return cls(match[3].upper(), host, port, _params(params))

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")


def _host_port(text: str) -> tuple[str, int | None]:
    if not text:
        raise SipParseError("empty host")
    if text.startswith("["):  # IPv6 reference
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.partition(":")
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SipParseError(f"bad port {port_text!r}")
    return host, int(port_text)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """From/To/Contact: `"Display" <uri>;params` or a bare `uri;params` (20.10, 25.1 name-addr / addr-spec)."""

    display: str
    uri: str
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str) -> NameAddr:
        v = value.strip()
        if "<" in v:
            display, _, rest = v.partition("<")
            uri, close, params = rest.partition(">")
            if not close:
                raise SipParseError(f"unclosed '<' in {value!r}")
        else:  # addr-spec: parameters after the URI belong to the header (20.10)
            display, (uri, _, params) = "", v.partition(";")
        if not uri.strip() or ":" not in uri:
            raise SipParseError(f"bad URI in {value!r}")
        return cls(display.strip(), uri.strip(), _params(params))

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    @classmethod
    def parse(cls, value: str) -> CSeq:
        parts = value.split()
        if len(parts) != 2 or not parts[0].isdigit() or not _TOKEN.match(parts[1]) or int(parts[0]) >= 2**31:
            raise SipParseError(f"bad CSeq {value!r}")
        return cls(int(parts[0]), parts[1])  # case-sensitive, as the method (7.1): "options" is not OPTIONS

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


class _DialogHeaders:
    """Convenience views of the headers every request and response carries (valid once parsed)."""

    __slots__ = ()
    headers: Headers

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        return CSeq.parse(self.headers.get("CSeq") or "")


@dataclass(frozen=True, slots=True)
class Request(_DialogHeaders):
    method: str
    uri: str
    headers: Headers
    body: bytes = b""

    def serialize(self) -> bytes:
        return _serialize(f"{self.method} {self.uri} SIP/2.0", self.headers, self.body)

    @property
    def top_via(self) -> Via:
        return Via.parse(self.headers.get_all("Via")[0])

    @property
    def from_(self) -> NameAddr:
        return NameAddr.parse(self.headers.get("From") or "")

    @property
    def to(self) -> NameAddr:
        return NameAddr.parse(self.headers.get("To") or "")


@dataclass(frozen=True, slots=True)
class Response(_DialogHeaders):
    status: int
    reason: str
    headers: Headers
    body: bytes = b""

    def serialize(self) -> bytes:
        return _serialize(f"SIP/2.0 {self.status} {self.reason}", self.headers, self.body)


def _serialize(start: str, headers: Headers, body: bytes) -> bytes:
    lines = [start]
    lines += [f"{n}: {v}" for n, v in headers.without("Content-Length")]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def parse_message(data: bytes, *, max_size: int = MAX_MESSAGE_BYTES) -> Request | Response:
    """Parse one SIP message from a datagram.

    Raises:
        SipParseError: the bytes are not a well-formed SIP message (status hint 400), or more than `max_size` of them
            (513); `partial` holds what was read.
    """
    if len(data) > max_size:
        # Up to a datagram's 64 KiB, read it anyway so that the sender learns why: 513 rather than silence and
        # retransmissions until its transaction times out.
        partial: Request | Response | None = None
        if len(data) <= MAX_MESSAGE_BYTES:
            try:
                partial = parse_message(data)
            except SipParseError as exc:
                partial = exc.partial
        raise SipParseError(f"message of {len(data)} bytes exceeds {max_size}", partial, 513)
    head, body, has_blank = _split_head(data)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"head is not UTF-8 (byte 0x{head[exc.start]:02x})", _readable(head, body)) from exc
    msg = _read_head(text, body)
    headers = msg.headers
    if not has_blank:
        raise SipParseError("no empty line after the headers", msg)
    body = _apply_content_length(msg, headers, body)
    if isinstance(msg, Request):
        msg = Request(msg.method, msg.uri, headers, body)
        _check_request(msg)
        return msg
    msg = Response(msg.status, msg.reason, headers, body)
    if not headers.get("Call-ID") or not headers.get("CSeq") or not headers.get_all("Via"):
        raise SipParseError("response lacks Via, Call-ID or CSeq", msg)
    try:
        msg.cseq  # noqa: B018 - validates the CSeq syntax
    except SipParseError as exc:
        raise SipParseError(str(exc), msg) from exc
    return msg


def _read_head(text: str, body: bytes) -> Request | Response:
    """The start line and headers of a decoded head (unchecked: body and required headers come later)."""
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
    return _start_line(lines[0], Headers.of(_header_pairs(lines[1:])), body)


def _readable(head: bytes, body: bytes) -> Request | Response | None:
    """What a head that is not UTF-8 (a PBX writing a caller's name in Latin-1) holds when read leniently: enough
    to answer it 400 with the reason, rather than leave the sender retransmitting into silence."""
    try:
        return _read_head(head.decode("utf-8", "replace"), body)
    except SipParseError as exc:
        return exc.partial


def _split_head(data: bytes) -> tuple[bytes, bytes, bool]:
    data = data.lstrip(b"\r\n")  # leading CRLFs are allowed before the start line (7.5)
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = data.find(sep)
        if i >= 0:
            return data[:i], data[i + len(sep):], True
    return data.rstrip(b"\r\n"), b"", False


def _header_pairs(lines: list[str]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not pairs:
                raise SipParseError("continuation line before any header")
            name, value = pairs[-1]
            pairs[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _TOKEN.match(name):
            raise SipParseError(f"bad header line {line[:60]!r}")
        pairs.append((name, value.strip()))
    return pairs


def _start_line(line: str, headers: Headers, body: bytes) -> Request | Response:
    if line.startswith("SIP/"):
        parts = line.split(" ", 2)
        if parts[0] != "SIP/2.0" or len(parts) < 2 or not parts[1].isdigit() or len(parts[1]) != 3:
            raise SipParseError(f"bad status line {line[:60]!r}")
        status = int(parts[1])
        if not 100 <= status <= 699:
            raise SipParseError(f"bad status code {status}")
        return Response(status, parts[2] if len(parts) > 2 else "", headers, body)
    # Runs of whitespace between the elements, or after them, are taken as one SP (RFC 4475 lwsstart, trws: a
    # liberal reading); a request with a space in its URI (lwsruri) is refused with 400 through its headers.
    parts = line.split()
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or ":" not in parts[1]:
        looks_like_one = len(parts) > 3 and _TOKEN.match(parts[0]) and parts[-1].startswith("SIP/")
        partial = Request(parts[0], "", headers, body) if looks_like_one else None
        raise SipParseError(f"bad request line {line[:60]!r}", partial)
    if not _URI_SCHEME.match(parts[1]):  # RFC 4475 ltgtruri: "<sip:...>" is a name-addr, not a Request-URI
        raise SipParseError(f"bad Request-URI {parts[1][:60]!r}", Request(parts[0], "", headers, body))
    request = Request(parts[0], parts[1], headers, body)
    if parts[2] != "SIP/2.0":
        raise SipParseError(f"unsupported version {parts[2][:20]!r}", request, 505)  # 21.5.6
    return request


def _apply_content_length(msg: Request | Response, headers: Headers, body: bytes) -> bytes:
    values = headers.lines("Content-Length")
    if not values:
        return body
    if len(set(values)) != 1 or not values[0].isdigit():
        raise SipParseError(f"bad Content-Length {values!r}", msg)
    length = int(values[0])
    if length > len(body):
        raise SipParseError(f"Content-Length {length} but only {len(body)} body bytes", msg)
    return body[:length]


def _check_request(req: Request) -> None:
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not req.headers.get(name):
            raise SipParseError(f"missing {name} header", req)
    for name in _SINGLE:
        if len(req.headers.lines(name)) > 1:
            raise SipParseError(f"more than one {name} header", req)
    try:
        req.top_via  # noqa: B018 - each property validates its header
        req.from_  # noqa: B018
        req.to  # noqa: B018
        req.cseq  # noqa: B018
    except SipParseError as exc:
        raise SipParseError(str(exc), req) from exc
    if req.cseq.method != req.method:
        raise SipParseError(f"CSeq method {req.cseq.method} differs from {req.method}", req)
