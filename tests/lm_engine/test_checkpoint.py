"""make-checkpoint output: key names, shapes, index, tokenizer ids; it loads through the real loading path."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from lm_engine.checkpoint import make_checkpoint, step1_tensor_shapes, write_step1_checkpoint
from lm_engine.engine.config import EngineConfig
from lm_engine.engine_api import Engine
from lm_engine.models.config import ModelConfig
from lm_engine.tokenizer import Step1Tokenizer


def _keys_and_shapes(path):
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            for k in h.keys():
                out[k] = tuple(h.get_slice(k).get_shape())
    return out


def test_tiny_sharded_checkpoint_layout_and_load(tmp_path):
    path = write_step1_checkpoint(tmp_path / "c", "tiny", "chat", shard_size=1 << 20)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "step1" and cfg["architectures"] == ["Step1ForCausalLM"]
    assert (cfg["num_attention_heads"], cfg["num_attention_groups"]) == (24, 2)
    shapes = _keys_and_shapes(path)
    assert shapes == dict(step1_tensor_shapes(cfg))
    assert shapes["model.layers.1.self_attn.k_proj.weight"] == (2 * 8, 192)  # [G * head_dim, hidden]
    assert shapes["lm_head.weight"] == (6144, 192) and "model.norm.weight" in shapes
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(shapes)
    assert index["metadata"]["total_size"] == 4 * sum(torch.Size(s).numel() for s in shapes.values())
    assert len(set(index["weight_map"].values())) > 1
    eng = Engine.from_pretrained(path, device="cpu", progress=False, config=EngineConfig(num_kv_blocks=8))
    assert eng.logits([1, 4, 5]).shape == (3, 6144)
    eng.close()


@pytest.mark.parametrize("what", ["tts", "chat"])
def test_a_single_file_checkpoint_has_its_index_too(tmp_path, what):
    """Step-Audio-TTS-3B ships one model-00001.safetensors with model.safetensors.index.json (total_size
    7,059,412,992 in STEP_AUDIO.md): HF's from_pretrained, upstream's loader, finds that file name only through it."""
    path = write_step1_checkpoint(tmp_path / what, "tiny", what)
    assert [f.name for f in path.glob("*.safetensors")] == ["model-00001.safetensors"]
    index = json.loads((path / "model.safetensors.index.json").read_text())
    shapes = _keys_and_shapes(path)
    assert index["weight_map"] == {k: "model-00001.safetensors" for k in shapes}
    assert index["metadata"]["total_size"] == 4 * sum(torch.Size(s).numel() for s in shapes.values())
    assert index["metadata"]["total_size"] == (path / "model-00001.safetensors").stat().st_size - _header_bytes(path)


@pytest.mark.parametrize("shard_size", [None, 1 << 20])
def test_the_weights_are_readable_by_other_users_as_the_rest_of_the_folder(tmp_path, shard_size):
    """make-checkpoint's safetensors came out 0600 beside 0644 config and tokenizer files: a server run by another
    account failed on the weights alone."""
    path = write_step1_checkpoint(tmp_path / "c", "tiny", "chat", shard_size=shard_size)
    modes = {f.name: f.stat().st_mode & 0o777 for f in path.glob("*.safetensors")}
    assert modes and all(mode & 0o044 == 0o044 for mode in modes.values()), modes


def _header_bytes(path):
    import struct

    with open(path / "model-00001.safetensors", "rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


def test_a_missing_shard_without_the_index_is_reported_in_the_checkpoints_names(tmp_path):
    """Without model.safetensors.index.json the folder's *.safetensors are all that is read: a shard gone shows as
    missing tensors, named as the files name them (q_proj, gate_proj: not the engine's fused qkv / gate_up)."""
    from lm_engine.utils.loader import CheckpointError

    path = write_step1_checkpoint(tmp_path / "c", "tiny", "chat", shard_size=1 << 20)
    (path / "model.safetensors.index.json").unlink()
    gone = sorted(path.glob("*.safetensors"))[0]
    with safe_open(str(gone), "pt") as h:
        names = set(h.keys())
    gone.unlink()
    with pytest.raises(CheckpointError, match="is one of its .safetensors files missing") as err:
        Engine.from_pretrained(path, device="cpu", progress=False, config=EngineConfig(num_kv_blocks=8))
    quoted = str(err.value).split("e.g. ")[1]
    assert "qkv_proj" not in quoted and "gate_up_proj" not in quoted and ":" not in quoted.split("]")[0]
    assert any(n in quoted for n in names)


def test_tokenizer_ids(tmp_path):
    make_checkpoint(tmp_path / "t", "tiny", "tts", with_weights=False)
    assert not list((tmp_path / "t").glob("*.safetensors"))
    tok = Step1Tokenizer.from_dir(tmp_path / "t")
    assert (tok.bos_id, tok.eot_id, tok.bot_id, tok.audio_offset) == (1, 3, 4, 1024)
    ids = tok.encode("<|BOT|>human\nhello<audio_7><audio_5119><|EOT|>", add_bos=True)
    assert ids[0] == 1 and 4 in ids and ids[-3:] == [1024 + 7, 1024 + 5119, 3]
    assert tok.decode(ids[1:]).endswith("hello<audio_7><audio_5119><|EOT|>")
    assert tok.vocab_size == 1024 + 5120


@pytest.mark.parametrize("what,params,heads", [("tts", 3_529_706_496, (48, 4)), ("chat", 131_946_590_208, (96, 8))])
def test_full_random_dims_match_the_real_checkpoints(tmp_path, what, params, heads):
    path = write_step1_checkpoint(tmp_path / what, "full-random", what, weights=False)
    cfg = json.loads((path / "config.json").read_text())
    assert sum(torch.Size(s).numel() for _, s in step1_tensor_shapes(cfg)) == params  # 2 bytes each in bf16
    mc = ModelConfig.from_dir(path)
    assert (mc.num_heads, mc.num_kv_heads, mc.vocab_size, mc.max_seq_len) == (*heads, 74752, 32768)
    tok = Step1Tokenizer.from_dir(path)
    assert tok.audio_id(0) == 65536 and tok.audio_id(1024 + 4095) == 70655
