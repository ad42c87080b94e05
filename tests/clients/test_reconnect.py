"""RealtimeClient reconnect behaviour against a scripted in-test WebSocket server (loopback only)."""

from __future__ import annotations

import asyncio
import http
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidStatus
from websockets.http11 import Request, Response

from clients.events import ServerEventError
from clients.realtime_client import RealtimeClient, RealtimeConnectionError, ReconnectPolicy

FAST = ReconnectPolicy(initial_delay_s=0.01, max_delay_s=0.05, max_attempts=3)
Script = Callable[[int, ServerConnection], Awaitable[None]]


class Scripted:
    """Runs `script(n, ws)` for the n-th connection and records what each connection received."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.received: list[list[dict[str, object]]] = []
        self.headers: list[str | None] = []
        self.paths: list[str] = []

    async def handler(self, ws: ServerConnection) -> None:
        n = len(self.received)
        self.received.append([])
        self.headers.append(ws.request.headers.get("Authorization"))
        self.paths.append(ws.request.path)
        await self.script(n, ws)

    async def recv(self, n: int, ws: ServerConnection) -> dict[str, object]:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
        self.received[n].append(msg)
        return msg


async def _server(s: Scripted) -> AsyncIterator[str]:
    async with serve(s.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/realtime"


def _dropping_first_connection(before_drop: Callable[[Scripted, ServerConnection], Awaitable[None]]) -> Scripted:
    """Greets each connection with session.created; the first runs `before_drop` and then fails with no close frame,
    a later one answers the client's re-sent session.update and stays open."""
    async def script(n: int, ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "session.created", "event_id": f"s{n}"}))
        if n == 0:
            await before_drop(s, ws)
            ws.transport.abort()
            return
        await s.recv(n, ws)
        await ws.send(json.dumps({"type": "session.updated", "event_id": "u"}))
        await ws.wait_closed()

    s = Scripted(script)
    return s


async def _next_types(client: RealtimeClient, n: int) -> list[str]:
    return [(await client.recv(timeout=5)).type for _ in range(n)]


async def test_drop_reconnects_and_resends_last_session_update() -> None:
    async def script(n: int, ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "session.created", "event_id": f"s{n}"}))
        await s.recv(n, ws)  # session.update (sent by the app first, re-sent by the client after a drop)
        await ws.send(json.dumps({"type": "session.updated", "event_id": f"u{n}"}))
        if n == 0:
            await s.recv(n, ws)  # one audio append, then the network fails: no close frame at all
            ws.transport.abort()
            return
        await s.recv(n, ws)  # the app's commit goes to the new connection
        await ws.send(json.dumps({"type": "input_audio_buffer.committed", "event_id": "c"}))
        await ws.wait_closed()

    s = Scripted(script)
    async for url in _server(s):
        client = await RealtimeClient.connect(url, api_key="k1", model="m1", reconnect=FAST)
        async with client:
            await client.session_update(instructions="be brief")
            assert await _next_types(client, 2) == ["session.created", "session.updated"]
            await client.append_audio(b"\x00\x00" * 480)
            assert client.input_samples_sent == 480
            assert await _next_types(client, 3) == ["client.reconnected", "session.created", "session.updated"]
            assert client.reconnects == 1 and client.input_samples_sent == 0
            await client.commit()
            assert await _next_types(client, 1) == ["input_audio_buffer.committed"]

    update = {"type": "session.update", "session": {"instructions": "be brief", "type": "realtime"}}
    assert s.received[0][0] == {**update, "event_id": "client_session_update_1"}
    assert s.received[1][0] == {**update, "event_id": "client_session_replay"}
    assert s.received[0][1]["type"] == "input_audio_buffer.append"
    assert s.received[1][1] == {"type": "input_audio_buffer.commit"}
    assert s.headers == ["Bearer k1", "Bearer k1"]
    assert s.paths == ["/v1/realtime?model=m1"] * 2


async def test_normal_close_is_final() -> None:
    async def script(n: int, ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "session.created", "event_id": "s"}))
        await ws.close(1000, "bye")

    s = Scripted(script)
    async for url in _server(s):
        client = await RealtimeClient.connect(url, reconnect=FAST)
        seen = []
        with pytest.raises(RealtimeConnectionError, match="1000"):
            async for event in client.events():
                seen.append(event.type)
        assert seen == ["session.created"]
        with pytest.raises(RealtimeConnectionError):
            await client.commit()
        await client.close()
    assert len(s.received) == 1  # no reconnect attempt


async def test_reconnect_gives_up_when_server_is_gone() -> None:
    async def script(n: int, ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "session.created", "event_id": "s"}))
        await ws.wait_closed()

    s = Scripted(script)
    async for url in _server(s):
        client = await RealtimeClient.connect(url, reconnect=FAST)
        assert (await client.recv(timeout=5)).type == "session.created"
    # The server shut down (1001 going away, a retryable code) and every reconnect attempt is refused.
    with pytest.raises(RealtimeConnectionError, match="gave up"):
        await client.recv(timeout=5)
    with pytest.raises(RealtimeConnectionError):
        await client.commit()
    await client.close()
    assert len(s.received) == 1


# max_attempts=0 said "reconnecting gave up: None", hiding the close code
@pytest.mark.parametrize("policy", [ReconnectPolicy(enabled=False), ReconnectPolicy(max_attempts=0)])
async def test_no_reconnect_when_disabled(policy: ReconnectPolicy) -> None:
    async def script(n: int, ws: ServerConnection) -> None:
        ws.transport.abort()

    s = Scripted(script)
    async for url in _server(s):
        client = await RealtimeClient.connect(url, reconnect=policy)
        with pytest.raises(RealtimeConnectionError, match="1006"):
            await client.recv(timeout=5)
        await client.close()
    assert len(s.received) == 1


def test_backoff_delays() -> None:
    p = ReconnectPolicy(initial_delay_s=0.5, factor=2.0, max_delay_s=3.0, max_attempts=5)
    assert list(p.delays()) == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert list(ReconnectPolicy(enabled=False).delays()) == []
    with pytest.raises(ValueError):
        ReconnectPolicy(factor=0.5)


async def test_a_client_built_with_the_constructor_says_how_to_connect_instead_of_hanging() -> None:
    """RealtimeClient(url) is never connected (connect() is the way): a send or a read waited forever."""
    rt = RealtimeClient("ws://127.0.0.1:9/v1/realtime")
    for call in (rt.commit(), rt.recv(1)):
        with pytest.raises(RealtimeConnectionError, match=r"await RealtimeClient.connect\(url\)"):
            await asyncio.wait_for(call, 2)
    with pytest.raises(RealtimeConnectionError, match="not connected"):
        await asyncio.wait_for(anext(rt.events()), 2)
    await rt.close()


async def test_a_reconnect_restores_every_session_field_not_only_the_last_update() -> None:
    """Instructions set by one session.update and modalities by a later one: after a drop, the new server session
    got only the later update, so the agent silently lost its instructions. It gets both, merged as the server
    merges updates (audio.input and audio.output field by field; a later value wins)."""
    async def before_drop(s: Scripted, ws: ServerConnection) -> None:
        for _ in range(3):
            await s.recv(0, ws)

    s = _dropping_first_connection(before_drop)
    async for url in _server(s):
        async with await RealtimeClient.connect(url, reconnect=FAST) as client:
            await client.session_update(instructions="be brief", audio={"output": {"voice": "marin"}})
            await client.session_update(output_modalities=["text"])
            await client.session_update(audio={"input": {"turn_detection": None}, "output": {"speed": 1.2}})
            assert await _next_types(client, 4) == ["session.created", "client.reconnected", "session.created",
                                                    "session.updated"]
    assert s.received[1] == [{"type": "session.update", "session": {
        "type": "realtime", "instructions": "be brief", "output_modalities": ["text"],
        "audio": {"input": {"turn_detection": None}, "output": {"voice": "marin", "speed": 1.2}}},
        "event_id": "client_session_replay"}]


async def test_a_reconnect_does_not_resend_a_session_update_the_server_refused() -> None:
    """A refused field (output_modalities ["video"]) merged into the re-sent update made the new server refuse the
    whole of it after a drop: the instructions set before were lost."""
    async def before_drop(s: Scripted, ws: ServerConnection) -> None:
        await s.recv(0, ws)
        bad = await s.recv(0, ws)
        await ws.send(json.dumps({"type": "error", "event_id": "e", "error": {
            "type": "invalid_request_error", "code": "invalid_value", "message": "no video",
            "param": "session.output_modalities", "event_id": bad["event_id"]}}))
        await s.recv(0, ws)  # a commit: the error reached the client before the drop

    s = _dropping_first_connection(before_drop)
    async for url in _server(s):
        async with await RealtimeClient.connect(url, reconnect=FAST) as client:
            await client.session_update(instructions="be brief")
            await client.session_update(output_modalities=["video"])
            assert await _next_types(client, 2) == ["session.created", "error"]
            await client.commit()
            assert await _next_types(client, 3) == ["client.reconnected", "session.created", "session.updated"]
    assert s.received[1] == [{"type": "session.update", "session": {"type": "realtime", "instructions": "be brief"},
                              "event_id": "client_session_replay"}]


async def test_an_audio_delta_that_is_not_base64_does_not_end_the_session() -> None:
    """One response.output_audio.delta with broken base64 ended the client: events() raised RealtimeConnectionError
    'Incorrect padding' while the socket stayed open, and nothing more was read. The event is still delivered (its
    .audio raises ServerEventError naming the problem) and the events after it come."""
    async def script(n: int, ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "response.output_audio.delta", "event_id": "bad", "item_id": "i",
                                  "delta": "abc"}))
        await ws.send(json.dumps({"type": "session.created", "event_id": "s"}))
        await ws.wait_closed()

    s = Scripted(script)
    async for url in _server(s):
        async with await RealtimeClient.connect(url, reconnect=FAST) as client:
            bad = await client.recv(timeout=5)
            with pytest.raises(ServerEventError, match="bad: its audio is not base64"):
                _ = bad.audio
            assert (await client.recv(timeout=5)).type == "session.created"


async def test_a_server_that_stops_answering_is_found_by_the_keepalive_asked_for() -> None:
    """A frozen server (its process stopped, a dead NAT mapping) sends no close frame: only pings find it, after
    websockets' 20 s + 20 s (+ 10 s to close) by default; connect() now takes both, so an app can find it sooner."""
    found = asyncio.Event()

    async def script(n: int, ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "session.created", "event_id": "s0"}))
        ws.transport.pause_reading()  # frozen: reads nothing more, so answers no ping
        await found.wait()
        ws.transport.resume_reading()  # so that the server's own close is quick

    s = Scripted(script)
    async for url in _server(s):
        client = await RealtimeClient.connect(url, reconnect=ReconnectPolicy(enabled=False),
                                              ping_interval=0.2, ping_timeout=0.3)
        assert (await client.recv(timeout=5)).type == "session.created"
        with pytest.raises(RealtimeConnectionError):  # the ping times out, then the close handshake's 10 s
            await asyncio.wait_for(client.recv(), 20)
        found.set()
        await client.close()


async def test_a_refused_handshake_says_the_servers_reason() -> None:
    """A full server answers 503 with its reason in the body; the exception read only "HTTP 503"."""
    def full(ws: ServerConnection, request: Request) -> Response:
        return ws.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "server full: 4 of 4 sessions\n")

    async with serve(lambda ws: ws.wait_closed(), "127.0.0.1", 0, process_request=full) as server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(InvalidStatus) as info:
            await RealtimeClient.connect(f"ws://127.0.0.1:{port}", reconnect=FAST)
    assert info.value.response.status_code == 503
    assert "server full: 4 of 4 sessions" in str(info.value)


async def test_a_reply_cut_by_a_drop_ends_with_response_lost() -> None:
    """A reply under way when the connection dropped never got response.done: an app awaiting its end waited
    forever. A reply that did finish gets no such event."""
    async def before_drop(s: Scripted, ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "response.created", "response": {"id": "r1"}}))
        await ws.send(json.dumps({"type": "response.done", "response": {"id": "r1", "status": "completed"}}))
        await ws.send(json.dumps({"type": "response.created", "response": {"id": "r2"}}))

    s = _dropping_first_connection(before_drop)
    async for url in _server(s):
        async with await RealtimeClient.connect(url, reconnect=FAST) as client:
            await client.session_update(instructions="be brief")
            seen = [await client.recv(timeout=5) for _ in range(5)]
            assert [e.type for e in seen] == ["session.created", "response.created", "response.done",
                                              "response.created", "client.response_lost"]
            assert seen[-1].response_id == "r2"
            assert await _next_types(client, 1) == ["client.reconnected"]
