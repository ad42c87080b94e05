"""Replies cut, failed or left unfinished, and what Disconnect leaves of them, in real headless Chromium (see
test_browser_page.py for the setup)."""

from __future__ import annotations

import base64
import re
import time

import pytest

from tests.conftest import ServerProcess
from tests.web.browser import (
    SEND_TYPED,
    connect_page,
    hook,
    page_text,
    wait_until,
)
from tests.web.fake_realtime import fake_realtime_server, send, send_spoken_reply

pytestmark = pytest.mark.slow


def test_a_reply_cut_before_its_first_words_is_not_a_blank_bubble(embedded_server: ServerProcess,
                                                                   browser: object) -> None:
    """A second typed message sent as the first one's reply begins cancels that reply before it has said anything:
    its bubble showed 'assistant' over nothing at all, which reads as a page fault. It says '(nothing said)'."""
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(f"{embedded_server.http}/?mode=ptt")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    state = wait_until(driver, lambda s: s["state"] == "ready", 60)
    send = ("const m = document.getElementById('message'); m.value = arguments[0];"
            "document.getElementById('compose').requestSubmit();")
    driver.execute_script(send, "Hello there.")  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not hook(driver)["events"].get("response.output_item.added"):
        time.sleep(0.01)
    driver.execute_script(send, "What is two plus two?")  # type: ignore[attr-defined]
    state = wait_until(driver, lambda s: s["events"].get("response.done", 0) >= 2, 90)
    context = f"page: { {k: v for k, v in state.items() if k != 'events'} }"
    assert state["errors"] == [], context
    bubbles = driver.find_elements(By.CSS_SELECTOR, ".turn.assistant")  # type: ignore[attr-defined]
    replies = [b.find_element(By.CSS_SELECTOR, ".text").text for b in bubbles]
    # On two busy cores the first reply is cut before its first words (its transcript is empty); on a faster machine
    # it may have said some, and then its bubble shows them: those played, if it was cut while playing.
    said = [state["heard"].get(b.get_attribute("data-item"), t) for b, t in zip(bubbles, state["assistantTranscripts"])]
    assert replies == [t or "(nothing said)" for t in said], (replies, context)


def test_a_reply_cut_while_it_plays_shows_only_the_words_played(tiny_server: ServerProcess, browser: object) -> None:
    """A new message sent while the reply played cut it (conversation.item.truncate at the ms played), and the server
    kept only the words heard; the reply's bubble went on showing every word of its transcript, those never played
    too. It shows the words the server kept (asked for with conversation.item.retrieve), marked as interrupted."""
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(f"{tiny_server.http}/?mode=ptt")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    wait_until(driver, lambda s: s["state"] == "ready", 60)
    send = ("const m = document.getElementById('message'); m.value = arguments[0];"
            "document.getElementById('compose').requestSubmit();")
    driver.execute_script(send, "Tell me a story.")  # type: ignore[attr-defined]
    wait_until(driver, lambda s: s["playedSeconds"] >= 0.3, 60)  # the tiny profile's reply is about 1 s of audio
    driver.execute_script(send, "Stop.")  # type: ignore[attr-defined]
    state = wait_until(driver, lambda s: s.get("heard") and s["assistantTranscripts"], 30)
    context = f"page: { {k: v for k, v in state.items() if k != 'timeline'} }\nserver: {tiny_server.log()[-2000:]}"
    assert state["errors"] == [] and len(state["truncates"]) == 1, context
    cut = state["truncates"][0]
    assert cut["droppedMs"] > 0, context  # some of the reply was never played
    full = state["assistantTranscripts"][0]
    bubble = driver.find_element(By.CSS_SELECTOR, f'.turn.assistant[data-item="{cut["item"]}"]')  # type: ignore
    shown = bubble.find_element(By.CSS_SELECTOR, ".text").text
    assert shown == "(nothing said)" or (len(shown) < len(full) and full.startswith(shown)), (shown, context)
    assert shown == (state["heard"][cut["item"]] or "(nothing said)"), context  # what the server's item says
    assert "cut" in bubble.get_attribute("class").split(), context
    assert bubble.find_element(By.CSS_SELECTOR, ".note").text == \
        f"interrupted after {cut['audioEndMs'] / 1000:.2f} s", context
    assert len(driver.find_elements(By.CSS_SELECTOR, ".turn.cut")) == 1, context  # type: ignore[attr-defined]


def test_a_message_the_session_ended_under_is_kept_and_said_unsent(tiny_server: ServerProcess,
                                                                   browser: object) -> None:
    """Enter, and the session ended while the page flushed the playback before sending (Disconnect here, the same
    click's turn; a server closing does it too): sending threw 'Cannot read properties of null' in the console,
    and the typed text was gone from the box, with nothing on the page to say it was never sent. The text goes back
    into the box and a line says it was not sent."""
    connect_page(browser, tiny_server.http)
    browser.execute_script(SEND_TYPED + "document.getElementById('connect').click();",  # type: ignore[attr-defined]
                           "Hello there.")
    state = wait_until(browser, lambda s: s["state"] == "idle" and s["errors"], 10)
    severe = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]  # type: ignore[attr-defined]
    shown = "your message was not sent: the session ended first (it is back in the message box)"
    assert state["errors"] == [shown] and page_text(browser, "#errors li") == shown, (state, severe)
    box = browser.execute_script("return document.getElementById('message').value")  # type: ignore[attr-defined]
    assert box == "Hello there.", state
    assert severe == [] and state["typed"] == [], (state, severe)


def test_a_cut_reply_whose_transcript_the_server_dropped_does_not_show_every_word(tiny_server: ServerProcess,
                                                                                  browser: object) -> None:
    """OpenAI's server deletes the transcript of a reply cut by conversation.item.truncate. The page asked for the
    cut item, found no transcript, and left the bubble whole: every word of the reply, those never played too,
    under 'interrupted after ... s'. It says that no words were kept."""
    from selenium.webdriver.common.by import By

    story = "Once upon a time there was a cat who sang all night long, and nobody in the town could sleep."
    replied: list[bool] = []

    def reply_then_drop_the_transcript(ws: object, event: dict) -> None:
        if event["type"] == "response.create" and not replied:
            replied.append(True)
            send(ws, "response.created", response={"id": "resp_1", "status": "in_progress"})
            send(ws, "response.output_item.added", item={"id": "item_reply", "type": "message", "role": "assistant"})
            send(ws, "response.output_audio_transcript.delta", item_id="item_reply", delta=story)
            chunk = base64.b64encode(bytes(4800)).decode()  # 100 ms of 24 kHz PCM16 silence
            for _ in range(80):
                send(ws, "response.output_audio.delta", item_id="item_reply", delta=chunk)
        elif event["type"] == "conversation.item.truncate":
            send(ws, "conversation.item.truncated", item_id=event["item_id"], content_index=0,
                 audio_end_ms=event["audio_end_ms"])
        elif event["type"] == "conversation.item.retrieve":
            send(ws, "conversation.item.retrieved", item={"id": event["item_id"], "type": "message",
                                                          "role": "assistant", "content": [{"type": "output_audio"}]})

    with fake_realtime_server(reply_then_drop_the_transcript) as url:
        connect_page(browser, tiny_server.http, f"mode=ptt&url={url}")
        browser.execute_script(SEND_TYPED, "Tell me a story.")  # type: ignore[attr-defined]
        wait_until(browser, lambda s: s["playedSeconds"] >= 0.5, 30)
        browser.execute_script(SEND_TYPED, "Stop.")  # type: ignore[attr-defined]
        state = wait_until(browser, lambda s: s["events"].get("conversation.item.retrieved"), 30)
    bubble = browser.find_element(By.CSS_SELECTOR, '.turn.assistant[data-item="item_reply"]')  # type: ignore
    assert state["errors"] == [] and len(state["truncates"]) == 1, state
    assert bubble.find_element(By.CSS_SELECTOR, ".text").text == "(the server kept no transcript of what was played)"
    assert "cut" in bubble.get_attribute("class").split(), state
    assert bubble.find_element(By.CSS_SELECTOR, ".note").text.startswith("interrupted after "), state


def test_push_to_talk_over_a_reply_not_yet_heard_leaves_none_of_its_words(tiny_server: ServerProcess,
                                                                          browser: object) -> None:
    """Push-to-talk pressed while a reply was being made, before any of it played, cancelled it, but the reply's bubble
    showed the words generated so far and the server kept them as said: the next answer followed words the user never
    heard. The page truncates such a reply at 0 ms, the server keeps nothing of it, and the bubble says so."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    # A jitter buffer longer than any tiny reply: nothing plays before the press.
    connect_page(browser, tiny_server.http, "mode=ptt&prebuffer_ms=60000")
    browser.execute_script(SEND_TYPED, "Tell me a long story about a cat.")  # type: ignore[attr-defined]
    state = wait_until(browser, lambda s: s["events"].get("response.output_audio_transcript.delta"), 60)
    assert not state["events"].get("response.done") and state["playedSeconds"] == 0, state
    talk = browser.find_element(By.ID, "talk")  # type: ignore[attr-defined]
    ActionChains(browser).click_and_hold(talk).perform()
    state = wait_until(browser, lambda s: s["heard"], 30)
    ActionChains(browser).release(talk).perform()
    context = f"page: { {k: v for k, v in state.items() if k != 'timeline'} }\nserver: {tiny_server.log()[-2000:]}"
    assert state["errors"] == [] and [t["audioEndMs"] for t in state["truncates"]] == [0], context
    item = state["truncates"][0]["item"]
    assert state["heard"] == {item: ""}, context  # the server's item: no words kept
    bubble = browser.find_element(By.CSS_SELECTOR, f'.turn.assistant[data-item="{item}"]')  # type: ignore
    assert bubble.find_element(By.CSS_SELECTOR, ".text").text == "(nothing said)", context
    assert bubble.find_element(By.CSS_SELECTOR, ".note").text == "interrupted after 0.00 s", context


def test_a_failed_reply_is_shown_once(tiny_server: ServerProcess, browser: object) -> None:
    """A reply whose model failed ends, on stepaudio-rt, with response.done 'failed' and then an error event
    (response_failed) about the same failure: the page showed two red lines for one failure. It shows one."""
    def fail_the_reply(ws: object, event: dict) -> None:
        if event["type"] != "response.create":
            return
        send(ws, "response.created", response={"id": "resp_1", "status": "in_progress"})
        error = {"type": "server_error", "code": None, "message": "the chat model is down"}
        send(ws, "response.done", response={"id": "resp_1", "status": "failed",
                                            "status_details": {"type": "failed", "error": error}})
        send(ws, "error", error={"type": "server_error", "code": "response_failed",
                                 "message": "response generation failed: the chat model is down"})

    with fake_realtime_server(fail_the_reply) as url:
        connect_page(browser, tiny_server.http, f"mode=ptt&url={url}")
        browser.execute_script(SEND_TYPED, "Hello.")  # type: ignore[attr-defined]
        state = wait_until(browser, lambda s: s["events"].get("error"), 30)
        time.sleep(1)  # a second line, if any, is shown as the error event comes
        state = hook(browser)
    shown = "reply failed: the chat model is down"
    assert state["errors"] == [shown] and page_text(browser, "#errors li") == shown, state
    assert state["state"] == "ready", state


def meters(driver: object) -> tuple[float, str]:
    """The microphone meter's level and the Buffered readout, as the page shows them."""
    level, buffered = driver.execute_script(  # type: ignore[attr-defined]
        "return [document.getElementById('level').value, document.getElementById('buffered').textContent]")
    return float(level), buffered


def test_disconnect_while_talking_and_playing_leaves_no_meter_lit(tiny_server: ServerProcess, browser: object) -> None:
    """Disconnect while the microphone heard speech and a reply was queued: the microphone was closed and the playback
    gone, yet the Mic meter stayed lit at the last chunk's level (0.42 seen) and Buffered at the last stats, as if the
    microphone were still live. Both go to zero with the audio."""
    from selenium.webdriver.common.by import By

    connect_page(browser, tiny_server.http, "mode=ptt&ec=0&ns=0&agc=0")
    browser.execute_script(SEND_TYPED, "Tell me a story.")  # type: ignore[attr-defined]
    state = wait_until(browser, lambda s: s["bufferedMs"] > 0 and meters(browser)[0] > 0, 60)
    assert state["bufferedMs"] > 0 and meters(browser)[0] > 0, state  # the fake microphone is mid-speech
    browser.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    state = wait_until(browser, lambda s: s["state"] == "idle", 10)
    time.sleep(0.5)  # a chunk or stats message still queued at the close would show here
    assert state["state"] == "idle" and meters(browser) == (0, "0 ms"), (meters(browser), state)


def test_disconnect_mid_turn_leaves_no_bubble_listening(tiny_server: ServerProcess, browser: object) -> None:
    """Disconnect while talking hands-free: the user's bubble said 'listening…' for good, after the session had
    ended, and stayed so above the next session's turns. It says that the session ended before the turn did."""
    from selenium.webdriver.common.by import By

    browser.get(f"{tiny_server.http}/?mode=vad&ec=0&ns=0&agc=0")  # type: ignore[attr-defined]
    browser.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    state = wait_until(browser, lambda s: s["state"] == "speaking", 60)
    assert page_text(browser, ".turn.user .text") == "listening…", state
    browser.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    state = wait_until(browser, lambda s: s["state"] == "idle", 10)
    assert page_text(browser, ".turn.user .text") == "(the session ended before this turn did)", state
    assert browser.find_elements(By.CSS_SELECTOR, ".turn.pending") == [], state  # type: ignore[attr-defined]


def test_a_turn_whose_transcription_failed_does_not_stay_listening(tiny_server: ServerProcess,
                                                                  browser: object) -> None:
    """The server heard a turn but could not transcribe it (conversation.item.input_audio_transcription.failed): the
    page showed the error, yet the turn's bubble said 'listening…' for the rest of the session, next to 'listening'
    in the state pill. It says that the turn was not transcribed."""
    from selenium.webdriver.common.by import By

    heard: list[bool] = []

    def fail_the_first_turn(ws: object, event: dict) -> None:
        if event["type"] != "input_audio_buffer.append" or heard:
            return
        heard.append(True)
        send(ws, "input_audio_buffer.speech_started", item_id="item_turn", audio_start_ms=0)
        send(ws, "input_audio_buffer.speech_stopped", item_id="item_turn", audio_end_ms=400)
        send(ws, "input_audio_buffer.committed", item_id="item_turn", previous_item_id=None)
        send(ws, "conversation.item.input_audio_transcription.failed", item_id="item_turn", content_index=0,
             error={"type": "transcription_error", "code": "transcription_failed", "message": "the model failed"})

    with fake_realtime_server(fail_the_first_turn) as url:
        browser.get(f"{tiny_server.http}/?mode=vad&url={url}")  # type: ignore[attr-defined]
        browser.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
        state = wait_until(browser, lambda s: s["errors"], 30)
    assert state["errors"] == ["transcription failed: the model failed"], state
    assert page_text(browser, ".turn.user .text") == "(not transcribed)", state


def test_disconnect_while_a_reply_plays_marks_where_it_was_cut(tiny_server: ServerProcess, browser: object) -> None:
    """Disconnect 0.5 s into a 6 s reply: the audio stopped, yet its bubble showed the whole reply with nothing to say
    that most of it was never heard (a barge-in's cut says 'interrupted after ...'). It says where it was cut."""
    from selenium.webdriver.common.by import By

    def reply_six_seconds(ws: object, event: dict) -> None:
        if event["type"] == "response.create":
            send_spoken_reply(ws, "item_long", "A long story, told in full.", 6.0)  # type: ignore[arg-type]

    with fake_realtime_server(reply_six_seconds) as url:
        connect_page(browser, tiny_server.http, f"mode=ptt&url={url}")
        browser.execute_script(SEND_TYPED, "Tell me a story.")  # type: ignore[attr-defined]
        wait_until(browser, lambda s: s["playedSeconds"] >= 0.5, 30)
        browser.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
        state = wait_until(browser, lambda s: s["state"] == "idle", 10)
    bubble = browser.find_element(By.CSS_SELECTOR, ".turn.assistant")  # type: ignore[attr-defined]
    note = bubble.find_elements(By.CSS_SELECTOR, ".note")
    assert note and re.fullmatch(r"interrupted after (\d\.\d\d) s", note[0].text), state
    assert 0.5 <= float(note[0].text.split()[2]) < 3, (note[0].text, state)


def test_the_server_and_key_boxes_are_locked_while_connected(tiny_server: ServerProcess, browser: object) -> None:
    """The mode, silence and microphone processing were locked while connected, as they apply at Connect; the Server
    and API key boxes, which apply at Connect too, stayed editable: an address or key changed mid-session looked in use
    while the session went on with the old ones. They are locked while connected and open again at Disconnect."""
    from selenium.webdriver.common.by import By

    connect_page(browser, tiny_server.http)
    boxes = [browser.find_element(By.ID, i) for i in ("url", "key")]  # type: ignore[attr-defined]
    assert [b.is_enabled() for b in boxes] == [False, False]
    browser.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    wait_until(browser, lambda s: s["state"] == "idle", 10)
    assert [b.is_enabled() for b in boxes] == [True, True]
