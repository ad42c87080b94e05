"""A reverse proxy that mounts a server under a sub-path, as nginx's `location /voice/ { proxy_pass http://server/; }`
does: http://proxy/voice/X is the server's /X, HTTP and WebSocket alike; anything outside the sub-path is not found.
With pass_upgrades=False it is such a proxy without `proxy_set_header Upgrade/Connection`: a WebSocket handshake
reaches the server as a plain GET (Upgrade and Connection are hop-by-hop), and the server's answer comes back.

websockets' sync server in a thread. A WebSocket is opened upstream during the client's handshake, so that the
server's refusal (401, 503) reaches the client as its answer, and frames and the close code pass through unchanged.
"""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import ServerConnection
from websockets.typing import Subprotocol

from tests.ws_thread import ws_server_thread

PASSED_HEADERS = ("Content-Type", "Retry-After", "Upgrade")  # of the server's HTTP answers


@contextmanager
def reverse_proxy(server_http: str, prefix: str, *, pass_upgrades: bool = True) -> Iterator[str]:
    """Serves `server_http` (http://host:port) under `prefix` ('/voice/') until the block ends; yields the proxy's
    http:// URL of the prefix."""
    upstreams: dict[ServerConnection, ClientConnection] = {}
    server_ws = "ws" + server_http.removeprefix("http")

    def forward_http(path: str, request: Request) -> Response:
        passed = {k: request.headers[k] for k in ("Authorization",) if k in request.headers}  # as nginx passes it
        try:
            with urllib.request.urlopen(urllib.request.Request(server_http + path, headers=passed), timeout=30) as r:
                status, headers, body = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, headers, body = e.code, e.headers, e.read()
        kept = Headers([(k, headers[k]) for k in PASSED_HEADERS if headers[k]] + [("Content-Length", str(len(body)))])
        return Response(status, "", kept, body)

    def process_request(ws: ServerConnection, request: Request) -> Response | None:
        if not request.path.startswith(prefix):
            return ws.respond(404, "not found\n")
        path = request.path[len(prefix) - 1:]
        if request.headers.get("Upgrade", "").lower() != "websocket" or not pass_upgrades:
            return forward_http(path, request)
        offered = [Subprotocol(p.strip()) for h in request.headers.get_all("Sec-WebSocket-Protocol")
                   for p in h.split(",")]
        try:
            upstreams[ws] = connect(server_ws + path, subprotocols=offered or None, max_size=None, proxy=None)
        except InvalidStatus as e:
            return e.response
        return None

    def select_subprotocol(ws: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        return upstreams[ws].subprotocol

    def relay(ws: ServerConnection) -> None:
        upstream = upstreams.pop(ws)
        down = threading.Thread(target=pump, args=(upstream, ws), daemon=True)
        down.start()
        pump(ws, upstream)
        down.join(10)

    with ws_server_thread(relay, process_request=process_request, select_subprotocol=select_subprotocol,
                          max_size=None) as port:
        yield f"http://127.0.0.1:{port}{prefix}"


def pump(source: ServerConnection | ClientConnection, sink: ServerConnection | ClientConnection) -> None:
    """Messages from source to sink until source closes; then sink is closed with source's code and reason."""
    try:
        for message in source:
            sink.send(message)
    except ConnectionClosed:
        pass
    frame = source.protocol.close_rcvd or source.protocol.close_sent
    if frame is None:  # dropped without a close frame: so is the other side, as a proxy's TCP connection would be
        with suppress(OSError):
            sink.socket.shutdown(socket.SHUT_RDWR)
        return
    with suppress(ConnectionClosed):
        sink.close(frame.code, frame.reason)
