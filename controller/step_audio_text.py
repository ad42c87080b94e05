"""Text for and from Step-Audio Chat: the conversation as the model sees it, incremental detokenisation, and the
text-pieces mask and sampler that keep random checkpoints' replies speakable."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lm_engine import Step1Tokenizer

DEFAULT_SYSTEM = "You are a helpful assistant."


class Detokenizer:
    """Incremental text of generated ids: audio and control ids dropped, partial UTF-8 held back.

    Each push decodes a window, not the whole reply (which made a reply's text quadratic in its length): the ids from
    `_window` on, against those up to `_read`, the end of the last text given out. The window starts one emission back
    so that sentencepiece's leading-space rule (a decode drops its first piece's "▁") strips the same space from both
    decodes, and at a character's end, since an emission never ends in a partial UTF-8 character (U+FFFD)."""

    def __init__(self, tok: Step1Tokenizer) -> None:
        self.tok = tok
        self.ids: list[int] = []
        self._window = 0  # the first id of the decoded window
        self._read = 0  # the ids given out as text so far
        self._special = {tok.bos_id, tok.eot_id, tok.bot_id, 0, 2}

    def push(self, token: int) -> str:
        if token in self._special or (self.tok.audio_offset >= 0 and token >= self.tok.audio_offset):
            return ""
        self.ids.append(token)
        done, text = self._decode_window()
        if text.endswith("\ufffd") or not text.startswith(done):
            return ""
        self._window, self._read = self._read, len(self.ids)
        return text[len(done):]

    def flush(self) -> str:
        done, text = self._decode_window()
        self._window = self._read = len(self.ids)
        return text[len(done):].replace("\ufffd", "") if text.startswith(done) else ""

    def _decode_window(self) -> tuple[str, str]:
        """(the window's text up to the last emission, the window's whole text)."""
        window = self.ids[self._window:]
        return self.tok.decode(window[:self._read - self._window]), self.tok.decode(window)


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The conversation as Step-Audio Chat sees it: text contents (a user audio turn is its <audio_N> text), roles
    system / user / assistant, tool calls folded into the assistant's text (the model has no tool calling), and a
    default system message when the conversation has none."""
    out = []
    if not any(m.get("role") in ("system", "developer") for m in messages):
        out.append({"role": "system", "content": DEFAULT_SYSTEM})
    for m in messages:
        role = "system" if m["role"] == "developer" else m["role"]
        content = _text_of(m.get("content"))
        if m["role"] == "assistant" and m.get("tool_calls"):
            calls = "; ".join(f"{c['function']['name']}({c['function'].get('arguments', '')})"
                              for c in m["tool_calls"])
            content = (content + "\n" if content else "") + calls
        out.append({"role": role, "content": content})
    return out


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or p.get("transcript") or "") for p in content if isinstance(p, dict))
    return str(content)


def text_piece_mask(tok: Any, vocab: int) -> Any:
    """True for ids that decode to plain text (no control, unknown, unused, byte or audio pieces) and for EOT."""
    import torch

    sp = tok.sp
    mask = torch.zeros(vocab, dtype=torch.bool)
    limit = min(vocab, sp.get_piece_size(), tok.audio_offset if tok.audio_offset >= 0 else vocab)
    for i in range(limit):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i) or sp.is_byte(i):
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("<") and piece.endswith(">"):
            continue
        text = piece.replace("\u2581", " ")
        if text.strip() and all(ch.isprintable() for ch in text):
            mask[i] = True
    if 0 <= tok.eot_id < vocab:
        mask[tok.eot_id] = True
    return mask


def sample_text_token(logits: Any, temperature: float, top_p: float, gen: Any) -> int:
    import torch

    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_p, order = probs.sort(descending=True)
    keep = (sorted_p.cumsum(0) - sorted_p) < top_p
    sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
    choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=gen)
    return int(order[choice])
