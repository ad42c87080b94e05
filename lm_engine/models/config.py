"""Model configs: one frozen dataclass for every family, read from a Hugging Face config.json dict.

Step-1 (model_type "step1", Step1ForCausalLM) spells its fields the upstream way: num_attention_groups for the
KV groups and max_seq_len for the context; head_dim is hidden_size / num_attention_heads. Qwen2 uses the usual
num_key_value_heads / max_position_embeddings / rope_theta fields.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

FAMILIES = ("step1", "qwen2")
TORCH_DTYPES = ("bfloat16", "float16", "float32", "float64")  # the floating dtypes config.json's torch_dtype names
_Scalar = TypeVar("_Scalar", int, float)


class ModelConfigError(ValueError):
    """A config.json that this engine cannot run (unknown family, inconsistent head counts)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelConfig:
    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_seq_len: int
    torch_dtype: str = "bfloat16"
    rope_theta: float = 0.0          # 0: no RoPE (Step-1)
    attention_bias: bool = False     # q/k/v biases (Qwen2)
    tie_word_embeddings: bool = False
    bos_token_id: int = 1
    eos_token_ids: tuple[int, ...] = (3,)
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ModelConfigError(f"unknown model family {self.family!r}; supported: {FAMILIES}")
        if self.num_heads % self.num_kv_heads != 0:
            raise ModelConfigError(f"num_heads {self.num_heads} is not a multiple of kv heads {self.num_kv_heads}")
        sizes = {"vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
                 "intermediate_size": self.intermediate_size, "num_layers": self.num_layers,
                 "head_dim": self.head_dim, "max_seq_len": self.max_seq_len}
        for name, size in sizes.items():
            if size <= 0:
                raise ModelConfigError(f"{name} must be > 0")

    def check_tp(self, tp: int) -> None:
        """A ModelConfigError unless tp splits every dimension tensor parallelism shards (heads, kv heads, the MLP's
        width, the vocabulary), naming those it does not and the sizes that would."""
        dims = {"attention heads": self.num_heads, "kv heads (Step-1's num_attention_groups)": self.num_kv_heads,
                "intermediate_size": self.intermediate_size, "vocab_size": self.vocab_size}
        bad = [f"{name} ({n})" for name, n in dims.items() if n % tp]
        if bad:
            fits = [d for d in range(1, 65) if all(n % d == 0 for n in dims.values())]
            raise ModelConfigError(f"a tensor-parallel size of {tp} does not divide the model's {', '.join(bad)}; "
                                   f"sizes that do: {', '.join(map(str, fits))}")

    @property
    def uses_alibi(self) -> bool:
        return self.family == "step1"

    @classmethod
    def from_hf(cls, d: dict[str, Any]) -> ModelConfig:
        """Builds a config from a config.json dict (Step-1 or Qwen2 spelling)."""
        model_type = d.get("model_type", "")
        eos = d.get("eos_token_id")
        eos_ids = tuple(_value("eos_token_id", e, 3, int) for e in (eos if isinstance(eos, list) else [eos]))
        if model_type == "step1":
            heads, groups = _heads(d, "num_attention_groups")
            return cls(
                family="step1",
                vocab_size=_count(d, "vocab_size"),
                hidden_size=_count(d, "hidden_size"),
                intermediate_size=_count(d, "intermediate_size"),
                num_layers=_count(d, "num_hidden_layers"),
                num_heads=heads,
                num_kv_heads=groups,
                head_dim=_head_dim(d, heads),
                rms_norm_eps=_value("rms_norm_eps", d.get("rms_norm_eps"), 1e-5, float),
                # an `or` chain here made a max_seq_len of 0 the default 32768, without a word
                max_seq_len=_count(d, "max_seq_len" if "max_seq_len" in d else "max_position_embeddings", 32768),
                torch_dtype=_torch_dtype(d),
                tie_word_embeddings=_flag(d, "tie_word_embeddings"),
                bos_token_id=_value("bos_token_id", d.get("bos_token_id"), 1, int),
                eos_token_ids=eos_ids,
                pad_token_id=_value("pad_token_id", d.get("pad_token_id"), 0, int),
            )
        if model_type == "qwen2":
            heads, kv_heads = _heads(d, "num_key_value_heads", kv_optional=True)
            return cls(
                family="qwen2",
                vocab_size=_count(d, "vocab_size"),
                hidden_size=_count(d, "hidden_size"),
                intermediate_size=_count(d, "intermediate_size"),
                num_layers=_count(d, "num_hidden_layers"),
                num_heads=heads,
                num_kv_heads=kv_heads,
                head_dim=_head_dim(d, heads),
                rms_norm_eps=_value("rms_norm_eps", d.get("rms_norm_eps"), 1e-6, float),
                max_seq_len=_count(d, "max_position_embeddings", 32768),
                torch_dtype=_torch_dtype(d),
                rope_theta=_value("rope_theta", d.get("rope_theta"), 1e6, float),
                attention_bias=True,
                tie_word_embeddings=_flag(d, "tie_word_embeddings"),
                bos_token_id=_value("bos_token_id", d.get("bos_token_id"), 151643, int),
                eos_token_ids=eos_ids,
                pad_token_id=_value("pad_token_id", d.get("pad_token_id"), 151643, int),
            )
        raise ModelConfigError(f"unsupported model_type {model_type!r} (architectures {d.get('architectures')})")

    @classmethod
    def from_dir(cls, path: Path) -> ModelConfig:
        file = Path(path) / "config.json"
        try:
            return cls.from_hf(json.loads(file.read_text(encoding="utf-8")))
        except ModelConfigError as exc:  # its fields, by their names in config.json
            raise ModelConfigError(f"{file}: {exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:  # not JSON, or a field missing or of the wrong kind
            raise ModelConfigError(f"{file}: {type(exc).__name__}: {exc}") from exc


_JSON_KINDS = {str: "string (in quotes)", float: "decimal number", bool: "boolean", list: "list", dict: "object",
               type(None): "null"}


def _count(d: dict[str, Any], key: str, default: int | None = None) -> int:
    """A config.json count that must be at least 1 (a head count is divided by, a layer count loops)."""
    if key not in d:
        if default is None:
            raise ModelConfigError(f"{key} is missing")
        return default
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int):  # "96" was a TypeError from hidden_size // heads
        kind = _JSON_KINDS.get(type(value), type(value).__name__)
        raise ModelConfigError(f"{key} is {json.dumps(value)}, a {kind}; it must be a whole number")
    if value < 1:
        raise ModelConfigError(f"{key} is {value}; it must be at least 1")
    return value


def _value(key: str, value: Any, default: _Scalar, kind: Callable[[Any], _Scalar]) -> _Scalar:
    """A config.json value of `kind` (absent or null: `default`), named by its key when it is none: "rms_norm_eps":
    "x" was 'ValueError: could not convert string to float', naming no field."""
    if value is None:
        return default
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise ModelConfigError(f"{key} is {json.dumps(value)}; it must be a "
                               f"{'number' if kind is float else 'whole number'}") from exc


def _flag(d: dict[str, Any], key: str) -> bool:
    """A config.json true/false (absent or null: false). "tie_word_embeddings": "false" was bool("false"), true: the
    head was tied to the embeddings and the checkpoint's own lm_head.weight skipped, without a word."""
    value = d.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        kind = _JSON_KINDS.get(type(value), type(value).__name__)
        raise ModelConfigError(f"{key} is {json.dumps(value)}, a {kind}; it must be true or false")
    return value


def _torch_dtype(d: dict[str, Any]) -> str:
    """config.json's torch_dtype (absent or null: bfloat16): the engine computes in its own dtype, but a name that is
    no torch dtype ("bfloat17") is a config.json edited by hand or damaged, and was accepted without a word."""
    value = d.get("torch_dtype")
    if value is None:
        return "bfloat16"
    if value not in TORCH_DTYPES:
        raise ModelConfigError(f"torch_dtype is {json.dumps(value)}; it must be one of {', '.join(TORCH_DTYPES)}")
    return str(value)


def _heads(d: dict[str, Any], kv_key: str, *, kv_optional: bool = False) -> tuple[int, int]:
    """(query heads, KV heads) of a config.json, checked before anything divides by them: a KV head count of 0 was a
    ZeroDivisionError naming no field. `kv_key` is the family's name for the KV heads (Step-1's groups); absent and
    optional, there are as many as query heads."""
    heads = _count(d, "num_attention_heads")
    kv_heads = _count(d, kv_key, heads if kv_optional else None)
    if heads % kv_heads:
        raise ModelConfigError(f"num_attention_heads ({heads}) is not a multiple of {kv_key} ({kv_heads}): each KV "
                               "head serves the same number of query heads")
    return heads, kv_heads


def _head_dim(d: dict[str, Any], heads: int) -> int:
    if d.get("head_dim"):
        return _count(d, "head_dim")
    hidden = _count(d, "hidden_size")
    if hidden % heads:  # hidden_size // heads silently gave a head_dim the weights then contradicted
        raise ModelConfigError(f"hidden_size ({hidden}) is not a multiple of num_attention_heads ({heads}), so "
                               "there is no head_dim (hidden_size / num_attention_heads)")
    return hidden // heads


def step1_hf_config(*, hidden_size: int, intermediate_size: int, num_attention_heads: int,
                    num_attention_groups: int, num_hidden_layers: int, vocab_size: int,
                    max_seq_len: int = 32768, torch_dtype: str = "bfloat16") -> dict[str, Any]:
    """A Step-1 config.json dict with the upstream field names (Step-Audio-TTS-3B / Step-Audio-Chat)."""
    return {
        "architectures": ["Step1ForCausalLM"],
        "model_type": "step1",
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_attention_heads": num_attention_heads,
        "num_attention_groups": num_attention_groups,
        "num_hidden_layers": num_hidden_layers,
        "max_seq_len": max_seq_len,
        "vocab_size": vocab_size,
        "rms_norm_eps": 1e-5,
        "bos_token_id": 1,
        "eos_token_id": 3,
        "pad_token_id": 0,
        "torch_dtype": torch_dtype,
    }
