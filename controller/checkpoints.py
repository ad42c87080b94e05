"""`stepaudio-rt make-checkpoint`: a whole random-initialised Step-Audio model folder in the real layout.

OUT/
  Step-Audio-Tokenizer/            linguistic_tokenizer.npy, speech_tokenizer_v1.onnx, dengcunqin/.../{model.pt,
                                   config.yaml, am.mvn, tokens.json, seg_dict}   (streaming_tokenizer.step_audio)
  Step-Audio-Chat/                 config.json, tokenizer.model, tokenizer_config.json, safetensors (lm_engine)
  Step-Audio-TTS-3B/               config.json, tokenizer files, model-00001.safetensors (lm_engine)
    CosyVoice-300M-25Hz/           cosyvoice.yaml, flow.pt, hift.pt, campplus.onnx, speech_tokenizer_v1.onnx
    CosyVoice-300M-25Hz-Music/     the same files, other random weights (RAP / humming decoder)
    speakers/                      speakers_info.json {name: transcript}, {name}_prompt.wav (upstream's layout;
                                   upstream keeps it beside its scripts, we keep it with the TTS model)

The speaker wavs are synthetic (a voiced harmonic source through vowel-like formants with a syllable rhythm):
random models do not care what the voice sounds like, and nothing copyrighted ships in the folder.
Full-random Chat weights (130 B parameters, ~264 GB) are written only with with_chat_weights.
"""
from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Collection
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

TOKENIZER_DIR = "Step-Audio-Tokenizer"
CHAT_DIR = "Step-Audio-Chat"
TTS_DIR = "Step-Audio-TTS-3B"
PROFILES = ("tiny", "full-random")
WHAT = ("chat", "tts", "tokenizer", "all")

# name -> transcript of its prompt wav. The RAP / 哼唱 variants select the Music decoder.
SPEAKERS = {
    "Tingting": "Hello, this is a random voice prompt for testing the speech path.",
    "TingtingRAP": "Yo, this is a random rap prompt for testing.",
    "Tingting哼唱": "La la la, a random humming prompt.",
}


# --what's names of the model folders, in the order written (TTS-3B's decoders take the tokenizer's onnx file)
PARTS = {"tokenizer": TOKENIZER_DIR, "chat": CHAT_DIR, "tts": TTS_DIR}


def written_dirs(out_dir: Path, what: str, keep: Collection[str] = ()) -> list[Path]:
    """The model folders `make_checkpoint(out_dir, what=what, keep=keep)` writes."""
    parts = list(PARTS) if what == "all" else [what]
    return [Path(out_dir) / PARTS[p] for p in parts if PARTS[p] not in keep]


def make_checkpoint(out_dir: Path | str, *, profile: str, what: str = "all", with_chat_weights: bool = False,
                    seed: int = 0, keep: Collection[str] = ()) -> Path:
    """Writes OUT/Step-Audio-{Tokenizer,Chat,TTS-3B} (or one of them), but none named in `keep`; returns OUT."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r} (tiny | full-random)")
    if what not in WHAT:
        raise ValueError(f"unknown --what {what!r} ({' | '.join(WHAT)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = {d.name for d in written_dirs(out, what, keep)}
    if TOKENIZER_DIR in names:
        from streaming_tokenizer.step_audio import write_tokenizer_folder
        logger.info("writing %s/%s", out, TOKENIZER_DIR)
        write_tokenizer_folder(out / TOKENIZER_DIR, profile, seed=seed)
    if CHAT_DIR in names:
        from lm_engine.checkpoint import write_step1_checkpoint
        weights = profile == "tiny" or with_chat_weights
        logger.info("writing %s/%s (%s)", out, CHAT_DIR, "with weights" if weights else "config and tokenizer only")
        write_step1_checkpoint(out / CHAT_DIR, profile=profile, what="chat", weights=weights, seed=seed)
    if TTS_DIR in names:
        write_tts_folder(out / TTS_DIR, profile, seed=seed, tokenizer_dir=out / TOKENIZER_DIR)
    return out


def written_summary(out_dir: Path, *, profile: str, what: str, with_chat_weights: bool = False,
                    keep: Collection[str] = ()) -> str:
    """What make-checkpoint says when it is done: where it wrote, that the weights are random, the folders it left
    as they were, and the command that uses the folder now (a part written alone is of use only once the folders
    that command reads are there too)."""
    folder = shlex.quote(str(out_dir))
    written = [d.name for d in written_dirs(out_dir, what, keep)]
    head = f"wrote {', '.join(written)} to {out_dir}: random weights ({profile}), for tests; replies are not meaningful"
    if keep:
        them = "them" if len(keep) > 1 else "it"
        head += f"\nkept the {', '.join(keep)} already there (--overwrite writes random weights over {them} too)"
    present = {d.name for d in written_dirs(out_dir, "all") if d.is_dir()}
    serve = f"stepaudio-rt serve --profile {profile} --model-path {folder}"
    if present == {TOKENIZER_DIR, CHAT_DIR, TTS_DIR}:
        if CHAT_DIR in written and profile != "tiny" and not with_chat_weights:
            return f"{head}\n{CHAT_DIR} holds no weights (--with-chat-weights writes them): serve with a Chat " \
                   f"server, {serve} --chat-url URL"
        return f"{head}\nserve it: {serve}"
    if {TOKENIZER_DIR, TTS_DIR} <= present:
        return f"{head}\nspeak with it: stepaudio-rt tts --profile {profile} --model-path {folder} --text 'Hello.' " \
               "--out hello.wav"
    missing = ", ".join(n for n in (TOKENIZER_DIR, CHAT_DIR, TTS_DIR) if n not in present)
    return f"{head}\nstill missing for serve: {missing} (make-checkpoint --what all writes every folder)"


def write_tts_folder(tts_dir: Path, profile: str, *, seed: int = 0, tokenizer_dir: Path | None = None) -> Path:
    from lm_engine.checkpoint import write_step1_checkpoint
    from speech_decoder import write_cosyvoice_folder
    from speech_decoder.step_tts import COMMON_DIR, MUSIC_DIR, SPEAKERS_DIR

    logger.info("writing %s", tts_dir)
    write_step1_checkpoint(tts_dir, profile=profile, what="tts", seed=seed + 1)
    onnx = tokenizer_dir / "speech_tokenizer_v1.onnx" if tokenizer_dir is not None else None
    onnx = onnx if onnx is not None and onnx.is_file() else None
    write_cosyvoice_folder(tts_dir / COMMON_DIR, profile, seed=seed + 2, speech_tokenizer_onnx=onnx)
    write_cosyvoice_folder(tts_dir / MUSIC_DIR, profile, seed=seed + 3, speech_tokenizer_onnx=onnx)
    write_speakers_folder(tts_dir / SPEAKERS_DIR, seed=seed)
    return tts_dir


def write_speakers_folder(folder: Path, *, seed: int = 0, sample_rate: int = 16000) -> Path:
    import soundfile as sf

    from clients.audio_file import soundfile_name
    from speech_decoder.step_tts import prompt_wav_name

    folder.mkdir(parents=True, exist_ok=True)
    for k, (name, text) in enumerate(SPEAKERS.items()):
        wav = synthetic_voice(3.0, sample_rate, seed=seed + k, f0=(210.0 if k == 0 else 180.0 + 20 * k))
        sf.write(soundfile_name(folder / prompt_wav_name(name)), wav, sample_rate, subtype="PCM_16")
    (folder / "speakers_info.json").write_text(json.dumps(SPEAKERS, ensure_ascii=False, indent=2) + "\n",
                                               encoding="utf-8")
    return folder


def synthetic_voice(seconds: float, rate: int, *, seed: int = 0, f0: float = 200.0) -> np.ndarray:
    """A speech-like float32 signal: harmonics of a wandering f0, vowel formants, ~4 syllables per second."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    pitch = f0 * (1.0 + 0.08 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    vowels = np.array([[730, 1090], [270, 2290], [570, 840], [440, 1020], [530, 1840]], dtype=np.float64)
    syllable = (t * 4.0).astype(int)
    formants = vowels[rng.integers(0, len(vowels), syllable.max() + 1)][syllable]
    x = np.zeros(n)
    for h in range(1, 30):
        fh = h * pitch
        gain = sum(np.exp(-0.5 * ((fh - formants[:, j]) / 120.0) ** 2) for j in range(2)) + 0.02
        x += gain / h * np.sin(h * phase)
    envelope = np.clip(np.sin(np.pi * (t * 4.0 % 1.0)), 0, None) ** 0.6
    x = x * envelope + 0.003 * rng.standard_normal(n)
    peak = float(np.abs(x).max())  # numpy's stubs type an array's max() as Any
    return (0.5 * x / peak).astype(np.float32)
