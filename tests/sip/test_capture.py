"""The SIP tests' tshark capture (peers.Capture) keeps every packet sent before it was stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from pathlib import Path

from tests.sip.media import free_udp_port, read_pcap_udp
from tests.sip.peers import Capture, need


def test_a_capture_that_fell_behind_keeps_the_packets_sent_before_its_stop(tmp_path: Path) -> None:
    """stop() slept 0.3 s, then stopped tshark, whose dumpcap drops the packets it has not yet taken from the kernel:
    a dumpcap descheduled 0.6 s (a loaded box) lost all 20 packets sent before the stop, the end of a call's audio
    that the test then reads. stop() now waits for a marker packet sent after them."""
    need("tshark")
    port = free_udp_port()
    pcap = tmp_path / "rtp.pcap"
    capture = Capture(pcap, port)
    dumpcap = int(Path(f"/proc/{capture.proc.pid}/task/{capture.proc.pid}/children").read_text().split()[0])
    os.kill(dumpcap, signal.SIGSTOP)
    resume = threading.Timer(0.6, os.kill, (dumpcap, signal.SIGCONT))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for n in range(20):
                sender.sendto(n.to_bytes(2, "big") * 86, ("127.0.0.1", port))
        resume.start()
        capture.stop()
    finally:
        resume.cancel()
        with contextlib.suppress(ProcessLookupError):  # a dumpcap that stop() saw end
            os.kill(dumpcap, signal.SIGCONT)
    got = [payload[:2] for _, dport, payload in read_pcap_udp(pcap) if dport == port]
    assert got == [n.to_bytes(2, "big") for n in range(20)]
