"""A request whose consumer is gone (the session hung up, the reply was cancelled) while it waited for the LM's slot is
never handed to llama.cpp: llama.cpp would evaluate its whole prompt first, and live sessions' replies would wait
behind it (30 s for an 8-token reply after six sessions asked for a reply and hung up, on two cores)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from lm_engine.backends.llamacpp import LlamaCppBackend, LlamaCppConfig
from lm_engine.chat import ChatRequest


class SlowServer:
    """Stands in for xllamacpp's server: one request at a time, each `prompt_s` of work before its first chunk."""

    def __init__(self, prompt_s: float) -> None:
        self.prompt_s = prompt_s
        self.lock = threading.Lock()
        self.evaluated: list[str] = []

    def handle_chat_completions(self, body: dict, on_chunk) -> None:
        with self.lock:  # llama.cpp's one slot
            time.sleep(self.prompt_s)
            self.evaluated.append(body["messages"][-1]["content"])
            for piece in ("OK", None):
                chunk = {"choices": [{"index": 0, "delta": {"content": piece} if piece else {},
                                      "finish_reason": None if piece else "stop"}]}
                if on_chunk(chunk):
                    return


def test_requests_abandoned_while_queued_never_reach_llama_cpp() -> None:
    server = SlowServer(prompt_s=0.3)
    backend = LlamaCppBackend(server, LlamaCppConfig(gguf_path=Path("unused.gguf")))
    abandoned = []
    for k in range(5):
        cancel = threading.Event()
        stream = backend.stream(ChatRequest(messages=[{"role": "user", "content": f"abandoned {k}"}]), cancel)
        thread = threading.Thread(target=lambda s=stream: [d for d in s])
        thread.start()
        abandoned.append((cancel, thread))
    time.sleep(0.05)
    for cancel, _ in abandoned:
        cancel.set()  # the sessions hang up
    for _, thread in abandoned:
        thread.join(5)
    t0 = time.monotonic()
    text = "".join(d.text or "" for d in backend.stream(
        ChatRequest(messages=[{"role": "user", "content": "live"}]), threading.Event()))
    waited = time.monotonic() - t0
    assert text == "OK"
    assert server.evaluated[-1] == "live" and len(server.evaluated) <= 2  # at most the one already under way
    assert waited < 1.0, f"the live request waited {waited:.1f} s behind abandoned ones"
