"""A caller that gives up before the bridge answers (sipp against the bridge CLI).

The bridge connects the agent session before it answers; here the agent server accepts TCP but never completes
the WebSocket handshake (a stalled server) or completes it late, so the call rings until the caller ends it.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from pathlib import Path

import pytest
from websockets.sync.server import ServerConnection

from tests.conftest import ServerProcess
from tests.sip.media import wait_for
from tests.sip.peers import BridgeProcess, need, run_sipp
from tests.sip.sipp_scenario import expect, request, scenario, sdp
from tests.ws_thread import ws_server_thread

pytestmark = pytest.mark.slow


def test_a_caller_ending_the_early_dialog_by_bye_or_cancel_gets_487(tmp_path: Path) -> None:
    """RFC 3261 15 and 15.1.2: a caller may end an early dialog (our 180's To tag) with BYE: 200 OK to it and 487
    Request Terminated to its INVITE (the bridge had answered 481, leaving the INVITE pending until the answer).
    CANCEL (9.2) gives 200 OK and 487 too. Neither call is answered afterwards; the call log says how each ended."""
    need("sipp")
    stalled = socket.create_server(("127.0.0.1", 0))  # the kernel accepts connections; nothing answers them
    bridge = BridgeProcess(f"ws://127.0.0.1:{stalled.getsockname()[1]}/v1/realtime", tmp_path)
    same_branch = "branch=z9hG4bK-early-[call_number]"  # CANCEL names its INVITE's transaction (9.1)
    try:
        by_bye = run_sipp(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(180, optional=(100,)),
            request("BYE", 2, in_dialog=True), expect(200, 487, optional=()),
            request("ACK", 1, in_dialog=True)), bridge.port, tmp_path)
        by_cancel = run_sipp(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0")).replace("branch=[branch]", same_branch),
            expect(180, optional=(100,)),
            request("CANCEL", 1, in_dialog=False).replace("branch=[branch]", same_branch),
            expect(200, 487, optional=()),
            request("ACK", 1, in_dialog=True).replace("branch=[branch]", same_branch)), bridge.port, tmp_path)
        calls = wait_for(lambda: len(bridge.calls()) == 2 and bridge.calls(), 10)
    finally:
        bridge.stop()
        stalled.close()
    for code, errors in (by_bye, by_cancel):
        assert code == 0, f"{errors}\n{bridge.log()}"
    assert [c["end_reason"] for c in calls] == ["remote hangup", "cancelled"], calls
    assert "answered" not in bridge.log()


def test_a_cancel_with_the_callers_branch_from_another_sent_by_does_not_end_its_call(tmp_path: Path) -> None:
    """RFC 3261 9.2, 17.2.3: a CANCEL matches its INVITE's transaction by branch and sent-by. One with the ringing
    call's branch but another sent-by in its Via (a stranger who saw the branch) ended the call with 487 and
    the caller's own CANCEL then got 481; now it gets 481, and the caller's own gets 200 and 487."""
    need("sipp")
    stalled = socket.create_server(("127.0.0.1", 0))  # the call rings: nothing answers the agent's connection
    bridge = BridgeProcess(f"ws://127.0.0.1:{stalled.getsockname()[1]}/v1/realtime", tmp_path)
    same_branch = "branch=z9hG4bK-forged-[call_number]"
    cancel = request("CANCEL", 1, in_dialog=False).replace("branch=[branch]", same_branch)
    try:
        code, errors = run_sipp(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0")).replace("branch=[branch]", same_branch),
            expect(180, optional=(100,)),
            cancel.replace("[local_ip]:[local_port];", "198.51.100.9:5060;"), expect(481, optional=()),
            cancel, expect(200, 487, optional=()),
            request("ACK", 1, in_dialog=True).replace("branch=[branch]", same_branch)), bridge.port, tmp_path)
        calls = wait_for(bridge.calls, 10)
    finally:
        bridge.stop()
        stalled.close()
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert [c["end_reason"] for c in calls] == ["cancelled"], calls


class SlowHandshake:
    """The agent server behind a front that holds each new connection `delay` s (a server slow to complete the
    WebSocket handshake), then passes it on with what the client sent; one the client closed meanwhile never
    reaches the server."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port, self.delay = upstream_port, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.hung_up: list[float] = []  # when clients closed held connections (monotonic)
        self.passed = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # close()
            while True:
                threading.Thread(target=self._hold, args=(self.listener.accept()[0],), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        held, deadline = b"", time.monotonic() + self.delay
        while (left := deadline - time.monotonic()) > 0:
            if select.select([conn], [], [], left)[0]:
                data = conn.recv(65536)
                if not data:
                    self.hung_up.append(time.monotonic())
                    conn.close()
                    return
                held += data
        up = socket.create_connection(("127.0.0.1", self.upstream_port))
        up.sendall(held)
        self.passed += 1
        threading.Thread(target=_pipe, args=(up, conn), daemon=True).start()
        _pipe(conn, up)

    def close(self) -> None:
        self.listener.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)


def test_a_call_cancelled_while_its_agent_session_opens_never_gets_one(embedded_server: ServerProcess,
                                                                         tmp_path: Path) -> None:
    """A caller that CANCELs (RFC 3261 9.2) while the agent server is slow to complete the handshake: the bridge
    drops its connection attempt at once (it had kept it until the server answered, up to its 10 s connect
    timeout, and then opened an agent session for a call that was gone). The same bridge still answers the next
    call through the same slow server."""
    need("sipp")
    front = SlowHandshake(embedded_server.port, delay=4.0)
    bridge = BridgeProcess(f"ws://127.0.0.1:{front.port}/v1/realtime", tmp_path)
    sessions = embedded_server.metrics()["stepaudio_sessions_total"]
    same_branch = "branch=z9hG4bK-cancel-[call_number]"
    try:
        cancelled = run_sipp(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0")).replace("branch=[branch]", same_branch),
            expect(180, optional=(100,)),
            '<pause milliseconds="1000"/>\n',  # it rings: the bridge's connection is surely held by now
            request("CANCEL", 1, in_dialog=False).replace("branch=[branch]", same_branch),
            expect(200, 487, optional=()),
            request("ACK", 1, in_dialog=True).replace("branch=[branch]", same_branch)), bridge.port, tmp_path)
        done = time.monotonic()
        hung_up = wait_for(lambda: front.hung_up, 2)
        logged = wait_for(bridge.calls, 2)
        answered = run_sipp(scenario(
            request("INVITE", 2, in_dialog=False, body=sdp("0")), expect(200),
            request("ACK", 2, in_dialog=True), '<pause milliseconds="1000"/>\n',
            request("BYE", 3, in_dialog=True), expect(200, optional=())),
            bridge.port, tmp_path)
        calls = wait_for(lambda: len(bridge.calls()) == 2 and bridge.calls(), 10)
    finally:
        bridge.stop()
        front.close()
    for code, errors in (cancelled, answered):
        assert code == 0, f"{errors}\n{bridge.log()}"
    assert hung_up and hung_up[0] - done < 2, f"the connection was kept after the CANCEL\n{bridge.log()}"
    assert [c["end_reason"] for c in logged] == ["cancelled"], logged
    assert [c["end_reason"] for c in calls] == ["cancelled", "remote hangup"], calls
    assert calls[1]["agent_session_id"], calls
    assert front.passed == 1  # only the answered call's connection reached the server
    assert embedded_server.metrics()["stepaudio_sessions_total"] == sessions + 1


def test_a_reinvite_while_the_call_rings_gets_500_and_the_call_goes_on(tmp_path: Path) -> None:
    """RFC 3261 14.2: an INVITE in the early dialog of our 180, before the first one is answered, gets 500 with
    Retry-After; it got 481, which tells the caller the dialog is gone (12.2.1.2), though the bridge answers the
    call a moment later. Here the call rings 3 s (an agent server slow to accept) and is then answered."""
    need("sipp")

    def agent(ws: ServerConnection) -> None:
        for _ in ws:
            pass

    with ws_server_thread(agent, process_request=lambda conn, request: time.sleep(3)) as port:
        bridge = BridgeProcess(f"ws://127.0.0.1:{port}/v1/realtime", tmp_path)
        try:
            code, errors = run_sipp(scenario(
                request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(180, optional=(100,)),
                request("INVITE", 2, in_dialog=True, body=sdp("0", version=2)),
                expect(500, optional=(), match="^ *([1-9]|10) *$", header="Retry-After"),
                request("ACK", 2, in_dialog=True),
                expect(200, optional=(180,)), request("ACK", 1, in_dialog=True), '<pause milliseconds="500"/>\n',
                request("BYE", 3, in_dialog=True), expect(200, optional=())), bridge.port, tmp_path)
            calls = wait_for(bridge.calls, 10)
        finally:
            bridge.stop()
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert [c["end_reason"] for c in calls] == ["remote hangup"], calls
