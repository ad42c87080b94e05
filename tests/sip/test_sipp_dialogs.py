"""sipp drives SIP dialogs beyond a plain call through the bridge CLI, with a real agent server behind it.

Each scenario is one sipp UAC call; sipp exits 0 only when every expected response came, in order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sip.media import wait_for
from tests.sip.peers import BridgeProcess, need, run_sipp

pytestmark = pytest.mark.slow

HEAD = """Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
Call-ID: [call_id]
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70"""


def sdp(formats: str, *extra: str) -> str:
    lines = ["v=0", "o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]", "s=-",
             "c=IN IP[media_ip_type] [media_ip]", "t=0 0", f"m=audio [media_port] RTP/AVP {formats}", *extra]
    return "\n".join(lines) + "\n"


def request(method: str, cseq: int, *, in_dialog: bool, body: str = "") -> str:
    to = "To: <sip:[service]@[remote_ip]:[remote_port]>" + ("[peer_tag_param]" if in_dialog else "")
    ctype = "Content-Type: application/sdp\n" if body else ""
    retrans = ' retrans="500"' if method != "ACK" else ""
    return (f"<send{retrans}><![CDATA[\n{method} sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n{HEAD}\n{to}\n"
            f"CSeq: {cseq} {method}\n{ctype}Content-Length: [len]\n\n{body}]]></send>\n")


def expect(*statuses: int, optional: tuple[int, ...] = (100, 180)) -> str:
    opt = "".join(f'<recv response="{s}" optional="true"/>\n' for s in optional)
    return opt + "".join(f'<recv response="{s}"/>\n' for s in statuses)


def scenario(*steps: str) -> str:
    return '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="bridge dialog">\n' + "".join(steps) + \
        "</scenario>\n"


def test_retry_with_other_codecs_after_488_is_answered(embedded_server, tmp_path: Path) -> None:
    """RFC 3261 8.1.3.5: after 488 the caller retries in the same Call-ID with CSeq + 1 and PCMU: a new call."""
    need("sipp")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    try:
        code, errors = run_sipp(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("18", "a=rtpmap:18 G729/8000")), expect(488),
            request("ACK", 1, in_dialog=True),
            request("INVITE", 2, in_dialog=False, body=sdp("0")), expect(200),
            request("ACK", 2, in_dialog=True),
            request("BYE", 3, in_dialog=True), expect(200, optional=())), bridge.port, tmp_path)
        calls = wait_for(bridge.calls, 10)
    finally:
        bridge.stop()
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert [(c["codec"], c["end_reason"]) for c in calls] == [("PCMU", "remote hangup")]
