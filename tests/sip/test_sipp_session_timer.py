"""RFC 4028 session timers, the bridge as UAS: sipp callers against the bridge CLI, a real agent server behind it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sip.media import wait_for
from tests.sip.peers import BridgeProcess, need, run_sipp, sipp_call
from tests.sip.sipp_scenario import ereg, expect, request, scenario, sdp

pytestmark = pytest.mark.slow


def test_a_session_timer_is_taken_and_an_unrefreshed_call_ends_with_bye(embedded_server, tmp_path: Path) -> None:
    """A PBX that requires session timers (Require: timer) to free the calls of phones that vanished got 420 and
    had to call without them. Now its too-short interval gets 422 with Min-SE: 90 (RFC 4028 6), its retry with
    90 s is answered with Session-Expires and refresher=uac (9), a refresh (re-INVITE) restarts the interval, and
    when no further refresh comes the bridge ends the call with BYE (10: 32 s before the 90 s run out), the
    agent session with it."""
    need("sipp")
    timer = "Supported: timer\nRequire: timer\nSession-Expires: {}\n"
    check, used = ereg("session expired", "Reason")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    try:
        code, errors = run_sipp(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0"), headers=timer.format(30)),
            expect(422, optional=(100,), match="^ *90 *$", header="Min-SE"), request("ACK", 1, in_dialog=True),
            request("INVITE", 2, in_dialog=False, body=sdp("0"), headers=timer.format(90)),
            expect(200, match="^ *90;refresher=uac *$", header="Session-Expires"),
            request("ACK", 2, in_dialog=True), '<pause milliseconds="5000"/>\n',
            request("INVITE", 3, in_dialog=True, body=sdp("0", version=2), headers=timer.format("90;refresher=uac")),
            expect(200, optional=(100,), match="^ *90;refresher=uac *$", header="Session-Expires"),
            request("ACK", 3, in_dialog=True),
            f'<recv request="BYE" timeout="80000">{check}</recv>\n{used}<send><![CDATA[\nSIP/2.0 200 OK\n'
            '[last_Via:]\n[last_From:]\n[last_To:]\n[last_Call-ID:]\n[last_CSeq:]\nContent-Length: 0\n\n]]></send>\n'),
            bridge.port, tmp_path, timeout_s=120)
        calls = wait_for(lambda: [c for c in bridge.calls() if c["call"]], 10)
    finally:
        bridge.stop()
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert [c["end_reason"] for c in calls] == ["session expired"], calls
    assert 5 + 58 <= calls[0]["ended"] - calls[0]["started"] <= 5 + 66, calls  # 58 s after the refresh, not the 2xx
    assert wait_for(lambda: embedded_server.metrics()["stepaudio_sessions_live"] == 0, 10)


def test_the_options_answer_and_an_invites_200_say_session_timers_are_supported(embedded_server,
                                                                                 tmp_path: Path) -> None:
    """RFC 3261 11.2 and 13.3.1.4: the answer to OPTIONS and a 2xx to INVITE carry Supported with our option tags,
    as they carry Allow with our methods. Neither had Supported, so a peer (a PBX qualifying its trunk) could not
    learn that the bridge takes session timers (RFC 4028) but by placing a call that requires them."""
    need("sipp")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    supported = {"match": "^ *timer *$", "header": "Supported"}
    sipp_call(bridge, tmp_path, scenario(
        request("OPTIONS", 1, in_dialog=False), expect(200, optional=(), **supported),
        request("INVITE", 2, in_dialog=False, body=sdp("0")), expect(200, **supported),
        request("ACK", 2, in_dialog=True),
        request("INVITE", 3, in_dialog=True, body=sdp("0", version=2)), expect(200, optional=(100,), **supported),
        request("ACK", 3, in_dialog=True),
        request("BYE", 4, in_dialog=True), expect(200, optional=())))
