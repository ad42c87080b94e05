"""--chat-url: checked alike by serve and the offline tools, and a server down at start logged, not fatal."""
from __future__ import annotations

import logging
import socket

import pytest

from controller.chat_url import check_chat_url, open_remote_chat
from controller.errors import ConfigError


@pytest.mark.parametrize("url", ["not-a-url", "http://", "https:///v1", "ftp://host/v1", "127.0.0.1:8000/v1"])
def test_what_cannot_be_an_api_root_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="an http:// or https:// URL ending in /v1"):
        check_chat_url(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/v1", "http://127.0.0.1:80a/v1"])
def test_a_port_out_of_range_or_not_a_number_is_refused(url: str) -> None:
    """It was accepted, and every reply then failed with "connection refused", which points at the server."""
    with pytest.raises(ConfigError, match=r"--chat-url .*: Port"):
        check_chat_url(url)


def test_a_root_without_v1_is_accepted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "controller.chat_url"):
        check_chat_url("http://127.0.0.1:8000/v1/")
        assert not caplog.records
        check_chat_url("http://127.0.0.1:8000")
    assert "does not end in /v1" in caplog.text


def test_a_server_down_at_start_is_logged_and_the_backend_still_made(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("httpx2")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed on exit: nothing listens there
    with caplog.at_level(logging.WARNING, "controller.chat_url"):
        backend = open_remote_chat(f"http://127.0.0.1:{port}/v1")
    try:
        assert backend.base_url.endswith(f":{port}/v1")
        assert "does not answer now" in caplog.text and "cannot connect" in caplog.text
    finally:
        backend.close()
