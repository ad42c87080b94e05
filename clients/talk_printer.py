"""talk's live transcript: user and assistant lines as the events arrive, and one timing line per finished turn."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from clients.events import CLIENT_RESPONSE_LOST, ServerEvent
from clients.heard import SpokenReply
from clients.turns import Turn

__all__ = ["TranscriptPrinter", "format_say", "format_turn"]


class TranscriptPrinter:
    """Live transcript lines: user deltas, user final text, assistant deltas, per-turn timings.

    User turns print in the order they were spoken: their transcripts may finish out of order (a file sent at once
    holds several turns, transcribed concurrently), so a turn's text waits for the turns committed before it, and
    only the oldest pending turn's deltas print live. A reply prints under its turn's user line: its text waits for
    that line when the reply streams before the turn's transcript is done (the server speaks as soon as the turn ends,
    and recognition may take longer). A live user line the final transcript does not continue is followed by the
    final one, marked as the correction. A barge-in note prints under the turn line of the reply it cut. A spoken
    reply prints as it is heard (SpokenReply): a reply cut off prints as far as the cut, as the server keeps it."""

    def __init__(self, out: TextIO | None) -> None:
        self.out = out
        self.turns_done = 0
        self._line: str | None = None  # what the current unfinished line is ("user"/"assistant")
        self._pending: list[str] = []  # committed user items whose text is not printed yet, in spoken order
        self._texts: dict[str, str] = {}  # finished transcripts waiting for the turns before them
        self._live: str | None = None  # the item whose deltas are on the current user line
        self._line_text = ""  # what the current user line shows after "user> "
        # Finished turns waiting for their user text, with their numbers (None: a reply no user turn asked for)
        self._turn_lines: list[tuple[Turn, int | None]] = []
        self._replies: dict[str, str] = {}  # reply text held for the user item it answers, until that item prints
        self._reply_turns: dict[str, Turn] = {}  # output item id -> the turn whose reply it is
        self._notes: list[tuple[Turn, str]] = []  # barge-in notes waiting for their turn's line
        # Spoken replies' transcripts, told as their audio comes (output item id ->), and where a truncation cut them
        self._spoken: dict[str, SpokenReply] = {}
        self._cuts: dict[str, float] = {}

    def _write(self, s: str) -> None:
        if self.out is not None:
            self.out.write(s)
            self.out.flush()

    def _open(self, who: str) -> None:
        if self._line != who:
            self._end()
            self._write(f"{who}> ")
            self._line = who
            self._line_text = ""

    def _end(self) -> None:
        if self._line is not None:
            self._write("\n")
            self._line = None

    def _user_text(self, item: str | None, text: str) -> None:
        """A user item's transcript is final: print it, and the finished ones after it, once the items before it
        are printed (an item never committed prints at once)."""
        if item is None or item not in self._pending:
            self._open("user")
            self._write(text)
            self._end()
            return
        self._texts[item] = text
        while self._pending and self._pending[0] in self._texts:
            first = self._pending.pop(0)
            text = self._texts.pop(first)
            if first != self._live or self._line != "user":  # its deltas are not on the current line
                self._open("user")
                self._write(text)
            elif text.startswith(self._line_text):  # the deltas were the start of it (or all of it)
                self._write(text[len(self._line_text):])
            else:  # recognition changed its mind after the live line, or failed: that line is not what it heard
                self._write(f"\nuser (corrected)> {text}")
            self._end()
            self._live = None
            self._reply_text(self._replies.pop(first, ""))  # left open: the rest of the reply may still stream
        self._print_turns()

    def _assistant(self, turn: Turn | None, text: str) -> None:
        """Reply text: printed, or held under its turn until that turn's user line prints."""
        answers = turn.user_item_id if turn is not None else None
        if answers is not None and answers in self._pending:
            self._replies[answers] = self._replies.get(answers, "") + text
        else:
            self._reply_text(text)

    def _reply_text(self, text: str) -> None:
        if text:
            self._open("assistant")
            self._write(text)

    def _print_turns(self, *, all_left: bool = False) -> None:
        """Turn lines in order, each once its user text is printed: a reply cut by the next turn ends before the
        turn's transcript, whose latency then read n/a and whose text came under a later turn's line."""
        while self._turn_lines and (all_left or self._turn_lines[0][0].user_item_id not in self._pending):
            turn, number = self._turn_lines.pop(0)
            self._end()
            self._write((format_say(turn) if number is None else format_turn(turn, number)) + "\n")
            self._print_notes(turn)

    def _print_notes(self, turn: Turn | None) -> None:
        """The notes held for `turn` (all of them for None)."""
        for note in [n for n in self._notes if turn is None or n[0] is turn]:
            self._notes.remove(note)
            self._end()
            self._write(note[1])

    def _note(self, turn: Turn | None, text: str) -> None:
        """A note about `turn`'s reply, under its turn line: now if that line is printed (or there is none)."""
        if turn is not None and (turn.response_done is None or any(t is turn for t, _ in self._turn_lines)):
            self._notes.append((turn, text))
        else:
            self._end()
            self._write(text)

    def finish(self) -> None:
        """Prints the replies and turn lines still waiting for a transcript that never came."""
        for item in self._pending:
            self._reply_text(self._replies.pop(item, ""))
        self._print_turns(all_left=True)
        self._print_notes(None)  # a reply that never ended (the connection dropped mid-reply)

    def reply_written(self, out: str | Path, seconds: float) -> None:
        """Where the reply audio went; also when talk ends early, whose error line does not say it."""
        self._end()
        self._write(f"wrote {seconds:.2f} s of reply audio to {out}\n")

    def event(self, e: ServerEvent, turn: Turn | None) -> None:
        t = e.type
        if t.startswith("response.output_") and e.item_id and turn is not None:
            self._reply_turns.setdefault(e.item_id, turn)  # a truncation names the item, not its reply
        if t == "input_audio_buffer.committed" and e.item_id:
            self._pending.append(e.item_id)
        elif t == "conversation.item.input_audio_transcription.delta" and e.delta:
            if not self._pending or e.item_id == self._pending[0]:  # later turns' deltas would interleave
                self._open("user")
                self._write(e.delta)
                self._line_text += e.delta
                self._live = e.item_id
        elif t == "conversation.item.input_audio_transcription.completed":
            self._user_text(e.item_id, e.transcript or "")
        elif t == "conversation.item.input_audio_transcription.failed":
            self._user_text(e.item_id, "[transcription failed]")
        elif t == "conversation.item.deleted" and e.item_id in self._pending:
            self._user_text(e.item_id, "[deleted]")
        elif t == "response.output_audio_transcript.delta" and e.delta and e.item_id:
            # Printed as heard: a sentence's transcript comes before its audio, seconds before on Step-Audio's
            # profiles, and a reply cut before its audio printed words the user never heard. (talk's audio is PCM16
            # at 24 kHz: 48 bytes a millisecond.)
            self._assistant(turn, self._spoken.setdefault(e.item_id, SpokenReply()).transcript(e.delta))
        elif t == "response.output_audio.delta" and e.item_id:
            self._assistant(turn, self._spoken.setdefault(e.item_id, SpokenReply()).audio(len(e.audio) / 48))
        elif t in ("response.output_audio_transcript.delta", "response.output_text.delta") and e.delta:
            self._assistant(turn, e.delta)  # a text reply's, or one naming no item (no audio to follow)
        elif t in ("response.done", CLIENT_RESPONSE_LOST) and turn is not None:  # lost: the reply's only ending
            for item in [i for i, x in self._reply_turns.items() if x is turn and i in self._spoken]:
                spoken, cut = self._spoken.pop(item), self._cuts.get(item)
                if cut is None and e.response_status != "completed":  # cut off, not truncated: as far as it came
                    cut = spoken.audio_ms
                self._assistant(turn, spoken.rest(cut))
            if turn.user_item_id not in self._pending:  # else its text is held, and a user line may be streaming
                self._end()
            if turn.user_item_id is None:  # no user turn asked for it (talk's own replies answer commits)
                self._turn_lines.append((turn, None))
            else:  # numbered as the user spoke them: an operator's say between two turns is no turn of theirs
                self.turns_done += 1
                self._turn_lines.append((turn, self.turns_done))
            self._print_turns()
        elif t == "client.truncated":
            item = str(e.get("item_id"))
            self._cuts[item] = e.audio_end_ms or 0
            self._note(self._reply_turns.get(item), f"[barge-in: truncated {item} at {e.get('audio_end_ms')} ms]\n")
        elif t == "client.reconnected":
            self._end()
            self._write("[reconnected: the server started a new session]\n")


def _fmt(v: float | None) -> str:
    return "   n/a" if v is None else f"{v:6.3f}"


def _status(turn: Turn) -> str:
    return f"{turn.status or '?'}" + (f" ({turn.reason})" if turn.reason else "")


def format_say(turn: Turn) -> str:
    """The line of a reply that no user turn asked for: with the server's turn detection talk asks for none, so it
    is an operator's say (MQTT cmd/say); it has no end of user speech to time from."""
    return f"  [operator's say: {_status(turn)}] reply audio {turn.audio_s:.2f} s"


def format_turn(turn: Turn, number: int) -> str:
    return (f"  [turn {number}: {_status(turn)}] from end of user speech: first audio "
            f"{_fmt(turn.first_audio_latency)} s | input transcript {_fmt(turn.transcript_latency)} s"
            f" | response.done {_fmt(turn.done_latency)} s | reply audio {turn.audio_s:.2f} s")
