"""The session's prompt budget (1500 tokens) counted with the embedded LM's own tokenizer (Qwen2.5 in llama.cpp).

Counted as 4 characters a token, a soak session of digit-heavy and Chinese/Japanese turns sent prompts of 2-4 times
the budget to the LM: every digit and most CJK characters are a token of their own. The server and session here are
the real ones and count with the embedded pipeline's count_tokens; the replies are scripted (fast), and the prompts
the session built are then counted as the real LM reads them (its usage.prompt_tokens, its chat template)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from context_manager import AssistantMessage, Conversation, TemplateCosts, UserMessage
from controller.pipeline import EmbeddedConfig, EmbeddedPipeline
from lm_engine import ChatRequest, RemoteChatBackend
from lm_engine.chat import ToolCallDelta
from tests.controller.scripted_pipeline import ScriptedPipeline, conversation, user_messages

pytestmark = pytest.mark.slow

BUDGET = 1500  # SessionDefaults.context_budget_tokens
KEEP_BELOW = 1100  # SessionDefaults.context_keep_below_tokens
TURNS = 24


@pytest.fixture(scope="module")
def embedded() -> Iterator[EmbeddedPipeline]:
    pipeline = EmbeddedPipeline(EmbeddedConfig())
    yield pipeline
    pipeline.close()


class EmbeddedCounting(ScriptedPipeline):
    """Scripted models, but the embedded profile's token counting."""

    def __init__(self, embedded: EmbeddedPipeline) -> None:
        super().__init__()
        self.embedded = embedded

    def count_tokens(self, text: str) -> int:
        return self.embedded.count_tokens(text)

    def template_costs(self, tools: list[dict], system: bool) -> TemplateCosts:
        return self.embedded.template_costs(tools, system)


async def lm_prompt_tokens(embedded: EmbeddedPipeline, messages: list[dict], tools: list[dict] | None = None) -> int:
    """Tokens the embedded LM evaluates for a prompt (its chat template applied, the reply opened)."""
    async for delta in embedded.reply(ChatRequest(messages=messages, tools=tools, temperature=0, max_tokens=1)):
        if delta.finish_reason is not None:
            assert delta.usage is not None
            return delta.usage.prompt_tokens
    raise AssertionError("the reply ended without a final delta")


def chatml(messages: list[dict]) -> str:
    """The prompt Qwen2.5's chat template makes of plain messages, the reply opened."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + \
        "<|im_start|>assistant\n"


def digits(i: int) -> str:
    return (f"Order {i}: number 48151{i:03d}2342, tracking 90210-33{i:02d}-8812-7731, card 4242 4242 {i:04d}, "
            f"call 555-0199-22{i:02d} before 17:45 on 2026-11-{i % 28 + 1:02d}.")


def cjk(i: int) -> str:
    return f"第{i}回：今日は東京で会議があります。明日は大阪へ行きます。天气很好，我们去公园散步吧。"


def english(i: int) -> str:
    return (f"Tell me more about the old lighthouse on the northern coast, the keeper who lived there in summer "
            f"number {i}, and why the ships stopped coming.")


async def run_session(pipeline: ScriptedPipeline, texts: list[str]) -> None:
    async with conversation(pipeline) as (_, conv):
        for text in texts:
            n = await conv.ask(text)
            done = await conv.wait_for("response.done", after=n, timeout=60)
            assert done["response"]["status"] == "completed", done


@pytest.mark.timeout(600)
async def test_digit_and_cjk_turns_keep_the_prompt_the_lm_reads_within_the_budget(embedded: EmbeddedPipeline) -> None:
    pipeline = EmbeddedCounting(embedded)
    pipeline.reply_words = "Noted: 4815162342, 90210-3345-8812, 555-0199-2231; 好的，明天见。".split()
    asked = [digits(i) if i % 3 else cjk(i) for i in range(TURNS)]
    await run_session(pipeline, asked)

    assert len(pipeline.requests) == TURNS
    last = await lm_prompt_tokens(embedded, pipeline.requests[-1].messages)
    assert last <= BUDGET
    # Every prompt, counted as the LM counted the last one (an LM prefill each would take minutes here).
    assert embedded.count_tokens(chatml(pipeline.requests[-1].messages)) == last
    tokens = [embedded.count_tokens(chatml(r.messages)) for r in pipeline.requests]
    assert max(tokens) <= BUDGET, tokens
    for i, request in enumerate(pipeline.requests):  # the oldest turns went first; the newest is always there
        kept = user_messages(request)
        assert kept == asked[i + 1 - len(kept):i + 1], (i, kept)
    assert len(user_messages(pipeline.requests[-1])) < TURNS // 2  # the budget did drop turns


@pytest.mark.timeout(600)
async def test_an_english_session_keeps_as_many_turns_as_the_budget_holds(embedded: EmbeddedPipeline) -> None:
    """No needless drops: once over the budget a prompt is cut down to keep_below (1100) tokens, never a turn
    further; and about as many turns are kept as when English was counted at 4 characters a token."""
    pipeline = EmbeddedCounting(embedded)
    pipeline.reply_words = "The keeper left when the new harbour opened, and the ships went there instead.".split()
    asked = [english(i) for i in range(TURNS + 12)]
    await run_session(pipeline, asked)

    reply = " ".join(pipeline.reply_words)
    tokens = [embedded.count_tokens(chatml(r.messages)) for r in pipeline.requests]
    assert max(tokens) <= BUDGET, tokens
    system = pipeline.requests[-1].messages[0]
    turn = max(embedded.count_tokens(chatml([{"role": "user", "content": t}, {"role": "assistant", "content": reply}]))
               for t in asked) - embedded.count_tokens(chatml([]))
    first_drop = next(i for i, r in enumerate(pipeline.requests) if user_messages(r)[0] != asked[0])
    assert min(tokens[first_drop:]) > KEEP_BELOW - turn, (first_drop, tokens)
    kept = [len(user_messages(r)) for r in pipeline.requests]
    estimated = turns_kept_at_4_characters_a_token(system["content"], asked, reply)
    # Each prompt's turns, on average over the session: the 4-characters estimate undercounts this text a little.
    assert sum(kept) >= 0.85 * sum(estimated), (kept, estimated)


def weather_tool(name: str, about: str) -> dict:
    return {"type": "function", "name": name, "description": f"The {about} for a city, from the national service.",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "description": "The city's name, e.g. Paris"},
                "day": {"type": "string", "description": "The date, YYYY-MM-DD; today when left out"}},
                "required": ["city"]}}


def short_arguments(i: int) -> str:
    return f'{{"city":"Paris {i}","day":"2026-11-{i + 1:02d}"}}'


def many_arguments(i: int) -> str:
    """Compact, as a client or another LM may write them: the template writes them back with a space after each
    ':' and ',' (a token more a key)."""
    return json.dumps({f"k{k}": [i, k] for k in range(16)}, separators=(",", ":"))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("arguments", [short_arguments, many_arguments])
async def test_function_tools_and_calls_keep_the_prompt_the_lm_reads_within_the_budget(
        embedded: EmbeddedPipeline, arguments: Callable[[int], str]) -> None:
    """Qwen2.5's template writes the tool schemas into the system message (~100 tokens a tool) and wraps each call
    and result in markup: none of it was counted, so a long session with tools sent the LM ~300 tokens over the
    budget. Every turn here calls a tool and answers from its result."""
    pipeline = EmbeddedCounting(embedded)
    pipeline.reply_words = "Let me check that for you: 2026-11-28, 17:45.".split()
    tools = [weather_tool("get_weather", "weather"), weather_tool("get_forecast", "ten-day forecast"),
             weather_tool("get_air_quality", "air quality index")]
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(tools=tools)
        for i in range(TURNS // 2):
            pipeline.tool_calls = [ToolCallDelta(call_id=f"call_{i}", name="get_weather", arguments_delta=arguments(i))]
            n = await conv.ask(digits(i))
            await conv.wait_for("response.done", after=n, timeout=60)
            pipeline.tool_calls = []
            n = len(conv.events)
            await conv.send({"type": "conversation.item.create", "item": {
                "type": "function_call_output", "call_id": f"call_{i}",
                "output": f'{{"temperature_c": {i}.5, "wind_kmh": 1{i}, "observed": "2026-11-{i + 1:02d}T17:45"}}'}})
            await conv.send({"type": "response.create"})
            done = await conv.wait_for("response.done", after=n, timeout=60)
            assert done["response"]["status"] == "completed", done

    chat_tools = pipeline.requests[-1].tools
    assert chat_tools and len(pipeline.requests) == TURNS
    last = await lm_prompt_tokens(embedded, pipeline.requests[-1].messages, chat_tools)
    assert last <= BUDGET
    # Every prompt, counted as the LM counted the last one (an LM prefill each would take minutes here).
    render = embedded._llm.render_prompt
    assert embedded.count_tokens(render(pipeline.requests[-1].messages, chat_tools)) == last
    tokens = [embedded.count_tokens(render(r.messages, chat_tools)) for r in pipeline.requests]
    assert max(tokens) <= BUDGET, tokens
    assert len(user_messages(pipeline.requests[-1])) < TURNS // 2  # the budget did drop turns


@pytest.mark.timeout(300)
async def test_instructions_that_fit_only_without_the_tools_are_refused_with_them(embedded: EmbeddedPipeline) -> None:
    """The tools block is sent with every prompt, as the instructions: ~1400 tokens of instructions were accepted
    with 3 function tools (~400 template tokens), and every prompt was then over the budget with nothing to drop.
    Such instructions are refused with the tools, whether they come together or the tools come later, and accepted
    without them; a refused update leaves the session as it was."""
    instructions = "You answer questions about the weather in one short sentence, citing the national service. " * 88
    assert 1350 < embedded.count_tokens(instructions) < 1450
    tools = [weather_tool("get_weather", "weather"), weather_tool("get_forecast", "ten-day forecast"),
             weather_tool("get_air_quality", "air quality index")]
    async with conversation(EmbeddedCounting(embedded)) as (_, conv):
        before = (await conv.update_session())["session"]
        n = len(conv.events)
        await conv.send({"type": "session.update", "event_id": "both", "session": {
            "type": "realtime", "instructions": instructions, "tools": tools}})
        unchanged = await conv.update_session()
        accepted = await conv.update_session(instructions=instructions)
        m = len(conv.events)
        await conv.send({"type": "session.update", "event_id": "then_tools", "session": {
            "type": "realtime", "tools": tools}})
        await conv.send({"type": "response.create", "event_id": "reply_tools", "response": {"tools": tools}})
        after = await conv.update_session()
    errors = [(e["error"]["code"], e["error"]["param"], e["error"]["event_id"]) for e in conv.of_type("error")]
    assert errors == [("invalid_value", "session.instructions", "both"),
                      ("invalid_value", "session.instructions", "then_tools"),
                      ("invalid_value", "response.instructions", "reply_tools")]
    assert "3 function tools" in conv.of_type("error")[0]["error"]["message"]
    assert [e["type"] for e in conv.events[n:m]] == ["error", "session.updated", "session.updated"]
    assert unchanged["session"] == before
    assert accepted["session"]["instructions"] == instructions and not accepted["session"]["tools"]
    assert after["session"] == accepted["session"]
    assert not conv.of_type("response.created")


def turns_kept_at_4_characters_a_token(instructions: str, asked: list[str], reply: str) -> list[int]:
    """The session's turns replayed with the former estimate: how many turns each prompt kept."""
    c = Conversation()
    kept = []
    for i, text in enumerate(asked):
        c.add(UserMessage(id=f"u{i}", text=text))
        messages = c.messages(instructions, BUDGET, lambda t: max(1, len(t) // 4), keep_below=KEEP_BELOW)
        kept.append(sum(m["role"] == "user" for m in messages))
        c.add(AssistantMessage(id=f"a{i}", text=reply))
    return kept


def test_the_remote_estimate_is_not_below_qwens_count_for_digits_and_cjk(embedded: EmbeddedPipeline) -> None:
    """A --chat-url server's tokenizer is not here: its estimate must not let digit-heavy or CJK prompts overflow
    (4 characters a token counted a third to a quarter of them), and should stay near the real count for English."""
    for text in (digits(7), cjk(7), "1234567890" * 40, "今日は東京で会議があります。" * 20, "한국어 문장입니다. " * 10,
                 "Call me at +1 (555) 123-4567 or email bob@example.com!", "def f(x):\n    return {'a': [1, 2]}\n",
                 english(3), "Hello, how are you today? I'd like to book a table for two at seven, please."):
        assert RemoteChatBackend.estimate_tokens(text) >= embedded.count_tokens(text), text
    assert RemoteChatBackend.estimate_tokens(english(3)) <= 1.3 * embedded.count_tokens(english(3))
