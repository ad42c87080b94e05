"""A Step-Audio folder written and its voices read in the C locale without UTF-8 mode (some distros' default)."""

from __future__ import annotations

import os
import shlex
import shutil
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
# The embedded profile's models opened from the folder argv[1] (a non-ASCII cache), then used on argv[2], a wav.
EMBEDDED_MODELS = """
import os
import sys
from pathlib import Path
import numpy as np, soundfile as sf
from lm_engine.backends.llamacpp import LlamaCppBackend
from streaming_tokenizer.whisper_asr import WhisperAsr
from vad.silero import SileroModel, SileroVad
cache, wav = Path(sys.argv[1]), sf.read(sys.argv[2], dtype="float32")[0]
print(max(SileroVad(SileroModel.load(cache / "silero_vad.onnx")).process(wav)) > 0.9)
print(WhisperAsr.load(language="fr", cache_dir=cache).transcribe(wav[:int(4.2 * 16000)], "en").lower())
chat = LlamaCppBackend.load(cache / "chat.gguf", n_ctx=512)
print(chat.count_tokens("Ever tried.") > 0, flush=True)
# Not left to xllamacpp's destructor: once in ~16 runs on a loaded 2-core box it hung for good joining its server
# thread (py-spy: xllamacpp::Server::~Server -> std::thread::join, the HTTP thread in accept), and this test is about
# the loads.
os._exit(0)
"""


def c_locale() -> dict[str, str]:
    """PYTHONUTF8=0 LC_ALL=C: the file system encoding is ASCII, other bytes of a name become surrogate escapes."""
    env = {**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C", "LANG": "C"}
    env.pop("PYTHONIOENCODING", None)
    return env


def run_in_c_locale(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=c_locale(), capture_output=True, text=True, cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """make-checkpoint's tiny folder written into /…/modèles/ in the C locale, and the run that wrote it."""
    out = tmp_path_factory.mktemp("c_locale") / "modèles"
    return out, run_in_c_locale([sys.executable, "-m", "controller.cli", "make-checkpoint", "--profile", "tiny",
                                 str(out)], 300)


def test_make_checkpoint_into_a_non_ascii_folder_and_its_voices_read_back(
        made: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """PYTHONUTF8=0 LC_ALL=C: the file system encoding is ASCII. make-checkpoint crashed with a traceback on
    torch.onnx.export's and soundfile's str names ('é' held as surrogate escapes) and on upstream's "Tingting哼唱"
    voice, which no ASCII name can spell; the server's checks called that voice missing from a whole folder."""
    out, make = made
    assert make.returncode == 0 and "Traceback" not in make.stderr, make.stderr[-3000:]
    serve = f"serve it: stepaudio-rt serve --profile tiny --model-path {shlex.quote(str(out))}"
    assert make.stdout.splitlines()[-1] == serve  # its closing line, the name's bytes as they are
    assert (out / "Step-Audio-TTS-3B" / "speakers" / "Tingting哼唱_prompt.wav").is_file()  # UTF-8, as upstream's
    assert (out / "Step-Audio-Tokenizer" / "speech_tokenizer_v1.onnx").stat().st_size > 0
    read = run_in_c_locale([sys.executable, "-c", READ_VOICES, str(out)], 120)
    assert (read.returncode, read.stdout, read.stderr) == (0, "[48000, 48000, 48000]\n", "")


def test_log_and_error_lines_show_a_non_ascii_path_as_written(
        made: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    """stderr's ASCII backslashreplace showed the folder's name as "mod\\udcc3\\udca8les" in the log ("writing
    ...") but an error line's text as "\\u5531": both now print as the UTF-8 the terminal gets from the name's own
    bytes, as stdout does."""
    out, make = made
    assert f"INFO controller.checkpoints: writing {out}/Step-Audio-Chat (with weights)\n" in make.stderr
    missing = tmp_path / "模型"
    refused = run_in_c_locale([sys.executable, "-m", "controller.cli", "tts", "--profile", "tiny", "--model-path",
                               str(missing), "--text", "你好", "--out", str(tmp_path / "x.wav")], 120)
    assert refused.returncode == 2 and f"{missing} " in refused.stderr and "\\u" not in refused.stderr, \
        refused.stderr


def test_tts_speaks_from_a_non_ascii_model_folder(made: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """The folder make-checkpoint wrote, loaded in the same locale: sentencepiece's tokenizer.model and
    onnxruntime's campplus.onnx and speech_tokenizer_v1.onnx took the surrogate-escaped str name, which their C++
    bindings refused (a TypeError traceback before any model ran)."""
    out, _ = made
    wav = out.parent / "out.wav"
    tts = run_in_c_locale([sys.executable, "-m", "controller.cli", "tts", "--profile", "tiny", "--model-path",
                           str(out), "--text", "Hello there.", "--out", str(wav)], 300)
    assert (tts.returncode, "Traceback" in tts.stderr) == (0, False), tts.stderr[-3000:]
    assert tts.stderr.startswith(f"wrote {wav}: ") and wav.stat().st_size > 44


def test_the_embedded_models_load_from_a_non_ascii_cache(tmp_path: Path, beckett_wav: Path) -> None:
    """A cache under a non-ASCII HOME or STEPAUDIO_RT_CACHE: Silero (onnxruntime), Whisper base (faster-whisper
    and CTranslate2, assembled there) and the chat GGUF (llama.cpp) were given names their bindings refused."""
    from lm_engine.assets import embedded_gguf_path
    from vad.silero import default_model_path

    cache = tmp_path / "缓存"
    cache.mkdir()
    (cache / "chat.gguf").symlink_to(embedded_gguf_path())  # opened by this name, not the 491 MB of it
    shutil.copy(default_model_path(), cache / "silero_vad.onnx")
    run = run_in_c_locale([sys.executable, "-c", EMBEDDED_MODELS, str(cache), str(beckett_wav)], 600)
    assert run.returncode == 0, run.stderr[-3000:]
    vad, heard, counted = run.stdout.splitlines()
    assert (vad, counted) == ("True", "True") and "ever tried" in heard


def test_tts_speaks_upstreams_humming_voice_named_on_the_command_line(
        made: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """--speaker Tingting哼唱 typed in the C locale arrives as surrogate escapes: the voice's NAME_prompt.wav name
    could not be spelled (a UnicodeEncodeError traceback) and no speakers_info.json name could match it."""
    out, _ = made
    wav = out.parent / "humming.wav"
    tts = run_in_c_locale([sys.executable, "-m", "controller.cli", "tts", "--profile", "tiny", "--model-path",
                           str(out), "--speaker", "Tingting哼唱", "--text", "(哼唱)Hello there.", "--out", str(wav)],
                          300)
    assert (tts.returncode, "Traceback" in tts.stderr) == (0, False), tts.stderr[-3000:]
    assert tts.stderr.startswith(f"wrote {wav}: ") and wav.stat().st_size > 44
    unknown = run_in_c_locale([sys.executable, "-m", "controller.cli", "tts", "--profile", "tiny", "--model-path",
                               str(out), "--speaker", "Tingting唱", "--text", "Hello.", "--out", str(wav)], 300)
    assert unknown.returncode == 2 and "unknown speaker 'Tingting唱'; known: Tingting, TingtingRAP, Tingting哼唱" \
                                      in unknown.stderr, unknown.stderr[-3000:]
