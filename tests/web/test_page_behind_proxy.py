"""The page served by a reverse proxy under a sub-path (http://host/voice/ -> the server's /), in real headless
Chromium (see test_browser_page.py for the setup), through a real proxy (reverse_proxy.py)."""

from __future__ import annotations

import pytest

from tests.conftest import ServerProcess
from tests.web.browser import SEND_TYPED, hook, wait_until
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
