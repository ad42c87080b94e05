"""`stepaudio-rt tts` given odd input (a tag TTS-3B does not know, clone prompts of every format a user may have):
what it says, and that it still speaks what it can."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import speech_asset
from tests.step_audio.conftest import fails_in_one_line, run_cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("text", ["(rap)Yo, check it.", "(Happy) Hello there.", "（开心）你好。"])
def test_a_tag_tts_3b_does_not_know_is_told_in_one_line_listing_the_known_ones(tiny_model_dir: Path, tmp_path: Path,
                                                                               text: str) -> None:
    """Upstream matches its tags exactly: "(rap)" takes neither RAP's prompt nor the Music decoder, and was taken
    without a word."""
    out = tmp_path / "x.wav"
    proc = run_cli("tts", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--text", text, "--out", str(out))
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    tag = text[:text.index(")" if text[0] == "(" else "）") + 1]
    assert len(warnings) == 1 and f"--text leads with {tag}, none of the tags TTS-3B" in warnings[0], proc.stderr
    assert "(RAP) (哼唱)" in warnings[0] and "(高兴1)" in warnings[0]
    assert sf.info(str(out)).duration > 0.3  # spoken all the same


def test_a_known_tag_is_taken_without_a_word(tiny_model_dir: Path, tmp_path: Path) -> None:
    proc = run_cli("tts", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--text", "（高兴1）Hello.",
                   "--out", str(tmp_path / "x.wav"))
    assert "warning" not in proc.stderr, proc.stderr


def _beckett(seconds: float) -> np.ndarray:
    """The first seconds of "Ever tried. Ever failed." at 16 kHz."""
    wav, rate = sf.read(speech_asset("beckett.wav"), dtype="float32")
    assert rate == 16000
    return wav[:int(seconds * rate)]


@pytest.mark.parametrize(("name", "channels", "rate", "subtype"), [
    ("stereo.wav", 2, 16000, "PCM_16"), ("24bit.wav", 1, 16000, "PCM_24"), ("voice.flac", 1, 16000, "PCM_16"),
])
def test_a_clone_prompt_in_any_common_format_is_spoken(tiny_model_dir: Path, tmp_path: Path, name: str,
                                                       channels: int, rate: int, subtype: str) -> None:
    voice = _beckett(4.0)[::16000 // rate]
    sf.write(tmp_path / name, np.stack([voice] * channels, axis=1), rate, subtype=subtype)
    out = tmp_path / "x.wav"
    run_cli("tts", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--text", "Hello there.",
            "--prompt-wav", str(tmp_path / name), "--prompt-text", "Ever tried. Ever failed.", "--out", str(out))
    assert sf.info(str(out)).duration > 0.3


def test_a_narrowband_clone_prompt_is_refused_saying_why(tiny_model_dir: Path, tmp_path: Path) -> None:
    """An 8 kHz phone recording holds nothing above 4 kHz of the voice its prompt mel and x-vector read up to 8 kHz;
    it was resampled and cloned without a word, where Step-Audio and CosyVoice refuse a prompt below 16 kHz."""
    wav = tmp_path / "phone.wav"
    sf.write(wav, _beckett(4.0)[::2], 8000, subtype="PCM_16")
    stderr = fails_in_one_line("tts", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--text", "Hi.",
                               "--prompt-wav", str(wav), "--prompt-text", "Ever tried.", "--out",
                               str(tmp_path / "x.wav"))
    assert (f"--prompt-wav {wav}: 4.00 s of audio: speaker 'clone': its prompt wav is sampled at 8000 Hz, so it "
            "holds nothing above 4000 Hz of the voice (its features reach 8000 Hz): a voice prompt needs 16 kHz or "
            "more, as Step-Audio and CosyVoice require") in stderr, stderr
    assert not (tmp_path / "x.wav").exists()


def test_a_stereo_prompt_whose_channels_cancel_out_is_not_called_silent(tiny_model_dir: Path,
                                                                        tmp_path: Path) -> None:
    """One channel the other inverted (a miswired microphone) mixes to nothing, as Step-Audio mixes channels: the
    error called the file "silent", which plays loud."""
    voice = _beckett(4.0)
    wav = tmp_path / "inverted.wav"
    sf.write(wav, np.stack([voice, -voice], axis=1), 16000, subtype="PCM_16")
    stderr = fails_in_one_line("tts", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--text", "Hi.",
                               "--prompt-wav", str(wav), "--prompt-text", "Ever tried.", "--out",
                               str(tmp_path / "x.wav"))
    assert f"--prompt-wav {wav}: its 2 channels cancel out when mixed to mono" in stderr, stderr


def _at_peak(voice: np.ndarray, dbfs: float) -> np.ndarray:
    return voice / np.abs(voice).max() * 10 ** (dbfs / 20)


def test_a_quiet_clone_prompt_is_spoken_a_silent_one_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A real voice peaking at -50 dBFS (a microphone's gain set low) was refused as "silent (no sample above -40
    dBFS)", though upstream's tokenizer peak-normalises a prompt wav (x / max(peak, 0.01) * 0.999) and clones it.
    Digital silence is still refused."""
    quiet, silent, out = tmp_path / "quiet.wav", tmp_path / "silent.wav", tmp_path / "x.wav"
    sf.write(quiet, _at_peak(_beckett(4.0), -50.0), 16000, subtype="PCM_16")
    sf.write(silent, np.zeros(4 * 16000, np.float32), 16000, subtype="PCM_16")
    args = ("tts", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--text", "Hello there.",
            "--prompt-text", "Ever tried. Ever failed.", "--out", str(out))
    run_cli(*args, "--prompt-wav", str(quiet))
    assert sf.info(str(out)).duration > 0.3
    assert (f"--prompt-wav {silent}: silent (4.00 s, no sample varies by a 16-bit step): there is no voice in it"
            in fails_in_one_line(*args, "--prompt-wav", str(silent)))


def test_a_quiet_speaker_prompt_in_the_speakers_folder_is_registered(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Tingting_prompt.wav at -50 dBFS: the folder check refused it as silent before any model loaded."""
    from tests.step_audio.conftest import layout_without

    rel = "Step-Audio-TTS-3B/speakers/Tingting_prompt.wav"
    folder = layout_without(tiny_model_dir, tmp_path / "model", rel)
    sf.write(folder / rel, _at_peak(_beckett(4.0), -50.0), 16000, subtype="PCM_16")
    out = tmp_path / "x.wav"
    run_cli("tts", "--model-path", str(folder), "--profile", "tiny", "--text", "Hello there.", "--speaker",
            "Tingting", "--out", str(out))
    assert sf.info(str(out)).duration > 0.3
