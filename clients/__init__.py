"""Python client of the stepaudio-rt server (OpenAI Realtime protocol, GA event names).

Pure parts: `clients.events` (server event parsing, client event builders), `clients.audio` (conversion,
chunking, pacing, send log), `clients.playback` (barge-in truncation bookkeeping), `clients.g711`.
Transport: `clients.realtime_client.RealtimeClient` (asyncio, websockets). CLI: `clients.talk`.

Exports are resolved lazily so that `import clients.g711` (used by the server and the SIP bridge) does not
load the WebSocket transport.
"""

from __future__ import annotations

import importlib

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
