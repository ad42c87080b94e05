"""SentenceChunker: exact pieces; whole input and one character at a time give the same pieces."""
from __future__ import annotations

import pytest

from speech_decoder.sentences import SentenceChunker, clean_for_speech


def whole(text: str) -> list[str]:
    chunker = SentenceChunker()
    return chunker.push(text) + chunker.flush()


def by_char(text: str) -> list[str]:
    chunker = SentenceChunker()
    pieces: list[str] = []
    for ch in text:
        pieces += chunker.push(ch)
    return pieces + chunker.flush()


CASES = [
    ("Hello there my friend, how are you? Fine.", ["Hello there my friend,", "how are you?", "Fine."]),
    ("Sure, here is the weather for today: it is sunny. The high is 3.14 degrees, e.g. cold! Mr. Smith said hi?",
     ["Sure, here is the weather for today:", "it is sunny.", "The high is 3.14 degrees, e.g. cold!",
      "Mr. Smith said hi?"]),
    ("**Note:** use `pip`.\n# Title\n- item one\n- item two\n1. First step. Then go.",
     ["Note: use pip.", "Title", "item one", "item two", "1. First step.", "Then go."]),
    ("你好，今天天气很好。我们去公园吧！好的", ["你好，今天天气很好。", "我们去公园吧！", "好的"]),
    ('Yes. No... Maybe?! "Quoted." (Paren.) Done', ["Yes.", "No...", "Maybe?!", '"Quoted."', "(Paren.)", "Done"]),
    ("It is 10:30 now. Visit example.com today.", ["It is 10:30 now.", "Visit example.com today."]),
    ("J. R. R. Tolkien wrote it, i.e. the book. Great", ["J. R. R. Tolkien wrote it,", "i.e. the book.", "Great"]),
    ("Pi is 3.14159 and e is 2.718.", ["Pi is 3.14159 and e is 2.718."]),
    ("Short, then a long clause, and more. Next, a b c d, e.",
     ["Short, then a long clause,", "and more.", "Next, a b c d, e."]),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_pieces_are_exact(text: str, expected: list[str]) -> None:
    assert whole(text) == expected


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_one_character_at_a_time_gives_the_same_pieces(text: str, expected: list[str]) -> None:
    assert by_char(text) == expected


def test_pieces_come_out_as_soon_as_they_are_decided() -> None:
    chunker = SentenceChunker()
    assert chunker.push("It costs 3.") == []          # a decimal or a sentence end: wait
    assert chunker.push("5 euros. Th") == ["It costs 3.5 euros."]
    assert chunker.push("anks") == []
    assert chunker.flush() == ["Thanks"]


def test_flush_resets_the_first_piece_rule() -> None:
    chunker = SentenceChunker()
    assert chunker.push("One two three four, five. Six seven eight nine, ten. ") == [
        "One two three four,", "five.", "Six seven eight nine, ten."]
    assert chunker.flush() == []
    assert chunker.push("One two three four, five. ") == ["One two three four,", "five."]


def test_nothing_speakable_yields_nothing() -> None:
    assert whole("") == []
    assert whole("  \n\n ** ## ``` \n") == []
    assert clean_for_speech("  **bold**  and\n`code` ") == "bold and code"


WORD_CUT_CASES = [
    # no clause mark: the first piece ends after four words, at a word that is not a function word
    ("The season of light was the season of darkness. Then more.",
     ["The season of light", "was the season of darkness.", "Then more."]),
    ("It was the epoch of belief.", ["It was the epoch", "of belief."]),
    # a clause mark or a sentence end that comes first still wins
    ("Sure, that is fine. And then, later, more words here.",
     ["Sure, that is fine.", "And then, later, more words here."]),
    ("Yes. The rest of it is long enough.", ["Yes.", "The rest of it is long enough."]),
    # never right after an abbreviation that did not end the sentence
    ("I met Dr. Smith and his dog today.", ["I met Dr. Smith", "and his dog today."]),
    ("Short reply.", ["Short reply."]),
]


@pytest.mark.parametrize(("text", "expected"), WORD_CUT_CASES)
def test_first_word_cut_whole_and_streamed(text: str, expected: list[str]) -> None:
    chunker = SentenceChunker(min_first_words=3, first_word_cut=4)
    assert chunker.push(text) + chunker.flush() == expected
    pieces: list[str] = []
    for ch in text:
        pieces += chunker.push(ch)
    assert pieces + chunker.flush() == expected


def test_first_word_cut_waits_for_the_next_word_to_begin() -> None:
    chunker = SentenceChunker(min_first_words=3, first_word_cut=4)
    # LM tokens carry their leading space (" was"), so the cut is decided when the next word's first letter arrives
    assert chunker.push("The season of light ") == []
    assert chunker.push("w") == ["The season of light"]
    assert chunker.push("as here. Second sentence of words here.") == ["was here."]
    assert chunker.flush() == ["Second sentence of words here."]


@pytest.mark.parametrize(("text", "expected"), [
    ("We had everything before us, but nothing.", ["We had everything", "before us, but nothing."]),
    ("It was the epoch of belief.", ["It was the epoch", "of belief."]),  # "It was the" ends on a function word
    ("Sure, that is fine.", ["Sure, that is fine."]),
])
def test_a_three_word_first_cut_as_the_voice_agent_uses(text: str, expected: list[str]) -> None:
    chunker = SentenceChunker(min_first_words=3, first_word_cut=3)
    assert chunker.push(text) + chunker.flush() == expected


def test_a_text_without_stops_is_cut_within_the_piece_limit_at_clauses_then_words() -> None:
    """12,000 characters without a stop (an operator's `say`) exceeded TTS-3B's context as one piece: pieces stay
    within MAX_PIECE_CHARS, end at a clause mark where one lies inside the limit, else between words (none is split),
    CJK text without marks at the limit; the same whole or one character at a time; nothing is lost."""
    from speech_decoder.sentences import MAX_PIECE_CHARS

    words = " ".join(f"word{i}" for i in range(1500))
    pieces = whole(words)
    assert len(pieces) > 1 and all(len(p) <= MAX_PIECE_CHARS for p in pieces)
    assert " ".join(pieces) == words  # every word whole, in order
    assert by_char(words) == pieces
    clause = "alpha beta, " + " ".join(["gamma"] * 60) + " end"
    assert whole(clause)[0] == "alpha beta,"  # the clause mark inside the limit, not the last word boundary there
    hanzi = "好" * 450
    assert whole(hanzi) == ["好" * MAX_PIECE_CHARS, "好" * MAX_PIECE_CHARS, "好" * 50] == by_char(hanzi)
