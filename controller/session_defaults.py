"""What every session of a server starts from, and its bounds: the server's settings for its sessions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionDefaults:
    speculation: bool = True
    pause_ms: int = 200
    max_event_bytes: int = 15 * 1024 * 1024
    out_queue_events: int = 256
    # A send that has waited this long on a full socket means a client that stopped reading: it is cut off. The
    # keepalive cannot tell, as its ping waits behind the same full buffer, and the session held its place for ever.
    send_stall_s: float = 60.0
    # Error events a client may cause, a second on average, in bursts of error_burst: past that, its next events are
    # read only as fast. A client looping on invalid JSON got ~3,500 errors a second, and the event loop busy with
    # them held every other session's replies for 4-20 s.
    error_rate: float = 20.0
    error_burst: int = 100
    # While this many of a session's turns wait for their transcripts, its input audio is read no further: the socket
    # holds the client back, and nothing it sent is lost. A client streaming ~15x faster than real time was read as
    # fast as it sent (215 turns in 2 minutes, each queued for speech recognition) and the other clients' replies
    # came 5-22 s late. 0: no limit.
    max_pending_turns: int = 2
    # Input audio kept: past it the oldest goes (a turn keeps its end), and the client is told once per turn. 300 s of
    # speech is ~750 words, ~1000 tokens: the chat prompt's budget (1500) with room for instructions and history.
    max_input_audio_s: float = 300.0
    context_budget_tokens: int = 1500
    # Over the budget, the oldest turns are dropped down to this, so that the prompt's start (the LM's prefix cache)
    # stays the same for the next few turns instead of changing with every turn (a whole re-prefill per reply).
    context_keep_below_tokens: int = 1100
    max_output_tokens: int = 256
    early_prefill: bool = True  # warm the LM's prompt cache with the words heard while the user speaks
