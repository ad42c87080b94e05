"""`stepaudio-rt tts` and `stepaudio-rt chat` on the tiny folder write wavs of plausible length."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lm_engine import Step1Tokenizer
from tests.conftest import speech_asset
from tests.llama_server import LlamaServer
from tests.step_audio.conftest import fails_in_one_line, layout_without, run_cli, without_chat_weights

pytestmark = pytest.mark.slow

PARAFORMER = "dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online"
MAX_TINY_SECONDS = 75 / (1000 / 24) + 0.3  # 75 audio tokens per sentence at 41.67 tokens/s


def _check_wav(path: Path, max_seconds: float) -> float:
    audio, rate = sf.read(path)
    assert rate == 22050
    seconds = len(audio) / rate
    assert 0.3 <= seconds <= max_seconds, seconds
    assert np.sqrt(np.mean(np.square(audio))) > 1e-3
    return seconds


def test_tts_default_speaker_and_clone(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tts.wav"
    run_cli("tts", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--text", "Hello there, friend.",
            "--out", str(out))
    _check_wav(out, MAX_TINY_SECONDS)
    clone = tmp_path / "clone.wav"
    run_cli("tts", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--text", "(RAP) yo, check it.",
            "--clone-wav", str(speech_asset("beckett.wav")), "--clone-text", "Ever tried. Ever failed.",
            "--out", str(clone))
    _check_wav(clone, MAX_TINY_SECONDS)


def test_tts_speaks_every_sentence_of_a_long_text(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Upstream reads a text in one generation; TTS-3B's audio-token budget (and context) then cut a long text short,
    silently. Each sentence is spoken in turn: three sentences give three sentences' audio; a text without any stop
    (3000 words were past the tiny TTS-3B's 4096-token context, an error) is spoken in pieces of at most 200
    characters (speech_decoder.sentences), here three."""
    out = tmp_path / "three.wav"
    run_cli("tts", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--out", str(out),
            "--text", "(RAP)One two three. Four five six! Seven eight nine?")
    assert _check_wav(out, 3 * MAX_TINY_SECONDS) > 2 * MAX_TINY_SECONDS
    no_stop = tmp_path / "no-stop.wav"
    run_cli("tts", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--out", str(no_stop),
            "--text", " ".join(f"word{i}" for i in range(70)))  # 479 characters
    assert _check_wav(no_stop, 3 * MAX_TINY_SECONDS) > 2 * MAX_TINY_SECONDS


@pytest.mark.parametrize(("broken", "said"), [
    # the Chat LM's weights there: told from the safetensors headers, before any model loads
    ("Step-Audio-TTS-3B/model-00001.safetensors", "Step-Audio-TTS-3B/config.json: checkpoint tensor "
                                                  "'model.embed_tokens.weight' is [6144, 192], but config.json makes "
                                                  "it [6144, 96]"),
    ("Step-Audio-TTS-3B/CosyVoice-300M-25Hz/flow.pt",
     "lacks Step-Audio-TTS-3B/CosyVoice-300M-25Hz/flow.pt (not a torch file but a zip archive holding readme.txt)"),
])  # a broken speaker wav, shard or config.json: named itself (test_a_damaged_file_is_named)
def test_a_corrupt_or_mixed_up_file_is_reported_with_its_folder_in_one_line(tiny_model_dir: Path, tmp_path: Path,
                                                                           broken: str, said: str) -> None:
    model = layout_without(tiny_model_dir, tmp_path / "model", broken)
    if broken.endswith(".safetensors"):
        (model / broken).symlink_to(tiny_model_dir / "Step-Audio-Chat/model-00001.safetensors")
    else:  # a whole zip archive, as a torch file is, but of something else: it holds no pickle record
        import zipfile

        with zipfile.ZipFile(model / broken, "w") as archive:
            archive.writestr("readme.txt", "not a model")
    message = fails_in_one_line("tts", "--model-path", str(model), "--profile", "tiny", "--text", "Hi.",
                                 "--out", str(tmp_path / "x.wav"))
    assert said.format(model=model) in message  # then the loader's error, e.g. "RuntimeError: The size..."


@pytest.mark.parametrize(("content", "said"), [("{}\n", "names no speaker"),
                                              ('{"Tingting":\n', "is not valid JSON: ")])
def test_a_speakers_file_naming_no_speaker_is_refused_in_one_line(tiny_model_dir: Path, tmp_path: Path,
                                                                  content: str, said: str) -> None:
    """An empty one, and a broken one (whose JSON error named no file)."""
    folder = layout_without(tiny_model_dir, tmp_path / "model", "Step-Audio-TTS-3B/speakers/speakers_info.json")
    (folder / "Step-Audio-TTS-3B/speakers/speakers_info.json").write_text(content)
    message = fails_in_one_line("tts", "--model-path", str(folder), "--profile", "tiny", "--text", "Hi.",
                                 "--out", str(tmp_path / "x.wav"))
    assert f"Step-Audio-TTS-3B/speakers/speakers_info.json {said}" in message


@pytest.mark.parametrize("transcript", ['""', '" "', "null", '"..."', '"！？。"'])
def test_a_speaker_without_its_transcript_is_refused_naming_it(tiny_model_dir: Path, tmp_path: Path,
                                                               transcript: str) -> None:
    """An empty transcript, or one of punctuation alone, was taken (a voice prompt whose words the model is not
    told); null was refused without saying which speaker."""
    folder = layout_without(tiny_model_dir, tmp_path / "model", "Step-Audio-TTS-3B/speakers/speakers_info.json")
    (folder / "Step-Audio-TTS-3B/speakers/speakers_info.json").write_text(
        f'{{"Tingting": {transcript}, "TingtingRAP": "Yo.", "Tingting哼唱": "La la."}}')
    message = fails_in_one_line("tts", "--model-path", str(folder), "--profile", "tiny", "--text", "Hi.",
                                 "--out", str(tmp_path / "x.wav"))
    assert "Step-Audio-TTS-3B/speakers/speakers_info.json gives no transcript for 'Tingting'" in message


def test_a_speaker_wav_missing_from_the_speakers_file_is_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Bob_prompt.wav copied into speakers/ without its line in speakers_info.json: "unknown speaker 'Bob'" alone."""
    folder = layout_without(tiny_model_dir, tmp_path / "model")
    speakers = folder / "Step-Audio-TTS-3B/speakers"
    (speakers / "Bob_prompt.wav").symlink_to(tiny_model_dir / "Step-Audio-TTS-3B/speakers/Tingting_prompt.wav")
    message = fails_in_one_line("tts", "--model-path", str(folder), "--profile", "tiny", "--text", "Hi.",
                                 "--speaker", "Bob", "--out", str(tmp_path / "x.wav"))
    assert (f"unknown speaker 'Bob'; known: Tingting, TingtingRAP, Tingting哼唱 ({speakers}/Bob_prompt.wav is there, "
            "but speakers_info.json gives no transcript for it)") in message


def test_a_speaker_name_that_is_a_path_is_refused_naming_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A name is joined into NAME_prompt.wav as it is (as upstream's): "../Outside" in speakers_info.json was a voice
    read from the TTS-3B folder, outside speakers/, and "Sub/Deep" one from below it; both now stop the start."""
    folder = layout_without(tiny_model_dir, tmp_path / "model", "Step-Audio-TTS-3B/speakers/speakers_info.json")
    tts, speakers = folder / "Step-Audio-TTS-3B", folder / "Step-Audio-TTS-3B/speakers"
    wav = tiny_model_dir / "Step-Audio-TTS-3B/speakers/Tingting_prompt.wav"
    (tts / "Outside_prompt.wav").symlink_to(wav)
    (speakers / "Sub").mkdir()
    (speakers / "Sub/Deep_prompt.wav").symlink_to(wav)
    said = "Hello, this is a voice."
    (speakers / "speakers_info.json").write_text(json.dumps({"Tingting": said, "../Outside": said, "Sub/Deep": said}))
    message = fails_in_one_line("tts", "--model-path", str(folder), "--profile", "tiny", "--text", "Hi.",
                                 "--speaker", "../Outside", "--out", str(tmp_path / "x.wav"))
    assert message.endswith(f"{speakers}/speakers_info.json names '../Outside', 'Sub/Deep': a speaker's name spells "
                            f"its NAME_prompt.wav in {speakers}, so it cannot hold '/'\n")


def test_a_speaker_asked_for_by_a_path_is_unknown(tiny_model_dir: Path, tmp_path: Path) -> None:
    """--speaker ../Outside, where TTS-3B/Outside_prompt.wav exists: the hint for a wav without its transcript
    pointed at that file outside the speakers folder, as if adding a line would make it a voice."""
    folder = layout_without(tiny_model_dir, tmp_path / "model")
    (folder / "Step-Audio-TTS-3B/Outside_prompt.wav").symlink_to(
        tiny_model_dir / "Step-Audio-TTS-3B/speakers/Tingting_prompt.wav")
    message = fails_in_one_line("tts", "--model-path", str(folder), "--profile", "tiny", "--text", "Hi.",
                                 "--speaker", "../Outside", "--out", str(tmp_path / "x.wav"))
    assert message.endswith("unknown speaker '../Outside'; known: Tingting, TingtingRAP, Tingting哼唱\n")


def test_upstream_option_names_clone_into_an_output_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    """As tts_inference.py's clone mode: the prompt wav and its prompt_text; --output-path names a folder, which
    gets upstream's file name."""
    folder = tmp_path / "outputs"
    run_cli("tts", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--text", "Hello there, friend.",
            "--prompt-wav", str(speech_asset("beckett.wav")), "--prompt-text", "Ever tried. Ever failed.",
            "--output-path", str(folder), "--synthesis-type", "clone")
    assert [p.name for p in folder.iterdir()] == ["output_clone.wav"]
    _check_wav(folder / "output_clone.wav", MAX_TINY_SECONDS)


@pytest.mark.parametrize(("out", "message"), [
    ("reply.mp3", "reply.mp3: the tools write WAV files; name a .wav file or a folder"),
    ("/proc/reply.wav", "--out /proc/reply.wav: cannot write it"),
])
def test_an_output_that_cannot_be_written_is_refused_in_one_line(tiny_model_dir: Path, tmp_path: Path, out: str,
                                                                  message: str) -> None:
    assert message in fails_in_one_line("tts", "--model-path", str(tiny_model_dir), "--profile", "tiny",
                                         "--text", "Hi there.", "--out", out)


@pytest.mark.parametrize("command", [["tts", "--text", "Hi there."], ["chat", "--text", "Hi there."]])
def test_an_output_the_system_refuses_is_refused_before_the_models_load(tiny_model_dir: Path,
                                                                       command: list[str]) -> None:
    """Root may write anywhere by the mode bits, so /proc passed the early check and was refused only when the
    speech (minutes of model loading and synthesis on real weights) was written. INFO logs each model's "loading"
    line: the one line of the error is all there is."""
    stderr = fails_in_one_line(*command, "--model-path", str(tiny_model_dir), "--profile", "tiny",
                                "--out", "/proc/reply.wav", "--log-level", "INFO")
    assert "--out /proc/reply.wav: cannot write " in stderr, stderr  # root: "it (No such file...)"; others: "in /proc"


@pytest.mark.parametrize(("file", "out", "more"), [
    ("models", "models", []), ("models", "models", ["--overwrite"]),
    ("models", "models/step-audio", []), ("models/Step-Audio-Chat", "models", ["--what", "chat"]),
])
def test_make_checkpoint_into_a_file_says_it_is_one_in_one_line(tmp_path: Path, file: str, out: str,
                                                                 more: list[str]) -> None:
    """A file at DIR (or above it, or where a model folder goes) was "cannot write DIR: [Errno 17] File exists"
    ("[Errno 20] Not a directory" above it), --overwrite alike: which file, and that it is one, went unsaid."""
    (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / file).write_text("a file, not a folder\n")
    message = fails_in_one_line("make-checkpoint", "--profile", "tiny", *more, str(tmp_path / out))
    where = "" if file == out else f", so make-checkpoint cannot write {tmp_path / out}"
    assert message.endswith(f"error: {tmp_path / file} is a file, not a folder{where}: choose another folder, or move "
                            "the file away (--overwrite writes over model folders, never over a file)\n"), message


def test_make_checkpoint_never_writes_over_a_downloaded_folder_unless_told(tmp_path: Path) -> None:
    downloaded = tmp_path / "Step-Audio-Chat" / "model-00001-of-00031.safetensors"
    downloaded.parent.mkdir()
    downloaded.write_bytes(b"real weights")
    message = fails_in_one_line("make-checkpoint", "--profile", "tiny", "--what", "chat", str(tmp_path))
    assert f"would overwrite {tmp_path}/Step-Audio-Chat (already holding files)" in message
    assert "--overwrite" in message and downloaded.read_bytes() == b"real weights"
    assert not (tmp_path / "Step-Audio-Tokenizer").exists()  # nothing written at all
    run_cli("make-checkpoint", "--profile", "tiny", str(tmp_path))  # --what all writes the other two beside it
    assert downloaded.read_bytes() == b"real weights" and (tmp_path / "Step-Audio-Tokenizer").is_dir()
    message = fails_in_one_line("make-checkpoint", "--profile", "tiny", str(tmp_path))  # all three there now
    assert f"would overwrite {tmp_path}/Step-Audio-Tokenizer, {tmp_path}/Step-Audio-Chat, " in message
    run_cli("make-checkpoint", "--profile", "tiny", "--what", "chat", "--overwrite", str(tmp_path))
    assert (tmp_path / "Step-Audio-Chat" / "config.json").is_file()


def test_chat_from_wav_and_text(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "reply.wav"
    proc = run_cli("chat", "--model-path", str(tiny_model_dir), "--profile", "tiny",
                   "--wav", str(speech_asset("beckett.wav")), "--out", str(out))
    assert proc.stdout.strip()  # the reply text
    _check_wav(out, 4 * MAX_TINY_SECONDS)
    out2 = tmp_path / "reply2.wav"
    run_cli("chat", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--text", "What is the weather?",
            "--out", str(out2))
    _check_wav(out2, 4 * MAX_TINY_SECONDS)


def test_tts_never_loads_the_chat_lm_and_chat_can_use_a_remote_one(tiny_model_dir: Path, tmp_path: Path,
                                                                     llama_server: LlamaServer) -> None:
    # A folder without the Chat LM's weights (the real one is 130 B): tts does not need them, chat asks a server.
    folder = without_chat_weights(tiny_model_dir, tmp_path / "model")
    out = tmp_path / "tts.wav"
    run_cli("tts", "--model-path", str(folder), "--profile", "tiny", "--text", "Hello there.", "--out", str(out))
    _check_wav(out, MAX_TINY_SECONDS)
    reply = tmp_path / "reply.wav"
    proc = run_cli("chat", "--model-path", str(folder), "--profile", "tiny", "--text", "What is the capital of "
                   "France? One word.", "--chat-url", llama_server.url + "/v1", "--out", str(reply))
    assert "paris" in proc.stdout.lower()  # the remote (real) LM answered, then TTS-3B spoke it
    _check_wav(reply, 4 * MAX_TINY_SECONDS)


def test_chat_through_a_remote_lm_prints_its_whole_answer(tiny_model_dir: Path, tmp_path: Path,
                                                          llama_server: LlamaServer) -> None:
    """--profile tiny caps its random Chat LM's replies at 24 tokens; the real LM behind --chat-url was cut there
    too, mid-sentence ("... He was excited to see the birds")."""
    folder = without_chat_weights(tiny_model_dir, tmp_path / "model")
    before = llama_server.metric("tokens_predicted_total")
    proc = run_cli("chat", "--model-path", str(folder), "--profile", "tiny", "--text", "Count from 1 to 30 in "
                   "digits, separated by commas.", "--chat-url", llama_server.url + "/v1",
                   "--out", str(tmp_path / "reply.wav"))
    # The tokens the real LM generated, not the words printed. Asked for a count (30 numbers and their commas; even
    # a sampled answer that stopped at 9 was over 24 tokens), not for "five sentences": the LM's own answer to that
    # was once 23 tokens, a whole answer under the cap (CI rehearsal, 2026-11-29).
    assert llama_server.metric("tokens_predicted_total") - before > 24, proc.stdout


def test_the_tiny_profile_without_a_model_path_speaks_with_the_folder_serve_writes(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    """`serve --profile tiny` alone writes and uses $STEPAUDIO_RT_CACHE/tiny, but `tts --profile tiny` alone stopped
    with "the following arguments are required: --model-path". tts and chat now use that folder (written if absent);
    the other profiles still need theirs named."""
    monkeypatch.setenv("STEPAUDIO_RT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tts.wav"
    run_cli("tts", "--profile", "tiny", "--text", "Hello there.", "--out", str(out))
    _check_wav(out, MAX_TINY_SECONDS)
    assert (tmp_path / "cache/tiny/Step-Audio-Chat/config.json").is_file()  # the whole folder, as serve writes it
    run_cli("chat", "--profile", "tiny", "--text", "What is the weather?", "--out", str(tmp_path / "chat.wav"))
    _check_wav(tmp_path / "chat.wav", 4 * MAX_TINY_SECONDS)
    assert ("--profile step-audio needs --model-path DIR, the folder of the downloaded checkpoints"
            in fails_in_one_line("tts", "--text", "Hi.", "--out", str(out)))


def test_tts_needs_only_the_tokenizer_and_tts_folders(tiny_model_dir: Path, tmp_path: Path) -> None:
    """As upstream's tts_inference.py: a user who downloaded Step-Audio-Tokenizer and Step-Audio-TTS-3B only."""
    folder = layout_without(tiny_model_dir, tmp_path / "model", "Step-Audio-Chat")
    out = tmp_path / "tts.wav"
    run_cli("tts", "--model-path", str(folder), "--profile", "tiny", "--text", "Hello there.", "--out", str(out))
    _check_wav(out, MAX_TINY_SECONDS)


@pytest.mark.parametrize(("args", "message"), [
    (["serve", "--profile", "step-audio"], "needs --model-path DIR"),
    (["serve", "--profile", "full-random", "--port", "0"], "--profile full-random needs --model-path DIR"),
    # a tiny folder was served (or spoken) as the full-size benchmark profile, without a word
    (["serve", "--profile", "full-random", "--model-path", "{tiny}", "--port", "0"],
     "--profile full-random: {tiny}/Step-Audio-TTS-3B is not full-size (hidden_size 96, full-random has 3072): a "
     "folder from `make-checkpoint --profile tiny`? Use it with --profile tiny"),
    # "Serve it with --profile tiny", said to a user who was not serving
    (["tts", "--model-path", "{tiny}", "--profile", "full-random", "--text", "Hi.", "--out", "x.wav"],
     "--profile full-random: {tiny}/Step-Audio-TTS-3B is not full-size (hidden_size 96, full-random has 3072): a "
     "folder from `make-checkpoint --profile tiny`? Use it with --profile tiny, or write a full-size one"),
    (["chat", "--model-path", "{tiny}", "--profile", "tiny", "--text", "", "--out", "x.wav"],
     "--text '' says nothing to answer"),
    (["tts", "--model-path", "{tiny}", "--profile", "tiny", "--text", "Hi.", "--speaker", "TingtingRAP",
      "--prompt-wav", "{silence}", "--prompt-text", "Hello.", "--out", "x.wav"], "--speaker names a voice"),
    (["tts", "--model-path", "{tiny}", "--profile", "tiny", "--text", "Hi.", "--prompt-wav", "{silence}",
      "--prompt-text", "Hello.", "--out", "x.wav"], "silent (2.00 s, no sample varies by a 16-bit step)"),
    (["chat", "--model-path", "{tiny}", "--profile", "tiny", "--wav", "{empty}", "--out", "x.wav"],
     "--wav {empty}: an empty file"),
    (["tts", "--model-path", "{tiny}", "--profile", "tiny", "--text", "Hi.", "--out", "/nonexistent/deeper/"],
     "--out /nonexistent/deeper: no such folder: /nonexistent"),  # it made the whole path
    # checked before it listens: it said "listening on" and "stopped" first
    (["serve", "--profile", "tiny", "--model-path", "/etc", "--port", "0"], "/etc lacks Step-Audio-Tokenizer/"),
    (["chat", "--model-path", "{tiny}", "--profile", "tiny", "--text", "hi", "--out", "x.wav", "--chat-url",
      "http://127.0.0.1:9/v1"], "--chat-url: cannot connect to chat server http://127.0.0.1:9/v1/models"),
    (["chat", "--model-path", "{tiny}", "--profile", "tiny", "--text", "hi", "--out", "x.wav", "--chat-url",
      "not-a-url"], "--chat-url 'not-a-url': an http:// or https:// URL ending in /v1"),  # was a traceback
    # before any model loads (INFO would log each "loading" line): the real Chat LM takes minutes
    (["chat", "--model-path", "{tiny}", "--profile", "tiny", "--text", "hi", "--out", "x.wav", "--speaker", "tingting",
      "--log-level", "INFO"], "unknown speaker 'tingting'; known: Tingting, TingtingRAP, Tingting哼唱"),
    (["tts", "--model-path", "/nonexistent", "--text", "hi", "--out", "x.wav"], "/nonexistent does not exist"),
    # upstream's tts_inference.py option was "unrecognized arguments: --synthesis-type clone" after a usage line
    (["tts", "--model-path", "{tiny}", "--profile", "tiny", "--text", "hi", "--out", "x.wav", "--synthesis-type",
      "clone"], "--synthesis-type clone takes the voice to clone: --prompt-wav WAV --prompt-text TRANSCRIPT"),
    (["tts", "--model-path", "{tiny}", "--profile", "tiny", "--text", "hi", "--out", "x.wav", "--synthesis-type",
      "tts", "--prompt-wav", "{silence}", "--prompt-text", "Hello."], "--synthesis-type tts speaks a speaker"),
    # a wrong or silent wav was told only once the models had loaded (the real Chat LM takes minutes)
    (["tts", "--model-path", "{tiny}", "--profile", "tiny", "--text", "hi", "--out", "x.wav", "--prompt-wav",
      "{silence}", "--prompt-text", "Hello.", "--log-level", "INFO"], "--prompt-wav {silence}: silent"),
    (["chat", "--model-path", "{tiny}", "--profile", "tiny", "--wav", "/nonexistent.wav", "--out", "x.wav",
      "--log-level", "INFO"], "--wav /nonexistent.wav: no such file"),
    # found after the synthesis, and /nonexistent made at the root on the way
    (["tts", "--model-path", "{tiny}", "--profile", "tiny", "--text", "hi", "--out", "/nonexistent/x.wav",
      "--log-level", "INFO"], "--out /nonexistent/x.wav: no such folder: /nonexistent"),
])
def test_bad_options_say_what_is_wrong_in_one_line(tiny_model_dir: Path, tmp_path: Path, args: list[str],
                                                   message: str) -> None:
    files = {"tiny": tiny_model_dir, "silence": tmp_path / "silence.wav", "empty": tmp_path / "empty.wav"}
    sf.write(files["silence"], np.zeros(32000, dtype=np.float32), 16000)
    files["empty"].write_bytes(b"")
    assert message.format(**files) in fails_in_one_line(*[a.format(**files) for a in args])


@pytest.mark.parametrize(("name", "why"), [
    # libsndfile's mp3 decoder says "File does not exist" of a file with no MPEG audio in it; libmpg123 printed
    # three "Note: Illegal Audio-MPEG-Header ..." lines to the process's stderr before ours.
    ("page.mp3", "not a valid audio stream"),
    # an m4a (AAC), which libsndfile does not decode: "not a sound file soundfile can read (Error opening '<the path
    # again>': Format not recognised.)", naming a library and no format that is read, where talk names them
    ("voice.m4a", "Format not recognised."),
])
def test_a_file_that_is_not_audio_it_reads_is_named_as_talk_names_it(tiny_model_dir: Path, tmp_path: Path, name: str,
                                                                       why: str) -> None:
    page = tmp_path / name
    page.write_bytes(b"<html><body>Not found</body></html>\n")
    proc = subprocess.run([sys.executable, "-m", "controller.cli", "chat", "--model-path", str(tiny_model_dir),
                           "--profile", "tiny", "--wav", str(page), "--out", str(tmp_path / "x.wav")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"stepaudio-rt chat: error: --wav {page}: cannot read it as audio: {why} (the tools read "
                           "wav, flac, ogg and mp3)\n")


@pytest.mark.parametrize(("command", "damaged", "message"), [
    ("tts", "Step-Audio-TTS-3B/config.json", "{folder}/Step-Audio-TTS-3B/config.json: JSONDecodeError"),
    ("tts", "Step-Audio-TTS-3B/tokenizer.model", "{folder}/Step-Audio-TTS-3B/tokenizer.model: not a sentencepiece"),
    # libsndfile's words named the file again: "<file>: Error opening '<file>': Format not recognised."
    ("tts", "Step-Audio-TTS-3B/speakers/Tingting_prompt.wav",
     "{folder}/Step-Audio-TTS-3B/speakers/Tingting_prompt.wav: cannot read it as audio (Format not recognised.)"),
    # torch's own message named no file and advised loading it with weights_only=False; then the loader named it,
    # once the models before it had loaded; now the folder check does, before any
    ("tts", "Step-Audio-TTS-3B/CosyVoice-300M-25Hz/flow.pt",
     "{folder} lacks Step-Audio-TTS-3B/CosyVoice-300M-25Hz/flow.pt (not a torch file but a web page (HTML))"),
    ("tts", f"Step-Audio-Tokenizer/{PARAFORMER}/model.pt",
     f"{{folder}} lacks Step-Audio-Tokenizer/{PARAFORMER}/model.pt (not a torch file but a web page (HTML))"),
    # numpy named no file, and for a web page advised loading it with allow_pickle
    ("tts", "Step-Audio-Tokenizer/linguistic_tokenizer.npy",
     "{folder} lacks Step-Audio-Tokenizer/linguistic_tokenizer.npy (not a .npy array but a web page (HTML))"),
    # yaml named neither the file nor the line: 'ScannerError: while scanning a quoted scalar'
    ("tts", "Step-Audio-TTS-3B/CosyVoice-300M-25Hz/cosyvoice.yaml.cut",
     "{folder}/Step-Audio-TTS-3B/CosyVoice-300M-25Hz/cosyvoice.yaml is not valid YAML (line "),
])
def test_a_damaged_file_is_named(tiny_model_dir: Path, tmp_path: Path, command: str, damaged: str,
                                 message: str) -> None:
    """A file cut short by its download (or overwritten by something else) is named in the one-line error, not
    only its folder: safetensors', json's and sentencepiece's own messages name no file, and the real Chat LM has
    dozens of shards."""
    cut = damaged.endswith((".safetensors", ".cut"))  # else overwritten with a web page
    damaged = damaged.removesuffix(".cut")
    folder = layout_without(tiny_model_dir, tmp_path / "model", damaged)
    data = (tiny_model_dir / damaged).read_bytes()
    (folder / damaged).write_bytes(data[:len(data) // 2] if cut else b"<html>")
    got = fails_in_one_line(command, "--model-path", str(folder), "--profile", "tiny", "--text", "Hi there.",
                             "--out", str(tmp_path / "x.wav"))
    assert message.format(folder=folder) in got


def test_a_full_size_folder_given_to_the_tiny_profile_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    """--profile tiny runs on the CPU: a full-size Chat LM's config there (as make-checkpoint --profile full-random
    writes it, without its 264 GB of weights) is named before anything loads."""
    folder = layout_without(tiny_model_dir, tmp_path / "model", "Step-Audio-Chat/config.json")
    config = json.loads((tiny_model_dir / "Step-Audio-Chat/config.json").read_text())
    (folder / "Step-Audio-Chat/config.json").write_text(json.dumps({**config, "hidden_size": 12288}))
    got = fails_in_one_line("chat", "--model-path", str(folder), "--profile", "tiny", "--text", "Hi there.",
                             "--out", str(tmp_path / "x.wav"))
    assert (f"--profile tiny: {folder}/Step-Audio-Chat is not tiny (hidden_size 12288, tiny has 192): use it with "
            "--profile full-random") in got


@pytest.mark.parametrize("damaged", ["Step-Audio-TTS-3B/CosyVoice-300M-25Hz/flow.pt",
                                     f"Step-Audio-Tokenizer/{PARAFORMER}/model.pt"])
def test_a_weights_file_that_holds_no_state_dict_is_named(tiny_model_dir: Path, tmp_path: Path, damaged: str) -> None:
    """A .pt saved from something else (here a bare tensor) failed as "AttributeError: 'Tensor' object has no
    attribute 'items'" (tokenizer) or a list of tensor reprs (flow), naming no file."""
    folder = layout_without(tiny_model_dir, tmp_path / "model", damaged)
    torch.save(torch.zeros(3), folder / damaged)
    got = fails_in_one_line("tts", "--model-path", str(folder), "--profile", "tiny", "--text", "Hi there.",
                             "--out", str(tmp_path / "x.wav"))
    # flow.pt's tensor names are read before any load: a bare tensor has none
    assert (f"{folder / damaged} holds no tensor names, not the flow model's weights" if damaged.endswith("flow.pt")
            else f"{folder / damaged} holds a Tensor that is not a state dict") in got


@pytest.mark.parametrize("command", ["tts", "chat"])
def test_a_partial_download_names_every_missing_file_before_loading(tiny_model_dir: Path, tmp_path: Path,
                                                                   command: str) -> None:
    dropped = ("Step-Audio-Tokenizer/linguistic_tokenizer.npy", "Step-Audio-TTS-3B/config.json",
               "Step-Audio-TTS-3B/CosyVoice-300M-25Hz/flow.pt", "Step-Audio-TTS-3B/speakers/Tingting_prompt.wav",
               "Step-Audio-Chat/model-00001.safetensors")
    folder = layout_without(tiny_model_dir, tmp_path / "model", *dropped)
    message = fails_in_one_line(command, "--model-path", str(folder), "--profile", "tiny", "--text", "Hi there.",
                                 "--out", str(tmp_path / "x.wav"))
    assert all(d in message for d in dropped[:-1]), message
    # tts never opens Step-Audio-Chat/ (upstream's tts_inference.py does not either)
    assert ("Step-Audio-Chat/model-00001.safetensors (its weights; or run the Chat LM on a server and pass "
            "--chat-url)" in message) == (command == "chat"), message


def test_a_clone_made_without_git_lfs_names_every_pointer_before_loading(tiny_model_dir: Path,
                                                                           tmp_path: Path) -> None:
    """`git clone` of the Hugging Face folders (or of upstream's speakers/) without git-lfs leaves ~130-byte pointer
    files in place of the weights: the load failed on the first one ("header too large", "Protobuf parsing
    failed"), one file per try."""
    pointers = ("Step-Audio-TTS-3B/model-00001.safetensors", "Step-Audio-TTS-3B/CosyVoice-300M-25Hz/campplus.onnx",
                "Step-Audio-Tokenizer/speech_tokenizer_v1.onnx", "Step-Audio-TTS-3B/speakers/Tingting_prompt.wav")
    folder = layout_without(tiny_model_dir, tmp_path / "model", *pointers)
    for rel in pointers:
        (folder / rel).write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 +
                                  "\nsize 7059412992\n")
    message = fails_in_one_line("tts", "--model-path", str(folder), "--profile", "tiny", "--text", "Hi there.",
                                 "--out", str(tmp_path / "x.wav"), "--log-level", "INFO")  # INFO: "loading" lines
    assert all(f"{rel} (a Git LFS pointer)" in message for rel in pointers), message
    assert "`git lfs pull`" in message


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bad-inputs")
    speech, rate = sf.read(speech_asset("beckett.wav"), dtype="float32")
    sf.write(d / "blip.wav", speech[rate: rate + rate // 20], rate)  # 50 ms of voice: less than one tokenizer group
    (d / "notes.wav").write_text("not audio\n")
    broken = speech[:rate].copy()
    broken[rate // 2:] = np.nan  # a float wav a broken export left half NaN
    sf.write(d / "nan.wav", broken, rate, subtype="FLOAT")
    return d


@pytest.mark.parametrize(("args", "message"), [
    (["tts", "--text", "...!?"], "--text '...!?' has nothing to speak"),
    (["tts", "--text", "(RAP) ..."], "--text '(RAP) ...' has nothing to speak"),
    # the whole text was quoted: a line of 5000 dots
    (["tts", "--text", "." * 5000], "--text '" + "." * 60 + "'... (5000 characters) has nothing to speak"),
    (["chat", "--text", "?" * 5000], "--text '" + "?" * 60 + "'... (5000 characters) says nothing to answer"),
    (["tts", "--text", "Hi.", "--prompt-wav", "{d}/blip.wav", "--prompt-text", "Hi."],
     "--prompt-wav {d}/blip.wav: 0.05 s of audio"),
    # before the models load (INFO would log each "loading" line): it came after, minutes with the real TTS-3B
    (["tts", "--text", "Hi.", "--prompt-wav", "{d}/blip.wav", "--prompt-text", "Hi.", "--log-level", "INFO"],
     "--prompt-wav {d}/blip.wav: 0.05 s of audio: speaker 'clone': a voice prompt needs at least 0.5 s of speech"),
    (["tts", "--text", "Hi.", "--prompt-text", "Hi."], "takes --prompt-wav and --prompt-text (the wav's transcript)"),
    (["tts", "--text", "Hi.", "--prompt-wav", "{d}/blip.wav", "--prompt-text", " "],
     "--prompt-text ' ' is no transcript (no letter or digit): give the words that --prompt-wav says"),
    # taken, as a voice prompt whose words the model is not told
    (["tts", "--text", "Hi.", "--prompt-wav", "{d}/blip.wav", "--prompt-text", "..."],
     "--prompt-text '...' is no transcript (no letter or digit): give the words that --prompt-wav says"),
    (["chat", "--wav", "{d}/missing.wav"], "--wav {d}/missing.wav: no such file"),
    (["tts", "--text", "Hi.", "--prompt-wav", "{d}", "--prompt-text", "Hi."],
     "--prompt-wav {d}: a folder, not an audio file"),  # it said "no such file" of a folder that is there
    (["chat", "--wav", "{d}/notes.wav"], "--wav {d}/notes.wav: cannot read it as audio"),
    (["chat", "--wav", "{d}/blip.wav"], "0.05 s of audio is too short to give Step-Audio's tokenizer one audio token"),
    # before the models load (INFO would log each "loading" line): it came after, minutes with the real Chat LM
    (["chat", "--wav", "{d}/blip.wav", "--log-level", "INFO"],
     "--wav {d}/blip.wav: 0.05 s of audio is too short to give Step-Audio's tokenizer one audio token"),
    # a reply to noise, and a clone speaking a full-scale square wave, both with exit status 0
    (["chat", "--wav", "{d}/nan.wav"], "--wav {d}/nan.wav: 8000 of its 16000 samples are not numbers"),
    (["tts", "--text", "Hi.", "--prompt-wav", "{d}/nan.wav", "--prompt-text", "Hi."],
     "--prompt-wav {d}/nan.wav: 8000 of its 16000 samples are not numbers"),
])
def test_input_that_gives_nothing_to_say_is_refused_in_one_line(tiny_model_dir: Path, bad_inputs: Path,
                                                                 tmp_path: Path, args: list[str],
                                                                 message: str) -> None:
    """Instead of a traceback, or a wav of 0 s written as if all went well."""
    out = tmp_path / "out.wav"
    stderr = fails_in_one_line(*[a.format(d=bad_inputs) for a in args], "--model-path", str(tiny_model_dir),
                                "--profile", "tiny", "--out", str(out))
    assert message.format(d=bad_inputs) in stderr, stderr
    assert not out.exists()


def test_a_folder_without_the_music_decoder_speaks_rap_with_the_plain_one_and_says_so(tiny_model_dir: Path,
                                                                                      tmp_path: Path) -> None:
    """CosyVoice-300M-25Hz-Music/ is optional in the layout check; its absence was silent and a (RAP) text came out
    of the plain decoder without a word."""
    folder = layout_without(tiny_model_dir, tmp_path / "model", "Step-Audio-TTS-3B/CosyVoice-300M-25Hz-Music")
    proc = run_cli("tts", "--model-path", str(folder), "--profile", "tiny", "--text", "(RAP)Yo yo.",
                   "--out", str(tmp_path / "rap.wav"))
    assert "has no CosyVoice-300M-25Hz-Music/: RAP and humming are spoken with CosyVoice-300M-25Hz/" in proc.stderr
    assert sf.info(str(tmp_path / "rap.wav")).duration > 0.1


@pytest.mark.slow
def test_serve_tiny_without_a_model_path_writes_its_cached_folder_again_when_it_is_incomplete(tmp_path: Path) -> None:
    """The folder in $STEPAUDIO_RT_CACHE/tiny is the server's own: one cut short or partly deleted was refused with
    an error about a folder the user never named."""
    from controller.checkpoints import make_checkpoint
    from tests.conftest import ServerProcess

    make_checkpoint(tmp_path / "tiny", profile="tiny")
    shutil.rmtree(tmp_path / "tiny" / "Step-Audio-Tokenizer")
    server = ServerProcess("--profile", "tiny", "--threads", "2", env={"STEPAUDIO_RT_CACHE": str(tmp_path)})
    try:
        assert "writing a tiny model folder to" in server.log()
    finally:
        server.stop()
    assert (tmp_path / "tiny" / "Step-Audio-Tokenizer").is_dir()


def test_a_clone_prompt_too_long_for_tts_3b_is_refused_naming_the_prompt_wav(tiny_model_dir: Path,
                                                                              tmp_path: Path) -> None:
    """A whole recording given to clone from: the error named the sentence ("TTS-3B cannot speak the sentence
    'Hi there.'"), as if the text were at fault."""
    speech, rate = sf.read(speech_asset("beckett.wav"), dtype="float32")
    long_wav = tmp_path / "recording.wav"
    # 100 s: its audio tokens alone outgrow the tiny TTS-3B's context of 4096
    sf.write(long_wav, np.tile(speech, -(-100 * rate // len(speech))), rate)
    out = tmp_path / "out.wav"
    stderr = fails_in_one_line("tts", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--text",
                                "Hi there.", "--prompt-wav", str(long_wav), "--prompt-text", "Ever tried.",
                                "--out", str(out))
    assert f"--prompt-wav {long_wav}: " in stderr and "use a shorter wav" in stderr, stderr
    assert not out.exists()


def test_a_clone_prompt_too_long_for_tts_3b_is_refused_before_the_models_load(tiny_model_dir: Path,
                                                                              tmp_path: Path) -> None:
    """A 60 s recording to clone from was refused only once the tokenizer, TTS-3B and the decoders had loaded
    (minutes with the real ones): INFO logs a "loading" line for each."""
    speech, rate = sf.read(speech_asset("beckett.wav"), dtype="float32")
    long_wav = tmp_path / "minute.wav"
    sf.write(long_wav, np.tile(speech, -(-60 * rate // len(speech)))[:60 * rate], rate)
    stderr = fails_in_one_line("tts", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--text",
                                "Hi there.", "--prompt-wav", str(long_wav), "--prompt-text", "Ever tried.",
                                "--out", str(tmp_path / "out.wav"), "--log-level", "INFO")
    assert f"--prompt-wav {long_wav}: 60.00 s of audio: speaker 'clone': its prompt wav gives " in stderr, stderr
    assert "more than half of TTS-3B's context of 4096" in stderr and "use a shorter wav" in stderr, stderr


def test_chat_from_a_text_longer_than_the_chat_lm_reads_says_so_in_one_line(tiny_model_dir: Path,
                                                                             tmp_path: Path) -> None:
    """A long --text printed two lines on the one cut, with numbers that differed: a WARNING ("... the newest 4059,
    dropped 5952", the whole prompt's tokens) and the note ("read only the last 4053 of its 10007 tokens", which
    counted the template's markers as the text's). The note alone says it, in the --text's own tokens."""
    text = " ".join(["the quick brown fox"] * 1500)
    own = len(Step1Tokenizer.from_dir(tiny_model_dir / "Step-Audio-Chat").encode(text))
    proc = run_cli("chat", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--text", text,
                   "--out", str(tmp_path / "reply.wav"))
    told = [line for line in proc.stderr.splitlines() if "tokens" in line]
    assert len(told) == 1 and told[0].startswith("--text: the Chat LM read only the last "), proc.stderr
    kept = int(told[0].split("the last ")[1].split()[0])
    assert f" of its {own} tokens (it reads at most 4072 tokens of prompt" in told[0], proc.stderr
    # what it read is the text's end: all the room but the BOS, the system message and the template's markers
    assert 4000 < kept < 4072, told


def test_chat_from_a_wav_longer_than_the_chat_lm_reads_answers_its_end_and_says_so(tiny_model_dir: Path,
                                                                                   tmp_path: Path) -> None:
    """120 s of speech outgrow the tiny Chat LM's context: the reply came, then a traceback
    ("'PromptCut' object has no attribute 'text'") and exit status 1, and no wav."""
    speech, rate = sf.read(speech_asset("beckett.wav"), dtype="float32")
    long_wav, out = tmp_path / "long.wav", tmp_path / "reply.wav"
    sf.write(long_wav, np.tile(speech, -(-120 * rate // len(speech)))[:120 * rate], rate)
    proc = run_cli("chat", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--wav", str(long_wav),
                   "--out", str(out))
    assert f"--wav {long_wav}: 120 s of audio, of which the Chat LM heard only the last " in proc.stderr, proc.stderr
    assert proc.stdout.strip(), proc.stdout  # the reply's text
    # bounded as the other chat replies: the random tiny Chat LM's reply may run to a few sentences (CI at 2e16862
    # heard 3.07 s: more than one sentence, whose most is 2.1 s)
    _check_wav(out, 4 * MAX_TINY_SECONDS)


def test_a_tts_context_too_small_for_the_speakers_is_refused_in_one_line(tiny_model_dir: Path,
                                                                          tmp_path: Path) -> None:
    """A config.json whose max_seq_len cannot hold a speaker's voice prompt: it was a traceback from the warm-up."""
    folder = layout_without(tiny_model_dir, tmp_path / "model", "Step-Audio-TTS-3B/config.json")
    config = json.loads((tiny_model_dir / "Step-Audio-TTS-3B/config.json").read_text())
    (folder / "Step-Audio-TTS-3B/config.json").write_text(json.dumps({**config, "max_seq_len": 64}))
    stderr = fails_in_one_line("tts", "--model-path", str(folder), "--profile", "tiny", "--text", "Hi there.",
                                "--out", str(tmp_path / "x.wav"))
    assert "speaker 'Tingting'" in stderr and "TTS-3B's context of 64" in stderr, stderr


@pytest.mark.parametrize(("field", "value", "tensor"), [
    ("vocab_size", 100, "'model.embed_tokens.weight' is [6144, 96], but config.json makes it [100, 96]"),
    ("intermediate_size", 96, "'model.layers.0.mlp.gate_proj.weight' is [192, 96]"),  # loaded half of it, silently
    # k_proj is one part of the fused qkv weight: it was narrow()'s "start (0) + length (16) exceeds dimension size"
    ("num_attention_groups", 2, "'model.layers.0.self_attn.k_proj.weight' is [8, 96], but config.json makes it [16, "),
])
def test_a_config_json_at_odds_with_its_weights_is_refused_naming_a_tensor(tiny_model_dir: Path, tmp_path: Path,
                                                                          field: str, value: int,
                                                                          tensor: str) -> None:
    folder = layout_without(tiny_model_dir, tmp_path / "model", "Step-Audio-TTS-3B/config.json")
    config = json.loads((tiny_model_dir / "Step-Audio-TTS-3B/config.json").read_text())
    (folder / "Step-Audio-TTS-3B/config.json").write_text(json.dumps({**config, field: value}))
    out = tmp_path / "x.wav"
    stderr = fails_in_one_line("tts", "--model-path", str(folder), "--profile", "tiny", "--text", "Hi there.",
                                "--out", str(out))
    assert f"checkpoint tensor {tensor}" in stderr, stderr
    assert not out.exists()


@pytest.mark.parametrize("out", ["locked/x.wav", "locked", "locked/new-folder"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_the_models_load(tiny_model_dir: Path,
                                                                                   tmp_path: Path, out: str) -> None:
    """It was found after the models had loaded and spoken (minutes with the real ones), with soundfile's
    "System error" as the reason."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes past the mode bits, not past the immutable flag
        if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
            pytest.skip("root, and this file system has no immutable flag to make a folder read-only with")
    try:
        # INFO logs each model's "loading" line: the one line of the error is all there is
        stderr = fails_in_one_line("tts", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--text",
                                    "Hi there.", "--out", str(tmp_path / out), "--log-level", "INFO")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
        locked.chmod(0o755)
    assert f"cannot write in {locked} (permission denied" in stderr, stderr


def test_chat_under_torchrun_is_refused_in_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Only serve shards the Chat LM. Under torchrun each rank ran the whole chat tool (loading the whole Chat LM)
    and wrote the same --out, printing the reply twice: for the real 130 B Chat LM, a load on every rank."""
    from tests.conftest import free_port

    out = tmp_path / "reply.wav"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                           str(free_port()), "-m", "controller.cli", "chat", "--profile", "tiny", "--model-path",
                           str(tiny_model_dir), "--text", "Hello there.", "--out", str(out)],
                          capture_output=True, text=True, timeout=180)
    said = "stepaudio-rt chat: error: stepaudio-rt chat runs in one process, not under torchrun (WORLD_SIZE=2)"
    assert proc.returncode != 0
    assert said in proc.stderr and "[rank" not in proc.stderr, proc.stderr
    assert not out.exists()
