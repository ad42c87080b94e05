"""GET /voices: the voices a session may pick, for the browser page's voice picker (on any host)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

from controller.metrics import Metrics
from controller.server import RealtimeServer, ServerConfig, VoiceList


async def _never(*_: object) -> None:
    raise AssertionError("no session in this test")


def _get(url: str) -> tuple[int, bytes, str | None]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read(), answer.headers.get("Access-Control-Allow-Origin")
    except urllib.error.HTTPError as answer:
        return answer.code, answer.read(), answer.headers.get("Access-Control-Allow-Origin")


async def test_voices_lists_the_profiles_voices_once_loaded_for_any_origin() -> None:
    voices = VoiceList(default="Tingting", names=("Tingting", "TingtingRAP"))
    server = RealtimeServer(ServerConfig(port=0), Metrics(), _never, voices=lambda: voices)
    await server.start()
    url = f"http://127.0.0.1:{server.port}/voices"
    try:
        assert (await asyncio.to_thread(_get, url))[0] == 503  # loading: the page keeps its picker as it was
        server.ready = True
        status, body, origin = await asyncio.to_thread(_get, url)
        assert status == 200 and origin == "*"
        assert json.loads(body) == {"default": "Tingting", "voices": ["Tingting", "TingtingRAP"]}
    finally:
        await server.close()
