"""talk's connection: wait for a server still loading its models, and say in one line why a connection failed."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import time
from urllib.parse import urlsplit

from websockets.exceptions import InvalidStatus

from clients.realtime_client import RealtimeClient, ReconnectPolicy

__all__ = ["connect_failure", "connect_when_loaded"]

LOADING_POLL_S = 1.0  # below the server's Retry-After (5 s): a local user waits for the load, not for the hint


def connect_failure(url: str, exc: OSError) -> str:
    """Why a connection failed, and what to check."""
    if urlsplit(url).scheme in ("wss", "https") and isinstance(exc, (ssl.SSLEOFError, ConnectionResetError)):
        # The server has no TLS: it answers the TLS hello as a bad HTTP request and hangs up, which read as a bare
        # "ConnectionResetError (is `stepaudio-rt serve` running there?)" while it was.
        return "the TLS handshake failed (`stepaudio-rt serve` speaks plain ws:// and http://, with no TLS)"
    if isinstance(exc, ssl.SSLCertVerificationError):  # its errno is OpenSSL's: it read "Operation not permitted"
        return (f"the server's TLS certificate is not trusted here: {exc.verify_message} (for a private CA, point "
                "SSL_CERT_FILE at its certificate)")
    # asyncio's strerror is "Connect call failed (...)": name the errno. An unknown host's errno is a getaddrinfo
    # code (negative), which os.strerror reads as "Unknown error -2": its strerror says it.
    errno_text = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror
    return f"{errno_text or str(exc) or type(exc).__name__} (is `stepaudio-rt serve` running there?)"


def _is_loading(exc: InvalidStatus) -> bool:
    """The server's answer while its models load: 503 `loading` (a full server's 503 says "server full")."""
    return exc.response.status_code == 503 and exc.response.body.startswith(b"loading")


async def connect_when_loaded(url: str, api_key: str | None, model: str | None, reconnect: ReconnectPolicy,
                              wait_s: float) -> RealtimeClient:
    """Connects, waiting up to `wait_s` for a server that is still loading its models: its first start (model
    assembly included) takes tens of seconds, and a user starts talk as soon as `make serve` is running."""
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            return await RealtimeClient.connect(url, api_key=api_key, model=model, reconnect=reconnect)
        except InvalidStatus as exc:
            if not _is_loading(exc) or time.monotonic() >= deadline:
                raise
        except TimeoutError:
            # Once it said `loading`, a server that does not answer is still loading: the chat LM's loader holds the
            # interpreter for seconds (20 s seen on two busy cores), past the handshake's own timeout.
            if not told or time.monotonic() >= deadline:
                raise
        if not told:
            print(f"talk: the server is loading its models; waiting up to {wait_s:g} s", file=sys.stderr)
            told = True
        await asyncio.sleep(LOADING_POLL_S)
