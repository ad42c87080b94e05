"""What the user actually heard of a reply that was cut off (barge-in, conversation.item.truncate, a hang-up).

The server keeps this much of a truncated reply in the conversation, and a client that knows how much audio it
played (the SIP bridge's call log) tells the same part: one rule, here because clients depend on nothing of the
server's (DESIGN.md, 2) while the server may use the clients' pure helpers (as it does g711)."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["heard_of_sentences", "truncate_text_to_heard"]


def truncate_text_to_heard(text: str, played_ms: int, total_ms: int) -> str:
    """Cut `text` to the part spoken in the first `played_ms` of `total_ms` of its audio.

    Approximation: speech is assumed to run at a uniform rate per character, so the heard
    prefix is the first floor(len(text) * played_ms / total_ms) characters. A word cut in the
    middle counts as not heard (we keep only whole words), and trailing spaces are dropped.
    TTS pauses at punctuation make the estimate run slightly ahead late in long sentences;
    good enough for the LM's context, which only needs roughly what was said.

    Args:
        text: the full transcript of the reply's audio.
        played_ms: audio played to the user (e.g. conversation.item.truncate audio_end_ms).
        total_ms: duration of all audio synthesized for `text`; <= 0 means nothing is known.
    """
    if total_ms <= 0 or played_ms <= 0:
        return ""
    if played_ms >= total_ms:
        return text
    cut = len(text) * played_ms // total_ms
    if cut >= len(text):
        return text
    if cut > 0 and not text[cut].isspace() and not text[cut - 1].isspace():
        # Mid-word: drop the partial word.
        space = max(text.rfind(" ", 0, cut), text.rfind("\n", 0, cut), text.rfind("\t", 0, cut))
        cut = space if space >= 0 else 0
    return text[:cut].rstrip()


def heard_of_sentences(sentences: Iterable[tuple[str, float, float]], heard_ms: float) -> str:
    """A reply's text as far as the listener heard the first `heard_ms` of its audio. `sentences` are its spoken
    sentences in order, each (text, start_ms, end_ms) of its audio; the one the cut falls in keeps its heard part
    (truncate_text_to_heard)."""
    words: list[str] = []
    for text, start_ms, end_ms in sentences:
        # A sentence whose audio begins at the cut (or is not made yet: no audio, ending where it starts) was not
        # heard, even though its empty audio ends before the cut.
        if start_ms >= heard_ms:
            break
        if end_ms <= heard_ms:
            words.append(text)
        else:
            words.append(truncate_text_to_heard(text, int(heard_ms - start_ms), int(end_ms - start_ms)))
    return " ".join(w for w in words if w)
