"""A websockets (sync) server on 127.0.0.1 in a background thread: what tests stand up in place of an agent server."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from websockets.sync.server import ServerConnection, serve


@contextmanager
def ws_server_thread(handler: Callable[[ServerConnection], None], **options: Any) -> Iterator[int]:
    """Serves `handler` (with websockets.sync.server.serve's `options`) on a free port; yields the port."""
    with serve(handler, "127.0.0.1", 0, **options) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.socket.getsockname()[1]
        finally:
            server.shutdown()
            thread.join(10)
