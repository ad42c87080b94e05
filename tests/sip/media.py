"""Test helpers for the SIP real-peer tests: G.711 from real speech, classic pcap write/read, energy."""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import time
from pathlib import Path

import numpy as np

from clients.g711 import alaw_decode, ulaw_decode
from clients.sip.rtp import RtpPacket

ULAW_SILENCE = b"\xff"


def heard_beckett(transcripts: list[str]) -> bool:
    """The agent's transcripts of a caller who spoke the recording's first 2.9 s, "Ever tried. Ever failed.", over
    8 kHz G.711: one of the two phrases, as Whisper tiny.en hears telephone audio (a CI run heard "ever cried, ever
    failed."; RTP timing varies from run to run, and so does what the recognizer gets)."""
    return re.search(r"ever (tried|failed)", " ".join(transcripts).lower()) is not None


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_rtp_port() -> int:
    """A free even UDP port: an RTP port (RFC 3550 11), as the bridge takes them."""
    while True:
        port = free_udp_port() & ~1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def held_rtp_port_with_free_pair_above() -> tuple[socket.socket, int]:
    """A UDP socket holding some even port p while p + 2 is free: of the range p..p+3 (two RTP port pairs), a call
    can take p + 2 only."""
    while True:
        port = free_rtp_port()
        held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            held.bind(("127.0.0.1", port))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", port + 2))
            return held, port
        except OSError:
            held.close()


def free_udp_tcp_port() -> int:
    """A port free for UDP and TCP both (baresip's sip_listen binds every transport on it; its ctrl_tcp listens on
    TCP): a UDP-free port can be some TCP connection's ephemeral local port (a run failed with baresip's TCP bind in
    use)."""
    for _ in range(50):
        port = free_udp_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both UDP and TCP")


def ulaw_speech(wav: Path, out: Path, lead_s: float = 0.3, tail_s: float = 0.3, seconds: float | None = None) -> bytes:
    """`sox -D wav -r 8000 -c 1 -e u-law -t raw` (no dither: deterministic), padded with u-law silence."""
    raw = out.with_suffix(".ul")
    trim = ["trim", "0", str(seconds)] if seconds else []
    subprocess.run(["sox", "-D", str(wav), "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw", str(raw), *trim],
                   check=True)
    return ULAW_SILENCE * int(lead_s * 8000) + raw.read_bytes() + ULAW_SILENCE * int(tail_s * 8000)


def pcm8k_wav(wav: Path, out: Path, lead_s: float, tail_s: float) -> Path:
    """A mono 16-bit 8 kHz wav of `wav` with silence around it (baresip's aufile source)."""
    subprocess.run(["sox", "-D", str(wav), "-r", "8000", "-c", "1", "-b", "16", str(out),
                    "pad", str(lead_s), str(tail_s)], check=True)
    return out


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_rtp_pcap(path: Path, payload: bytes, *, payload_type: int = 0, src_port: int = 6000,
                   dst_port: int = 5004, ssrc: int = 0x1234ABCD) -> float:
    """A classic pcap (Ethernet/IPv4/UDP/RTP) of `payload` cut in 160-byte packets every 20 ms; returns seconds."""
    frames = [payload[i:i + 160].ljust(160, ULAW_SILENCE) for i in range(0, len(payload), 160)]
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # pcap header, LINKTYPE_ETHERNET
    ip = bytes([127, 0, 0, 1])
    for n, frame in enumerate(frames):
        rtp = RtpPacket(payload_type, n & 0xFFFF, (n * 160) & 0xFFFFFFFF, ssrc, frame, marker=n == 0).serialize()
        udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(rtp), 0) + rtp
        iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0, 64, 17, 0, ip, ip)
        iph = iph[:10] + struct.pack("!H", _ip_checksum(iph)) + iph[12:]
        eth = b"\x00" * 12 + b"\x08\x00" + iph + udp
        t_us = n * 20_000
        out.append(struct.pack("<IIII", t_us // 1_000_000, t_us % 1_000_000, len(eth), len(eth)) + eth)
    path.write_bytes(b"".join(out))
    return len(frames) * 0.02


def read_pcap_udp(path: Path) -> list[tuple[int, int, bytes]]:
    """(src port, dst port, UDP payload) of every IPv4/UDP packet in a classic pcap (Ethernet or SLL)."""
    data = path.read_bytes()
    magic, = struct.unpack_from("<I", data)
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    link_len = {1: 14, 113: 16, 276: 20, 0: 4}[linktype]
    out, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack_from(endian + "I", data, off + 8)[0]
        pkt = data[off + 16: off + 16 + incl]
        off += 16 + incl
        ip = pkt[link_len:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        sport, dport, ulen = struct.unpack_from("!HHH", ip, ihl)
        out.append((sport, dport, bytes(ip[ihl + 8: ihl + ulen])))
    return out


def decode(payload: bytes, codec: str) -> np.ndarray:
    pcm = ulaw_decode(payload) if codec == "PCMU" else alaw_decode(payload)
    return pcm.astype(np.float32) / 32768.0


def peak_rms_dbfs(x: np.ndarray, rate: int = 8000, window_s: float = 0.2) -> float:
    """The loudest 200 ms window's RMS in dBFS (speech is around -30..-15; digital silence is -inf)."""
    n = int(rate * window_s)
    if x.size < n:
        return float("-inf")
    windows = x[: x.size - x.size % n].reshape(-1, n)
    rms = np.sqrt((windows.astype(np.float64) ** 2).mean(axis=1)).max()
    return float(20 * np.log10(rms)) if rms > 0 else float("-inf")


def speech_seconds(x: np.ndarray, rate: int = 8000, threshold_dbfs: float = -45.0) -> float:
    """How many seconds of 20 ms windows are louder than `threshold_dbfs`."""
    n = rate // 50
    windows = x[: x.size - x.size % n].reshape(-1, n).astype(np.float64)
    rms = np.sqrt((windows ** 2).mean(axis=1))
    return float((rms > 10 ** (threshold_dbfs / 20)).sum() * 0.02)


def wait_for(predicate, timeout: float, interval: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
