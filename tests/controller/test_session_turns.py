"""A session's user turns end to end over the real server and wire, with a scripted pipeline (no models): speech
and commits, transcripts, speculation, barge-in and turn detection. Replies themselves (response.create and
cancel, LM failures, refused input, logs, shutdown) are in test_session_replies.py."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time

import numpy as np
import pytest

from controller.response import Response
from tests.controller.scripted_pipeline import (ScriptedPipeline, conversation, push_to_talk_turn, speak_turn, speech,
                                               user_messages)
from tests.e2e.helpers import RATE, silence
from tests.realtime_schema import validate_server_event

NOON = "It is noon. The sun is high. Lunch is soon."


async def test_push_to_talk_reply_hears_the_committed_turn() -> None:
    """turn_detection null: input_audio_buffer.commit then response.create at once (as the browser's push-to-talk
    and the openai SDK example do). The reply must answer what the user said, even while its transcription runs."""
    pipeline = ScriptedPipeline()
    pipeline.asr_seconds = 0.3
    async with conversation(pipeline) as (_, conv):
        await push_to_talk_turn(conv)
        await conv.wait_for("response.done", timeout=10)
    assert [user_messages(r) for r in pipeline.requests] == [["what time is it"]]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_committed_speculation_follows_the_turn_it_answers() -> None:
    """The speculation builds its prompt before the user's turn is committed; its reply must still land after
    that turn, in the conversation (the next prompt's order) and on the wire (previous_item_id)."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (server, conv):
        for _ in range(3):
            await speak_turn(conv)
        metrics = server.metrics.render().decode()
    assert "stepaudio_speculations_committed_total 3.0" in metrics  # every reply was a committed speculation
    roles = [m["role"] for m in pipeline.requests[2].messages if m["role"] != "system"]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    committed = [e["item_id"] for e in conv.of_type("input_audio_buffer.committed")]
    replies = [e for e in conv.of_type("conversation.item.added") if e["item"]["role"] == "assistant"]
    assert [e["previous_item_id"] for e in replies] == committed


async def test_a_reply_that_reads_the_turn_s_audio_ids_does_not_wait_for_its_transcript() -> None:
    """Step-Audio's Chat LM reads a turn as its <audio_N> ids; Whisper's transcript is only for the history and the
    client. The reply (speculative or not) must start on the ids, its audio before the transcript is done; the
    transcript still completes, in the conversation the next reply reads."""
    pipeline = ScriptedPipeline()
    pipeline.heard_as = "<audio_7><audio_9>"
    pipeline.transcript_lag_seconds = 1.5
    async with conversation(pipeline) as (server, conv):
        for push_to_talk in (False, True):  # a committed speculation, then a reply to input_audio_buffer.commit
            n = len(conv.events)
            if push_to_talk:
                await push_to_talk_turn(conv)
            else:
                await speak_turn(conv)
            first_audio = await conv.wait_for("response.output_audio.delta", after=n, timeout=5)
            done = await conv.wait_for("conversation.item.input_audio_transcription.completed", after=n, timeout=5)
            assert conv.time_of(done) - conv.time_of(first_audio) > 0.5, push_to_talk
            assert done["transcript"] == "what time is it"
        metrics = server.metrics.render().decode()
    assert "stepaudio_speculations_committed_total 1.0" in metrics
    assert [user_messages(r) for r in pipeline.requests] == [
        ["<audio_7><audio_9>"], ["what time is it", "<audio_7><audio_9>"]]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_an_audio_item_with_a_split_sample_is_refused_with_an_error() -> None:
    """audio/pcm is whole 16-bit samples: three bytes are bad input. The client must hear so (an error naming its
    event), and no half-made item may join the conversation."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.send({"type": "conversation.item.create", "event_id": "ev_item", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_audio", "audio": "AAAA"}]}})
        error = await conv.wait_for("error", timeout=5)
        n = await conv.ask("what time is it?")
        await conv.wait_for("response.done", after=n, timeout=10)
    assert (error["error"]["code"], error["error"]["event_id"], error["error"]["param"]) == (
        "invalid_audio", "ev_item", "item.content[0].audio")
    assert [e["item"]["content"][0]["type"] for e in conv.of_type("conversation.item.added")
            if e["item"]["role"] == "user"] == ["input_text"]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_an_input_audio_part_with_neither_audio_nor_transcript_is_refused_naming_the_param() -> None:
    """It was accepted as an empty user item (nothing for the LM to hear or read): now an invalid_request_error names
    the part's audio and the event, and no item joins the conversation."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.send({"type": "conversation.item.create", "event_id": "ev_empty", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_audio"}]}})
        error = await conv.wait_for("error", timeout=5)
        n = await conv.ask("what time is it?")
        await conv.wait_for("response.done", after=n, timeout=10)
    assert (error["error"]["type"], error["error"]["code"], error["error"]["param"], error["error"]["event_id"]) == (
        "invalid_request_error", "missing_required_parameter", "item.content[0].audio", "ev_empty")
    assert [e["item"]["content"][0]["type"] for e in conv.of_type("conversation.item.added")
            if e["item"]["role"] == "user"] == ["input_text"]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_an_audio_item_with_other_parts_is_refused_rather_than_losing_them() -> None:
    """A user message of input_text and untranscribed input_audio: the audio's transcript became the item's whole
    text, so the text part was gone from the prompt and from conversation.item.done (added showed two parts, done
    one). It is refused, naming item.content and the event; the audio alone, or with its transcript, is accepted."""
    pipeline = ScriptedPipeline()
    audio = base64.b64encode((speech(0.5) * 32767).astype("<i2").tobytes()).decode()
    mixed = [{"type": "input_text", "text": "Listen:"}, {"type": "input_audio", "audio": audio}]
    async with conversation(pipeline) as (_, conv):
        await conv.send({"type": "conversation.item.create", "event_id": "ev_mixed", "item": {
            "type": "message", "role": "user", "content": mixed}})
        await conv.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
            mixed[0], {"type": "input_audio", "audio": audio, "transcript": "what time is it"}]}})
        done = await conv.wait_for("conversation.item.done", timeout=5)
    errors = [(e["error"]["code"], e["error"]["param"], e["error"]["event_id"]) for e in conv.of_type("error")]
    assert errors == [("invalid_value", "item.content", "ev_mixed")]
    assert [p.get("text") or p.get("transcript") for p in done["item"]["content"]] == ["Listen:", "what time is it"]
    assert len(conv.of_type("conversation.item.added")) == 1
    for raw in conv.raw:
        validate_server_event(raw)


async def test_an_audio_item_sent_with_a_transcript_is_heard_and_shows_the_clients_transcript() -> None:
    """The API sends an input_audio part's transcript not to the model (the openai SDK's words) but to show: the LM
    read the client's transcript and never heard the audio. The LM now reads what the session's ASR hears in the audio
    (in the place of the audio among the item's parts), and the item shows the client's transcript: added, done,
    retrieved, with no transcription events of its own."""
    pipeline = ScriptedPipeline()  # its ASR hears "what time is it" in any speech
    pipeline.asr_seconds = 0.3
    audio = base64.b64encode((speech(0.5) * 32767).astype("<i2").tobytes()).decode()
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        for content in ([{"type": "input_audio", "audio": audio, "transcript": "hello there"}],
                        [{"type": "input_text", "text": "Listen:"},
                         {"type": "input_audio", "audio": audio, "transcript": "hello there"}]):
            n = len(conv.events)
            await conv.send({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": content}})
            await conv.send({"type": "response.create"})
            done = await conv.wait_for("conversation.item.done", after=n, timeout=5)
            await conv.wait_for("response.done", after=n, timeout=10)
            await conv.send({"type": "conversation.item.retrieve", "item_id": done["item"]["id"]})
            retrieved = await conv.wait_for("conversation.item.retrieved", after=n, timeout=5)
            assert [p.get("text") or p.get("transcript") for p in done["item"]["content"]] == [
                p.get("text") or p.get("transcript") for p in content]
            assert retrieved["item"]["content"][0]["transcript"] == " ".join(
                p.get("text") or p.get("transcript") for p in content)
    assert [user_messages(r)[-1] for r in pipeline.requests] == ["what time is it", "Listen: what time is it"]
    assert not [e for e in conv.events if e["type"].startswith("conversation.item.input_audio_transcription")]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_audio_in_response_input_is_heard_with_or_without_a_transcript_and_bad_audio_is_refused() -> None:
    """response.input's items are the prompt of an out-of-band reply; the API takes an input_audio part's audio (its
    transcript is for show). The LM read the client's transcript, and audio sent without one was refused. It now
    reads what the session's ASR hears in the audio, in the place of the audio among the item's parts, as for a
    conversation item; audio that does not decode is refused at response.create, naming the part."""
    pipeline = ScriptedPipeline()  # its ASR hears "what time is it" in any speech
    audio = base64.b64encode((speech(0.5) * 32767).astype("<i2").tobytes()).decode()
    async with conversation(pipeline) as (_, conv):
        for content in ([{"type": "input_audio", "audio": audio}],
                        [{"type": "input_text", "text": "Listen:"},
                         {"type": "input_audio", "audio": audio, "transcript": "hello there"}]):
            n = len(conv.events)
            await conv.send({"type": "response.create", "response": {
                "conversation": "none", "output_modalities": ["text"],
                "input": [{"type": "message", "role": "user", "content": content}]}})
            done = await conv.wait_for("response.done", after=n, timeout=10)
            assert done["response"]["status"] == "completed"
        await conv.send({"type": "response.create", "event_id": "bad", "response": {
            "conversation": "none", "input": [{"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Listen:"}, {"type": "input_audio", "audio": "AA=="}]}]}})
        error = await conv.wait_for("error", timeout=5)
    assert [user_messages(r) for r in pipeline.requests] == [["what time is it"], ["Listen: what time is it"]]
    assert (error["error"]["code"], error["error"]["param"], error["error"]["event_id"]) == (
        "invalid_audio", "response.input[0].content[1].audio", "bad")
    assert len(conv.of_type("response.created")) == 2
    for raw in conv.raw:
        validate_server_event(raw)


async def test_appends_that_split_samples_are_one_byte_stream_and_the_log_says_so_once(caplog) -> None:
    """A client forwarding pipe reads sends appends of any byte count: the audio/pcm appends are one byte stream, so
    the turn is heard whole. The first append that ends mid-sample is logged (a stray byte in a client would shift
    all later audio: the log is where that shows); no error, no second warning."""
    pipeline = ScriptedPipeline()
    pcm = (np.concatenate([speech(1.0), silence(0.3)]) * 32767).astype("<i2").tobytes()
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        for i in range(0, len(pcm), 4801):
            await conv.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i:i + 4801]).decode()})
        await conv.send({"type": "input_audio_buffer.commit"})
        await conv.send({"type": "response.create"})
        done = await conv.wait_for("response.done", timeout=10)
    assert done["response"]["status"] == "completed" and not conv.of_type("error")
    assert [user_messages(r) for r in pipeline.requests] == [["what time is it"]]
    warned = [r.getMessage() for r in caplog.records if "ends mid-sample" in r.getMessage()]
    assert len(warned) == 1 and "4801 bytes" in warned[0], warned


async def test_input_audio_buffer_clear_drops_the_odd_byte_of_a_split_sample() -> None:
    """input_audio_buffer.clear discards the audio sent so far, the odd byte an append left over too: kept, it shifted
    every later sample by a byte, so the session heard noise for its rest (with silero the user was never heard
    again). Here near-silence (samples of 3, -80 dBFS) shifted by a byte is loud enough to be heard as speech."""
    pipeline = ScriptedPipeline()
    hush = np.full(RATE, 3, "<i2").tobytes()
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        await conv.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x00").decode()})
        await conv.send({"type": "input_audio_buffer.clear"})
        await conv.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(hush).decode()})
        await conv.send({"type": "input_audio_buffer.commit"})
        done = await conv.wait_for("conversation.item.input_audio_transcription.completed", timeout=10)
    assert done["transcript"] == ""
    for raw in conv.raw:
        validate_server_event(raw)


@pytest.mark.parametrize("asr_error", [None, "the recogniser went away"])
async def test_an_audio_item_sent_whole_is_done_once_with_its_transcript_or_its_failure(asr_error: str | None) -> None:
    """Every conversation.item.added gets one conversation.item.done: an audio item's comes after its transcription
    (it came twice: at once without the transcript, then with it), and still comes when the transcription fails."""
    pipeline = ScriptedPipeline()
    pipeline.asr_error = asr_error
    audio = base64.b64encode((speech(0.5) * 32767).astype("<i2").tobytes()).decode()
    async with conversation(pipeline) as (_, conv):
        await conv.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_audio", "audio": audio}]}})
        done = await conv.wait_for("conversation.item.done", timeout=5)
        await asyncio.sleep(0.2)
    item_id = conv.of_type("conversation.item.added")[0]["item"]["id"]
    assert [e["item"]["id"] for e in conv.of_type("conversation.item.done")] == [item_id]
    transcripts = [c.get("transcript") for c in done["item"]["content"]]
    if asr_error is None:
        assert transcripts == ["what time is it"]
        assert conv.of_type("conversation.item.input_audio_transcription.completed")
    else:
        assert transcripts == [None]
        assert conv.of_type("conversation.item.input_audio_transcription.failed")
    for raw in conv.raw:
        validate_server_event(raw)


async def test_transcripts_complete_in_the_order_the_turns_were_spoken() -> None:
    """The first turn's speech recognition finishes last: its transcription.completed still comes first (the API
    leaves the order open; a client printing transcripts as they complete prints them as spoken)."""
    pipeline = ScriptedPipeline()
    pipeline.turn_scripts = [(0.4, "ever tried"), (0.0, "ever failed"), (0.1, "no matter")]
    pcm = base64.b64encode((speech(0.3) * 32767).astype("<i2").tobytes()).decode()
    async with conversation(pipeline) as (_, conv):
        await conv.send({"type": "session.update", "session": {"type": "realtime",
                                                               "audio": {"input": {"turn_detection": None}}}})
        for _ in range(3):
            await conv.send({"type": "input_audio_buffer.append", "audio": pcm})
            await conv.send({"type": "input_audio_buffer.commit"})
        # the last turn's (each wait_for from the start found the first one: a slower third went unwaited for)
        await conv.wait_for("conversation.item.input_audio_transcription.completed", timeout=5,
                            where={"transcript": "no matter"})
    committed = [e["item_id"] for e in conv.of_type("input_audio_buffer.committed")]
    done = conv.of_type("conversation.item.input_audio_transcription.completed")
    assert [(e["item_id"], e["transcript"]) for e in done] == list(zip(committed, ["ever tried", "ever failed",
                                                                                   "no matter"]))


async def test_a_commit_of_100_ms_is_accepted_and_a_shorter_one_refused_with_its_true_length() -> None:
    """The API's floor is 100 ms of audio; the resampler's filter held ~9 ms back, so exactly 100 ms was refused as
    "91ms". The refusal names what the buffer really holds."""
    def pcm(ms: int) -> str:
        return base64.b64encode((speech(ms / 1000) * 32767).astype("<i2").tobytes()).decode()

    async with conversation(ScriptedPipeline()) as (_, conv):
        await conv.send({"type": "session.update", "session": {"type": "realtime",
                                                               "audio": {"input": {"turn_detection": None}}}})
        await conv.send({"type": "input_audio_buffer.append", "audio": pcm(90)})
        await conv.send({"type": "input_audio_buffer.commit", "event_id": "short"})
        err = await conv.wait_for("error", timeout=5)
        assert (err["error"]["code"], err["error"]["event_id"]) == ("input_audio_buffer_commit_empty", "short")
        assert "buffer only has 90ms" in err["error"]["message"], err
        await conv.send({"type": "input_audio_buffer.clear"})
        await conv.send({"type": "input_audio_buffer.append", "audio": pcm(100)})
        await conv.send({"type": "input_audio_buffer.commit"})
        await conv.wait_for("input_audio_buffer.committed", timeout=5)
    assert len(conv.of_type("error")) == 1


async def test_what_the_user_says_while_a_requested_reply_starts_is_kept() -> None:
    """The client sends response.create (after a text item, as after a tool result) while the user is speaking.
    The reply goes ahead; the user's speech must still end in speech_stopped and a committed, transcribed turn
    that later replies hear."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.stream(speech(0.6), pace=0)
        await conv.wait_for("input_audio_buffer.speech_started")
        n = await conv.ask("the weather tool says: sunny")
        await conv.stream(np.concatenate([speech(0.6), silence(0.8)]), pace=0)
        await conv.wait_for("conversation.item.input_audio_transcription.completed", timeout=10)
        first = await conv.wait_for("response.done", after=n, timeout=10)
        owed = await conv.wait_for("response.done", after=conv.events.index(first) + 1, timeout=10)
    assert len(conv.of_type("input_audio_buffer.speech_stopped")) == 1
    assert len(conv.of_type("input_audio_buffer.committed")) == 1
    assert first["response"]["status"] == "completed"  # the requested reply was not interrupted
    # The turn got its own reply after it, which heard it last.
    assert owed["response"]["status"] == "completed"
    assert user_messages(pipeline.requests[-1])[-1] == "what time is it"
    assert len(conv.of_type("response.created")) == 2
    for raw in conv.raw:
        validate_server_event(raw)


async def test_clearing_the_buffer_mid_turn_drops_the_speculation_and_the_next_speech_starts_a_turn() -> None:
    """The clear comes while the VAD hears the user: their speech_started is answered by a speech_stopped at the
    clear (it stayed unanswered: a client's started/stopped pairs went out of balance), and what they say next is a
    turn with its own pair, under an item id of its own (it had the cleared speech's, as if both were one item)."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.stream(np.concatenate([speech(1.0), silence(0.3)]), pace=0)  # a pause: a speculation starts
        await asyncio.sleep(0.2)
        await conv.send({"type": "input_audio_buffer.clear"})
        await conv.wait_for("input_audio_buffer.cleared")
        await conv.stream(np.concatenate([speech(0.6), silence(0.8)]), pace=0)
        done = await conv.wait_for("response.done", timeout=10)
    buffer = [e for e in conv.events if e["type"].startswith("input_audio_buffer.")]
    assert [e["type"] for e in buffer] == [
        "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "input_audio_buffer.cleared",
        "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "input_audio_buffer.committed"]
    assert buffer[0]["item_id"] == buffer[1]["item_id"] and buffer[3]["item_id"] == buffer[4]["item_id"]
    assert buffer[3]["item_id"] != buffer[0]["item_id"] and buffer[5]["item_id"] == buffer[3]["item_id"]
    assert 1200 <= buffer[1]["audio_end_ms"] <= 1400  # where the clear cut the buffer: 1.3 s streamed
    assert done["response"]["status"] == "completed"
    assert len(conv.of_type("response.created")) == 1
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_user_turn_deleted_while_it_is_transcribed_is_gone_for_the_client_and_the_reply() -> None:
    """The client deletes the user's turn right after input_audio_buffer.committed, while its transcription runs
    (before any response.created). After conversation.item.deleted, nothing more may come about that item (no
    transcript, no conversation.item.done bringing it back), and the reply must not answer it or follow it."""
    pipeline = ScriptedPipeline()
    pipeline.asr_seconds = 0.5
    async with conversation(pipeline) as (_, conv):
        await conv.stream(np.concatenate([speech(1.0), silence(0.8)]), pace=0)
        committed = await conv.wait_for("input_audio_buffer.committed", timeout=5)
        await conv.send({"type": "conversation.item.delete", "item_id": committed["item_id"]})
        deleted = await conv.wait_for("conversation.item.deleted", timeout=5)
        await conv.wait_for("response.done", timeout=10)
        await asyncio.sleep(0.3)  # the transcription has long finished
    after = conv.events[conv.events.index(deleted) + 1:]
    assert [e["type"] for e in after if committed["item_id"] in (e.get("item_id"), e.get("item", {}).get("id"),
                                                                  e.get("previous_item_id"))] == []
    assert [user_messages(r) for r in pipeline.requests] == [[]]
    assert not conv.of_type("error")
    for raw in conv.raw:
        validate_server_event(raw)


async def test_with_interrupt_response_off_the_user_speaking_over_a_reply_is_a_turn_and_the_reply_goes_on() -> None:
    """turn_detection.interrupt_response false: the Realtime API still emits the VAD events and only leaves the reply
    uncancelled. What the user says over the reply must be a committed, transcribed turn that later replies hear."""
    pipeline = ScriptedPipeline()
    pipeline.reply_words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                            "twelve."]
    pipeline.word_seconds = 0.05
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                      "interrupt_response": False}}})
        n = await conv.ask("count to twelve")
        await conv.wait_for("response.output_audio.delta", after=n, timeout=10)
        await conv.stream(np.concatenate([speech(0.6), silence(0.8)]), pace=0)
        transcribed = await conv.wait_for("conversation.item.input_audio_transcription.completed", timeout=10)
        done = await conv.wait_for("response.done", after=n, timeout=10)
        owed = await conv.wait_for("response.done", after=conv.events.index(done) + 1, timeout=10)
    assert done["response"]["status"] == "completed"
    assert [len(conv.of_type(t)) for t in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                                           "input_audio_buffer.committed")] == [1, 1, 1]
    assert transcribed["transcript"] == "what time is it"
    # The question spoken over the reply is answered once that reply has finished, and its reply heard it last.
    assert owed["response"]["status"] == "completed"
    assert user_messages(pipeline.requests[-1])[-1] == "what time is it"
    assert len(conv.of_type("response.created")) == 2
    # On the wire the spoken turn follows the reply it was spoken over, as in the conversation the LM is given
    # (it said the item before the reply, which joins the conversation only when it ends).
    spoken_over = conv.of_type("input_audio_buffer.committed")[0]
    assert spoken_over["previous_item_id"] == done["response"]["output"][0]["id"]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_barge_in_reports_the_speech_before_the_reply_it_cancels(caplog) -> None:
    """server_vad with interrupt_response: the API cancels the reply "when a VAD start event occurs", so the client
    hears of the speech (input_audio_buffer.speech_started, on which it stops its playback) before the reply's
    response.done (cancelled, turn_detected) and conversation.item.truncated; they had come the other way round.
    The server's log has a line for the cancelled reply, as for every other (it had none)."""
    caplog.set_level(logging.INFO)
    pipeline = ScriptedPipeline()
    pipeline.reply_words = NOON.split()
    pipeline.word_seconds = 0.1
    async with conversation(pipeline) as (_, conv):
        n = await conv.ask("what time is it?")
        delta = await conv.wait_for("response.output_audio.delta", after=n, timeout=10)
        await conv.stream(np.concatenate([speech(0.6), silence(0.8)]), pace=0)
        truncated = await conv.wait_for("conversation.item.truncated", after=n, timeout=10)
    started = conv.of_type("input_audio_buffer.speech_started")[0]
    done = conv.of_type("response.done")[0]
    assert done["response"]["id"] == delta["response_id"]
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    assert truncated["item_id"] == delta["item_id"]
    assert conv.events.index(started) < conv.events.index(done) < conv.events.index(truncated)
    assert any(r.getMessage().startswith(f"response {delta['response_id']} cancelled (barge_in, ") for r in
               caplog.records), [r.getMessage() for r in caplog.records]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_client_that_truncates_the_reply_spoken_over_gets_the_answer_to_what_the_user_said() -> None:
    """interrupt_response false and a client that does its own barge-in: the user speaks over the reply, the client
    stops playing it and truncates its message at what it played. The reply stops there (cancelled, no more audio),
    and the question spoken over it is answered next, by a reply that heard only the words played before it."""
    pipeline = ScriptedPipeline()
    pipeline.reply_words = ["one", "two", "three.", "four", "five", "six.", "seven", "eight", "nine."]
    pipeline.word_seconds = 0.1
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                      "interrupt_response": False}}})
        n = await conv.ask("count to nine")
        delta = await conv.wait_for("response.output_audio.delta", after=n, timeout=10)
        await conv.stream(np.concatenate([speech(0.6), silence(0.8)]), pace=0)
        await conv.wait_for("input_audio_buffer.committed", after=n, timeout=10)
        await conv.send({"type": "conversation.item.truncate", "item_id": delta["item_id"], "content_index": 0,
                         "audio_end_ms": 100})
        truncated = await conv.wait_for("conversation.item.truncated", after=n, timeout=5)
        answer = await conv.wait_for("response.done", after=conv.events.index(truncated), timeout=10)
    assert not conv.of_type("error"), conv.of_type("error")
    cut = conv.of_type("response.done")[0]
    assert cut["response"]["id"] == delta["response_id"] and cut["response"]["status"] == "cancelled"
    assert conv.events.index(cut) < conv.events.index(truncated) < conv.events.index(answer)
    assert not [e for e in conv.events[conv.events.index(cut):] if e.get("response_id") == delta["response_id"]]
    assert answer["response"]["status"] == "completed"
    prompt = [(m["role"], m["content"]) for m in pipeline.requests[-1].messages if m["role"] != "system"]
    assert prompt == [("user", "count to nine"), ("assistant", "one two"), ("user", "what time is it")]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_turn_detection_update_in_the_silence_after_speech_still_ends_that_turn() -> None:
    """The client retunes server_vad (a longer silence) between the user's last word and the end of their turn.
    The turn must still end, under the new silence, and get its reply (it used to stay open until they spoke again)."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.stream(np.concatenate([speech(0.8), silence(0.15)]), pace=0)
        await conv.wait_for("input_audio_buffer.speech_started")
        await conv.update_session(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                      "silence_duration_ms": 700}}})
        await conv.stream(silence(1.0), pace=0)
        stopped = await conv.wait_for("input_audio_buffer.speech_stopped", timeout=10)
        await conv.wait_for("response.done", timeout=10)
    assert 750 <= stopped["audio_end_ms"] <= 900
    assert len(conv.of_type("input_audio_buffer.speech_started")) == 1
    assert user_messages(pipeline.requests[-1])[-1] == "what time is it"


async def test_a_commit_while_the_user_speaks_ends_the_turn_there_and_what_follows_is_the_next_turn() -> None:
    """The turn the commit ends gets its speech_stopped, at the commit, before its committed: it had none (its
    speech_started stayed unanswered), and a client counting speech as started and not stopped was left in it."""
    pipeline = ScriptedPipeline()
    pipeline.transcript = ""  # replies would need something said: this test is about the turns only
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                      "create_response": False}}})
        await conv.stream(speech(0.8), pace=0)
        await conv.wait_for("input_audio_buffer.speech_started")
        await conv.send({"type": "input_audio_buffer.commit"})
        first = await conv.wait_for("input_audio_buffer.committed", timeout=5)
        await conv.stream(np.concatenate([speech(0.8), silence(0.8)]), pace=0)
        second = await conv.wait_for("input_audio_buffer.committed", after=conv.events.index(first) + 1, timeout=10)
    started = conv.of_type("input_audio_buffer.speech_started")
    stopped = conv.of_type("input_audio_buffer.speech_stopped")
    assert len(started) == 2 and len(stopped) == 2
    assert started[0]["item_id"] == stopped[0]["item_id"] == first["item_id"]
    assert conv.events.index(stopped[0]) < conv.events.index(first) and stopped[0]["audio_end_ms"] == 800
    assert started[1]["item_id"] == stopped[1]["item_id"] == second["item_id"] != first["item_id"]
    assert 1500 <= stopped[1]["audio_end_ms"] <= 1700
    assert not conv.of_type("error")
    for raw in conv.raw:
        validate_server_event(raw)


async def test_an_idle_timeout_marks_the_silence_after_the_reply_and_the_assistant_speaks_again() -> None:
    """turn_detection.idle_timeout_ms: after a reply, silence as long as the timeout ends in timeout_triggered, whose
    audio_start_ms..audio_end_ms is that silence (the Realtime API: "the segment of audio after the last model
    response up to the triggering time", about the timeout long), an empty committed turn, and a new reply."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                      "idle_timeout_ms": 1000}}})
        await conv.stream(silence(2.0), pace=0)  # the user listens for a while first
        n = await conv.ask("hello")
        await conv.wait_for("response.done", after=n, timeout=10)
        streaming = asyncio.create_task(conv.stream(silence(3.0), pace=1.0))
        triggered = await conv.wait_for("input_audio_buffer.timeout_triggered", after=n, timeout=10)
        committed = await conv.wait_for("input_audio_buffer.committed", after=n, timeout=10)
        done = await conv.wait_for("response.done", after=conv.events.index(triggered), timeout=10)
        streaming.cancel()
    assert done["response"]["output"] and len(pipeline.requests) == 2, done  # the assistant speaks again
    assert triggered["audio_start_ms"] >= 1900  # after the reply, not the start of the session's audio
    assert 700 <= triggered["audio_end_ms"] - triggered["audio_start_ms"] <= 1400, triggered
    assert committed["item_id"] == triggered["item_id"]


async def test_a_committed_speculation_cut_at_once_by_new_speech_counts_as_committed_not_rolled_back() -> None:
    """The end of the turn commits the speculation and the user speaks again in the same audio append, before the
    committed reply has sent anything: a barge-in on a committed reply. /metrics must count it as committed only
    (it also counted a rollback, so committed + rolled back exceeded started); a speech resumption during the
    pause, before any commit, is the rollback."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (server, conv):
        await conv.stream(np.concatenate([speech(1.0), silence(0.3)]), pace=0)  # pause: speculation 1
        await asyncio.sleep(0.3)
        await conv.stream(np.concatenate([speech(0.5), silence(0.3)]), pace=0)  # resumed: rolled back; 2 starts
        await asyncio.sleep(0.3)
        await conv.stream(np.concatenate([silence(0.5), speech(1.0)]), pace=0)  # end of turn, then speech again
        await conv.wait_for("input_audio_buffer.speech_started", after=len(conv.events) - 1, timeout=5)
        await asyncio.sleep(0.3)
        metrics = server.metrics.render().decode()
    counts = {k: float(m.group(1)) for k in ("started", "committed", "rolled_back")
              if (m := re.search(rf"^stepaudio_speculations_{k}_total (\S+)$", metrics, re.M))}
    assert counts == {"started": 2.0, "committed": 1.0, "rolled_back": 1.0}
    # The committed turn's reply is a response the client saw: created at the commit, then cancelled by the speech
    # (it got none at all, so the client could not tell a turn answered and cut from one never answered).
    committed = conv.of_type("input_audio_buffer.committed")
    created, done = conv.of_type("response.created"), conv.of_type("response.done")
    assert len(committed) == len(created) == len(done) == 1, [e["type"] for e in conv.events]
    assert conv.events.index(committed[0]) < conv.events.index(created[0])
    assert done[0]["response"]["id"] == created[0]["response"]["id"]
    assert done[0]["response"]["status"] == "cancelled"
    assert done[0]["response"]["status_details"]["reason"] == "turn_detected"
    assert done[0]["response"]["output"] == []
    for raw in conv.raw:
        validate_server_event(raw)


async def test_silence_between_turns_is_not_kept_and_the_next_turn_still_has_its_padding() -> None:
    """A session whose microphone sends only silence held up to 300 s of it (and, at that limit, copied all of it on
    every append): between turns only the next speech start's prefix padding is ever read back."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (app, conv):
        [session] = app.sessions.values()
        await conv.stream(silence(40.0), pace=0)
        # answered in order, after every append above: a sync point that touches no audio
        await conv.send({"type": "conversation.item.retrieve", "item_id": "sync", "event_id": "sync"})
        await conv.wait_for("error")
        assert session.audio.kept_seconds < 8.0
        await conv.stream(np.concatenate([speech(0.8), silence(0.8)]), pace=0)
        started = await conv.wait_for("input_audio_buffer.speech_started")
        await conv.wait_for("input_audio_buffer.committed", timeout=10)
    # the speech began 40 s in; its start carries the 300 ms of padding before it
    assert 39_500 <= started["audio_start_ms"] <= 40_000, started


async def test_a_minute_of_audio_in_one_append_does_not_hold_the_server_for_its_whole_vad_pass() -> None:
    """One client sends a minute of audio in one input_audio_buffer.append (the API allows 15 MiB events). Its pass
    through the real silero VAD took the event loop for its whole length, every other session's audio and events
    stalled meanwhile; heard a second at a time, the loop is free between. The server runs in this test's loop: a
    ticker measures the longest time it could not run."""
    from vad import SileroModel, SileroVad

    model = SileroModel.load()
    pipeline = ScriptedPipeline()
    pipeline.new_vad = lambda: SileroVad(model)  # type: ignore[method-assign]
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                      "create_response": False}}})
        gaps: list[float] = []

        async def tick() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.002)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        began = time.monotonic()
        pcm = (np.clip(speech(60.0), -1, 1) * 32767).astype("<i2").tobytes()
        await conv.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
        await conv.send({"type": "input_audio_buffer.clear"})
        await conv.wait_for("input_audio_buffer.cleared", timeout=60)
        took = time.monotonic() - began
        ticker.cancel()
    assert max(gaps) < took / 3, (max(gaps), took)


async def test_a_barge_in_while_a_finished_speculation_s_audio_is_paced_out_closes_what_the_client_saw_open() -> None:
    """A speculation that generated its whole reply during the pause holds its closing events behind its audio; the
    commit releases them at playback pace. The user spoke over it while the audio went out: response.done (cancelled)
    came with no output_audio.done, content_part.done, output_item.done nor conversation.item.done for the message
    the client had seen added, which a client waiting for them (to finish its transcript, free its player) never got.
    The reply now closes what it opened, as any reply cancelled mid-way."""
    pipeline = ScriptedPipeline()
    pipeline.reply_words = NOON.split() * 3  # 3 s of speech, paced out in real time
    async with conversation(pipeline) as (_, conv):
        await conv.stream(np.concatenate([speech(1.0), silence(0.3)]), pace=0)  # pause: the whole reply is made
        await asyncio.sleep(0.5)
        await conv.stream(silence(0.5), pace=0)  # end of turn: committed and released
        delta = await conv.wait_for("response.output_audio.delta", timeout=10)
        await conv.stream(np.concatenate([speech(0.6), silence(0.8)]), pace=0)  # barge-in
        done = await conv.wait_for("response.done", timeout=10)
    assert done["response"]["status"] == "cancelled", done
    mine = [e["type"] for e in conv.events if e.get("response_id") == delta["response_id"]
            or e.get("item", {}).get("id") == delta["item_id"]]
    assert mine[-4:] == ["response.output_audio_transcript.done", "response.content_part.done",
                         "response.output_item.done", "conversation.item.done"], mine
    assert mine.count("response.output_audio.done") == 1, mine
    assert [o["status"] for o in done["response"]["output"]] == ["incomplete"]
    assert [e["item"]["status"] for e in conv.of_type("conversation.item.done")
            if e["item"]["id"] == delta["item_id"]] == ["incomplete"]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_barge_in_just_after_a_reply_s_response_done_does_not_end_it_a_second_time(monkeypatch) -> None:
    """A speculation's release sends its response.done; the session takes the reply off its list when the reply's
    task next runs. A barge-in handled in between (the event loop busy with other sessions: here, the task is made
    to wait) cancelled the finished reply: a second response.done for the same response, cancelled after completed,
    and its message truncated as if it had been cut. A reply whose response.done is out is over for the client, as
    it is for a barge-in a moment later."""
    wait_released = Response.wait_released

    async def slow_to_resume(self: Response) -> None:
        await wait_released(self)
        await asyncio.sleep(1.0)

    monkeypatch.setattr(Response, "wait_released", slow_to_resume)
    async with conversation(ScriptedPipeline()) as (_, conv):
        await conv.stream(np.concatenate([speech(1.0), silence(0.3)]), pace=0)  # pause: the whole reply is made
        await asyncio.sleep(0.5)
        await conv.stream(silence(0.5), pace=0)  # end of turn: committed and released
        done = await conv.wait_for("response.done", timeout=10)
        await conv.stream(np.concatenate([speech(0.6), silence(0.8)]), pace=0)  # barge-in
        await conv.wait_for("input_audio_buffer.committed", after=conv.events.index(done), timeout=10)
        await asyncio.sleep(1.5)
    rid = done["response"]["id"]
    assert [e["response"]["status"] for e in conv.of_type("response.done") if e["response"]["id"] == rid] == \
        ["completed"]
    assert not conv.of_type("conversation.item.truncated")
    for raw in conv.raw:
        validate_server_event(raw)
