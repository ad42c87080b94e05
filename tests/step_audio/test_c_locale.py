"""A Step-Audio folder written and its voices read in the C locale without UTF-8 mode (some distros' default)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# The voices of the folder given as argv[1], their samples each, read the way the server's checks read them.
READ_VOICES = """
import sys
from pathlib import Path
from speech_decoder.step_tts import find_speakers_dir, prompt_wav_name, read_prompt_wav, read_speakers_info
folder = find_speakers_dir(Path(sys.argv[1]) / "Step-Audio-TTS-3B")
print(sorted(len(read_prompt_wav(folder / prompt_wav_name(name))[0]) for name in read_speakers_info(folder)))
"""


def test_make_checkpoint_into_a_non_ascii_folder_and_its_voices_read_back(tmp_path: Path) -> None:
    """PYTHONUTF8=0 LC_ALL=C: the file system encoding is ASCII. make-checkpoint crashed with a traceback on
    torch.onnx.export's and soundfile's str names ('é' held as surrogate escapes) and on upstream's "Tingting哼唱"
    voice, which no ASCII name can spell; the server's checks called that voice missing from a whole folder."""
    out = tmp_path / "modèles"
    env = {**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C", "LANG": "C"}
    env.pop("PYTHONIOENCODING", None)
    make = subprocess.run([sys.executable, "-m", "controller.cli", "make-checkpoint", "--profile", "tiny", str(out)],
                          env=env, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert make.returncode == 0 and "Traceback" not in make.stderr, make.stderr[-3000:]
    assert (out / "Step-Audio-TTS-3B" / "speakers" / "Tingting哼唱_prompt.wav").is_file()  # UTF-8, as upstream's
    assert (out / "Step-Audio-Tokenizer" / "speech_tokenizer_v1.onnx").stat().st_size > 0
    read = subprocess.run([sys.executable, "-c", READ_VOICES, str(out)], env=env, capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert (read.returncode, read.stdout, read.stderr) == (0, "[48000, 48000, 48000]\n", "")
