"""talk (run_talk) with reconnects on, against the real server (scripted pipeline) restarted mid-conversation."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import soundfile as sf

from clients.realtime_client import ReconnectPolicy
from clients.talk_session import run_talk
from controller.app import App, AppConfig
from controller.server import ServerConfig
from tests.controller.scripted_pipeline import ScriptedPipeline, scripted_server, speech
from tests.e2e.helpers import silence


class Recorder:
    """An event sink (as the MQTT bus is one): every event the server sends its sessions, in order."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def session_opened(self, session_id: str) -> None:
        pass

    def session_event(self, session_id: str, event: dict) -> None:
        self.events.append(event)

    def session_closed(self, session_id: str) -> None:
        pass

    async def close(self) -> None:
        pass


def _pacing_pipeline() -> ScriptedPipeline:
    """The reply comes from what the LM reads of the turn at once, its transcript 4 s later: with one pending turn
    the limit, the server reads nothing after the turn, so talk's update after the audio stays unanswered."""
    pipeline = ScriptedPipeline()
    pipeline.heard_as, pipeline.transcript_lag_seconds = "<audio_1>", 4.0
    return pipeline


async def test_a_reconnect_before_the_server_has_heard_all_restores_the_users_settings_and_talk_still_ends(
        tmp_path: Path) -> None:
    """talk's update after the audio (tool_choice "none", to learn when the server has heard all of it) went through
    the client's session_update, so a reconnect re-sent it with the user's settings: the restarted server's session
    ran with tool_choice "none" (a session with tools would have replied without them). The client now re-sends the
    user's settings alone; talk asks the new session its question again, and still ends when the reply is done."""
    wav = tmp_path / "turn.wav"
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(0.7)]), 24000)
    first, second = Recorder(), Recorder()
    async with scripted_server(_pacing_pipeline(), max_pending_turns=1) as server:
        server.sinks.append(first)
        port = server.server.port
        talking = asyncio.ensure_future(run_talk(
            wav, f"ws://127.0.0.1:{port}/v1/realtime", realtime=False, silence_ms=600, timeout_s=20,
            printer=io.StringIO(), session_extra={"instructions": "Be brief."},
            reconnect=ReconnectPolicy(initial_delay_s=0.2, max_delay_s=0.2, max_attempts=50)))
        for _ in range(200):  # until the turn's reply is done: the server reads no more (its transcript is due)
            if any(e["type"] == "response.done" for e in first.events):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
    assert not [e for e in first.events if e["type"] == "session.updated" and e["session"]["tool_choice"] == "none"]
    restarted = App(AppConfig(server=ServerConfig(port=port)), pipeline=_pacing_pipeline())  # type: ignore[arg-type]
    restarted.sinks.append(second)
    await restarted.start()
    try:
        result = await asyncio.wait_for(talking, 30)
    finally:
        await restarted.close()
    updated = [e["session"] for e in second.events if e["type"] == "session.updated"]
    assert [(s["tool_choice"], s["instructions"]) for s in updated] == [("auto", "Be brief."), ("none", "Be brief.")]
    assert [(t.status, t.assistant_transcript) for t in result.turns] == [("completed", "It is noon.")]


async def test_a_reply_lost_with_the_connection_gets_its_turn_line(tmp_path: Path) -> None:
    """The connection dropped mid-reply: the client ends that reply with client.response_lost (no response.done will
    come), and the turn tracker records it as lost, but talk printed a turn line only at response.done, so the turn
    the user spoke had none. It now prints '[turn 1: lost (connection_lost)] ...' as for any other ending."""
    wav = tmp_path / "turn.wav"
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(0.7)]), 24000)
    pipeline = ScriptedPipeline()
    pipeline.word_seconds = 1.0  # the reply is under way for seconds
    recorder, printed = Recorder(), io.StringIO()
    async with scripted_server(pipeline) as server:
        server.sinks.append(recorder)
        talking = asyncio.ensure_future(run_talk(
            wav, f"ws://127.0.0.1:{server.server.port}/v1/realtime", realtime=False, silence_ms=600, timeout_s=5,
            printer=printed, reconnect=ReconnectPolicy(initial_delay_s=0.2, max_delay_s=0.2, max_attempts=50)))
        for _ in range(200):
            if any(e["type"] == "response.created" for e in recorder.events):
                break
            await asyncio.sleep(0.05)
        [session] = server.sessions.values()
        session._ws.transport.abort()  # type: ignore[union-attr]  # dropped, no close frame, no response.done
        result = await asyncio.wait_for(talking, 30)
    assert [t.status for t in result.turns] == ["lost"]
    assert "  [turn 1: lost (connection_lost)] from end of user speech" in printed.getvalue(), printed.getvalue()
