"""TemplateCosts: what a chat template adds for tools, measured on its renders and counted against the budget."""

from __future__ import annotations

from context_manager import (
    Conversation,
    FunctionCall,
    FunctionCallOutput,
    TemplateCosts,
    UserMessage,
    measure_template_costs,
)

TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


def words(text: str) -> int:
    return len(text.split())


def render(messages: list[dict[str, object]], tools: list[dict[str, object]] | None) -> str:
    """A toy template: 3 words around each message, 4 words of tool schemas in the system message, 2 around each
    call and each result, and a 5-word hint after a prompt's last result (as llama.cpp's tool_result_hint)."""
    out = []
    for m in messages:
        content = str(m["content"])
        if m["role"] == "system" and tools:
            content += " T1 T2 T3 T4"
        for call in m.get("tool_calls", []):  # type: ignore[attr-defined]
            content += f" <call> {call['function']['name']} {call['function']['arguments']} </call>"
        if m["role"] == "tool":
            content = f"<resp> {content} </resp>"
        out.append(f"<s> {m['role']} {content} </s>")
    if messages[-1]["role"] == "tool":
        out.append("<s> system use it </s>")
    return " ".join(out) + " <s> assistant"


def test_the_costs_are_measured_from_the_template_s_renders() -> None:
    assert measure_template_costs(render, words, [TOOL], system=True, message_overhead=3) == \
        TemplateCosts(tools=4 + 5, call=2, result=2)


def test_the_template_costs_count_against_the_budget() -> None:
    c = Conversation()
    for item in (UserMessage(id="u1", text="old question"), UserMessage(id="u2", text="time?"),
                 FunctionCall(id="f1", call_id="c1", name="get_time", arguments="{}"),
                 FunctionCallOutput(id="o1", call_id="c1", output="noon")):
        c.add(item)
    full = c.messages("", 10_000, words)
    # 3 (the reply's opening) + turn u1 7 + turn u2 6 + call 5+1+1 + output 5+1 = 29, and the template's 10 + 2 + 3
    costs = TemplateCosts(tools=10, call=2, result=3)
    assert c.messages("", 44, words, template=costs) == full
    assert c.messages("", 43, words, template=costs) == full[1:]
    # over the budget (89 > 88), the keep-below target holds the template too: 89 - 7 = 82
    assert c.messages("", 88, words, keep_below=82, template=TemplateCosts(tools=60)) == full[1:]
