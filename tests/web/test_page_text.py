"""What the page shows of a conversation's words, in real headless Chromium (see test_browser_page.py for the setup):
scripts other than Latin, long replies."""

from __future__ import annotations

import pytest

from tests.conftest import ServerProcess
from tests.web.browser import SEND_TYPED, connect_page, wait_until
from tests.web.fake_realtime import fake_realtime_server, send, send_spoken_reply

pytestmark = pytest.mark.slow

# [left of the first character, left of the last one] of each bubble's text, as laid out on the screen
EDGES = """return [...document.querySelectorAll('.turn .text')].map((t) => {
  const range = document.createRange();
  const at = (node, i) => { range.setStart(node, i); range.setEnd(node, i + 1); return range.getBoundingClientRect(); };
  const last = t.lastChild;
  return [at(t.firstChild, 0).left, at(last, last.length - 1).left];
});"""


def test_a_right_to_left_turn_ends_at_its_left(tiny_server: ServerProcess, browser: object) -> None:
    """A turn in Hebrew (or Arabic) was laid out left to right: its words right to left within the line, but its
    question mark at the right end, where a Hebrew reader takes it for the start of the sentence, and the text aligned
    left. Each bubble's text (and the message box) takes its direction from its words: the '?' ends it at the left."""
    question, answer = "מה השעה?", "השעה שלוש, ומה שלומך היום?"

    def answer_in_hebrew(ws: object, event: dict) -> None:
        if event["type"] == "conversation.item.create":
            send(ws, "conversation.item.added", item={**event["item"], "id": "item_user"})  # type: ignore[arg-type]
        elif event["type"] == "response.create":
            send_spoken_reply(ws, "item_reply", answer, 0.2)  # type: ignore[arg-type]

    with fake_realtime_server(answer_in_hebrew) as url:
        connect_page(browser, tiny_server.http, f"mode=ptt&url={url}")
        browser.execute_script(SEND_TYPED, question)  # type: ignore[attr-defined]
        state = wait_until(browser, lambda s: s["playedSeconds"] >= 0.2, 20)
        edges = browser.execute_script(EDGES)  # type: ignore[attr-defined]
        rtl = "const m = document.getElementById('message'); m.value = arguments[0]; return m.matches(':dir(rtl)');"
        typing = browser.execute_script(rtl, question)  # type: ignore[attr-defined]
    assert state["errors"] == [] and len(edges) == 2, (state, edges)
    assert all(last < first for first, last in edges), edges
    assert typing, "the message box lays Hebrew out left to right"
