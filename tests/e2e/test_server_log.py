"""The server's log as an operator reads it: with several sessions at once, each line says whose it is."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.e2e.helpers import open_conversation

pytestmark = pytest.mark.slow


async def test_each_sessions_warnings_name_that_session(embedded_server) -> None:
    """Two sessions each ask for something this server serves another way (traces it keeps none of, a noise
    reduction it does not do): the two warnings interleave with the other sessions' lines, so each must carry the id
    of the session that sent it (the id a client sees in session.created)."""
    asks = (({"tracing": "auto"}, "session.tracing"),
            ({"audio": {"input": {"noise_reduction": {"type": "near_field"}}}}, "session.audio.input.noise_reduction"))
    convs = [await open_conversation(embedded_server.ws) for _ in asks]
    try:
        ids = [conv.of_type("session.created")[0]["session"]["id"] for conv in convs]
        for conv, (fields, _) in zip(convs, asks):
            await conv.update_session(**fields)
    finally:
        for conv in convs:
            await conv.close()
    await asyncio.sleep(0.5)  # the server's log is a file another process writes
    log = embedded_server.log()
    for session_id, (_, path) in zip(ids, asks):
        lines = [line for line in log.splitlines() if f"{path}:" in line]
        assert len(lines) == 1, log
        assert re.search(rf" WARNING controller\.session {session_id}: session\.update: {re.escape(path)}: ",
                         lines[0]), lines


async def test_a_reply_cut_off_by_the_client_hanging_up_is_logged_and_counted_as_cancelled(embedded_server) -> None:
    """A client that hangs up mid-reply (a closed browser tab, a dropped call): the reply it saw start ends there.
    Its log line and /metrics count must say so, as for a reply cancelled on the wire: else the operator's record
    of that reply stops at response.created, and stepaudio_responses_total misses it."""
    before = embedded_server.metrics().get('stepaudio_responses_total{status="cancelled"}', 0.0)
    conv = await open_conversation(embedded_server.ws)
    await conv.update_session(output_modalities=["text"])
    n = await conv.ask("Tell me a very long story about the sea.")
    created = await conv.wait_for("response.created", after=n, timeout=30)
    conv.ws.transport.abort()  # gone without a close frame, as a killed client is
    await conv.close()  # collects the client's reader, ended by the abort
    for _ in range(80):
        if embedded_server.metrics()["stepaudio_sessions_live"] == 0:
            break
        await asyncio.sleep(0.25)
    after = embedded_server.metrics().get('stepaudio_responses_total{status="cancelled"}', 0.0)
    response_id = created["response"]["id"]
    assert after == before + 1, embedded_server.log()
    assert f"response {response_id} cancelled (session closed)" in embedded_server.log()
