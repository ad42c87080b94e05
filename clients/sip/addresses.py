"""Addresses as the SIP bridge holds them: a (host, port) pair, and a host read as an IP address when it is one."""
from __future__ import annotations

import ipaddress

Addr = tuple[str, int]  # (host, port), as UDP sockets give and take them


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address `host` spells, or None for a host name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
