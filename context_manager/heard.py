"""What the user actually heard of a reply that was cut off (barge-in, conversation.item.truncate)."""

from __future__ import annotations

__all__ = ["truncate_text_to_heard"]


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
