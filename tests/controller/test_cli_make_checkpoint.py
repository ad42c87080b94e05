"""`stepaudio-rt make-checkpoint` as a new user runs it: it says where it wrote, that the weights are random, and the
command that serves the folder."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ServerProcess


def make_checkpoint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controller.cli", "make-checkpoint", *args], capture_output=True,
                          text=True, timeout=300, check=True)


@pytest.mark.slow
def test_make_checkpoint_ends_with_the_serve_command_that_works(tmp_path: Path) -> None:
    """It ended after its last "writing ..." log line, with no word of where the folder is or how to use it. Now it
    names the folder and the random weights, and its last line is a serve command that starts a server as given
    (the path quoted for the shell: a space and non-ASCII in it)."""
    out = tmp_path / "模型 tiny"
    lines = make_checkpoint("--profile", "tiny", str(out)).stdout.splitlines()
    assert lines[0] == (f"wrote Step-Audio-Tokenizer, Step-Audio-Chat, Step-Audio-TTS-3B to {out}: random weights "
                        "(tiny), for tests; replies are not meaningful")
    head, _, command = lines[-1].partition(": ")
    assert head == "serve it"
    argv = shlex.split(command)
    assert argv[:2] == ["stepaudio-rt", "serve"] and argv[2:] == ["--profile", "tiny", "--model-path", str(out)]
    server = ServerProcess(*argv[2:], "--threads", "1")
    server.stop()


def test_make_checkpoint_of_one_part_says_what_is_missing_then_the_command(tmp_path: Path) -> None:
    """A part written alone: `tts` reads the tokenizer's folder too, so its command comes once both are there."""
    lines = make_checkpoint("--profile", "tiny", "--what", "tts", str(tmp_path)).stdout.splitlines()
    assert lines == [f"wrote Step-Audio-TTS-3B to {tmp_path}: random weights (tiny), for tests; replies are not "
                     "meaningful",
                     "still missing for serve: Step-Audio-Tokenizer, Step-Audio-Chat (make-checkpoint --what all "
                     "writes every folder)"]
    lines = make_checkpoint("--profile", "tiny", "--what", "tokenizer", str(tmp_path)).stdout.splitlines()
    assert lines[-1] == (f"speak with it: stepaudio-rt tts --profile tiny --model-path {tmp_path} --text 'Hello.' "
                         "--out hello.wav")
    command = shlex.split(lines[-1].partition(": ")[2])
    subprocess.run([sys.executable, "-m", "controller.cli", *command[1:-1], str(tmp_path / "hello.wav")],
                   check=True, capture_output=True, timeout=300)
    assert (tmp_path / "hello.wav").stat().st_size > 44


def test_make_checkpoint_of_all_beside_a_real_part_writes_only_the_missing_ones(tmp_path: Path) -> None:
    """A folder holding a real Step-Audio-Tokenizer/ (random Chat and TTS wanted beside it): `--what all` asked for
    --overwrite, which wrote random weights over the tokenizer too, and there was no other way. The parts already
    there are kept, and said so; --overwrite still writes all three."""
    real = tmp_path / "Step-Audio-Tokenizer" / "linguistic_tokenizer.npy"
    real.parent.mkdir()
    real.write_bytes(b"the downloaded tokenizer")
    lines = make_checkpoint("--profile", "tiny", str(tmp_path)).stdout.splitlines()
    assert lines == [f"wrote Step-Audio-Chat, Step-Audio-TTS-3B to {tmp_path}: random weights (tiny), for tests; "
                     "replies are not meaningful",
                     "kept the Step-Audio-Tokenizer already there (--overwrite writes random weights over it too)",
                     f"serve it: stepaudio-rt serve --profile tiny --model-path {tmp_path}"]
    assert real.read_bytes() == b"the downloaded tokenizer"
    assert (tmp_path / "Step-Audio-Chat" / "config.json").is_file()
    assert (tmp_path / "Step-Audio-TTS-3B" / "config.json").is_file()
    lines = make_checkpoint("--profile", "tiny", "--overwrite", str(tmp_path)).stdout.splitlines()
    assert lines[0].startswith("wrote Step-Audio-Tokenizer, Step-Audio-Chat, Step-Audio-TTS-3B to ")
    assert real.read_bytes() != b"the downloaded tokenizer"


def test_make_checkpoint_of_all_beside_a_part_of_the_other_size_is_refused(tmp_path: Path) -> None:
    """A full-size Step-Audio-Chat/ kept, tiny Tokenizer and TTS written beside it: the summary said "serve it:
    stepaudio-rt serve --profile tiny", and serve then refused the Chat LM. Nothing is written now."""
    make_checkpoint("--profile", "full-random", "--what", "chat", str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "controller.cli", "make-checkpoint", "--profile", "tiny",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.startswith(f"stepaudio-rt make-checkpoint: error: {tmp_path}/Step-Audio-Chat, already there, "
                                  "is not of --profile tiny's size (hidden_size "), proc.stderr
    assert proc.stderr.endswith("give the --profile of its size, or --overwrite to write over it too\n"), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Step-Audio-Chat"]


@pytest.mark.parametrize("part", ["Step-Audio-TTS-3B", "Step-Audio-Chat", "Step-Audio-Tokenizer"])
def test_a_part_of_the_layout_given_as_the_folder_is_refused_naming_the_model_folder(tmp_path: Path,
                                                                                     part: str) -> None:
    """`make-checkpoint --what tts DIR/Step-Audio-TTS-3B` wrote DIR/Step-Audio-TTS-3B/Step-Audio-TTS-3B, where no
    --model-path finds it, and said "wrote Step-Audio-TTS-3B"; it now writes nothing and names DIR."""
    out = tmp_path / part
    proc = subprocess.run([sys.executable, "-m", "controller.cli", "make-checkpoint", "--profile", "tiny", "--what",
                           "all", str(out)], capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (f"stepaudio-rt make-checkpoint: error: {out} is a model folder's {part}/: make-checkpoint "
                           f"writes the Step-Audio folders inside the one it is given, which --model-path then "
                           f"names: give {tmp_path}\n")
    assert not out.exists()
