"""The page served by a reverse proxy under a sub-path (http://host/voice/ -> the server's /), in real headless
Chromium (see test_browser_page.py for the setup), through a real proxy (reverse_proxy.py)."""

from __future__ import annotations

import pytest

from tests.conftest import ServerProcess
from tests.web.browser import SEND_TYPED, hook, wait_until, wait_until_ended
from tests.web.reverse_proxy import reverse_proxy

pytestmark = pytest.mark.slow


def test_a_page_under_a_sub_path_talks_to_the_server_under_it(tiny_server: ServerProcess, browser: object) -> None:
    """The page at http://proxy/voice/ filled its Server box with ws://proxy/v1/realtime, the host's root, which the
    proxy does not serve: Connect said 'could not connect ... (close code 1006; check the server and the API key)',
    and the server's /healthz and /voices were asked at the root too. Both follow the page's path: the Server box
    says ws://proxy/voice/v1/realtime, the voices come, and a typed message is answered through the proxy."""
    from selenium.webdriver.common.by import By

    with reverse_proxy(tiny_server.http, "/voice/") as page_url:
        browser.get(f"{page_url}?mode=ptt")  # type: ignore[attr-defined]
        box = browser.find_element(By.ID, "url").get_attribute("value")  # type: ignore[attr-defined]
        assert box == "ws" + page_url.removeprefix("http") + "v1/realtime"
        browser.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
        state = wait_until(browser, lambda s: s["state"] == "ready", 60)
        assert state["state"] == "ready" and state["errors"] == [], state
        voices = browser.find_elements(By.CSS_SELECTOR, "#voice option")  # type: ignore[attr-defined]
        assert voices, "no voice from http://proxy/voice/voices"
        browser.execute_script(SEND_TYPED, "Hello there.")  # type: ignore[attr-defined]
        state = wait_until(browser, lambda s: s["playedSeconds"] >= 0.5, 60)
    assert state["errors"] == [] and state["sessionId"], state
    assert state["playedSeconds"] >= 0.5, hook(browser)


NO_UPGRADE = ("could not start: the server at {host} answers, but the WebSocket handshake reached it without its "
              "upgrade: a proxy in between does not pass WebSocket upgrades on (nginx needs proxy_http_version 1.1 "
              'and proxy_set_header Upgrade $http_upgrade and Connection "upgrade")')


@pytest.mark.parametrize(("key", "shown"), [
    ("browser-key", NO_UPGRADE),
    ("wrong-key", "could not start: the server refused the API key: check it under API key"),
    ("", "could not start: the server needs an API key: enter it under API key"),
], ids=["right-key", "wrong-key", "no-key"])
def test_a_proxy_that_drops_websocket_upgrades_is_told_from_a_wrong_key(keyed_server: ServerProcess, browser: object,
                                                                        key: str, shown: str) -> None:
    """Behind a proxy that passes HTTP but not WebSocket upgrades (nginx without proxy_set_header Upgrade), the
    handshake reaches the server as a plain GET and is answered 426, and a wrong key is answered 401: the browser
    reports both as close code 1006, and the page said 'could not connect ... (close code 1006; check the server and
    the API key)' for both, or for a missing key. Each is said for what it is, with what to do."""
    from selenium.webdriver.common.by import By

    with reverse_proxy(keyed_server.http, "/voice/", pass_upgrades=False) as page_url:
        browser.get(f"{page_url}?mode=ptt&key={key}")  # type: ignore[attr-defined]
        browser.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
        state = wait_until_ended(browser, "error", 30)
    host = page_url.split("/")[2]
    assert state["state"] == "error" and state["errors"] == [shown.format(host=host)], state
