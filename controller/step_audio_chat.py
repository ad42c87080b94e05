"""Step-Audio-Chat, the Step-Audio pipeline's reply side: the Chat LM in lm_engine (tensor parallel under torchrun), or
only its tokenizer when a --chat-url server runs it, or nothing (the `tts` tool); the conversation in its chat
template `<|BOT|>{role}\\n{content}<|EOT|>` (user -> human), cut to its context; replies streamed as ChatDeltas.

Random checkpoints (tiny, full-random) emit mostly audio / reserved ids as "text": for those the Chat LM samples under
a mask of the tokenizer's normal text pieces (so that replies are speakable words, never empty), and replies are
capped (config.max_reply_tokens) so that CPU tests stay fast.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from context_manager import TemplateCosts
from controller.bridge import iterate_in_thread
from controller.chat_url import open_remote_chat, remote_chat_problem
from controller.pipeline import PromptCut
from controller.step_audio_setup import StepAudioConfig, chat_engine_config, loading
from controller.step_audio_text import DEFAULT_SYSTEM, Detokenizer, chat_messages, sample_text_token, text_piece_mask
from lm_engine.chat import ChatDelta, ChatRequest, ChatUsage

if TYPE_CHECKING:
    from lm_engine import Engine, Step1Tokenizer
    from lm_engine.backends.remote import RemoteChatBackend

logger = logging.getLogger(__name__)

_REPLY_OPENING = "<|BOT|>assistant\n"  # a chat prompt's end: the reply's turn, opened
_EOT = "<|EOT|>"


class StepAudioChat:
    """The Chat LM of a Step-Audio model folder, loaded as its config asks."""

    def __init__(self, config: StepAudioConfig, device: str, cancel: threading.Event | None = None) -> None:
        """Loads the Chat LM (unless behind --chat-url), or raises LoadCancelled first once `cancel` is set."""
        from controller.checkpoints import CHAT_DIR
        from lm_engine import Engine, Step1Tokenizer

        self.config = config
        chat_dir = config.model_path / CHAT_DIR
        self.engine: Engine | None = None
        self.tok: Step1Tokenizer | None = None  # `tts`: neither the Chat LM nor its folder
        self._remote: RemoteChatBackend | None = None
        if config.chat_url:
            # Chat on an OpenAI-compatible server (vLLM serving Step-Audio-Chat with -tp N): it applies the
            # chat template itself; audio turns travel as their <audio_N> text. Only the tokenizer is read here.
            self._remote = open_remote_chat(config.chat_url)
            self.tok = Step1Tokenizer.from_dir(chat_dir)
        elif config.chat:
            with loading(chat_dir, f"tp={config.tp}", cancel):
                self.engine = Engine.from_pretrained(chat_dir, device=device, tp=config.tp, progress=False,
                                                     config=chat_engine_config(config, device == "cpu"))
                self.tok = self.engine.tokenizer or Step1Tokenizer.from_dir(chat_dir)
            self._text_mask = text_piece_mask(self.tok, self.engine.model_config.vocab_size)
        self._pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="sa-chat")

    def count_tokens(self, text: str) -> int:
        """The tokens of a message's text in the chat template (its role markers are template_costs'): between
        <|EOT|>s sentencepiece pieces cannot cross, so neither the prompt's leading "▁" nor a neighbour's pieces
        reach it; the newline before it is the markers', and what the text's start makes of it is the text's."""
        tok = self._tokenizer()
        return len(tok.encode(f"{_EOT}\n{text}{_EOT}")) - len(tok.encode(f"{_EOT}\n{_EOT}"))

    def count_audio_tokens(self, text: str) -> int:
        return self._audio_ids(self._tokenizer().encode(text))

    def _audio_ids(self, ids: list[int]) -> int:
        """How many ids are <audio_N> pieces (each one id from audio_offset on)."""
        offset = self._tokenizer().audio_offset
        return sum(1 for i in ids if i >= offset) if offset >= 0 else 0

    def template_costs(self, system: bool) -> TemplateCosts:
        """What Step-Audio's template writes around the conversation's texts, counted as count_tokens counts them:
        each role's markers (`<|BOT|>role\n` ... `<|EOT|>`), and once the BOS, the leading "▁", the reply's opening
        and, for a conversation without a system message (`system` false), the default one chat_messages adds."""
        tok = self._tokenizer()

        def markers(role: str) -> int:
            return len(tok.encode(_EOT + _turn({"role": role, "content": ""}))) - len(tok.encode(_EOT))

        roles = {role: markers(role) for role in ("system", "user", "assistant", "tool")}
        prompt = len(tok.encode(_REPLY_OPENING, add_bos=True))
        if not system:
            prompt += roles["system"] + self.count_tokens(DEFAULT_SYSTEM)
        return TemplateCosts(markers=roles, prompt=prompt)

    def render(self, messages: list[dict[str, Any]]) -> str:
        """Step-Audio's chat template over `chat_messages(messages)`."""
        return "".join(_turn(m) for m in chat_messages(messages)) + _REPLY_OPENING

    def prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        return self._tokenizer().encode(self.render(messages), add_bos=True)

    def reply(self, request: ChatRequest) -> AsyncIterator[ChatDelta | PromptCut]:
        """The reply's ChatDeltas (a PromptCut first when its prompt had to be cut to fit)."""
        max_tokens = request.max_tokens
        if self.config.max_reply_tokens is not None and self.config.max_reply_tokens < max_tokens:
            # The profile's own cap (random checkpoints ramble): a reply it ends is complete as far as the client's
            # max_output_tokens goes.
            return _length_as_stop(self._reply(request, self.config.max_reply_tokens))
        return self._reply(request, max_tokens)

    def _reply(self, request: ChatRequest, max_tokens: int) -> AsyncGenerator[ChatDelta | PromptCut, None]:
        if self._remote is not None:
            return self._reply_remote(self._remote, request, max_tokens)
        engine = self._engine()
        ids = self.prompt_ids(request.messages)
        context = engine.model_config.max_seq_len
        # A reply of more than half the context leaves its prompt too little room: a context of 20 against the tiny
        # profile's 24-token cap had "the -4 that fit" and failed each reply with the engine's context error.
        max_tokens = min(max_tokens, context // 2)
        limit = context - max_tokens
        cut = None
        if len(ids) > limit:
            ids, cut = self.fit_prompt(request.messages, ids, limit)
        if self.config.constrain_text:
            deltas = self._reply_constrained(engine, ids, request.temperature, max_tokens)
        else:
            deltas = self._reply_stream(engine, ids, request.temperature, max_tokens)
        return deltas if cut is None else _after(cut, deltas)

    def fit_prompt(self, messages: list[dict[str, Any]], ids: list[int],
                   limit: int) -> tuple[list[int], PromptCut | None]:
        """A prompt longer than the Chat LM's context less the reply: the system turns at its start (the
        instructions) and the newest tokens that fit beside them, the middle dropped, which is logged. A system
        part of more than half the room is cut too (the newest tokens are the turn being answered). Returns the
        kept ids, and a PromptCut when the last turn itself lost its start (not only older turns went), counted in
        that turn's own tokens."""
        tok, context = self._tokenizer(), self._engine().model_config.max_seq_len
        turns = chat_messages(messages)
        lead = []
        for m in turns:
            if m["role"] != "system":
                break
            lead.append(_turn(m))
        head = tok.encode("".join(lead), add_bos=True)
        system = ids[:len(head)] == head and len(head) <= limit // 2
        if not system:
            head = ids[:1]  # the BOS alone
        kept = head + ids[len(ids) - (limit - len(head)):]
        # "kept the system message (1 tokens)" was said of the BOS alone, when the system message was cut with the rest
        # The prompt ends with the last turn's text, its <|EOT|>, then the reply's opening: what the kept tail holds
        # of that text, counted as the user wrote it (the template's markers are no part of their --text or turn).
        last = self.count_tokens(turns[-1]["content"])
        heard = max(0, min(last, limit - len(head) - len(tok.encode(_EOT + _REPLY_OPENING))))
        cut = PromptCut(tokens=last, kept=heard, limit=limit) if heard < last else None
        opening = f"kept the system message ({len(head)} tokens)" if system else "kept no system message (too long)"
        # A cut into the last turn goes back to the caller, who tells the user in their own terms (chat's note, serve's
        # turn_truncated): a warning beside it was a second line on the same cut, with other numbers.
        logger.log(logging.INFO if cut else logging.WARNING, "chat prompt of %d tokens is longer than the %d that "
                   "fit (the model's %d less the reply's %d): %s and the newest %d, dropped %d", len(ids), limit,
                   context, context - limit, opening, len(kept) - len(head), len(ids) - len(kept))
        return kept, cut

    def _last_deltas(self, detok: Detokenizer, ids: list[int], generated: int, finish: str) -> list[ChatDelta]:
        """A reply's end: the text its detokenizer still held, if any, then its finish reason and usage."""
        done = ChatDelta(finish_reason=finish, usage=ChatUsage(prompt_tokens=len(ids), completion_tokens=generated,
                                                               prompt_audio_tokens=self._audio_ids(ids)))
        text = detok.flush()
        return [ChatDelta(text=text), done] if text else [done]

    def _reply_remote(self, remote: RemoteChatBackend, request: ChatRequest,
                      max_tokens: int) -> AsyncGenerator[ChatDelta, None]:
        plain = replace(request, messages=chat_messages(request.messages), max_tokens=max_tokens,
                                    tools=None, tool_choice="auto")

        def run(cancel: threading.Event) -> Iterator[ChatDelta]:
            return iter(remote.stream(plain, cancel))

        return iterate_in_thread(run, self._pool)

    async def _reply_stream(self, engine: Engine, ids: list[int], temperature: float,
                            max_tokens: int) -> AsyncGenerator[ChatDelta, None]:
        from lm_engine import SamplingParams

        tok = self._tokenizer()
        params = SamplingParams(temperature=temperature, top_p=0.9, max_tokens=max_tokens,
                                stop_token_ids=(tok.eot_id, tok.bot_id))
        detok = Detokenizer(tok)
        n = 0
        with self._lm_down():
            async with contextlib.aclosing(engine.stream(ids, params)) as stream:
                async for token in stream:
                    n += 1
                    text = detok.push(token)
                    if text:
                        yield ChatDelta(text=text)
        for delta in self._last_deltas(detok, ids, n, "length" if n >= max_tokens else "stop"):
            yield delta

    def _reply_constrained(self, engine: Engine, ids: list[int], temperature: float,
                           max_tokens: int) -> AsyncGenerator[ChatDelta, None]:
        """Token-by-token sampling under the text-piece mask (worker thread; the engine serialises steps)."""
        import torch

        tok, mask = self._tokenizer(), self._text_mask
        gen = torch.Generator().manual_seed(self.config.seed + len(ids))

        def run(cancel: threading.Event) -> Iterator[ChatDelta]:
            detok = Detokenizer(tok)
            sid = engine.open(ids)
            finish = "length"
            generated = 0
            try:
                for step in range(max_tokens):
                    if cancel.is_set():
                        return
                    with self._lm_down():
                        logits = engine.next_logits(sid).float().clone()
                    logits[~mask[: logits.numel()]] = float("-inf")
                    if step < 3 and tok.eot_id < logits.numel():
                        logits[tok.eot_id] = float("-inf")  # a few words at least
                    token = sample_text_token(logits, temperature, 0.9, gen)
                    generated += 1
                    if token == tok.eot_id:
                        finish = "stop"
                        break
                    engine.extend(sid, [token])
                    text = detok.push(token)
                    if text:
                        yield ChatDelta(text=text)
                yield from self._last_deltas(detok, ids, generated, finish)
            finally:
                engine.release(sid)

        return iterate_in_thread(run, self._pool)

    def _tokenizer(self) -> Step1Tokenizer:
        if self.tok is None:
            raise RuntimeError("the `tts` tool loads no Chat LM tokenizer")
        return self.tok

    def _engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("no Chat LM here: the `tts` tool loads none, a --chat-url server runs it")
        return self.engine

    @contextlib.contextmanager
    def _lm_down(self) -> Iterator[None]:
        """A Chat LM that is down (a tensor-parallel rank lost) fails a reply as a --chat-url server that is down does:
        with why, in one log line; not with the failed step's text (gloo's, sequence ids), nor a traceback each reply.
        The detail was logged once, when it went down."""
        from lm_engine import ChatBackendError, EngineError

        try:
            yield
        except EngineError as exc:
            problem = self.problem()
            if problem is None:
                raise
            raise ChatBackendError(problem) from exc

    def problem(self) -> str | None:
        """Why the Chat LM cannot answer a reply now, or None (blocks for a --chat-url server's answer)."""
        if self._remote is not None:
            return remote_chat_problem(self._remote)
        problem = self.engine.problem if self.engine is not None else None
        return f"the chat LM is down: {problem}; the server needs a restart" if problem else None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for closable in (self._remote, self.engine):
            if closable is not None:
                with contextlib.suppress(Exception):
                    closable.close()


def _turn(message: dict[str, str]) -> str:
    """One chat_messages() turn in Step-Audio's chat template."""
    role = "human" if message["role"] == "user" else message["role"]
    return f"<|BOT|>{role}\n{message['content']}<|EOT|>"


async def _length_as_stop(deltas: AsyncGenerator[ChatDelta | PromptCut, None]
                          ) -> AsyncGenerator[ChatDelta | PromptCut, None]:
    async with contextlib.aclosing(deltas):
        async for delta in deltas:
            if isinstance(delta, ChatDelta) and delta.finish_reason == "length":
                delta = replace(delta, finish_reason="stop")
            yield delta


async def _after(cut: PromptCut, deltas: AsyncGenerator[ChatDelta, None]
                 ) -> AsyncGenerator[ChatDelta | PromptCut, None]:
    """The reply's deltas, told first that its prompt was cut (the session tells the client)."""
    async with contextlib.aclosing(deltas):
        yield cut
        async for delta in deltas:
            yield delta
