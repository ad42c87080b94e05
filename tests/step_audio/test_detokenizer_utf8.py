"""The Step-Audio Chat LM's reply text, streamed id by id through the Detokenizer with the tokenizer.model that
make-checkpoint writes: a character that the tokenizer spells as several byte pieces comes out whole, once."""

from __future__ import annotations

from pathlib import Path

from controller.checkpoints import CHAT_DIR
from controller.step_audio_text import Detokenizer
from lm_engine import Step1Tokenizer

TEXT = "你好，世界！😀 Hello 🎉 中文"


def test_characters_split_into_byte_pieces_stream_whole(tiny_model_dir: Path) -> None:
    """No delta holds U+FFFD, nothing is lost: the deltas joined are the whole decode, with an audio id (dropped
    from the text) in the middle of a character's bytes."""
    tok = Step1Tokenizer.from_dir(tiny_model_dir / CHAT_DIR)
    ids = tok.encode(TEXT)
    split = [i for i in ids if tok.sp.is_byte(i)]
    assert len(split) >= 12, [tok.sp.id_to_piece(i) for i in ids]  # 世, 界, ！ and both emoji are byte pieces
    first_byte = ids.index(split[0])
    streamed = ids[:first_byte + 1] + [tok.audio_id(7)] + ids[first_byte + 1:]
    detok = Detokenizer(tok)
    deltas = [detok.push(i) for i in streamed] + [detok.flush()]
    assert not [d for d in deltas if "\ufffd" in d], deltas
    assert "".join(deltas) == tok.decode(ids) == TEXT
    assert "世" in deltas and "😀" in deltas  # each as soon as its last byte came


LONG = ("第一章：你好，世界！😀 Hello  world, it's 12:30.\n🎉🎉 中文和English mixed — ünïcödé ✓\t"
        "再见 👋🏽 the end.  ")


class _Counting(Step1Tokenizer):
    """The real tokenizer, counting the ids each decode reads: the Detokenizer's work."""

    decoded = 0

    def decode(self, ids: list[int]) -> str:
        self.decoded += len(ids)
        return super().decode(ids)


def test_a_long_reply_streams_each_character_once_complete_in_linear_work(tiny_model_dir: Path) -> None:
    """Token by token, a 2000-token reply of Chinese, emoji (some split into byte pieces), English with double spaces
    and sentencepiece's "▁" words: after each id the text given out is the whole decode so far, less a partial
    character at its end, and the deltas joined are the whole decode. Each push decoded the whole reply again: about
    2 million ids read for these 2000 (a long reply's text fell behind its audio); now a window of a few."""
    tok = Step1Tokenizer.from_dir(tiny_model_dir / CHAT_DIR)
    ids: list[int] = []
    while len(ids) < 2000:
        ids += tok.encode(LONG)
    ids = ids[:2000]
    counting = _Counting(tok.sp)
    detok = Detokenizer(counting)
    shown = ""
    for k in range(1, len(ids) + 1):
        shown += detok.push(ids[k - 1])
        whole = tok.decode(ids[:k])
        if not whole.endswith("\ufffd"):
            assert shown == whole, k
    assert shown + detok.flush() == tok.decode(ids)
    assert counting.decoded < 20 * len(ids), counting.decoded
