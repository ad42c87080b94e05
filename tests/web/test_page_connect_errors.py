"""Connecting the page and losing the connection: what it says of a refused key, a stopped, full, shutting down or
mistyped server, a page that is not secure and a refused microphone, in real headless Chromium (see
test_browser_page.py for the setup)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests.conftest import ServerProcess
from tests.web.browser import (
    SEND_TYPED,
    connect_page,
    healthz_status,
    hook,
    page_text,
    wait_until,
    wait_until_ended,
)
from tests.web.fake_realtime import fake_realtime_server

pytestmark = pytest.mark.slow


def test_api_key_travels_as_subprotocol_and_a_wrong_key_is_shown(keyed_server: ServerProcess, browser: object) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(f"{keyed_server.http}/?key=wrong-key")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not hook(driver)["errors"]:
        time.sleep(0.05)
    assert "the server refused the API key" in page_text(driver, "#errors li"), hook(driver)
    assert hook(driver)["sessionId"] is None

    driver.get(f"{keyed_server.http}/?key=browser-key")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    while time.monotonic() < deadline and hook(driver)["state"] != "listening" and not hook(driver)["errors"]:
        time.sleep(0.05)
    state = hook(driver)
    assert state["errors"] == [] and state["sessionId"], state
    assert page_text(driver, "#errors li") == ""


def test_errors_of_a_failed_connect_go_once_connected(keyed_server: ServerProcess, browser: object) -> None:
    """A wrong key, corrected in the page, and Connect again: the session worked, yet 'could not connect ... check the
    server and the API key' stayed on the page in red next to it (the same after a server restart)."""
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(f"{keyed_server.http}/?key=wrong-key")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not page_text(driver, "#errors li"):
        time.sleep(0.05)
    assert "the server refused the API key" in page_text(driver, "#errors li"), hook(driver)

    key = driver.find_element(By.ID, "key")  # type: ignore[attr-defined]
    key.clear()
    key.send_keys("browser-key")
    driver.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    while time.monotonic() < deadline and hook(driver)["state"] != "listening":
        time.sleep(0.05)
    state = hook(driver)
    assert state["state"] == "listening" and state["sessionId"], state
    assert page_text(driver, "#errors li") == "", state


def test_connect_with_the_server_stopped_says_so(browser: object) -> None:
    """The page stays open after the server stops; Connect then said 'Failed to load worklet module script:
    .../capture-worklet.js (Network error)'."""
    from selenium.webdriver.common.by import By

    server = ServerProcess("--profile", "embedded")
    try:
        browser.get(f"{server.http}/")  # type: ignore[attr-defined]
    finally:
        server.stop()
    browser.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    state = wait_until(browser, lambda s: s["errors"], 20)
    assert state["errors"] == [f"could not start: the server at 127.0.0.1:{server.port} does not answer: is "
                               "stepaudio-rt serve running? Press Connect again once it is."]
    assert state["state"] == "error"


@pytest.fixture(scope="module")
def one_place_server() -> Iterator[ServerProcess]:
    server = ServerProcess("--profile", "tiny", "--max-sessions", "1")
    yield server
    server.stop()


@contextmanager
def holding_the_only_place(server: ServerProcess) -> Iterator[None]:
    """A session connected to a --max-sessions 1 server for the block; after it, its place is free again."""
    from websockets.sync.client import connect

    with connect(server.ws, open_timeout=30) as holder:
        assert json.loads(holder.recv(timeout=30))["type"] == "session.created"
        yield
    deadline = time.monotonic() + 30  # the held session ends once its client has gone
    while time.monotonic() < deadline and healthz_status(server) == "full":
        time.sleep(0.2)


FULL = "could not start: the server is full (all its sessions are taken): try again later"


def test_connect_to_a_full_server_says_it_is_full(one_place_server: ServerProcess, browser: object) -> None:
    """--max-sessions 1 with one session connected: /healthz answers 503 {"status": "full", ...} and the page says that
    the server is full (not that it is loading or down), with no script error in the console; once the place is free,
    Connect connects and the red line goes."""
    from selenium.webdriver.common.by import By

    driver = browser
    with holding_the_only_place(one_place_server):
        driver.get(f"{one_place_server.http}/?mode=ptt")  # type: ignore[attr-defined]
        driver.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
        state = wait_until(driver, lambda s: s["errors"], 20)
        logs = driver.get_log("browser")  # type: ignore[attr-defined]
    assert state["errors"] == [FULL] and page_text(driver, "#errors li") == FULL, (state, logs)
    assert state["state"] == "error" and state["sessionId"] is None, state
    # Chromium logs the 503 the page asked for as a failed resource: the only error line allowed.
    healthz_503 = (f"{one_place_server.http}/healthz - Failed to load resource: "
                   "the server responded with a status of 503")
    assert [e for e in logs if e["level"] == "SEVERE" and not e["message"].startswith(healthz_503)] == [], logs

    driver.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    state = wait_until(driver, lambda s: s["state"] == "ready", 30)
    assert state["state"] == "ready" and state["sessionId"], state
    assert page_text(driver, "#errors li") == "", state


def test_a_full_server_on_another_host_is_said_to_be_full(one_place_server: ServerProcess, browser: object) -> None:
    """A page served by one host and connecting to a full server on another said only 'could not connect ... (close
    code 1006; check the server and the API key)': the browser hides the handshake's 503, and the page asked only its
    own host's /healthz. That server's /healthz is readable from another origin now, and the page asks it."""
    from selenium.webdriver.common.by import By

    driver = browser
    # localhost and 127.0.0.1 are two origins: the page's host is not the server's.
    page = one_place_server.http.replace("127.0.0.1", "localhost")
    with holding_the_only_place(one_place_server):
        driver.get(f"{page}/?mode=ptt&url={one_place_server.ws}")  # type: ignore[attr-defined]
        driver.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
        state = wait_until(driver, lambda s: s["errors"], 20)
    assert state["errors"] == [FULL] and page_text(driver, "#errors li") == FULL, state
    assert state["state"] == "error" and state["sessionId"] is None, state


def test_a_page_that_loses_the_last_place_to_another_says_the_server_is_full(one_place_server: ServerProcess,
                                                                            browser: object) -> None:
    """Two pages connecting at once: this one's check found a free place, the other took it while this one opened
    its microphone, and this one said only 'close code 1006; check the server and the API key'. A refused
    handshake now asks /healthz again and says that the server is full."""
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(f"{one_place_server.http}/?mode=ptt")  # type: ignore[attr-defined]
    # The microphone opens only when the test says: the other page takes the place in between.
    hold_the_microphone = """
        const devices = navigator.mediaDevices, open = devices.getUserMedia.bind(devices);
        window.micAsked = false;
        window.micGo = new Promise((go) => { window.letMicGo = go; });
        devices.getUserMedia = async (c) => { window.micAsked = true; await window.micGo; return open(c); };"""
    driver.execute_script(hold_the_microphone)  # type: ignore[attr-defined]
    driver.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not driver.execute_script("return window.micAsked"):  # type: ignore
        time.sleep(0.05)
    with holding_the_only_place(one_place_server):
        driver.execute_script("window.letMicGo()")  # type: ignore[attr-defined]
        state = wait_until(driver, lambda s: s["errors"], 20)
    assert state["errors"] == [FULL] and page_text(driver, "#errors li") == FULL, state
    assert state["state"] == "error" and state["sessionId"] is None, state


def test_a_server_shutting_down_says_so_not_only_its_close_code(browser: object) -> None:
    """Stopping the server (Ctrl-C, a restart) closes each session with 1001: the page said only 'connection closed
    by the server (code 1001)', a bare number. It says that the server shut down and to connect again later."""
    server = ServerProcess("--profile", "tiny")
    try:
        connect_page(browser, server.http)
    finally:
        server.stop()
    state = wait_until_ended(browser, "closed", 30)
    shown = "the server shut down (code 1001: server shutting down): connect again once it is back"  # its reason
    assert state["errors"] == [shown] and page_text(browser, "#errors li") == shown, state
    assert state["state"] == "closed", state


@pytest.mark.parametrize(("code", "shown"), [
    (1011, "the server failed in this session (code 1011: internal error): its log says why; connect again"),
    (1006, "the connection to the server was lost (code 1006): connect again"),
    (1013, "the server cannot take a session yet (code 1013: loading): connect again in a few seconds"),
])
def test_a_session_ended_on_the_server_says_why_not_only_its_close_code(
        tiny_server: ServerProcess, browser: object, code: int, shown: str) -> None:
    """A session that crashed on the server is closed with 1011 'internal error', and a dropped connection reads as
    1006: the page said 'connection closed by the server (code 1011: internal error)' or '(code 1006)', numbers a user
    cannot act on (and a dropped connection was not closed by the server). A server not yet ready closes with 1013
    'loading' (try again later), shown as a bare 'code 1013: loading'. It says what happened and what to do."""
    def end_on_a_message(ws: object, event: dict) -> None:
        if event["type"] != "conversation.item.create":
            return
        if code == 1011:
            ws.close(1011, "internal error")  # type: ignore[attr-defined]  # as controller/app.py does on a crash
        elif code == 1013:
            ws.close(1013, "loading")  # type: ignore[attr-defined]  # as controller/app.py does before it is ready
        else:
            ws.socket.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]  # no close frame: a network failure

    with fake_realtime_server(end_on_a_message) as url:
        connect_page(browser, tiny_server.http, f"mode=ptt&url={url}")
        browser.execute_script(SEND_TYPED, "Hello.")  # type: ignore[attr-defined]
        state = wait_until_ended(browser, "closed", 30)
    assert state["errors"] == [shown] and page_text(browser, "#errors li") == shown, state
    assert state["state"] == "closed", state


INSECURE = "the microphone needs a secure page: open it as http://localhost or over https"


def test_connect_on_a_page_that_is_not_secure_says_why_it_cannot_start(tiny_server: ServerProcess,
                                                                         launch_browser: Callable) -> None:
    """A page opened over http from another host (a LAN address) is no secure origin: the browser gives it neither
    a microphone nor audio worklets. Connect said only "could not start: Cannot read properties of undefined (reading
    'addModule')". It says that the page must be opened as localhost or over https."""
    from selenium.webdriver.common.by import By

    driver = launch_browser(lambda flags: [*flags, "--host-resolver-rules=MAP lan-host.test 127.0.0.1"])
    driver.get(f"http://lan-host.test:{tiny_server.port}/?mode=ptt")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    state = wait_until(driver, lambda s: s["state"] == "error", 20)
    assert state["errors"][-1] == f"could not start: {INSECURE}", state
    assert page_text(driver, "#errors li") == f"could not start: {INSECURE}", state  # not under the same, from load
    assert state["state"] == "error", state


def test_connect_after_the_server_was_killed_shows_one_line_the_current_one(browser: object) -> None:
    """The server killed mid-session (1006), then Connect while it was still down: the page showed 'the connection
    to the server was lost' and, under it, 'could not start: ... does not answer', two red lines of which the first
    was over. A new attempt's line replaces the earlier one."""
    from selenium.webdriver.common.by import By

    server = ServerProcess("--profile", "tiny")
    try:
        connect_page(browser, server.http)
        server.proc.kill()  # no close frame: the page sees 1006
        state = wait_until_ended(browser, "closed", 30)  # pressed before, Connect still read Disconnect
    finally:
        server.stop()
    assert page_text(browser, "#errors li") == "the connection to the server was lost (code 1006): connect again", state
    browser.get_log("browser")  # type: ignore[attr-defined]  # read (and so emptied) up to here
    browser.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    state = wait_until(browser, lambda s: s["state"] == "error", 30)
    shown = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#errors li")]  # type: ignore[attr-defined]
    assert shown == [f"could not start: the server at 127.0.0.1:{server.port} does not answer: is stepaudio-rt serve "
                     "running? Press Connect again once it is."], state
    assert state["state"] == "error", state
    # Chromium logs any refused request as a console error, which no page can prevent: the one /healthz request that
    # finds the server down is the only one (no worklet, /voices or WebSocket tried after it, no script error).
    severe = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]  # type: ignore[attr-defined]
    assert severe == [f"{server.http}/healthz - Failed to load resource: net::ERR_CONNECTION_REFUSED"], severe


@pytest.mark.parametrize(("flag", "shown"), [
    ("--use-fake-ui-for-media-stream", "the microphone is blocked for this page: allow it in the browser (the icon at "
                                       "the left of the address bar) and press Connect again"),
    ("--use-fake-device-for-media-stream", "no microphone was found: plug one in and press Connect again"),
])
def test_a_microphone_refused_or_missing_says_what_to_do(tiny_server: ServerProcess, launch_browser: Callable,
                                                         flag: str, shown: str) -> None:
    """Microphone permission denied (no flag granting it: headless Chromium then denies it) said only 'could not start:
    Permission denied', and a machine without a microphone 'could not start: Requested device not found'. Each says
    what is wrong and what to do."""
    from selenium.webdriver.common.by import By

    driver = launch_browser(lambda flags: [f for f in flags if f != flag])
    driver.get(f"{tiny_server.http}/?mode=ptt")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    state = wait_until(driver, lambda s: s["state"] == "error", 30)
    assert state["errors"] == [f"could not start: {shown}"], state
    assert page_text(driver, "#errors li") == f"could not start: {shown}", state


def test_connect_to_a_server_on_another_host_that_is_down_says_so_before_opening_the_microphone(
        tiny_server: ServerProcess, browser: object) -> None:
    """A page whose Server box names another host (?url=) that is not running: its /healthz could not be read, which
    the page took as 'a server without CORS headers', so it opened the microphone (a permission prompt, for nothing),
    tried the WebSocket and said only 'could not connect ... (close code 1006; check the server and the API key)'. The
    page asks once more without reading the answer (no CORS needed): nothing answers, so it says the server is down."""
    from selenium.webdriver.common.by import By

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    browser.get(f"{tiny_server.http}/?mode=ptt&url=ws://127.0.0.1:{port}/v1/realtime")  # type: ignore[attr-defined]
    browser.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    state = wait_until(browser, lambda s: s["state"] == "error", 30)
    assert state["errors"] == [f"could not start: the server at 127.0.0.1:{port} does not answer: is stepaudio-rt "
                               "serve running? Press Connect again once it is."], state
    assert state["micSettings"] is None and state["capturedChunks"] == 0, state  # the microphone was never opened


def test_an_api_key_a_browser_cannot_send_is_said_so_and_not_shown(tiny_server: ServerProcess, browser: object) -> None:
    """The key travels as a WebSocket subprotocol, which only takes a token's characters: a key such as a base64 one
    ('/', '+', '=') can never be sent by a browser. Connect opened the microphone, then said only "Failed to construct
    'WebSocket': The subprotocol 'openai-insecure-api-key.s3cr/t+key==' is invalid.", the secret typed into a password
    box shown in clear. It says which characters a key may have, before opening the microphone, without the key."""
    from selenium.webdriver.common.by import By

    browser.get(f"{tiny_server.http}/?mode=ptt&key=s3cr%2Ft%2Bkey%3D%3D")  # type: ignore[attr-defined]
    browser.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    state = wait_until(browser, lambda s: s["state"] == "error", 30)
    shown = page_text(browser, "#errors li")
    assert shown == ("could not start: a browser can send only API keys of letters, digits and !#$%&'*+-.^_`|~ (the "
                     "key travels as a WebSocket subprotocol): this one has other characters; give the server a key "
                     "without them"), state
    assert "s3cr" not in shown and state["micSettings"] is None and state["capturedChunks"] == 0, state


@pytest.mark.parametrize("typed", ["{http}", "ws://127.0.0.1:{port}/"])
def test_a_server_address_without_the_api_path_is_said_so(tiny_server: ServerProcess, browser: object,
                                                          typed: str) -> None:
    """The page's own address pasted into the Server box (or a ws:// one without /v1/realtime): the server refused the
    handshake as not found, and the page said only 'could not connect ... (close code 1006; check the server and the
    API key)', the key blamed on a server without one. It names the address to use."""
    from urllib.parse import quote

    from selenium.webdriver.common.by import By

    url = typed.format(http=tiny_server.http, port=tiny_server.port)
    browser.get(f"{tiny_server.http}/?mode=ptt&url={quote(url, safe='')}")  # type: ignore[attr-defined]
    browser.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    state = wait_until(browser, lambda s: s["state"] == "error", 30)
    assert state["errors"] == [f"could not start: nothing takes a session at {url}: the server's address is "
                               f"{tiny_server.ws}"], state
