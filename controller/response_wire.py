"""A reply's output as the Realtime API shows it, built from what the reply holds: its function calls as items, and
response.done's usage. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from controller.realtime import items as it
from controller.realtime import server_events as sev
from lm_engine.chat import ChatUsage


@dataclass(slots=True)
class ToolCall:
    """A function call of the reply, as far as the LM has streamed it."""

    item_id: str
    call_id: str
    name: str
    arguments: str = ""
    # Its arguments are whole: the LM went on to another call, or ended the reply. A call cut off (the reply
    # cancelled, or stopped at max_output_tokens, mid-arguments) is "incomplete", and clients must not run it.
    complete: bool = False

    def item(self, status: it.ItemStatus | None = None) -> dict[str, object]:
        """The call as an item: `status`, or (None) as far as it got, "completed" or "incomplete"."""
        status = status or ("completed" if self.complete else "incomplete")
        return it.function_call_item(self.item_id, call_id=self.call_id, name=self.name, arguments=self.arguments,
                                     status=status)


def output_texts(text: str, calls: list[ToolCall]) -> list[str]:
    """What the reply wrote, for the LM's tokenizer to count when the LM reported no counts: its text, and each
    call's name and arguments (none empty)."""
    return [t for t in [text] + [p for c in calls for p in (c.name, c.arguments)] if t]


def usage(counted: ChatUsage | None, own: tuple[int, int, int], audio_tokens: int) -> dict[str, object]:
    """response.done's usage: the LM's own counts, else `own` (prompt, its audio, output tokens counted by the
    server), plus the `audio_tokens` that the synthesiser generated for the reply's speech as output audio
    (Step-Audio's TTS-3B; Piper, which makes the waveform directly, has none). Step-Audio's <audio_N> prompt ids
    count as input audio."""
    if counted is None:
        (prompt, audio_in, output), cached = own, 0
    else:
        prompt, audio_in, cached = counted.prompt_tokens, counted.prompt_audio_tokens, counted.cached_tokens
        output = counted.completion_tokens
    return sev.usage(input_text_tokens=prompt - audio_in, input_audio_tokens=audio_in, output_text_tokens=output,
                     output_audio_tokens=audio_tokens, cached_tokens=cached)
