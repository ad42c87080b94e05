"""Token counts of the conversation's texts, each text counted once.

A committed item's text never changes (an edit makes a new text), so a long session's prompts need the LM's
tokenizer only for what is new since the last prompt. The counts are kept per text, not per item: the same
instructions, or the same text in two items, are counted once. The owner says which texts to keep (`retain`): a
conversation's, so that the counts never outgrow the conversation and none of its texts is ever counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = ["TokenCounts"]


class TokenCounts:
    """A cache in front of a token counter; call it as the counter itself.

    Args:
        count: the LM's tokenizer count (may block: see `missing`, `count` and `store` to count elsewhere).
    """

    def __init__(self, count: Callable[[str], int]) -> None:
        self._count = count
        self._counts: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        """Tokens of `text`: remembered, or counted now (and remembered)."""
        n = self._counts.get(text)
        if n is None:
            n = self._counts[text] = self._count(text)
        return n

    def missing(self, texts: Iterable[str]) -> list[str]:
        """The distinct texts of `texts` not counted yet, in order."""
        return list(dict.fromkeys(t for t in texts if t not in self._counts))

    def count(self, texts: Iterable[str]) -> dict[str, int]:
        """Count `texts` with the counter, leaving the cache alone: safe on a worker thread while the owner's thread
        uses the cache; the owner then `store`s what it wants kept."""
        return {t: self._count(t) for t in texts}

    def store(self, counts: dict[str, int]) -> None:
        """Remember counts made elsewhere (with the same counter)."""
        self._counts.update(counts)

    def retain(self, texts: Iterable[str]) -> None:
        """Forget the counts of all other texts (a deleted item's, an edited text's former version)."""
        keep = set(texts)
        self._counts = {t: n for t, n in self._counts.items() if t in keep}
