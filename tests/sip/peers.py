"""Real processes for the SIP tests: the bridge CLI, sipp, tshark, baresip."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from clients.sip.rtp import RtpPacket
from tests.sip.media import decode, free_udp_port, peak_rms_dbfs, read_pcap_udp, speech_seconds, wait_for
from tests.conftest import missing_peer


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        missing_peer(f"needs {', '.join(missing)} (apt-get install sip-tester baresip-core sox tshark)")


def sip_request(method: str, port: int, local_port: int, *, call_id: str = "probe-1", extra: str = "",
                body: bytes = b"", to_tag: str = "") -> bytes:
    head = (f"{method} sip:agent@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK-{call_id}-{method.lower()}\r\n"
            f"From: <sip:test@127.0.0.1:{local_port}>;tag=t-{call_id}\r\n"
            f"To: <sip:agent@127.0.0.1:{port}>{to_tag}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {2 if method == 'BYE' else 1} {method}\r\n"
            f"Contact: <sip:test@127.0.0.1:{local_port}>\r\nMax-Forwards: 70\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


class BridgeProcess:
    """`python -m clients.sip.cli` (the code behind `stepaudio-rt sip-bridge`) in a subprocess."""

    def __init__(self, server_ws: str, workdir: Path, *extra: str) -> None:
        self.port = free_udp_port()
        self.call_log = workdir / "calls.jsonl"
        self.log_path = workdir / "bridge.log"
        self._log = open(self.log_path, "wb")
        cmd = [sys.executable, "-m", "clients.sip.cli", "--host", "127.0.0.1", "--port", str(self.port),
               "--server-url", server_ws, "--call-log", str(self.call_log), "--log-level", "DEBUG", *extra]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=Path(__file__).resolve().parents[2])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited early:\n{self.log()}")
            if self.answers_options():
                return
        self.stop()
        raise RuntimeError(f"bridge not answering OPTIONS:\n{self.log()}")

    def answers_options(self) -> bool:
        """Whether the bridge answers a ping: 200, or the 503 an INVITE would get while its agent server is down."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.5)
            s.sendto(sip_request("OPTIONS", self.port, s.getsockname()[1], call_id=f"opt-{time.time()}"),
                     ("127.0.0.1", self.port))
            try:
                return s.recv(65535).startswith(b"SIP/2.0 ")
            except OSError:
                return False

    def calls(self) -> list[dict]:
        if not self.call_log.exists():
            return []
        return [json.loads(line) for line in self.call_log.read_text().splitlines() if line.strip()]

    def log(self) -> str:
        if not self._log.closed:  # tests read the log after stop() too
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-8000:]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Capture:
    """tshark writing a classic pcap of UDP to `port` on loopback, and stop()'s marker packet to another port: read
    the packets to `port`."""

    def __init__(self, path: Path, port: int) -> None:
        self.path = path
        self._err = open(path.with_suffix(".log"), "wb")
        # stop()'s marker goes to a port of ours, so that nobody answers it with an ICMP port unreachable
        self._marker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._marker.bind(("127.0.0.1", 0))
        marker_port = self._marker.getsockname()[1]
        self.proc = subprocess.Popen(["tshark", "-q", "-i", "lo", "-f", f"udp dst port {port} or udp dst port "
                                      f"{marker_port}", "-F", "pcap", "-w", str(path)],
                                     stdout=subprocess.DEVNULL, stderr=self._err)
        # "Capturing on" comes before dumpcap has opened the interface: a loaded machine lost the first packets after
        # it (a call's first RTP packet, its marker). "File:" comes once dumpcap captures into the file.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and b"-- File: " not in path.with_suffix(".log").read_bytes():
            if self.proc.poll() is not None:
                raise RuntimeError(path.with_suffix(".log").read_text())
            time.sleep(0.1)

    def stop(self) -> None:
        """Stops once every packet sent before the call is in the file. dumpcap takes packets from the kernel in
        blocks (at most 250 ms apart) and drops the block under way when told to stop: a SIGINT at once lost the
        last 9-12 of 20 packets. Loopback keeps their order, so a marker sent now comes after all of them."""
        if self.proc.poll() is None:
            self._marker.sendto(b"capture ends", self._marker.getsockname())
            marker_port = self._marker.getsockname()[1]
            wait_for(lambda: self.proc.poll() is not None or marker_port in _destinations(self.path), 10, 0.01)
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._marker.close()
        self._err.close()


def _destinations(pcap: Path) -> set[int]:
    """The UDP destination ports in a pcap that tshark may be writing (empty while a packet is half written)."""
    try:
        return {dport for _, dport, _ in read_pcap_udp(pcap)}
    except (struct.error, ValueError, KeyError, OSError):
        return set()


def env_without_display() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    return env


def sipp_call(bridge: BridgeProcess, workdir: Path, scenario: str, *, records: bool = True) -> list[dict]:
    """One sipp call of `scenario` against `bridge`, which is stopped afterwards: asserts that sipp saw every
    response it expected (the bridge's log in the message if not) and returns the bridge's call log lines (refused
    INVITEs' too), waiting up to 10 s for the first call that was answered unless `records` is false (a test that
    reads none)."""
    try:
        code, errors = run_sipp(scenario, bridge.port, workdir)
        calls = wait_for(lambda: any(c["call"] for c in bridge.calls()) and bridge.calls(), 10) if records else []
    finally:
        bridge.stop()
    assert code == 0, f"{errors}\n{bridge.log()}"
    return calls


def run_sipp(scenario: str, bridge_port: int, workdir: Path, *, media_port: int | None = None,
             timeout_s: int = 60, sip_port: int | None = None, call_id: str | None = None,
             media_ip: str = "127.0.0.1", calls: int = 1) -> tuple[int, str]:
    """Run sipp UAC calls of `scenario` (XML text), `calls` of them one after the other, against the bridge: (exit
    code, stderr + error log); their RTP goes from `media_ip`:`media_port`."""
    path = workdir / "scenario.xml"
    path.write_text(scenario)
    media = ["-mi", media_ip, "-mp", str(media_port or free_udp_port())]
    named = ["-cid_str", call_id] if call_id else []
    proc = subprocess.run(["sipp", "-sf", str(path), "-s", "agent", f"127.0.0.1:{bridge_port}", "-i", "127.0.0.1",
                           "-p", str(sip_port or free_udp_port()), *media, *named, "-m", str(calls), "-l", "1",
                           "-timeout", f"{timeout_s}s", "-timeout_error", "-trace_err", "-nostdin"], cwd=workdir,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout_s + 30)
    errors = "".join(p.read_text(errors="replace") for p in workdir.glob("*errors.log"))
    return proc.returncode, proc.stderr + errors


# A scenario step: the caller listens until the test tells it (an INFO, see nudge_caller) that the agent's reply has
# reached it, then goes on (to its BYE). A fixed pause (15 s) was too short for the reply on a loaded 2-core machine.
LISTEN_FOR_REPLY = '<recv request="INFO" timeout="150000"/>\n'
REPLY_TIMEOUT_S = 120  # for the reply; the caller's recv waits longer, so that a reply that never came gets a nudge too


def agent_replied(bridge: BridgeProcess, pcap: Path, port: int) -> bool:
    """The agent's reply reached `port`: the bridge has had all of its audio (it logs the reply's transcript, which
    the server sends after the reply's last audio) and the capture holds speech in PCMU RTP sent to `port`."""
    if "agent said:" not in bridge.log_path.read_text(errors="replace"):
        return False
    try:
        packets = [RtpPacket.parse(p) for _, dport, p in read_pcap_udp(pcap) if dport == port]
    except (struct.error, ValueError):  # tshark is writing a packet
        return False
    audio = decode(b"".join(p.payload for p in packets if p.payload_type == 0), "PCMU")
    return peak_rms_dbfs(audio) > -35.0 and speech_seconds(audio) > 0.2


def nudge_caller(sip_port: int, call_id: str) -> None:
    """The INFO that LISTEN_FOR_REPLY waits for (sipp finds its call by the Call-ID; it need not answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(sip_request("INFO", sip_port, s.getsockname()[1], call_id=call_id), ("127.0.0.1", sip_port))


def call_until_replied(scenario: str, bridge: BridgeProcess, workdir: Path, replied: Callable[[], bool], *,
                       media_port: int | None = None, meanwhile: Callable[[], None] = lambda: None,
                       media_ip: str = "127.0.0.1") -> tuple[int, str]:
    """run_sipp of a scenario with a LISTEN_FOR_REPLY step: the caller is nudged on once `replied()` (or after
    REPLY_TIMEOUT_S: the test's own checks then say what was missing). `meanwhile` runs once the call is started."""
    sip_port, call_id = free_udp_port(), f"replied-{time.time_ns()}@127.0.0.1"
    outcome: list[tuple[int, str]] = []
    caller = threading.Thread(target=lambda: outcome.append(run_sipp(
        scenario, bridge.port, workdir, media_port=media_port, timeout_s=240, sip_port=sip_port, call_id=call_id,
        media_ip=media_ip)))
    caller.start()
    try:
        meanwhile()
        wait_for(lambda: replied() or not caller.is_alive(), REPLY_TIMEOUT_S)
    finally:  # a failed `meanwhile` too: the caller is not left listening
        nudge_caller(sip_port, call_id)
        caller.join()
    ((code, errors),) = outcome
    return code, errors
