"""The SIP messages the user agent core sends, built from the requests they answer (RFC 3261). Pure.

- Responses (8.2.6): Via, From, To, Call-ID and CSeq copied from the request; the top Via gets received/rport
  (18.2.1, RFC 3581) because responses go to the request's source address; a To tag is added when absent (a
  100 Trying never gets one). 18x and 2xx to an INVITE carry its Record-Route lines, in order (12.1.1).
- What we take, Allow (our methods) and Supported (our option tags: timer), goes in every 2xx to an INVITE
  (13.3.1.4) and every answer to OPTIONS (11.2); a 405 or 501 names the methods in Allow (8.2.1).
- Our BYE (15.1.1) and OPTIONS keep-alive go to the caller's Contact (the latest a re-INVITE named, 12.2.2),
  From/To swapped from the INVITE, its Record-Route as Route (12.2.1.1). Our BYE says why in Reason (RFC 3326).
- Warning (20.43) says why we refused, quoted and cut to 120 characters, for the caller's logs.
- `Responses` builds them as one UA core signs them (its Server, Contact and Warning host), for both the core and
  its INVITE side (ua_invite.py).
"""

from __future__ import annotations

from clients.sip.message import Headers, NameAddr, Request, Response, SipParseError, Via, reason_phrase
from clients.sip.ua_events import Addr, UaConfig

__all__ = ["ADVERTISED", "ALLOW", "SUPPORTED", "Extra", "Responses", "build_request", "build_response", "contact",
           "remote_target", "warning"]

Extra = tuple[tuple[str, str], ...]  # headers added to a message, in order
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"  # the methods we take (Allow, 20.5)
SUPPORTED = "timer"  # the option tags we take (Supported, 20.37): RFC 4028 session timers (session_timer.py)
# What a 2xx to INVITE (13.3.1.4) and an answer to OPTIONS (11.2) say we take, so that a peer learns it may use
# these methods and extensions (a PBX then asks for session timers) without trying them
ADVERTISED: Extra = (("Allow", ALLOW), ("Supported", SUPPORTED))


def build_response(req: Request, status: int, source: Addr, *, to_tag: str | None, server: str,
                   body: bytes = b"", extra: Extra = ()) -> bytes:
    """A response to `req`, which came from `source`; `body`, when given, is SDP."""
    headers: list[tuple[str, str]] = []
    vias = req.headers.get_all("Via")
    for i, via in enumerate(vias):
        headers.append(("Via", _fill_via(via, source) if i == 0 else via))
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = req.headers.get(name)
        if value is None:
            continue
        if name == "To" and to_tag is not None and status > 100 and "tag=" not in value.lower():
            value = _with_tag(value, to_tag)
        headers.append((name, value))
    if req.method == "INVITE" and 100 < status < 300:  # it sets up the dialog: the caller's route set (12.1.1)
        headers += [("Record-Route", rr) for rr in req.headers.lines("Record-Route")]
    headers += extra
    headers.append(("Server", server))
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return Response(status, reason_phrase(status), Headers.of(headers), body).serialize()


def remote_target(req: Request) -> str | None:
    """The URI of the request's Contact: the dialog's remote target (12.1.1), or None without a usable one."""
    try:
        return NameAddr.parse(req.headers.get_all("Contact")[0]).uri
    except (IndexError, SipParseError):
        return None


def build_request(method: str, invite: Request, *, target: str | None, local_tag: str, cseq: int, hostport: str,
                  branch: str, user_agent: str, reason: str | None = None) -> bytes:
    """Our `method` request (BYE, OPTIONS) in the dialog `invite` created, to the remote `target` (its last refresh,
    12.2.2; None: the INVITE's Contact), sent from `hostport` in a new transaction `branch`; `reason`: why we end
    the call, for the Reason header."""
    target = target or remote_target(invite) or invite.from_.uri
    headers = [("Via", f"SIP/2.0/UDP {hostport};branch=z9hG4bK{branch};rport"),
               ("Max-Forwards", "70"), ("From", _with_tag(invite.headers.get("To") or "", local_tag)),
               ("To", invite.headers.get("From") or ""), ("Call-ID", invite.call_id), ("CSeq", f"{cseq} {method}")]
    headers += [("Route", r) for r in invite.headers.get_all("Record-Route")]
    if reason is not None:
        headers.append(_reason(reason))
    headers.append(("User-Agent", user_agent))
    return Request(method, target, Headers.of(headers)).serialize()


def warning(host: str, code: int, text: str) -> tuple[str, str]:
    """A Warning header from `host`."""
    return "Warning", f'{code} {host} "{_quote(text)[:120]}"'


def _reason(text: str) -> tuple[str, str]:
    """RFC 3326 Reason for our BYE: Q.850 cause 16, normal call clearing (the cause PBXs and carriers log and map
    for a hang-up), with our reason as its text, so the far end's logs and CDRs say why the bridge hung up (an RTP
    timeout, the agent gone) instead of showing an unexplained BYE."""
    return "Reason", f'Q.850;cause=16;text="{_quote(text)[:120]}"'


def contact(user: str, hostport: str) -> Extra:
    return (("Contact", f"<sip:{user}@{hostport}>"),)


class Responses:
    """The responses of a UA core with `config`: its Server header, Contact and Warning host."""

    def __init__(self, config: UaConfig) -> None:
        self.config = config

    def build(self, req: Request, status: int, source: Addr, *, to_tag: str | None, body: bytes = b"",
              extra: Extra = ()) -> bytes:
        return build_response(req, status, source, to_tag=to_tag, server=self.config.user_agent, body=body,
                              extra=extra)

    def warning(self, code: int, text: str) -> tuple[str, str]:
        return warning(self.config.host, code, text)

    def contact(self) -> Extra:
        return contact(self.config.user, self.config.hostport)


def _with_tag(value: str, tag: str) -> str:
    return f"{value};tag={tag}"


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


def _fill_via(via: str, source: Addr) -> str:
    """RFC 3261 18.2.1 received= and RFC 3581 rport= on the top Via."""
    try:
        parsed = Via.parse(via)
    except SipParseError:
        return via
    out = via
    if "rport" in parsed.params and parsed.params["rport"] is None:
        out = out.replace(";rport", f";rport={source[1]}", 1)
    if parsed.host != source[0] and "received" not in parsed.params:
        out += f";received={source[0]}"
    return out
