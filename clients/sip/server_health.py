"""Whether the agent server would take a session now, as its /healthz says: for the bridge's answer to OPTIONS.

A proxy probes its gateways with OPTIONS and routes calls only to those that answer 200 (RFC 3261 11.2: OPTIONS
is answered as an INVITE would be). An INVITE gets 503 when the agent server cannot be reached or is full, so
the bridge asks the server's /healthz (200: a new session would be served; 503 with Retry-After: loading, full,
its chat LM down) every HEALTH_EVERY_S, off the SIP loop, and the UA core answers OPTIONS from the last answer.
Down is no answer within the timeout, or a 503: a Realtime server without /healthz (404, 426) still takes calls.
A server that answers /healthz but refuses the bridge's API key (or its lack of one) would refuse every call too:
its Realtime path, asked as a plain request with the key, answers 401 then (426 with the right key).
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from clients.connection import build_url

__all__ = ["HEALTH_EVERY_S", "agent_health", "agent_refuses_key"]

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


async def agent_refuses_key(server_url: str, api_key: str | None, timeout: float) -> bool:
    """Whether the agent server refuses `api_key` (None: no key) at its Realtime path: 401 to a plain request
    with it. No answer, or any other status, is not a refusal (the health check says whether the server is up)."""
    parts = urlsplit(build_url(server_url, None))
    tls = parts.scheme == "wss"
    key = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
    try:
        async with asyncio.timeout(timeout):
            status, _ = await _get(parts.hostname or "", parts.port or (443 if tls else 80), tls, parts.path, key)
    except (OSError, TimeoutError, ValueError, IndexError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return False
    return status == 401


async def _get_healthz(host: str, port: int, tls: bool) -> tuple[int, int | None]:
    """(HTTP status, Retry-After seconds or None) of GET /healthz."""
    return await _get(host, port, tls, "/healthz")


async def _get(host: str, port: int, tls: bool, path: str, headers: str = "") -> tuple[int, int | None]:
    """(HTTP status, Retry-After seconds or None) of GET `path`, with `headers` (CRLF-ended lines) added."""
    reader, writer = await asyncio.open_connection(host, port, ssl=tls or None, limit=_HEAD_LIMIT)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}Connection: close\r\n\r\n".encode())
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
