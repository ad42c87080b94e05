"""talk's audio files: read the wav to send (any format soundfile decodes, as 24 kHz mono) and write the reply."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from clients.audio import WIRE_RATE, to_mono_float32
from clients.audio_file import READABLE, read_audio_file, soundfile_name, unreadable_reason

__all__ = ["READABLE", "TalkError", "load_wav_24k", "write_reply"]


class TalkError(RuntimeError):
    """The server sent an error event, the connection was lost, or the reply did not come in time."""


def load_wav_24k(path: str | Path) -> np.ndarray:
    """Read any audio file soundfile understands, downmix to mono and resample to 24 kHz float32.

    Raises TalkError for a file soundfile cannot read (not audio, truncated).
    """
    try:
        data, rate = read_audio_file(path)
    except sf.LibsndfileError as exc:
        raise TalkError(f"cannot read {path} as audio: {unreadable_reason(path, exc)} (talk reads {READABLE})") from exc
    x = to_mono_float32(data)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:  # a float wav from a broken export: its NaN went out as full-scale clicks, and all-NaN read as silent
        raise TalkError(f"cannot read {path} as audio: {bad} of its {x.size} samples are not numbers (NaN or infinity)")
    return x if rate == WIRE_RATE else soxr.resample(x, rate, WIRE_RATE, quality="HQ").astype(np.float32)


def write_reply(out: str | Path, pcm16: bytes) -> None:
    # WAV whatever the name: soundfile guesses the format from the extension, and has none to go by in
    # `--out reply` or `--out /dev/null`.
    try:
        sf.write(soundfile_name(out), np.frombuffer(pcm16, "<i2"), WIRE_RATE, format="WAV", subtype="PCM_16")
    except (sf.LibsndfileError, OSError) as exc:  # a read-only folder, a full disk: one line, not a traceback
        reason = exc.error_string if isinstance(exc, sf.LibsndfileError) else exc.strerror or str(exc)
        raise TalkError(f"cannot write the reply to {out}: {reason}") from exc
