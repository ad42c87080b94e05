"""What the bridge reads from SIP message bodies: the SDP (the whole body, or one part of a multipart body) and
the key presses of an INFO. Pure.

Rules for SDP:
- Content-Type application/sdp: the body is the SDP.
- multipart/mixed or multipart/alternative (RFC 5621): telephone gateways that carry ISUP beside the offer
  (SIP-T, RFC 3204; SIP-I) send one. The body is split on its boundary (RFC 2046 5.1.1: a delimiter line is
  "--" boundary, the CRLF before it belongs to it, "--" boundary "--" closes); the first part whose Content-Type
  is application/sdp is the SDP. The other parts are ignored, as PBXs do: nothing in them changes the media.
  A multipart type without a boundary raises RemoteProtocolError (400).
- Anything else (or no SDP part): None.
- An INVITE (or re-INVITE, or ACK) body of any other type, or a multipart one without an SDP part, carries no
  offer: the INVITE is refused 415 whose Accept is INVITE_ACCEPT, the types its body is read in (SDP, or SDP in
  a multipart body; RFC 3261 20.1, 21.4.13). The DTMF types are an INFO's alone: an Accept naming them would
  tell the caller it may send its offer in one.
- A response may carry SDP when its request's Accept names application/sdp (or application/*, */*, with a q above
  0), or when the request has no Accept (RFC 3261 20.1: application/sdp is then assumed); an empty Accept takes no
  body at all.

Rules for DTMF in INFO (no RFC; the de facto formats PBXs and gateways send):
- application/dtmf-relay: lines of name=value; each Signal=<key> is a key press (Duration= and others are
  ignored).
- application/dtmf: the body is the key itself.
- A body of any other type is one we cannot read (`unread_body`), unless its Content-Disposition says
  handling=optional (RFC 3261 8.2.3, 20.11): the INFO is refused 415, so its sender does not take its key presses
  for delivered. Its Accept is INFO_ACCEPT, the DTMF types alone: SDP or a multipart body in an INFO (SIP-T's
  ISUP) is not read, and an Accept naming them would tell the sender to send again what was just refused.
- A key is one of 0-9 * # A-D (a-d too), or its RFC 4733 event number 10-15 for * # A-D, as some gateways send
  (Asterisk reads both). A hook flash (! or event 16, what Asterisk and Cisco send for it) is read and carries no
  key. Any other value, or a dtmf-relay body without Signal, is malformed (`dtmf_keys` raises, the INFO gets 400):
  a 200 would tell the sender its key press was taken, and an arbitrary string from the wire has no place in the
  agent's conversation, where a key becomes text.
"""

from __future__ import annotations

from clients.sip.errors import RemoteProtocolError
from clients.sip.message import split_commas

__all__ = ["ACCEPT", "INFO_ACCEPT", "INVITE_ACCEPT", "accepts_sdp", "dtmf_keys", "sdp_body", "unread_body"]

SDP = "application/sdp"
MULTIPART = ("multipart/mixed", "multipart/alternative")  # read for their SDP part
DTMF_RELAY, DTMF = "application/dtmf-relay", "application/dtmf"  # INFO's key presses
ACCEPT = ", ".join((SDP, *MULTIPART, DTMF_RELAY, DTMF))  # every body type read here: OPTIONS' Accept (11.2)
INFO_ACCEPT = ", ".join((DTMF_RELAY, DTMF))  # the types an INFO body is read in: its 415's Accept (8.2.3)
INVITE_ACCEPT = ", ".join((SDP, *MULTIPART))  # the types an INVITE's offer is read in: its 415's Accept (21.4.13)
_KEYS = "0123456789*#ABCD"  # in RFC 4733 event order (3.2)
HOOK_FLASH = ("!", "16")  # RFC 4733 event 16, and the sign PBXs write it with


def sdp_body(content_type: str | None, body: bytes) -> bytes | None:
    """The SDP carried by a body of `content_type`, or None when there is none."""
    kind, params = _media_type(content_type or "")
    if kind == SDP:
        return body
    if kind not in MULTIPART:
        return None
    boundary = params.get("boundary")
    if not boundary:
        raise RemoteProtocolError(f"{kind} body without a boundary")
    for part_type, content in _parts(boundary.encode(), body):
        if _media_type(part_type)[0] == SDP:
            return content
    return None


def accepts_sdp(accept_lines: list[str]) -> bool:
    """Whether a request whose Accept header lines are `accept_lines` takes SDP in its response (see the rules)."""
    if not accept_lines:
        return True
    for kind, params in (_media_type(r) for line in accept_lines for r in split_commas(line)):
        if kind in (SDP, "application/*", "*/*") and _quality(params.get("q", "1")) > 0:
            return True
    return False


def _quality(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 1.0  # a q we cannot read does not refuse the type


def dtmf_keys(content_type: str | None, body: bytes) -> list[str]:
    """The key presses an INFO body of `content_type` carries (none for an empty body or one of any other type);
    raises RemoteProtocolError (400) for a DTMF body that is malformed (see the rules)."""
    kind, _ = _media_type(content_type or "")
    text = body.decode("utf-8", "replace")
    if kind == DTMF:
        values = [text] if text.strip() else []
    elif kind == DTMF_RELAY:
        values = [value for name, _, value in (line.partition("=") for line in text.splitlines())
                  if name.strip().lower() == "signal"]
        if not values and text.strip():
            raise RemoteProtocolError(f"{DTMF_RELAY} body without Signal")
    else:
        return []
    keys = []
    for value in values:
        key = _key(value)
        if key is None and value.strip() not in HOOK_FLASH:
            raise RemoteProtocolError(f"{kind} body: {value.strip()[:16]!r} is no key")
        keys += [key] if key is not None else []
    return keys


def unread_body(content_type: str | None, disposition: str | None, body: bytes) -> bool:
    """Whether an INFO's `body` (of `content_type`, with Content-Disposition `disposition`) is one we must refuse,
    not being able to read it (see the rules)."""
    if not body or _media_type(content_type or "")[0] in (DTMF_RELAY, DTMF):
        return False
    return _media_type(disposition or "")[1].get("handling", "required").lower() != "optional"


def _key(value: str) -> str | None:
    """`value` as a key of _KEYS, or None when it is none."""
    value = value.strip().upper()
    if len(value) == 1 and value in _KEYS:
        return value
    if value.isdecimal() and 10 <= int(value) < len(_KEYS):
        return _KEYS[int(value)]
    return None


def _media_type(value: str) -> tuple[str, dict[str, str]]:
    """("type/subtype" lower-cased, {parameter: value}) of a Content-Type value."""
    kind, *rest = value.split(";")
    params = {}
    for param in rest:
        name, _, val = param.partition("=")
        params[name.strip().lower()] = val.strip().strip('"')
    return kind.strip().lower(), params


def _parts(boundary: bytes, body: bytes) -> list[tuple[str, bytes]]:
    """(Content-Type, content) of each part of a multipart body."""
    out: list[tuple[str, bytes]] = []
    for chunk in body.split(b"--" + boundary)[1:]:  # what precedes the first delimiter is preamble
        if chunk.startswith(b"--"):
            break  # the close delimiter: what follows is epilogue
        _, newline, part = chunk.partition(b"\n")  # the rest of the delimiter line (transport padding)
        if not newline:
            continue
        for end in (b"\r\n", b"\n"):  # the line end before the next delimiter is the delimiter's
            if part.endswith(end):
                part = part[: -len(end)]
                break
        head, content = _split_head(part)
        ctype = next((v for n, v in head if n == "content-type"), "text/plain")  # RFC 2046 5.1 default
        out.append((ctype, content))
    return out


def _split_head(part: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """A part's headers (lower-cased names) and its content."""
    for newline in (b"\r\n", b"\n"):
        if part.startswith(newline):  # no headers at all: the part starts with the empty line
            return [], part[len(newline):]
        head, found, content = part.partition(newline + newline)
        if found:
            break
    else:
        return [], part
    headers = []
    for line in head.decode("utf-8", "replace").splitlines():
        name, colon, value = line.partition(":")
        if colon:
            headers.append((name.strip().lower(), value.strip()))
    return headers, content
