"""The page on a phone's screen (375 px wide, touch), in real headless Chromium (see test_browser_page.py for the
setup)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import ServerProcess
from tests.web.browser import (
    SEND_TYPED,
    connect_page,
    wait_until,
)
from tests.web.fake_realtime import fake_realtime_server, send, send_spoken_reply

pytestmark = pytest.mark.slow

PHONE = {"width": 375, "height": 740, "deviceScaleFactor": 2, "mobile": True}
# Whether the element is on the screen and what a finger at its centre would touch is the element itself.
TOUCHABLE = """const e = document.getElementById(arguments[0]); const r = e.getBoundingClientRect();
const x = r.left + r.width / 2, y = r.top + r.height / 2;
return r.top >= 0 && r.bottom <= window.innerHeight && document.elementFromPoint(x, y) === e;"""


def test_on_a_phone_hold_to_talk_stays_in_reach_as_the_conversation_grows(tiny_server: ServerProcess,
                                                                         browser: object) -> None:
    """On a 375 px screen the settings fill the first screen, 'Hold to talk' at their end; each reply scrolls the page
    down to the newest turn and the message box, and after a few turns the button was off the top of the screen: to
    talk (push-to-talk, no space bar on a phone) the user had to scroll back up for every turn. The button stays at
    the bottom of the screen, above the message box, both in reach after every reply."""
    story = "A reply long enough to take a few lines on a phone, as most spoken replies do. " * 3

    def answer(ws: object, event: dict) -> None:
        if event["type"] == "conversation.item.create":
            send(ws, "conversation.item.added", item={**event["item"], "id": f"u{id(event)}"})  # type: ignore[arg-type]
        elif event["type"] == "response.create":
            send_spoken_reply(ws, f"r{id(event)}", story, 0.1)  # type: ignore[arg-type]
            send(ws, "response.done", response={"id": f"resp{id(event)}", "status": "completed"})  # type: ignore

    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)  # type: ignore[attr-defined]
    with fake_realtime_server(answer) as url:
        connect_page(browser, tiny_server.http, f"mode=ptt&url={url}")
        for turn in range(1, 5):
            browser.execute_script(SEND_TYPED, f"Question {turn}?")  # type: ignore[attr-defined]
            state = wait_until(browser, lambda s, n=turn: len(s["typed"]) == n and s["state"] == "ready", 10)
            assert state["state"] == "ready", state
        reach = {e: browser.execute_script(TOUCHABLE, e) for e in ("talk", "message")}  # type: ignore[attr-defined]
        width = browser.execute_script("return document.documentElement.scrollWidth")  # type: ignore[attr-defined]
    assert reach == {"talk": True, "message": True}, reach
    assert width <= PHONE["width"], width  # nothing wider than the screen


# The element's rectangle on the screen: (top, bottom).
RECT = "const r = document.getElementById(arguments[0]).getBoundingClientRect(); return [r.top, r.bottom];"


def test_on_a_phone_the_first_latency_readout_leaves_the_message_box_above_hold_to_talk(tiny_server: ServerProcess,
                                                                                       browser: object) -> None:
    """On a 375 px screen the first reply's latency readout ('812 ms (median 812 ms over 1)') did not fit the meters'
    row beside the other meters: the row wrapped, every line under it moved down, and the message box, just brought
    into view above the fixed 'Hold to talk', slid under the button. The meters keep their height as the readout
    comes, and the message box stays above the button."""
    story = "A reply long enough to fill the screen of a phone, as a long spoken answer does. " * 12

    def answer(ws: object, event: dict) -> None:
        if event["type"] == "conversation.item.create":
            send(ws, "conversation.item.added", item={**event["item"], "id": "u1"})  # type: ignore[arg-type]
        elif event["type"] == "response.create":
            send_spoken_reply(ws, "r1", story, 0.5)  # type: ignore[arg-type]
            send(ws, "response.done", response={"id": "resp_r1", "status": "completed"})  # type: ignore[arg-type]

    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)  # type: ignore[attr-defined]
    with fake_realtime_server(answer) as url:
        connect_page(browser, tiny_server.http, f"mode=ptt&url={url}")
        meters = browser.execute_script(RECT, "meters")  # type: ignore[attr-defined]
        browser.execute_script(SEND_TYPED, "Tell me a story.")  # type: ignore[attr-defined]
        state = wait_until(browser, lambda s: s["latenciesMs"] and s["state"] == "ready", 10)
        assert state["latenciesMs"] and state["state"] == "ready", state
        shown = {e: browser.execute_script(RECT, e) for e in ("meters", "message", "talk")}  # type: ignore
    height = shown["meters"][1] - shown["meters"][0]
    assert height == meters[1] - meters[0], (meters, shown)
    assert shown["message"][1] <= shown["talk"][0] and shown["talk"][1] <= PHONE["height"], shown


def test_a_finger_that_moves_while_holding_to_talk_keeps_talking(tiny_server: ServerProcess, browser: object) -> None:
    """On a touch screen, a finger holding 'Hold to talk' that moved a little (30 px) was taken by the browser for a
    scroll: it cancelled the press (pointercancel), and the turn was sent half a second in, mid-sentence, while the
    user still held the button and talked. The press lasts until the finger lifts."""
    browser.set_window_size(400, 700)  # type: ignore[attr-defined]  # a phone: the page scrolls
    touch_screen = {"enabled": True, "maxTouchPoints": 1}
    browser.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", touch_screen)  # type: ignore[attr-defined]
    connect_page(browser, tiny_server.http, "mode=ptt&ec=0&ns=0&agc=0")
    x, y = browser.execute_script(  # type: ignore[attr-defined]
        "const r = document.getElementById('talk').getBoundingClientRect();"
        "return [r.x + r.width / 2, r.y + r.height / 2]")

    def touch(kind: str, *points: dict) -> None:
        browser.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": kind, "touchPoints": list(points)})  # type: ignore

    touch("touchStart", {"x": x, "y": y})
    state = wait_until(browser, lambda s: s["state"] == "speaking", 10)
    for step in range(1, 6):
        touch("touchMove", {"x": x, "y": y - 6 * step})
        time.sleep(0.05)
    moved = wait_until(browser, lambda s: s["sentChunks"] >= state["sentChunks"] + 25, 10)  # a second more
    assert moved["state"] == "speaking" and not moved["events"].get("input_audio_buffer.committed"), moved
    touch("touchEnd")
    state = wait_until(browser, lambda s: s["events"].get("input_audio_buffer.committed"), 10)
    assert state["events"].get("input_audio_buffer.committed") == 1 and state["errors"] == [], state


# Shortens a list to its first option (the microphones' 'default', an empty voice list), as the page is drawn before
# its lists come.
AS_FIRST_DRAWN = """const s = document.getElementById(arguments[0]);
while (s.options.length > (arguments[0] === 'mic' ? 1 : 0)) s.remove(s.options.length - 1);"""


def test_on_a_phone_connect_stays_where_it_was_drawn_when_the_lists_come(tiny_server: ServerProcess,
                                                                        browser: object) -> None:
    """The page lists the microphones and the server's voices after it is drawn; each list widened its box, the
    settings' line wrapped, and Connect moved 30 px down on a 375 px screen just as the page came up: a tap on it, as
    drawn, hit the gap above it and nothing happened. The boxes keep their size as their lists come."""
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)  # type: ignore[attr-defined]
    browser.get(f"{tiny_server.http}/?mode=ptt")  # type: ignore[attr-defined]
    listed = "return [document.getElementById('mic').options.length, document.getElementById('voice').options.length]"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and min(browser.execute_script(listed)) < 2:  # type: ignore[attr-defined]
        time.sleep(0.1)
    assert min(browser.execute_script(listed)) >= 2  # type: ignore[attr-defined]  # fake microphones; tiny voices
    with_lists = browser.execute_script(RECT, "connect")  # type: ignore[attr-defined]
    for box in ("mic", "voice"):
        browser.execute_script(AS_FIRST_DRAWN, box)  # type: ignore[attr-defined]
    assert browser.execute_script(RECT, "connect") == with_lists  # type: ignore[attr-defined]
