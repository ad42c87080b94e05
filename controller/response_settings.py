"""What a reply is asked to be: its output modalities, voice and format, the LM's sampling and cap, its pacing."""

from __future__ import annotations

from dataclasses import dataclass

from controller.realtime.session_config import AudioFormat


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseSettings:
    modalities: tuple[str, ...] = ("audio",)
    voice: str = "joe"
    speed: float = 1.0
    output_format: AudioFormat = AudioFormat.PCM
    temperature: float = 0.7
    # The LM's cap, which the response object shows as the limit "used in this response" (the API's words): a reply
    # cut at the server's cap is not shown as cut below the client's "inf" or larger number.
    max_output_tokens: int | None = None
    # How far audio may run ahead of real time at the client.
    pacing_lead_s: float = 0.3
    delta_ms: int = 100

    @property
    def audio_out(self) -> bool:
        return "audio" in self.modalities
