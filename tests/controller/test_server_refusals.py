"""Sessions the server turns away (loading, full): what a probe, a load balancer, a client and the log are told."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from controller.metrics import Metrics
from controller.server import RealtimeServer, ServerConfig


async def _never(*_: object) -> None:
    raise AssertionError("no session is handed over while loading")


async def test_while_loading_healthz_and_the_handshake_are_503_with_when_to_come_back() -> None:
    """A 503 without Retry-After says nothing of when to try again: a load balancer or a client retrying at once
    hammered a server that needs a minute to load (a full server's 503 had it already)."""
    server = RealtimeServer(ServerConfig(port=0, retry_after_s=7), Metrics(), _never)
    await server.start()
    try:
        def probe() -> tuple[int, str | None]:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10)
            except urllib.error.HTTPError as answer:
                return answer.code, answer.headers.get("Retry-After")
            raise AssertionError("/healthz answered 200 while loading")

        assert await asyncio.to_thread(probe) == (503, "7")
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{server.port}/v1/realtime"):
                pass
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers.get("Retry-After") == "7"
    finally:
        await server.close()


async def test_a_full_server_logs_its_refusals_once_a_minute_with_their_count(caplog: pytest.LogCaptureFixture) -> None:
    """--max-sessions refusals showed only in /metrics: the log said nothing of the clients turned away. A load
    balancer's retries must not flood it either: the first refusal is logged, the next ones counted into a later
    line."""
    async def hold(connection: object, *_: object) -> None:
        await connection.wait_closed()  # type: ignore[attr-defined]

    server = RealtimeServer(ServerConfig(port=0, max_sessions=1), Metrics(), hold)
    await server.start()
    server.ready = True
    url = f"ws://127.0.0.1:{server.port}/v1/realtime"
    try:
        with caplog.at_level(logging.WARNING, logger="controller.server"):
            async with connect(url):
                for _ in range(3):
                    with pytest.raises(InvalidStatus):
                        async with connect(url):
                            pass
    finally:
        await server.close()
        assert server._refusal_logged_at is not None
        server._log_refusal(server._refusal_logged_at + 61)  # a minute on: the two held back and this one
    lines = [r.getMessage() for r in caplog.records if r.name == "controller.server"]
    assert lines == ["server full (--max-sessions 1): refused 1 session(s)",
                     "server full (--max-sessions 1): refused 3 session(s) in the last 61 s"], lines


async def test_a_session_still_ending_after_its_client_hung_up_keeps_its_place() -> None:
    """--max-sessions 1: a client that hung up left the admitted count as soon as its connection closed, while its
    session was still ending (stopping its replies); the next client was admitted beside it, and
    stepaudio_sessions_live read 2 until the first ended."""
    metrics = Metrics()
    closed, release = asyncio.Event(), asyncio.Event()

    async def session(connection: object, *_: object) -> None:
        metrics.sessions_live.inc()  # as a Session counts itself, from its start to its very end
        try:
            await connection.wait_closed()  # type: ignore[attr-defined]
            closed.set()
            await release.wait()  # the session stops its replies
        finally:
            metrics.sessions_live.dec()

    server = RealtimeServer(ServerConfig(port=0, max_sessions=1), metrics, session)
    await server.start()
    server.ready = True
    url = f"ws://127.0.0.1:{server.port}/v1/realtime"
    try:
        async with connect(url):
            pass
        await asyncio.wait_for(closed.wait(), 30)
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        assert refused.value.response.status_code == 503
        assert metrics.registry.get_sample_value("stepaudio_sessions_live") == 1
        release.set()
        for _ in range(300):  # the first session's end frees its place
            try:
                async with connect(url):
                    break
            except InvalidStatus:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("no place after the first session ended")
    finally:
        release.set()
        await server.close()


def _healthz(port: int) -> tuple[int, dict, str | None]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as answer:
            return answer.status, json.loads(answer.read()), answer.headers.get("Retry-After")
    except urllib.error.HTTPError as answer:
        return answer.code, json.loads(answer.read()), answer.headers.get("Retry-After")


async def test_healthz_says_when_the_server_is_full() -> None:
    """A load balancer's health check read 200 "ok" from a server at --max-sessions, which then refused each session
    sent to it: /healthz now says 503 "full" (with Retry-After) while no place is free, and 200 again after."""
    from tests.controller.scripted_pipeline import ScriptedPipeline, scripted_server
    from tests.e2e.helpers import open_conversation

    async with scripted_server(ScriptedPipeline(), server=ServerConfig(port=0, max_sessions=1)) as app:
        port = app.server.port
        assert await asyncio.to_thread(_healthz, port) == (200, {"status": "ok", "sessions": 0, "max_sessions": 1},
                                                          None)
        conv = await open_conversation(f"ws://127.0.0.1:{port}/v1/realtime")
        assert await asyncio.to_thread(_healthz, port) == (503, {
            "status": "full", "reason": "server full (--max-sessions 1)", "sessions": 1, "max_sessions": 1},
            "5")
        await conv.close()
        for _ in range(300):
            if (await asyncio.to_thread(_healthz, port))[0] == 200:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("still full after the session ended")


async def test_healthz_says_when_the_chat_lm_server_does_not_answer() -> None:
    """With --chat-url, /healthz said 200 "ok" while the chat LM's server was down and every reply failed: a load
    balancer kept sending sessions there. It now asks that server (GET /models) and says 503 "chat_lm_down"."""
    from controller.chat_url import remote_chat_problem
    from lm_engine import RemoteChatBackend
    from tests.controller.scripted_pipeline import ScriptedPipeline, scripted_server

    with socket.socket() as probe:  # a port where nothing listens: connection refused
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    backend = RemoteChatBackend(f"http://127.0.0.1:{dead}/v1", model="m")
    pipeline = ScriptedPipeline()
    pipeline.chat_problem = lambda: remote_chat_problem(backend)  # as the pipelines with a --chat-url answer it
    try:
        async with scripted_server(pipeline) as app:
            status, body, retry = await asyncio.to_thread(_healthz, app.server.port)
    finally:
        backend.close()
    assert (status, body["status"], retry) == (503, "chat_lm_down", "5"), body
    assert body["reason"].startswith(
        f"chat LM unreachable: cannot connect to chat server http://127.0.0.1:{dead}/"), body


async def test_a_plain_request_to_the_api_is_refused_for_its_key_before_its_missing_upgrade() -> None:
    """A plain GET of /v1/realtime got 426 whatever its key: a browser, which sees no status of a refused handshake,
    could not tell a wrong key (401 to the handshake) from a proxy that drops upgrades (the handshake reaching the
    server as a plain GET, 426). The key is checked first: 401 without it or with a wrong one, 426 with the right
    one; a server without keys answers 426."""
    async def status(server: RealtimeServer, key: str | None) -> tuple[int, str | None]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}/v1/realtime", headers=headers)
        try:
            await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)
        except urllib.error.HTTPError as answer:
            return answer.code, answer.headers.get("Upgrade")
        raise AssertionError("a plain request to the API answered 200")

    keyed = RealtimeServer(ServerConfig(port=0, api_keys=("right",)), Metrics(), _never)
    open_server = RealtimeServer(ServerConfig(port=0), Metrics(), _never)
    for server in (keyed, open_server):
        await server.start()
        server.ready = True
    try:
        assert await status(keyed, None) == (401, None)
        assert await status(keyed, "wrong") == (401, None)
        assert await status(keyed, "right") == (426, "websocket")
        assert await status(open_server, None) == (426, "websocket")
    finally:
        for server in (keyed, open_server):
            await server.close()
