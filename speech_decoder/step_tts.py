"""Step-Audio-TTS-3B front-end: speakers, instruction tags and the exact LM prompt; LM ids -> flow tokens.

Synchronous model code (no asyncio). The controller streams the LM (lm_engine.Engine) and feeds the tokens into a
speech_decoder.StreamingDecoder built from `StepTts.decoder_for(...)`.

Prompt (as upstream stepfun-ai/Step-Audio tts.py builds it, ids of the TTS-3B tokenizer):
    [bos] + [BOT] + enc("system\\n" + SYS) + [EOT]
          + [BOT] + enc("human\\n") + T(prompt_text) + [EOT]
          + [BOT] + enc("assistant\\n") + prompt_code + [EOT]
          + [BOT] + enc("human\\n") + T(target) + [EOT]
          + [BOT] + enc("assistant\\n")
where enc() is the Hugging Face `tokenizer.encode` upstream calls (it prepends <s> when tokenizer_config.json says
add_bos_token: true, which we reproduce) and T(x) = enc("\\n" + x) without the ids of enc("\\n"). SYS is the
speaker-aware system prompt naming the speaker, the speaker-less one in clone mode, or the RAP / humming prompt.
prompt_code is the speaker prompt wav's dual-codebook ids (Step-Audio-Tokenizer, whole utterance).

Generation: temperature 0.7, the repetition-aware ban; outputs minus the audio offset are flow tokens (0..5119).
RAP / 哼唱 (humming) tags at the start of the text switch to speaker `{name}RAP` / `{name}哼唱` and the
CosyVoice-300M-25Hz-Music decoder.

Speakers folder (upstream's speakers/ layout): speakers_info.json {name: prompt_text} and {name}_prompt.wav.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

COMMON_DIR = "CosyVoice-300M-25Hz"
MUSIC_DIR = "CosyVoice-300M-25Hz-Music"
SPEAKERS_DIR = "speakers"
SPEAKERS_INFO = "speakers_info.json"
DEFAULT_SPEAKER = "Tingting"
MUSIC_TAGS = ("RAP", "哼唱")
SLOW_TAGS = ("哼唱", "慢速1", "慢速2")  # sung or slowed: more audio per character
NUM_FLOW_TOKENS = 5120
UPSTREAM_AUDIO_OFFSET = 65536

# The system prompts the TTS-3B model was trained with (model-interface data, kept verbatim).
_TAGS_HELP = (
    "作为一名卓越的声优演员，你的任务是根据文本中（）或()括号内标注的情感、语种或方言、音乐哼唱、语音调整等标签，"
    "以丰富细腻的情感和自然顺畅的语调来朗读文本。\n"
    "# 情感标签涵盖了多种情绪状态，包括但不限于：\n"
    "- \"高兴1\"\n- \"高兴2\"\n- \"生气1\"\n- \"生气2\"\n- \"悲伤1\"\n- \"撒娇1\"\n\n"
    "# 语种或方言标签包含多种语言或方言，包括但不限于：\n"
    "- \"中文\"\n- \"英文\"\n- \"韩语\"\n- \"日语\"\n- \"四川话\"\n- \"粤语\"\n- \"广东话\"\n\n"
    "# 音乐哼唱标签包含多种类型歌曲哼唱，包括但不限于：\n- \"RAP\"\n- \"哼唱\"\n\n"
    "# 语音调整标签，包括但不限于：\n- \"慢速1\"\n- \"慢速2\"\n- \"快速1\"\n- \"快速2\"\n\n"
)
TAGS = tuple(re.findall(r'- "([^"]+)"', _TAGS_HELP))  # those the system prompt lists, which TTS-3B was trained on
SYS_WITHOUT_SPEAKER = _TAGS_HELP + (
    "请在朗读时，根据这些情感标签的指示，调整你的情感、语气、语调和哼唱节奏，以确保文本的情感和意义得到准确而生动的传达，"
    "如果没有()或（）括号，则根据文本语义内容自由演绎。")
SYS_WITH_SPEAKER = _TAGS_HELP + (
    "请在朗读时，使用[{}]的声音，根据这些情感标签的指示，调整你的情感、语气、语调和哼唱节奏，以确保文本的情感和意义得到"
    "准确而生动的传达，如果没有()或（）括号，则根据文本语义内容自由演绎。")
SYS_RAP = "请参考对话历史里的音色，用RAP方式将文本内容大声说唱出来。"
SYS_HUMMING = "请参考对话历史里的音色，用哼唱的方式将文本内容大声唱出来。"

_LEADING_TAG = re.compile(r"^([（(][^()（）]*[）)])", re.DOTALL)


class StepTtsError(RuntimeError):
    """A TTS-3B folder, speaker or request that cannot be served."""


MIN_PROMPT_S = 0.5  # a speaker's or a clone's prompt wav; upstream's own are 3-12 s
# Upstream refuses a prompt wav below 16 kHz (Step-Audio's resample_audio and CosyVoice's load_wav assert it): the
# voice is the prompt mel and CAM++'s fbank, both up to 8 kHz, while an 8 kHz phone recording is empty above 4 kHz;
# resampling it (as we did) fills none of that band, so the flow was conditioned on half a voice.
MIN_PROMPT_RATE = 16_000
PCM16_STEP = 1 / 32768  # one step of 16-bit PCM
SILENT_NOTE = "no sample varies by a 16-bit step"  # what makes a wav silent (is_silent), in an error line


def read_prompt_wav(path: Path) -> tuple[np.ndarray, int]:
    """A speakers folder's NAME_prompt.wav as mono float32 (mix_to_mono) and its rate; soundfile.SoundFileError when
    it is no sound file, StepTtsError when it cannot be opened."""
    import soundfile as sf

    # soundfile encodes a str name without surrogateescape, so a non-ASCII one failed in the C locale; Python opens
    # the file by the very bytes its name came from (clients' soundfile_name does the same, out of this package's reach)
    try:
        file = path.open("rb")
    except OSError as exc:  # the callers name the file
        raise StepTtsError(f"cannot open it ({exc.strerror})") from exc
    with file:
        wav, rate = sf.read(file, dtype="float32", always_2d=True)
    return mix_to_mono(wav, path.name), int(rate)


def mix_to_mono(wav: np.ndarray, file_name: str) -> np.ndarray:
    """[samples, channels] -> [samples], their mean, as upstream mixes a prompt or question wav; StepTtsError when
    channels that hold sound cancel out (one the other inverted: a miswired microphone), which "silent" would have
    sent the user looking for in a file that plays loud."""
    mono = wav.mean(axis=1)
    if is_silent(mono) and not all(is_silent(channel) for channel in wav.T):
        raise StepTtsError(f"its {wav.shape[1]} channels cancel out when mixed to mono, as Step-Audio mixes them (one "
                           f"is the other inverted): keep one, e.g. `sox {file_name} mono.wav remix 1`")
    return mono


def is_silent(wav: np.ndarray) -> bool:
    """Whether a wav holds no sound at all: no sample lies a 16-bit PCM step from its mean (digital silence, or a
    constant offset, which is inaudible). Not a loudness rule: upstream's tokenizer peak-normalises every prompt and
    question wav (x / max(peak, 0.01) * 0.999), so a quiet voice, -50 dBFS say, is spoken there as a loud one."""
    return not wav.size or float(np.abs(wav - wav.mean()).max()) < PCM16_STEP


def check_prompt_wav(name: str, wav: np.ndarray, rate: int) -> None:
    """Raises StepTtsError for a prompt wav that cannot be a voice: narrowband (below 16 kHz), too short, or
    silent."""
    if rate < MIN_PROMPT_RATE:
        raise StepTtsError(f"speaker {name!r}: its prompt wav is sampled at {rate} Hz, so it holds nothing above "
                           f"{rate // 2} Hz of the voice (its features reach 8000 Hz): a voice prompt needs "
                           f"{MIN_PROMPT_RATE // 1000} kHz or more, as Step-Audio and CosyVoice require (resampling "
                           f"adds no sound: record it at 16 kHz or more)")
    # the trim pads the voice with 0.27 s of silence: a blip would otherwise become a "voice"
    if len(wav) < MIN_PROMPT_S * rate:
        raise StepTtsError(f"speaker {name!r}: a voice prompt needs at least {MIN_PROMPT_S:g} s of speech")
    if is_silent(wav):
        raise StepTtsError(f"speaker {name!r}: its prompt wav is silent ({len(wav) / rate:.2f} s, {SILENT_NOTE}): "
                           "there is no voice in it")


def check_prompt_ids(name: str, n_ids: int, context: int) -> None:
    """Raises StepTtsError for a voice prompt of more audio tokens than half of TTS-3B's context: every sentence's
    prompt repeats the voice's, so a long prompt wav (a clone of a whole recording) or a config.json with a small
    context would make each sentence fail with an error blaming the sentence; its speech needs the other half."""
    if n_ids > context // 2:
        raise StepTtsError(f"speaker {name!r}: its prompt wav gives {n_ids} audio tokens, more than half of "
                           f"TTS-3B's context of {context} (a sentence and its speech need the rest); use a "
                           f"shorter wav (upstream's are 3-12 s)")


def instruction_name(text: str) -> str:
    """The leading (tag) of the text, without brackets ("" when there is none)."""
    m = _LEADING_TAG.match(text)
    return m.group(1).strip("()（）") if m else ""


def unknown_tag(text: str) -> str | None:
    """The text's leading (tag) as written, when it is none of TAGS (upstream matches them exactly: "(rap)" picks
    neither RAP's prompt nor the Music decoder), else None."""
    m = _LEADING_TAG.match(text.strip())
    return m.group(1) if m and instruction_name(m.group(1)) not in TAGS else None


def speakable(text: str) -> bool:
    """Whether the text, past its leading (tag), has a letter or digit to speak (punctuation alone has none)."""
    return any(ch.isalnum() for ch in _LEADING_TAG.sub("", text.strip(), count=1))


def sentences_for_tts(text: str) -> list[str]:
    """A whole text as the sentences TTS-3B speaks one by one, each led by the text's leading (tag): upstream reads
    the whole text in one generation, to which its tag applies, but a long text in one prompt outgrows TTS-3B's
    context and its audio-token budget."""
    from speech_decoder.sentences import SentenceChunker

    text = text.strip()
    m = _LEADING_TAG.match(text)
    tag = m.group(1) if m else ""
    chunker = SentenceChunker(min_first_words=len(text))  # whole sentences: nothing streams here
    return [tag + piece for piece in chunker.push(text[len(tag):]) + chunker.flush()]


class ReplyTag:
    """A served reply's leading (tag), carried to each of its sentences (the per-reply text hook of the Step-Audio
    pipeline; one per reply, since a reply's tag says nothing of the next).

    Upstream reads a whole text in one generation, to which its leading tag applies; a served reply is synthesised
    sentence by sentence as the LM streams it, so the tag the LM led it with (an emotion, a dialect, RAP...) would
    reach only its first sentence and the rest would be read in another manner. A sentence leading with a tag of its
    own keeps it (TTS-3B reads one leading tag), and that tag carries on from there: a tag marks how what follows is
    read. A piece that is only the tag (the LM wrote a newline after it) sets it."""

    def __init__(self) -> None:
        self._tag = ""  # with its brackets, as the LM wrote it

    def for_synthesis(self, sentence: str) -> str:
        """The sentence as TTS-3B is to read it: under the reply's tag unless it leads with its own."""
        m = _LEADING_TAG.match(sentence.lstrip())
        if m:
            self._tag = m.group(1)
            return sentence
        return self._tag + sentence


def with_speed(text: str, speed: float) -> str:
    """The text with TTS-3B's speed tag for a requested speaking rate (its four steps: 慢速2 / 慢速1 / 快速1 / 快速2,
    nearest to the rate; none near 1.0). A text that already leads with a tag keeps it: TTS-3B reads one."""
    if instruction_name(text) or 0.9 < speed < 1.1:
        return text
    tag = "快速2" if speed >= 1.3 else "快速1" if speed > 1.0 else "慢速2" if speed <= 0.7 else "慢速1"
    return f"({tag}){text}"


@dataclass(frozen=True, slots=True)
class Speaker:
    """A registered voice: what the LM prompt and the flow decoder need."""

    name: str
    prompt_text: str
    prompt_code: tuple[int, ...]  # flow tokens (0..5119) of the prompt wav
    flow_prompt: Any  # speech_decoder.SpeakerPrompt (mel, x-vector, tokens) for the decoder of this voice
    music: bool = False  # registered for the Music decoder
    cloned: bool = False  # clone mode: the system prompt names no speaker


def _read_json_object(path: Path, otherwise: str) -> dict[str, Any]:
    """The JSON object in `path`; StepTtsError naming the file if it is no JSON, or `otherwise` if no object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSON's own message names no file
        raise StepTtsError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise StepTtsError(f"{path} {otherwise}")
    return data


def read_speakers_info(folder: Path) -> dict[str, str]:
    path = folder / SPEAKERS_INFO
    if not path.is_file():
        raise StepTtsError(f"missing {path}")
    info = _read_json_object(path, "must map speaker names to prompt texts")
    # TTS-3B's voice prompt pairs the transcript with the wav's audio tokens: without it the voice is misread (and
    # punctuation alone, "...", tells the model no more than "" does)
    untold = [name for name, text in info.items() if not isinstance(text, str) or not speakable(text)]
    if untold:
        raise StepTtsError(f"{path} gives no transcript for {', '.join(map(repr, untold))} (each speaker maps to "
                           f"the words its NAME_prompt.wav says)")
    # upstream joins the name into the path as it is: "../x" read a wav from outside the folder, "a/b" from below it
    elsewhere = [name for name in info if not names_a_file(name)]
    if elsewhere:
        raise StepTtsError(f"{path} names {', '.join(map(repr, elsewhere))}: a speaker's name spells its "
                           f"NAME_prompt.wav in {folder}, so it cannot hold '/'")
    return info


def names_a_file(speaker: str) -> bool:
    """Whether the speaker's NAME_prompt.wav is a file name, so of the speakers folder itself ('/' makes it a path
    elsewhere; NUL no name at all)."""
    return not {"/", os.sep, "\0"} & set(speaker)


def prompt_wav_name(speaker: str) -> str:
    """The file name of a speaker's NAME_prompt.wav as this process must spell it to open it."""
    # The name on disk is UTF-8 (upstream's "Tingting哼唱"), while Python encodes a file name with the locale's
    # encoding: in the C locale without UTF-8 mode (ASCII) "哼唱" could not be encoded, and that voice was "missing"
    # from a whole folder. Decoding the UTF-8 bytes as the file system does gives back the name in any locale.
    return os.fsdecode(f"{speaker}_prompt.wav".encode())


def find_speakers_dir(tts_dir: Path, model_root: Path | None = None) -> Path | None:
    """Step-Audio-TTS-3B/speakers (what make-checkpoint writes), else MODEL_ROOT/speakers (upstream keeps
    speakers/ next to its scripts: copy it there)."""
    for d in (tts_dir / SPEAKERS_DIR, *((model_root / SPEAKERS_DIR,) if model_root else ())):
        if (d / SPEAKERS_INFO).is_file():
            return d
    return None


class StepTts:
    """TTS-3B LM prompt building + decoders. Shared by sessions; speakers are registered at load (or by clone)."""

    def __init__(self, lm_tokenizer: Any, common: Any, music: Any | None, *, add_bos: bool = True) -> None:
        self.tok = lm_tokenizer  # lm_engine.Step1Tokenizer of the TTS-3B folder
        self.common, self.music = common, music
        self.add_bos = add_bos
        self.speakers: dict[str, Speaker] = {}
        if self.tok.audio_offset < 0:
            raise StepTtsError("the TTS-3B tokenizer has no <audio_N> tokens")
        self._prefix_cache: dict[tuple[str, bool, str], list[int]] = {}

    @staticmethod
    def tokenizer_adds_bos(tts_dir: Path) -> bool:
        path = tts_dir / "tokenizer_config.json"
        if not path.is_file():
            return True
        return bool(_read_json_object(path, "is not a JSON object").get("add_bos_token", True))

    # ------------------------------------------------------------------ speakers

    def register(self, name: str, wav: np.ndarray, sample_rate: int, prompt_text: str, prompt_ids: Iterable[int],
                 *, cloned: bool = False) -> Speaker:
        """Registers a voice from its prompt wav, transcript and dual-codebook LM ids (65536 + N, upstream ids)."""
        code = tuple(int(i) - UPSTREAM_AUDIO_OFFSET for i in prompt_ids)
        if not code or not all(0 <= c < NUM_FLOW_TOKENS for c in code):
            raise StepTtsError(f"speaker {name!r}: the prompt wav gave no valid audio tokens")
        music = name.endswith(MUSIC_TAGS) and self.music is not None
        # Upstream embeds every speaker (music ones too) with the common model's front-end (mel + CAM++).
        prompt = self.common.make_prompt(wav, sample_rate, list(code))
        spk = Speaker(name, prompt_text, code, prompt, music=music, cloned=cloned)
        self.speakers[name] = spk
        self._prefix_cache = {k: v for k, v in self._prefix_cache.items() if k[0] != name}
        return spk

    def default_speaker(self) -> str:
        if DEFAULT_SPEAKER in self.speakers:
            return DEFAULT_SPEAKER
        plain = [n for n, s in self.speakers.items() if not s.music]
        if not plain:
            raise StepTtsError("no speaker registered (Step-Audio-TTS-3B/speakers/speakers_info.json)")
        return plain[0]

    def resolve(self, text: str, voice: str | None) -> tuple[Speaker, Any]:
        """(speaker record, CosyVoiceModel) for this text. A RAP / 哼唱 tag takes the Music decoder, as upstream
        does for every voice, and the speaker's `{name}{tag}` variant when there is one (a cloned voice has none:
        upstream keeps its prompt); only the tag picks the decoder, so a sung voice such as TingtingRAP asked for by
        name speaks an untagged text with the common one, as in upstream's tts.py."""
        name = voice if voice in self.speakers else self.default_speaker()
        tag = instruction_name(text)
        sung = tag in MUSIC_TAGS
        spk = self.speakers.get(f"{name}{tag}", self.speakers[name]) if sung else self.speakers[name]
        return spk, (self.music if sung and self.music is not None else self.common)

    # ------------------------------------------------------------------ prompt

    def _enc(self, text: str) -> list[int]:
        return self.tok.encode(text, add_bos=self.add_bos)

    def _enc_tail(self, text: str) -> list[int]:
        """enc("\\n" + text) without the ids of enc("\\n") (upstream's way to tokenise text mid-sequence)."""
        return self._enc("\n" + text)[len(self._enc("\n")):]

    def _audio_ids(self, flow_tokens: Iterable[int]) -> list[int]:
        return [self.tok.audio_offset + c for c in flow_tokens]

    def prompt_ids(self, text: str, speaker: Speaker) -> list[int]:
        bot, eot = self.tok.bot_id, self.tok.eot_id
        tag = instruction_name(text)
        name = "" if speaker.cloned else speaker.name
        # upstream tts.py tokenize: a RAP / 哼唱 text takes the humming prompt when "哼唱" occurs anywhere in it
        sung = ("哼唱" if "哼唱" in text else "RAP") if tag in MUSIC_TAGS else ""
        key = (speaker.name, speaker.cloned, sung)
        prefix = self._prefix_cache.get(key)
        if prefix is None:
            if sung:
                sys_prompt = SYS_HUMMING if sung == "哼唱" else SYS_RAP
            elif name:
                sys_prompt = SYS_WITH_SPEAKER.format(name)
            else:
                sys_prompt = SYS_WITHOUT_SPEAKER
            human, assistant = self._enc("human\n"), self._enc("assistant\n")
            prefix = ([self.tok.bos_id, bot] + self._enc(f"system\n{sys_prompt}") + [eot]
                      + [bot] + human + self._enc_tail(speaker.prompt_text) + [eot]
                      + [bot] + assistant + self._audio_ids(speaker.prompt_code) + [eot])
            self._prefix_cache[key] = prefix
        return (prefix + [bot] + self._enc("human\n") + self._enc_tail(text) + [eot]
                + [bot] + self._enc("assistant\n"))

    # ------------------------------------------------------------------ outputs

    def flow_tokens(self, lm_ids: Iterable[int]) -> list[int]:
        """LM output ids -> flow tokens; ids that are not audio tokens (a random model emits text ids) are dropped."""
        off = self.tok.audio_offset
        return [i - off for i in lm_ids if 0 <= i - off < NUM_FLOW_TOKENS]

    @staticmethod
    def max_new_tokens(text: str, cap: int) -> int:
        """A generous budget: ~12 audio tokens (0.3 s) per character plus 2 s, at most `cap`; twice that per
        character for a text sung (哼唱) or slowed (慢速1/2): upstream's own humming prompt, speakers/Tingting哼唱,
        sings its 29 characters in 12.5 s (~17 tokens a character), past 12 a character. (Upstream caps nothing per
        sentence: generate's max_length 8192.)"""
        per_char = 24 if instruction_name(text) in SLOW_TAGS else 12
        return max(25, min(cap, 84 + per_char * len(text)))
