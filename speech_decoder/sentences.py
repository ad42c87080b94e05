"""Cut streamed LM text into speakable pieces for a sentence-level TTS.

Rules (pure; each cut depends only on the text seen so far plus a bounded lookahead, so feeding a reply whole or one
character at a time gives the same pieces):
- A piece ends after . ! ? (with any trailing quotes/brackets) followed by whitespace, after 。！？ and after a
  newline. The lookahead means "3.14", "10:30", "Hi!Yes" and "example.com" never split.
- A period does not end a piece after a known abbreviation (e.g., i.e., Mr., Dr., etc.), a single initial
  ("J. Smith") or a bare list number at the start of a piece ("1. First").
- The FIRST piece of a reply may also end at a clause mark (, ; : and ，；：) once it holds at least
  `min_first_words` words, so that audio starts while the rest of the sentence is still being generated.
- With `first_word_cut` = N, the FIRST piece may also end at a plain word boundary once it holds N words, unless
  its last word is a function word ("the season of" waits for "light"): a sentence-level TTS then starts on a
  short phrase instead of waiting for the whole first sentence. The boundary is known when the next word begins.
- A piece never runs past MAX_PIECE_CHARS: without an end before it, it ends at its last clause mark there, else at
  its last word boundary, else (CJK text without marks) at the limit. A sentence-level TTS reads a piece in one
  generation with a bounded context (TTS-3B: a 12,000-character text without a stop exceeded it).
- Markdown symbols a TTS would read aloud (* # `) and leading list bullets are removed; pieces without any letter
  or digit are dropped.
"""
from __future__ import annotations

import re

_ENDERS = ".!?"
_CJK_ENDERS = "。！？"
_CLAUSE = ",;:"
_CJK_CLAUSE = "，；："
_CLOSERS = "\"'”’)]}»」』*"
_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "approx", "no", "fig",
    "inc", "ltd", "co", "corp", "dept", "est", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept",
    "oct", "nov", "dec", "a.m", "p.m", "u.s", "u.k", "cf", "al",
})
MAX_PIECE_CHARS = 200  # ~10 s of English speech, ~50 s of Chinese: well inside TTS-3B's context with its prompt
_MARKDOWN = str.maketrans("", "", "*#`")
_BULLET = re.compile(r"^(?:[-•]\s+)+")
_SPACES = re.compile(r"\s+")


class SentenceChunker:
    """Streaming sentence splitter for one reply: `push(delta)` as text arrives, `flush()` at the end.

    After `flush()` the chunker is ready for the next reply (the first-piece clause rule applies again).
    """

    def __init__(self, min_first_words: int = 4, first_word_cut: int | None = None) -> None:
        if min_first_words < 1:
            raise ValueError(f"min_first_words must be >= 1, got {min_first_words}")
        if first_word_cut is not None and first_word_cut < 1:
            raise ValueError(f"first_word_cut must be >= 1 or None, got {first_word_cut}")
        self._min_first_words = min_first_words
        self._first_word_cut = first_word_cut
        self._buf = ""
        self._first = True

    def push(self, text_delta: str) -> list[str]:
        """Add streamed text; return the pieces that are now complete."""
        self._buf += text_delta
        return self._drain()

    def flush(self) -> list[str]:
        """End of the reply: return the complete pieces and whatever text is left."""
        pieces = self._drain()
        rest = clean_for_speech(self._buf)
        if rest:
            pieces.append(rest)
        self._buf = ""
        self._first = True
        return pieces

    def _drain(self) -> list[str]:
        pieces: list[str] = []
        while (cut := _find_cut(self._buf, self._first, self._min_first_words,
                                self._first_word_cut if self._first else None)) is not None:
            piece = clean_for_speech(self._buf[:cut])
            self._buf = self._buf[cut:]
            if piece:
                pieces.append(piece)
                self._first = False
        return pieces


def clean_for_speech(text: str) -> str:
    """Drop markdown symbols and bullets, fold whitespace; "" if nothing speakable is left."""
    text = _SPACES.sub(" ", text.translate(_MARKDOWN)).strip()
    text = _BULLET.sub("", text)
    return text if any(ch.isalnum() for ch in text) else ""


def _find_cut(buf: str, first: bool, min_words: int, word_cut: int | None = None) -> int | None:
    """End index (exclusive) of the first complete piece in `buf`, or None until more text arrives."""
    n = len(buf)
    i = 0
    while i < min(n, MAX_PIECE_CHARS):
        c = buf[i]
        if c == "\n":
            return i + 1
        if word_cut is not None and c.isspace() and i > 0 and not buf[i - 1].isspace() \
                and i + 1 < n and not buf[i + 1].isspace() and _is_word_cut(buf[:i], word_cut):
            return i
        if c in _CJK_ENDERS:
            j = _skip(buf, i + 1, _CJK_ENDERS + _CLOSERS)
            return None if j == n else j
        if c in _ENDERS:
            j = _skip(buf, i + 1, _ENDERS + _CLOSERS)
            if j == n:
                return None  # the next character decides (space: end; digit: decimal; ...)
            if buf[j].isspace() and not (buf[i:j].rstrip(_CLOSERS) == "." and _period_is_not_an_end(buf, i)):
                return j
            i = j
            continue
        if first and c in _CLAUSE:
            if i + 1 == n:
                return None
            if buf[i + 1].isspace() and _spoken_length(buf[:i]) >= min_words:
                return i + 1
        if first and c in _CJK_CLAUSE and _spoken_length(buf[:i]) >= min_words:
            return i + 1
        i += 1
    return _long_cut(buf) if n > MAX_PIECE_CHARS else None


def _long_cut(buf: str) -> int:
    """Where a piece with no end in its first MAX_PIECE_CHARS characters ends (module docstring). Needs the character
    after the limit, so that a word ending exactly there is known to have ended."""
    head = buf[:MAX_PIECE_CHARS + 1]
    clause = max((i for i, c in enumerate(head[:-1]) if (c in _CLAUSE and head[i + 1].isspace()) or c in _CJK_CLAUSE),
                 default=-1)
    if clause > 0:
        return clause + 1
    space = max((i for i, c in enumerate(head) if c.isspace()), default=-1)
    return space if space > 0 else MAX_PIECE_CHARS


def _skip(buf: str, j: int, chars: str) -> int:
    while j < len(buf) and buf[j] in chars:
        j += 1
    return j


def _period_is_not_an_end(buf: str, i: int) -> bool:
    """True when the single period at buf[i] closes an abbreviation, an initial or a leading list number."""
    start = i
    while start > 0 and not buf[start - 1].isspace():
        start -= 1
    word = buf[start:i].lstrip("(\"'“‘[").lower()
    if not word:
        return False
    if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
        return True
    # "1." opening a piece is a list number, not a sentence.
    return word.isdigit() and not buf[:start].strip()


# Words a phrase should not end on: it would be spoken with a falling tone in the middle of a sentence.
_FUNCTION_WORDS = frozenset({
    "a", "an", "the", "of", "to", "in", "on", "at", "by", "for", "from", "with", "about", "as", "into", "than",
    "and", "or", "but", "nor", "so", "if", "that", "which", "who", "whose", "this", "these", "those",
    "my", "your", "his", "her", "its", "our", "their", "is", "are", "was", "were", "be", "been", "am",
    "do", "does", "did", "have", "has", "had", "will", "would", "can", "could", "should", "may", "might", "must",
    "not", "very", "i", "you", "we", "they", "he", "she", "it",
})


def _is_word_cut(text: str, min_words: int) -> bool:
    """True when `text` (a piece so far, ending at a word boundary) may end the first piece by word count."""
    words = text.split()
    if len(words) < min_words or any(_is_cjk(ch) for ch in text):
        return False
    last = words[-1].strip("\"'“”‘’()[]{}").lower()
    # a word ending in . ! ? here is one the sentence rules kept inside the piece ("Mr.", "3.")
    return (any(ch.isalnum() for ch in last) and last not in _FUNCTION_WORDS and not last.endswith("'s")
            and last[-1] not in _ENDERS)


def _spoken_length(text: str) -> int:
    """Words, counting each CJK character as one word (CJK text has no spaces)."""
    cjk = sum(1 for ch in text if _is_cjk(ch))
    words = sum(1 for w in text.split() if any(ch.isalnum() and not _is_cjk(ch) for ch in w))
    return cjk + words


def _is_cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff"
