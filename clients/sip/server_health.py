"""Whether the agent server would take a session now, as its /healthz says: for the bridge's answer to OPTIONS.

A proxy probes its gateways with OPTIONS and routes calls only to those that answer 200 (RFC 3261 11.2: OPTIONS
is answered as an INVITE would be). An INVITE gets 503 when the agent server cannot be reached or is full, so
the bridge asks the server's /healthz (200: a new session would be served; 503 with Retry-After: loading, full,
its chat LM down) every HEALTH_EVERY_S, off the SIP loop, and the UA core answers OPTIONS from the last answer.
Down is no answer within the timeout, or a 503: a Realtime server without /healthz (404, 426) still takes calls.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

__all__ = ["HEALTH_EVERY_S", "agent_health"]

HEALTH_EVERY_S = 5.0  # the Retry-After of our 503s: a proxy that comes back then gets a fresh answer
_HEAD_LIMIT = 8192  # bytes of a /healthz response head we read; a longer one is no server of ours


async def agent_health(server_url: str, timeout: float, down_retry_after: int) -> int | None:
    """None: the agent server at `server_url` answered /healthz other than 503 (see the module docstring). Else the
    Retry-After seconds of the 503 a call would get: the server's own, or `down_retry_after` when it sent none or
    did not answer in `timeout`."""
    parts = urlsplit(server_url)
    tls = parts.scheme in ("wss", "https")
    try:
        async with asyncio.timeout(timeout):
            status, retry_after = await _get_healthz(parts.hostname or "", parts.port or (443 if tls else 80), tls)
    except (OSError, TimeoutError, ValueError, IndexError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return down_retry_after
    if status != 503:
        return None
    return retry_after if retry_after is not None else down_retry_after


async def _get_healthz(host: str, port: int, tls: bool) -> tuple[int, int | None]:
    """(HTTP status, Retry-After seconds or None) of GET /healthz."""
    reader, writer = await asyncio.open_connection(host, port, ssl=tls or None, limit=_HEAD_LIMIT)
    try:
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    status = int(head[0].split()[1])  # "HTTP/1.1 200 OK"; ValueError/IndexError: not HTTP
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "retry-after" and value.strip().isdigit():
            return status, int(value.strip())
    return status, None
