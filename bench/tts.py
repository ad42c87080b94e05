"""Speech-decoder benchmark (skeleton): flow + HiFT real-time factor, offline and streamed, and the time from the
25th token (when StreamingDecoder's first window is complete) to the first audio chunk.

    python -m bench.tts                        # GPU: full-random CosyVoice-300M-25Hz dims
    python -m bench.tts --profile tiny         # CPU smoke check

Still to add (issue 5): TTS-3B tokens/s from lm_engine, time from the first reply text to the first audio, and how
many concurrent streams stay real-time (needs batched flow windows across sessions).
Writes JSON (--out) and prints it.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from speech_decoder.checkpoint import write_cosyvoice_folder
from speech_decoder.cosyvoice_model import CosyVoiceModel, SpeakerPrompt
from speech_decoder.streaming_decoder import StreamingDecoder


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def run(profile: str, n_tokens: int, prompt_tokens: int, device: str) -> dict[str, float | int | str]:
    with tempfile.TemporaryDirectory() as tmp:
        print(f"writing a {profile} CosyVoice folder ...", flush=True)
        model = CosyVoiceModel.load(write_cosyvoice_folder(Path(tmp) / "cv", profile), device=device)
    dev = model.device
    g = torch.Generator().manual_seed(0)
    prompt = SpeakerPrompt(torch.randint(0, 5120, (prompt_tokens,), generator=g),
                           torch.randn(model.cfg.flow.mel_frames(prompt_tokens), 80, generator=g) - 5,
                           torch.randn(192, generator=g))
    tokens = torch.randint(0, 5120, (n_tokens,), generator=g).tolist()
    seconds = model.cfg.flow.mel_frames(n_tokens) * 256 / 22050
    model.token2wav(tokens[:50], prompt)  # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    model.token2wav(tokens, prompt)
    _sync(dev)
    offline = time.perf_counter() - t0

    dec = StreamingDecoder(model, prompt)
    dec.push(tokens[:20])
    _sync(dev)
    t0 = time.perf_counter()
    first = dec.push(tokens[20:25])
    _sync(dev)
    first_chunk = time.perf_counter() - t0
    t1 = time.perf_counter()
    for i in range(25, n_tokens, 5):
        dec.push(tokens[i:i + 5])
    dec.finish()
    _sync(dev)
    streamed = time.perf_counter() - t1 + first_chunk
    return {"profile": profile, "device": str(dev), "tokens": n_tokens, "audio_s": round(seconds, 3),
            "offline_rtf": round(offline / seconds, 4), "streamed_rtf": round(streamed / seconds, 4),
            "first_chunk_ms": round(first_chunk * 1e3, 1), "first_chunk_samples": int(first.size)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="full-random", choices=["tiny", "full-random"])
    ap.add_argument("--tokens", type=int, default=500)
    ap.add_argument("--prompt-tokens", type=int, default=125)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="bench_tts.json")
    args = ap.parse_args()
    result = run(args.profile, args.tokens, args.prompt_tokens, args.device)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
