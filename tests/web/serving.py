"""Running a websockets sync server for a test: the scripted servers and the proxy all serve in a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from websockets.sync.server import Server


@contextmanager
def serving(server: Server) -> Iterator[int]:
    """Serves `server` in a thread until the block ends, then shuts it down; yields its port."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.socket.getsockname()[1]
    finally:
        server.shutdown()
        thread.join(10)
