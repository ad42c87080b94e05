"""What the user actually heard of a reply that was cut off (barge-in, conversation.item.truncate, a hang-up).

The server keeps this much of a truncated reply in the conversation, and a client that knows how much audio it
played (the SIP bridge's call log) tells the same part: one rule, here because clients depend on nothing of the
server's (DESIGN.md, 2) while the server may use the clients' pure helpers (as it does g711)."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["SpokenReply", "heard_of_sentences", "truncate_text_to_heard"]


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


class SpokenReply:
    """A spoken reply's transcript against its audio, as a client receives them, for telling only what was heard.

    The server sends each sentence's transcript delta right before that sentence's audio, which may take seconds to
    start (Step-Audio's TTS): a sentence's audio runs from the audio received at its delta to the audio received at
    the next delta (or the reply's end). Audio comes ahead of playback by at most the server's pacing lead (0.3 s on
    ours), so a sentence is told once the audio PLAYED_MARGIN_MS past its end has come: by then the listener heard
    it. The rest is told at the reply's end, as far as the cut when the reply was cut off."""

    PLAYED_MARGIN_MS = 1000.0

    def __init__(self) -> None:
        self._deltas: list[str] = []  # as sent: each after the first starts with its space
        self._spans: list[tuple[float, float]] = []  # [start_ms, end_ms) of each sentence's audio
        self._audio_ms = 0.0
        self._told = 0  # sentences told

    @property
    def audio_ms(self) -> float:
        """The reply's audio received so far."""
        return self._audio_ms

    def transcript(self, delta: str) -> str:
        """A sentence's transcript delta; returns the text heard by now and not told yet."""
        self._close_last()
        self._deltas.append(delta)
        self._spans.append((self._audio_ms, self._audio_ms))
        return self._tell_played()

    def audio(self, ms: float) -> str:
        """The reply's next `ms` of audio came; returns the text heard by now and not told yet."""
        self._audio_ms += ms
        return self._tell_played()

    def rest(self, heard_ms: float | None) -> str:
        """The reply ended: the text still untold, all of it (heard_ms None), or as far as its first heard_ms of
        audio were heard (heard_of_sentences' rule, the server's for the item it keeps)."""
        self._close_last()
        told, self._told = "".join(self._deltas[:self._told]).strip(), len(self._deltas)
        if heard_ms is None:
            return "".join(self._deltas)[len(told):]
        heard = heard_of_sentences(((d.strip(), s, e) for d, (s, e) in zip(self._deltas, self._spans)), heard_ms)
        return heard[len(told):] if heard.startswith(told) else ""

    def _tell_played(self) -> str:
        """The sentences before the last (whose end is known) played by now, not told yet."""
        told = self._told
        last = len(self._spans) - 1
        while self._told < last and self._spans[self._told][1] + self.PLAYED_MARGIN_MS <= self._audio_ms:
            self._told += 1
        return "".join(self._deltas[told:self._told])

    def _close_last(self) -> None:
        if self._spans:
            self._spans[-1] = (self._spans[-1][0], self._audio_ms)
