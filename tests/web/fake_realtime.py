"""A scripted Realtime server for the browser page's tests: what a real server does only rarely (fail, close with a
given code) or what another server does (drop a cut item's transcript), on cue.

websockets' sync server in a thread: it answers session.update with session.updated, as any server does, and hands
every other client event to the test's `answer`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from itertools import count

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection

from tests.ws_thread import ws_server_thread

Answer = Callable[[ServerConnection, dict], None]  # (connection, client event): sends whatever the script says


_ids = count()


def send(ws: ServerConnection, event_type: str, **fields: object) -> None:
    ws.send(json.dumps({"type": event_type, "event_id": f"event_fake_{next(_ids)}", **fields}))


def send_spoken_reply(ws: ServerConnection, item_id: str, text: str, seconds: float) -> None:
    """A reply as a server streams it: created, its words, `seconds` of a 220 Hz tone as its audio in 100 ms deltas,
    all at once (faster than it plays)."""
    send(ws, "response.created", response={"id": f"resp_{item_id}", "status": "in_progress"})
    send(ws, "response.output_item.added", item={"id": item_id, "type": "message", "role": "assistant"})
    send(ws, "response.output_audio_transcript.delta", item_id=item_id, delta=text)
    tone = np.sin(np.arange(round(24000 * seconds)) * 2 * np.pi * 220 / 24000) * 8000
    for chunk in np.array_split(tone, max(1, round(seconds * 10))):
        send(ws, "response.output_audio.delta", item_id=item_id,
             delta=base64.b64encode(chunk.astype("<i2").tobytes()).decode())


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

    with ws_server_thread(session, subprotocols=["realtime"], process_request=no_page) as port:
        yield f"ws://127.0.0.1:{port}/v1/realtime"
