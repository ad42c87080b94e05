"""Kernel tests run the Triton kernels themselves: natively on a CUDA machine, otherwise under the Triton
interpreter (TRITON_INTERPRET=1, CPU tensors).

Why the interpreter runs in a child process: Triton reads TRITON_INTERPRET when a function is decorated with
@triton.jit, and triton.language decorates its own helpers (tl.zeros, tl.cdiv, ...) when `triton` is first
imported. Setting the variable after anything in the process imported triton leaves those helpers compiled-mode
and the interpreter fails ("Cannot call @triton.jit'd outside of the scope of a kernel"); setting it before and
leaving it set would switch every later Triton user of the pytest process (other test directories, torch.compile)
to the interpreter. So, without CUDA:
* tests that need Triton (fixture `triton_modules`) are skipped in the main pytest process, and
* tests/kernels/test_interpreter.py starts ONE child pytest over this directory with TRITON_INTERPRET=1 in its
  environment from the start (so it is set before triton is imported) and STEPAUDIO_KERNELS_CHILD=1; it fails if
  the child fails and prints the child's report. Nothing leaks into the parent's environment.
With CUDA the variable is never set and the same tests run on the GPU.
"""
from __future__ import annotations

import importlib
import os
from types import SimpleNamespace

import pytest
import torch

CHILD_ENV = "STEPAUDIO_KERNELS_CHILD"


def in_interpreter_child() -> bool:
    return os.environ.get(CHILD_ENV) == "1" and os.environ.get("TRITON_INTERPRET") == "1"


@pytest.fixture(scope="module")
def triton_modules() -> SimpleNamespace:
    """The private Triton modules plus the device their tensors must live on."""
    cuda = torch.cuda.is_available()
    if not cuda and not in_interpreter_child():
        pytest.skip("no CUDA: Triton kernels run under the interpreter in test_interpreter.py's child process")
    pytest.importorskip("triton")
    return SimpleNamespace(
        attention=importlib.import_module("kernels._attention_triton"),
        vocoder=importlib.import_module("kernels._vocoder_triton"),
        lm_ops=importlib.import_module("kernels._lm_ops_triton"),
        gemv=importlib.import_module("kernels._gemv_triton"),
        flow_ops=importlib.import_module("kernels._flow_ops_triton"),
        interpret=not cuda,
        device="cuda" if cuda else "cpu",
    )


@pytest.fixture
def bf16_dot(triton_modules, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Under the interpreter, tl.dot on bfloat16 operands multiplies their raw uint16 storage (Triton 3.9's
    InterpreterBuilder.create_dot casts only fp8): widen them to float32 first, which is what a tensor core computes
    (exact products, float32 sums). Its fp32 -> bf16 casts truncate instead of rounding to nearest; tests bound
    that separately. Nothing to do on a GPU."""
    if not triton_modules.interpret:
        return
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    original = interpreter.InterpreterBuilder.create_dot

    def widen(x):  # type: ignore[no-untyped-def]
        if x.dtype != tl.bfloat16:
            return x
        f32 = interpreter._convert_float(x.data, tl.bfloat16, tl.float32, None).view(np.float32)
        return interpreter.TensorHandle(f32, tl.float32)

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):  # type: ignore[no-untyped-def]
        return original(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_dot", create_dot)
