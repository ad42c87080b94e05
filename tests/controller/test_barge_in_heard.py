"""What a barge-in keeps of the reply, over the real server and wire (scripted pipeline): the words the client had
played when the user spoke, also when the reply's audio came with gaps (a chat LM slower than real time)."""

from __future__ import annotations

import asyncio
import base64
import time

import numpy as np

from tests.controller.scripted_pipeline import ScriptedPipeline, conversation, speech
from tests.e2e.helpers import RATE, silence

FIRST = "Once upon a time."
SECOND = ("There lived a keeper in a lighthouse on a rock far out at sea and every night he lit the lamp for the "
          "ships that passed in the dark until the morning came.")


def played_seconds(arrivals: list[tuple[float, float]], at: float) -> float:
    """What a client that plays audio as it arrives, at real time, idling when it runs dry, has played by `at`."""
    end = played = 0.0
    for t, seconds in arrivals:
        if t > at:
            break
        start = max(t, end)
        end = start + seconds
        played += max(0.0, min(at, end) - start)
    return played


async def test_a_barge_in_after_a_gap_in_the_reply_s_audio_keeps_only_what_the_client_played() -> None:
    """The second sentence comes seconds after the first has played (the LM is slower than speech). The user speaks
    0.4 s into it, while the client plays it: the server's own truncation must be where the client is (0.2 s of the
    first sentence, 0.4 s of the second), not the whole second sentence sent at once after the gap (which had ended
    the reply on the server with nothing truncated), and the conversation must not hold the unheard rest."""
    pipeline = ScriptedPipeline()
    pipeline.reply_words = (FIRST + " " + SECOND).split()
    pipeline.word_seconds = 0.1  # 50 ms of speech a word: the LM takes twice as long as the audio lasts
    async with conversation(pipeline) as (_, conv):
        n = await conv.ask("tell me a story")
        second = await conv.wait_for("response.output_audio_transcript.delta", after=n, timeout=20,
                                     where={"delta": " " + SECOND})
        first_after = await conv.wait_for("response.output_audio.delta", after=conv.events.index(second), timeout=20)
        await asyncio.sleep(0.4 - (time.monotonic() - conv.time_of(first_after)))
        spoke_at = time.monotonic()
        await conv.stream(np.concatenate([speech(0.6), silence(0.8)]), pace=0)
        await conv.wait_for("input_audio_buffer.committed", after=n, timeout=10)
        cut = conv.of_type("conversation.item.truncated")
        assert cut, "no truncation: the reply had ended on the server while the client still played it"
        truncated = cut[0]
        await conv.send({"type": "conversation.item.retrieve", "item_id": truncated["item_id"]})
        item = (await conv.wait_for("conversation.item.retrieved", after=n, timeout=5))["item"]
    arrivals = [(conv.time_of(e), len(base64.b64decode(e["delta"])) / 2 / RATE)
                for e in conv.of_type("response.output_audio.delta")]
    first_sentence_over = played_seconds(arrivals, conv.time_of(first_after) - 0.001)
    assert conv.time_of(first_after) - conv.time_of(conv.of_type("response.output_audio.delta")[0]) > \
        first_sentence_over + 1.0  # the gap is there: the listener waited a second or more for the second sentence
    # Between what had played when the user spoke and when the client heard of the speech (the server's VAD ran then)
    heard_of = conv.time_of(conv.of_type("input_audio_buffer.speech_started")[0])
    low, high = played_seconds(arrivals, spoke_at), played_seconds(arrivals, heard_of)
    assert low - 0.15 < truncated["audio_end_ms"] / 1000 < high + 0.15, (truncated["audio_end_ms"], low, high)
    heard = item["content"][0]["transcript"]
    assert heard.startswith(FIRST) and not heard.endswith("came."), heard
    assert len(heard) < len(FIRST) + len(SECOND) / 2, heard


async def test_a_barge_in_mid_sentence_keeps_the_words_played_with_a_tts_that_streams_the_sentence() -> None:
    """The scripted synthesiser streams a sentence word by word (50 ms each), as Step-Audio's TTS streams its
    audio in pieces. Cut 0.45 s into a long sentence, the reply must keep about the words played: the text was cut
    against the sentence's audio made so far, which synthesis pulled at the pace of playback had kept just ahead of
    the cut, so twice the words heard were kept."""
    pipeline = ScriptedPipeline()
    pipeline.reply_words = SECOND.split()
    async with conversation(pipeline) as (_, conv):
        n = await conv.ask("tell me a story")
        await conv.wait_for("response.output_audio.delta", after=n, timeout=10)
        await asyncio.sleep(0.45)
        await conv.stream(np.concatenate([speech(0.6), silence(0.8)]), pace=0)
        truncated = await conv.wait_for("conversation.item.truncated", after=n, timeout=10)
        await conv.send({"type": "conversation.item.retrieve", "item_id": truncated["item_id"]})
        item = (await conv.wait_for("conversation.item.retrieved", after=n, timeout=5))["item"]
    played_words = truncated["audio_end_ms"] / 50
    kept = item["content"][0]["transcript"].split()
    assert 4 <= played_words < len(SECOND.split()) / 2, truncated
    assert abs(len(kept) - played_words) <= 2, (truncated["audio_end_ms"], kept)
