"""The `browser` fixture: Debian's headless Chromium through Selenium (see browser.py); `launch_browser` starts one
with other flags (a microphone that is refused, a host that is not a secure origin)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, missing_peer
from tests.web.browser import CHROMEDRIVER, CHROMIUM, chromium_flags, fake_mic_wav

EditFlags = Callable[[list[str]], list[str]]  # the usual flags -> the flags to start Chromium with


@pytest.fixture
def launch_browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[EditFlags], object]]:
    """Starts Chromium with the usual flags as `edit` changes them; every browser started quits after the test."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        missing_peer("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    home = tmp_path / "home"
    for sub in ("", ".config", ".cache", ".local/share"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local/share"))
    wav = fake_mic_wav(tmp_path / "beckett-48k.wav")
    drivers: list[object] = []

    def launch(edit: EditFlags) -> object:
        n = len(drivers)  # each browser its own profile: two cannot share one
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in edit(chromium_flags(wav, tmp_path / f"chromium-profile{n or ''}")):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / f"chromedriver{n or ''}.log"))
        drivers.append(webdriver.Chrome(options=options, service=service))
        return drivers[-1]

    try:
        yield launch
    finally:
        for driver in drivers:
            driver.quit()  # type: ignore[attr-defined]


@pytest.fixture
def browser(launch_browser: Callable[[EditFlags], object]) -> object:
    return launch_browser(lambda flags: flags)


@pytest.fixture(scope="module")
def tiny_server() -> Iterator[ServerProcess]:
    server = ServerProcess("--profile", "tiny")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[ServerProcess]:
    server = ServerProcess("--profile", "tiny", "--api-key", "browser-key")
    yield server
    server.stop()
