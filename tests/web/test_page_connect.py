"""Connecting the page to a server that is there but does not answer, in real headless Chromium (see
test_browser_page.py for the setup)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager

import pytest
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection

from tests.conftest import ServerProcess
from tests.web.browser import hook, wait_until_ended
from tests.ws_thread import ws_server_thread

STUCK = ("could not start: the server at 127.0.0.1:{port} took the connection but did not answer in 10 s: it may be "
         "stuck or overloaded (its log may say why). Press Connect to try again.")

pytestmark = pytest.mark.slow


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that takes every connection and never says a word, as a stuck server does; yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def take() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:  # closed at the end of the block
                return

    threading.Thread(target=take, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for conn in held:
            conn.close()


@contextmanager
def server_stuck_in_the_handshake() -> Iterator[int]:
    """A server whose /healthz answers 200 and whose WebSocket handshake never completes; yields the port."""
    release = threading.Event()

    def hold(ws: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade"):
            release.wait(60)
            return ws.respond(503, "gave up\n")
        return ws.respond(200, '{"status": "ok"}\n')

    with ws_server_thread(lambda ws: None, process_request=hold) as port:
        try:
            yield port
        finally:
            release.set()


# Stamps, in the page's clock, the press of Connect and the first error line shown after it.
_TIME_THE_WAIT = """
const errors = document.getElementById('errors');
document.getElementById('connect').addEventListener('click', () => { window.pressedAt = performance.now(); },
                                                    { capture: true });
new MutationObserver(() => {
  if (window.pressedAt !== undefined && errors.children.length) window.errorShownAt ??= performance.now();
}).observe(errors, { childList: true });
"""


@pytest.mark.parametrize("stuck_server", [silent_server, server_stuck_in_the_handshake],
                         ids=["never-answers", "handshake-never-completes"])
def test_a_server_that_takes_the_connection_and_never_answers_gives_up_and_says_so(
        tiny_server: ServerProcess, browser: object, stuck_server: Callable[[], ContextManager[int]]) -> None:
    """A server that took the connection and never answered (stuck, its event loop blocked), or whose /healthz
    answered but whose WebSocket handshake never completed (a stuck session admission, a proxy holding the upgrade):
    Connect left the page 'starting' with the button disabled for as long as the browser waits (minutes), no word and
    no way to cancel but reloading the page. It gives up after 10 s, says so, and Connect can be pressed again."""
    from selenium.webdriver.common.by import By

    with stuck_server() as port:
        browser.get(f"{tiny_server.http}/?mode=ptt&url=ws://127.0.0.1:{port}/v1/realtime")  # type: ignore[attr-defined]
        # How long the user waited, in the page's own clock: from the press to the error line it shows. Measured
        # here, the WebDriver round trips and the polling of a loaded machine were counted in or out of it.
        browser.execute_script(_TIME_THE_WAIT)  # type: ignore[attr-defined]
        browser.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
        state = wait_until_ended(browser, "error", 30)
        waited = browser.execute_script("return (window.errorShownAt - window.pressedAt) / 1000;")  # type: ignore
    assert state["errors"] == [STUCK.format(port=port)] and state["state"] == "error", (state, waited)
    assert 9 < waited < 15, waited
    assert browser.find_element(By.ID, "connect").is_enabled(), hook(browser)  # type: ignore[attr-defined]
