"""What RFC 3261 has a UAS check of a request before handling it: 8.2's inspection, then for a request in a dialog
12.2.2's order. Pure functions of the request (and its call); the UA core (ua.py) answers what they find, in this
order (12.2.2 applies 8.2's rules to an in-dialog request first):

- the method (8.2.1): one we take (ALLOW) is handled; another of SIP's own RFCs gets 405, an unknown one 501;
- the Request-URI's scheme (8.2.2.1): one other than sip, sips or tel gets 416;
- Require (8.2.2.3): option tags other than SUPPORTED's get 420 with them in Unsupported;
- the dialog's order (12.2.2): a CSeq below the caller's last in-dialog request's gets 500.
Two requests of one method belong to one server transaction when their top Via's branch and sent-by match (17.2.3).
"""

from __future__ import annotations

from clients.sip.message import Request
from clients.sip.ua_call import Call, live_dialog
from clients.sip.ua_messages import ALLOW, SUPPORTED
from clients.sip.ua_transactions import transaction_key

__all__ = ["method_refusal", "out_of_order", "same_transaction", "unknown_scheme", "unsupported"]

METHODS = frozenset(ALLOW.split(", "))
OTHER_SIP_METHODS = frozenset({"REGISTER", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "UPDATE", "PRACK", "PUBLISH"})


def method_refusal(method: str) -> int | None:
    """The status for a method we do not take (8.2.1), sent with Allow: 405 for SIP's own, 501 for an unknown one;
    None for ours."""
    if method in METHODS:
        return None
    return 405 if method in OTHER_SIP_METHODS else 501


def unknown_scheme(req: Request) -> str | None:
    """The scheme of `req`'s Request-URI unless it is one we answer (8.2.2.1): sip, sips, or tel (a gateway's)."""
    scheme = req.uri.partition(":")[0]
    return None if scheme.lower() in ("sip", "sips", "tel") else scheme


def unsupported(req: Request) -> list[str]:
    """The option tags `req` requires (Require, 20.32) that we do not support: all but SUPPORTED's."""
    ours = SUPPORTED.split(", ")
    return [tag.strip() for tag in req.headers.get_all("Require") if tag.strip() and tag.strip().lower() not in ours]


def out_of_order(call: Call | None, req: Request) -> bool:
    """Whether an in-dialog request's CSeq is below the caller's last request's in the dialog: it must get 500
    whatever its method (12.2.2). ACK and CANCEL carry their INVITE's number, and a retransmitted re-INVITE
    belongs to its transaction (17.2.3), not the dialog's order."""
    if call is None or not live_dialog(call, req) or req.method in ("ACK", "CANCEL"):
        return False
    if req.method == "INVITE" and req.cseq == call.transaction.cseq:
        return False
    return req.cseq.number < (call.remote_cseq or call.invite.cseq).number


def same_transaction(a: Request, b: Request) -> bool:
    """Whether two requests belong to one server transaction (17.2.3: top Via branch, sent-by and method)."""
    return transaction_key(a) == transaction_key(b)
