"""Writes a random-initialised Step-Audio-Tokenizer folder in the real layout (the real weights are not here).

Profiles: "full-random" has the real dimensions (SANM 50 x 512, 4 heads, FFN 2048, kernel 11; S3 v1 1280-d,
20 heads, 6 blocks, 4096 codes; centroids [1024, 512]); "tiny" keeps every file, name, key and I/O signature
but shrinks the widths so that CI runs it in seconds. config.yaml follows FunASR's ParaformerStreaming
template (funasr/models/paraformer_streaming/template.yaml) with the fields our loader and FunASR read.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
import yaml

from .config import (
    KMEANS_FILE, PARAFORMER_DIR, S3_ONNX_FILE, VQ02_CODES, FbankConfig, S3Config, SanmConfig, StepTokenizerError,
)  # fmt: skip
from .s3 import S3TokenizerV1, export_onnx
from .sanm import SanmEncoder

PROFILES: dict[str, tuple[SanmConfig, S3Config]] = {
    "full-random": (SanmConfig(), S3Config()),
    "tiny": (
        SanmConfig(output_size=32, attention_heads=4, linear_units=64, num_blocks=3),
        S3Config(n_state=128, n_head=2, n_layer=2),
    ),
}
VOCAB_SIZE = 8501  # the model id's "vocab8501"


def _config_yaml(fb: FbankConfig, enc: SanmConfig) -> dict:
    return {
        "model": "ParaformerStreaming",
        "model_conf": {"ctc_weight": 0.0, "lsm_weight": 0.1, "length_normalized_loss": True,
                       "predictor_weight": 1.0, "predictor_bias": 1, "sampling_ratio": 0.75},
        "encoder": "SANMEncoderChunkOpt",
        "encoder_conf": {
            "output_size": enc.output_size, "attention_heads": enc.attention_heads,
            "linear_units": enc.linear_units, "num_blocks": enc.num_blocks, "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1, "input_layer": "pe_online",
            "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True,
            "kernel_size": enc.kernel_size, "sanm_shfit": enc.sanm_shift, "selfattention_layer_type": "sanm",
            "chunk_size": [12, 15], "stride": [8, 10], "pad_left": [0, 0],
            "encoder_att_look_back_factor": [4, 4], "decoder_att_look_back_factor": [1, 1],
        },
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": {"attention_heads": enc.attention_heads, "linear_units": enc.linear_units,
                         "num_blocks": 16, "att_layer_num": 16, "kernel_size": 11, "sanm_shift": 5},
        "predictor": "CifPredictorV2",
        "predictor_conf": {"idim": enc.output_size, "threshold": 1.0, "l_order": 1, "r_order": 1,
                           "tail_threshold": 0.45},
        "frontend": "WavFrontendOnline",
        "frontend_conf": {"fs": fb.fs, "window": fb.window, "n_mels": fb.n_mels, "frame_length": fb.frame_length,
                          "frame_shift": fb.frame_shift, "lfr_m": fb.lfr_m, "lfr_n": fb.lfr_n, "dither": 0.0,
                          "cmvn_file": "am.mvn"},
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True, "token_list": "tokens.json",
                           "seg_dict_file": "seg_dict"},
    }  # fmt: skip


def _am_mvn(shift: np.ndarray, scale: np.ndarray) -> str:
    d = len(shift)

    def vec(v: np.ndarray) -> str:
        return " ".join(f"{x:.6f}" for x in v)

    return (
        f"<Nnet>\n<Splice> {d} {d}\n[ 0 ]\n"
        f"<AddShift> {d} {d}\n<LearnRateCoef> 0 [ {vec(shift)} ]\n"
        f"<Rescale> {d} {d}\n<LearnRateCoef> 0 [ {vec(scale)} ]\n</Nnet>\n"
    )


def write_tokenizer_folder(out_dir: str | Path, profile: str = "tiny", seed: int = 0) -> Path:
    """Writes Step-Audio-Tokenizer files under out_dir (created); returns out_dir."""
    if profile not in PROFILES:
        raise StepTokenizerError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    enc_cfg, s3_cfg = PROFILES[profile]
    fb = FbankConfig()
    enc_cfg = dataclasses.replace(enc_cfg, input_size=fb.feat_dim)
    root = Path(out_dir)
    para = root / PARAFORMER_DIR
    para.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)

    sanm = SanmEncoder(enc_cfg)
    with torch.no_grad():
        for name, p in sanm.named_parameters():
            if p.dim() > 1:  # keep LayerNorms at identity, spread the rest so codes vary
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / p.shape[-1]) ** 0.5)
    torch.save({f"encoder.{k}": v for k, v in sanm.state_dict().items()}, para / "model.pt")
    (para / "config.yaml").write_text(yaml.safe_dump(_config_yaml(fb, enc_cfg), sort_keys=False), encoding="utf-8")
    # Plausible log-mel statistics: means around -10, inverse std around 0.25.
    shift = -(10.0 + rng.standard_normal(fb.feat_dim)).astype(np.float32)
    scale = (0.25 + 0.02 * rng.standard_normal(fb.feat_dim)).astype(np.float32)
    (para / "am.mvn").write_text(_am_mvn(shift, scale), encoding="utf-8")
    tokens = ["<blank>", "<s>", "</s>"] + [f"tok{i}" for i in range(VOCAB_SIZE - 4)] + ["<unk>"]
    (para / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False), encoding="utf-8")
    (para / "seg_dict").write_text("hello tok1 tok2\nworld tok3\n", encoding="utf-8")

    np.save(root / KMEANS_FILE, rng.standard_normal((VQ02_CODES, enc_cfg.output_size)).astype(np.float32))

    s3 = S3TokenizerV1(s3_cfg)
    with torch.no_grad():
        for name, p in s3.named_parameters():
            if p.dim() > 1:
                fan_in = p.shape[1] * (p.shape[2] if p.dim() == 3 else 1)
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / fan_in) ** 0.5)
            else:  # distinct values: the ONNX exporter merges identical initializers (all-ones LayerNorms)
                p.add_(0.02 * torch.randn(p.shape, generator=gen))
        # Unit rows: the quantiser L2-normalises h, so rows of equal norm make the argmin depend on h's direction.
        embed = torch.randn(s3.quantizer._codebook.embed.shape, generator=gen)
        s3.quantizer._codebook.embed.copy_(torch.nn.functional.normalize(embed, dim=-1))
    export_onnx(s3, root / S3_ONNX_FILE)
    return root
