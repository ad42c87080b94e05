"""Which files of the real Step-Audio layout a command needs, which of them a model folder lacks, and what a cheap
read of them shows to be damaged: model files cut short or replaced by a web page (file_integrity), config.json
fields the engine cannot run or its weights contradict, speakers' prompt wavs that hold no voice.

Checked before anything loads: the real Chat LM takes minutes to load, and a user who downloaded the folders should
learn every missing file at once, by its place in the layout, instead of one traceback per try.

    Step-Audio-Tokenizer/   what StepAudioTokenizer.load reads
    Step-Audio-Chat/        config.json + tokenizer.model + the weights (Chat LM here), tokenizer.model alone
                            (Chat LM behind --chat-url), nothing (`tts`: upstream's tts_inference.py never opens it)
    Step-Audio-TTS-3B/      config.json, tokenizer.model, the weights; CosyVoice-300M-25Hz/ (with campplus.onnx,
                            which embeds every speaker); CosyVoice-300M-25Hz-Music/ when present (RAP / humming);
                            speakers/ (here or in the model folder): speakers_info.json and each NAME_prompt.wav
"""
from __future__ import annotations

import enum
import json
from pathlib import Path

import numpy as np

from controller.checkpoints import CHAT_DIR, TOKENIZER_DIR, TTS_DIR
from controller.checkpoints import PROFILES as RANDOM_PROFILES  # the ones make-checkpoint writes
from controller.errors import ConfigError
from controller.file_integrity import CUT_NOTE, PAGE_NOTE, damage, torch_names
from lm_engine.utils.safetensors_header import read_header
from speech_decoder.step_tts import (
    COMMON_DIR, MUSIC_DIR, SPEAKERS_DIR, SPEAKERS_INFO, StepTts, StepTtsError, check_prompt_ids, check_prompt_wav,
    find_speakers_dir, names_a_file, prompt_wav_name, read_prompt_wav, read_speakers_info,
)  # fmt: skip
from streaming_tokenizer.step_audio.config import REQUIRED_FILES as TOKENIZER_FILES

LM_FILES = ("config.json", "tokenizer.model")
COSYVOICE_FILES = ("cosyvoice.yaml", "flow.pt", "hift.pt")
CAMPPLUS_FILE = "campplus.onnx"
WEIGHTS_INDEX = "model.safetensors.index.json"
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"  # how every Git LFS pointer file starts
LFS_NOTE = " (a Git LFS pointer)"
# A decoder folder's two torch files, each by a tensor name that it holds and the other lacks (the loaders load them
# strictly, so every usable file has it; hift.pt's may sit under "generator.") and by what it holds.
_DECODER_WEIGHTS = {"flow.pt": ("input_embedding.weight", "the flow model's weights"),
                    "hift.pt": ("m_source.l_linear.weight", "the HiFT vocoder's weights")}
_LM_HEAD, _EMBEDDINGS = "lm_head.weight", "model.embed_tokens.weight"  # an untied LM's output layer, its input one
_LAYER_PREFIX = "model.layers."  # Step-1's (and Qwen2's) decoder layers: model.layers.N.<part>.weight


class ChatNeed(enum.Enum):
    """How much of Step-Audio-Chat/ a command reads."""

    WEIGHTS = "weights"  # the Chat LM runs in this process
    TOKENIZER = "tokenizer"  # the Chat LM runs behind --chat-url
    NONE = "none"  # `stepaudio-rt tts`


def missing_files(root: Path, chat: ChatNeed) -> list[str]:
    """What of the layout `root` lacks, as paths relative to it ("X/" for a whole missing folder)."""
    missing = _missing_in(root, TOKENIZER_DIR, TOKENIZER_FILES)
    chat_dir = root / CHAT_DIR
    if chat is ChatNeed.TOKENIZER and (lacks := _absent(root, f"{CHAT_DIR}/tokenizer.model")):  # the one file read
        missing.append(f"{lacks[0]} (which --chat-url still needs)")
    elif chat is ChatNeed.WEIGHTS and not chat_dir.is_dir():  # alone missing: perhaps left out on purpose
        alone = (root / TOKENIZER_DIR).is_dir() and (root / TTS_DIR).is_dir()
        missing.append(f"{CHAT_DIR}/" + (" (or run the Chat LM on a server and pass --chat-url)" if alone else ""))
    elif chat is ChatNeed.WEIGHTS:
        missing += _missing_in(root, CHAT_DIR, LM_FILES) + _missing_weights(root, CHAT_DIR)
    tts = root / TTS_DIR
    missing += _missing_in(root, TTS_DIR, LM_FILES)
    if not tts.is_dir():
        return missing
    missing += _missing_weights(root, TTS_DIR)
    missing += _missing_in(root, f"{TTS_DIR}/{COMMON_DIR}", (*COSYVOICE_FILES, CAMPPLUS_FILE))
    if (tts / MUSIC_DIR).is_dir():
        missing += _missing_in(root, f"{TTS_DIR}/{MUSIC_DIR}", COSYVOICE_FILES)
    return missing + _missing_speakers(root)


def check_layout(root: Path, chat: ChatNeed) -> None:
    """Raises ConfigError naming every missing file of the layout (or the folder itself), else the first config.json
    field that the loaded LMs cannot run."""
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise ConfigError(f"{root} {what} (the Step-Audio model folder: {TOKENIZER_DIR}/, {CHAT_DIR}/, "
                          f"{TTS_DIR}/ as the Step-Audio README downloads them)")
    missing = missing_files(root, chat)
    if missing:
        parent = root.resolve().parent
        hint = (f"; --model-path is the folder that holds it: {parent}?"
                if root.resolve().name in (TOKENIZER_DIR, CHAT_DIR, TTS_DIR) and not missing_files(parent, chat)
                else "")
        if any(LFS_NOTE in m for m in missing):
            hint += ("; a Git LFS pointer stands in for a file in a clone made without git-lfs: `git lfs install` "
                     "then `git lfs pull` in that clone fetches the files")
        if any(CUT_NOTE in m for m in missing):
            hint += "; a file cut short by its download: download it again"
        if any(PAGE_NOTE in m for m in missing):
            hint += ("; a web page where a model file should be (its download link answered with a login or error "
                     "page): download the file again")
        raise ConfigError(f"{root} lacks {', '.join(missing)} (the Step-Audio layout: {TOKENIZER_DIR}/, {CHAT_DIR}/, "
                          f"{TTS_DIR}/ as the Step-Audio README downloads them; `stepaudio-rt make-checkpoint` "
                          f"writes it with random weights){hint}")
    _check_lm_configs(root, chat)
    _check_lm_tokenizers(root, chat)
    _check_cosyvoice_configs(root)
    _check_decoder_weights(root)
    _check_campplus(root)
    _check_speaker_wavs(root)


def _check_speaker_wavs(root: Path) -> None:
    """Each speaker's NAME_prompt.wav, by the rules a clone's prompt wav meets: a silent one was registered once the
    models had loaded, and /voices listed it; one too long for TTS-3B's context was refused only once the tokenizer,
    TTS-3B and the decoders had loaded."""
    import soundfile as sf

    from lm_engine.models.config import ModelConfig

    folder = find_speakers_dir(root / TTS_DIR, root)
    assert folder is not None, "_missing_speakers has found it"
    context = ModelConfig.from_dir(root / TTS_DIR).max_seq_len  # _check_lm_configs has read it
    for name in read_speakers_info(folder):
        file = folder / prompt_wav_name(name)
        try:
            wav, rate = read_prompt_wav(file)
            check_prompt_wav(name, wav, rate)
            if (ids := _prompt_id_count(root, wav, rate)) is not None:
                check_prompt_ids(name, ids, context)
        except sf.LibsndfileError as exc:  # its own words repeat the path: "Error opening '<file>': ..."
            raise ConfigError(f"{file}: cannot read it as audio ({exc.error_string})") from exc
        except (sf.SoundFileError, StepTtsError) as exc:  # neither names the file
            raise ConfigError(f"{file}: {exc}") from exc


def _prompt_id_count(root: Path, wav: np.ndarray, rate: int) -> int | None:
    """The audio tokens of a voice prompt wav as TTS-3B's prompt holds them, counted from the tokenizer's config
    alone; None when that config is damaged (the tokenizer, which loads first, names it)."""
    import yaml

    from streaming_tokenizer.step_audio import StepTokenizerError
    from streaming_tokenizer.step_audio.tokenizer import offline_id_count

    try:
        return offline_id_count(root / TOKENIZER_DIR, wav, rate, trim=True)
    except (StepTokenizerError, yaml.YAMLError, OSError):
        return None


def _lm_dirs(chat: ChatNeed) -> tuple[str, ...]:
    """The Step-1 folders whose models this command loads."""
    return (TTS_DIR, CHAT_DIR) if chat is ChatNeed.WEIGHTS else (TTS_DIR,)


def _check_lm_configs(root: Path, chat: ChatNeed) -> None:
    """Each loaded LM's config.json, read as its engine reads it (and TTS-3B's tokenizer_config.json): a field it
    cannot run (a head count of 0) was found only when that model loaded, after those before it (minutes, for the
    real Chat LM)."""
    from lm_engine.models.config import ModelConfig, ModelConfigError

    try:  # read once TTS-3B and the decoders have loaded, where a JSONDecodeError traceback ended the command
        StepTts.tokenizer_adds_bos(root / TTS_DIR)
    except StepTtsError as exc:
        raise ConfigError(str(exc)) from exc
    for sub in _lm_dirs(chat):
        try:
            ModelConfig.from_dir(root / sub)
        except ModelConfigError as exc:  # names the file and the field
            raise ConfigError(str(exc)) from exc


def _check_lm_tokenizers(root: Path, chat: ChatNeed) -> None:
    """Each read LM folder's tokenizer.model, loaded (milliseconds): a damaged one (a web page saved in its place)
    was found by its LM's load, Step-Audio-Chat's after every other model had loaded."""
    from lm_engine.tokenizer import Step1Tokenizer

    for sub in (TTS_DIR,) if chat is ChatNeed.NONE else (TTS_DIR, CHAT_DIR):
        try:
            Step1Tokenizer.from_dir(root / sub)
        except OSError as exc:  # names the file
            raise ConfigError(str(exc)) from exc


def _check_cosyvoice_configs(root: Path) -> None:
    """Each decoder folder's cosyvoice.yaml, read as its loader reads it: a damaged one was found once the tokenizer
    and TTS-3B had loaded (the Music decoder's, once the plain one had too)."""
    import yaml

    from controller.step_audio_setup import load_error  # which imports this module: here, not at the top
    from speech_decoder.cosyvoice_config import load_cosyvoice_config

    for sub in (COMMON_DIR, MUSIC_DIR):
        folder = root / TTS_DIR / sub
        if folder.is_dir():  # the Music one is optional; missing_files has found the plain one
            try:
                load_cosyvoice_config(folder)
            except (ValueError, TypeError, KeyError, yaml.YAMLError) as exc:  # as its loading would name it
                raise load_error(folder, exc) from exc


def _check_decoder_weights(root: Path) -> None:
    """Each decoder folder's flow.pt and hift.pt, by the tensor names in their pickles (file_integrity.torch_names,
    milliseconds): the two swapped, or another model's torch file in one's place, were found by the decoder's load
    ("flow.pt does not match cosyvoice.yaml: missing [...]"), once the tokenizer and TTS-3B had loaded."""
    for sub in (COMMON_DIR, MUSIC_DIR):
        for name, (mark, what) in _DECODER_WEIGHTS.items():
            file = root / TTS_DIR / sub / name
            names = torch_names(file) if file.is_file() else None  # missing_files has found the plain folder whole
            if names is None:
                continue
            held = {n.removeprefix("generator.") for n in names}
            if mark in held:
                continue
            other = next((o for o, (m, _) in _DECODER_WEIGHTS.items() if m in held), None)
            if other is not None:
                raise ConfigError(f"{file} holds {_DECODER_WEIGHTS[other][1]}, not {what}: are {name} and {other} "
                                  "swapped?")
            example = min((n for n in held if "." in n), default=None)  # a tensor name (torch's own are dotless)
            holds = f"tensors such as {example!r}" if example else "no tensor names"
            raise ConfigError(f"{file} holds {holds}, not {what} ({mark!r} is not there): another model's file?")


def _check_campplus(root: Path) -> None:
    """campplus.onnx, which embeds every speaker, takes one input (the fbank): another model's file there (the
    speech_tokenizer_v1.onnx beside it: feats, feats_length) loaded, and failed only once every model but the Chat
    LM had, as the speakers were embedded ("Required inputs (['feats_length']) are missing from input feed")."""
    from controller.onnx_walk import graph_inputs

    file = root / TTS_DIR / COMMON_DIR / CAMPPLUS_FILE
    inputs = graph_inputs(file)  # missing_files has found it whole
    if inputs is not None and len(inputs) != 1:
        raise ConfigError(f"{file} takes {len(inputs)} inputs ({', '.join(inputs)}), where CAM++ takes one (a "
                          "speaker's fbank): is it another model's file?")


def check_weights_match(root: Path, chat: ChatNeed) -> None:
    """Raises ConfigError when a loaded LM's config.json is at odds with the tensors its weights hold (their count of
    layers, their shapes; read from the safetensors headers). After check_layout and check_model_size: a full-size
    config.json on tiny weights is better told by the latter ("not tiny: use it with --profile full-random")."""
    from lm_engine.models.config import ModelConfig

    for sub in _lm_dirs(chat):
        held = _weight_shapes(root / sub)
        if held:
            config = ModelConfig.from_dir(root / sub)
            _check_weights_match(root / sub / "config.json", config.num_layers, config.tie_word_embeddings, held)


def _check_weights_match(config_file: Path, layers: int, tied: bool, held: dict[str, tuple[int, ...]]) -> None:
    """config.json against the tensors its weights hold: its loader named one tensor ("lacks 9 tensors, e.g.
    model.layers.2...", "has no parameter", a shape), and only once the models before it had loaded."""
    from lm_engine.checkpoint import step1_tensor_shapes

    found = {int(n.split(".")[2]) for n in held if n.startswith(_LAYER_PREFIX) and n.split(".")[2].isdigit()}
    if found and len(found) != layers:
        raise ConfigError(f"{config_file}: num_hidden_layers is {layers}, but the weights beside it hold "
                          f"{len(found)} layers (model.layers.{min(found)}-{max(found)}): is config.json the one "
                          "that came with these weights?")
    # Tied, the loader sets a held lm_head.weight aside without a word and outputs through the embeddings (answers of
    # nonsense); untied, it names the missing one only once the models before it have loaded.
    if tied == (_LM_HEAD in held):
        held_head = (f"hold their own {_LM_HEAD}, which the load would set aside to output through "
                     f"{_EMBEDDINGS}" if tied else f"hold no {_LM_HEAD} (the output layer, untied from {_EMBEDDINGS})")
        raise ConfigError(f"{config_file}: tie_word_embeddings is {'true' if tied else 'false (or absent)'}, but the "
                          f"weights beside it {held_head}: is config.json the one that came with these weights?")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("model_type") != "step1" or config.get("head_dim"):  # the Step-Audio LMs' own layout
        return
    for name, shape in step1_tensor_shapes(config):
        if name in held and held[name] != shape:
            raise ConfigError(f"{config_file}: checkpoint tensor {name!r} is {list(held[name])}, but config.json "
                              f"makes it {list(shape)}: is config.json the one that came with these weights?")


def _weight_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a folder's safetensors files, read from their headers ({} when one is unreadable:
    its loader names it with the reason)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for shard in _weight_files(folder):
        try:
            shapes |= read_header(folder / shard).shapes
        except OSError:
            return {}
    return shapes


def check_model_size(root: Path, profile: str, chat: ChatNeed) -> None:
    """Raises ConfigError when a random profile is given a folder of the other size: `--profile full-random` (a
    benchmark at the real dimensions) on a tiny folder served tiny models without a word, and `--profile tiny` on a
    full-size one would load 3.5 B-parameter models on the CPU. A folder that passed check_layout is read."""
    if profile not in RANDOM_PROFILES:  # step-audio: the real checkpoints, whatever their size
        return
    for sub in _lm_dirs(chat):
        if (other := other_size(root / sub, profile)) is not None:
            size, hint = _OTHER_SIZE[profile]
            raise ConfigError(f"--profile {profile}: {root / sub} is not {size} ({other}): {hint}")


def other_size(lm_dir: Path, profile: str) -> str | None:
    """How a Step-Audio-Chat/ or Step-Audio-TTS-3B/ folder is not of the size that random profile writes
    ("hidden_size N, PROFILE has M"); None when it is, or its config.json does not say."""
    from lm_engine.checkpoint import profile_hidden_size

    got = _hidden_size(lm_dir)
    want = profile_hidden_size(profile, "tts" if lm_dir.name == TTS_DIR else "chat")
    return None if got is None or got == want else f"hidden_size {got}, {profile} has {want}"


# profile -> (what its folders are, what to do with a folder of the other size); serve, tts and chat say it, so the
# hint names no one command
_OTHER_SIZE = {
    "tiny": ("tiny", "use it with --profile full-random (random weights, on a GPU) or --profile step-audio (real "
                     "ones)"),
    "full-random": ("full-size", "a folder from `make-checkpoint --profile tiny`? Use it with --profile tiny, or "
                                 "write a full-size one with `stepaudio-rt make-checkpoint --profile full-random DIR`"),
}


def _hidden_size(folder: Path) -> int | None:
    try:
        return int(json.loads((folder / "config.json").read_text(encoding="utf-8"))["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError):  # the loader names a damaged config.json with its fault
        return None


def check_speaker(root: Path, name: str) -> None:
    """Raises ConfigError unless `name` is a speaker of a folder that passed check_layout (what --speaker may name)."""
    folder = find_speakers_dir(root / TTS_DIR, root)
    assert folder is not None, "check_layout has found it"
    names = read_speakers_info(folder)
    if name in names:
        return
    wav = folder / prompt_wav_name(name)
    # a voice added to the folder without its line in speakers_info.json: "unknown" alone sent the user looking
    there = names_a_file(name) and wav.is_file()  # "../x" would find a wav outside the folder
    why = f" ({wav} is there, but {SPEAKERS_INFO} gives no transcript for it)" if there else ""
    raise ConfigError(f"unknown speaker {name!r}; known: {', '.join(sorted(names))}{why}")


def _missing_in(root: Path, sub: str, names: tuple[str, ...]) -> list[str]:
    if not (root / sub).is_dir():
        return [f"{sub}/"]
    return [m for n in names for m in _absent(root, f"{sub}/{n}") or _damaged(root, f"{sub}/{n}")]


def _absent(root: Path, rel: str) -> list[str]:
    """[rel] when root/rel is no file, [rel + LFS_NOTE] when it is a Git LFS pointer, else []. A clone made without
    git-lfs holds ~130-byte pointers in place of the weights: each loader failed on the first one with an error of
    its own ("header too large", "Protobuf parsing failed"), one file per try."""
    path = root / rel
    if not path.is_file():
        return [rel]
    try:
        with path.open("rb") as f:
            head = f.read(len(LFS_POINTER))
    except OSError:  # unreadable: its loader names it with the reason
        return []
    return [rel + LFS_NOTE] if head == LFS_POINTER else []


def _weight_files(folder: Path) -> list[str]:
    """The names of an LM folder's safetensors files: its index's, else those there ("*.safetensors" if none)."""
    index = folder / WEIGHTS_INDEX
    if index.is_file():
        try:
            return sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, AttributeError) as exc:
            raise ConfigError(f"{index} is not a safetensors index ({exc})") from exc
    return sorted(f.name for f in folder.glob("*.safetensors")) or ["*.safetensors"]


def _missing_weights(root: Path, sub: str) -> list[str]:
    folder = root / sub
    if not folder.is_dir():
        return []
    rels = [f"{sub}/{shard}" for shard in _weight_files(folder)]
    missing = [m for rel in rels for m in _absent(root, rel) or _damaged(root, rel)]
    if missing and sub == CHAT_DIR:
        missing[-1] += " (its weights; or run the Chat LM on a server and pass --chat-url)"
    return missing


def _damaged(root: Path, rel: str) -> list[str]:
    """[rel + why] for a file that is there but not whole (file_integrity.damage), else []."""
    why = damage(root / rel)
    return [f"{rel} ({why})"] if why else []


def _missing_speakers(root: Path) -> list[str]:
    folder = find_speakers_dir(root / TTS_DIR, root)
    if folder is None:
        return [f"{TTS_DIR}/{SPEAKERS_DIR}/{SPEAKERS_INFO} (the speakers/ folder of the Step-Audio code repository, "
                f"github.com/stepfun-ai/Step-Audio, copied here or into {root})"]
    rel = folder.relative_to(root)
    if lacks := _absent(root, f"{rel}/{SPEAKERS_INFO}"):  # a pointer: there are no names to read yet
        return lacks
    try:
        names = read_speakers_info(folder)
    except (StepTtsError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    if not names:
        raise ConfigError(f"{folder / SPEAKERS_INFO} names no speaker (upstream's maps Tingting to its transcript)")
    return [m for name in names for m in _absent(root, f"{rel}/{prompt_wav_name(name)}")]
