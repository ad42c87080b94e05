"""The page used from the keyboard alone or with a screen reader, in real headless Chromium (see test_browser_page.py
for the setup)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import ServerProcess
from tests.web.browser import connect_page, hook
from tests.web.fake_realtime import fake_realtime_server

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
