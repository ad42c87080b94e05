"""bench.kernels on a CPU: a case that fails is one row with its error, and the run goes on to the next section
(on a lent GPU machine the kernels step is measured once, within its time limit)."""
from __future__ import annotations

import time

import pytest
import torch

import bench.kernels as K


def test_a_failed_case_is_reported_with_its_error_and_the_run_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    """4 query heads over 3 kv heads: the attention dispatcher refuses them. The progress line after the case read
    the row's "ms", which a failed row has not: the KeyError ended bench.kernels before its later sections."""
    row = K.run_case(time.time(), "decode 4/3 heads", K.decode_case, "4/3 heads", 1, 512, 4, 3, 64, "cpu",
                     torch.float32, 64, 2)
    assert row["error"] == "ValueError: num_heads 4 is not a multiple of num_kv_heads 3"
    assert "decode 4/3 heads: ValueError: num_heads 4 is not a multiple" in capsys.readouterr().out
