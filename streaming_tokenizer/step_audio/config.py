"""Frozen configs for the Step-Audio dual-codebook tokenizer, read from the real folder layout.

Step-Audio-Tokenizer/ holds (names as upstream stepfun-ai/Step-Audio tokenizer.py opens them):
    linguistic_tokenizer.npy                      float32 [1024, 512] k-means centroids (vq02)
    speech_tokenizer_v1.onnx                      CosyVoice-300M-25Hz S3 tokenizer v1 (vq06)
    dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online/
        model.pt  config.yaml  am.mvn  tokens.json  seg_dict

Only the Paraformer encoder is used. Its hyper-parameters come from config.yaml (`encoder_conf`,
`frontend_conf`), as FunASR's ParaformerStreaming reads them; the streaming schedule (chunk_size [0, 4, 5],
encoder_chunk_look_back 4) is hard-coded upstream in StepAudioTokenizer.__init__, so it lives in StreamConfig.

Errors: StepTokenizerError (a ValueError) -> TokenizerConfigError (bad folder / config file).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

PARAFORMER_DIR = "dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online"
KMEANS_FILE = "linguistic_tokenizer.npy"
S3_ONNX_FILE = "speech_tokenizer_v1.onnx"
PARAFORMER_FILES = ("model.pt", "config.yaml", "am.mvn", "tokens.json", "seg_dict")
# What StepAudioTokenizer.load reads (the Paraformer's tokens.json and seg_dict are for its ASR decoder, unused).
REQUIRED_FILES = (KMEANS_FILE, S3_ONNX_FILE, *(f"{PARAFORMER_DIR}/{f}" for f in ("model.pt", "config.yaml", "am.mvn")))

# LM id layout (STEP_AUDIO.md "Tokenizers"): vq02 c -> 65536 + c; vq06 c -> 65536 + 1024 + c.
AUDIO_ID_BASE = 65536
VQ02_CODES = 1024
VQ06_CODES = 4096


class StepTokenizerError(ValueError):
    """Caller misuse or bad input to the Step-Audio tokenizer."""


class TokenizerConfigError(StepTokenizerError):
    """The tokenizer folder or one of its config files is missing or inconsistent."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FbankConfig:
    """frontend_conf of the Paraformer config.yaml (FunASR WavFrontendOnline arguments)."""

    fs: int = 16000
    window: str = "hamming"
    n_mels: int = 80
    frame_length: int = 25  # ms
    frame_shift: int = 10  # ms
    lfr_m: int = 7
    lfr_n: int = 6
    # Upstream WavFrontend defaults dither to 1.0 when the yaml omits it; we always compute with 0 so that
    # tokens are deterministic (the value read from the yaml is kept only for the record).
    dither: float = 0.0

    def __post_init__(self) -> None:
        if self.fs != 16000 or self.window != "hamming":
            raise TokenizerConfigError(
                f"frontend_conf: need fs 16000 and a hamming window, got {self.fs}, {self.window}")
        if self.lfr_m < 1 or self.lfr_n < 1 or self.n_mels < 1:
            raise TokenizerConfigError("frontend_conf: lfr_m, lfr_n and n_mels must be positive")

    @property
    def frame_samples(self) -> int:
        return self.fs * self.frame_length // 1000

    @property
    def shift_samples(self) -> int:
        return self.fs * self.frame_shift // 1000

    @property
    def feat_dim(self) -> int:
        return self.n_mels * self.lfr_m


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SanmConfig:
    """encoder_conf of the Paraformer config.yaml (FunASR SANMEncoderChunkOpt arguments)."""

    input_size: int = 560
    output_size: int = 512
    attention_heads: int = 4
    linear_units: int = 2048
    num_blocks: int = 50
    kernel_size: int = 11
    sanm_shift: int = 0

    def __post_init__(self) -> None:
        if self.output_size % self.attention_heads:
            raise TokenizerConfigError("encoder_conf: output_size must be divisible by attention_heads")
        if self.num_blocks < 1 or self.kernel_size < 1:
            raise TokenizerConfigError("encoder_conf: num_blocks and kernel_size must be positive")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class S3Config:
    """Dimensions of the S3 tokenizer v1 (speech_tokenizer_v1_25hz in xingchensong/S3Tokenizer)."""

    n_mels: int = 128
    n_ctx: int = 1500
    n_state: int = 1280
    n_head: int = 20
    n_layer: int = 6
    codebook_size: int = 4096
    conv1_stride: int = 2  # 2 for the 25 Hz model, 1 for the 50 Hz speech_tokenizer_v1

    def __post_init__(self) -> None:
        if self.n_state % self.n_head:
            raise TokenizerConfigError("S3: n_state must be divisible by n_head")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StreamConfig:
    """The streaming schedule.

    vq02: chunk_size [0, 4, 5] = 4 new LFR frames (240 ms) per encoder step with 5 frames of overlap, KV look-back
    of 4 chunks (upstream StepAudioTokenizer). vq06 (full attention upstream) is run on a bounded window per 240 ms
    hop: mel frames [24h - context, 24h + 24 + lookahead), so hop h is final once lookahead ms past its end exist.
    """

    chunk_size: tuple[int, int, int] = (0, 4, 5)
    encoder_chunk_look_back: int = 4
    vq06_context_frames: int = 288  # 2.88 s of left context (multiple of 4 keeps the 25 Hz token grid aligned)
    vq06_lookahead_frames: int = 24  # 240 ms
    intra_op_threads: int = 1

    def __post_init__(self) -> None:
        if self.chunk_size[0] != 0 or self.chunk_size[1] < 1 or self.chunk_size[2] < 1:
            raise TokenizerConfigError(f"chunk_size must be [0, stride>0, overlap>0], got {self.chunk_size}")
        if self.vq06_context_frames % 4 or self.vq06_context_frames < 0 or self.vq06_lookahead_frames < 0:
            raise TokenizerConfigError("vq06_context_frames must be a non-negative multiple of 4")


def _pick(src: dict[str, Any], cls: type, renames: dict[str, str] | None = None) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in src.items():
        key = (renames or {}).get(key, key)
        if key in names:
            out[key] = value
    return out


def read_paraformer_config(path: Path) -> tuple[FbankConfig, SanmConfig]:
    """Reads frontend_conf and encoder_conf from the Paraformer config.yaml."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except OSError as exc:
        raise TokenizerConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict) or "encoder_conf" not in raw or "frontend_conf" not in raw:
        raise TokenizerConfigError(f"{path}: expected a mapping with encoder_conf and frontend_conf")
    fb = FbankConfig(**_pick(raw["frontend_conf"], FbankConfig))
    # FunASR spells the argument `sanm_shfit` in the encoder class and `sanm_shift` in newer templates.
    enc = _pick(raw["encoder_conf"], SanmConfig, {"sanm_shfit": "sanm_shift"})
    if raw.get("encoder_conf", {}).get("selfattention_layer_type", "sanm") != "sanm":
        raise TokenizerConfigError(f"{path}: only selfattention_layer_type sanm is supported")
    return fb, SanmConfig(input_size=fb.feat_dim, **enc)
