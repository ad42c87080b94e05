"""`--chat-url`, a Chat LM on an OpenAI-compatible server (vLLM, llama.cpp's server, ...): the option checked the
same way by every command, and its backend opened and asked once at start whether it answers."""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from controller.errors import ConfigError

if TYPE_CHECKING:
    from lm_engine.backends.remote import RemoteChatBackend

logger = logging.getLogger(__name__)

API_KEY_ENV = "STEPAUDIO_RT_CHAT_API_KEY"  # sent as Authorization: Bearer
MODEL_ENV = "STEPAUDIO_RT_CHAT_MODEL"  # the served model's name; unset, the first the server's /models lists


def check_chat_url(url: str) -> None:
    """A ConfigError for what cannot be a server's API root; a warning for a root that is not the usual /v1."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--chat-url {url!r}: an http:// or https:// URL ending in /v1, "
                          "e.g. http://127.0.0.1:8000/v1")
    try:
        parts.port
    except ValueError as exc:  # parsed on access; else a port such as 99999 failed each reply "connection refused"
        raise ConfigError(f"--chat-url {url!r}: {exc}") from None
    if not url.rstrip("/").endswith("/v1"):
        logger.warning("--chat-url %s does not end in /v1, where OpenAI-compatible servers (vLLM, llama.cpp) "
                       "serve /chat/completions and /models", url)


def open_remote_chat(url: str, *, required: bool = False) -> RemoteChatBackend:
    """The RemoteChatBackend for url, after asking the server for its model. A server that does not answer is a
    ConfigError if `required` (a one-shot command), else logged: a server's sessions get an error event for each
    reply until it answers, and it may just be starting too."""
    from lm_engine.backends.remote import RemoteChatBackend  # the optional `remote` extra
    from lm_engine.chat import ChatBackendError

    # From the environment, not the command line, where a key would show in `ps`: vLLM's --api-key, a hosted server.
    backend = RemoteChatBackend(url, api_key=os.environ.get(API_KEY_ENV) or None,
                                model=os.environ.get(MODEL_ENV) or None)
    try:
        logger.info("chat LM: remote server %s, model %s", backend.base_url, backend.model())
    except ChatBackendError as exc:
        if required:
            backend.close()
            raise ConfigError(f"--chat-url: {exc}") from exc
        logger.warning("chat LM: remote server %s does not answer now: %s; replies fail until it does",
                       backend.base_url, exc)
    return backend


def remote_chat_problem(backend: RemoteChatBackend) -> str | None:
    """Why the remote Chat LM cannot answer a reply now (its server down, refusing, or lost), or None. Blocks for the
    request (a few seconds at most): call it off the event loop."""
    from lm_engine.chat import ChatBackendError

    try:
        backend.check()
    except ChatBackendError as exc:
        return f"chat LM unreachable: {exc}"
    return None
