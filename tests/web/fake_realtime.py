"""A scripted Realtime server for the browser page's tests: what a real server does only rarely (fail, close with a
given code) or what another server does (drop a cut item's transcript), on cue.

websockets' sync server in a thread: it answers session.update with session.updated, as any server does, and hands
every other client event to the test's `answer`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from itertools import count

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection, serve

Answer = Callable[[ServerConnection, dict], None]  # (connection, client event): sends whatever the script says


_ids = count()


def send(ws: ServerConnection, event_type: str, **fields: object) -> None:
    ws.send(json.dumps({"type": event_type, "event_id": f"event_fake_{next(_ids)}", **fields}))


@contextmanager
def fake_realtime_server(answer: Answer) -> Iterator[str]:
    """Serves until the block ends; yields the ws:// URL to give the page (as ?url=)."""
    def session(ws: ServerConnection) -> None:
        send(ws, "session.created", session={"id": "sess_fake", "type": "realtime", "instructions": "Be fake."})
        with suppress(ConnectionClosed):  # the script's own close, with a code that is an error
            for raw in ws:
                event = json.loads(raw)
                if event["type"] == "session.update":
                    send(ws, "session.updated", session={"type": "realtime", "instructions": "Be fake."})
                else:
                    answer(ws, event)

    def no_page(ws: ServerConnection, request: Request) -> Response | None:
        # The page asks for /healthz; a server without one says 404 (not a failed handshake in the test's log).
        return None if request.headers.get("Upgrade") else ws.respond(404, "not found\n")

    with serve(session, "127.0.0.1", 0, subprotocols=["realtime"], process_request=no_page) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}/v1/realtime"
        finally:
            server.shutdown()
            thread.join(10)
