"""Python client of the stepaudio-rt server (OpenAI Realtime protocol, GA event names).

Pure parts: `clients.events` (server event parsing, client event builders), `clients.audio` (conversion,
chunking, pacing, send log), `clients.playback` (barge-in truncation bookkeeping), `clients.g711`,
`clients.connection` (URL, reconnect policy, connection errors).
Transport: `clients.realtime_client.RealtimeClient` (asyncio, websockets). CLI: `clients.talk` (command line) over
`clients.talk_session` (run loop), `clients.talk_connect`, `clients.talk_printer` and `clients.talk_wav`.

Exports are resolved lazily so that `import clients.g711` (used by the server and the SIP bridge) does not
load the WebSocket transport.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the lazy exports resolve to, for type checkers (else each is object); "X as X" re-exports
    from clients.audio import Pacing as Pacing, SendLog as SendLog
    from clients.events import (ErrorInfo as ErrorInfo, ServerEvent as ServerEvent,
                                ServerEventError as ServerEventError, parse_server_event as parse_server_event)
    from clients.playback import Playback as Playback, Truncation as Truncation
    from clients.realtime_client import (HandshakeRefused as HandshakeRefused, RealtimeClient as RealtimeClient,
                                         RealtimeConnectionError as RealtimeConnectionError,
                                         ReconnectPolicy as ReconnectPolicy)

_EXPORTS = {
    "HandshakeRefused": "clients.realtime_client",
    "RealtimeClient": "clients.realtime_client",
    "RealtimeConnectionError": "clients.realtime_client",
    "ReconnectPolicy": "clients.realtime_client",
    "ServerEvent": "clients.events",
    "ServerEventError": "clients.events",
    "ErrorInfo": "clients.events",
    "parse_server_event": "clients.events",
    "Playback": "clients.playback",
    "Truncation": "clients.playback",
    "Pacing": "clients.audio",
    "SendLog": "clients.audio",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clients' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
