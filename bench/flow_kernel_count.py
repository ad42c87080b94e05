"""Counts the device-launching ops of one first streaming flow window at CosyVoice-300M dims (random weights, CPU).

    python -m bench.flow_kernel_count      # ~1 minute on 2 CPU cores

Method: every aten op that reaches the dispatcher below autograd (TorchDispatchMode) and is not a view, a metadata
op or an allocation without a fill counts as one launch; a kernels.flow_ops dispatcher counts as one launch (its
Triton kernel) and the reference ops it runs on the CPU are not counted. A CUDA run launches about this many
kernels, a few more where one aten op is several kernels (native_group_norm: statistics then apply); a convolution
with a bias counts twice, as on CUDA (cuDNN convolves, torch adds the bias in a kernel of its own).
The window is run once uncounted first (one-time set-up), then counted.
Window: B = 1 (CFG doubles it to 2), 125 prompt tokens + 25 target tokens, T = 516 mel frames, 10 Euler steps.
"""
from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

from bench import RESULTS, commit, exit_without_torch, write_json

if __name__ == "__main__":  # before torch is imported: without it, one line that says what to install
    exit_without_torch("bench.flow_kernel_count")

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import speech_decoder.flow.estimator as estimator_module
import speech_decoder.flow.flow as flow_module
from speech_decoder.checkpoint import write_cosyvoice_folder
from speech_decoder.cosyvoice_model import CosyVoiceModel

_FREE = {"view", "_unsafe_view", "reshape", "transpose", "t", "permute", "unsqueeze", "squeeze", "expand", "slice",
         "select", "unbind", "split", "split_with_sizes", "chunk", "as_strided", "detach", "alias", "empty",
         "empty_like", "empty_strided", "lift_fresh", "size", "stride", "_has_compatible_shallow_copy_type"}


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()
        self.muted = 0
        self.in_estimator: collections.Counter[str] = collections.Counter()  # the ops counted inside estimator calls
        self.estimator_depth = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = func.overloadpacket.__name__
        if not self.muted and name not in _FREE:
            self.ops[name] += 1
            self.in_estimator[name] += self.estimator_depth > 0
            if name in ("conv1d", "convolution") and len(args) > 2 and args[2] is not None:  # cuDNN has no bias
                self.ops["convolution bias"] += 1
                self.in_estimator["convolution bias"] += self.estimator_depth > 0
        return func(*args, **(kwargs or {}))


def _as_one_launch(counter: _Count, fn):  # type: ignore[no-untyped-def]
    def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
        counter.ops[fn.__name__] += 1
        counter.in_estimator[fn.__name__] += counter.estimator_depth > 0
        counter.muted += 1
        try:
            return fn(*args, **kwargs)
        finally:
            counter.muted -= 1
    return wrapped


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.flow_kernel_count", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=RESULTS / "flow_kernel_count.json",
                    help="JSON with the counts (default: %(default)s)")
    out = ap.parse_args().out  # parsed first: the count takes about a minute
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        flow = CosyVoiceModel.load(write_cosyvoice_folder(d, "full-random"), cuda_graphs=False).flow
    target = 25
    mel_len2 = flow.cfg.mel_frames(target)
    token = torch.randint(0, 5120, (1, target))
    prompt_token = torch.randint(0, 5120, (1, 125))
    prompt_feat = torch.randn(1, 516 - mel_len2, 80)
    embedding = torch.randn(1, 192)
    args = (token, prompt_token, prompt_feat, embedding)
    with torch.inference_mode():
        flow.inference(*args, mel_len2=mel_len2)  # not counted: one-time set-up (the q/k/v weights fused)
    counter = _Count()
    for module in (estimator_module, flow_module):
        for name in ("add_layer_norm", "group_norm_mish", "linear_gelu", "linear_add", "linear_add_layer_norm"):
            if hasattr(module, name):
                setattr(module, name, _as_one_launch(counter, getattr(module, name)))
    est = flow.decoder.estimator

    def enter(*_) -> None:  # type: ignore[no-untyped-def]
        counter.estimator_depth += 1

    def leave(*_) -> None:  # type: ignore[no-untyped-def]
        counter.estimator_depth -= 1
        calls.update(["estimator"])

    calls: collections.Counter[str] = collections.Counter()
    hooks = [est.register_forward_pre_hook(enter), est.register_forward_hook(leave)]
    with torch.inference_mode(), counter:
        flow.inference(*args, mel_len2=mel_len2)
    for hook in hooks:
        hook.remove()
    total, inside = sum(counter.ops.values()), sum(counter.in_estimator.values())
    print(f"launching ops per first window: {total}; inside its {calls['estimator']} estimator calls: {inside} "
          f"({inside / max(1, calls['estimator']):.0f} per call)")
    print(", ".join(f"{k} {v}" for k, v in counter.ops.most_common()))
    write_json(out, {"commit": commit(), "launches": total, "estimator_calls": calls["estimator"],
                     "launches_in_estimator": inside, "ops": dict(counter.ops.most_common())})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
