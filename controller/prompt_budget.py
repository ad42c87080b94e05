"""A session's prompts within its token budget, each text counted once with the LM's tokenizer on a worker thread."""

from __future__ import annotations

import asyncio

from context_manager import Conversation, TemplateCosts, TokenCounts
from context_manager.conversation import Message, prompt_texts_of, prompt_tokens
from controller.chat_request import tools_for_chat
from controller.errors import RemoteProtocolError
from controller.pipeline import CountsAudioTokens, MeasuresTemplate, SpeechPipeline
from controller.realtime.session_config import SessionConfig


class PromptBudget:
    def __init__(self, pipeline: SpeechPipeline, budget_tokens: int, history: Conversation) -> None:
        """budget_tokens: the most a prompt may hold; history: the session's conversation, whose counts are the ones
        kept (prompts built from other conversations, a response.input's, add to them without pruning them)."""
        self._pipeline = pipeline
        self.budget_tokens = budget_tokens
        self._history = history
        self.counts = TokenCounts(pipeline.count_tokens)

    async def prompt(self, conversation: Conversation, instructions: str, overrides: dict[str, str] | None = None,
                     *, keep_below: int | None = None, tools: list[Message] | None = None) -> list[Message]:
        """conversation.messages() within the budget, its new texts counted first (count_ahead), and what the LM's
        chat template adds for `tools` (the request's) counted as the prompt's."""
        texts = conversation.prompt_texts(instructions, overrides)
        await self.count_ahead(texts)
        template = await self.template_costs(tools, instructions)
        if conversation is self._history:  # the counts kept are the history's: a long session's stay bounded
            self.counts.retain(texts)
        return conversation.messages(instructions, self.budget_tokens, self.counts, overrides,
                                     keep_below=keep_below, template=template)

    async def tokens_of(self, messages: list[Message], tools: list[Message] | None,
                        instructions: str) -> tuple[int, int]:
        """A prompt's tokens (messages as prompt() gave them, plus any sent beside them) as the budget counts them,
        and how many of them are audio: response.done's input tokens when the LM reports none."""
        texts = prompt_texts_of(messages)
        await self.count_ahead(texts)
        tokens = prompt_tokens(messages, self.counts, await self.template_costs(tools, instructions))
        pipeline = self._pipeline
        if not isinstance(pipeline, CountsAudioTokens):
            return tokens, 0
        # Encoded again on a worker thread (a turn is thousands of <audio_N> pieces): only for a reply the LM left
        # uncounted, which is rare.
        return tokens, await asyncio.to_thread(lambda: sum(pipeline.count_audio_tokens(t) for t in texts))

    async def texts_tokens(self, texts: list[str]) -> int:
        """The tokens of these texts, each counted once (a reply's own text, which the next prompt holds)."""
        await self.count_ahead(texts)
        return sum(self.counts(t) for t in texts)

    async def template_costs(self, tools: list[Message] | None, instructions: str) -> TemplateCosts:
        """Measured by the pipeline on a worker thread: the first time for a tools list it renders the template."""
        if not isinstance(self._pipeline, MeasuresTemplate):
            return TemplateCosts()
        return await asyncio.to_thread(self._pipeline.template_costs, tools or [], bool(instructions))

    async def count_ahead(self, texts: list[str]) -> None:
        """Count the texts not counted yet, on a worker thread: the LM's tokenizer takes milliseconds for a long text
        (llama.cpp's: 1-5 ms for 2,000 characters, 1.1 s for a megabyte), and the event loop serves every session."""
        counts = self.counts
        if missing := counts.missing(texts):
            counts.store(await asyncio.to_thread(counts.count, missing))

    async def tokens_past_budget(self, text: str, reserved: int = 0) -> int | None:
        """Tokens of a text that must fit the budget alone (instructions, a client's item), when they are more;
        reserved: what the prompt holds besides it in any case (the tools block beside instructions).
        A token holds at least one byte of its text (byte-level BPE, sentencepiece's byte fallback; sentencepiece's
        leading "▁" and the counters' own markup are within 8): a short text needs no count."""
        budget = self.budget_tokens - reserved
        if len(text.encode()) + 8 <= budget:
            return None
        counts = self.counts
        n = (await asyncio.to_thread(counts.count, [text]))[text] if counts.missing([text]) else counts(text)
        if n > budget:
            return n  # not kept: refused, it is in no prompt, and a client may send megabytes of such texts
        counts.store({text: n})
        return None

    async def check_instructions(self, cfg: SessionConfig, current: SessionConfig, param: str) -> None:
        """Instructions count against the conversation's token budget and are always sent whole, as the tools block
        the chat template writes for cfg's tools: past it, every reply would fail for a context overflow that the
        client cannot see coming. cfg: the configuration being applied (the session's updated, a response's);
        current: the session's, whose instructions and tools passed already."""
        instructions, tools = cfg.instructions, tools_for_chat(cfg)
        if not instructions or (instructions == current.instructions and tools == tools_for_chat(current)):
            return
        reserved = (await self.template_costs(tools, instructions)).tools
        if (n := await self.tokens_past_budget(instructions, reserved)) is not None:
            tools_share = f" and the {len(tools)} function tools take {reserved} more" if tools and reserved else ""
            raise RemoteProtocolError(
                f"The instructions are {n} tokens long{tools_share}; this server keeps each prompt within "
                f"{self.budget_tokens} tokens, "
                "instructions and tools included: shorten them.", code="invalid_value", param=param)
