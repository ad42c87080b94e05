"""What RealtimeClient re-sends to a new server session after a reconnect, against the real server (scripted
pipeline) restarted under the client."""

from __future__ import annotations

from clients.realtime_client import RealtimeClient, ReconnectPolicy
from controller.app import App, AppConfig
from controller.server import ServerConfig
from tests.controller.scripted_pipeline import ScriptedPipeline, scripted_server


def _voices(*names: str) -> ScriptedPipeline:
    pipeline = ScriptedPipeline()
    pipeline.voices = frozenset(names)
    return pipeline


async def _until(client: RealtimeClient, kind: str) -> list[dict]:
    """The events up to the first of type `kind`, that one included."""
    seen: list[dict] = []
    while not seen or seen[-1]["type"] != kind:
        seen.append(dict((await client.recv(timeout=10)).data))
    return seen


async def test_settings_a_restarted_server_refuses_one_of_are_restored_without_that_one() -> None:
    """The client re-sends every field it set, in one session.update, to the session a reconnect opens. A server
    back without one of them (a voice it no longer has) refused that update, and with it all the others: the new
    session ran on the server's defaults (its instructions, server VAD for a push-to-talk app) while the client
    went on as if its settings held, and forgot the update the refused field came in. The client now re-sends the
    others without the refused field, and keeps them for the next reconnect."""
    async with scripted_server(_voices("joe", "Tingting")) as server:
        port = server.server.port
        client = await RealtimeClient.connect(f"ws://127.0.0.1:{port}/v1/realtime",
                                              reconnect=ReconnectPolicy(initial_delay_s=0.2, max_attempts=50))
        await client.session_update(instructions="Be brief.", audio={"input": {"turn_detection": None},
                                                                     "output": {"voice": "Tingting"}})
        first = (await _until(client, "session.updated"))[-1]["session"]
        assert first["audio"]["output"]["voice"] == "Tingting"
    restarted = App(AppConfig(server=ServerConfig(port=port)), pipeline=_voices("joe"))  # type: ignore[arg-type]
    await restarted.start()
    try:
        after = await _until(client, "session.updated")
        await client.close()
    finally:
        await restarted.close()
    errors = [e["error"] for e in after if e["type"] == "error"]
    assert [e["param"] for e in errors] == ["session.audio.output.voice"]
    session = after[-1]["session"]
    assert (session["instructions"], session["audio"]["input"]["turn_detection"], session["audio"]["output"]["voice"]
            ) == ("Be brief.", None, "joe")
