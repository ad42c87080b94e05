"""HiFT on the tiny profile: shapes, the NSF source, and chunked vocoding == offline vocoding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from speech_decoder.checkpoint import write_cosyvoice_folder
from speech_decoder.cosyvoice_model import CosyVoiceModel
from speech_decoder.hift.source import nsf_source
from speech_decoder.hift.streaming import HiFTStream


@pytest.fixture(scope="module")
def hift(tmp_path_factory):
    return CosyVoiceModel.load(write_cosyvoice_folder(tmp_path_factory.mktemp("cv"), "tiny")).hift


def _mel(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 80, frames, generator=torch.Generator().manual_seed(seed)) * 2 - 5


def test_offline_shapes_and_range(hift) -> None:
    audio = hift.inference(_mel(40))
    assert audio.shape == (1, 40 * 256)
    assert torch.isfinite(audio).all() and audio.abs().max() <= 0.99 and audio.std() > 0


def test_sine_source_phase_carries_across_chunks() -> None:
    f0 = torch.cat([torch.full((30,), 120.0), torch.zeros(10), torch.linspace(100, 300, 60)])  # per frame
    fundamental_only = torch.zeros(9)
    fundamental_only[0] = 1.0
    kw = dict(seed=7, sampling_rate=22050, upsample=10, n_harmonics=8, sine_amp=0.1, noise_std=0.003,
              voiced_threshold=10.0, merge_weight=fundamental_only, merge_bias=torch.zeros(1))
    start = torch.zeros(9, dtype=torch.float64)
    whole, end = nsf_source(f0, start, 0, **kw)
    a, mid = nsf_source(f0[:37], start, 0, **kw)
    b, end_b = nsf_source(f0[37:], mid, 370, **kw)
    assert whole.shape == (1000,)
    assert torch.allclose(torch.cat([a, b]), whole, atol=1e-6)
    assert torch.allclose(end_b, end, atol=1e-9)
    # source = tanh(fundamental): tanh(0.1 sin(2 pi 120 n / sr)) in the voiced stretch, plus noise of std 0.003
    n = torch.arange(1, 301, dtype=torch.float64)
    clean = torch.tanh(0.1 * torch.sin(2 * torch.pi * 120.0 * n / 22050))
    assert (whole[:300].double() - clean).std() < 0.005
    assert whole[300:400].std() == pytest.approx(0.1 / 3, rel=0.2)  # unvoiced: noise of std amp/3


@pytest.mark.parametrize("chunks", [[150], [1] * 30 + [120], [7, 30, 3, 50, 20, 40], [16, 17, 117]])
def test_chunked_equals_offline(hift, chunks) -> None:
    mel = _mel(150)
    ref = hift.inference(mel, seed=3)[0].numpy()
    stream = HiFTStream(hift, seed=3)
    out, i = [], 0
    for n in chunks:
        piece = stream.push_mel(mel[0, :, i:i + n])
        assert piece.size % 256 == 0
        out.append(piece)
        i += n
    assert stream.emitted_frames == 150 - stream.lookahead or sum(chunks) <= stream.lookahead
    out.append(stream.finish())
    audio = np.concatenate(out)
    assert audio.shape == ref.shape
    np.testing.assert_allclose(audio, ref, atol=1e-6, rtol=0)


def test_emitted_audio_never_depends_on_later_mel(hift) -> None:
    """The causality claim of HiFTStream: audio emitted after frame M depends only on frames < M."""
    mel_a = _mel(80, seed=1)
    mel_b = mel_a.clone()
    mel_b[:, :, 50:] = _mel(30, seed=2)
    sa, sb = HiFTStream(hift, seed=0), HiFTStream(hift, seed=0)
    ea, eb = sa.push_mel(mel_a[0, :, :50]), sb.push_mel(mel_b[0, :, :50])
    assert ea.size == (50 - 16) * 256 and np.array_equal(ea, eb)
    full_a = hift.inference(mel_a)[0].numpy()
    full_b = hift.inference(mel_b)[0].numpy()
    np.testing.assert_allclose(full_a[: ea.size], ea, atol=1e-6)
    np.testing.assert_allclose(full_b[: eb.size], eb, atol=1e-6)
    assert not np.allclose(full_a[ea.size:], full_b[eb.size:])


def test_weight_norm_cache_follows_new_weights(tmp_path) -> None:
    a = CosyVoiceModel.load(write_cosyvoice_folder(tmp_path / "a", "tiny", seed=1)).hift
    b = CosyVoiceModel.load(write_cosyvoice_folder(tmp_path / "b", "tiny", seed=2)).hift
    mel = _mel(30)
    before = a.inference(mel)  # caches a's folded weights
    a.load_state_dict(b.state_dict())
    assert torch.equal(a.inference(mel), b.inference(mel))
    assert not torch.equal(before, b.inference(mel))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA streams")
def test_new_weights_on_another_stream_keep_the_old_folded_weight_until_queued_convolutions_read_it() -> None:
    """A weight-normed conv folds its weight once and keeps it until g or v change. The convolutions queued on
    the speech path's stream read the folded weight made on another stream (here the default one); when new
    weights replace it meanwhile, an allocation on that other stream must not get its memory before they have read
    it. Before, it got it at once: the queued convolution read the NaNs written there."""
    from speech_decoder.hift.generator import WNConv1d

    conv = WNConv1d(256, 256, 3, padding=1).cuda()
    x = torch.randn(1, 256, 400, device="cuda")
    with torch.no_grad():
        want = conv(x)  # folds the weight on the default stream
    speech = torch.cuda.Stream()
    speech.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(speech), torch.no_grad():
        torch.cuda._sleep(100_000_000)  # tens of ms: the convolution queues behind it
        got = conv(x)
        conv.weight_g.mul_(1.0)  # new weights (the same values): the next call folds them again
        conv.weight()
    junk = [torch.full((256, 256, 3), float("nan"), device="cuda") for _ in range(12)]  # on the default stream
    torch.cuda.synchronize()
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5) and len(junk) == 12


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused vocoder kernels run on CUDA")
def test_fused_kernels_on_cuda_match_the_references_offline_and_chunked(tmp_path) -> None:
    from kernels import vocoder as KV

    hift = CosyVoiceModel.load(write_cosyvoice_folder(tmp_path / "cv", "full-random"), device="cuda").hift
    mel = _mel(150).cuda()
    fused = hift.inference(mel, seed=3)
    with KV.reference_ops():
        eager = hift.inference(mel, seed=3)
    assert float((fused - eager).abs().max()) < 1e-3  # issue 4's bound for the fused vocoder
    stream = HiFTStream(hift, seed=3)
    audio = np.concatenate([stream.push_mel(mel[0, :, i:i + 25]) for i in range(0, 150, 25)] + [stream.finish()])
    offline = fused[0].cpu().numpy()
    assert audio.shape == offline.shape
    # cuDNN may pick other (TF32) conv algorithms for the shorter windows: a chunking error (a seam, a phase jump)
    # is of the order of the signal, far above what the algorithms change.
    assert float(np.linalg.norm(audio - offline) / np.linalg.norm(offline)) < 1e-2
