"""The asyncio datagram protocol the bridge's SIP and RTP sockets use: each datagram to one callback."""

from __future__ import annotations

import asyncio
import errno
import logging
import random
from collections.abc import Callable
from typing import Any

__all__ = ["DatagramHandler", "open_rtp_socket"]

logger = logging.getLogger(__name__)


class DatagramHandler(asyncio.DatagramProtocol):
    """Hands each datagram and its (host, port) source to `on_datagram`."""

    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        logger.debug("udp error: %s", exc)  # ICMP port unreachable from a peer that went away


async def open_rtp_socket(on_datagram: Callable[[bytes, tuple[str, int]], None], host: str,
                          ports: tuple[int, int] | None, rng: random.Random) -> asyncio.DatagramTransport:
    """A UDP socket for one call's RTP: on any free port, or on a free one of `ports` (inclusive; a firewall's
    range), tried in random order so that calls do not all probe the same ports first."""
    loop = asyncio.get_running_loop()
    candidates = [0] if ports is None else rng.sample(range(ports[0], ports[1] + 1), ports[1] - ports[0] + 1)
    for port in candidates:
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: DatagramHandler(on_datagram),
                                                               local_addr=(host, port))
            return transport
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or port == 0:
                raise
    assert ports is not None
    raise OSError(errno.EADDRINUSE, f"no free RTP port in {ports[0]}-{ports[1]} on {host}")
