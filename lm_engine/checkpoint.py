"""Writes random-initialised Step-1 checkpoints in the real layout (tests on CPU, benchmarks on GPU).

Files: config.json (upstream field names), safetensors with the real key names (single file, or shards) with
model.safetensors.index.json carrying metadata.total_size (for a single file too, as Step-Audio-TTS-3B has it),
tokenizer.model (sentencepiece trained here on a built-in text) and tokenizer_config.json.

Profiles:
    tiny        chat: 24 heads : 2 KV groups (the Chat 96:8 ratio, non-power-of-two head count), tts: 12 : 1
                (the TTS 48:4 ratio); head_dim 8, 2 layers, text vocab 1024 + 5120 audio tokens = vocab 6144:
                <audio_N> -> 1024 + N.
    full-random the real dims (TTS-3B 3.53 B params, Chat 130 B), text vocab 65536 + 5120 audio tokens
                (<audio_N> -> 65536 + N), model vocab 74752. Chat weights only when asked, sharded.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from safetensors.torch import save_file
from sentencepiece import sentencepiece_model_pb2 as sp_pb2
from tqdm import tqdm

from lm_engine.models.config import step1_hf_config
from lm_engine.tokenizer import BOT, EOT

NUM_AUDIO_TOKENS = 1024 + 4096
_PROFILES: dict[tuple[str, str], dict[str, Any]] = {
    ("tiny", "tts"): dict(hidden_size=96, intermediate_size=192, num_attention_heads=12, num_attention_groups=1,
                          num_hidden_layers=2, vocab_size=6144, max_seq_len=4096, torch_dtype="float32"),
    ("tiny", "chat"): dict(hidden_size=192, intermediate_size=384, num_attention_heads=24, num_attention_groups=2,
                           num_hidden_layers=2, vocab_size=6144, max_seq_len=4096, torch_dtype="float32"),
    ("full-random", "tts"): dict(hidden_size=3072, intermediate_size=8192, num_attention_heads=48,
                                 num_attention_groups=4, num_hidden_layers=32, vocab_size=74752),
    ("full-random", "chat"): dict(hidden_size=12288, intermediate_size=31232, num_attention_heads=96,
                                  num_attention_groups=8, num_hidden_layers=88, vocab_size=74752),
}
_TEXT_VOCAB = {"tiny": 1024, "full-random": 65536}
_DEFAULT_SHARD = 5 << 30

_CORPUS = """\
You are a helpful assistant. Please answer the question in a short and friendly way.
The quick brown fox jumps over the lazy dog while the cat sleeps on the warm windowsill.
Speech recognition turns audio into text; speech synthesis turns text back into audio.
A real-time voice agent listens, thinks and speaks, and it must stop at once when the user barges in.
Numbers like 0 1 2 3 4 5 6 7 8 9 10 42 100 2025 appear in dates, prices and phone numbers.
What is the weather like today? It is sunny with a light breeze, about twenty degrees.
Can you tell me a story about a little robot who learned to sing?
human assistant system tool function call arguments result
你好，很高兴认识你。今天天气怎么样？请用中文回答。(高兴1)(生气1)(悲伤1)(撒娇1)(中文)(英文)(粤语)(四川话)(慢速1)(快速1)
"""


def profile_hidden_size(profile: str, what: str) -> int:
    """The hidden_size of the Step-1 model that `write_step1_checkpoint(profile=profile, what=what)` writes."""
    return int(_PROFILES[(profile, what)]["hidden_size"])


def step1_tensor_shapes(cfg: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of every tensor of a Step-1 checkpoint, in file order."""
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = h // cfg["num_attention_heads"]
    kv = cfg["num_attention_groups"] * hd
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (v, h))]
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        out += [(p + "input_layernorm.weight", (h,)), (p + "self_attn.q_proj.weight", (h, h)),
                (p + "self_attn.k_proj.weight", (kv, h)), (p + "self_attn.v_proj.weight", (kv, h)),
                (p + "self_attn.o_proj.weight", (h, h)), (p + "post_attention_layernorm.weight", (h,)),
                (p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i))]
    out += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
    return out


def write_step1_checkpoint(out_dir: Path | str, profile: str = "tiny", what: str = "tts", weights: bool = True,
                           shard_size: int | None = None, seed: int = 0,
                           dims: dict[str, Any] | None = None) -> Path:
    """Writes a random Step-1 checkpoint; returns out_dir.

    Args:
        profile: "tiny" | "full-random".  what: "tts" | "chat".
        weights: write the safetensors (config and tokenizer are always written).
        shard_size: bytes per shard; None = one model-00001.safetensors for tts/tiny, 5 GiB shards for full chat.
        dims: config.json fields that override the profile's (tests use other head counts).
    """
    if (profile, what) not in _PROFILES:
        raise ValueError(f"unknown profile/what {profile!r}/{what!r}; profiles tiny|full-random, what tts|chat")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = step1_hf_config(**{**_PROFILES[(profile, what)], **(dims or {})})
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    write_step1_tokenizer(out, _TEXT_VOCAB[profile])
    if weights:
        if shard_size is None and profile == "full-random" and what == "chat":
            shard_size = _DEFAULT_SHARD
        _write_weights(out, cfg, shard_size, seed)
    return out


def make_checkpoint(out_dir: Path, profile: str, what: str, with_weights: bool) -> None:
    """Entry point for `stepaudio-rt make-checkpoint --profile P --what W OUT`."""
    write_step1_checkpoint(out_dir, profile=profile, what=what, weights=with_weights)


def _random_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    if name.endswith("layernorm.weight") or name == "model.norm.weight":
        t = 1.0 + 0.1 * torch.randn(shape, generator=gen)
    else:
        t = torch.randn(shape, generator=gen) * 0.02
    return t.to(dtype)


def _write_weights(out: Path, cfg: dict[str, Any], shard_size: int | None, seed: int) -> None:
    dtype = getattr(torch, cfg["torch_dtype"])
    itemsize = torch.empty((), dtype=dtype).element_size()
    shapes = step1_tensor_shapes(cfg)
    nbytes = [itemsize * _numel(s) for _, s in shapes]
    # Plan the shards first so that file names can carry the shard count.
    shards: list[list[int]] = [[]]
    acc = 0
    for k, nb in enumerate(nbytes):
        if shard_size is not None and shards[-1] and acc + nb > shard_size:
            shards.append([])
            acc = 0
        shards[-1].append(k)
        acc += nb
    gen = torch.Generator().manual_seed(seed)
    sharded = shard_size is not None
    names = [f"model-{n + 1:05d}-of-{len(shards):05d}.safetensors" if sharded else f"model-{n + 1:05d}.safetensors"
             for n in range(len(shards))]
    weight_map: dict[str, str] = {}
    bar = tqdm(total=sum(nbytes), unit="B", unit_scale=True, desc=f"writing {out.name}")
    for fname, idx in zip(names, shards):
        tensors = {}
        for k in idx:
            name, shape = shapes[k]
            tensors[name] = _random_tensor(name, shape, dtype, gen)
            weight_map[name] = fname
            bar.update(nbytes[k])
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        # safetensors writes 0600 (a temp file renamed): a server run as another user (a service account, a
        # container) could read the folder's config and tokenizer but not its weights.
        (out / fname).chmod(0o644)
        del tensors
    bar.close()
    # Always, as the real folders have it: TTS-3B's one model-00001.safetensors is found through its index (HF's
    # from_pretrained, which upstream's tts.py uses, looks for model.safetensors or the index, not other names).
    index = {"metadata": {"total_size": sum(nbytes)}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def write_step1_tokenizer(out: Path, text_vocab: int) -> None:
    """Trains a small sentencepiece BPE model, pads it to text_vocab pieces and appends <audio_0..5119>."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS.splitlines() * 4), model_writer=buf, vocab_size=min(text_vocab, 1024),
        model_type="bpe", pad_id=0, bos_id=1, eos_id=2, unk_id=5, user_defined_symbols=[EOT, BOT],
        hard_vocab_limit=False, byte_fallback=True, character_coverage=1.0, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        minloglevel=2, num_threads=1)
    proto = sp_pb2.ModelProto()
    proto.ParseFromString(buf.getvalue())
    if len(proto.pieces) > text_vocab:
        raise RuntimeError(f"trained {len(proto.pieces)} pieces > text vocab {text_vocab}")
    for k in range(text_vocab - len(proto.pieces)):  # reserved, never produced by encode
        proto.pieces.add(piece=f"<reserved_{k}>", score=0.0, type=sp_pb2.ModelProto.SentencePiece.UNUSED)
    for n in range(NUM_AUDIO_TOKENS):
        proto.pieces.add(piece=f"<audio_{n}>", score=0.0, type=sp_pb2.ModelProto.SentencePiece.USER_DEFINED)
    (out / "tokenizer.model").write_bytes(proto.SerializeToString())
    tok_cfg = {
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
        "additional_special_tokens": [EOT, BOT], "model_max_length": 32768, "legacy": True,
        "audio_token_offset": text_vocab,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
