"""Driving Debian's headless Chromium for the page tests: a fake microphone playing real speech, the page's hook."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from tests.conftest import ServerProcess, speech_asset

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FAKE_MIC_RATE = 48000
# Beckett pauses for up to ~1 s between sentences: one turn needs a longer end-of-turn silence.
SILENCE_MS = 1500


def fake_mic_wav(dest: Path, *, lead_s: float = 0.7, tail_s: float = 3.0) -> Path:
    """beckett.wav as 16-bit PCM mono at 48 kHz, padded with digital silence on both sides."""
    data, rate = sf.read(str(speech_asset("beckett.wav")), dtype="float32", always_2d=True)
    speech = soxr.resample(data.mean(axis=1), rate, FAKE_MIC_RATE).astype(np.float32)
    pcm = np.concatenate([np.zeros(int(lead_s * FAKE_MIC_RATE), np.float32), speech,
                          np.zeros(int(tail_s * FAKE_MIC_RATE), np.float32)])
    sf.write(str(dest), pcm, FAKE_MIC_RATE, subtype="PCM_16")
    return dest


def artifacts_dir(tmp_path: Path) -> Path:
    path = Path(os.environ.get("STEPAUDIO_RT_ARTIFACTS") or tmp_path / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def chromium_flags(wav: Path, profile: Path) -> list[str]:
    return [
        "--headless=new", "--no-sandbox",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav.resolve()}%noloop",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        "--disable-sync", "--disable-dev-shm-usage", "--window-size=1100,900",
        f"--user-data-dir={profile}",
    ]


def hook(driver: object) -> dict:
    return driver.execute_script("return JSON.parse(JSON.stringify(window.stepaudio));")  # type: ignore[attr-defined]


def page_text(driver: object, css: str) -> str:
    from selenium.webdriver.common.by import By
    return " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, css))  # type: ignore[attr-defined]


def run_conversation(driver: object, http_url: str, shots: Path, timeout: float = 90.0) -> tuple[dict, Path]:
    """Open the page, connect, and wait for the user's transcript and 0.5 s of reply played."""
    from selenium.webdriver.common.by import By

    driver.get(f"{http_url}/?mode=vad&silence_ms={SILENCE_MS}&ec=0&ns=0&agc=0")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        state = hook(driver)
        heard = page_text(driver, ".turn.user .text").lower()
        if re.search(r"ever tried|fail better", heard) and state["playedSeconds"] >= 0.5:
            break
        if state["errors"]:
            break
        time.sleep(0.25)
    shot = shots / "browser_page.png"
    driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
    return state, shot


def wait_until(driver: object, done: object, timeout: float) -> dict:
    """Poll the page's hook until done(state) or a new error shows or the time is up; returns the last state."""
    deadline = time.monotonic() + timeout
    state = hook(driver)
    known = len(state["errors"])
    while time.monotonic() < deadline and len(state["errors"]) == known and not done(state):  # type: ignore[operator]
        time.sleep(0.1)
        state = hook(driver)
    return state


def wait_until_ended(driver: object, state: str, timeout: float) -> dict:
    """Wait for the page's error line, then for the `state` its teardown leaves: the line is shown first, and the
    state follows once the page has let go of its audio (a few ms; more on a loaded machine, where a test that read
    the state with the line saw 'thinking')."""
    wait_until(driver, lambda s: s["errors"], timeout)
    return wait_until(driver, lambda s: s["state"] == state, timeout)


def healthz_status(server: ServerProcess) -> str:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"{server.http}/healthz", timeout=5) as r:
            return json.loads(r.read())["status"]
    except urllib.error.HTTPError as e:  # 503: loading, full or chat_lm_down
        return json.loads(e.read())["status"]


# Types arguments[0] into the message box and submits it, as Enter does.
SEND_TYPED = ("const m = document.getElementById('message'); m.value = arguments[0];"
              "document.getElementById('compose').requestSubmit();")


def connect_page(driver: object, http_url: str, query: str = "mode=ptt") -> dict:
    """Open the page with `query`, press Connect, and wait until the session is ready."""
    from selenium.webdriver.common.by import By

    driver.get(f"{http_url}/?{query}")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    state = wait_until(driver, lambda s: s["state"] == "ready", 60)
    assert state["state"] == "ready", state
    return state
