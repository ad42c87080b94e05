"""A chat backend on a remote OpenAI-compatible server (vLLM serving Step-Audio-Chat with -tp N, llama.cpp, ...).

`stream()` POSTs `/chat/completions` with `stream: true` and translates the server-sent events with the same
`OaiChunkTranslator` the in-process llama.cpp backend uses. Audio input reaches the Chat LM as `<audio_N>` text
inside the messages, so nothing here knows about audio: the messages go out as given.

Threads and cancellation: a producer thread reads the HTTP stream into a queue; `stream()` (the consumer, on the
caller's worker thread) polls `cancel` every few ms. On cancel (or when the consumer closes the generator) it
returns at once and shuts the TCP socket down, which wakes the producer's blocked read and tells the server the
client is gone: vLLM aborts the request on disconnect, llama.cpp stops the task at its next token. The socket is
taken from httpx2's `trace` hook as soon as the connection opens, so a cancel during a long prefill also closes it.
Keep-alive is off: each reply owns one connection, which is what makes closing it a cancel (and a stale pooled
connection cannot fail the first request of a turn).

Errors (connection refused, timeouts, HTTP 4xx/5xx, a stream that is not SSE, malformed or truncated SSE, an
error object in the stream) raise ChatBackendError with the server's own message where it sent one.
"""
from __future__ import annotations

import json
import logging
import queue
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

try:
    import httpx2
except ModuleNotFoundError as exc:  # an optional dependency: say which extra brings it
    raise ModuleNotFoundError("the remote chat backend needs httpx2: pip install 'stepaudio-rt[remote]'") from exc

from lm_engine.backends.oai_stream import END, OaiChunkTranslator, chat_completion_body, drain, tool_names
from lm_engine.chat import ChatBackendError, ChatDelta, ChatRequest

logger = logging.getLogger(__name__)

MODELS_TIMEOUT_S = 5.0  # GET /models answers at once on a live server
_ERROR_BODY_MAX = 2000  # characters of an error response quoted in the exception
_HTML_TEXT_MAX = 200  # of an HTML error page's text: its title and first lines say what it is
# What BPE vocabularies rarely merge, counted by estimate_tokens as a token each: a digit, a CJK ideograph, kana,
# hangul or full-width character, a punctuation mark or symbol, and a space before a digit.
_DENSE_CHARS = re.compile("[0-9\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]"
                          "|[^\\w\\s]| (?=[0-9])")


class _Abort:
    """The socket of one reply, and a thread-safe way to shut it down from the consumer side.

    Invariant: once `finish()` ran (the producer closed the response) `abort()` never touches the socket, so a
    recycled file descriptor cannot be shut down by mistake.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._aborted = False
        self._finished = False

    @property
    def aborted(self) -> bool:
        return self._aborted

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            if sock is None or self._finished:
                return
            self._sock = sock
            if self._aborted:
                _shutdown(sock)

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            if self._sock is not None and not self._finished:
                _shutdown(self._sock)

    def finish(self) -> None:
        with self._lock:
            self._finished = True
            self._sock = None


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a recv() blocked in another thread; close() alone would not
    except OSError:
        pass  # already closed by the peer or by the producer


class RemoteChatBackend:
    """A ChatBackend over an OpenAI-compatible `/v1/chat/completions` endpoint. Thread-safe; share one per process.

    Args:
        base_url: the API root including the version, e.g. `http://10.0.0.5:8000/v1`.
        api_key: sent as `Authorization: Bearer ...` when given.
        model: the served model name; None asks the server (`GET /models`, first entry) on the first request.
        timeout: seconds to wait for any read (first token included: a long prefill must fit in it) or write.
        connect_timeout: seconds to wait for the TCP (and TLS) connection.
    """

    def __init__(self, base_url: str, api_key: str | None = None, model: str | None = None, timeout: float = 60.0,
                 *, connect_timeout: float = 5.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError(f"timeouts must be > 0, got timeout={timeout}, connect_timeout={connect_timeout}")
        self.base_url = base_url.rstrip("/")
        # Credentials in the URL (http://user:password@host/v1) go out as Basic auth but never into base_url, which
        # every error names: those errors reach each Realtime client and the logs.
        url = httpx2.URL(self.base_url)
        auth = None
        if url.username or url.password:
            auth = httpx2.BasicAuth(url.username, url.password)
            self.base_url = str(url.copy_with(username=None, password=None))
        self._model = model
        self._model_lock = threading.Lock()
        self._connect_timeout = connect_timeout
        headers = {"Accept": "text/event-stream"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client: httpx2.Client | None = httpx2.Client(
            headers=headers,
            auth=auth,
            timeout=httpx2.Timeout(timeout, connect=connect_timeout),
            limits=httpx2.Limits(max_keepalive_connections=0),
        )
        self._aborts: set[_Abort] = set()
        self._aborts_lock = threading.Lock()

    def model(self) -> str:
        """The model name sent with each request (asks the server once when none was configured)."""
        with self._model_lock:
            if self._model is None:
                self._model = self._fetch_model()
            return self._model

    def check(self) -> None:
        """Ask the server whether it answers now (GET /models, a few seconds at most); ChatBackendError if not."""
        self._fetch_model()

    @staticmethod
    def estimate_tokens(text: str) -> int:
        """An estimate of `text`'s tokens, on the high side where vocabularies split text finely.

        Not the real count: the server may serve any model, whose tokenizer this process does not have, and asking
        the server (vLLM's /tokenize) would cost a round trip per text to a remote, busy server. BPE vocabularies
        (Qwen, Llama, Step-1) give about 4 characters of English a token, but one to each digit, most punctuation
        and most CJK, kana or hangul characters: counting those at 4 a token let a digit-heavy or Chinese session's
        prompts grow to 2-4 times the budget. Against Qwen2.5's tokenizer this is 1.0-1.8 times the real count
        (English 1.1-1.3), never below it on digits, CJK, hangul, code or English (test_prompt_budget_real_tokens)."""
        dense = len(_DENSE_CHARS.findall(text))
        return max(1, dense + (len(text) - dense + 3) // 4)

    def stream(self, request: ChatRequest, cancel: threading.Event) -> Iterator[ChatDelta]:
        """Stream the reply (see ChatBackend.stream). Raises ChatBackendError when the server fails."""
        client = self._client
        if client is None:
            raise ChatBackendError("backend is closed")
        if cancel.is_set():
            yield ChatDelta(finish_reason="cancelled")
            return
        body = chat_completion_body(request, model=self.model())
        items: queue.Queue[object] = queue.Queue()
        abort = _Abort()
        with self._aborts_lock:
            self._aborts.add(abort)
        producer = threading.Thread(target=self._produce, args=(client, body, items, abort),
                                    name="remote-chat-stream", daemon=True)
        producer.start()
        translator = OaiChunkTranslator(tool_names(request))

        def failure(cause: BaseException | str) -> ChatBackendError:
            if isinstance(cause, ChatBackendError):
                return cause
            return ChatBackendError(f"chat server {self.base_url} failed the request: {cause}")

        try:
            yield from drain(items, cancel, translator, failure)
        finally:
            # Reached on return, on error and when the consumer closes the generator early.
            abort.abort()
            with self._aborts_lock:
                self._aborts.discard(abort)

    def close(self) -> None:
        """Abort the replies in flight and close the HTTP client. The backend is unusable afterwards."""
        with self._aborts_lock:
            aborts = list(self._aborts)
        for abort in aborts:
            abort.abort()
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # --- producer thread ---

    def _produce(self, client: httpx2.Client, body: dict[str, Any], items: queue.Queue[object],
                 abort: _Abort) -> None:
        url = f"{self.base_url}/chat/completions"

        def trace(event: str, info: dict[str, Any]) -> None:
            if event == "connection.connect_tcp.complete":
                abort.attach(_socket_of(info.get("return_value")))

        try:
            with client.stream("POST", url, json=body, extensions={"trace": trace}) as response:
                abort.attach(_socket_of(response.extensions.get("network_stream")))
                if response.status_code >= 400:
                    response.read()
                    raise _http_error(url, response)
                self._read_events(url, response, items)
        except ChatBackendError as exc:
            items.put(exc)
        except httpx2.HTTPError as exc:
            if not abort.aborted:  # after an abort the read fails by design and nobody is listening
                items.put(ChatBackendError(_transport_message(url, exc)))
        except Exception as exc:  # a worker-thread root: hand the error to the consumer
            items.put(ChatBackendError(f"chat server {url}: unexpected failure: {exc!r}"))
        finally:
            abort.finish()
            items.put(END)

    def _read_events(self, url: str, response: httpx2.Response, items: queue.Queue[object]) -> None:
        """Queue each chunk dict; raise ChatBackendError for anything that is not a well-formed OpenAI stream."""
        finished = False  # a choice carried finish_reason: tolerate a server that omits [DONE]
        for event in httpx2.EventSource(response):
            if event.event == "error":
                raise ChatBackendError(f"chat server {url} sent an error event: {_error_message(event.data)}")
            if event.data == "[DONE]":
                return
            try:
                chunk = json.loads(event.data)
            except json.JSONDecodeError as exc:
                raise ChatBackendError(f"chat server {url} sent malformed SSE data "
                                       f"{event.data[:200]!r}: {exc}") from exc
            if not isinstance(chunk, dict):
                raise ChatBackendError(f"chat server {url} sent SSE data that is not a JSON object: "
                                       f"{event.data[:200]!r}")
            finished = finished or any(isinstance(c, dict) and c.get("finish_reason")
                                       for c in chunk.get("choices") or ())
            items.put(chunk)
        if not finished:
            raise ChatBackendError(f"chat server {url} closed the stream before the reply finished")

    def _fetch_model(self) -> str:
        client = self._client
        if client is None:
            raise ChatBackendError("backend is closed")
        url = f"{self.base_url}/models"
        try:
            # A short wait: a server that hangs here holds the model lock, and every reply waits behind it.
            response = client.get(url, headers={"Accept": "application/json"},
                                  timeout=httpx2.Timeout(MODELS_TIMEOUT_S, connect=self._connect_timeout))
        except httpx2.HTTPError as exc:
            raise ChatBackendError(_transport_message(url, exc)) from exc
        if response.status_code >= 400:
            raise _http_error(url, response)
        try:
            return str(response.json()["data"][0]["id"])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ChatBackendError(f"chat server {url} lists no model; name the one to use (STEPAUDIO_RT_CHAT_MODEL "
                                   "for --chat-url)") from exc


def _socket_of(network_stream: Any) -> socket.socket | None:
    if network_stream is None:
        return None
    sock = network_stream.get_extra_info("socket")
    return sock if isinstance(sock, socket.socket) else None


def _transport_message(url: str, exc: httpx2.HTTPError) -> str:
    if isinstance(exc, httpx2.ConnectError):
        return f"cannot connect to chat server {url}: {exc}"
    if isinstance(exc, httpx2.TimeoutException):
        return f"chat server {url} timed out ({type(exc).__name__}): {exc}"
    if isinstance(exc, httpx2.SSEError):
        return f"chat server {url} did not answer with server-sent events: {exc}"
    return f"chat server {url} failed ({type(exc).__name__}): {exc}"


def _http_error(url: str, response: httpx2.Response) -> ChatBackendError:
    # a 404 for /models or /chat/completions: most often a base URL without the API version (vLLM's is .../v1);
    # with it, a server that is not an OpenAI-compatible one (a voice agent's own /v1, another service)
    hint = ""
    if response.status_code == 404:
        hint = ("; the base URL is the API root, which usually ends in /v1" if "/v1/" not in url else
                "; nothing there serves the OpenAI API: is the URL that of the Chat LM's server (vLLM, llama.cpp's "
                "llama-server), not of another service?")
    return ChatBackendError(f"chat server {url} answered HTTP {response.status_code}: "
                            f"{_error_message(response.text)}{hint}")


def _error_message(text: str) -> str:
    """The `error.message` of an OpenAI-style error body, else the (clipped) body itself, an HTML page's text
    only (a proxy's or a web server's error page)."""
    try:
        payload = json.loads(text)
    except ValueError:
        if text.lstrip().startswith("<"):
            return " ".join(re.sub(r"<[^>]*>", " ", text).split())[:_HTML_TEXT_MAX] or "(an empty HTML page)"
        return _one_line(text) or "(empty body)"
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, dict) and error.get("message"):
        return _one_line(str(error["message"]))
    return _one_line(text)


def _one_line(text: str) -> str:
    """A server's text on one line: a plain "not found\n" body broke the CLI's one-line error in two."""
    return " ".join(text.split())[:_ERROR_BODY_MAX]
