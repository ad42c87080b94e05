"""The page used from the keyboard alone, with a screen reader or with low vision, in real headless Chromium (see
test_browser_page.py for the setup)."""

from __future__ import annotations

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


def tab_to(driver: object, element_id: str, most: int = 30) -> None:
    """Press Tab, as a keyboard user does, until the element with that id has the focus."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    for _ in range(most):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        if driver.execute_script("return document.activeElement.id") == element_id:  # type: ignore[attr-defined]
            return
    raise AssertionError(f"Tab never reached #{element_id}")


def test_the_space_bar_presses_the_focused_connect_button(tiny_server: ServerProcess, browser: object) -> None:
    """Space on a focused button presses it on any page; here the page took the space bar for push-to-talk even with
    no session, so a keyboard user who tabbed to Connect pressed Space and nothing happened."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{tiny_server.http}/?mode=ptt")  # type: ignore[attr-defined]
    tab_to(browser, "connect")
    ActionChains(browser).send_keys(Keys.SPACE).perform()
    state = wait_until(browser, lambda s: s["state"] == "ready", 60)
    assert state["state"] == "ready" and state["sessionId"] and state["errors"] == [], state


def test_connect_by_keyboard_keeps_the_focus_on_its_button_and_the_space_bar_then_talks(
        tiny_server: ServerProcess, browser: object) -> None:
    """Connect is disabled while it connects, which dropped the keyboard's focus to the page: once connected, the next
    Tab started over at the Server box instead of going on from Disconnect. The button keeps the focus, and holding
    the space bar there talks (push-to-talk) without pressing Disconnect."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{tiny_server.http}/?mode=ptt")  # type: ignore[attr-defined]
    tab_to(browser, "connect")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    state = wait_until(browser, lambda s: s["state"] == "ready", 60)
    assert state["state"] == "ready", state
    focused = "return document.activeElement.id"
    assert browser.execute_script(focused) == "connect", state  # type: ignore[attr-defined]
    ActionChains(browser).send_keys(Keys.TAB).perform()
    assert browser.execute_script(focused) == "talk", state  # type: ignore[attr-defined]  # the next control

    ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()  # back to Disconnect
    assert browser.execute_script(focused) == "connect", state  # type: ignore[attr-defined]
    ActionChains(browser).key_down(Keys.SPACE).perform()
    state = wait_until(browser, lambda s: s["sentChunks"] >= 25, 20)  # a second of speech
    ActionChains(browser).key_up(Keys.SPACE).perform()
    state = wait_until(browser, lambda s: s["events"].get("input_audio_buffer.committed"), 20)
    assert state["events"].get("input_audio_buffer.committed") == 1 and state["errors"] == [], state
    assert state["sessionId"] and state["state"] != "idle", state  # Disconnect was not pressed


def accessibility_tree(driver: object) -> list[tuple[str, str, dict]]:
    """(role, name, properties) of each node of Chromium's accessibility tree: what a screen reader is given."""
    nodes = driver.execute_cdp_cmd("Accessibility.getFullAXTree", {})["nodes"]  # type: ignore[attr-defined]
    return [(n.get("role", {}).get("value", ""), n.get("name", {}).get("value", ""),
             {p["name"]: p["value"].get("value") for p in n.get("properties", [])}) for n in nodes]


def test_a_screen_reader_hears_named_controls_and_new_lines_not_the_playback_counters(
        tiny_server: ServerProcess, browser: object) -> None:
    """The microphone meter and the Latency, Played and Buffered readouts had no name, and being outputs each was a
    polite live region: while a reply played, a screen reader read 'Played' ten times a second over the conversation.
    Every control and readout is named, and the only live regions are the error line, the conversation, whose new
    lines are announced, and the state (it was not one: a screen reader never said 'ready' or 'thinking')."""
    from selenium.webdriver.common.by import By

    connect_page(browser, tiny_server.http)
    browser.execute_script(SEND_TYPED, "Hello.")  # type: ignore[attr-defined]
    wait_until(browser, lambda s: s["playedSeconds"] > 0, 60)
    tree = accessibility_tree(browser)
    named = {"textbox", "combobox", "spinbutton", "checkbox", "button", "meter", "status"}
    unnamed = [(role, props) for role, name, props in tree if role in named and not name.strip()]
    assert [(role, props) for role, props in unnamed if not props.get("live")] == [], tree  # a live one is read out
    live = sorted((role, name, props["live"]) for role, name, props in tree if props.get("live"))
    assert live == [("alert", "", "assertive"), ("region", "Conversation", "polite"), ("status", "", "polite")], live
    # the new lines are the conversation's own children (announced as they come), the user's and the reply's
    lines = browser.find_elements(By.CSS_SELECTOR, '#conversation[aria-live="polite"] > .turn')  # type: ignore
    assert [e.get_attribute("class").split()[1] for e in lines] == ["user", "assistant"], tree


def test_a_screen_reader_is_given_each_word_of_a_reply_once(tiny_server: ServerProcess, browser: object) -> None:
    """The conversation is a live region: what is put into it is read out. Each transcript delta rewrote the whole
    line, so a screen reader read 'Once', 'Once upon', 'Once upon a time.' (and the whole line again at its done).
    Each delta adds only its words, and a done that changes nothing changes nothing."""
    words = ["Once ", "upon ", "a time."]

    def reply_word_by_word(ws: object, event: dict) -> None:
        if event["type"] != "response.create":
            return
        send(ws, "response.created", response={"id": "resp_1", "status": "in_progress"})
        send(ws, "response.output_item.added", item={"id": "item_reply", "type": "message", "role": "assistant"})
        for word in words:
            send(ws, "response.output_audio_transcript.delta", item_id="item_reply", delta=word)
        send(ws, "response.output_audio_transcript.done", item_id="item_reply", transcript="".join(words))
        send(ws, "response.done", response={"id": "resp_1", "status": "completed"})

    watch = """
        window.inserted = [];
        new MutationObserver((records) => { for (const r of records) for (const n of r.addedNodes)
          window.inserted.push(n.textContent); }).observe(document.getElementById('conversation'),
          {childList: true, subtree: true, characterData: true});"""
    with fake_realtime_server(reply_word_by_word) as url:
        connect_page(browser, tiny_server.http, f"mode=ptt&url={url}")
        browser.execute_script(watch)  # type: ignore[attr-defined]
        browser.execute_script(SEND_TYPED, "Tell me a story.")  # type: ignore[attr-defined]
        state = wait_until(browser, lambda s: s["events"].get("response.done"), 30)
    assert page_text(browser, ".turn.assistant .text") == "Once upon a time.", state
    # the new line (its 'assistant' label and placeholder), then each word once
    assert browser.execute_script("return window.inserted") == ["assistant…", *words], state  # type: ignore


def space_key(driver: object, kind: str, repeat: bool = False) -> None:
    """A Space key event as a keyboard sends it (Selenium's key_down sends no auto-repeats)."""
    driver.execute_cdp_cmd("Input.dispatchKeyEvent", {  # type: ignore[attr-defined]
        "type": kind, "key": " ", "code": "Space", "windowsVirtualKeyCode": 32, "autoRepeat": repeat,
        **({"text": " "} if kind == "keyDown" else {})})


def test_holding_the_space_bar_on_the_focused_disconnect_button_talks_and_stays_connected(
        tiny_server: ServerProcess, browser: object) -> None:
    """A held key repeats. The page took only the first Space press for push-to-talk; the repeats reached the focused
    button, so holding Space to talk with the focus on Disconnect (where it is after Connect) ended the session
    when the key was released, instead of sending the turn."""
    from selenium.webdriver.common.by import By

    connect_page(browser, tiny_server.http)  # clicked: the focus stays on the button, now Disconnect
    assert browser.execute_script("return document.activeElement.id") == "connect"  # type: ignore[attr-defined]
    space_key(browser, "keyDown")
    state = wait_until(browser, lambda s: s["state"] == "speaking", 20)
    for _ in range(20):  # about the rate of a keyboard's repeats, for a second
        space_key(browser, "keyDown", repeat=True)
        time.sleep(0.05)
    wait_until(browser, lambda s: s["sentChunks"] >= 10, 20)
    space_key(browser, "keyUp")
    state = wait_until(browser, lambda s: s["events"].get("input_audio_buffer.committed"), 20)
    assert state["events"].get("input_audio_buffer.committed") == 1 and state["errors"] == [], state
    button = browser.find_element(By.ID, "connect")  # type: ignore[attr-defined]
    assert state["state"] != "idle" and button.text == "Disconnect", state
