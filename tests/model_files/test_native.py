"""model_files.native.native_name: a model file whose name is no UTF-8 opens in the native libraries."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from model_files.native import native_name
from vad.silero import SileroModel, SileroVad, default_model_path


def test_a_model_folder_named_in_latin_1_loads(tmp_path: Path, beckett: np.ndarray) -> None:
    """A folder named in latin-1 bytes ("modèles" from an old system), in a UTF-8 locale too: Python holds the byte
    0xE8 as a surrogate escape, and onnxruntime's binding refused the name with a TypeError."""
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/mod\xe8les"))
    folder.mkdir()
    shutil.copy(default_model_path(), folder / "silero_vad.onnx")
    probs = SileroVad(SileroModel.load(folder / "silero_vad.onnx")).process(beckett[:16000])
    assert max(probs) > 0.9  # "Ever tried" is speech


def test_a_name_that_is_its_own_utf8_is_passed_as_it_is(tmp_path: Path) -> None:
    """Where the name would do, libraries get it (their errors and logs then name the user's file)."""
    with native_name(tmp_path / "ok.onnx") as name:  # not opened: it need not exist
        assert name == str(tmp_path / "ok.onnx")
    latin = Path(os.fsdecode(os.fsencode(tmp_path) + b"/\xe9"))
    latin.write_bytes(b"x")
    with native_name(latin) as name:
        assert name.isascii() and Path(name).read_bytes() == b"x"
