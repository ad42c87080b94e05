"""The end of a session while the page is still letting go of its audio (the playback flushed, the audio closed), in
real headless Chromium (see test_browser_page.py for the setup): what a click or the microphone does meanwhile.

The flush takes a round trip to the playback worklet, a few ms, or longer on a busy machine: the tests hold it (by
the page's own audio module) until they have done what a user might do in that window, so that they hit it always.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import ServerProcess
from tests.web.browser import SEND_TYPED, hook, page_text, wait_until
from tests.web.fake_realtime import fake_realtime_server, send_spoken_reply

pytestmark = pytest.mark.slow

# Every flush of the playback from here on waits for RELEASE_FLUSHES (run asynchronously: the page's module is
# imported, the same instance as app.js's).
HOLD_FLUSHES = """
const done = arguments[arguments.length - 1];
import('./audio.js').then(({ AudioEngine }) => {
  const flush = AudioEngine.prototype.flush;
  window.heldFlushes = [];
  AudioEngine.prototype.flush = function () {
    return new Promise((resolve) => window.heldFlushes.push(() => resolve(flush.call(this))));
  };
  done();
});
"""
RELEASE_FLUSHES = "for (const go of window.heldFlushes.splice(0)) go();"
HELD = "return window.heldFlushes.length"
PILL_LOG = """
window.pillLog = [];
new MutationObserver(() => window.pillLog.push(document.getElementById('state').textContent))
  .observe(document.getElementById('state'), { childList: true, characterData: true, subtree: true });
"""


def test_disconnect_clicked_while_a_closed_session_ends_leaves_it_closed(tiny_server: ServerProcess,
                                                                        browser: object) -> None:
    """The server closed the session and the page, still letting go of its audio, still said Disconnect: a click
    then ran a second teardown alongside the first, which threw 'Cannot read properties of null (reading 'stop')' in
    the console, and could leave 'idle' over the close's 'closed'. The click is ignored: the pill says 'closed'
    once, the close's line stays the only one, and one click of Connect connects again."""
    from selenium.webdriver.common.by import By

    close_now = threading.Event()

    def close_on_cue(ws: object, event: dict) -> None:
        if close_now.is_set():
            ws.close(1011, "internal error")  # type: ignore[attr-defined]

    closed = "the server failed in this session (code 1011: internal error): its log says why; connect again"
    with fake_realtime_server(close_on_cue) as url:
        _connect_hands_free(browser, f"{tiny_server.http}/?mode=vad&url={url}")
        browser.execute_async_script(HOLD_FLUSHES)  # type: ignore[attr-defined]
        browser.execute_script(PILL_LOG)  # type: ignore[attr-defined]
        close_now.set()  # at the page's next input_audio_buffer.append
        wait_until(browser, lambda s: s["errors"], 30)
        button = browser.find_element(By.ID, "connect")  # type: ignore[attr-defined]
        assert button.text == "Disconnect" and browser.execute_script(HELD) == 1, hook(browser)  # type: ignore
        button.click()
        browser.execute_script(RELEASE_FLUSHES)  # type: ignore[attr-defined]
        state = wait_until(browser, lambda s: s["state"] in ("closed", "idle") and button.text == "Connect", 10)
        browser.execute_script(RELEASE_FLUSHES)  # type: ignore[attr-defined]  # a second teardown's, if any
        assert state["errors"] == [closed] and page_text(browser, "#errors li") == closed, state
        close_now.clear()
        button.click()
        state = wait_until(browser, lambda s: s["state"] == "listening", 30)
        pills = browser.execute_script("return window.pillLog")  # type: ignore[attr-defined]
    logged = browser.get_log("browser")  # type: ignore[attr-defined]
    uncaught = [e["message"] for e in logged if "Uncaught" in e["message"]]
    assert state["state"] == "listening" and state["events"]["session.created"] == 2, state
    assert pills[0] == "closed" and pills.count("closed") == 1 and "idle" not in pills, (pills, state)
    assert uncaught == [], uncaught


def _connect_hands_free(browser: object, page: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(page)  # type: ignore[attr-defined]
    browser.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    assert wait_until(browser, lambda s: s["state"] == "listening", 60)["state"] == "listening", hook(browser)


def test_speech_heard_while_a_session_ends_is_not_sent_at_the_next(tiny_server: ServerProcess,
                                                                   browser: object) -> None:
    """Hands-free, the microphone's chunks that came while Disconnect was letting go of the audio were kept as if
    captured before a connect, and sent at the start of the next session: the server heard speech said to the session
    before as if the user had just said it. The next session is sent only what its own microphone captured."""
    from selenium.webdriver.common.by import By

    appends: dict[int, int] = {}  # each connection's (by the order it came) input_audio_buffer.append count
    connections: list[object] = []

    def count(ws: object, event: dict) -> None:
        if ws not in connections:
            connections.append(ws)
        if event["type"] == "input_audio_buffer.append":
            n = connections.index(ws)
            appends[n] = appends.get(n, 0) + 1

    with fake_realtime_server(count) as url:
        _connect_hands_free(browser, f"{tiny_server.http}/?mode=vad&ec=0&ns=0&agc=0&url={url}")
        browser.execute_async_script(HOLD_FLUSHES)  # type: ignore[attr-defined]
        at_click = hook(browser)["capturedChunks"]
        browser.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
        # 0.4 s of the microphone while the session ends
        state = wait_until(browser, lambda s: s["capturedChunks"] >= at_click + 10, 10)
        assert state["capturedChunks"] >= at_click + 10, state
        browser.execute_script(RELEASE_FLUSHES)  # type: ignore[attr-defined]
        ended = wait_until(browser, lambda s: s["state"] == "idle", 10)
        assert ended["state"] == "idle", ended
        browser.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
        wait_until(browser, lambda s: s["state"] == "listening" and appends.get(1, 0) >= 5, 30)
        received = appends.get(1, 0)  # read before the page's count, which only grows
        captured = hook(browser)["capturedChunks"] - ended["capturedChunks"]
    assert 5 <= received <= captured, (received, captured, ended["capturedChunks"] - at_click)


# A step of the page's teardown fails, as each can in a browser: the AudioContext's close rejects (it was closed
# already: InvalidStateError), the playback's flush fails. The originals are kept to put back.
FAILING_STEPS = {
    "the audio's close rejects": """
const done = arguments[arguments.length - 1];
const close = AudioContext.prototype.close;
window.restore = () => { AudioContext.prototype.close = close; };
AudioContext.prototype.close = function () {
  return close.call(this).then(() => {
    throw new DOMException('Cannot close a closed AudioContext.', 'InvalidStateError');
  });
};
done();
""",
    "the playback's flush throws": """
const done = arguments[arguments.length - 1];
import('./audio.js').then(({ AudioEngine }) => {
  const flush = AudioEngine.prototype.flush;
  window.restore = () => { AudioEngine.prototype.flush = flush; };
  AudioEngine.prototype.flush = function () { return Promise.reject(new Error('the worklet is gone')); };
  done();
});
""",
}

# The microphone tracks the page opens, to see that its teardown stopped them.
TRACK_MICROPHONES = """
const devices = navigator.mediaDevices, open = devices.getUserMedia.bind(devices);
window.micTracks = [];
devices.getUserMedia = async (c) => {
  const stream = await open(c);
  window.micTracks.push(...stream.getAudioTracks());
  return stream;
};
"""


@pytest.mark.parametrize("failing", sorted(FAILING_STEPS))
def test_a_step_of_the_teardown_that_throws_still_ends_the_session(tiny_server: ServerProcess, browser: object,
                                                                  failing: str) -> None:
    """A teardown step that threw left the page 'ending' for ever: the pill stayed 'listening' and the button
    'Disconnect', whose clicks (and the server's close) were ignored, and Connect never worked again without a
    reload. The page now ends the session all the same: the microphone stopped, 'idle', and Connect connects."""
    from selenium.webdriver.common.by import By

    with fake_realtime_server(lambda ws, event: None) as url:
        browser.get(f"{tiny_server.http}/?mode=vad&url={url}")  # type: ignore[attr-defined]
        browser.execute_script(TRACK_MICROPHONES)  # type: ignore[attr-defined]
        button = browser.find_element(By.ID, "connect")  # type: ignore[attr-defined]
        button.click()
        assert wait_until(browser, lambda s: s["state"] == "listening", 60)["state"] == "listening", hook(browser)
        browser.execute_async_script(FAILING_STEPS[failing])  # type: ignore[attr-defined]
        button.click()
        state = wait_until(browser, lambda s: s["state"] == "idle" and button.text == "Connect", 10)
        assert state["state"] == "idle" and button.text == "Connect", state
        mic = browser.execute_script(  # type: ignore[attr-defined]
            "return window.micTracks.map((t) => t.readyState)")
        browser.execute_script("window.restore()")  # type: ignore[attr-defined]
        button.click()
        state = wait_until(browser, lambda s: s["state"] == "listening", 30)
    assert mic == ["ended"], mic
    assert state["state"] == "listening" and state["events"]["session.created"] == 2, state


# A flush of the playback asked for as the audio engine stops, as a barge-in's can be: the worklet's answer is no
# longer listened to, so only the stop can settle it. Records whether it settled.
FLUSH_AS_IT_STOPS = """
const done = arguments[arguments.length - 1];
import('./audio.js').then(({ AudioEngine }) => {
  const stop = AudioEngine.prototype.stop;
  window.flushesAtStop = [];
  AudioEngine.prototype.stop = function () {
    const flush = { settled: false };
    window.flushesAtStop.push(flush);
    this.flush().then(() => { flush.settled = true; });
    return stop.call(this);
  };
  done();
});
"""


def test_a_flush_asked_as_the_audio_closes_with_a_rejection_still_ends(tiny_server: ServerProcess,
                                                                      browser: object) -> None:
    """An AudioContext whose close rejected left the audio engine's stop half done: a flush awaited meanwhile (a
    barge-in's) never settled, its caller stuck for the page's life. It settles now, and a later Connect plays a
    reply's audio."""
    from selenium.webdriver.common.by import By

    def reply(ws: object, event: dict) -> None:
        if event["type"] == "response.create":
            send_spoken_reply(ws, "item_reply", "Hello again.", 1.0)  # type: ignore[arg-type]

    with fake_realtime_server(reply) as url:
        browser.get(f"{tiny_server.http}/?mode=ptt&url={url}")  # type: ignore[attr-defined]
        button = browser.find_element(By.ID, "connect")  # type: ignore[attr-defined]
        button.click()
        assert wait_until(browser, lambda s: s["state"] == "ready", 60)["state"] == "ready", hook(browser)
        browser.execute_async_script(FAILING_STEPS["the audio's close rejects"])  # type: ignore[attr-defined]
        browser.execute_async_script(FLUSH_AS_IT_STOPS)  # type: ignore[attr-defined]
        button.click()
        wait_until(browser, lambda s: s["state"] == "idle" and button.text == "Connect", 10)
        time.sleep(0.5)  # a flush that settles does so within the stop
        flushes = browser.execute_script("return window.flushesAtStop")  # type: ignore[attr-defined]
        browser.execute_script("window.restore()")  # type: ignore[attr-defined]
        button.click()
        assert wait_until(browser, lambda s: s["state"] == "ready", 30)["state"] == "ready", hook(browser)
        browser.execute_script(SEND_TYPED, "Are you there?")  # type: ignore[attr-defined]
        state = wait_until(browser, lambda s: s["playedSeconds"] >= 0.5, 30)
    assert flushes == [{"settled": True}], flushes
    assert state["playedSeconds"] >= 0.5 and state["errors"] == [], state
