"""RTCP (RFC 3550 6) beside the bridge's RTP: the bridge sends none and binds no RTCP port, so a caller's RTCP
goes to its RTP port + 1, which with --rtp-ports was once another call's RTP port. A real caller (baresip, which
sends RTCP every 5 s) next to a sipp call in the pair of ports above its own: that call must not count those reports
as a stranger's RTP (`rtp_in_foreign`, and the log line an operator reads as a hijack attempt). RTP ports are even
(RFC 3550 11), so the reports reach no call; RTCP that reaches an RTP port anyway is told apart by its packet type
(RFC 5761 4)."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
from websockets.sync.server import ServerConnection

from tests.sip.media import free_udp_tcp_port, free_udp_port, held_rtp_port_with_free_pair_above, wait_for
from tests.sip.peers import BridgeProcess, env_without_display, need, run_sipp
from tests.sip.sipp_scenario import expect, request, scenario, sdp
from tests.sip.test_baresip_call import CONFIG
from tests.ws_thread import ws_server_thread

pytestmark = pytest.mark.slow


def _quiet_agent(ws: ServerConnection) -> None:
    ws.send(json.dumps({"type": "session.created", "event_id": "e1", "session": {"id": "sess_1"}}))
    for _ in ws:
        pass


def _whole_log(bridge: BridgeProcess) -> str:
    return bridge.log_path.read_text(errors="replace")


def test_a_neighbouring_calls_rtcp_is_no_strangers_rtp(tmp_path: Path) -> None:
    need("sipp", "baresip", "sox")
    held, port = held_rtp_port_with_free_pair_above()
    conf, rec = tmp_path / "baresip", tmp_path / "rec"
    conf.mkdir()
    rec.mkdir()
    silence = tmp_path / "silence.wav"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(silence), "trim", "0", "12"], check=True)
    rtp_lo = free_udp_port() & ~1
    (conf / "config").write_text(CONFIG.format(sip_port=free_udp_tcp_port(), speech=silence, rec=rec,
                                               rtp_lo=rtp_lo, rtp_hi=rtp_lo + 10))
    (conf / "accounts").write_text("<sip:caller@127.0.0.1>;regint=0;audio_codecs=PCMU\n")
    with ws_server_thread(_quiet_agent) as agent_port:
        bridge = BridgeProcess(f"ws://127.0.0.1:{agent_port}/v1/realtime", tmp_path,
                               "--rtp-ports", f"{port}-{port + 3}")
        sipp_dir = tmp_path / "sipp"
        sipp_dir.mkdir()
        outcome: list[tuple[int, str]] = []
        neighbour = threading.Thread(target=lambda: outcome.append(run_sipp(scenario(  # takes port + 2: p is held
            request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(200), request("ACK", 1, in_dialog=True),
            '<pause milliseconds="20000"/>\n', request("BYE", 2, in_dialog=True), expect(200, optional=())),
            bridge.port, sipp_dir)))
        try:
            neighbour.start()
            assert wait_for(lambda: f"-> rtp {port + 2}" in _whole_log(bridge), 30), bridge.log()
            held.close()
            phone = subprocess.run(["baresip", "-f", str(conf), "-e", f"/dial sip:agent@127.0.0.1:{bridge.port}",
                                    "-t", "30"], capture_output=True, text=True, timeout=60,
                                   env=env_without_display())
            neighbour.join()
            calls = wait_for(lambda: len(bridge.calls()) == 2 and bridge.calls(), 15)
        finally:
            held.close()
            neighbour.join()
            bridge.stop()
    assert f"-> rtp {port}\n" in _whole_log(bridge) and "Call established" in phone.stdout, phone.stdout
    assert outcome and outcome[0][0] == 0, outcome
    (sipp_call,) = [c for c in calls if c["caller"].startswith("sip:sipp@")]
    (baresip_call,) = [c for c in calls if c["caller"].startswith("sip:caller@")]
    assert baresip_call["rtp_in_packets"] > 100 and baresip_call["rtp_in_foreign"] == 0, baresip_call
    assert sipp_call["rtp_in_foreign"] == 0 and "not the caller's media source" not in _whole_log(bridge), \
        sipp_call
