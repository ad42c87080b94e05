"""The OpenAI Agents SDK against a Step-Audio profile, configured as README's "With the OpenAI Agents SDK" says.

The SDK asks for OpenAI's voice `ash` unless told otherwise; these profiles refuse a voice that is not one of their
speakers, and with it the SDK's whole session.update, the agent's instructions included. README gives the setting
that avoids it; these tests hold the README to it, on a real tiny server (tests/e2e/test_agents_sdk.py covers the
rest of the SDK on the scripted pipeline)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import agents.realtime as agents_realtime
import pytest

pytestmark = pytest.mark.slow

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
INSTRUCTIONS = "Answer in one short sentence."


def readme_model_settings() -> dict[str, object]:
    """The `"initial_model_settings": {...}` README's Agents SDK section gives for the Step-Audio profiles."""
    section = README.split("### With the OpenAI Agents SDK", 1)[1].split("\n## ", 1)[0]
    found = re.search(r'`"initial_model_settings": (\{[^`]*\})`', section)
    assert found is not None, "README's Agents SDK section says no initial_model_settings for the Step-Audio profiles"
    return json.loads(found.group(1))


async def one_typed_turn(url: str, model_config: dict[str, object]) -> tuple[list[dict], list[object]]:
    """The server's events (as the SDK got them) and the SDK's error events, through the agent's first answer."""
    runner = agents_realtime.RealtimeRunner(agents_realtime.RealtimeAgent(name="Assistant", instructions=INSTRUCTIONS))
    server_events: list[dict] = []
    errors: list[object] = []
    async with await runner.run(model_config={"url": url, "api_key": "unused", **model_config}) as session:
        await session.send_message("Hello!")

        async def collect() -> None:
            async for event in session:
                if event.type == "error":
                    errors.append(event.error)
                raw = getattr(getattr(event, "data", None), "data", None)
                if event.type == "raw_model_event" and isinstance(raw, dict):
                    server_events.append(raw)
                if event.type == "agent_end":
                    return

        await asyncio.wait_for(collect(), 120)
    return server_events, errors


def voices_updated(server_events: list[dict]) -> list[tuple[str, str]]:
    return [(e["session"]["instructions"], e["session"]["audio"]["output"]["voice"]) for e in server_events
            if e.get("type") == "session.updated"]


async def test_the_readme_voice_setting_gets_the_agents_instructions_to_a_step_audio_server(tiny_server) -> None:
    server_events, errors = await one_typed_turn(tiny_server.ws, {"initial_model_settings": readme_model_settings()})
    assert errors == []
    assert (INSTRUCTIONS, "Tingting") in voices_updated(server_events), voices_updated(server_events)
    assert any(e.get("type") == "response.output_audio.delta" for e in server_events)


async def test_without_it_the_sdks_default_voice_is_refused_and_the_instructions_with_it(tiny_server) -> None:
    """What README says happens without the setting, so that the setting is still needed while README asks for it."""
    server_events, errors = await one_typed_turn(tiny_server.ws, {})
    assert any("'ash' is not a voice of this server" in str(e) for e in errors), errors
    assert all(instructions != INSTRUCTIONS for instructions, _ in voices_updated(server_events))
