"""The page used from the keyboard alone, with a screen reader or with low vision, in real headless Chromium (see
test_browser_page.py for the setup)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import ServerProcess
from tests.web.browser import connect_page, hook, wait_until
from tests.web.fake_realtime import fake_realtime_server, send

pytestmark = pytest.mark.slow


def test_enter_held_on_the_talk_button_talks(tiny_server: ServerProcess, browser: object) -> None:
    """Enter presses a focused button as Space does, yet Enter held on the focused 'Hold to talk' button did nothing
    (no chunk sent in 1 s, the pill 'ready'), with nothing to say that only Space talks. Held there, it talks, and its
    release sends the turn, as the space bar's does."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    heard: list[str] = []
    with fake_realtime_server(lambda ws, event: heard.append(event["type"])) as url:
        connect_page(browser, tiny_server.http, f"mode=ptt&url={url}")
        browser.execute_script("document.getElementById('talk').focus()")  # type: ignore[attr-defined]
        ActionChains(browser).key_down(Keys.ENTER).perform()
        time.sleep(1.0)
        held = hook(browser)
        ActionChains(browser).key_up(Keys.ENTER).perform()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "response.create" not in heard:
            time.sleep(0.1)
    assert held["state"] == "speaking" and held["sentChunks"] >= 10, held
    assert heard[-2:] == ["input_audio_buffer.commit", "response.create"], heard


def test_a_screen_readers_click_on_the_talk_button_starts_the_turn_and_the_next_sends_it(
        tiny_server: ServerProcess, browser: object) -> None:
    """A screen reader presses a button with a click alone, no pointer down or up (as the element's click() does):
    'Hold to talk' ignored it, so push-to-talk could not be used with one. One such click starts the turn (the button
    then says it is pressed), the next sends it."""
    click = "const t = document.getElementById('talk'); t.click(); return t.getAttribute('aria-pressed');"
    heard: list[str] = []
    with fake_realtime_server(lambda ws, event: heard.append(event["type"])) as url:
        connect_page(browser, tiny_server.http, f"mode=ptt&url={url}")
        pressed = browser.execute_script(click)  # type: ignore[attr-defined]
        time.sleep(1.0)
        held = hook(browser)
        released = browser.execute_script(click)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "response.create" not in heard:
            time.sleep(0.1)
    assert (pressed, released) == ("true", "false"), heard
    assert held["state"] == "speaking" and held["sentChunks"] >= 10, held
    assert heard[-2:] == ["input_audio_buffer.commit", "response.create"], heard


# WCAG 2 contrast ratio of an element's text colour on its background (or the first ancestor's that is not transparent)
CONTRAST = """const e = document.querySelector(arguments[0]);
const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
let bg = e;
while (rgb(getComputedStyle(bg).backgroundColor)[3] === 0) bg = bg.parentElement;
const linear = (v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
const lum = ([r, g, b]) => 0.2126 * linear(r / 255) + 0.7152 * linear(g / 255) + 0.0722 * linear(b / 255);
const [a, b] = [lum(rgb(getComputedStyle(e).color)), lum(rgb(getComputedStyle(bg).backgroundColor))];
return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);"""


def test_the_talking_state_and_a_turn_being_heard_are_readable(tiny_server: ServerProcess, browser: object) -> None:
    """WCAG asks 4.5:1 for text this size. While the user talked, the pill's 'speaking' and the held button's 'Hold to
    talk' were white on amber, 3.3:1, and a turn being heard said 'listening…' in grey on its blue bubble, 2.6:1: hard
    to read with low vision, and in sunlight on a phone. All three are at least 4.5:1."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    def commit_heard(ws: object, event: dict) -> None:
        if event["type"] == "input_audio_buffer.commit":
            send(ws, "input_audio_buffer.committed", item_id="item_heard")  # type: ignore[arg-type]

    with fake_realtime_server(commit_heard) as url:
        connect_page(browser, tiny_server.http, f"mode=ptt&url={url}")
        talk = browser.find_element(By.ID, "talk")  # type: ignore[attr-defined]
        ActionChains(browser).click_and_hold(talk).perform()
        wait_until(browser, lambda s: s["state"] == "speaking", 5)
        ratios = {css: browser.execute_script(CONTRAST, css) for css in ("#state", "#talk")}  # type: ignore
        ActionChains(browser).release(talk).perform()
        wait_until(browser, lambda s: s["events"].get("input_audio_buffer.committed"), 5)
        pending = ".turn.user.pending .text"
        ratios[pending] = browser.execute_script(CONTRAST, pending)  # type: ignore[attr-defined]
    assert all(ratio >= 4.5 for ratio in ratios.values()), ratios
