"""Flow windows through CUDA graphs (speech_decoder.flow_graphs) give what the eager flow gives.

A stale input buffer, a graph replayed for the wrong shape or an output overwritten by another graph's replay would
give errors of the order of the output itself; the tolerance (1% relative) only absorbs kernel choices that differ
between a padded and an unpadded batch. Runs on a GPU (bench/gpu_suite.sh); on the CPU only the guard is checked.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from speech_decoder.checkpoint import write_cosyvoice_folder
from speech_decoder.cosyvoice_model import CosyVoiceModel, SpeakerPrompt
from speech_decoder.flow.flow import window_noise
from speech_decoder.flow_graphs import FlowGraphs, row_bucket
from speech_decoder.hift.streaming import HiFTStream, VocoderGraphs
from speech_decoder.streaming_decoder import StreamingDecoder, steady_windows, vocoder_pushes, warm_up
from tests.cuda_streams import pool_draws, pooled_streams

def cuda(test):  # type: ignore[no-untyped-def]
    """Marked `gpu` (-m "not gpu" leaves it out) and skipped without one."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")(test))


def test_graphs_are_cuda_only(tmp_path: Path) -> None:
    model = CosyVoiceModel.load(write_cosyvoice_folder(tmp_path / "cv", "tiny"))
    assert model.flow_graphs is None
    with pytest.raises(ValueError, match="CUDA"):
        FlowGraphs(model.flow)
    assert warm_up(model, SpeakerPrompt.empty()) == 0
    assert [row_bucket(n) for n in (1, 2, 3, 5, 8, 9, 32)] == [1, 2, 4, 8, 8, 16, 32]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> CosyVoiceModel:
    folder = write_cosyvoice_folder(tmp_path_factory.mktemp("cv"), "tiny")
    return CosyVoiceModel.load(folder, device="cuda", flow_dtype=torch.float32)


def _prompt(n_tokens: int, seed: int) -> SpeakerPrompt:
    g = torch.Generator().manual_seed(seed)
    return SpeakerPrompt(torch.randint(0, 5120, (n_tokens,), generator=g),
                         torch.randn(int(n_tokens / 41.667 * 22050 / 256), 80, generator=g) - 5,
                         torch.randn(192, generator=g))


def _window(model: CosyVoiceModel, rows: int, n_tokens: int, prompt: SpeakerPrompt, seed: int):
    g = torch.Generator().manual_seed(seed)
    mel_len1, mel_len2 = prompt.mel.size(0), model.cfg.flow.mel_frames(n_tokens)
    args = (torch.randint(0, 5120, (rows, n_tokens), generator=g).cuda(),
            prompt.tokens[None].expand(rows, -1).cuda(), prompt.mel[None].expand(rows, -1, -1).cuda(),
            torch.randn(rows, 192, generator=g).cuda())
    noise = torch.cat([window_noise(seed + r, mel_len1, 40, mel_len2, 80, torch.device("cuda")) for r in range(rows)])
    return args, noise, mel_len2


def _decode_in_pushes_of_5(model: CosyVoiceModel, prompt: SpeakerPrompt, tokens: list[int]) -> np.ndarray:
    dec = StreamingDecoder(model, prompt, seed=5)
    parts = [dec.push(tokens[i:i + 5]) for i in range(0, len(tokens), 5)]
    return np.concatenate(parts + [dec.finish()])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@cuda
@pytest.mark.parametrize("rows", [1, 3])
def test_replays_equal_the_eager_flow(model: CosyVoiceModel, rows: int) -> None:
    graphs = FlowGraphs(model.flow)
    prompt = _prompt(50, seed=1)
    for call in range(4):  # eager, capture + replay, replay, replay: new data every time
        args, noise, mel_len2 = _window(model, rows, 25, prompt, seed=10 * call)
        got = graphs(*args, noise=noise, mel_len2=mel_len2)
        want = model.flow.inference(*args, noise=noise, mel_len2=mel_len2)
        assert got.shape == want.shape == (rows, 80, mel_len2)
        assert _rel(got, want) < 1e-2, (call, _rel(got, want))
    assert (graphs.captures, graphs.replays) == (1, 3)


@cuda
def test_graphs_of_other_shapes_do_not_disturb_each_other(model: CosyVoiceModel) -> None:
    graphs = FlowGraphs(model.flow)
    prompt = _prompt(50, seed=2)
    shapes = [(1, 25), (1, 40), (2, 40), (1, 25)]
    for rows, n in shapes * 2:  # second round: every shape replays after the others captured into the shared pool
        args, noise, mel_len2 = _window(model, rows, n, prompt, seed=rows * 100 + n)
        got = graphs(*args, noise=noise, mel_len2=mel_len2)
        assert _rel(got, model.flow.inference(*args, noise=noise, mel_len2=mel_len2)) < 1e-2, (rows, n)
    assert graphs.captures == 3


@cuda
def test_only_allowed_window_lengths_are_captured_and_a_failed_capture_runs_eagerly(model: CosyVoiceModel) -> None:
    graphs = FlowGraphs(model.flow)
    graphs.window_tokens = frozenset({40})
    prompt = _prompt(50, seed=6)
    for n in (25, 25, 25, 40, 40):
        args, noise, mel_len2 = _window(model, 1, n, prompt, seed=n)
        graphs(*args, noise=noise, mel_len2=mel_len2)
    assert (graphs.captures, graphs.replays) == (1, 1)  # the 40-token window, on its second sight

    def broken(*_: object) -> None:
        raise RuntimeError("capture refused")

    failing = FlowGraphs(model.flow)
    failing._capture = broken  # type: ignore[method-assign]
    args, noise, mel_len2 = _window(model, 1, 25, prompt, seed=7)
    want = model.flow.inference(*args, noise=noise, mel_len2=mel_len2)
    for _ in range(3):  # eager, failed capture -> eager, eager
        assert _rel(failing(*args, noise=noise, mel_len2=mel_len2), want) < 1e-2
    assert failing.failed and (failing.captures, failing.replays) == (0, 0)


@cuda
def test_streaming_decoder_through_graphs_equals_eager(model: CosyVoiceModel) -> None:
    prompt = _prompt(75, seed=3)
    tokens = torch.randint(0, 5120, (640,), generator=torch.Generator().manual_seed(4)).tolist()

    def decode() -> np.ndarray:
        return _decode_in_pushes_of_5(model, prompt, tokens)

    (graphs, hift_graphs), model.flow_graphs, model.hift_graphs = (model.flow_graphs, model.hift_graphs), None, None
    try:
        eager = decode()
    finally:
        model.flow_graphs, model.hift_graphs = graphs, hift_graphs
    assert graphs is not None and hift_graphs is not None
    shapes = steady_windows(model.cfg.flow)
    assert warm_up(model, prompt) == 2 * len(shapes)  # 25, 40, 70 and both 110-token shapes, twice
    captured, replays = graphs.captures, graphs.replays
    vocoder_captured, vocoder_replays = hift_graphs.captures, hift_graphs.replays
    assert vocoder_captured == len(hift_graphs.window_lengths)  # a vocoder step per window shape
    assert len(hift_graphs.window_lengths) == len(vocoder_pushes(model.cfg.flow))  # one length each push
    for _ in range(2):  # the second utterance would capture whatever the first met for the second time
        got = decode()
    assert graphs.captures == captured  # every steady window shape was ready; final windows stay eager
    assert graphs.replays - replays == 2 * 8  # windows 25, 40, 70, then five of 110 tokens, per utterance
    assert hift_graphs.captures == vocoder_captured  # the vocoder's steady lengths too
    assert hift_graphs.replays - vocoder_replays == 2 * 8  # each window's vocoder step
    assert got.shape == eager.shape
    assert float(np.linalg.norm(got - eager) / np.linalg.norm(eager)) < 1e-2


@cuda
def test_the_speech_path_runs_on_its_own_stream_beside_a_busy_default_stream(tmp_path: Path) -> None:
    """The decoder's windows, HiFT and cross-fades go to the model's highest-priority stream while another thread
    keeps the default stream busy, as the TTS LM does when served: the audio equals the same decoding done on the
    default stream (a tensor read on one stream before the other stream wrote it would not). Run in a process of
    its own, as bench.diag_speech_stream's trial (a FlowGraphs of its own first, as this module's tests before it):
    the illegal address this met in H100 run4 and run5 is sticky, and failed the worker's next tests too."""
    import subprocess
    import sys

    folder = write_cosyvoice_folder(tmp_path / "cv", "tiny")
    proc = subprocess.run([sys.executable, "-m", "bench.diag_speech_stream", "--trial", "base", str(folder)],
                          capture_output=True, text=True, timeout=140)
    result = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), proc.stderr[-3000:])
    assert result.startswith("RESULT ok"), result


@cuda
def test_the_speech_stream_and_the_capture_streams_are_the_speech_paths_own(model: CosyVoiceModel) -> None:
    """The speech path's stream, and the streams its flow and HiFT graphs are captured on, are none of the streams
    torch's pool hands out (an engine or a timing asking for "a stream" could have been given the same one) and
    are three different streams."""
    assert model.stream is not None and model.flow_graphs is not None and model.hift_graphs is not None
    ours = {s.cuda_stream for s in (model.stream, model.flow_graphs._capture_stream,
                                     model.hift_graphs._capture_stream)}
    assert len(ours) == 3 and not ours & pooled_streams(model.device)


@cuda
def test_capturing_flow_windows_draws_no_stream_from_torchs_pool(model: CosyVoiceModel) -> None:
    """Each capture warmed up on a new torch.cuda.Stream() and captured on torch's default capture stream (drawn
    too, the first time): ~100 draws at priority 0 for a served model, round-robin over a pool of 32 that the
    engines' streams and the default capture stream came from, so the flow's work met theirs. Now a FlowGraphs
    warms up and captures on its own capture stream: the pool is not drawn from, and the mels are the eager ones."""
    prompt = _prompt(50, seed=11)
    args, noise, mel_len2 = _window(model, 1, 40, prompt, seed=12)
    want = model.flow.inference(*args, noise=noise, mel_len2=mel_len2)
    graphs = FlowGraphs(model.flow)
    with pool_draws(model.device, (0,)) as drawn:
        got = [graphs(*args, noise=noise, mel_len2=mel_len2) for _ in range(3)]  # eager, captured, replayed
    assert drawn == {0: 0}
    assert not graphs.failed and (graphs.captures, graphs.replays) == (1, 2)
    assert all(_rel(g, want) < 1e-2 for g in got)


@cuda
def test_fusing_q_k_v_on_the_speech_stream_keeps_the_old_weights_until_it_has_read_them() -> None:
    """The estimator's first call fuses to_q, to_k and to_v into one matrix on the stream it runs on (the speech
    path's) and drops their weights, made on the loading stream. With that stream's copy delayed, an allocation on
    the loading stream meanwhile (another thread launching there; here this thread, right after) must not get the
    old weights' memory before the copy has read it. Before, it got it at once: the fused matrix held its NaNs."""
    from speech_decoder.flow.estimator import _Attention

    attn = _Attention(256, 4, 64).cuda()  # weights [256, 256] each, made on the default stream
    want = torch.cat([m.weight.detach().clone() for m in (attn.to_q, attn.to_k, attn.to_v)])
    speech = torch.cuda.Stream()
    speech.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(speech), torch.inference_mode():
        torch.cuda._sleep(100_000_000)  # tens of ms: the fusing copy queues behind it
        fused = attn._fused_qkv()
    junk = [torch.full((256, 256), float("nan"), device="cuda") for _ in range(12)]  # on the default stream
    torch.cuda.synchronize()
    assert torch.equal(fused, want) and len(junk) == 12


@cuda
def test_vocoder_windows_replayed_equal_the_eager_vocoder(model: CosyVoiceModel) -> None:
    """HiFT windows through VocoderGraphs give the eager vocoder's audio: a steady window shape is captured on its
    second sight and replayed, the final step never captured, and one graph serves streams of other seeds (the
    seed, phases and sample positions are inputs, not constants of the capture)."""
    graphs = VocoderGraphs(model.device)
    mel = (torch.randn(80, 200, generator=torch.Generator().manual_seed(3)) - 5).cuda()

    def vocode(g: VocoderGraphs | None, seed: int) -> np.ndarray:
        with model.on_stream():  # the stream's state is made on the stream that uses it, as StreamingDecoder does
            stream = HiFTStream(model.hift, seed=seed, graphs=g)
            parts = [stream.push_mel(mel[:, i:i + 40]) for i in range(0, 200, 40)] + [stream.finish()]
        return np.concatenate(parts)

    eager = {seed: vocode(None, seed) for seed in (2, 9)}
    assert float(np.linalg.norm(eager[2] - eager[9])) > 1e-3  # the seeds' noise differs
    for seed in (2, 2, 9):
        got = vocode(graphs, seed)
        assert got.shape == eager[seed].shape
        assert float(np.linalg.norm(got - eager[seed]) / np.linalg.norm(eager[seed])) < 1e-4
    assert graphs.captures == 2  # the first window's shape and the steady one
    assert graphs.replays >= 2 * 4  # the steady shape from its second sight on, then every window of seed 9
