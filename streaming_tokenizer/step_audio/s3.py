"""vq06 encoder: the CosyVoice S3 tokenizer v1 (25 Hz), torch module, ONNX export and onnxruntime runner.

Architecture (xingchensong/S3Tokenizer s3tokenizer/model.py, name speech_tokenizer_v1_25hz): Whisper-style
encoder, conv1 (128 -> 1280, k3, stride 2, pad 1) + GELU, conv2 (k3, stride 2, pad 1) + GELU (4x: 100 -> 25 Hz),
sinusoidal positional embedding [1500, 1280], 6 pre-LN blocks (20 heads; key without bias; q and k each scaled by
head_dim^-0.25; padded keys get a -1e10 bias; GELU MLP 4x), no final LayerNorm; then the VQ quantiser: L2
normalise, nearest of the 4096 codebook rows (Euclidean). Padding is masked before each conv.

ONNX I/O as upstream's speech_tokenizer_v1.onnx (names from CosyVoice runtimes that bind them; Step-Audio
and CosyVoice bind by position): inputs feats float32 [1, 128, T], feats_length int32 [1]; output indices
int64 [1, 1, T']. Upstream runs it with ORT_ENABLE_ALL and intra_op_num_threads 1.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model_files.native import native_name

from .config import S3Config, TokenizerConfigError

ONNX_INPUTS = ("feats", "feats_length")
ONNX_OUTPUT = "indices"


def token_count(n_frames: int, conv1_stride: int = 2) -> int:
    """Tokens for n mel frames: both convs are k3/pad1, so T -> (T - 1) // stride + 1."""
    if n_frames <= 0:
        return 0
    return ((n_frames - 1) // conv1_stride + 1 - 1) // 2 + 1


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


class Attention(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.query, self.key = nn.Linear(d, d), nn.Linear(d, d, bias=False)
        self.value, self.out = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # x: [B, T, d]; bias: [B, 1, 1, T] (0 for real frames, -1e10 for padding)
        b, t, d = x.shape
        scale = (d // self.n_head) ** -0.25
        q = self.query(x).view(b, t, self.n_head, -1).transpose(1, 2) * scale
        k = self.key(x).view(b, t, self.n_head, -1).permute(0, 2, 3, 1) * scale
        v = self.value(x).view(b, t, self.n_head, -1).transpose(1, 2)
        w = torch.softmax(q @ k + bias, dim=-1)
        return self.out((w @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.attn, self.attn_ln = Attention(d, n_head), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.mlp_ln = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x), bias)
        return x + self.mlp(self.mlp_ln(x))


class AudioEncoder(nn.Module):
    positional_embedding: torch.Tensor  # [n_ctx, n_state] buffer: declared, as nn.Module's attributes are untyped

    def __init__(self, cfg: S3Config) -> None:
        super().__init__()
        self.stride = cfg.conv1_stride
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.n_state, 3, stride=cfg.conv1_stride, padding=1)
        self.conv2 = nn.Conv1d(cfg.n_state, cfg.n_state, 3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(cfg.n_ctx, cfg.n_state))
        self.blocks = nn.ModuleList([Block(cfg.n_state, cfg.n_head) for _ in range(cfg.n_layer)])

    def forward(self, x: torch.Tensor, x_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: [B, n_mels, T] f32; x_len: [B] int
        def mask(n: torch.Tensor, t: int) -> torch.Tensor:
            return (torch.arange(t, device=n.device)[None, :] < n[:, None]).to(x.dtype)  # [B, T]

        x = nn.functional.gelu(self.conv1(x * mask(x_len, x.shape[2])[:, None]))
        x_len = (x_len - 1) // self.stride + 1
        x = nn.functional.gelu(self.conv2(x * mask(x_len, x.shape[2])[:, None]))
        x_len = (x_len - 1) // 2 + 1
        m = mask(x_len, x.shape[2])
        x = x.transpose(1, 2) + self.positional_embedding[: x.shape[2]]
        bias = ((1.0 - m) * -1.0e10)[:, None, None, :]
        for block in self.blocks:
            x = block(x, bias)
        return x, x_len


class Codebook(nn.Module):
    embed: torch.Tensor  # [size, dim] buffer: declared, as nn.Module's attributes are untyped

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        self.register_buffer("embed", torch.zeros(size, dim))


class Quantizer(nn.Module):
    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        self._codebook = Codebook(dim, size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # h: [B, T, d] -> codes [B, T] int64 (nearest row of the codebook after L2 normalisation)
        h = nn.functional.normalize(h, p=2.0, dim=-1)
        e = self._codebook.embed
        dist = h.square().sum(-1, keepdim=True) - 2 * h @ e.T + e.square().sum(-1)[None, None]
        return dist.argmin(dim=-1)


class S3TokenizerV1(nn.Module):
    """Keys as S3Tokenizer's torch port: encoder.*, quantizer._codebook.embed."""

    def __init__(self, cfg: S3Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = AudioEncoder(cfg)
        self.quantizer = Quantizer(cfg.n_state, cfg.codebook_size)

    def forward(self, feats: torch.Tensor, feats_length: torch.Tensor) -> torch.Tensor:
        """feats [B, 128, T] f32, feats_length [B] int32 -> indices [B, 1, T'] int64 (the ONNX signature)."""
        h, _ = self.encoder(feats, feats_length.long())
        return self.quantizer(h)[:, None, :]

    @torch.inference_mode()
    def tokens(self, feats: np.ndarray) -> np.ndarray:
        """One unpadded window: feats [128, T] -> [T'] int64."""
        x = torch.from_numpy(feats)[None]
        return self(x, torch.tensor([feats.shape[1]], dtype=torch.int32))[0, 0].numpy()


def export_onnx(model: S3TokenizerV1, path: Path) -> None:
    """Writes speech_tokenizer_v1.onnx with the upstream input/output names, dtypes and dynamic time axis."""
    model = model.eval()
    t = 64
    args = (torch.randn(1, model.cfg.n_mels, t), torch.tensor([t], dtype=torch.int32))
    # torch hands a str name to C++, which cannot take a non-ASCII one in the C locale. The TorchScript exporter
    # writes to a BytesIO too (its _export_file), though torch.onnx.export's hint names paths only.
    onnx = io.BytesIO()
    torch.onnx.export(
        model, args, onnx, dynamo=False, opset_version=17, do_constant_folding=False,  # type: ignore[arg-type]
        input_names=list(ONNX_INPUTS), output_names=[ONNX_OUTPUT],
        dynamic_axes={"feats": {2: "T"}, ONNX_OUTPUT: {2: "T_token"}},
    )  # fmt: skip
    path.write_bytes(onnx.getvalue())


class OnnxS3:
    """Runs speech_tokenizer_v1.onnx the way upstream does (bind inputs by position)."""

    def __init__(self, path: Path, intra_op_threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = intra_op_threads
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        try:
            with native_name(path) as name:
                self.session = ort.InferenceSession(name, sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own non-exported exception types
            raise TokenizerConfigError(f"cannot load {path}: {exc}") from exc
        ins = self.session.get_inputs()
        if len(ins) != 2:
            raise TokenizerConfigError(f"{path}: expected 2 inputs (feats, feats_length), got {len(ins)}")
        self.names = (ins[0].name, ins[1].name)
        self.n_mels = int(ins[0].shape[1]) if isinstance(ins[0].shape[1], int) else 128

    def tokens(self, feats: np.ndarray) -> np.ndarray:
        """feats [128, T] float32 -> [T'] int64."""
        out = self.session.run(
            None, {self.names[0]: feats[None].astype(np.float32), self.names[1]: np.array([feats.shape[1]], np.int32)}
        )[0]
        return np.asarray(out).reshape(-1).astype(np.int64)


def torch_from_onnx(path: Path, head_dim: int = 64) -> S3TokenizerV1:
    """Builds the torch path from the ONNX file's initializers (our export keeps parameter names).

    The head count cannot be read from weights; upstream v1 has 1280 / 20 = 64 per head, so n_head = n_state / 64.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    if "encoder.conv1.weight" not in weights:
        raise TokenizerConfigError(f"{path}: no encoder.conv1.weight initializer (not written by our exporter)")
    n_state, n_mels, _ = weights["encoder.conv1.weight"].shape
    n_layer = len({k.split(".")[2] for k in weights if k.startswith("encoder.blocks.")})
    cfg = S3Config(
        n_mels=n_mels, n_state=n_state, n_head=max(1, n_state // head_dim), n_layer=n_layer,
        codebook_size=weights["quantizer._codebook.embed"].shape[0],
        n_ctx=weights["encoder.positional_embedding"].shape[0],
    )  # fmt: skip
    model = S3TokenizerV1(cfg)
    missing = [k for k in model.state_dict() if k not in weights]
    if missing:
        raise TokenizerConfigError(f"{path}: missing initializers, e.g. {missing[0]}")
    model.load_state_dict({k: weights[k] for k in model.state_dict()})
    return model.eval()
