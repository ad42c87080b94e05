"""Write a random-initialised CosyVoice-300M-25Hz folder in the real layout.

Step-Audio-TTS-3B/CosyVoice-300M-25Hz{,-Music}/ holds cosyvoice.yaml, flow.pt, hift.pt, campplus.onnx and
speech_tokenizer_v1.onnx (upstream's CosyVoiceFrontEnd opens it; we never need it, so it is copied in only when
the caller passes one). flow.pt and hift.pt are plain torch.save'd state dicts with upstream key names (hift with
legacy weight_g/weight_v); the yaml uses upstream's hyperpyyaml tags so upstream code could read it too.

Profiles: "full-random" = the real dims (flow ~105 M params, HiFT ~20 M); "tiny" = the real interfaces (80 mels,
5120 tokens, 192-d x-vector, 22050 Hz, 256 samples per frame) with small widths so CPU tests run in seconds.
"""
from __future__ import annotations

import io
import logging
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from speech_decoder.cosyvoice_config import (CFMConfig, ConformerConfig, CosyVoiceConfig, EstimatorConfig,
                                             FlowConfig, HiFTConfig)
from speech_decoder.flow.flow import MaskedDiffWithXvec
from speech_decoder.hift.generator import HiFTGenerator

logger = logging.getLogger(__name__)

FOLDER_FILES = ("cosyvoice.yaml", "flow.pt", "hift.pt", "campplus.onnx")


def profile_config(profile: str) -> CosyVoiceConfig:
    """The CosyVoiceConfig of a make-checkpoint profile ("tiny" or "full-random")."""
    if profile == "full-random":
        return CosyVoiceConfig()
    if profile != "tiny":
        raise ValueError(f"unknown profile {profile!r} (tiny | full-random)")
    enc = ConformerConfig(input_size=32, output_size=32, attention_heads=2, linear_units=64, num_blocks=1)
    est = EstimatorConfig(channels=(32, 32), attention_head_dim=8, n_blocks=1, num_mid_blocks=1, num_heads=2)
    flow = FlowConfig(input_size=32, encoder=enc, estimator=est, cfm=CFMConfig())
    hift = HiFTConfig(base_channels=32, f0_cond_channels=32)
    return CosyVoiceConfig(flow=flow, hift=hift)


def _tuple_yaml(v: tuple) -> str:
    return "[" + ", ".join(_tuple_yaml(x) if isinstance(x, tuple) else str(x) for x in v) + "]"


def config_to_yaml(cfg: CosyVoiceConfig) -> str:
    """cosyvoice.yaml text in upstream's hyperpyyaml form (only the sections inference reads)."""
    f, e, lr, c, d, h, m = (cfg.flow, cfg.flow.encoder, cfg.flow.length_regulator, cfg.flow.cfm,
                            cfg.flow.estimator, cfg.hift, cfg.feat_extractor)
    b = lambda x: "True" if x else "False"  # noqa: E731
    fmax = "null" if m.fmax is None else m.fmax
    return f"""# set random seed, so that you may reproduce your result.
__set_seed1: !apply:random.seed [1986]
__set_seed2: !apply:numpy.random.seed [1986]
__set_seed3: !apply:torch.manual_seed [1986]
__set_seed4: !apply:torch.cuda.manual_seed_all [1986]

# fixed params
sample_rate: {cfg.sample_rate}
spk_embed_dim: {f.spk_embed_dim}

flow: !new:cosyvoice.flow.flow.MaskedDiffWithXvec
    input_size: {f.input_size}
    output_size: {f.output_size}
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: {f.vocab_size}
    input_frame_rate: {f.input_frame_rate}
    only_mask_loss: True
    encoder: !new:cosyvoice.transformer.encoder.ConformerEncoder
        output_size: {e.output_size}
        attention_heads: {e.attention_heads}
        linear_units: {e.linear_units}
        num_blocks: {e.num_blocks}
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: {b(e.normalize_before)}
        input_layer: '{e.input_layer}'
        pos_enc_layer_type: '{e.pos_enc_layer_type}'
        selfattention_layer_type: '{e.selfattention_layer_type}'
        input_size: {e.input_size}
        use_cnn_module: {b(e.use_cnn_module)}
        macaron_style: {b(e.macaron_style)}
    length_regulator: !new:cosyvoice.flow.length_regulator.InterpolateRegulator
        channels: {lr.channels}
        sampling_ratios: {_tuple_yaml(lr.sampling_ratios)}
    decoder: !new:cosyvoice.flow.flow_matching.ConditionalCFM
        in_channels: {c.in_channels}
        n_spks: {c.n_spks}
        spk_emb_dim: {c.spk_emb_dim}
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: {c.sigma_min}
                solver: '{c.solver}'
                t_scheduler: '{c.t_scheduler}'
                training_cfg_rate: {c.training_cfg_rate}
                inference_cfg_rate: {c.inference_cfg_rate}
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.decoder.ConditionalDecoder
            in_channels: {d.in_channels}
            out_channels: {d.out_channels}
            channels: {_tuple_yaml(d.channels)}
            dropout: 0.0
            attention_head_dim: {d.attention_head_dim}
            n_blocks: {d.n_blocks}
            num_mid_blocks: {d.num_mid_blocks}
            num_heads: {d.num_heads}
            act_fn: '{d.act_fn}'

hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: {h.in_channels}
    base_channels: {h.base_channels}
    nb_harmonics: {h.nb_harmonics}
    sampling_rate: !ref <sample_rate>
    nsf_alpha: {h.nsf_alpha}
    nsf_sigma: {h.nsf_sigma}
    nsf_voiced_threshold: {h.nsf_voiced_threshold:g}
    upsample_rates: {_tuple_yaml(h.upsample_rates)}
    upsample_kernel_sizes: {_tuple_yaml(h.upsample_kernel_sizes)}
    istft_params:
        n_fft: {h.n_fft}
        hop_len: {h.hop_len}
    resblock_kernel_sizes: {_tuple_yaml(h.resblock_kernel_sizes)}
    resblock_dilation_sizes: {_tuple_yaml(h.resblock_dilation_sizes)}
    source_resblock_kernel_sizes: {_tuple_yaml(h.source_resblock_kernel_sizes)}
    source_resblock_dilation_sizes: {_tuple_yaml(h.source_resblock_dilation_sizes)}
    lrelu_slope: {h.lrelu_slope}
    audio_limit: {h.audio_limit}
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: {h.f0_num_class}
        in_channels: {h.f0_in_channels}
        cond_channels: {h.f0_cond_channels}

feat_extractor: !name:matcha.utils.audio.mel_spectrogram
    n_fft: {m.n_fft}
    num_mels: {m.num_mels}
    sampling_rate: !ref <sample_rate>
    hop_size: {m.hop_size}
    win_size: {m.win_size}
    fmin: {m.fmin:g}
    fmax: {fmax}
    center: {b(m.center)}
"""


class TinyCampPlus(nn.Module):
    """Stand-in speaker encoder with CAM++'s ONNX signature: fbank [B, T, 80] float32 -> x-vector [B, 192]."""

    def __init__(self, n_mels: int = 80, dim: int = 192) -> None:
        super().__init__()
        self.frame = nn.Linear(n_mels, 64)
        self.out = nn.Linear(128, dim)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.frame(feat))  # [B, T, 64]
        return self.out(torch.cat([h.mean(dim=1), h.std(dim=1)], dim=-1))  # stats pooling like CAM++


def write_campplus_onnx(path: Path, seed: int = 0) -> None:
    """Export TinyCampPlus to ONNX (input "input" [B, T, 80], output "output" [B, 192]); needs the onnx package."""
    torch.manual_seed(seed)
    model = TinyCampPlus().eval()
    example = torch.randn(1, 200, 80)
    # torch hands a str name to C++, which cannot take a non-ASCII one in the C locale. The TorchScript exporter
    # writes to a BytesIO too (its _export_file), though torch.onnx.export's hint names paths only.
    onnx = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter needs no onnxscript
            torch.onnx.export(model, (example,), onnx,  # type: ignore[arg-type]
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "B", 1: "T"}, "output": {0: "B"}}, opset_version=17,
                              dynamo=False)
    except Exception as exc:  # torch raises OnnxExporterError when `onnx` is not installed
        raise RuntimeError(f"exporting campplus.onnx needs the `onnx` package: {exc}") from exc
    path.write_bytes(onnx.getvalue())


def random_state_dicts(cfg: CosyVoiceConfig, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Random-initialised flow and HiFT state dicts for `cfg` (upstream key names)."""
    torch.manual_seed(seed)
    flow = MaskedDiffWithXvec(cfg.flow)
    hift = HiFTGenerator(cfg.hift)
    with torch.no_grad():  # keep random f0 in a speech-like range so the NSF source is voiced
        hift.f0_predictor.classifier.bias.fill_(150.0)
    return flow.state_dict(), hift.state_dict()


def write_cosyvoice_folder(out_dir: str | Path, profile: str = "tiny", *, seed: int = 0,
                           speech_tokenizer_onnx: str | Path | None = None) -> Path:
    """Write cosyvoice.yaml, flow.pt, hift.pt and campplus.onnx for `profile` into out_dir; returns out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = profile_config(profile)
    logger.info("writing %s CosyVoice folder to %s", profile, out)
    (out / "cosyvoice.yaml").write_text(config_to_yaml(cfg), encoding="utf-8")
    flow_sd, hift_sd = random_state_dicts(cfg, seed)
    torch.save(flow_sd, out / "flow.pt")
    torch.save(hift_sd, out / "hift.pt")
    write_campplus_onnx(out / "campplus.onnx", seed)
    if speech_tokenizer_onnx is not None:
        shutil.copyfile(speech_tokenizer_onnx, out / "speech_tokenizer_v1.onnx")
    return out


__all__ = ["FOLDER_FILES", "config_to_yaml", "profile_config", "random_state_dicts", "write_cosyvoice_folder"]
