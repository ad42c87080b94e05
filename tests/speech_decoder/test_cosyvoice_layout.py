"""The random CosyVoice folder we write has the real layout: file names, yaml fields, state-dict keys and shapes.

Real names/shapes come from Step-Audio's cosyvoice/ sources (flow/flow.py, flow/decoder.py, matcha/decoder.py,
matcha/transformer.py with diffusers' Attention/GELU, transformer/{encoder,encoder_layer,attention,embedding,
subsampling}.py, hifigan/{generator,f0_predictor}.py; legacy torch.nn.utils.weight_norm -> weight_g/weight_v) and
from public file sizes of CosyVoice-300M-SFT (same flow/HiFT architecture, 4096-token vocabulary):
flow.pt 419,900,943 bytes, hift.pt 81,896,716 bytes.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from speech_decoder.checkpoint import FOLDER_FILES, config_to_yaml, profile_config, write_cosyvoice_folder
from speech_decoder.cosyvoice_config import (CosyVoiceConfig, CosyVoiceConfigError, FlowConfig,
                                             config_from_yaml_dict, load_cosyvoice_config, read_cosyvoice_yaml)
from speech_decoder.cosyvoice_model import CosyVoiceCheckpointError, CosyVoiceModel
from speech_decoder.flow.flow import MaskedDiffWithXvec
from speech_decoder.hift.generator import HiFTGenerator, normalize_hift_state_dict

REAL_FLOW_SHAPES = {
    "input_embedding.weight": (5120, 512),
    "spk_embed_affine_layer.weight": (80, 192),
    "spk_embed_affine_layer.bias": (80,),
    "encoder.embed.out.0.weight": (512, 512),
    "encoder.embed.out.1.weight": (512,),
    "encoder.after_norm.weight": (512,),
    "encoder.encoders.0.self_attn.linear_q.weight": (512, 512),
    "encoder.encoders.0.self_attn.linear_k.bias": (512,),
    "encoder.encoders.5.self_attn.linear_pos.weight": (512, 512),
    "encoder.encoders.5.self_attn.pos_bias_u": (8, 64),
    "encoder.encoders.5.self_attn.pos_bias_v": (8, 64),
    "encoder.encoders.0.self_attn.linear_out.weight": (512, 512),
    "encoder.encoders.0.feed_forward.w_1.weight": (2048, 512),
    "encoder.encoders.0.feed_forward.w_2.weight": (512, 2048),
    "encoder.encoders.0.norm_mha.weight": (512,),
    "encoder.encoders.0.norm_ff.bias": (512,),
    "encoder_proj.weight": (80, 512),
    "length_regulator.model.0.weight": (80, 80, 3),
    "length_regulator.model.1.weight": (80,),
    "length_regulator.model.12.weight": (80, 80, 1),
    "decoder.estimator.time_mlp.linear_1.weight": (1024, 320),
    "decoder.estimator.time_mlp.linear_2.weight": (1024, 1024),
    "decoder.estimator.down_blocks.0.0.mlp.1.weight": (256, 1024),
    "decoder.estimator.down_blocks.0.0.block1.block.0.weight": (256, 320, 3),
    "decoder.estimator.down_blocks.0.0.block1.block.1.weight": (256,),
    "decoder.estimator.down_blocks.0.0.res_conv.weight": (256, 320, 1),
    "decoder.estimator.down_blocks.0.1.0.norm1.weight": (256,),
    "decoder.estimator.down_blocks.0.1.0.attn1.to_q.weight": (512, 256),
    "decoder.estimator.down_blocks.0.1.3.attn1.to_out.0.weight": (256, 512),
    "decoder.estimator.down_blocks.0.1.3.attn1.to_out.0.bias": (256,),
    "decoder.estimator.down_blocks.0.1.3.norm3.bias": (256,),
    "decoder.estimator.down_blocks.0.1.3.ff.net.0.proj.weight": (1024, 256),
    "decoder.estimator.down_blocks.0.1.3.ff.net.2.weight": (256, 1024),
    "decoder.estimator.down_blocks.0.2.conv.weight": (256, 256, 3),
    "decoder.estimator.down_blocks.1.2.weight": (256, 256, 3),
    "decoder.estimator.mid_blocks.11.0.block2.block.0.weight": (256, 256, 3),
    "decoder.estimator.mid_blocks.11.1.3.attn1.to_v.weight": (512, 256),
    "decoder.estimator.up_blocks.0.0.block1.block.0.weight": (256, 512, 3),
    "decoder.estimator.up_blocks.0.0.res_conv.weight": (256, 512, 1),
    "decoder.estimator.up_blocks.0.2.conv.weight": (256, 256, 4),
    "decoder.estimator.up_blocks.1.2.weight": (256, 256, 3),
    "decoder.estimator.final_block.block.0.weight": (256, 256, 3),
    "decoder.estimator.final_proj.weight": (80, 256, 1),
}
ABSENT_FLOW = ("decoder.estimator.down_blocks.0.1.0.attn1.to_q.bias",
               "decoder.estimator.down_blocks.0.1.0.norm2.weight", "encoder.embed.pos_enc.pe",
               "encoder.encoders.0.norm_conv.weight", "encoder.encoders.0.conv_module")
REAL_HIFT_SHAPES = {
    "m_source.l_linear.weight": (1, 9),
    "conv_pre.weight_g": (512, 1, 1),
    "conv_pre.weight_v": (512, 80, 7),
    "conv_pre.bias": (512,),
    "ups.0.weight_g": (512, 1, 1),
    "ups.0.weight_v": (512, 256, 16),
    "ups.1.weight_v": (256, 128, 16),
    "source_downs.0.weight": (256, 18, 16),
    "source_downs.1.weight": (128, 18, 1),
    "source_resblocks.0.convs1.2.weight_v": (256, 256, 7),
    "source_resblocks.1.convs2.0.weight_g": (128, 1, 1),
    "source_resblocks.1.activations1.2.alpha": (128,),
    "resblocks.0.convs1.0.weight_v": (256, 256, 3),
    "resblocks.2.convs1.2.weight_v": (256, 256, 11),
    "resblocks.5.convs2.2.weight_v": (128, 128, 11),
    "resblocks.5.activations2.2.alpha": (128,),
    "conv_post.weight_v": (18, 128, 7),
    "f0_predictor.condnet.0.weight_v": (512, 80, 3),
    "f0_predictor.condnet.8.weight_g": (512, 1, 1),
    "f0_predictor.classifier.weight": (1, 512),
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory):
    return write_cosyvoice_folder(tmp_path_factory.mktemp("cv") / "CosyVoice-300M-25Hz", "tiny")


def test_folder_has_the_real_file_names(tiny_dir) -> None:
    assert FOLDER_FILES == ("cosyvoice.yaml", "flow.pt", "hift.pt", "campplus.onnx")
    assert sorted(p.name for p in tiny_dir.iterdir()) == sorted(FOLDER_FILES)


def test_full_profile_state_dict_keys_and_shapes_match_upstream() -> None:
    cfg = profile_config("full-random")
    with torch.device("meta"):
        flow_sd = MaskedDiffWithXvec(cfg.flow).state_dict()
        hift_sd = HiFTGenerator(cfg.hift).state_dict()
    for key, shape in REAL_FLOW_SHAPES.items():
        assert tuple(flow_sd[key].shape) == shape, key
    for key in ABSENT_FLOW:
        assert not any(k.startswith(key) for k in flow_sd), key
    for key, shape in REAL_HIFT_SHAPES.items():
        assert tuple(hift_sd[key].shape) == shape, key
    assert not any("weight_g" in k for k in hift_sd if k.startswith("source_downs"))  # plain convs upstream
    assert len(flow_sd) == 1185 and len(hift_sd) == 227


def test_parameter_bytes_fit_the_published_file_sizes() -> None:
    """Same architecture as CosyVoice-300M-SFT: params must account for all but the zip/pickle overhead."""
    cfg = profile_config("full-random")
    with torch.device("meta"):
        flow = MaskedDiffWithXvec(dataclasses.replace(cfg.flow, vocab_size=4096))
        hift = HiFTGenerator(cfg.hift)
    for module, file_bytes in ((flow, 419_900_943), (hift, 81_896_716)):
        params = sum(t.numel() * 4 for t in module.state_dict().values())
        assert 0 < file_bytes - params < 500_000  # ~240-340 bytes of record overhead per tensor


def test_yaml_round_trips_and_has_upstream_fields(tiny_dir) -> None:
    text = (tiny_dir / "cosyvoice.yaml").read_text()
    for tag in ("!new:cosyvoice.flow.flow.MaskedDiffWithXvec", "!new:cosyvoice.transformer.encoder.ConformerEncoder",
                "!new:cosyvoice.flow.length_regulator.InterpolateRegulator",
                "!new:cosyvoice.flow.flow_matching.ConditionalCFM", "!new:cosyvoice.flow.decoder.ConditionalDecoder",
                "!new:cosyvoice.hifigan.generator.HiFTGenerator",
                "!new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor", "!new:omegaconf.DictConfig",
                "!ref <sample_rate>", "istft_params:", "pos_enc_layer_type: 'rel_pos_espnet'"):
        assert tag in text, tag
    assert load_cosyvoice_config(tiny_dir) == profile_config("tiny")
    full = profile_config("full-random")
    assert config_from_yaml_dict(read_cosyvoice_yaml(config_to_yaml(full))) == full
    assert full.flow.cfm.sigma_min == 1e-6 and isinstance(full.flow.cfm.sigma_min, float)
    assert full.flow.mel_frames(125) == int(125 / 41.667 * 22050 / 256)


def test_yaml_rejects_what_we_do_not_implement() -> None:
    text = config_to_yaml(CosyVoiceConfig()).replace("use_cnn_module: False", "use_cnn_module: True")
    with pytest.raises(CosyVoiceConfigError):
        config_from_yaml_dict(read_cosyvoice_yaml(text))
    with pytest.raises(CosyVoiceConfigError):
        config_from_yaml_dict(read_cosyvoice_yaml("sample_rate: 22050\n"))


def test_loader_strict_and_accepts_parametrized_weight_norm(tiny_dir, tmp_path) -> None:
    model = CosyVoiceModel.load(tiny_dir)
    assert model.sample_rate == 22050 and model.campplus is not None
    sd = torch.load(tiny_dir / "hift.pt", weights_only=True)
    renamed = {"generator." + k.replace("weight_g", "parametrizations.weight.original0")
               .replace("weight_v", "parametrizations.weight.original1"): v for k, v in sd.items()}
    assert normalize_hift_state_dict(renamed).keys() == sd.keys()
    bad = tmp_path / "bad"
    write_cosyvoice_folder(bad, "tiny")
    flow_sd = torch.load(bad / "flow.pt", weights_only=True)
    flow_sd["encoder_proj.weight"] = flow_sd["encoder_proj.weight"][:, :-1]
    torch.save(flow_sd, bad / "flow.pt")
    with pytest.raises(CosyVoiceCheckpointError, match="encoder_proj.weight"):
        CosyVoiceModel.load(bad)


def test_campplus_onnx_signature(tiny_dir) -> None:
    import onnxruntime

    sess = onnxruntime.InferenceSession(str(tiny_dir / "campplus.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.type == "tensor(float)" and inp.shape[2] == 80 and len(inp.shape) == 3
    assert out.type == "tensor(float)" and out.shape[-1] == 192
    model = CosyVoiceModel.load(tiny_dir)
    wav = (0.3 * np.sin(np.arange(44100) * 2 * np.pi * 220 / 22050)).astype(np.float32)
    prompt = model.make_prompt(wav, 22050, list(range(50)))
    assert prompt.embedding.shape == (192,) and torch.isfinite(prompt.embedding).all()
    assert prompt.mel.shape == (44100 // 256, 80)
    assert FlowConfig().vocab_size == 5120
