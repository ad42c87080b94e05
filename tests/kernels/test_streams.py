"""kernels.streams.own_stream: CUDA streams that torch's round-robin pool never hands to anyone else (GPU only).

torch.cuda.Stream() returns one of 32 pooled streams per priority level, the 33rd request the first one again: two
workers that each asked for "a stream of their own" could share one, and a graph captured on it would take in the
other worker's kernels. These tests draw every pooled stream at every level, twice over, and look for ours.
"""
from __future__ import annotations

import pytest
import torch

from kernels.streams import own_stream
from tests.cuda_streams import pooled_streams

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_own_streams_are_never_handed_out_by_the_pool_and_keep_their_priority() -> None:
    dev = torch.device("cuda", torch.cuda.current_device())
    low, low2, high = own_stream(dev), own_stream(dev), own_stream(dev, priority=-1)
    ours = {low.cuda_stream, low2.cuda_stream, high.cuda_stream}
    assert len(ours) == 3 and not ours & pooled_streams(dev)
    assert (low.priority, high.priority) == (0, -1)
    assert low.device == dev


def test_work_and_a_graph_captured_on_an_own_stream_give_the_eager_result() -> None:
    dev = torch.device("cuda", torch.cuda.current_device())
    stream = own_stream(dev)
    x = torch.randn(256, 256, device=dev)
    want = torch.tanh(x @ x)
    stream.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(stream):
        eager = torch.tanh(x @ x)  # also sets cuBLAS up for this stream before the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            out = torch.tanh(x @ x)
        x.mul_(2)
        graph.replay()
    torch.cuda.current_stream(dev).wait_stream(stream)
    assert torch.allclose(eager, want)
    assert torch.allclose(out, torch.tanh(x @ x), rtol=1e-4, atol=1e-4)
