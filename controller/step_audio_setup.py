"""Setting up the Step-Audio pipeline (profiles step-audio, tiny, full-random) before any model loads: its config,
the serve command's folder and torchrun checks, where the tiny profile's folder lives, and the tensor-parallel
followers' entry. Light to import: torch and the engine are imported only where a rank loads."""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.errors import ConfigError, stop_if_cancelled
from controller.step_audio_layout import ChatNeed, check_layout, check_model_size, check_weights_match

logger = logging.getLogger(__name__)

RANDOM_PROFILES = ("tiny", "full-random")

@dataclass(frozen=True, slots=True, kw_only=True)
class StepAudioConfig:
    model_path: Path
    profile: str = "step-audio"  # step-audio | tiny | full-random
    threads: int = 2
    language: str = "en"
    tp: int = 1
    chat_url: str | None = None
    chat: bool = True  # False: no Chat LM and no Step-Audio-Chat/ (the `tts` tool, as upstream's tts_inference.py)
    asr: bool = True  # Whisper transcripts for the history (when the package is installed)
    device: str | None = None  # None: cuda when available
    max_reply_tokens: int | None = None  # None: the request's max_tokens (tiny: 24, unless --chat-url)
    tts_max_tokens: int = 2048  # audio tokens per sentence at most (tiny: 75)
    constrain_text: bool = False  # sample the Chat LM under a text-pieces mask (random checkpoints)
    seed: int = 0
    tp_step_timeout_s: float = 60.0  # tp > 1: a Chat LM step waits this long for the other ranks

    @classmethod
    def for_profile(cls, profile: str, model_path: Path, **kw: Any) -> StepAudioConfig:
        random = profile in RANDOM_PROFILES
        defaults: dict[str, Any] = dict(constrain_text=random)
        if profile == "tiny":
            # The reply cap keeps the random Chat LM's rambling short; one behind --chat-url is a real model, whose
            # answers the cap cut mid-sentence (and called complete).
            defaults.update(max_reply_tokens=None if kw.get("chat_url") else 24, tts_max_tokens=75, device="cpu")
        return cls(model_path=Path(model_path), profile=profile, **{**defaults, **kw})


def chat_need(config: StepAudioConfig) -> ChatNeed:
    """How much of Step-Audio-Chat/ this pipeline reads."""
    return ChatNeed.TOKENIZER if config.chat_url else ChatNeed.WEIGHTS if config.chat else ChatNeed.NONE


def tiny_cache_dir() -> Path:
    """Where `serve --profile tiny` without --model-path keeps its folder: $STEPAUDIO_RT_CACHE/tiny."""
    from lm_engine.assets import default_cache_dir

    return default_cache_dir() / "tiny"


def chat_engine_config(config: StepAudioConfig, on_cpu: bool) -> Any:
    """The Chat LM's engine settings; every tensor-parallel rank must build the same."""
    from lm_engine import EngineConfig

    return EngineConfig(kv_cache_memory_gib=0.25 if on_cpu else 1.0, gpu_memory_utilization=0.9, seed=config.seed,
                        tp_step_timeout_s=config.tp_step_timeout_s)


def follow_chat_rank(app_config: Any) -> None:
    """Ranks > 0 of `torchrun --nproc-per-node N stepaudio-rt serve --profile P --model-path DIR`: load this
    rank's shard of the Chat LM and run rank 0's engine steps until rank 0 closes it; no server, no other model.
    Rank 0 serves as usual and drives the others (lm_engine.engine.tp_worker). Exits the process when done."""
    import torch

    from controller.checkpoints import CHAT_DIR
    from lm_engine import Engine
    from lm_engine.utils.loader import CheckpointError

    tp = check_model_folder(app_config)  # rank 0's checks, so that a bad folder is one line from every rank
    cfg = StepAudioConfig.for_profile(app_config.profile, app_config.model_path, tp=tp,
                                      tp_step_timeout_s=app_config.tp_step_timeout_s)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        torch.set_num_threads(1)  # as rank 0 does for tiny: the ranks share the machine's cores
    chat_dir = cfg.model_path / CHAT_DIR
    logger.info("rank %s: following rank 0 with %s (tp=%d)", os.environ.get("RANK"), chat_dir, tp)
    try:
        Engine.from_pretrained(chat_dir, device=device, tp=tp, progress=False,
                               config=chat_engine_config(cfg, device == "cpu"))
    except (CheckpointError, OSError) as exc:  # the folder's files, as rank 0 says it; not the gloo errors of
        raise load_error(chat_dir, exc) from exc  # following, which are rank 0's to explain
    raise SystemExit(0)  # from_pretrained returns only on rank 0


def check_tensor_parallel(app_config: Any) -> int:
    """Under torchrun (WORLD_SIZE > 1), on every rank before anything loads: a profile with a Chat LM to shard, a
    --model-path, no --chat-url, and a size that divides the Chat LM (from its config.json; a folder without one
    is check_layout's to report). Returns the size, 1 without torchrun."""
    from controller.checkpoints import CHAT_DIR
    from lm_engine.models.config import ModelConfig, ModelConfigError

    tp = int(os.environ.get("WORLD_SIZE", "1"))
    if tp == 1:
        return 1
    if app_config.profile not in ("step-audio", *RANDOM_PROFILES):
        raise ConfigError(f"torchrun (WORLD_SIZE={tp}) shards the Step-Audio Chat LM; profile "
                          f"{app_config.profile!r} has none")
    if app_config.model_path is None or app_config.chat_url:
        raise ConfigError("tensor parallel serving needs --model-path DIR (the same on every rank) and no "
                          "--chat-url")
    chat_dir = Path(app_config.model_path) / CHAT_DIR
    if (chat_dir / "config.json").is_file():
        try:
            config = ModelConfig.from_dir(chat_dir)
        except ModelConfigError as exc:  # config.json's own fault, which names its file and field: not torchrun's
            raise ConfigError(str(exc)) from exc
        try:
            config.check_tp(tp)
        except ModelConfigError as exc:
            raise ConfigError(f"torchrun --nproc-per-node {tp}: {chat_dir}: {exc}") from exc
    return tp


def check_model_folder(app_config: Any) -> int:
    """The serve command's checks before it listens: a missing or partial folder, or a torchrun size that cannot
    split the Chat LM, is one error line, not a server that says it listens and then stops. (Without
    --model-path, tiny writes its own folder at load, into a cache it can write.) Returns the tensor-parallel size
    (check_tensor_parallel)."""
    tp = check_tensor_parallel(app_config)
    if app_config.model_path is not None:
        cfg = StepAudioConfig.for_profile(app_config.profile, app_config.model_path, chat_url=app_config.chat_url)
        check_layout(cfg.model_path, chat_need(cfg))
        check_model_size(cfg.model_path, cfg.profile, chat_need(cfg))
        check_weights_match(cfg.model_path, chat_need(cfg))
    elif app_config.profile == "tiny" and not tiny_cache_dir().is_dir():
        from model_files.cache import check_writable
        try:
            check_writable(tiny_cache_dir().parent)
        except OSError as exc:
            raise tiny_folder_error(exc) from exc
    return tp


def whisper_cache_error(language: str, exc: OSError) -> ConfigError:
    """Whisper base (a --language other than English) cannot be assembled into the cache."""
    from model_files.cache import cache_hint

    return ConfigError(f"cannot prepare Whisper (--language {language}): {exc}{cache_hint(exc, '200 MB')}")


def tiny_folder_error(exc: OSError) -> ConfigError:
    """The tiny folder that serve writes into the cache on its first start cannot be written there."""
    from model_files.cache import cache_hint

    return ConfigError(f"cannot write the tiny model folder: {exc}{cache_hint(exc, '100 MB')}; or give --model-path "
                       "DIR")


@contextlib.contextmanager
def loading(folder: Path, note: str = "", cancel: threading.Event | None = None) -> Iterator[None]:
    """Loads from one folder of the user's layout, unless `cancel` is set (stop_if_cancelled). Its failures (a
    truncated download, a file of another model, a folder mixed up with another) come from torch, safetensors, onnx
    or json and say nothing of where: they are raised again as a ConfigError naming the folder, which the CLI prints
    in one line."""
    stop_if_cancelled(cancel)
    logger.info("loading %s%s", folder, f" ({note})" if note else "")
    try:
        yield
    except ConfigError:
        raise
    except Exception as exc:
        raise load_error(folder, exc) from exc


def load_error(folder: Path, exc: Exception) -> ConfigError:
    import yaml

    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        # a config cut short: yaml's first line is only its context ("while scanning a quoted scalar"), no file
        mark = exc.problem_mark
        return ConfigError(f"cannot load {folder}: {mark.name} is not valid YAML (line {mark.line + 1}: "
                           f"{exc.problem}): a download cut short?")
    first_line = next(iter(str(exc).splitlines()), "")  # torch.load's run on for a page
    return ConfigError(f"cannot load {folder}: {type(exc).__name__}: {first_line}")
