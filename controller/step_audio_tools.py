"""The seed's offline tools as commands: `stepaudio-rt tts` (text -> wav, default speaker or clone, as upstream's
tts_inference.py) and `stepaudio-rt chat` (wav or text -> reply text and wav, as offline_inference.py)."""
from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from controller.chat_url import check_chat_url, open_remote_chat
from controller.errors import ConfigError
from controller.pipeline import PromptCut
from controller.step_audio_layout import check_layout, check_model_size, check_speaker, check_weights_match
from controller.step_audio_pipeline import StepAudioPipeline, said_of_tiny_folder, tiny_model_folder
from controller.step_audio_setup import StepAudioConfig, chat_need, load_error
from speech_decoder.step_tts import (
    SILENT_NOTE, StepTtsError, check_prompt_ids, check_prompt_wav, is_silent, mix_to_mono,
)  # fmt: skip



def run_offline_tool(args: Any) -> int:
    """`stepaudio-rt tts` (text -> wav, default speaker or clone) and `stepaudio-rt chat` (wav|text -> reply)."""
    import sys
    import time

    import soundfile as sf

    from clients.audio_file import soundfile_name
    from speech_decoder.step_tts import speakable

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # else every rank runs the whole tool (the whole Chat LM on each) and writes the same --out
        raise ConfigError(f"stepaudio-rt {args.command} runs in one process, not under torchrun (WORLD_SIZE={world}): "
                          "only serve shards the Chat LM over the ranks")
    if args.command == "tts" and not speakable(args.text):
        raise ConfigError(f"--text {_quoted(args.text)} has nothing to speak (no letter or digit past its tag)")
    if args.command == "tts" and (args.prompt_wav is None) != (args.prompt_text is None):
        raise ConfigError("cloning a voice takes --prompt-wav and --prompt-text (the wav's transcript) together")
    if args.command == "tts" and args.prompt_text is not None and not speakable(args.prompt_text):
        raise ConfigError(f"--prompt-text {_quoted(args.prompt_text)} is no transcript (no letter or digit): give the "
                          "words that --prompt-wav says")
    cloning = args.command == "tts" and args.prompt_wav is not None
    if args.command == "tts" and args.synthesis_type not in (None, "clone" if cloning else "tts"):
        # upstream's clone mode reads its voice from a dict in the script; here it comes on the command line
        raise ConfigError("--synthesis-type clone takes the voice to clone: --prompt-wav WAV --prompt-text TRANSCRIPT"
                          if args.synthesis_type == "clone" else "--synthesis-type tts speaks a speaker of the "
                          "speakers folder; --prompt-wav clones a voice: give one")
    if args.command == "tts" and args.prompt_wav is not None and args.speaker is not None:
        raise ConfigError("--speaker names a voice of the speakers folder; --prompt-wav clones another: give one")
    if args.command == "chat" and args.wav is None and not speakable(args.text or ""):
        raise ConfigError(f"--text {_quoted(args.text)} says nothing to answer")
    out = output_file(args.out, _upstream_name(args))
    # Read before the models load (the real ones take minutes): a mistyped or silent wav is told at once.
    clone = question = None
    if args.command == "tts" and args.prompt_wav is not None:
        clone = _read_wav(args.prompt_wav, "--prompt-wav")
        with _prompt_wav_errors(args.prompt_wav, *clone):
            check_prompt_wav("clone", *clone)
    if args.command == "chat" and args.wav is not None:
        question = _read_wav(args.wav, "--wav")
    # `--profile tiny` alone speaks with the folder `serve --profile tiny` writes, as serve does
    model_path = args.model_path if args.model_path is not None else tiny_model_folder(args.profile)
    cfg = StepAudioConfig.for_profile(args.profile, model_path, threads=args.threads, asr=False,
                                      chat=args.command == "chat", chat_url=getattr(args, "chat_url", None))
    with contextlib.nullcontext() if args.model_path is not None else said_of_tiny_folder(model_path):
        _check_before_loading(args, cfg, clone, question)
    pipeline = StepAudioPipeline(cfg)
    try:
        voice = args.speaker
        if clone is not None:
            wav, rate = clone
            voice = "clone"
            with _prompt_wav_errors(args.prompt_wav, wav, rate):  # no valid audio tokens in it
                pipeline.register_speaker(voice, wav, rate, args.prompt_text, cloned=True)
        t0 = time.monotonic()
        if args.command == "tts":
            audio = asyncio.run(_speak_all(pipeline, args.text, voice))
        else:
            from lm_engine import ChatBackendError
            try:
                text, audio = asyncio.run(_chat_once(pipeline, args, question, voice))
            except ChatBackendError as exc:  # the --chat-url server: down, wrong URL, or it refused the request
                raise ConfigError(f"--chat-url: {exc}") from exc
            print(text)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            sf.write(soundfile_name(out), audio, pipeline.output_rate, subtype="PCM_16")
        except (OSError, sf.SoundFileError) as exc:
            raise ConfigError(f"--out {out}: cannot write it ({exc})") from exc
        print(f"wrote {out}: {len(audio) / pipeline.output_rate:.2f} s of audio in "
              f"{time.monotonic() - t0:.2f} s", file=sys.stderr)
    finally:
        pipeline.close()
    return 0


def _check_before_loading(args: Any, cfg: StepAudioConfig, clone: tuple[np.ndarray, int] | None,
                          question: tuple[np.ndarray, int] | None) -> None:
    """Before the models load (the real Chat LM takes minutes): the folder, the wavs, the speaker, the chat server."""
    import sys

    from speech_decoder.step_tts import TAGS, unknown_tag

    check_layout(cfg.model_path, chat_need(cfg))
    check_model_size(cfg.model_path, cfg.profile, chat_need(cfg))
    check_weights_match(cfg.model_path, chat_need(cfg))
    if args.command == "tts" and (tag := unknown_tag(args.text)) is not None:
        # a warning, not a refusal: the text is spoken, but "(rap)" or "(Happy)" is not what it looks like
        print(f"stepaudio-rt tts: warning: --text leads with {tag}, none of the tags TTS-3B was trained on (matched "
              f"exactly): {' '.join(f'({t})' for t in TAGS)}", file=sys.stderr)
    if clone is not None:  # too long for TTS-3B's context: register_speaker's own check, on the same count
        with _prompt_wav_errors(args.prompt_wav, *clone):
            check_prompt_ids("clone", _audio_ids(cfg.model_path, *clone, trim=True), _tts_context(cfg.model_path))
    if question is not None and not _audio_ids(cfg.model_path, *question):  # the model would answer an empty turn
        wav, rate = question
        raise ConfigError(f"--wav {args.wav}: {len(wav) / rate:.2f} s of audio is too short to give Step-Audio's "
                          f"tokenizer one audio token")
    if args.speaker is not None:
        check_speaker(cfg.model_path, args.speaker)
    if cfg.chat_url is not None:
        check_chat_url(cfg.chat_url)
        open_remote_chat(cfg.chat_url, required=True).close()


def _audio_ids(root: Path, wav: np.ndarray, rate: int, *, trim: bool = False) -> int:
    """How many audio tokens Step-Audio's tokenizer makes of a wav (as the tools tokenise it), counted from its
    config alone: no model has to load to refuse a wav."""
    import yaml

    from controller.checkpoints import TOKENIZER_DIR
    from streaming_tokenizer.step_audio import StepTokenizerError
    from streaming_tokenizer.step_audio.tokenizer import offline_id_count

    folder = root / TOKENIZER_DIR
    try:
        return offline_id_count(folder, wav, rate, trim=trim)
    except (StepTokenizerError, yaml.YAMLError) as exc:  # a damaged config.yaml, named as its loading would name it
        raise load_error(folder, exc) from exc


def _tts_context(root: Path) -> int:
    """TTS-3B's context, from its config.json (as its engine will read it)."""
    from controller.checkpoints import TTS_DIR
    from lm_engine.models.config import ModelConfig, ModelConfigError

    try:
        return ModelConfig.from_dir(root / TTS_DIR).max_seq_len
    except ModelConfigError as exc:
        raise load_error(root / TTS_DIR, exc) from exc


async def _speak_all(pipeline: StepAudioPipeline, text: str, voice: str | None) -> np.ndarray:
    """The whole text, sentence by sentence (its leading tag on each), as one float32 waveform."""
    from lm_engine.engine.llm_engine import EngineError
    from speech_decoder.step_tts import sentences_for_tts

    chunks: list[np.ndarray] = []
    for sentence in sentences_for_tts(text):
        try:
            async for chunk in pipeline.synthesize(sentence, voice or ""):
                chunks.append(chunk.pcm)
        except EngineError as exc:  # a piece past the context of a TTS-3B configured smaller than the pieces
            raise ConfigError(f"TTS-3B cannot speak the sentence {_quoted(sentence)}: {exc}") from exc
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return audio.astype(np.float32)


async def _chat_once(pipeline: StepAudioPipeline, args: Any, question: tuple[np.ndarray, int] | None,
                     voice: str | None) -> tuple[str, np.ndarray]:
    from lm_engine import ChatRequest
    from streaming_tokenizer.step_audio import ids_to_text

    if question is not None:
        wav, rate = question
        # the whole file at once, as upstream's offline_inference.py tokenises it (no streaming here to wait for);
        # never empty: _check_before_loading has counted its ids
        content = ids_to_text(pipeline.audio_tokenizer.tokenize_offline(wav, rate, upstream=True))
    else:
        content = args.text
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": content}]
    text = ""
    async for delta in pipeline.reply(ChatRequest(messages=messages, temperature=0.7, max_tokens=2048)):
        if isinstance(delta, PromptCut):  # serve tells its client the same with a turn_truncated error
            _tell_prompt_cut(args, question, delta)
        else:
            text += delta.text
    return text, await _speak_all(pipeline, text, voice)


def _tell_prompt_cut(args: Any, question: tuple[np.ndarray, int] | None, cut: PromptCut) -> None:
    """One line on stderr: the Chat LM answered only the end of the question, which the reply alone would not say."""
    import sys

    if question is not None:
        seconds = len(question[0]) / question[1]
        what = (f"--wav {args.wav}: {seconds:.0f} s of audio, of which the Chat LM heard only the last "
                f"{seconds * cut.kept / cut.tokens:.0f} s")
    else:
        what = f"--text: the Chat LM read only the last {cut.kept} of its {cut.tokens} tokens"
    print(f"{what} (it reads at most {cut.limit} tokens of prompt, its context less the reply)", file=sys.stderr)


@contextlib.contextmanager
def _prompt_wav_errors(path: Path, wav: np.ndarray, rate: int) -> Iterator[None]:
    """A StepTtsError about the clone's prompt wav as one line naming the wav and its length."""
    try:
        yield
    except StepTtsError as exc:
        raise ConfigError(f"--prompt-wav {path}: {len(wav) / rate:.2f} s of audio: {exc}") from exc


def _quoted(text: str, limit: int = 60) -> str:
    """A text in an error line, its start only when long: a 5000-character --text of dots filled the terminal."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def output_file(out: Path, upstream_name: str) -> Path:
    """--out as the wav to write: a .wav path as it is; a path without a suffix is a folder, as upstream's
    --output-path, that gets upstream's file name. Checked before the models load, not after the work is done."""
    if out.is_dir() or not out.suffix:
        # made when the audio is written, as upstream makes its own: one folder, not a whole path of them
        if not out.is_dir() and not out.parent.is_dir():
            raise ConfigError(f"--out {out}: no such folder: {out.parent}")
        return _writable(out / upstream_name)
    if out.suffix.lower() != ".wav":
        raise ConfigError(f"--out {out}: the tools write WAV files; name a .wav file or a folder")
    if not out.parent.is_dir():  # as talk: a typo in a path makes no folders
        raise ConfigError(f"--out {out}: no such folder: {out.parent}")
    return _writable(out)


def _writable(out: Path) -> Path:
    """`out`, unless it cannot be written: found after the models had loaded and spoken, the work was lost, and
    soundfile's own error says only "System error". Tried, not asked: os.access says yes to root everywhere, and
    /proc refused the file only when it was written."""
    try:
        _try_writing(out)
    except OSError as exc:
        existing = out if out.exists() else next(p for p in out.parents if p.exists())
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise ConfigError(f"--out {out}: cannot write it ({exc.strerror or exc})") from exc
        raise ConfigError(f"--out {out}: cannot write {'it' if existing == out else f'in {existing}'} "
                          "(permission denied, or a read-only file system)") from exc
    return out


def _try_writing(out: Path) -> None:
    """Open `out` for writing as the tool's write will, making what that makes (the file, at most one folder) and
    taking it away again; a file already there is left as it is (opened, not truncated)."""
    if out.exists():
        os.close(os.open(out, os.O_WRONLY))
        return
    folder = None if out.parent.exists() else out.parent
    if folder is not None:
        folder.mkdir()
    try:
        os.close(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        out.unlink()
    finally:
        if folder is not None:
            folder.rmdir()


def _upstream_name(args: Any) -> str:
    """The file upstream's tts_inference.py / offline_inference.py writes for this kind of run."""
    if args.command == "tts":
        return "output_clone.wav" if args.prompt_wav is not None else "output_tts.wav"
    return "output_e2e_aqta.wav" if args.wav is not None else "output_e2e_tqta.wav"


def _read_wav(path: Path, option: str) -> tuple[np.ndarray, int]:
    """A wav named on the command line: mono float32 (channels averaged, as upstream does) and its rate."""
    import soundfile as sf

    from clients.audio_file import READABLE, read_audio_file, unreadable_reason

    if not path.is_file():  # as talk says it
        raise ConfigError(f"{option} {path}: {'a folder, not an audio file' if path.is_dir() else 'no such file'}")
    if path.stat().st_size == 0:
        raise ConfigError(f"{option} {path}: an empty file")
    try:
        wav, rate = read_audio_file(path)
    except sf.LibsndfileError as exc:  # as talk says it: not "Error opening '<the path again>': ..."
        raise ConfigError(f"{option} {path}: cannot read it as audio: {unreadable_reason(path, exc)} (the tools "
                          f"read {READABLE})") from exc
    try:
        mono = mix_to_mono(wav, path.name)
    except StepTtsError as exc:
        raise ConfigError(f"{option} {path}: {exc}") from exc
    bad = int(np.count_nonzero(~np.isfinite(mono)))
    if bad:  # a float wav from a broken export: NaN passes the silence test, and a clone of it spoke at full scale
        raise ConfigError(f"{option} {path}: {bad} of its {mono.size} samples are not numbers (NaN or infinity)")
    if is_silent(mono):  # a quiet voice is not: Step-Audio's tokenizer peak-normalises it, as upstream's does
        raise ConfigError(f"{option} {path}: silent ({len(mono) / rate:.2f} s, {SILENT_NOTE}): there is no voice in "
                          "it")
    return mono, rate
