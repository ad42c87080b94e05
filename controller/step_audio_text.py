"""Text for and from Step-Audio Chat: the conversation as the model sees it, incremental detokenisation, and the
text-pieces mask and sampler that keep random checkpoints' replies speakable."""
from __future__ import annotations

from typing import Any

DEFAULT_SYSTEM = "You are a helpful assistant."


class Detokenizer:
    """Incremental text of generated ids: audio and control ids dropped, partial UTF-8 held back."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.ids: list[int] = []
        self.sent = ""
        self._special = {tok.bos_id, tok.eot_id, tok.bot_id, 0, 2}

    def push(self, token: int) -> str:
        if token in self._special or (self.tok.audio_offset >= 0 and token >= self.tok.audio_offset):
            return ""
        self.ids.append(token)
        text = self.tok.decode(self.ids)
        if text.endswith("\ufffd") or not text.startswith(self.sent):
            return ""
        new, self.sent = text[len(self.sent):], text
        return new

    def flush(self) -> str:
        text = self.tok.decode(self.ids).replace("\ufffd", "")
        new = text[len(self.sent):] if text.startswith(self.sent) else ""
        self.sent = text
        return new


def chat_messages(messages: list[dict]) -> list[dict[str, str]]:
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
