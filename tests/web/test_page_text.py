"""What the page shows of a conversation's words, in real headless Chromium (see test_browser_page.py for the setup):
scripts other than Latin, long replies."""

from __future__ import annotations

import time

import pytest

from tests.conftest import ServerProcess
from tests.web.browser import (
    SEND_TYPED,
    connect_page,
    page_text,
    wait_until,
)
from tests.web.fake_realtime import fake_realtime_server, send, send_spoken_reply

pytestmark = pytest.mark.slow

# [left of the first character, left of the last one] of each bubble's text, as laid out on the screen
EDGES = """return [...document.querySelectorAll('.turn .text')].map((t) => {
  const range = document.createRange();
  const at = (node, i) => { range.setStart(node, i); range.setEnd(node, i + 1); return range.getBoundingClientRect(); };
  const last = t.lastChild;
  return [at(t.firstChild, 0).left, at(last, last.length - 1).left];
});"""


def test_a_right_to_left_turn_ends_at_its_left(tiny_server: ServerProcess, browser: object) -> None:
    """A turn in Hebrew (or Arabic) was laid out left to right: its words right to left within the line, but its
    question mark at the right end, where a Hebrew reader takes it for the start of the sentence, and the text aligned
    left. Each bubble's text (and the message box) takes its direction from its words: the '?' ends it at the left."""
    question, answer = "מה השעה?", "השעה שלוש, ומה שלומך היום?"

    def answer_in_hebrew(ws: object, event: dict) -> None:
        if event["type"] == "conversation.item.create":
            send(ws, "conversation.item.added", item={**event["item"], "id": "item_user"})  # type: ignore[arg-type]
        elif event["type"] == "response.create":
            send_spoken_reply(ws, "item_reply", answer, 0.2)  # type: ignore[arg-type]

    with fake_realtime_server(answer_in_hebrew) as url:
        connect_page(browser, tiny_server.http, f"mode=ptt&url={url}")
        browser.execute_script(SEND_TYPED, question)  # type: ignore[attr-defined]
        state = wait_until(browser, lambda s: s["playedSeconds"] >= 0.2, 20)
        edges = browser.execute_script(EDGES)  # type: ignore[attr-defined]
        rtl = "const m = document.getElementById('message'); m.value = arguments[0]; return m.matches(':dir(rtl)');"
        typing = browser.execute_script(rtl, question)  # type: ignore[attr-defined]
    assert state["errors"] == [] and len(edges) == 2, (state, edges)
    assert all(last < first for first, last in edges), edges
    assert typing, "the message box lays Hebrew out left to right"


def test_a_long_url_in_a_transcript_wraps_on_a_narrow_window(embedded_server: ServerProcess, browser: object) -> None:
    """A word longer than the window (a URL, typed or spoken back) widened the conversation and with it the whole
    page: on a phone-width window the settings, the bubbles and the message box ran off the screen sideways."""
    from selenium.webdriver.common.by import By

    driver = browser
    driver.set_window_size(375, 812)  # type: ignore[attr-defined]  # a phone
    driver.get(f"{embedded_server.http}/?mode=ptt")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    wait_until(driver, lambda s: s["state"] == "ready", 60)
    url = "https://example.com/a/very/long/path/without/any/spaces/at_all_whatsoever_1234567890"
    driver.execute_script(  # type: ignore[attr-defined]
        "const m = document.getElementById('message'); m.value = arguments[0];"
        "document.getElementById('compose').requestSubmit();", f"Please repeat exactly: {url}")
    # the bubble shows once the server has added the item: read right after sending, a loaded machine saw none yet
    state = wait_until(driver, lambda s: url in page_text(driver, ".turn.user .text"), 30)
    assert url in page_text(driver, ".turn.user .text"), state
    widths = driver.execute_script(  # type: ignore[attr-defined]
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], widths  # no sideways scrolling


def test_a_conversation_taller_than_the_window_keeps_the_newest_reply_and_the_message_box_in_view(
        tiny_server: ServerProcess, browser: object) -> None:
    """Once the conversation outgrew the window, each new word scrolled its bubble into view and no further: the
    message box, right below it, stayed just out of the window, and the user had to scroll down to type the next turn.
    The newest reply and the message box both stay in view."""
    browser.set_window_size(800, 500)  # type: ignore[attr-defined]
    connect_page(browser, tiny_server.http)
    for turn in range(1, 4):
        browser.execute_script(SEND_TYPED, f"Tell me story number {turn}.")  # type: ignore[attr-defined]
        state = wait_until(browser, lambda s, n=turn: s["events"].get("response.done", 0) >= n, 60)
    assert state["errors"] == [], state
    where = """
        const bottom = (el) => el.getBoundingClientRect().bottom;
        return {reply: bottom([...document.querySelectorAll('.turn.assistant')].pop()),
                box: bottom(document.getElementById('compose')), window: innerHeight, scrolled: scrollY};"""
    rects = browser.execute_script(where)  # type: ignore[attr-defined]
    assert rects["scrolled"] > 0, rects  # the conversation is taller than the window
    assert rects["reply"] <= rects["window"] and rects["box"] <= rects["window"], rects


def test_reading_an_earlier_turn_is_not_scrolled_away_by_the_reply(tiny_server: ServerProcess, browser: object) -> None:
    """A conversation taller than the window, scrolled up to read an earlier turn while a reply came in: each word of
    the reply scrolled the page back to the bottom, under the reader's eyes. The page stays where the user scrolled,
    and follows the newest words again once they scroll back down."""
    story = "Once upon a time there was a cat who lived by the sea and watched the boats. " * 3

    def reply_slowly(ws: object, event: dict) -> None:
        if event["type"] != "response.create":
            return
        send(ws, "response.created", response={"id": "resp_x", "status": "in_progress"})
        item = f"item_{time.monotonic_ns()}"
        send(ws, "response.output_item.added", item={"id": item, "type": "message", "role": "assistant"})
        for word in story.split(" "):
            send(ws, "response.output_audio_transcript.delta", item_id=item, delta=word + " ")
            time.sleep(0.02)
        send(ws, "response.done", response={"id": "resp_x", "status": "completed"})

    where = "return [scrollY, document.documentElement.scrollHeight - innerHeight]"
    # Scrolls the window as a user does and returns once the page has seen the scroll (its listener came first).
    scroll_to = ("const done = arguments[arguments.length - 1];"
                 "addEventListener('scroll', () => setTimeout(done, 0), {once: true}); scrollTo(0, arguments[0]);")
    browser.set_window_size(800, 500)  # type: ignore[attr-defined]
    with fake_realtime_server(reply_slowly) as url:
        connect_page(browser, tiny_server.http, f"mode=ptt&url={url}")
        for turn in range(1, 4):
            browser.execute_script(SEND_TYPED, f"Tell me story number {turn}.")  # type: ignore[attr-defined]
            state = wait_until(browser, lambda s, n=turn: s["events"].get("response.done", 0) >= n, 30)
        scrolled, bottom = browser.execute_script(where)  # type: ignore[attr-defined]
        # followed the replies (the message box in view, the page's margin below it): taller than the window
        assert 0 < bottom - 48 < scrolled, (scrolled, bottom)

        browser.execute_async_script(scroll_to, 0)  # type: ignore[attr-defined]  # reading the first turn
        browser.execute_script(SEND_TYPED, "Tell me story number 4.")  # type: ignore[attr-defined]
        state = wait_until(browser, lambda s: s["events"].get("response.done", 0) >= 4, 30)
        scrolled, grown = browser.execute_script(where)  # type: ignore[attr-defined]
        assert scrolled == 0 and grown > bottom, (scrolled, grown, state)  # still where the user is reading

        browser.execute_async_script(scroll_to, grown)  # type: ignore[attr-defined]  # back to the bottom
        browser.execute_script(SEND_TYPED, "Tell me story number 5.")  # type: ignore[attr-defined]
        state = wait_until(browser, lambda s: s["events"].get("response.done", 0) >= 5, 30)
        scrolled, bottom = browser.execute_script(where)  # type: ignore[attr-defined]
        assert bottom - 48 < scrolled, (scrolled, bottom, state)  # following the newest words again
