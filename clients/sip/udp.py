"""The asyncio datagram protocol the bridge's SIP and RTP sockets use: each datagram to one callback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["DatagramHandler"]

logger = logging.getLogger(__name__)


class DatagramHandler(asyncio.DatagramProtocol):
    """Hands each datagram and its (host, port) source to `on_datagram`."""

    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        logger.debug("udp error: %s", exc)  # ICMP port unreachable from a peer that went away
