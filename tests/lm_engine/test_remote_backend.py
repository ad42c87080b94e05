"""RemoteChatBackend against a real OpenAI-compatible server: xllamacpp's own HTTP server (llama.cpp server code)
serving the embedded Qwen2.5-Coder-0.5B GGUF on 127.0.0.1, in a subprocess. The malformed-stream cases use a tiny
local HTTP server, since a real server does not send broken SSE on purpose."""
from __future__ import annotations

import base64
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from lm_engine import ChatBackendError, ChatDelta, ChatRequest, RemoteChatBackend
from tests.conftest import ServerProcess
from tests.llama_server import LlamaServer

pytestmark = pytest.mark.slow


@pytest.fixture
def backend(llama_server: LlamaServer) -> Iterator[RemoteChatBackend]:
    b = RemoteChatBackend(llama_server.url + "/v1", timeout=30)
    yield b
    b.close()


def ask(text: str, max_tokens: int = 40) -> ChatRequest:
    return ChatRequest(messages=[{"role": "system", "content": "You are a helpful voice assistant. Be brief."},
                                 {"role": "user", "content": text}], temperature=0, max_tokens=max_tokens)


def test_streams_a_sensible_answer(backend: RemoteChatBackend) -> None:
    deltas = list(backend.stream(ask("What is the capital of France?"), threading.Event()))
    text = "".join(d.text for d in deltas)
    assert "Paris" in text
    assert sum(1 for d in deltas if d.text) > 1  # streamed token by token, not in one piece
    assert deltas[-1].finish_reason == "stop"
    usage = deltas[-1].usage  # asked for with stream_options.include_usage
    assert usage is not None and usage.completion_tokens >= 2 and usage.prompt_tokens > 10
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert backend.model().endswith(".gguf")  # asked the server (GET /v1/models) since none was configured


def test_max_tokens_gives_length(backend: RemoteChatBackend) -> None:
    deltas = list(backend.stream(ask("Write a long story about a dragon.", max_tokens=4), threading.Event()))
    assert deltas[-1].finish_reason == "length"
    assert 1 <= sum(1 for d in deltas if d.text) <= 4


def test_cancel_mid_stream_closes_the_stream_and_stops_the_server(backend: RemoteChatBackend,
                                                                  llama_server: LlamaServer) -> None:
    before = llama_server.metric("tokens_predicted_total")
    cancel = threading.Event()
    texts = 0
    deltas: list[ChatDelta] = []
    for delta in backend.stream(ask("Write a very long story about a dragon.", max_tokens=400), cancel):
        deltas.append(delta)
        if delta.text:
            texts += 1
            if texts == 3:
                cancel.set()
                t_cancel = time.perf_counter()
    t_return = time.perf_counter() - t_cancel
    while llama_server.busy():  # the server notices the closed connection at its next token
        assert time.perf_counter() - t_cancel < 5.0, "server still generating 5 s after cancel"
        time.sleep(0.005)
    t_server = time.perf_counter() - t_cancel
    print(f"\ncancel: stream returned after {t_return * 1e3:.2f} ms, server slot idle after {t_server * 1e3:.0f} ms")
    assert t_return < 0.25  # the consumer polls every 10 ms; slack for a loaded CI machine
    assert deltas[-1] == ChatDelta(finish_reason="cancelled")
    assert texts == 3
    generated = llama_server.metric("tokens_predicted_total") - before
    assert generated <= 3 + 5, f"the server went on generating ({generated} tokens)"


def test_cancel_during_prefill_returns_at_once(backend: RemoteChatBackend, llama_server: LlamaServer) -> None:
    """Nothing has streamed yet (a long prompt is being evaluated): the cancel still ends the reply at once,
    and the server drops the task at its first token."""
    prompt_before = llama_server.metric("prompt_tokens_total")
    prompt_s_before = llama_server.metric("prompt_seconds_total")
    predicted_before = llama_server.metric("tokens_predicted_total")
    seen_before = set(llama_server.prompts_dir.iterdir())
    cancel = threading.Event()

    def cancel_once_the_server_has_the_prompt() -> None:
        # The server logs the rendered prompt when it takes the request, just before it starts evaluating it
        while set(llama_server.prompts_dir.iterdir()) == seen_before:
            time.sleep(0.002)
        cancel.set()

    long_prompt = "Summarise this: " + " ".join(f"item {i} is blue." for i in range(20))  # ~150 tokens
    canceller = threading.Thread(target=cancel_once_the_server_has_the_prompt, daemon=True)
    canceller.start()
    t0 = time.perf_counter()
    deltas = list(backend.stream(ask(long_prompt, max_tokens=200), cancel))
    returned = time.perf_counter() - t0
    canceller.join(10)
    assert cancel.is_set()
    assert deltas == [ChatDelta(finish_reason="cancelled")]
    while llama_server.busy():  # llama.cpp finishes the prompt batch it is in, then sees the closed socket
        assert time.perf_counter() - t0 < 60, "server still busy 60 s after a cancel during prefill"
        time.sleep(0.01)
    prefill_s = llama_server.metric("prompt_seconds_total") - prompt_s_before
    print(f"\ncancel during prefill: stream returned after {returned * 1e3:.0f} ms, server prefill {prefill_s:.2f} s")
    assert llama_server.metric("prompt_tokens_total") - prompt_before >= 100  # it was evaluating the long prompt
    # The server's prefill began after t0, so a stream that returned sooner than the prefill lasted did not wait
    # for it, however slow this machine is.
    assert returned < prefill_s
    assert llama_server.metric("tokens_predicted_total") - predicted_before <= 2


def test_audio_token_text_reaches_the_server_unchanged(backend: RemoteChatBackend, llama_server: LlamaServer) -> None:
    content = "Here is what I said: <audio_12><audio_345><audio_1023> What did I say?"
    seen_before = set(llama_server.prompts_dir.iterdir())
    deltas = list(backend.stream(ChatRequest(messages=[{"role": "user", "content": content}],
                                             temperature=0, max_tokens=2), threading.Event()))
    assert deltas[-1].finish_reason in ("stop", "length")
    new = sorted(set(llama_server.prompts_dir.iterdir()) - seen_before)
    assert len(new) == 1, new
    prompt = new[0].read_text()
    assert f"<|im_start|>user\n{content}<|im_end|>" in prompt, prompt


def test_http_error_raises_with_the_status(llama_server: LlamaServer) -> None:
    bad = RemoteChatBackend(llama_server.url + "/no-such-api", model="m")
    with pytest.raises(ChatBackendError, match="HTTP 404"):
        list(bad.stream(ask("hi"), threading.Event()))
    bad.close()


def test_prompt_longer_than_the_context_raises_the_servers_message(backend: RemoteChatBackend) -> None:
    with pytest.raises(ChatBackendError, match=r"HTTP 400.*context"):
        list(backend.stream(ask("word " * 3000), threading.Event()))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed on exit: nothing listens there


def test_connection_refused_raises() -> None:
    port = _closed_port()
    backend = RemoteChatBackend(f"http://127.0.0.1:{port}/v1", model="m")
    with pytest.raises(ChatBackendError, match="cannot connect"):
        list(backend.stream(ask("hi"), threading.Event()))
    # Without a model name the first request asks /models: the same clear error.
    with pytest.raises(ChatBackendError, match="cannot connect"):
        list(RemoteChatBackend(f"http://127.0.0.1:{port}/v1").stream(ask("hi"), threading.Event()))


# --- malformed streams, from a local server that answers with fixed bytes ---

_CHUNK = 'data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'


class _Canned(http.server.BaseHTTPRequestHandler):
    replies: dict[str, tuple[str, str]] = {
        "/not-json/chat/completions": ("text/event-stream", _CHUNK + "data: {not json\n\n"),
        "/not-object/chat/completions": ("text/event-stream", _CHUNK + "data: [1, 2]\n\n"),
        "/truncated/chat/completions": ("text/event-stream", _CHUNK),
        "/not-sse/chat/completions": ("application/json", '{"choices": []}'),
        "/error-object/chat/completions": ("text/event-stream",
                                           _CHUNK + 'data: {"error": {"message": "KV cache full", "code": 500}}\n\n'),
        "/no-done/chat/completions": ("text/event-stream", _CHUNK + 'data: {"choices":[{"index":0,"delta":{},'
                                      '"finish_reason":"stop"}]}\n\n'),
    }

    # Raw UTF-8 in the JSON, as llama.cpp's server writes it; do_POST sends this reply a byte at a time.
    replies["/byte-by-byte/chat/completions"] = ("text/event-stream", "".join(
        "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]},
                              ensure_ascii=False) + "\n\n" for piece in ("你好", "😀", " 🦜")) + _CHUNK.replace(
        '"content":"Hi"},"finish_reason":null', '},"finish_reason":"stop"') + "data: [DONE]\n\n")

    authorizations: list[str | None] = []
    models: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - a web server's own 404 page, as for a base URL without /v1
        self.authorizations.append(self.headers.get("Authorization"))
        if self.path == "/hangs/models":  # a server that accepts the request and never answers it
            time.sleep(30)
            return
        data = b"<html>\n<head><title>404 Not Found</title></head>\n<body>\n<h1>Not Found</h1>\n" \
               b"<p>The requested URL was not found on this server.</p>\n</body>\n</html>\n" * 3
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.authorizations.append(self.headers.get("Authorization"))
        self.models.append(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["model"])
        content_type, body = self.replies[self.path]
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.path.startswith("/byte-by-byte/"):  # each byte its own TCP segment: a character's bytes apart
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(0.001)
            return
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def canned_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("path", "message"), [
    ("not-json", "malformed SSE data"),
    ("not-object", "not a JSON object"),
    ("truncated", "closed the stream before the reply finished"),
    ("not-sse", "did not answer with server-sent events"),
    ("error-object", "KV cache full"),
])
def test_malformed_streams_raise(canned_url: str, path: str, message: str) -> None:
    backend = RemoteChatBackend(f"{canned_url}/{path}", model="m")
    with pytest.raises(ChatBackendError, match=message):
        list(backend.stream(ask("hi"), threading.Event()))
    backend.close()


def test_an_html_error_page_is_quoted_as_one_line_of_its_text_with_the_v1_hint(canned_url: str) -> None:
    """A URL without the API root's /v1 reaches the web server's own 404 page: the error quotes its text on one
    line, not the HTML, and says where the API usually is."""
    backend = RemoteChatBackend(canned_url)
    with pytest.raises(ChatBackendError) as err:
        backend.model()
    message = str(err.value)
    assert "HTTP 404" in message and "404 Not Found Not Found The requested URL" in message
    assert "\n" not in message and "<" not in message and len(message) < 400
    assert "usually ends in /v1" in message
    backend.close()


def test_credentials_in_the_url_are_sent_but_never_named_in_errors(canned_url: str) -> None:
    """http://user:password@host/v1 is how a server behind Basic auth is reached; the password was quoted in every
    error, which the voice agent sends to each Realtime client (and logs)."""
    host = canned_url.removeprefix("http://")
    backend = RemoteChatBackend(f"http://agent:s3cret@{host}/v1")
    with pytest.raises(ChatBackendError) as err:
        backend.model()
    backend.close()
    assert "HTTP 404" in str(err.value) and f"http://{host}/v1/models" in str(err.value)
    assert "s3cret" not in str(err.value) and "s3cret" not in backend.base_url
    assert _Canned.authorizations[-1] == "Basic " + base64.b64encode(b"agent:s3cret").decode()


def test_the_chat_servers_key_and_model_come_from_the_environment(canned_url: str, monkeypatch) -> None:
    """--chat-url to a server that wants a key (vLLM's --api-key, a hosted one) or that serves several models: the
    key and the model's name come from the environment (a key on the command line would show in `ps`)."""
    from controller.chat_url import open_remote_chat

    monkeypatch.setenv("STEPAUDIO_RT_CHAT_API_KEY", "sk-test")
    monkeypatch.setenv("STEPAUDIO_RT_CHAT_MODEL", "step-audio-chat")
    backend = open_remote_chat(f"{canned_url}/no-done")
    assert list(backend.stream(ask("hi"), threading.Event()))[0] == ChatDelta(text="Hi")
    backend.close()
    assert (_Canned.authorizations[-1], _Canned.models[-1]) == ("Bearer sk-test", "step-audio-chat")


def test_a_server_that_hangs_on_models_fails_in_seconds_not_the_read_timeout(canned_url: str) -> None:
    """The model's name is fetched under a lock every reply takes: a hung GET /models made other sessions' replies
    (and the server's start) wait the whole 60 s read timeout."""
    from lm_engine.backends.remote import MODELS_TIMEOUT_S

    backend = RemoteChatBackend(f"{canned_url}/hangs")
    start = time.monotonic()
    with pytest.raises(ChatBackendError, match="hangs/models"):
        backend.model()
    backend.close()
    assert MODELS_TIMEOUT_S <= time.monotonic() - start < MODELS_TIMEOUT_S + 3


def test_a_finished_stream_without_done_is_accepted(canned_url: str) -> None:
    backend = RemoteChatBackend(f"{canned_url}/no-done", model="m")
    assert list(backend.stream(ask("hi"), threading.Event())) == [ChatDelta(text="Hi"), ChatDelta(finish_reason="stop")]
    backend.close()


# --- end to end: the voice agent server with its chat LM on the remote server ---

async def test_serve_with_chat_url_completes_a_text_turn(llama_server: LlamaServer) -> None:
    from tests.e2e.helpers import RATE, open_conversation

    seen_before = set(llama_server.prompts_dir.iterdir())
    server = ServerProcess("--profile", "embedded", "--chat-url", llama_server.url + "/v1")
    try:
        conv = await open_conversation(server.ws)
        try:
            await conv.update_session(output_modalities=["audio"], audio={"input": {"turn_detection": None}})
            await conv.ask("What is the capital of France? One word.")
            done = await conv.wait_for("response.done", timeout=90)
        finally:
            await conv.close()
        log = server.log()
    finally:
        server.stop()
    assert done["response"]["status"] == "completed", done
    said = conv.of_type("response.output_audio_transcript.done")[-1]["transcript"]
    assert "paris" in said.lower()
    assert len(conv.audio_of(done["response"]["id"])) / RATE >= 0.3
    # The reply came from the remote server (it rendered this turn's prompt), not an in-process llama.cpp.
    prompts = [p.read_text() for p in set(llama_server.prompts_dir.iterdir()) - seen_before]
    assert any("What is the capital of France? One word." in p for p in prompts)
    assert "llama.cpp loaded" not in log
    assert "httpx2" not in log, log  # its INFO line per request (cancelled speculations too) stays out of the log


def test_a_character_whose_bytes_arrive_apart_is_one_delta(canned_url: str) -> None:
    """The SSE stream read a byte at a time: no delta holds U+FFFD, the deltas are the server's."""
    backend = RemoteChatBackend(f"{canned_url}/byte-by-byte", model="m")
    deltas = [d.text for d in backend.stream(ask("hi"), threading.Event()) if d.text]
    backend.close()
    assert deltas == ["你好", "😀", " 🦜"]


def test_characters_split_across_tokens_stream_whole(backend: RemoteChatBackend) -> None:
    """llama.cpp's server holds a character's first tokens back until it is whole (Qwen spells 龘, 𠀀 and 🦜 in two
    or three tokens each): no delta holds U+FFFD and the deltas joined are the text."""
    text = "你好，世界！😀🎉 龘𠀀 🦜"
    request = ChatRequest(messages=[{"role": "system", "content": "You repeat the user's text exactly, nothing else."},
                                    {"role": "user", "content": text}], temperature=0, max_tokens=40)
    deltas = [d.text for d in backend.stream(request, threading.Event()) if d.text]
    assert not [d for d in deltas if "\ufffd" in d], deltas
    assert "".join(deltas) == text, deltas
