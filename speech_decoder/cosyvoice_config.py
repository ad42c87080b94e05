"""Frozen configs for the CosyVoice-300M-25Hz speech decoder, read from a real cosyvoice.yaml.

Upstream builds its modules straight from the yaml with hyperpyyaml (`!new:cosyvoice.flow.flow.MaskedDiffWithXvec`,
`!ref <sample_rate>`, `!name:...mel_spectrogram`, `!apply:torch.manual_seed`, omegaconf `content:` wrappers). We do not
import their classes: a tolerant PyYAML loader turns every tag into plain data (`{"__class__": name, ...}`), `!ref`
is resolved against the top-level keys, and the fields we need become frozen dataclasses. Fields the yaml leaves out
take the upstream constructor defaults (Step-Audio cosyvoice/flow/flow.py, hifigan/generator.py, ...).

Errors: CosyVoiceConfigError (ValueError) for a yaml we cannot honour (a missing section, an option we do not
implement such as a conformer conv module).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml


class CosyVoiceConfigError(ValueError):
    """cosyvoice.yaml is missing a section or asks for an option this implementation does not have."""


# --------------------------------------------------------------------------------------------- yaml reading
class _Ref:
    __slots__ = ("expr",)

    def __init__(self, expr: str) -> None:
        self.expr = expr.strip()


class _HyperLoader(yaml.SafeLoader):
    """SafeLoader that accepts hyperpyyaml tags and returns plain data."""


def _construct_tagged(loader: _HyperLoader, tag_suffix: str, node: yaml.Node) -> Any:
    kind, _, target = tag_suffix.partition(":")
    if kind == "ref":
        return _Ref(loader.construct_scalar(node))  # type: ignore[arg-type]
    if isinstance(node, yaml.MappingNode):
        value: Any = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)  # type: ignore[arg-type]
    if kind == "apply":  # side effects such as seeding: meaningless here
        return None
    if kind in ("new", "name"):
        out = dict(value) if isinstance(value, dict) else {"__args__": value}
        if target == "omegaconf.DictConfig" and isinstance(out.get("content"), dict):
            return dict(out["content"])
        out["__class__"] = target
        return out
    return value


_HyperLoader.add_multi_constructor("!", _construct_tagged)


def _resolve(value: Any, top: dict[str, Any], depth: int = 0) -> Any:
    if depth > 32:
        raise CosyVoiceConfigError("cosyvoice.yaml: !ref chain too deep")
    if isinstance(value, _Ref):
        name = value.expr.strip("<>")
        if name not in top:
            raise CosyVoiceConfigError(f"cosyvoice.yaml: !ref {value.expr} names no top-level key")
        return _resolve(top[name], top, depth + 1)
    if isinstance(value, dict):
        return {k: _resolve(v, top, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, top, depth + 1) for v in value]
    return value


def read_cosyvoice_yaml(text: str | TextIO) -> dict[str, Any]:
    """Parse a hyperpyyaml cosyvoice.yaml into plain nested dicts (tags become `__class__` entries)."""
    raw = yaml.load(text, Loader=_HyperLoader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(raw, dict):
        raise CosyVoiceConfigError("cosyvoice.yaml: top level is not a mapping")
    return {k: _resolve(v, raw) for k, v in raw.items() if not k.startswith("__")}


def _pick(cls: type, section: dict[str, Any], **extra: Any) -> Any:
    """Build dataclass `cls` from the scalar/list keys of `section` it knows, plus `extra` (sub-configs)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, val in section.items():
        if key not in fields or isinstance(val, dict):
            continue
        if isinstance(val, list):
            val = tuple(tuple(v) if isinstance(v, list) else v for v in val)
        elif isinstance(val, str) and isinstance(fields[key].default, float):
            val = float(val)  # YAML 1.1 reads "1e-06" (no dot) as a string; hyperpyyaml's loader does not
        elif isinstance(val, int) and not isinstance(val, bool) and isinstance(fields[key].default, float):
            val = float(val)
        kwargs[key] = val
    return cls(**kwargs, **extra)


# --------------------------------------------------------------------------------------------- dataclasses
@dataclass(frozen=True, slots=True, kw_only=True)
class ConformerConfig:
    """cosyvoice.transformer.encoder.ConformerEncoder as the flow uses it (linear input, rel_pos_espnet)."""

    input_size: int = 512
    output_size: int = 512
    attention_heads: int = 8
    linear_units: int = 2048
    num_blocks: int = 6
    input_layer: str = "linear"
    pos_enc_layer_type: str = "rel_pos_espnet"
    selfattention_layer_type: str = "rel_selfattn"
    normalize_before: bool = True
    use_cnn_module: bool = False
    macaron_style: bool = False
    activation_type: str = "swish"  # ConformerEncoder's default; the yaml does not set it
    key_bias: bool = True

    def __post_init__(self) -> None:
        if self.output_size % self.attention_heads:
            raise CosyVoiceConfigError("encoder output_size must be divisible by attention_heads")
        unsupported = {
            "input_layer": (self.input_layer, "linear"),
            "pos_enc_layer_type": (self.pos_enc_layer_type, "rel_pos_espnet"),
            "selfattention_layer_type": (self.selfattention_layer_type, "rel_selfattn"),
            "activation_type": (self.activation_type, "swish"),
        }
        for name, (got, want) in unsupported.items():
            if got != want:
                raise CosyVoiceConfigError(f"encoder {name}={got!r} is not implemented (only {want!r})")
        if self.use_cnn_module or self.macaron_style or not self.normalize_before:
            raise CosyVoiceConfigError("encoder: conv module, macaron FFN and post-norm are not implemented")


@dataclass(frozen=True, slots=True, kw_only=True)
class LengthRegulatorConfig:
    channels: int = 80
    sampling_ratios: tuple[int, ...] = (1, 1, 1, 1)
    out_channels: int | None = None
    groups: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class EstimatorConfig:
    """cosyvoice.flow.decoder.ConditionalDecoder: the 1-D U-Net velocity estimator."""

    in_channels: int = 320
    out_channels: int = 80
    channels: tuple[int, ...] = (256, 256)
    attention_head_dim: int = 64
    n_blocks: int = 4
    num_mid_blocks: int = 12
    num_heads: int = 8
    act_fn: str = "gelu"

    def __post_init__(self) -> None:
        if self.act_fn not in ("gelu", "gelu-approximate"):
            raise CosyVoiceConfigError(f"estimator act_fn={self.act_fn!r} is not implemented")
        if any(c % 8 for c in self.channels):
            raise CosyVoiceConfigError("estimator channels must be multiples of 8 (GroupNorm(8))")


@dataclass(frozen=True, slots=True, kw_only=True)
class CFMConfig:
    """cosyvoice.flow.flow_matching.ConditionalCFM and its cfm_params."""

    in_channels: int = 240
    n_spks: int = 1
    spk_emb_dim: int = 80
    sigma_min: float = 1e-6
    solver: str = "euler"
    t_scheduler: str = "cosine"
    training_cfg_rate: float = 0.2
    inference_cfg_rate: float = 0.7

    def __post_init__(self) -> None:
        if self.solver != "euler":
            raise CosyVoiceConfigError(f"cfm solver={self.solver!r} is not implemented")


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowConfig:
    """cosyvoice.flow.flow.MaskedDiffWithXvec."""

    input_size: int = 512
    output_size: int = 80
    spk_embed_dim: int = 192
    vocab_size: int = 5120
    input_frame_rate: float = 41.667  # tokens/s of the interleaved 2:3 dual-codebook stream
    sampling_rate: int = 22050  # mel_feat_conf defaults in MaskedDiffWithXvec
    hop_size: int = 256
    n_timesteps: int = 10  # hard-coded in upstream inference()
    encoder: ConformerConfig = field(default_factory=ConformerConfig)
    length_regulator: LengthRegulatorConfig = field(default_factory=LengthRegulatorConfig)
    cfm: CFMConfig = field(default_factory=CFMConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)

    def __post_init__(self) -> None:
        if self.encoder.input_size != self.input_size:
            raise CosyVoiceConfigError("flow input_size must equal encoder input_size")
        want = 2 * self.output_size + self.cfm.spk_emb_dim + self.output_size  # x, mu, spk, cond
        if self.estimator.in_channels != want:
            raise CosyVoiceConfigError(f"estimator in_channels {self.estimator.in_channels} != x+mu+spk+cond {want}")

    def mel_frames(self, n_tokens: int) -> int:
        """Mel frames for the first n tokens, exactly as upstream: int(n / rate * sr / hop) in Python floats."""
        return int(n_tokens / self.input_frame_rate * self.sampling_rate / self.hop_size)


@dataclass(frozen=True, slots=True, kw_only=True)
class HiFTConfig:
    """cosyvoice.hifigan.generator.HiFTGenerator + f0_predictor.ConvRNNF0Predictor."""

    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 22050
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10.0
    upsample_rates: tuple[int, ...] = (8, 8)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16)
    n_fft: int = 16
    hop_len: int = 4
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple[int, ...] = (7, 11)
    source_resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_num_class: int = 1
    f0_in_channels: int = 80
    f0_cond_channels: int = 512

    def __post_init__(self) -> None:
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise CosyVoiceConfigError("hift upsample_rates and upsample_kernel_sizes differ in length")
        if len(self.source_resblock_kernel_sizes) != len(self.upsample_rates):
            raise CosyVoiceConfigError("hift needs one source resblock per upsampling stage")

    @property
    def samples_per_frame(self) -> int:
        """Output samples per mel frame (8 * 8 * hop 4 = 256 for the real model)."""
        out = self.hop_len
        for r in self.upsample_rates:
            out *= r
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class MelConfig:
    """feat_extractor (matcha mel_spectrogram) used for the prompt mel; 22050 Hz, hop 256, fmax 8000."""

    n_fft: int = 1024
    num_mels: int = 80
    sampling_rate: int = 22050
    hop_size: int = 256
    win_size: int = 1024
    fmin: float = 0.0
    fmax: float | None = 8000.0
    center: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CosyVoiceConfig:
    sample_rate: int = 22050
    flow: FlowConfig = field(default_factory=FlowConfig)
    hift: HiFTConfig = field(default_factory=HiFTConfig)
    feat_extractor: MelConfig = field(default_factory=MelConfig)

    def __post_init__(self) -> None:
        if self.hift.samples_per_frame != self.flow.hop_size:
            raise CosyVoiceConfigError("hift samples per frame must equal the flow mel hop")
        if self.hift.in_channels != self.flow.output_size:
            raise CosyVoiceConfigError("hift in_channels must equal flow output_size (mel bins)")


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    sec = data.get(key)
    if not isinstance(sec, dict):
        raise CosyVoiceConfigError(f"cosyvoice.yaml: missing section {key!r}")
    return sec


def config_from_yaml_dict(data: dict[str, Any]) -> CosyVoiceConfig:
    """Map the parsed yaml onto CosyVoiceConfig."""
    flow = _section(data, "flow")
    enc = _pick(ConformerConfig, _section(flow, "encoder"))
    lr = _pick(LengthRegulatorConfig, _section(flow, "length_regulator"))
    dec = _section(flow, "decoder")
    cfm_params = dec.get("cfm_params", {})
    cfm = _pick(CFMConfig, {**{k: v for k, v in dec.items() if k != "cfm_params"}, **cfm_params})
    est = _pick(EstimatorConfig, _section(dec, "estimator"))
    mel_conf = flow.get("mel_feat_conf", {})
    flow_kw = {k: v for k, v in flow.items() if not isinstance(v, dict)}
    flow_kw.update({k: mel_conf[k] for k in ("sampling_rate", "hop_size") if k in mel_conf})
    flow_cfg = _pick(FlowConfig, flow_kw, encoder=enc, length_regulator=lr, cfm=cfm, estimator=est)
    hift = _section(data, "hift")
    hift_kw = dict(hift)
    istft = hift.get("istft_params", {})
    hift_kw.update({"n_fft": istft.get("n_fft", 16), "hop_len": istft.get("hop_len", 4)})
    f0 = hift.get("f0_predictor", {})
    hift_kw.update({f"f0_{k}": v for k, v in f0.items() if k in ("num_class", "in_channels", "cond_channels")})
    hift_cfg = _pick(HiFTConfig, hift_kw)
    mel = _pick(MelConfig, data.get("feat_extractor", {}) or {})
    return CosyVoiceConfig(sample_rate=int(data.get("sample_rate", 22050)), flow=flow_cfg, hift=hift_cfg,
                           feat_extractor=mel)


def load_cosyvoice_config(path: str | Path) -> CosyVoiceConfig:
    """Read DIR/cosyvoice.yaml (or a yaml path) into a CosyVoiceConfig."""
    p = Path(path)
    if p.is_dir():
        p = p / "cosyvoice.yaml"
    with open(p, encoding="utf-8") as f:  # read as a stream, so that a YAML error's mark names the file
        return config_from_yaml_dict(read_cosyvoice_yaml(f))
