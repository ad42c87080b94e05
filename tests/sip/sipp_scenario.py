"""sipp UAC scenarios written in Python: one call's requests and the responses it expects, as sipp XML."""

from __future__ import annotations

HEAD = """Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
Call-ID: [call_id]
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70"""


def sdp(formats: str, *extra: str, port: str = "[media_port]", version: int = 1,
        host: str = "IP[media_ip_type] [media_ip]") -> str:
    lines = ["v=0", f"o=user1 53655765 {version} IN IP[local_ip_type] [local_ip]", "s=-",
             f"c=IN {host}", "t=0 0", f"m=audio {port} RTP/AVP {formats}", *extra]
    return "\n".join(lines) + "\n"


def request(method: str, cseq: int, *, in_dialog: bool, body: str = "", headers: str = "",
            content_type: str = "application/sdp", uri: str = "sip:[service]@[remote_ip]:[remote_port]") -> str:
    to = "To: <sip:[service]@[remote_ip]:[remote_port]>" + ("[peer_tag_param]" if in_dialog else "")
    ctype = f"Content-Type: {content_type}\n" if body else ""
    ctype += headers
    retrans = ' retrans="500"' if method != "ACK" else ""
    return (f"<send{retrans}><![CDATA[\n{method} {uri} SIP/2.0\n{HEAD}\n{to}\n"
            f"CSeq: {cseq} {method}\n{ctype}Content-Length: [len]\n\n{body}]]></send>\n")


def expect(*statuses: int, optional: tuple[int, ...] = (100, 180), match: str | None = None,
           header: str | None = None) -> str:
    """Expected responses; `match`: a regular expression the last one's body (or `header`) must match, or sipp
    fails the call."""
    opt = "".join(f'<recv response="{s}" optional="true"/>\n' for s in optional)
    check, used = ereg(match, header)
    return opt + "".join(f'<recv response="{s}"/>\n' for s in statuses[:-1]) + \
        f'<recv response="{statuses[-1]}">{check}</recv>\n{used}'


def ereg(match: str | None, header: str | None = None) -> tuple[str, str]:
    """(the action inside a <recv>, the step after it) that fail the call unless the message's body (or `header`)
    matches the regular expression `match`; ("", "") without one."""
    if match is None:
        return "", ""
    where = f'search_in="hdr" header="{header}:"' if header else 'search_in="body"'
    # sipp refuses a variable it never reads: hence the Reference step
    return (f'<action><ereg regexp="{match}" {where} check_it="true" assign_to="m"/></action>',
            '<Reference variables="m"/>\n')


def scenario(*steps: str) -> str:
    return '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="bridge dialog">\n' + "".join(steps) + \
        "</scenario>\n"
