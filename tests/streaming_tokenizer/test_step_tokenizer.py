"""Step-Audio tokenizer on a tiny random checkpoint written in the real Step-Audio-Tokenizer layout.

Upstream facts checked here (sources read: stepfun-ai/Step-Audio tokenizer.py, funasr_detach/models/
paraformer_streaming/model.py infer_encoder, funasr_detach/models/scama/encoder.py, funasr_detach/models/sanm/
attention.py; modelscope/FunASR funasr/models/paraformer_streaming/template.yaml; xingchensong/S3Tokenizer
s3tokenizer/model.py, utils.py, test/test_onnx.py; CosyVoice runtimes that bind feats/feats_length/indices).
"""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

from streaming_tokenizer.step_audio import (
    StepAudioTokenizer, StreamConfig, TokenizerConfigError, Vq06Backend, ids_to_text, interleave,
    write_tokenizer_folder,
)  # fmt: skip
from streaming_tokenizer.step_audio.config import PARAFORMER_DIR
from streaming_tokenizer.step_audio.s3 import token_count


@pytest.fixture(scope="module")
def folder(tmp_path_factory):  # type: ignore[no-untyped-def]
    return write_tokenizer_folder(tmp_path_factory.mktemp("tok") / "Step-Audio-Tokenizer", "tiny")


@pytest.fixture(scope="module")
def tok(folder) -> StepAudioTokenizer:  # type: ignore[no-untyped-def]
    return StepAudioTokenizer.load(folder)


def _speech_like(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    x = env * np.sin(2 * np.pi * (150 + 400 * np.sin(2 * np.pi * 0.7 * t)) * t) + 0.05 * rng.standard_normal(len(t))
    return (0.4 * x).astype(np.float32)


def _expected_ids(n16k: int) -> int:
    n_fbank = 0 if n16k < 400 else 1 + (n16k - 400) // 160
    n02, n06 = math.ceil(n_fbank / 6), token_count(n16k // 160)
    return 5 * min(n02 // 2, n06 // 3)


def test_folder_layout_keys_and_config(folder) -> None:  # type: ignore[no-untyped-def]
    para = folder / PARAFORMER_DIR
    for name in ("model.pt", "config.yaml", "am.mvn", "tokens.json", "seg_dict"):
        assert (para / name).is_file()
    assert np.load(folder / "linguistic_tokenizer.npy").shape == (1024, 32)
    cfg = yaml.safe_load((para / "config.yaml").read_text())
    assert cfg["model"] == "ParaformerStreaming" and cfg["encoder"] == "SANMEncoderChunkOpt"
    assert cfg["frontend"] == "WavFrontendOnline"
    frontend = {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10, "lfr_m": 7,
                "lfr_n": 6}
    assert {k: cfg["frontend_conf"][k] for k in frontend} == frontend
    enc = cfg["encoder_conf"]
    assert enc["input_layer"] == "pe_online" and enc["selfattention_layer_type"] == "sanm" and enc["kernel_size"] == 11
    keys = torch.load(para / "model.pt", weights_only=True)
    expected = {
        "encoder.encoders0.0.self_attn.linear_q_k_v.weight": (96, 560),
        "encoder.encoders0.0.self_attn.fsmn_block.weight": (32, 1, 11),
        "encoder.encoders0.0.self_attn.linear_out.weight": (32, 32),
        "encoder.encoders0.0.feed_forward.w_1.weight": (64, 32),
        "encoder.encoders0.0.norm1.weight": (560,),
        "encoder.encoders.1.feed_forward.w_2.bias": (32,),
        "encoder.encoders.1.norm2.weight": (32,),
        "encoder.after_norm.bias": (32,),
    }
    assert {k: tuple(keys[k].shape) for k in expected} == expected
    assert len([k for k in keys if k.startswith("encoder.encoders.")]) == 2 * 13  # num_blocks - 1 layers of 13 tensors


def test_onnx_signature_as_upstream(folder) -> None:  # type: ignore[no-untyped-def]
    s = ort.InferenceSession(str(folder / "speech_tokenizer_v1.onnx"), providers=["CPUExecutionProvider"])
    ins, outs = s.get_inputs(), s.get_outputs()
    assert [(i.name, i.type) for i in ins] == [("feats", "tensor(float)"), ("feats_length", "tensor(int32)")]
    assert ins[0].shape[:2] == [1, 128] and isinstance(ins[0].shape[2], str) and ins[1].shape == [1]
    assert [(o.name, o.type) for o in outs] == [("indices", "tensor(int64)")]
    # Upstream call: inputs bound by position, T = 301 frames (3.01 s) -> 25 Hz tokens, flattened.
    feats = np.random.default_rng(0).standard_normal((1, 128, 301)).astype(np.float32)
    out = s.run(None, {ins[0].name: feats, ins[1].name: np.array([301], np.int32)})[0]
    assert out.shape == (1, 1, 76) and out.min() >= 0 and out.max() < 4096


def test_missing_file_is_a_config_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TokenizerConfigError, match="linguistic_tokenizer.npy"):
        StepAudioTokenizer.load(tmp_path)


def test_streaming_equals_offline_for_any_feed_sizes(tok: StepAudioTokenizer) -> None:
    wav = _speech_like(3.1)
    offline = tok.tokenize_offline(wav)
    assert len(offline) == _expected_ids(len(wav)) > 0
    rng = np.random.default_rng(1)
    for sizes in ([len(wav)], [160] * 400, None):
        session = tok.new_session()
        got, i = [], 0
        while i < len(wav):
            n = sizes.pop(0) if sizes else int(rng.integers(1, 6000))
            got += session.feed(wav[i : i + n])
            i += n
        got += session.finish()
        assert got == offline


def test_hops_emit_ten_ids_with_bounded_lookahead(tok: StepAudioTokenizer) -> None:
    """Hop h (2 groups, 10 ids) leaves once 0.24 (h + 2) s + 2.5 ms of audio exist, never earlier."""
    wav = _speech_like(2.0, seed=2)
    offline = tok.tokenize_offline(wav)
    session = tok.new_session()
    emitted: list[int] = []
    for i in range(0, len(wav), 160):  # 10 ms frames
        new = session.feed(wav[i : i + 160])
        if new:
            assert len(new) == 10
            hop = len(emitted) // 10
            assert i + 160 >= 3840 * (hop + 2) + 40 > i  # exactly when the lookahead completes
        emitted += new
    assert offline[: len(emitted)] == emitted  # causal: later audio never changes earlier ids
    assert emitted + session.finish() == offline


def test_lm_id_ranges_and_interleave(tok: StepAudioTokenizer) -> None:
    ids = tok.tokenize_offline(_speech_like(2.4, seed=3))
    groups = [ids[i : i + 5] for i in range(0, len(ids), 5)]
    assert all(65536 <= a < 66560 and 65536 <= b < 66560 for a, b, *_ in groups)
    assert all(66560 <= c < 70656 for g in groups for c in g[2:])
    assert len(set(ids)) > 5  # the random model still spreads codes
    assert interleave([1, 2, 3], [4, 5, 6, 7]) == [65537, 65538, 66564, 66565, 66566]
    assert ids_to_text([65537, 66564]) == "<audio_1><audio_1028>"


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (16000, 2), (8000, 2), (44100, 1)])
def test_telephony_and_multichannel(tok: StepAudioTokenizer, rate: int, channels: int) -> None:
    mono = _speech_like(2.0, rate=rate, seed=4)
    audio = mono if channels == 1 else np.stack([mono, 0.5 * mono], axis=1)  # [N, C] as soundfile reads it
    session = tok.new_session(rate)
    ids: list[int] = []
    for i in range(0, len(audio), rate // 50):
        ids += session.feed(audio[i : i + rate // 50])
    ids += session.finish()
    assert abs(session.samples16k - 32000) <= 1
    assert len(ids) == _expected_ids(session.samples16k)
    assert abs(len(ids) / 2.0 - 125 / 3) < 5  # 41.67 ids per second
    offline = tok.tokenize_offline(audio, rate)
    assert len(offline) == len(ids)
    if rate == 16000:
        assert offline == ids
        assert tok.tokenize_offline(audio.T, rate) == ids  # [C, N] is read the same way


@pytest.mark.parametrize(("seconds", "rate", "trim"), [
    (0.05, 16000, False), (0.09, 22050, False), (0.13, 44100, False), (1.0, 8000, True), (2.37, 16000, True),
    (30.05, 16000, False),  # a second 30 s piece of 800 samples (one under 480 is dropped)
])
def test_offline_id_count_is_the_number_of_ids_tokenize_offline_gives(  # type: ignore[no-untyped-def]
        folder, tok: StepAudioTokenizer, seconds: float, rate: int, trim: bool) -> None:
    """The tools refuse a wav by this count before any model loads; it must be the tokenizer's own."""
    from streaming_tokenizer.step_audio.tokenizer import offline_id_count

    wav = _speech_like(seconds, rate, seed=3)
    assert offline_id_count(folder, wav, rate, trim=trim) == len(tok.tokenize_offline(wav, rate, upstream=True,
                                                                                      trim=trim))


def test_upstream_mode_counts_and_backends(folder, tok: StepAudioTokenizer) -> None:  # type: ignore[no-untyped-def]
    wav = _speech_like(2.5, seed=5)
    vq02, vq06 = tok.codes_offline(tok.prepare(wav, 16000, upstream=True), upstream=True)
    assert abs(len(vq06) - 2.5 * 25) <= 2  # upstream asserts |tokens - duration * 25| <= 2
    assert len(vq02) == math.ceil((1 + (len(wav) - 400) // 160) / 6)
    torch_tok = StepAudioTokenizer.load(folder, backend=Vq06Backend.TORCH)
    assert torch_tok.tokenize_offline(wav) == tok.tokenize_offline(wav)


def test_stream_config_validation() -> None:
    with pytest.raises(TokenizerConfigError):
        StreamConfig(vq06_context_frames=10)
    with pytest.raises(TokenizerConfigError):
        StreamConfig(chunk_size=(1, 4, 5))
