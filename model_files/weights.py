"""Reading weights files (torch .pt state dicts) with errors that name the file and say what is wrong with it.

torch's own messages name no file, and for a file that is not a checkpoint at all they advise weights_only=False;
a file that unpickles to something other than a state dict failed later, in the caller, as an AttributeError.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch


def unreadable_message(path: Path, exc: Exception) -> str:
    """The one-line message for a weights file its reader could not parse (its size hints at a cut download)."""
    return f"cannot read {path} ({type(exc).__name__}): a download cut short? Its size is {path.stat().st_size:,} bytes"


def load_torch_state(path: Path, error: type[Exception]) -> dict[str, torch.Tensor]:
    """torch.load a state dict on the CPU, weights only, raising `error` with a message that names `path`.

    A checkpoint that nests its weights under "state_dict" or "model" (FunASR, training checkpoints) is unwrapped.

    Raises:
        error: `path` is missing, unreadable, or holds something other than a dict of named tensors.
    """
    if not path.is_file():
        raise error(f"missing {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as exc:
        raise error(unreadable_message(path, exc)) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict", state.get("model")), dict):
        state = state.get("state_dict", state.get("model"))
    if not (isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in state.items())):
        raise error(f"{path} holds a {type(state).__name__} that is not a state dict (names -> tensors): "
                    "a file saved from something else?")
    return state
