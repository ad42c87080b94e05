"""The OpenAI Agents SDK's realtime agent (`agents.realtime`, package openai-agents) against our server, unchanged.

README says a RealtimeRunner given our url runs as it does against OpenAI: text and audio turns, function tools the
SDK runs itself, and interruptions. These tests hold it to that through the real server, session and wire, with the
scripted pipeline as the models (tests/controller/scripted_pipeline.py), so the LM can be made to call a tool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import agents
import agents.realtime as agents_realtime
import numpy as np

from controller.pipeline import PromptCut
from lm_engine.chat import ChatDelta, ChatRequest, ToolCallDelta
from tests.controller.scripted_pipeline import ScriptedPipeline, scripted_server, speech
from tests.e2e.helpers import RATE, silence


TIMEOUT = 30


class ToolOnce(ScriptedPipeline):
    """An LM that calls its tools in its first reply only, as a model does once it has the tool's answer."""

    async def reply(self, request: ChatRequest) -> AsyncIterator[ChatDelta | PromptCut]:
        async for delta in super().reply(request):
            yield delta
        self.tool_calls = []


@asynccontextmanager
async def agent_session(pipeline: ScriptedPipeline, agent: object) -> AsyncIterator[object]:
    async with scripted_server(pipeline) as app:
        url = f"ws://127.0.0.1:{app.server.port}/v1/realtime"
        runner = agents_realtime.RealtimeRunner(agent)
        async with await runner.run(model_config={"url": url, "api_key": "unused"}) as session:
            yield session


async def events_until(session: object, last: str, count: int = 1, agent: str | None = None) -> list[object]:
    """The session's events up to the count-th of type `last` (an agent_end ends each answered turn), of `agent`'s
    only if named (a reply's agent_end names the agent that started it, which a handoff inside it does not change)."""
    seen: list[object] = []

    async def collect() -> None:
        left = count
        async for event in session:  # type: ignore[attr-defined]
            seen.append(event)
            if event.type == last and (agent is None or event.agent.name == agent):
                left -= 1
                if left == 0:
                    return

    await asyncio.wait_for(collect(), TIMEOUT)
    return seen


def assistant_transcripts(history: list[object]) -> list[str]:
    return [part.transcript or part.text for item in history if getattr(item, "role", None) == "assistant"
            for part in item.content if getattr(part, "transcript", None) or getattr(part, "text", None)]


def spoken(pipeline: ScriptedPipeline) -> str:
    """All the text the server gave its synthesiser, in order: what the caller heard."""
    return " ".join(" ".join(pipeline.synthesized).split())


def errors(events: list[object]) -> list[object]:
    return [e for e in events if e.type == "error"]  # type: ignore[attr-defined]


async def test_a_typed_message_is_answered_in_text_and_audio() -> None:
    pipeline = ScriptedPipeline()
    agent = agents_realtime.RealtimeAgent(name="Assistant", instructions="Answer in one short sentence.")
    async with agent_session(pipeline, agent) as session:
        await session.send_message("Hello!")  # type: ignore[attr-defined]
        events = await events_until(session, "agent_end")
    audio = b"".join(e.audio.data for e in events if e.type == "audio")  # type: ignore[attr-defined]
    history = [e for e in events if e.type == "history_updated"][-1].history  # type: ignore[attr-defined]
    assert errors(events) == []
    assert "Answer in one short sentence." in pipeline.requests[0].messages[0]["content"]
    assert pipeline.requests[0].messages[-1] == {"role": "user", "content": "Hello!"}
    assert assistant_transcripts(history) == ["It is noon."]
    assert len(audio) == 2 * 3 * RATE // 20  # 50 ms of pcm16 a word, all of it delivered
    assert "audio_end" in [e.type for e in events]  # type: ignore[attr-defined]


async def test_a_function_tool_is_run_by_the_sdk_and_its_answer_spoken() -> None:
    calls: list[str] = []

    @agents.function_tool
    def get_time(city: str) -> str:
        """The local time in a city."""
        calls.append(city)
        return "12:00"

    pipeline = ToolOnce()
    pipeline.reply_words = ["Let", "me", "look."]
    pipeline.tool_calls = [ToolCallDelta(call_id="call_7", name="get_time", arguments_delta='{"city": "Paris"}')]
    agent = agents_realtime.RealtimeAgent(name="Assistant", instructions="Use tools.", tools=[get_time])
    async with agent_session(pipeline, agent) as session:
        await session.send_message("What time is it in Paris?")  # type: ignore[attr-defined]
        events = await events_until(session, "tool_end")
        pipeline.reply_words = ["It", "is", "noon", "in", "Paris."]
        # the SDK runs the call once its output_item.done says it is completed, which is before the reply that made
        # it has ended (its words still being spoken): that reply's agent_end may come before or after tool_end
        ended = sum(e.type == "agent_end" for e in events)  # type: ignore[attr-defined]
        events += await events_until(session, "agent_end", count=2 - ended)
    assert errors(events) == []
    assert calls == ["Paris"]
    end = next(e for e in events if e.type == "tool_end")  # type: ignore[attr-defined]
    assert end.output == "12:00"
    assert [t["function"]["name"] for t in pipeline.requests[0].tools] == ["get_time"]
    # the second request reads the SDK's function_call_output, and its reply is what the caller hears last
    assert len(pipeline.requests) == 2 and "12:00" in str(pipeline.requests[1].messages)
    assert spoken(pipeline).endswith("It is noon in Paris.")


async def test_audio_sent_with_send_audio_is_a_turn_the_server_detects_and_answers() -> None:
    pipeline = ScriptedPipeline()
    agent = agents_realtime.RealtimeAgent(name="Assistant", instructions="Be brief.")
    async with agent_session(pipeline, agent) as session:
        pcm = np.concatenate([speech(1.0), silence(1.0)])
        for i in range(0, len(pcm), RATE // 10):  # 100 ms a chunk, as a microphone sends it
            await session.send_audio((pcm[i:i + RATE // 10] * 32767).astype("<i2").tobytes())  # type: ignore
        events = await events_until(session, "agent_end")
    history = [e for e in events if e.type == "history_updated"][-1].history  # type: ignore[attr-defined]
    user = [item for item in history if getattr(item, "role", None) == "user"]
    assert errors(events) == []
    assert [part.transcript for part in user[0].content] == ["what time is it"]
    assert assistant_transcripts(history) == ["It is noon."]


async def test_talking_over_a_reply_interrupts_it_and_the_next_turn_is_answered() -> None:
    pipeline = ScriptedPipeline()
    pipeline.reply_words = [f"word{i}" for i in range(40)]
    pipeline.word_seconds = 0.1
    agent = agents_realtime.RealtimeAgent(name="Assistant", instructions="Be brief.")
    async with agent_session(pipeline, agent) as session:
        await session.send_message("Tell me a long story.")  # type: ignore[attr-defined]
        events = await events_until(session, "audio")
        await asyncio.sleep(0.5)  # some of the story plays before the caller speaks
        pipeline.reply_words, pipeline.word_seconds = ["Sure."], 0.0
        pcm = np.concatenate([speech(1.0), silence(1.0)])
        for i in range(0, len(pcm), RATE // 10):
            await session.send_audio((pcm[i:i + RATE // 10] * 32767).astype("<i2").tobytes())  # type: ignore
        events += await events_until(session, "agent_end", count=2)
    history = [e for e in events if e.type == "history_updated"][-1].history  # type: ignore[attr-defined]
    said = assistant_transcripts(history)
    story = [m["content"] for m in pipeline.requests[1].messages if m["role"] == "assistant"]
    assert errors(events) == []
    assert "audio_interrupted" in [e.type for e in events]  # type: ignore[attr-defined]
    assert len(said) == 2 and said[-1] == "Sure."
    assert "word39" not in said[0]  # the story was cut, not finished behind the caller's words
    # the second request's history holds what was played of the story before the caller spoke, and no more
    assert len(story) == 1 and story[0].startswith("word0") and "word39" not in story[0], story


async def test_a_handoff_moves_the_conversation_to_the_other_agents_instructions() -> None:
    billing = agents_realtime.RealtimeAgent(name="billing", instructions="You handle billing questions.")
    triage = agents_realtime.RealtimeAgent(name="triage", instructions="Route the caller.", handoffs=[billing])
    pipeline = ToolOnce()
    pipeline.reply_words = ["One", "moment."]
    pipeline.tool_calls = [ToolCallDelta(call_id="call_1", name="transfer_to_billing", arguments_delta="{}")]
    async with agent_session(pipeline, triage) as session:
        await session.send_message("I was charged twice.")  # type: ignore[attr-defined]
        events = await events_until(session, "handoff")
        pipeline.reply_words = ["Let", "me", "refund", "that."]
        # the triage reply may still be speaking after the handoff (its call is done before its audio is): the
        # billing agent's turn has ended only with its own agent_end
        events += await events_until(session, "agent_end", agent="billing")
    assert errors(events) == []
    assert "Route the caller." in pipeline.requests[0].messages[0]["content"]
    # the reply after the handoff is the billing agent's: its instructions, and the caller hears its words
    assert "You handle billing questions." in pipeline.requests[-1].messages[0]["content"]
    assert spoken(pipeline).endswith("One moment. Let me refund that.")
