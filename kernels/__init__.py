"""kernels: Triton kernels for Step-Audio, each with its PyTorch reference and a dispatcher.

Every op lives in ``kernels/<op_module>.py`` as three things (STYLE.md section 4):

* ``<op>_ref(...)``  plain PyTorch, fp32 maths: the specification;
* the Triton kernel(s), in a private module (``kernels/_<module>_triton.py``) imported only when a CUDA
  tensor arrives (kernels._dispatch), so that importing this package never imports Triton and CPU runs never
  need it;
* ``<op>(...)``  the dispatcher: validates inputs (raises ValueError), routes CUDA tensors to Triton and
  everything else to the reference.

Public ops:
    alibi_slopes, store_kv, paged_attention            (kernels.attention)
    istft_head, leaky_relu, add_leaky_relu, snake, add_snake, sine_source (kernels.vocoder)
    rms_norm, add_rms_norm, silu_and_mul                 (kernels.lm_ops)
    gemv, rms_norm_gemv                                  (kernels.gemv)
    add_layer_norm, group_norm_mish, linear_gelu, linear_add, linear_add_layer_norm   (kernels.flow_ops)
    reference_ops (every dispatcher runs its reference inside it)   (kernels._dispatch)
    use_pdl, set_pdl, pdl_off_after_failed_capture (programmatic dependent launch)   (kernels.launch)
    own_stream (a CUDA stream outside torch's shared pool, for one worker)           (kernels.streams)

Importing this package does no work: names resolve lazily. It imports nothing from the rest of stepaudio-rt.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "BIAS_MODES": "kernels.attention",
    "alibi_slopes": "kernels.attention",
    "store_kv": "kernels.attention",
    "store_kv_ref": "kernels.attention",
    "paged_attention": "kernels.attention",
    "paged_attention_ref": "kernels.attention",
    "istft_head": "kernels.vocoder",
    "istft_head_ref": "kernels.vocoder",
    "leaky_relu": "kernels.vocoder",
    "leaky_relu_ref": "kernels.vocoder",
    "add_leaky_relu": "kernels.vocoder",
    "add_leaky_relu_ref": "kernels.vocoder",
    "snake": "kernels.vocoder",
    "snake_ref": "kernels.vocoder",
    "add_snake": "kernels.vocoder",
    "add_snake_ref": "kernels.vocoder",
    "sine_source": "kernels.vocoder",
    "sine_source_ref": "kernels.vocoder",
    "rms_norm": "kernels.lm_ops",
    "rms_norm_ref": "kernels.lm_ops",
    "add_rms_norm": "kernels.lm_ops",
    "add_rms_norm_ref": "kernels.lm_ops",
    "silu_and_mul": "kernels.lm_ops",
    "silu_and_mul_ref": "kernels.lm_ops",
    "gemv": "kernels.gemv",
    "gemv_ref": "kernels.gemv",
    "rms_norm_gemv": "kernels.gemv",
    "rms_norm_gemv_ref": "kernels.gemv",
    "add_layer_norm": "kernels.flow_ops",
    "add_layer_norm_ref": "kernels.flow_ops",
    "group_norm_mish": "kernels.flow_ops",
    "group_norm_mish_ref": "kernels.flow_ops",
    "linear_gelu": "kernels.flow_ops",
    "linear_gelu_ref": "kernels.flow_ops",
    "linear_add": "kernels.flow_ops",
    "linear_add_ref": "kernels.flow_ops",
    "linear_add_layer_norm": "kernels.flow_ops",
    "linear_add_layer_norm_ref": "kernels.flow_ops",
    "reference_ops": "kernels._dispatch",
    "use_pdl": "kernels.launch",
    "set_pdl": "kernels.launch",
    "pdl_off_after_failed_capture": "kernels.launch",
    "own_stream": "kernels.streams",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kernels' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)
