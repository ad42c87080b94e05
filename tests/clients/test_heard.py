"""truncate_text_to_heard: proportional cut at a word boundary."""

from __future__ import annotations

import pytest

from clients.heard import truncate_text_to_heard

TEXT = "The weather is sunny today."  # 27 characters


@pytest.mark.parametrize(
    ("played_ms", "total_ms", "expected"),
    [
        (0, 1000, ""),
        (-5, 1000, ""),
        (1000, 1000, TEXT),
        (1500, 1000, TEXT),
        (500, 0, ""),
        (100, 1000, ""),  # cut=2, inside "The": nothing whole heard
        (112, 1000, "The"),  # cut=3, right after "The"
        (150, 1000, "The"),  # cut=4, at the start of "weather"
        (400, 1000, "The"),  # cut=10, "The weathe|r": the partial word is dropped
        (420, 1000, "The weather"),  # cut=11, right after "weather"
        (520, 1000, "The weather is"),  # cut=14, right after "is"
        (990, 1000, "The weather is sunny"),  # cut=26, inside "today."
    ],
)
def test_cuts(played_ms: int, total_ms: int, expected: str) -> None:
    assert truncate_text_to_heard(TEXT, played_ms, total_ms) == expected


def test_keeps_newlines_as_boundaries() -> None:
    assert truncate_text_to_heard("Hello there.\nHow are you?", 700, 1000) == "Hello there.\nHow"
