"""A reply's output as the Realtime API shows it (controller/response_wire.py): response.done's usage."""

from __future__ import annotations

from controller.response_wire import ToolCall, output_texts, usage
from lm_engine.chat import ChatUsage


def test_usage_is_the_lms_counts_with_its_audio_prompt_ids_as_input_audio_and_the_tts_tokens_as_output_audio() -> None:
    counted = ChatUsage(prompt_tokens=30, completion_tokens=5, cached_tokens=12, prompt_audio_tokens=20)
    assert usage(counted, (99, 99, 99), audio_tokens=40) == {
        "total_tokens": 75, "input_tokens": 30, "output_tokens": 45,
        "input_token_details": {"text_tokens": 10, "audio_tokens": 20, "cached_tokens": 12},
        "output_token_details": {"text_tokens": 5, "audio_tokens": 40}}


def test_a_reply_whose_lm_counted_nothing_shows_the_servers_own_counts() -> None:
    assert usage(None, (30, 20, 5), audio_tokens=0) == {
        "total_tokens": 35, "input_tokens": 30, "output_tokens": 5,
        "input_token_details": {"text_tokens": 10, "audio_tokens": 20, "cached_tokens": 0},
        "output_token_details": {"text_tokens": 5, "audio_tokens": 0}}


def test_the_servers_output_count_covers_the_text_and_each_calls_name_and_arguments() -> None:
    calls = [ToolCall("item_1", "call_1", "get_time", '{"tz": "UTC"}'), ToolCall("item_2", "call_2", "hang_up")]
    assert output_texts("", calls) == ["get_time", '{"tz": "UTC"}', "hang_up"]
    assert output_texts("It is noon.", []) == ["It is noon."]
