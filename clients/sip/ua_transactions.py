"""The final responses of the bridge's server transactions (RFC 3261 17.2), by the key 17.2.3 matches a request to
its transaction with. Sans-I/O: `now` comes in with every call.

- A transaction is its request's top Via branch and sent-by, and its method (17.2.3; an ACK's is INVITE: it
  belongs to the transaction of the INVITE whose non-2xx final it acknowledges), and its Call-ID and CSeq
  number too: a retransmission keeps them, and a peer that wrongly reuses a branch (8.1.1.7 has it unique) for
  another request does not get the other's answer. A request whose branch lacks RFC 3261's magic cookie
  (z9hG4bK: an RFC 2543 peer), or that has none, is matched by its whole top Via, Request-URI and From tag
  instead of the branch, as 17.2.3 falls back to. So a
  CANCEL (its own transaction, of its INVITE's branch) and the requests of a call are all kept apart: each is
  answered on its own, whatever else of the call is pending.
- Every final response the core sends to a request is kept under its key; a retransmission of that request (our
  response was lost) gets it again, and nothing else happens (17.2.1 Completed, 17.2.2 Completed): it is no new
  request of the dialog, whatever the dialog did since, neither out of order (500) nor a second re-INVITE.
- A response is kept 64*T1 = 32 s after it was sent (Timer J for non-INVITE over UDP; Timer H for an INVITE's
  non-2xx), then forgotten; at most `limit` are kept, the oldest forgotten first, so a flood of requests cannot
  grow the table without bound.
- A malformed request's 400 (or 505, 513) is kept as well, under the key of what could be read of it (its top
  Via must be readable to answer it at all): its retransmission, malformed alike, gets the same 400, To tag and
  all (8.2.6.2), rather than one with a new tag.
- A CANCEL is for the INVITE whose transaction it matches by that rule but the method (9.2: the CANCEL's is
  CANCEL): the same branch and sent-by, Call-ID and CSeq number; and it copies the INVITE's Request-URI and From
  (9.1), so those must be equal too. One of an RFC 2543 peer (no magic cookie) must also carry the INVITE's To
  tag and its whole top Via (9.2, 17.2.3). A CANCEL with the INVITE's branch from another sent-by (a stranger
  who saw the branch, or a proxy's copy of another transaction) cancels nothing.
- ACK is never answered, so never looked up here. `acknowledges` is the one rule by which ua_refusals.py and the
  INVITE side (ua_invite.py) match it to the final response it acknowledges: by the INVITE's transaction (the
  ACK to a non-2xx carries its branch, 17.1.1.3), or by Call-ID, From tag, CSeq number and the response's To tag
  (the ACK to a 2xx is a new transaction, 13.2.2.4; an RFC 2543 peer may send any ACK on a branch of its own,
  17.2.3), so a peer that ACKs a refusal on another branch stops its retransmissions wherever it was sent from.
"""

from __future__ import annotations

from collections import OrderedDict

from clients.sip.message import NameAddr, Request, SipParseError
from clients.sip.ua_call import TIMEOUT

__all__ = ["ServerTransactions", "acknowledges", "cancels", "tag", "transaction_key"]

MAGIC_COOKIE = "z9hG4bK"  # an RFC 3261 branch starts with it (8.1.1.7)
Key = tuple[str, ...]


def transaction_key(req: Request, method: str | None = None) -> Key:
    """The server transaction `req` belongs to (17.2.3), or with `method` the one of that method it would match (a
    CANCEL's INVITE, 9.2); `req` may be a malformed request whose top Via could be read (its From and CSeq then
    count as written)."""
    via = req.top_via
    # else 17.2.3's RFC 2543 rule: the whole top Via, the Request-URI and the From tag (the To tag: see cancels)
    branch = _rfc3261_branch(req) or f"{via.transport} {sorted(via.params.items())} {req.uri} {tag(req, 'From')}"
    method = method or ("INVITE" if req.method == "ACK" else req.method)
    return branch, via.host.lower(), str(via.port or ""), method, req.call_id, _cseq_number(req)


def acknowledges(ack: Request, invite: Request, to_tag: str) -> bool:
    """Whether `ack` acknowledges the final response with To tag `to_tag` sent to `invite` (see the module rules)."""
    if transaction_key(ack) == transaction_key(invite):
        return True
    return (ack.call_id, tag(ack, "From"), _cseq_number(ack), tag(ack, "To")) == \
        (invite.call_id, tag(invite, "From"), _cseq_number(invite), to_tag)


def cancels(cancel: Request, invite: Request) -> bool:
    """Whether `cancel` is for `invite` (see the module rules)."""
    if transaction_key(cancel, method="INVITE") != transaction_key(invite) or cancel.uri != invite.uri \
            or tag(cancel, "From") != tag(invite, "From"):
        return False
    return _rfc3261_branch(invite) is not None or tag(cancel, "To") == tag(invite, "To")


def _rfc3261_branch(req: Request) -> str | None:
    """`req`'s top Via branch if it is an RFC 3261 one (8.1.1.7: unique, so a transaction's key), else None."""
    branch = req.top_via.branch
    return branch if branch is not None and branch.startswith(MAGIC_COOKIE) else None


def tag(req: Request, name: str) -> str:
    """The tag of `req`'s From or To ("" for none); a malformed one's header as written (its retransmission's, or
    its ACK's copy, is the same)."""
    try:
        return NameAddr.parse(req.headers.get(name) or "").tag or ""
    except SipParseError:
        return req.headers.get(name) or ""


def _cseq_number(req: Request) -> str:
    """The CSeq number as written (a malformed request's CSeq may not parse; its retransmission's is the same)."""
    return next(iter((req.headers.get("CSeq") or "").split()), "")


class ServerTransactions:
    """The last final response of each server transaction of the last 32 s (see the module rules)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._answered: OrderedDict[Key, tuple[float, bytes]] = OrderedDict()  # oldest first

    def answered(self, req: Request, now: float) -> bytes | None:
        """The final response sent to `req`'s transaction, if it has one: `req` is a retransmission."""
        self._expire(now)
        kept = self._answered.get(transaction_key(req))
        return None if kept is None else kept[1]

    def record(self, req: Request, response: bytes, now: float) -> None:
        """`response` is the final response sent to `req`'s transaction (a later one replaces it)."""
        key = transaction_key(req)
        self._answered.pop(key, None)
        self._answered[key] = (now, response)
        self._expire(now)
        while len(self._answered) > self._limit:
            self._answered.popitem(last=False)

    def _expire(self, now: float) -> None:
        while self._answered:
            sent, _ = next(iter(self._answered.values()))
            if sent + TIMEOUT > now:
                return
            self._answered.popitem(last=False)
