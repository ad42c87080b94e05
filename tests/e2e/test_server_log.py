"""The server's log as an operator reads it: with several sessions at once, each line says whose it is."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.e2e.helpers import open_conversation

pytestmark = pytest.mark.slow


async def test_each_sessions_warnings_name_that_session(embedded_server) -> None:
    """Two sessions each send a misspelt session field: the two warnings interleave with the other sessions' lines,
    so each must carry the id of the session that sent it (the id a client sees in session.created)."""
    convs = [await open_conversation(embedded_server.ws) for _ in range(2)]
    try:
        ids = [conv.of_type("session.created")[0]["session"]["id"] for conv in convs]
        for conv, misspelt in zip(convs, ("instructionz", "voicee")):
            await conv.update_session(**{misspelt: "x"})
    finally:
        for conv in convs:
            await conv.close()
    await asyncio.sleep(0.5)  # the server's log is a file another process writes
    log = embedded_server.log()
    for session_id, misspelt in zip(ids, ("instructionz", "voicee")):
        lines = [line for line in log.splitlines() if f"session.{misspelt}" in line]
        assert len(lines) == 1, log
        assert re.search(rf" WARNING controller\.session {session_id}: session\.update: ignored", lines[0]), lines
