"""RFC 4028 session timers, the UAS side: what an INVITE's or re-INVITE's Session-Expires asks for, and our
answer. Pure.

Rules:
- We support the `timer` option tag: a request requiring it is not refused 420 (ua.py).
- Session-Expires below MIN_SE (90 s, the RFC's floor, 4) gets 422 Session Interval Too Small with our Min-SE
  (6, 9): a new call is refused, a re-INVITE's call goes on as it was; the caller retries with at least that.
- A caller that supports the extension (timer in Supported or Require) and refreshes itself (refresher=uac, or
  none: the UAS's choice, 9) gets its interval back in the 2xx, with refresher=uac and Require: timer (9). The
  call then ends with our BYE ("session expired") unless a re-INVITE refreshes it by min(32 s, a third of the
  interval) before it expires (10). Each re-INVITE answered 2xx negotiates again: one without Session-Expires
  ends the timer.
- One that asks us to refresh (refresher=uas), or does not support the extension (a proxy added the header),
  gets no session timer: a 2xx without Session-Expires, whose session does not expire (7.2). The bridge sends
  no re-INVITE or UPDATE of its own, so it cannot be the refresher.
"""

from __future__ import annotations

from dataclasses import dataclass

from clients.sip.errors import IntervalTooSmall, RemoteProtocolError
from clients.sip.message import Request

__all__ = ["MIN_SE", "SessionTimer", "session_timer"]

MIN_SE = 90


@dataclass(frozen=True, slots=True)
class SessionTimer:
    interval: int  # seconds, the Session-Expires of our 2xx

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """What our 2xx carries: the caller refreshes, and must know it does (9)."""
        return ("Session-Expires", f"{self.interval};refresher=uac"), ("Require", "timer")

    @property
    def bye_after(self) -> float:
        """Seconds after the 2xx when the session, never refreshed, is ended (10)."""
        return self.interval - min(32, self.interval / 3)


def session_timer(req: Request) -> SessionTimer | None:
    """The session timer our 2xx to `req` (an INVITE) sets up, or None; raises IntervalTooSmall (422) and
    RemoteProtocolError (400, an unreadable Session-Expires)."""
    raw = req.headers.get("Session-Expires")
    if raw is None:
        return None
    value, *params = raw.split(";")
    if not value.strip().isdigit():
        raise RemoteProtocolError(f"bad Session-Expires {raw!r}")
    interval = int(value)
    if interval < MIN_SE:
        raise IntervalTooSmall(f"Session-Expires {interval} below Min-SE {MIN_SE}", MIN_SE)
    refresher = {k.strip().lower(): v.strip().lower() for k, _, v in (p.partition("=") for p in params)}
    tags = {tag.strip().lower() for name in ("Supported", "Require") for tag in req.headers.get_all(name)}
    return SessionTimer(interval) if "timer" in tags and refresher.get("refresher") != "uas" else None
