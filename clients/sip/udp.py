"""The asyncio datagram protocol the bridge's SIP and RTP sockets use: each datagram to one callback."""

from __future__ import annotations

import asyncio
import errno
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from clients.sip.rtp import rtp_ports

__all__ = ["DatagramHandler", "open_rtp_socket"]

logger = logging.getLogger(__name__)

_EPHEMERAL_TRIES = 64  # picks before giving up: all 64 odd on a system with free ports is a 2**-64 chance


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
    """A UDP socket for one call's RTP on an even port (RFC 3550 11; rtp.rtp_ports): any free one, or a free one of
    the RTP ports of `ports` (inclusive; a firewall's range), tried in random order so that calls do not all probe
    the same ports first."""
    loop = asyncio.get_running_loop()

    async def bind(port: int) -> asyncio.DatagramTransport:
        transport, _ = await loop.create_datagram_endpoint(lambda: DatagramHandler(on_datagram),
                                                           local_addr=(host, port))
        return transport

    if ports is None:
        return await _even_ephemeral_port(bind, host)
    candidates = rtp_ports(*ports)
    for port in rng.sample(candidates, len(candidates)):
        try:
            return await bind(port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, f"no free RTP port pair in {ports[0]}-{ports[1]} on {host}")


async def _even_ephemeral_port(bind: Callable[[int], Awaitable[asyncio.DatagramTransport]],
                               host: str) -> asyncio.DatagramTransport:
    """A socket on an even port that the system picks: the odd ones it offers first stay bound until then, so that
    it offers others (half of its picks are even: two tries on average)."""
    odd: list[asyncio.DatagramTransport] = []
    try:
        for _ in range(_EPHEMERAL_TRIES):
            transport = await bind(0)
            if transport.get_extra_info("sockname")[1] % 2 == 0:
                return transport
            odd.append(transport)
    finally:
        for transport in odd:
            transport.close()
    raise OSError(errno.EADDRINUSE, f"no free even UDP port on {host}")
