"""The call log's record of one call: plain data that the bridge writes as one JSON line when the call ends; and
how a refused INVITE reads, in the log and in the call log."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

__all__ = ["CallRecord", "refusal"]


def refusal(log: logging.Logger | logging.LoggerAdapter[logging.Logger], sip_call_id: str, caller: str, status: int,
            why: str) -> str:
    """Log an INVITE refused before it was answered, whichever part refused it (the UA core, or the call for want
    of an agent session or an RTP port), and return its call log end_reason: one form for each, so that the
    operator can count refusals."""
    log.warning("INVITE %s from %s refused with %d: %s", sip_call_id, caller, status, why)
    return f"refused {status}: {why}"


@dataclass
class CallRecord:
    """What happened on one call (the bridge's per-call log)."""

    call: str
    sip_call_id: str
    caller: str
    codec: str
    started: float = field(default_factory=time.time)
    ended: float | None = None
    end_reason: str | None = None
    agent_session_id: str | None = None
    user_transcripts: list[str] = field(default_factory=list)
    agent_transcripts: list[str] = field(default_factory=list)
    dtmf: list[str] = field(default_factory=list)
    rtp_in_packets: int = 0
    rtp_in_bad: int = 0
    rtp_in_foreign: int = 0  # well-formed RTP dropped for its source (not the caller's, see rtp_latch.py)
    rtp_lost: int = 0
    rtp_out_packets: int = 0
    rtp_out_bytes: int = 0
    inbound_dropped_frames: int = 0
    inbound_on_hold_frames: int = 0  # the audio packets the caller sent while it held the call (kept from the agent)
    barge_ins: int = 0
    media_to: str | None = None  # "address:port" the agent's audio went to last

    def to_json(self) -> dict[str, object]:
        return asdict(self)
