"""Token counts of the conversation's texts, each text counted once.

A committed item's text never changes (an edit makes a new text), so a long session's prompts need the LM's
tokenizer only for what is new since the last prompt. The counts are kept per text, not per item: the same
instructions, or the same text in two items, are counted once. Least recently used texts are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

__all__ = ["TokenCounts"]


class TokenCounts:
    """A cache in front of a token counter; call it as the counter itself.

    Args:
        count: the LM's tokenizer count (may block: see `missing` and `store` to count elsewhere).
        max_texts: texts remembered; a prompt's texts (a few hundred at most) must fit many times over.
    """

    def __init__(self, count: Callable[[str], int], max_texts: int = 4096) -> None:
        if max_texts < 1:
            raise ValueError(f"max_texts must be >= 1, got {max_texts}")
        self._count = count
        self._max_texts = max_texts
        self._counts: OrderedDict[str, int] = OrderedDict()

    def __call__(self, text: str) -> int:
        """Tokens of `text`: remembered, or counted now."""
        n = self._counts.get(text)
        if n is None:
            n = self._count(text)
            self.store({text: n})
        else:
            self._counts.move_to_end(text)
        return n

    def missing(self, texts: Iterable[str]) -> list[str]:
        """The distinct texts of `texts` not counted yet, in order."""
        return list(dict.fromkeys(t for t in texts if t not in self._counts))

    def count(self, texts: Iterable[str]) -> dict[str, int]:
        """Count `texts` with the counter, leaving the cache alone: safe on a worker thread while the owner's thread
        uses the cache; the owner then `store`s the result."""
        return {t: self._count(t) for t in texts}

    def store(self, counts: dict[str, int]) -> None:
        """Remember counts made elsewhere (on a worker thread, with the same counter)."""
        for text, n in counts.items():
            self._counts[text] = n
            self._counts.move_to_end(text)
        while len(self._counts) > self._max_texts:
            self._counts.popitem(last=False)
