"""talk's run loop: stream the audio to the server, follow its turns, collect and save the spoken reply."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
from websockets.exceptions import InvalidMessage, InvalidStatus

from clients.audio import WIRE_RATE, Pacing, SendLog, last_voiced_index, voiced_indices
from clients.events import CLIENT_RECONNECTED, ServerEvent, session_update_event
from clients.connection import key_refusal
from clients.realtime_client import RealtimeClient, RealtimeConnectionError, ReconnectPolicy
from clients.talk_connect import connect_failure, connect_when_loaded
from clients.talk_printer import TranscriptPrinter
from clients.talk_wav import TalkError, load_wav_24k, write_reply
from clients.turns import Turn, TurnTracker

__all__ = ["DEFAULT_URL", "TalkResult", "run_talk", "session_config"]

DEFAULT_URL = "ws://127.0.0.1:8765/v1/realtime"
TRANSCRIPT_GRACE_S = 2.0  # after the last response.done, how long to wait for a late input transcript
# Once the server has heard all the audio (BARRIER_UPDATE's session.updated) with no turn begun, how long a turn may
# still take to show (ours runs its VAD before it answers the update; another server may lag): then there is none.
NO_SPEECH_GRACE_S = 2.0
# Errors that tell of a turn the server heard only the end of and answers all the same: talk says them and waits for
# the reply; any other error ends talk.
NOTICE_CODES = frozenset({"input_audio_truncated", "turn_truncated"})
# The session.update talk sends after the audio: its session.updated says the server has heard all of it. An
# operator's instructions command (event bus) makes a session.updated too, which talk took for this one and ended with
# turns unheard. Talk's session has no tools, so tool_choice "none" changes nothing, and only this update sets it: the
# first session.updated showing it is this update's (one handled later shows it too, but comes after).
BARRIER_UPDATE: dict[str, object] = {"type": "realtime", "tool_choice": "none"}
# Sent as a plain event, not with client.session_update: the client re-sends the fields set that way to the new
# server session after a reconnect, as the user's settings, and this is a question, not a setting. Its own event_id:
# an error about it names that, never an update of the user's.
BARRIER_EVENT: dict[str, object] = {**session_update_event(BARRIER_UPDATE), "event_id": "talk_heard_all"}


def _is_barrier(event: ServerEvent) -> bool:
    session = event.get("session")
    return (event.type == "session.updated" and isinstance(session, dict)
            and session.get("tool_choice") == BARRIER_UPDATE["tool_choice"])


@dataclass(slots=True)
class TalkResult:
    turns: list[Turn]
    reply_pcm16: bytes = b""          # every reply's audio, 24 kHz PCM16, in arrival order
    send_log: SendLog = field(default_factory=SendLog)


def session_config(vad: bool, voice: str | None = None) -> dict[str, object]:
    """The session.update body talk and the benchmark use: PCM16 24 kHz both ways, input transcription on; the
    reply's voice when named (a Step-Audio speaker, say: the server lists its voices if the name is not one)."""
    output: dict[str, object] = {"format": {"type": "audio/pcm", "rate": WIRE_RATE}}
    if voice is not None:
        output["voice"] = voice
    return {
        "type": "realtime",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": WIRE_RATE},
                "transcription": {"model": "whisper-1"},
                "turn_detection": {"type": "server_vad"} if vad else None,
            },
            "output": output,
        },
    }


async def run_talk(wav: str | Path, url: str = DEFAULT_URL, *, out: str | Path | None = None,
                   api_key: str | None = None, realtime: bool | float = True, vad: bool = True,
                   timeout_s: float = 60.0, silence_ms: int = 1500, model: str | None = "stepaudio-rt",
                   reconnect: ReconnectPolicy = ReconnectPolicy(enabled=False),
                   printer: TextIO | None = sys.stdout,
                   session_extra: dict[str, object] | None = None, voice: str | None = None) -> TalkResult:
    """Stream `wav` to the server at `url` and collect the reply (see `clients.talk`'s docstring).

    `timeout_s` bounds the wait for a turn after the audio has been sent, a reply's silence while it streams, and
    the wait for a server still loading its models.
    Reconnect is off by default: a new server session would lose the turn. Raises TalkError.
    """
    x24 = load_wav_24k(wav)
    if x24.size == 0:
        raise TalkError(f"{wav} holds no audio (0 samples): there is no speech to send")
    if last_voiced_index(x24) is None:  # the server's VAD would never start a turn: fail now, not at the timeout
        raise TalkError(f"{wav} is silent (no sample above -40 dBFS): there is no speech to send")
    try:
        client = await connect_when_loaded(url, api_key, model, reconnect, timeout_s)
    except OSError as exc:  # refused, unreachable, timed out
        raise TalkError(f"cannot connect to {url}: {connect_failure(url, exc)}") from exc
    except InvalidStatus as exc:  # a refused handshake: its reason passes through, but for the key's (401)
        refusal = key_refusal(url, api_key, exc)
        if refusal is None:
            raise
        raise TalkError(refusal) from exc
    except InvalidMessage as exc:  # something else listens there (another service, a mistyped port)
        raise TalkError(f"{url} is not a Realtime server: {exc} (is that `stepaudio-rt serve`'s port?)") from exc
    try:
        return await _talk(client, x24, out, realtime, vad, timeout_s, silence_ms, TranscriptPrinter(printer),
                           {**session_config(vad, voice), **(session_extra or {})})
    finally:
        await client.close()


async def _talk(client: RealtimeClient, x24: np.ndarray, out: str | Path | None, realtime: bool | float,
                vad: bool, timeout_s: float, silence_ms: int, printer: TranscriptPrinter,
                session: dict[str, object]) -> TalkResult:
    loop = asyncio.get_running_loop()
    try:
        first = await _recv(client, timeout_s)
    except TimeoutError:  # its empty text made talk's whole message "talk: ", after a minute
        raise TalkError(f"no session.created within {timeout_s:g} s of connecting: the WebSocket server there does "
                        "not speak the Realtime API") from None
    if first is None or first.type != "session.created":
        raise TalkError(f"expected session.created, got {first.type if first else 'nothing'}")
    await client.session_update(session)
    log = SendLog()
    tracker = TurnTracker(log, voiced_indices(x24))
    result = TalkResult(turns=tracker.turns, send_log=log)
    reply = bytearray()

    async def send() -> None:
        await client.stream_audio(x24, WIRE_RATE, realtime, silence_ms=silence_ms if vad else 0, log=log)
        if not vad:
            await client.commit()
            await client.create_response()
        # A server may read the audio slower than it was sent (ours holds a client that sends faster than its turns
        # are transcribed): the turns it has not heard yet cannot be awaited. Events are handled in order, so this
        # update's session.updated comes once the server has heard everything sent before it.
        await client.send(BARRIER_EVENT)

    sender = asyncio.create_task(send(), name="talk-sender")
    # A hang-up fails the send too, and the receiver may see it first (it then reports the close): the send's own
    # error is read here, else asyncio printed "Task exception was never retrieved" with a traceback on the way out.
    sender.add_done_callback(lambda t: t.cancelled() or t.exception())
    finished = False
    heard_at: float | None = None  # when the session.updated of BARRIER_UPDATE came
    began = False  # a turn began (speech_started, a commit or a response)
    try:
        audio_s = x24.size / WIRE_RATE + silence_ms / 1000
        deadline = loop.time() + audio_s / Pacing.from_arg(realtime).speed + timeout_s
        done_at: float | None = None  # when every turn's response was done (then wait briefly for transcripts)
        while True:
            now = loop.time()
            if sender.done():
                sender.result()  # re-raise a failed send
                if tracker.all_done() and heard_at is not None:
                    done_at = now if done_at is None else done_at
                    if tracker.transcripts_done() or now - done_at >= TRANSCRIPT_GRACE_S:
                        break
                else:
                    done_at = None  # a new turn began
            limit = deadline if done_at is None else min(deadline, done_at + TRANSCRIPT_GRACE_S)
            if heard_at is not None and not began:  # a noise-only file: not waited on for the whole timeout
                limit = min(limit, heard_at + NO_SPEECH_GRACE_S)
            if now >= limit:
                if done_at is not None:
                    break  # replies complete; a transcript never came
                if not began:  # noise, music, or speech too quiet for the server's VAD
                    raise TalkError("the server heard no speech: no turn began " + (
                        f"within {timeout_s:g} s after the audio was sent" if heard_at is None else
                        f"in the {NO_SPEECH_GRACE_S:g} s after it had heard all the audio"))
                raise TalkError(f"no complete reply: nothing came from the server for {timeout_s:g} s")
            try:
                event = await _recv(client, limit - now, until=sender)
            except TimeoutError:
                continue
            if event is None:
                continue
            if event.is_error and event.error is not None and event.error.code in NOTICE_CODES:
                print(f"talk: server notice: {event.error}", file=sys.stderr)
                continue
            if event.is_error:
                raise TalkError(f"server error: {event.error}")
            if event.type == "response.done" and event.response_status == "failed":  # no error event comes
                raise TalkError(f"the reply failed: {event.response_error or 'no reason given'}")
            if heard_at is None and _is_barrier(event):
                heard_at = loop.time()
            if event.type == CLIENT_RECONNECTED and heard_at is None and sender.done():
                # The old session's answer went with it; the new one has heard all it was sent (nothing) at once.
                await client.send(BARRIER_EVENT)
            turn = tracker.feed(event, loop.time())
            began = began or event.type == "input_audio_buffer.speech_started" or bool(tracker.turns)
            if tracker.turns and not tracker.all_done():
                # A reply still streaming is waited for as long as it comes (a minute of speech is paced in real
                # time): the timeout bounds the silence of a stalled reply, not the length of a good one.
                deadline = max(deadline, loop.time() + timeout_s)
            if event.type == "response.output_audio.delta":
                reply += event.audio
            printer.event(event, turn)
        finished = True
    finally:
        printer.finish()
        if not sender.done():
            sender.cancel()
        result.reply_pcm16 = bytes(reply)
        # Also when talk ends early (Ctrl-C, a timeout, a lost connection): what was said so far is kept.
        if out is not None and (finished or reply):
            write_reply(out, result.reply_pcm16)
            printer.reply_written(out, len(reply) / 2 / WIRE_RATE)
    return result


async def _recv(client: RealtimeClient, timeout: float,
                until: asyncio.Task[None] | None = None) -> ServerEvent | None:
    """Next event within `timeout`; with `until`, returns None early when that task finishes first."""
    try:
        if until is None or until.done():
            return await client.recv(timeout=timeout)
        getter = asyncio.ensure_future(client.recv())
        try:
            done, _ = await asyncio.wait({getter, until}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Also when this wait is cancelled (Ctrl-C): a getter left behind fails once the client closes, and
            # asyncio prints "Task exception was never retrieved" with a traceback on the way out.
            if not getter.done():
                getter.cancel()
        if getter in done:
            return getter.result()
        if not done:
            raise TimeoutError
        return None
    except RealtimeConnectionError as exc:
        raise TalkError(f"connection lost: {exc}") from exc
