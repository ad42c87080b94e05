"""What of a text TTS-3B is given: the sentences of a long text, each under the text's leading tag; whether a text
has anything to speak."""

from __future__ import annotations

import pytest

from speech_decoder.step_tts import ReplyTag, instruction_name, sentences_for_tts, speakable


def test_a_long_text_becomes_its_sentences_each_under_the_leading_tag() -> None:
    text = "（RAP）我踏上自由的征途。挣脱束缚的枷锁！Ever tried. Ever failed, no matter.\nTry again"
    pieces = sentences_for_tts(text)
    assert pieces == ["（RAP）我踏上自由的征途。", "（RAP）挣脱束缚的枷锁！", "（RAP）Ever tried.",
                      "（RAP）Ever failed, no matter.", "（RAP）Try again"]
    assert {instruction_name(p) for p in pieces} == {"RAP"}  # each sentence switches to the Music decoder


def test_a_text_without_a_tag_is_split_into_plain_sentences() -> None:
    assert sentences_for_tts("  Hello there.  How are you? ") == ["Hello there.", "How are you?"]
    assert sentences_for_tts("(快速1)One sentence only") == ["(快速1)One sentence only"]


@pytest.mark.parametrize(("text", "expected"), [
    ("Hello.", True), ("(RAP)yo", True), ("42", True), ("你好", True),
    ("...!?", False), ("", False), ("(RAP)", False), ("(RAP) ... !", False), ("（哼唱）。", False),
])
def test_speakable_needs_a_letter_or_digit_past_the_tag(text: str, expected: bool) -> None:
    assert speakable(text) is expected


def test_a_served_reply_s_leading_tag_reaches_each_of_its_sentences() -> None:
    """A served reply is synthesised sentence by sentence as the LM streams it: the (tag) it leads with must lead each
    of its sentences, as it leads a whole text (sentences_for_tts). A sentence's own leading tag wins and carries on;
    a piece that is only the tag (the LM wrote a newline after it) sets it; the next reply starts without it."""
    reply = ReplyTag()
    assert [reply.for_synthesis(s) for s in ["(高兴1)It is noon.", "The sun is high,", "lunch is soon.",
                                              "（悲伤1）Sadly it rains.", "All day."]] == [
        "(高兴1)It is noon.", "(高兴1)The sun is high,", "(高兴1)lunch is soon.", "（悲伤1）Sadly it rains.",
        "（悲伤1）All day."]
    alone = ReplyTag()
    assert [alone.for_synthesis(s) for s in ["(RAP)", "Yo."]] == ["(RAP)", "(RAP)Yo."]
    assert [ReplyTag().for_synthesis(s) for s in ["It is noon.", "The sun is high."]] == [
        "It is noon.", "The sun is high."]


def test_the_audio_token_budget_holds_upstreams_own_humming_prompt() -> None:
    """stepfun-ai/Step-Audio speakers/Tingting哼唱_prompt.wav sings its transcript (speakers_info.json, 29 characters
    with the tag) in 12.47 s (11.9 s voiced): 497-519 audio tokens at 41.67 a second. A sentence budget below that
    cuts such a line off, silently."""
    from speech_decoder.step_tts import StepTts

    humming = "（哼唱）你从一座叫 我 的小镇经过 刚好屋顶的雪化成雨飘落"
    assert len(humming) == 29
    budget = StepTts.max_new_tokens(humming, 2048)
    assert budget >= 12.47 * 125 / 3
    assert StepTts.max_new_tokens("Hello there.", 2048) == 84 + 12 * 12
