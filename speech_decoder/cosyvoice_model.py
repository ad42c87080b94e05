"""Load a CosyVoice-300M-25Hz folder (cosyvoice.yaml, flow.pt, hift.pt, campplus.onnx) and decode offline.

`CosyVoiceModel.load(dir)` is shared and read-only after loading; per-session streaming state lives in
speech_decoder.streaming_decoder.StreamingDecoder. Flow tokens are the TTS LM's dual-codebook ids minus 65536
(0..1023 linguistic, 1024..5119 semantic), as Step-Audio tts.py passes them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kernels.streams import own_stream
from model_files.weights import load_torch_state
from speech_decoder.cosyvoice_config import CosyVoiceConfig, load_cosyvoice_config
from speech_decoder.cosyvoice_frontend import CampPlus, prompt_mel
from speech_decoder.flow.flow import MaskedDiffWithXvec
from speech_decoder.flow_graphs import FlowGraphs
from speech_decoder.hift.generator import HiFTGenerator, normalize_hift_state_dict
from speech_decoder.hift.streaming import VocoderGraphs

logger = logging.getLogger(__name__)


class CosyVoiceCheckpointError(RuntimeError):
    """A CosyVoice folder is missing a file or its weights do not match cosyvoice.yaml."""


@dataclass(frozen=True, slots=True)
class SpeakerPrompt:
    """What the flow needs about the voice: prompt tokens, their mel and the speaker x-vector."""

    tokens: torch.Tensor  # [P] int64 flow ids of the prompt speech
    mel: torch.Tensor  # [F, 80] float32 log-mel of the prompt speech (22050 Hz, hop 256)
    embedding: torch.Tensor  # [192] float32 CAM++ x-vector

    @staticmethod
    def empty(n_mels: int = 80, spk_dim: int = 192) -> "SpeakerPrompt":
        return SpeakerPrompt(torch.zeros(0, dtype=torch.int64), torch.zeros(0, n_mels), torch.zeros(spk_dim))


def _strict_load(module: torch.nn.Module, sd: dict[str, torch.Tensor], name: str) -> None:
    ours = module.state_dict()
    missing = sorted(set(ours) - set(sd))
    unexpected = sorted(set(sd) - set(ours))
    bad = sorted(k for k in set(ours) & set(sd) if tuple(ours[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or bad:
        raise CosyVoiceCheckpointError(
            f"{name} does not match cosyvoice.yaml: missing {missing[:5]} unexpected {unexpected[:5]} "
            f"shape mismatch {[(k, tuple(sd[k].shape), tuple(ours[k].shape)) for k in bad[:5]]}")
    module.load_state_dict(sd, strict=True)


class CosyVoiceModel:
    """Flow + HiFT + CAM++ of one CosyVoice folder."""

    def __init__(self, cfg: CosyVoiceConfig, flow: MaskedDiffWithXvec, hift: HiFTGenerator,
                 campplus: CampPlus | None, flow_graphs: FlowGraphs | None = None,
                 hift_graphs: VocoderGraphs | None = None) -> None:
        self.cfg, self.flow, self.hift, self.campplus = cfg, flow, hift, campplus
        # Streaming windows replay CUDA graphs through these (CUDA only): the flow's, and the vocoder's (HiFTStream)
        self.flow_graphs, self.hift_graphs = flow_graphs, hift_graphs
        # The speech path's GPU work goes to a CUDA stream of its own, of the highest priority: the TTS LM keeps
        # decoding on the default stream while a flow window runs (the server streams both at once), and on one
        # stream their kernels would queue behind each other, the window waiting for every decode step submitted
        # meanwhile. With priority the window's blocks go first and the decode steps fill what is left. None on
        # the CPU (torch.cuda.stream(None) does nothing). A stream of its own for good: torch's pooled streams are
        # shared (kernels.streams). -100: the device's highest priority (the driver clamps it).
        self.stream = own_stream(self.device, priority=-100) if self.device.type == "cuda" else None

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu", flow_dtype: torch.dtype | None = None,
             cuda_graphs: bool = True) -> "CosyVoiceModel":
        """Load DIR/{cosyvoice.yaml, flow.pt, hift.pt, campplus.onnx}; flow in bf16 on CUDA (upstream), fp32 on CPU.
        On CUDA, streaming flow and vocoder windows run as CUDA graphs unless cuda_graphs is False."""
        d = Path(folder)
        if not (d / "cosyvoice.yaml").is_file():
            raise CosyVoiceCheckpointError(f"missing {d / 'cosyvoice.yaml'}")
        cfg = load_cosyvoice_config(d)
        dev = torch.device(device)
        dtype = flow_dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
        logger.info("loading CosyVoice flow/hift from %s", d)
        flow = MaskedDiffWithXvec(cfg.flow)
        _strict_load(flow, load_torch_state(d / "flow.pt", CosyVoiceCheckpointError), "flow.pt")
        hift = HiFTGenerator(cfg.hift)
        hift_state = load_torch_state(d / "hift.pt", CosyVoiceCheckpointError)
        _strict_load(hift, normalize_hift_state_dict(hift_state), "hift.pt")
        campplus = CampPlus(d / "campplus.onnx") if (d / "campplus.onnx").is_file() else None
        flow = flow.to(dev, dtype).eval()
        graphed = dev.type == "cuda" and cuda_graphs
        model = cls(cfg, flow, hift.to(dev).eval(), campplus, FlowGraphs(flow) if graphed else None,
                    VocoderGraphs(dev) if graphed else None)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)  # the weights, copied on the default stream, before the speech stream reads
        return model

    def on_stream(self) -> torch.cuda.StreamContext:
        """`with model.on_stream():` around the speech path's GPU work (see self.stream). One stream for every
        thread of the path: the FlowBatcher and the decoder threads hand device tensors to each other, so their
        order on it is the order the threads submitted them. Inputs come from the host (prompts are CPU tensors)."""
        return torch.cuda.stream(self.stream)

    @property
    def device(self) -> torch.device:
        return self.flow.input_embedding.weight.device

    @property
    def sample_rate(self) -> int:
        return self.cfg.hift.sampling_rate

    def make_prompt(self, wav: np.ndarray, sample_rate: int, tokens: list[int] | np.ndarray) -> SpeakerPrompt:
        """Prompt from a mono float waveform, its flow tokens (LM ids - 65536) and campplus.onnx."""
        import soxr  # resampling happens only when a voice is registered

        if self.campplus is None:
            raise CosyVoiceCheckpointError("campplus.onnx is missing: cannot embed a speaker")
        x = np.asarray(wav, dtype=np.float32)
        if x.ndim > 1:  # multi-channel prompt wavs: average to mono (upstream issue #24)
            x = x.mean(axis=-1 if x.shape[-1] <= 8 else 0)
        wav22 = torch.from_numpy(soxr.resample(x, sample_rate, self.cfg.feat_extractor.sampling_rate))
        wav16 = torch.from_numpy(soxr.resample(x, sample_rate, 16000))
        mel = prompt_mel(wav22, self.cfg.feat_extractor)[0]
        emb = self.campplus.embed(wav16)[0]
        return SpeakerPrompt(torch.as_tensor(np.asarray(tokens), dtype=torch.int64), mel, emb)

    @torch.inference_mode()
    def token2mel(self, tokens: torch.Tensor, prompt: SpeakerPrompt, seed: int = 0) -> torch.Tensor:
        """Offline flow over all tokens [N] -> mel [1, 80, mel_frames(N)] float32."""
        dev, dt = self.device, self.flow.input_embedding.weight.dtype
        with self.on_stream():
            mel = self.flow.inference(tokens.to(dev)[None], prompt.tokens.to(dev)[None],
                                      prompt.mel.to(dev, dt)[None], prompt.embedding.to(dev)[None], seed=seed)
            return mel.float()

    @torch.inference_mode()
    def token2wav(self, tokens: torch.Tensor | list[int], prompt: SpeakerPrompt, seed: int = 0) -> np.ndarray:
        """Offline decode (the reference StreamingDecoder is tested against): float32 audio at 22050 Hz."""
        mel = self.token2mel(torch.as_tensor(tokens, dtype=torch.int64), prompt, seed)
        with self.on_stream():
            return self.hift.inference(mel, seed=seed)[0].cpu().numpy().astype(np.float32)
