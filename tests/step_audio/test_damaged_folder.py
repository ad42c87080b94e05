"""A damaged or odd model folder is one line on stderr naming the file (and config.json's field by its name there),
exit code 2, before any model loads: `--log-level INFO` logs a "loading" line for each model, so a one-line stderr
under it shows that nothing had begun to load (the real models take minutes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.step_audio.conftest import fails_in_one_line, layout_without, run_cli

pytestmark = pytest.mark.slow

PARAFORMER = "dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online"


def _with_file(tiny_model_dir: Path, tmp_path: Path, rel: str, data: bytes) -> Path:
    """The tiny folder (as links) with `rel` replaced by `data`."""
    folder = layout_without(tiny_model_dir, tmp_path / "model", rel)
    (folder / rel).write_bytes(data)
    return folder


def _with_config(tiny_model_dir: Path, tmp_path: Path, lm: str, **fields: object) -> Path:
    """The tiny folder with `fields` changed in `lm`'s config.json (lm: Step-Audio-TTS-3B or Step-Audio-Chat)."""
    config = json.loads((tiny_model_dir / lm / "config.json").read_text())
    return _with_file(tiny_model_dir, tmp_path, f"{lm}/config.json", json.dumps({**config, **fields}).encode())


def _chat_fails(folder: Path, tmp_path: Path, *more: str) -> str:
    return fails_in_one_line("chat", "--model-path", str(folder), "--profile", "tiny", "--text", "Hi there.",
                             "--out", str(tmp_path / "x.wav"), "--log-level", "INFO", *more)


@pytest.mark.parametrize("shard", ["Step-Audio-TTS-3B/model-00001.safetensors",
                                   "Step-Audio-Chat/model-00001.safetensors"])
def test_a_weights_file_cut_short_is_named_before_any_model_loads(tiny_model_dir: Path, tmp_path: Path,
                                                                  shard: str) -> None:
    """Its loader found it only after the models before it had loaded (for a Chat shard: the tokenizer, TTS-3B and
    both decoders), one shard per try."""
    data = (tiny_model_dir / shard).read_bytes()
    folder = _with_file(tiny_model_dir, tmp_path, shard, data[:len(data) // 2])
    stderr = _chat_fails(folder, tmp_path)
    assert f"{shard} (cut short: {len(data) // 2:,} of its {len(data):,} bytes)" in stderr, stderr
    assert "download it again" in stderr


@pytest.mark.parametrize(("rel", "why"), [
    ("Step-Audio-TTS-3B/CosyVoice-300M-25Hz/hift.pt", "cut short: its zip archive has no end"),
    (f"Step-Audio-Tokenizer/{PARAFORMER}/model.pt", "cut short: its zip archive has no end"),
    ("Step-Audio-Tokenizer/linguistic_tokenizer.npy", "cut short: 65,600 of its 131,200 bytes"),
])
def test_a_decoder_or_tokenizer_file_cut_short_is_named_before_any_model_loads(tiny_model_dir: Path, tmp_path: Path,
                                                                              rel: str, why: str) -> None:
    """Their loaders named them ("cannot read ... hift.pt (PytorchStreamReader failed ...)"), but only once the
    models before them had loaded: for a decoder's, the tokenizer and TTS-3B (tens of seconds for the real ones)."""
    data = (tiny_model_dir / rel).read_bytes()
    folder = _with_file(tiny_model_dir, tmp_path, rel, data[:len(data) // 2])
    stderr = _chat_fails(folder, tmp_path)
    assert f"lacks {rel} ({why})" in stderr and "download it again" in stderr, stderr


@pytest.mark.parametrize("rel", ["Step-Audio-TTS-3B/CosyVoice-300M-25Hz/campplus.onnx",
                                 "Step-Audio-Tokenizer/speech_tokenizer_v1.onnx"])
def test_an_onnx_model_cut_short_is_named_before_any_model_loads(tiny_model_dir: Path, tmp_path: Path,
                                                                 rel: str) -> None:
    """onnxruntime named it ("INVALID_PROTOBUF : Load model from ... failed:Protobuf parsing failed"), but only once
    the models before it had loaded: for campplus.onnx, the tokenizer and TTS-3B."""
    data = (tiny_model_dir / rel).read_bytes()
    folder = _with_file(tiny_model_dir, tmp_path, rel, data[:len(data) // 2])
    stderr = _chat_fails(folder, tmp_path)
    assert f"lacks {rel} (cut short: {len(data) // 2:,} of at least " in stderr, stderr
    assert "download it again" in stderr


@pytest.mark.parametrize("rel", ["Step-Audio-Tokenizer/speech_tokenizer_v1.onnx",
                                 "Step-Audio-TTS-3B/CosyVoice-300M-25Hz/campplus.onnx"])
def test_a_web_page_saved_as_an_onnx_model_is_named_as_one_before_any_model_loads(tiny_model_dir: Path,
                                                                                 tmp_path: Path, rel: str) -> None:
    """Named by onnxruntime only ("INVALID_PROTOBUF ... Protobuf parsing failed"), after the models before it had
    loaded, with nothing saying it was a web page (test_offline_tools' test_a_damaged_file_is_named: .pt, .npy)."""
    folder = _with_file(tiny_model_dir, tmp_path, rel, b"<!DOCTYPE html>\n<html><body>Sign in</body></html>\n")
    stderr = _chat_fails(folder, tmp_path)
    assert f"lacks {rel} (not an ONNX model but a web page (HTML))" in stderr, stderr
    assert "download the file again" in stderr


@pytest.mark.parametrize("lm", ["Step-Audio-Chat", "Step-Audio-TTS-3B"])
def test_a_damaged_tokenizer_model_is_named_before_any_model_loads(tiny_model_dir: Path, tmp_path: Path,
                                                                   lm: str) -> None:
    """Its LM's load named it: Step-Audio-Chat's once the tokenizer, TTS-3B, both decoders and the speakers had
    loaded (minutes with the real checkpoints)."""
    rel = f"{lm}/tokenizer.model"
    folder = _with_file(tiny_model_dir, tmp_path, rel, b"<!DOCTYPE html>\n<html><body>Sign in</body></html>\n")
    assert f"error: {folder / rel}: not a sentencepiece model (" in _chat_fails(folder, tmp_path)


@pytest.mark.parametrize("decoder", ["CosyVoice-300M-25Hz", "CosyVoice-300M-25Hz-Music"])
def test_a_damaged_cosyvoice_yaml_is_named_before_any_model_loads(tiny_model_dir: Path, tmp_path: Path,
                                                                  decoder: str) -> None:
    """Its decoder's load named it, once the tokenizer and TTS-3B had loaded (the Music one's, the plain decoder
    too)."""
    rel = f"Step-Audio-TTS-3B/{decoder}/cosyvoice.yaml"
    folder = _with_file(tiny_model_dir, tmp_path, rel, b"<!DOCTYPE html>\n<html><body>Sign in</body></html>\n")
    assert (f"error: cannot load {folder / rel.removesuffix('/cosyvoice.yaml')}: CosyVoiceConfigError: "
            "cosyvoice.yaml: top level is not a mapping") in _chat_fails(folder, tmp_path)


def test_another_models_onnx_file_saved_as_campplus_is_named_before_any_model_loads(tiny_model_dir: Path,
                                                                                    tmp_path: Path) -> None:
    """speech_tokenizer_v1.onnx copied over campplus.onnx loaded, and failed only as the speakers were embedded, once
    every model but the Chat LM had loaded: "Required inputs (['feats_length']) are missing from input feed"."""
    rel = "Step-Audio-TTS-3B/CosyVoice-300M-25Hz/campplus.onnx"
    folder = _with_file(tiny_model_dir, tmp_path, rel,
                        (tiny_model_dir / "Step-Audio-Tokenizer/speech_tokenizer_v1.onnx").read_bytes())
    assert (f"error: {folder / rel} takes 2 inputs (feats, feats_length), where CAM++ takes one (a speaker's fbank): "
            "is it another model's file?") in _chat_fails(folder, tmp_path)


@pytest.mark.parametrize("decoder", ["CosyVoice-300M-25Hz", "CosyVoice-300M-25Hz-Music"])
def test_flow_pt_and_hift_pt_swapped_are_named_before_any_model_loads(tiny_model_dir: Path, tmp_path: Path,
                                                                     decoder: str) -> None:
    """The decoder's load found it ("flow.pt does not match cosyvoice.yaml: missing [...] unexpected [...]"), once
    the tokenizer and TTS-3B had loaded (the Music one's, the plain decoder too)."""
    sub = f"Step-Audio-TTS-3B/{decoder}"
    folder = layout_without(tiny_model_dir, tmp_path / "model", f"{sub}/flow.pt", f"{sub}/hift.pt")
    for name, other in (("flow.pt", "hift.pt"), ("hift.pt", "flow.pt")):
        (folder / sub / name).write_bytes((tiny_model_dir / sub / other).read_bytes())
    assert (f"error: {folder / sub / 'flow.pt'} holds the HiFT vocoder's weights, not the flow model's weights: are "
            "flow.pt and hift.pt swapped?") in _chat_fails(folder, tmp_path)


def test_another_models_torch_file_saved_as_hift_pt_is_named_before_any_model_loads(tiny_model_dir: Path,
                                                                                   tmp_path: Path) -> None:
    """The Paraformer's model.pt copied over hift.pt was found by the decoder's load ("hift.pt does not match
    cosyvoice.yaml"), once the tokenizer, TTS-3B and the flow model had loaded."""
    rel = "Step-Audio-TTS-3B/CosyVoice-300M-25Hz/hift.pt"
    folder = _with_file(tiny_model_dir, tmp_path, rel, (tiny_model_dir / f"Step-Audio-Tokenizer/{PARAFORMER}/"
                                                       "model.pt").read_bytes())
    assert (f"error: {folder / rel} holds tensors such as 'encoder.after_norm.bias', not the HiFT vocoder's "
            "weights ('m_source.l_linear.weight' is not there): another model's file?"
            ) in _chat_fails(folder, tmp_path)


def test_another_models_state_dict_as_flow_pt_is_named_by_a_tensor_it_holds(tiny_model_dir: Path,
                                                                            tmp_path: Path) -> None:
    """A file saved as upstream's checkpoints are, torch.save(model.state_dict()), keeps the module paths in its
    _metadata ("decoder.layers"): the message gave one of those as a tensor the file held, which no tensor is
    named (the tiny folder's plain dicts have no _metadata)."""
    import io

    import torch

    other = torch.nn.Transformer(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                 dim_feedforward=8, batch_first=True)
    saved = io.BytesIO()
    torch.save(other.state_dict(), saved)
    rel = "Step-Audio-TTS-3B/CosyVoice-300M-25Hz/flow.pt"
    folder = _with_file(tiny_model_dir, tmp_path, rel, saved.getvalue())
    assert "decoder.layers.0.linear1.bias" in other.state_dict() and "decoder.layers" not in other.state_dict()
    assert (f"error: {folder / rel} holds tensors such as 'decoder.layers.0.linear1.bias', not the flow model's "
            "weights ('input_embedding.weight' is not there): another model's file?") in _chat_fails(folder, tmp_path)


def test_a_zip_archive_that_is_no_torch_file_is_named_before_any_model_loads(tiny_model_dir: Path,
                                                                            tmp_path: Path) -> None:
    """torch.load named it ("PytorchStreamReader failed locating file data.pkl: file not found"), once the models
    before it had loaded."""
    import io
    import zipfile

    rel = "Step-Audio-TTS-3B/CosyVoice-300M-25Hz/flow.pt"
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        archive.writestr("flow/weights.bin", b"\0" * 64)
        archive.writestr("README", b"flow weights")
    folder = _with_file(tiny_model_dir, tmp_path, rel, data.getvalue())
    assert (f"lacks {rel} (not a torch file but a zip archive holding flow/weights.bin, README)"
            in _chat_fails(folder, tmp_path))


def test_a_web_page_saved_as_a_weights_file_is_named_before_any_model_loads(tiny_model_dir: Path,
                                                                           tmp_path: Path) -> None:
    shard = "Step-Audio-TTS-3B/model-00001.safetensors"
    folder = _with_file(tiny_model_dir, tmp_path, shard, b"<html><body>Not found</body></html>\n")
    assert f"{shard} (no safetensors header" in _chat_fails(folder, tmp_path)


@pytest.mark.parametrize(("lm", "fields", "message"), [
    # was "ZeroDivisionError: integer modulo by zero", naming no field
    ("Step-Audio-TTS-3B", {"num_attention_groups": 0}, "num_attention_groups is 0; it must be at least 1"),
    ("Step-Audio-Chat", {"num_attention_groups": 5},
     "num_attention_heads (24) is not a multiple of num_attention_groups (5)"),
    # was "num_layers must be > 0" (the engine's name), once TTS-3B's engine loaded
    ("Step-Audio-TTS-3B", {"num_hidden_layers": 0}, "num_hidden_layers is 0; it must be at least 1"),
    # hidden_size // heads gave 19, and the load failed on a k_proj shape
    ("Step-Audio-TTS-3B", {"num_attention_heads": 5},
     "hidden_size (96) is not a multiple of num_attention_heads (5), so there is no head_dim"),
])
def test_a_config_json_the_engine_cannot_run_is_named_with_its_field_before_any_model_loads(
        tiny_model_dir: Path, tmp_path: Path, lm: str, fields: dict, message: str) -> None:
    folder = _with_config(tiny_model_dir, tmp_path, lm, **fields)
    assert f"error: {folder}/{lm}/config.json: {message}" in _chat_fails(folder, tmp_path)


@pytest.mark.parametrize(("value", "said"), [("96", '"96", a string (in quotes)'), (96.0, "96.0, a decimal number")])
def test_a_count_in_config_json_that_is_no_whole_number_is_named_with_its_field(tiny_model_dir: Path, tmp_path: Path,
                                                                              value: object, said: str) -> None:
    """"hidden_size": "96" was 'TypeError: unsupported operand type(s) for //: 'str' and 'int'', naming the file
    but not the field; 96.0 loaded."""
    folder = _with_config(tiny_model_dir, tmp_path, "Step-Audio-TTS-3B", hidden_size=value)
    stderr = _chat_fails(folder, tmp_path)
    assert f"{folder}/Step-Audio-TTS-3B/config.json: hidden_size is {said}; it must be a whole number" in stderr


@pytest.mark.parametrize("context", [0, -5])
def test_a_chat_context_of_no_tokens_is_refused_naming_max_seq_len(tiny_model_dir: Path, tmp_path: Path,
                                                                   context: int) -> None:
    """0 became the default context of 32768 without a word (an `or` fallback), past what the weights were trained
    for; -5 was 'max_seq_len must be > 0' once the Chat LM loaded."""
    folder = _with_config(tiny_model_dir, tmp_path, "Step-Audio-Chat", max_seq_len=context)
    stderr = _chat_fails(folder, tmp_path)
    assert f"{folder}/Step-Audio-Chat/config.json: max_seq_len is {context}; it must be at least 1" in stderr


@pytest.mark.parametrize("layers", [1, 3])
def test_a_layer_count_at_odds_with_the_weights_says_both_counts(tiny_model_dir: Path, tmp_path: Path,
                                                                 layers: int) -> None:
    """It was the loader's 'checkpoint lacks 9 tensors, e.g. [model.layers.2...]' or "'model.layers.1...' has no
    parameter in this model", once the models before it had loaded."""
    folder = _with_config(tiny_model_dir, tmp_path, "Step-Audio-Chat", num_hidden_layers=layers)
    assert (f"{folder}/Step-Audio-Chat/config.json: num_hidden_layers is {layers}, but the weights beside it hold 2 "
            "layers (model.layers.0-1)") in _chat_fails(folder, tmp_path)


@pytest.mark.parametrize(("fields", "tensor"), [
    ({"vocab_size": 7000}, "'model.embed_tokens.weight' is [6144, 192], but config.json makes it [7000, 192]"),
    ({"num_attention_groups": 4}, "'model.layers.0.self_attn.k_proj.weight' is [16, 192], but config.json makes it "
                                  "[32, 192]"),
])
def test_a_chat_config_json_at_odds_with_its_weights_is_named_before_any_model_loads(
        tiny_model_dir: Path, tmp_path: Path, fields: dict, tensor: str) -> None:
    """The loader named the tensor as well, but only once the tokenizer, TTS-3B and both decoders had loaded
    (minutes for the real ones): the shapes are in the safetensors headers."""
    folder = _with_config(tiny_model_dir, tmp_path, "Step-Audio-Chat", **fields)
    assert f"{folder}/Step-Audio-Chat/config.json: checkpoint tensor {tensor}" in _chat_fails(folder, tmp_path)


@pytest.mark.parametrize("lm", ["Step-Audio-TTS-3B", "Step-Audio-Chat"])
def test_tied_embeddings_beside_weights_with_their_own_lm_head_are_refused(tiny_model_dir: Path, tmp_path: Path,
                                                                           lm: str) -> None:
    """"tie_word_embeddings": true over a folder that holds lm_head.weight: the loader set the head aside and the LM
    spoke through its embeddings (`tts` wrote audio of nonsense tokens), without a word."""
    folder = _with_config(tiny_model_dir, tmp_path, lm, tie_word_embeddings=True)
    assert (f"{folder}/{lm}/config.json: tie_word_embeddings is true, but the weights beside it hold their own "
            "lm_head.weight, which the load would set aside to output through model.embed_tokens.weight: is "
            "config.json the one that came with these weights?") in _chat_fails(folder, tmp_path)


def test_untied_embeddings_beside_weights_without_an_lm_head_are_named_before_any_model_loads(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    """The loader said "checkpoint lacks 1 tensors, e.g. ['lm_head.weight']", once the tokenizer had loaded."""
    from safetensors.numpy import load_file, save_file

    shard = "Step-Audio-TTS-3B/model-00001.safetensors"
    tensors = load_file(tiny_model_dir / shard)
    del tensors["lm_head.weight"]
    folder = layout_without(tiny_model_dir, tmp_path / "model", shard)
    save_file(tensors, folder / shard)
    assert (f"{folder}/Step-Audio-TTS-3B/config.json: tie_word_embeddings is false (or absent), but the weights "
            "beside it hold no lm_head.weight (the output layer, untied from model.embed_tokens.weight)"
            ) in _chat_fails(folder, tmp_path)


def test_a_chat_context_smaller_than_the_reply_cap_still_answers(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A Chat max_seq_len of 20 against the tiny profile's 24-token reply cap: the prompt had "the -4 that fit" and
    the reply ended in the engine's EngineError traceback. A reply takes at most half the context."""
    folder = _with_config(tiny_model_dir, tmp_path, "Step-Audio-Chat", max_seq_len=20)
    out = tmp_path / "reply.wav"
    proc = run_cli("chat", "--model-path", str(folder), "--profile", "tiny", "--text", "Hello there, how are you?",
                   "--out", str(out), "--log-level", "INFO")  # INFO: the prompt's cut in full, beside chat's note
    assert proc.stdout.strip() and sf.info(str(out)).duration > 0.3
    assert "it reads at most 10 tokens of prompt, its context less the reply" in proc.stderr, proc.stderr
    # the default system message is more than half of 10 tokens: it went with the rest (the BOS alone stays)
    assert "kept no system message (too long) and the newest 9" in proc.stderr, proc.stderr


def test_a_silent_speaker_prompt_is_refused_before_any_model_loads(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A silent NAME_prompt.wav in speakers/ (a bad export) was registered once the models had loaded, and /voices
    listed it; a clone's silent prompt wav is refused by the same rule (no sample a 16-bit step from the others)."""
    info = "Step-Audio-TTS-3B/speakers/speakers_info.json"
    speakers = json.loads((tiny_model_dir / info).read_text(encoding="utf-8"))
    folder = _with_file(tiny_model_dir, tmp_path, info,
                        json.dumps({**speakers, "Mute": "Hello there."}, ensure_ascii=False).encode())
    wav = folder / "Step-Audio-TTS-3B/speakers/Mute_prompt.wav"
    sf.write(wav, np.full(3 * 16000, 0.005, np.float32), 16000)  # a constant offset: no sound at all
    assert (f"{wav}: speaker 'Mute': its prompt wav is silent (3.00 s, no sample varies by a 16-bit step)"
            in _chat_fails(folder, tmp_path))


def test_a_speaker_prompt_whose_channels_cancel_out_is_not_called_silent(tiny_model_dir: Path,
                                                                        tmp_path: Path) -> None:
    """A stereo NAME_prompt.wav with one channel the other inverted mixes to nothing, as Step-Audio mixes channels:
    the check called the file "silent", which plays loud (a clone's --prompt-wav was told already)."""
    rel = "Step-Audio-TTS-3B/speakers/Tingting_prompt.wav"
    folder = layout_without(tiny_model_dir, tmp_path / "model", rel)
    voice, rate = sf.read(tiny_model_dir / rel, dtype="float32")
    sf.write(folder / rel, np.stack([voice, -voice], axis=1), rate, subtype="PCM_16")
    assert (f"error: {folder / rel}: its 2 channels cancel out when mixed to mono, as Step-Audio mixes them (one is "
            "the other inverted): keep one, e.g. `sox Tingting_prompt.wav mono.wav remix 1`"
            in _chat_fails(folder, tmp_path))


@pytest.mark.parametrize(("fields", "said"), [
    ({"rms_norm_eps": "x"}, 'rms_norm_eps is "x"; it must be a number'),  # was "ValueError: could not convert ..."
    ({"eos_token_id": [3, "x"]}, 'eos_token_id is "x"; it must be a whole number'),
    # read and never used: a typo loaded without a word
    ({"torch_dtype": "bfloat17"}, 'torch_dtype is "bfloat17"; it must be one of bfloat16, float16, float32, float64'),
    # bool("false") is true: the head was tied to the embeddings, the weights' own lm_head.weight skipped unsaid
    ({"tie_word_embeddings": "false"},
     'tie_word_embeddings is "false", a string (in quotes); it must be true or false'),
])
def test_a_config_json_value_of_the_wrong_kind_is_named_with_its_field(tiny_model_dir: Path, tmp_path: Path,
                                                                     fields: dict, said: str) -> None:
    folder = _with_config(tiny_model_dir, tmp_path, "Step-Audio-TTS-3B", **fields)
    assert f"{folder}/Step-Audio-TTS-3B/config.json: {said}" in _chat_fails(folder, tmp_path)


def test_a_speaker_prompt_too_long_for_tts_3b_is_refused_before_any_model_loads(tiny_model_dir: Path,
                                                                               tmp_path: Path) -> None:
    """A speaker's prompt wav of more audio tokens than half of TTS-3B's context (70 s against the tiny folder's
    ~49 s) was refused only once the tokenizer, TTS-3B and both decoders had loaded; a clone's, before."""
    from tests.conftest import speech_asset

    rel = "Step-Audio-TTS-3B/speakers/Tingting_prompt.wav"
    folder = layout_without(tiny_model_dir, tmp_path / "model", rel)
    wav, rate = sf.read(speech_asset("beckett.wav"), dtype="float32")
    sf.write(folder / rel, np.tile(wav, 7), rate)
    stderr = _chat_fails(folder, tmp_path)
    assert f"{folder / rel}: speaker 'Tingting': its prompt wav gives " in stderr, stderr
    assert "more than half of TTS-3B's context of 4096" in stderr


@pytest.mark.parametrize("data", [b"<html><body>Not found</body></html>", b"[1, 2]"])
def test_a_damaged_tts_tokenizer_config_is_named_before_any_model_loads(tiny_model_dir: Path, tmp_path: Path,
                                                                        data: bytes) -> None:
    """Read (for add_bos_token) once the tokenizer, TTS-3B and the decoders had loaded: a JSONDecodeError (or
    AttributeError) traceback, exit code 1."""
    rel = "Step-Audio-TTS-3B/tokenizer_config.json"
    folder = _with_file(tiny_model_dir, tmp_path, rel, data)
    assert f"error: {folder / rel} is not " in _chat_fails(folder, tmp_path)


@pytest.mark.parametrize(("rel", "edit", "said"), [
    ("Step-Audio-TTS-3B/config.json",
     lambda text: text.replace('"num_attention_groups": 1', '"num_attention_groups": 0'), "num_attention_groups is 0"),
    ("Step-Audio-TTS-3B/speakers/speakers_info.json", lambda text: "<html>", "is not valid JSON"),
])
def test_a_damaged_tiny_folder_in_the_cache_says_what_the_folder_is_and_how_to_rebuild_it(
        tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rel: str, edit: Any,
        said: str) -> None:
    """`serve --profile tiny` without --model-path named a file in $STEPAUDIO_RT_CACHE/tiny, a folder the user never
    named, and said nothing of where it came from or what to do."""
    import shutil

    folder = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, folder)
    whole = (folder / rel).read_text(encoding="utf-8")
    (folder / rel).write_text(edit(whole), encoding="utf-8")
    monkeypatch.setenv("STEPAUDIO_RT_CACHE", str(tmp_path))
    stderr = fails_in_one_line("serve", "--profile", "tiny", "--port", "0", "--log-level", "WARNING")
    assert f"{folder / rel}: {said}" in stderr or f"{folder / rel} {said}" in stderr, stderr
    rebuild = ["make-checkpoint", "--profile", "tiny", "--overwrite", str(folder)]
    assert (f"({folder} is the tiny profile's model folder, written on the first `serve --profile tiny` (or tts, "
            f"chat) without --model-path; rebuild it with `stepaudio-rt {' '.join(rebuild)}`)") in stderr, stderr
    run_cli(*rebuild)  # the command it gives mends the folder
    assert json.loads((folder / rel).read_text(encoding="utf-8")) == json.loads(whole)
