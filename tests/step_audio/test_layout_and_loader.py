"""make-checkpoint writes the whole folder in the real layout; `--profile step-audio` loads it through the same
code as tiny; the listener's streamed turn ids equal whole-utterance tokenisation; the exact prompt layouts."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from controller.app import AppConfig, load_pipeline
from controller.errors import ConfigError
from controller.pipeline import PromptCut
from tests.conftest import speech_asset
from tests.step_audio.conftest import layout_without, without_chat_weights

pytestmark = pytest.mark.slow


def test_make_checkpoint_writes_the_real_layout(tiny_model_dir: Path) -> None:
    d = tiny_model_dir
    para = d / "Step-Audio-Tokenizer/dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online"
    expected = [
        d / "Step-Audio-Tokenizer/linguistic_tokenizer.npy", d / "Step-Audio-Tokenizer/speech_tokenizer_v1.onnx",
        *(para / f for f in ("model.pt", "config.yaml", "am.mvn", "tokens.json", "seg_dict")),
        *(d / "Step-Audio-Chat" / f for f in ("config.json", "tokenizer.model", "tokenizer_config.json")),
        *(d / "Step-Audio-TTS-3B" / f for f in ("config.json", "tokenizer.model", "model-00001.safetensors")),
        d / "Step-Audio-TTS-3B/speakers/speakers_info.json", d / "Step-Audio-TTS-3B/speakers/Tingting_prompt.wav",
    ]
    for sub in ("CosyVoice-300M-25Hz", "CosyVoice-300M-25Hz-Music"):
        expected += [d / "Step-Audio-TTS-3B" / sub / f
                     for f in ("cosyvoice.yaml", "flow.pt", "hift.pt", "campplus.onnx", "speech_tokenizer_v1.onnx")]
    missing = [str(p) for p in expected if not p.is_file()]
    assert not missing, missing
    assert list((d / "Step-Audio-Chat").glob("*.safetensors"))
    info = json.loads((d / "Step-Audio-TTS-3B/speakers/speakers_info.json").read_text(encoding="utf-8"))
    assert "Tingting" in info and all(isinstance(v, str) and v for v in info.values())
    for name in info:
        wav, rate = sf.read(d / f"Step-Audio-TTS-3B/speakers/{name}_prompt.wav")
        assert len(wav) / rate >= 2.0 and np.abs(wav).max() > 0.1


@pytest.fixture(scope="module")
def step_audio(tiny_model_dir: Path):
    pipeline = load_pipeline(AppConfig(profile="step-audio", model_path=tiny_model_dir, threads=2))
    yield pipeline
    pipeline.close()


def test_step_audio_profile_loads_the_tiny_folder(step_audio) -> None:
    p = step_audio
    assert p.name == "step-audio" and p.output_rate == 22050
    assert not p.config.constrain_text and p.config.max_reply_tokens is None  # no random-model caps
    assert {"Tingting", "TingtingRAP", "Tingting哼唱"} <= set(p.tts.speakers)
    assert p.tts.speakers["TingtingRAP"].music


def test_chat_template_and_audio_ids(step_audio) -> None:
    p = step_audio
    text = p.chat.render([{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "<audio_3><audio_1027>"},
                          {"role": "assistant", "content": "Hi."}, {"role": "user", "content": "hello"}])
    assert text == ("<|BOT|>system\nBe brief.<|EOT|><|BOT|>human\n<audio_3><audio_1027><|EOT|>"
                    "<|BOT|>assistant\nHi.<|EOT|><|BOT|>human\nhello<|EOT|><|BOT|>assistant\n")
    assert p.chat.render([{"role": "user", "content": "x"}]).startswith(
        "<|BOT|>system\nYou are a helpful assistant.<|EOT|>")
    ids = p.chat.prompt_ids([{"role": "user", "content": "<audio_3><audio_1027>"}])
    tok = p.chat.tok
    assert ids[0] == tok.bos_id and ids[-1] != tok.eot_id
    assert tok.audio_id(3) in ids and tok.audio_id(1027) in ids  # <audio_N> text -> one id each


@pytest.mark.parametrize("instructions", ["Be brief.\nAnswer in English.", ""])
def test_the_prompt_budget_counts_the_tokens_of_the_rendered_template(step_audio, instructions: str) -> None:
    """The session's budget counted 5 tokens a message for ChatML's markers plus 3 a text for Step-Audio's (the same
    markers twice), 3 for the reply's opening, and nothing for the default system message written when there are
    no instructions: this prompt of 6 messages was counted 18 tokens over what the Chat LM read (older turns were
    dropped sooner than the budget asked). Counted with the Chat LM's tokenizer and its template's markers, a
    prompt fits a budget of exactly its rendered length and no fewer."""
    from context_manager import AssistantMessage, Conversation, UserMessage

    p = step_audio
    conversation = Conversation()
    for i, text in enumerate(["Hello there!", "Hi. It is noon; the sun is high.\n\nLunch is soon.", "数字 123 你好 ",
                              " leading space", "\nwhat now?"]):
        conversation.add((UserMessage if i % 2 == 0 else AssistantMessage)(id=f"i{i}", text=text))
    audio = {"i4": "<audio_3><audio_1027><audio_12>"}  # the turn being answered reaches the Chat LM as its audio ids

    def prompt(budget: int) -> list[dict]:
        return conversation.messages(instructions, budget, p.count_tokens, audio,
                                     template=p.template_costs([], bool(instructions)))

    rendered = len(p.chat.prompt_ids(prompt(10_000)))
    assert len(prompt(10_000)) == 5 + bool(instructions)
    assert prompt(rendered) == prompt(10_000)
    assert len(prompt(rendered - 1)) == len(prompt(10_000)) - 2  # the oldest turn dropped


def test_a_prompt_too_long_for_the_chat_lm_keeps_its_system_message(step_audio, caplog) -> None:
    """A turn longer than the Chat LM's context less the reply (a long recording, say): the system message (the
    instructions) and the newest tokens are kept, the middle dropped, and a warning says so. The cut says how much
    of the turn the LM reads (the session tells the client); a cut of older turns only is no cut of the turn."""
    p, tok = step_audio, step_audio.chat.tok
    system = "<|BOT|>system\nYou are a pirate. Answer in one line.<|EOT|>"
    turn = {"role": "user", "content": "".join(f"<audio_{i % 1024}>" for i in range(500))}
    messages = [{"role": "system", "content": "You are a pirate. Answer in one line."}, turn]
    ids = p.chat.prompt_ids(messages)
    with caplog.at_level("INFO"):  # INFO: the caller tells the user of a cut into the turn (chat, serve)
        kept, cut = p.chat.fit_prompt(messages, ids, 120)
    assert len(kept) == 120 and kept[-60:] == ids[-60:]
    assert tok.decode(kept).startswith(system)
    assert "kept the system message" in caplog.text and f"dropped {len(ids) - 120}" in caplog.text
    closing = len(tok.encode("<|EOT|><|BOT|>assistant\n"))
    heard = 120 - len(tok.encode(system, add_bos=True)) - closing  # the turn's own tokens after the system message
    assert cut == PromptCut(tokens=500, kept=heard, limit=120)  # 500 <audio_N> pieces, the template's markers not
    assert kept[-closing - heard:-closing] == ids[-closing - heard:-closing]
    long_system = [{"role": "system", "content": " ".join(["Be a pirate."] * 40)}, turn]
    ids = p.chat.prompt_ids(long_system)
    kept, _ = p.chat.fit_prompt(long_system, ids, 120)  # instructions of more than half the room: the newest tokens win
    assert len(kept) == 120 and kept[0] == tok.bos_id and kept[1:] == ids[-119:]
    history = [*messages, {"role": "assistant", "content": "Arr."}, {"role": "user", "content": "<audio_5>" * 20}]
    kept, cut = p.chat.fit_prompt(history, p.chat.prompt_ids(history), 120)
    assert cut is None and tok.decode(kept).endswith("<audio_5>" * 20 + "<|EOT|><|BOT|>assistant\n")


def test_tts_prompt_layout(step_audio) -> None:
    p = step_audio
    tts, tok = p.tts, p.tts.tok
    spk = tts.speakers["Tingting"]
    ids = tts.prompt_ids("Hello world.", spk)
    code = [tok.audio_offset + c for c in spk.prompt_code]
    assert ids[:2] == [tok.bos_id, tok.bot_id]
    assert ids.count(tok.bot_id) == 5 and ids.count(tok.eot_id) == 4
    start = ids.index(code[0])
    assert ids[start:start + len(code)] == code and ids[start + len(code)] == tok.eot_id
    assert ids[-len(tts._enc("assistant\n")) - 1:] == [tok.bot_id] + tts._enc("assistant\n")
    sys_ids = tts._enc("system\n" + tts_sys_prompt("Tingting"))
    assert ids[2:2 + len(sys_ids)] == sys_ids
    rap_spk, _ = tts.resolve("(RAP) yo", "Tingting")
    assert rap_spk.name == "TingtingRAP"


def test_rap_and_humming_take_the_music_decoder_for_a_cloned_voice_too(step_audio) -> None:
    """As upstream tts.py: a (RAP) / (哼唱) text is decoded by CosyVoice-300M-25Hz-Music whatever the voice; a cloned
    voice keeps its own prompt (it has no RAP variant), under the RAP system prompt."""
    p = step_audio
    wav, rate = sf.read(speech_asset("beckett.wav"), dtype="float32")
    p.register_speaker("beckett-clone", wav, rate, "Ever tried. Ever failed.", cloned=True)
    for text in ("(RAP)Ever tried.", "(哼唱)Ever tried."):
        spk, model = p.tts.resolve(text, "beckett-clone")
        assert spk.name == "beckett-clone" and model is p.tts.music
    spk, model = p.tts.resolve("Ever tried.", "beckett-clone")
    assert spk.name == "beckett-clone" and model is p.tts.common
    assert p.tts.resolve("(RAP)yo", "Tingting")[1] is p.tts.music
    spk, model = p.tts.resolve("yo", "TingtingRAP")  # a sung voice by name, untagged text: upstream's common model
    assert spk.name == "TingtingRAP" and model is p.tts.common


@pytest.mark.parametrize(("speed", "text", "expected"), [
    (1.0, "Hello.", "Hello."), (1.05, "Hello.", "Hello."), (1.2, "Hello.", "(快速1)Hello."),
    (1.5, "Hello.", "(快速2)Hello."), (0.8, "Hello.", "(慢速1)Hello."), (0.25, "Hello.", "(慢速2)Hello."),
    (1.5, "(高兴1)Hello.", "(高兴1)Hello."),  # TTS-3B reads one leading tag: the text's own stays
])
def test_a_speaking_rate_becomes_the_tts_speed_tag_that_the_prompt_reads(speed: float, text: str,
                                                                         expected: str) -> None:
    from speech_decoder.step_tts import instruction_name, with_speed
    assert with_speed(text, speed) == expected
    assert instruction_name(with_speed(text, speed)) == instruction_name(expected)


def test_each_reply_gets_its_own_tag_hook_whose_tag_reaches_the_music_decoder(step_audio) -> None:
    """The pipeline's per-reply hook carries a reply's leading (RAP) to its later sentences, which therefore take the
    Music decoder as the first does; a reply begun meanwhile (another session's) is read without it."""
    p = step_audio
    rap, other = p.new_reply_text(), p.new_reply_text()
    first, later = rap.for_synthesis("(RAP)Yo."), rap.for_synthesis("Check it.")
    assert [p.tts.resolve(t, "Tingting")[1] for t in (first, later)] == [p.tts.music, p.tts.music]
    assert other.for_synthesis("Check it.") == "Check it."


def tts_sys_prompt(name: str) -> str:
    from speech_decoder.step_tts import SYS_WITH_SPEAKER
    return SYS_WITH_SPEAKER.format(name)


async def test_listener_streamed_turn_ids_equal_offline_and_do_not_wait_for_whisper(step_audio, monkeypatch) -> None:
    """A turn's ids come from the stream (equal to offline); its Whisper transcript, for the history, runs beside and
    may come later: the Chat LM's reply starts on the ids."""
    wav, rate = sf.read(speech_asset("beckett.wav"), dtype="float32")
    assert rate == 16000
    wav = wav[: 6 * rate]
    whisper = step_audio.asr.transcribe
    gate = threading.Event()

    def slow_whisper(*args: object) -> str:
        assert gate.wait(30)
        return whisper(*args)

    monkeypatch.setattr(step_audio.asr, "transcribe", slow_whisper)
    listener = step_audio.new_listener()
    try:
        for i in range(0, len(wav), 512):  # 32 ms pieces, as the session feeds them
            listener.feed(wav[i:i + 512])
        whole = await asyncio.wait_for(listener.turn_input(wav, 0, 6000, "en"), 20)
        part = await asyncio.wait_for(listener.turn_input(wav[2 * rate:5 * rate], 2000, 5000, "en"), 20)
        assert not whole.transcript.done()  # Whisper is still busy: the ids did not wait for it
        gate.set()
        transcript = await asyncio.wait_for(whole.transcript, 30)
    finally:
        gate.set()
        listener.close()
    offline = step_audio.audio_tokenizer.tokenize_offline(wav, 16000)
    from streaming_tokenizer.step_audio import ids_to_text
    assert whole.lm_content == ids_to_text(offline)
    assert part.lm_content == ids_to_text(offline[5 * (2000 // 120): 5 * -(-5000 // 120)])
    assert "tried" in transcript.lower()  # the history keeps text (Whisper)


def test_profile_errors(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lacks Step-Audio-Tokenizer/, Step-Audio-Chat/, Step-Audio-TTS-3B/"):
        load_pipeline(AppConfig(profile="step-audio", model_path=tmp_path))
    no_weights = without_chat_weights(tiny_model_dir, tmp_path / "no-chat")
    with pytest.raises(ConfigError, match=r"lacks Step-Audio-Chat/\*.safetensors \(its weights.*--chat-url"):
        load_pipeline(AppConfig(profile="step-audio", model_path=no_weights))
    no_chat = layout_without(tiny_model_dir, tmp_path / "no-chat-folder", "Step-Audio-Chat")
    with pytest.raises(ConfigError, match=r"lacks Step-Audio-Chat/ \(or run the Chat LM on a server and pass "):
        load_pipeline(AppConfig(profile="step-audio", model_path=no_chat))
    with pytest.raises(ConfigError, match=r"lacks Step-Audio-Chat/tokenizer.model \(which --chat-url still needs"):
        load_pipeline(AppConfig(profile="step-audio", model_path=no_chat, chat_url="http://127.0.0.1:9/v1"))
    sub = tiny_model_dir / "Step-Audio-TTS-3B"  # the folder one level too deep
    with pytest.raises(ConfigError, match=f"--model-path is the folder that holds it: {tiny_model_dir.resolve()}"):
        load_pipeline(AppConfig(profile="step-audio", model_path=sub))


def test_the_default_voice_prompt_is_in_the_prefix_cache_from_the_start(step_audio) -> None:
    """The first sentence of the first reply computes only its own tokens, not the ~400 speaker tokens before them."""
    from lm_engine.engine.sequence import Sequence

    p = step_audio
    speaker, _ = p.tts.resolve("", None)
    ids = p.tts.prompt_ids("Hello there, how are you?", speaker)
    common = next(i for i, (a, b) in enumerate(zip(ids, p.tts.prompt_ids("", speaker))) if a != b)
    bm = p.tts_engine.llm.block_manager
    seq = Sequence(-1, ids, bm.block_size)
    bm.allocate(seq)
    try:
        assert common > 100 and seq.num_cached_tokens == common // bm.block_size * bm.block_size
    finally:
        bm.free(seq)


async def test_a_sentence_is_spoken_while_tts_3b_still_generates_it(step_audio) -> None:
    """The served speech path streams within a sentence: the first audio chunk leaves with the first flow window
    (about 25 audio tokens), while TTS-3B still generates the rest, not once the sentence's tokens are all there.
    (test_serve_tiny's 'first delta before response.done' holds even for a path that synthesises a sentence whole.)"""
    chunks = [c async for c in step_audio.synthesize("Hello there, how are you today?", "Tingting")]
    tokens = np.cumsum([c.audio_tokens for c in chunks])
    first = next(i for i, c in enumerate(chunks) if c.pcm.size)
    assert tokens[-1] > 40, tokens[-1]  # enough tokens for more than one flow window
    assert 25 <= tokens[first] <= 35 and tokens[first] < tokens[-1], (tokens[first], tokens[-1])
    assert sum(c.pcm.size for c in chunks[:first + 1]) > 0 and sum(c.pcm.size for c in chunks[first + 1:]) > 0


def test_a_speaker_prompt_is_tokenised_without_its_leading_and_trailing_silence(step_audio) -> None:
    """Upstream tts.py preprocess_prompt_wav calls tokenizer.wav2token with its default enable_trim=True
    (utils.trim_silence: librosa trim at 20 dB, 50 ms kept before the voice, 220 ms after): the silence around a
    speaker's or a clone's prompt wav does not reach the TTS-3B prompt's audio tokens or the flow's prompt tokens."""
    p = step_audio
    wav, rate = sf.read(speech_asset("beckett.wav"), dtype="float32")
    voice = wav[int(0.4 * rate): int(2.4 * rate)]  # "Ever tried." and a little of what follows
    quiet = lambda n: np.zeros(128 * n, np.float32)  # noqa: E731 (whole 128-sample trim frames)
    p.register_speaker("short-pauses", np.concatenate([quiet(10), voice, quiet(10)]), rate, "Ever tried.", cloned=True)
    p.register_speaker("long-pauses", np.concatenate([quiet(200), voice, quiet(150)]), rate, "Ever tried.", cloned=True)
    short, long = p.tts.speakers["short-pauses"].prompt_code, p.tts.speakers["long-pauses"].prompt_code
    assert short == long
    assert len(long) <= (2.0 + 0.27 + 0.1) * 125 / 3  # at most the voice, the kept margins and a trim frame: ids


def test_the_cached_prompt_prefix_has_the_system_prompt_each_text_picks(step_audio) -> None:
    """Upstream tts.py tokenize picks the humming system prompt for a (RAP) / (哼唱) text when "哼唱" occurs anywhere in
    it, else the RAP one: the speaker-prefix cache must not hand one text the other's."""
    from speech_decoder.step_tts import SYS_HUMMING, SYS_RAP

    tts = step_audio.tts
    spk, _ = tts.resolve("(RAP)yo", "Tingting")
    rap, humming = tts._enc("system\n" + SYS_RAP), tts._enc("system\n" + SYS_HUMMING)
    for text, want in (("(RAP)yo", rap), ("(RAP)我不会哼唱", humming), ("(RAP)yo", rap), ("(RAP)我不会哼唱", humming)):
        ids = tts.prompt_ids(text, spk)
        assert ids[2:2 + len(want)] == want, text
