"""truncate_text_to_heard: proportional cut at a word boundary; SpokenReply: what a client tells of a reply as heard."""

from __future__ import annotations

import pytest

from clients.heard import SpokenReply, truncate_text_to_heard

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


def test_a_spoken_reply_tells_each_sentence_once_played_and_the_rest_as_far_as_the_cut() -> None:
    """Each sentence's transcript comes before its audio: nothing is told before the audio a second past a sentence's
    end has come (by then it was played), and the reply's end tells the rest as far as the cut."""
    reply = SpokenReply()
    assert reply.transcript("It is noon.") == ""
    assert reply.audio(600) == ""
    assert reply.transcript(" The sun is high.") == ""  # the first sentence's audio is 600 ms; none past it yet
    assert reply.audio(900) == "" and reply.audio(100) == "It is noon."
    assert reply.transcript(" Lunch is soon.") == ""
    assert reply.rest(1200) == " The sun"  # cut 600 ms into the second sentence's 1000 ms, inside "is"
    assert SpokenReply().rest(0) == "" and SpokenReply().rest(None) == ""
    unheard = SpokenReply()
    unheard.transcript("It is noon.")
    assert unheard.rest(unheard.audio_ms) == ""  # cut before any of its audio
    whole = SpokenReply()
    whole.transcript("It is noon.")
    whole.transcript(" Bye.")
    assert whole.rest(None) == "It is noon. Bye."
