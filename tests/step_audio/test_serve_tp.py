"""`torchrun --nproc-per-node 2 stepaudio-rt serve --profile tiny`: rank 0 serves and drives rank 1, which holds
half of the Chat LM (gloo on the CPU). A greedy turn gives the reply that the one-process server gives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from speech_decoder.step_tts import speakable
from tests.conftest import ServerProcess, free_port
from tests.e2e.helpers import load_pcm24k, open_conversation
from tests.realtime_schema import validate_server_event

pytestmark = pytest.mark.slow


async def _greedy_reply(url: str, speech) -> str:  # type: ignore[no-untyped-def]
    conv = await open_conversation(url)
    try:
        await conv.send({"type": "session.update", "session": {
            "type": "realtime", "temperature": 0.0, "audio": {"input": {"turn_detection": None}}}})
        await conv.wait_for("session.updated")
        await conv.stream(speech, pace=0.0)
        await conv.send({"type": "input_audio_buffer.commit"})
        await conv.send({"type": "response.create"})
        done = await conv.wait_for("response.done", timeout=180)
        assert done["response"]["status"] == "completed", done
        ends = conv.of_type("response.output_audio_transcript.done")
        said = ends[-1]["transcript"] if ends else ""
        # Random weights may answer with nothing speakable (seen in CI twice: no audio, no TTS piece); then the
        # transcripts of both servers are still compared, and any speakable reply must come with audio.
        assert (len(conv.audio_of(done["response"]["id"])) > 0) == speakable(said), said
        for raw in conv.raw:
            validate_server_event(raw)
        return said
    finally:
        await conv.close()


async def test_tensor_parallel_serve_gives_the_single_process_reply(tiny_model_dir, tiny_server, beckett_wav):
    speech = load_pcm24k(beckett_wav)[: 24000 * 3]
    launcher = ("-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()))
    tp2 = ServerProcess("--profile", "tiny", "--model-path", str(tiny_model_dir), "--threads", "2",
                        launcher=launcher)
    try:
        want = await _greedy_reply(tiny_server.ws, speech)
        got = await _greedy_reply(tp2.ws, speech)
        assert "rank 1: following rank 0" in tp2.log()
        # Ctrl-C reaches every rank: rank 0 stops the server; rank 1 printed a KeyboardInterrupt traceback
        tp2.proc.send_signal(signal.SIGINT)
        tp2.proc.wait(30)
        log = tp2.log()
        assert "INFO controller.app: stopped" in log and "KeyboardInterrupt" not in log, log
        assert "Exception ignored" not in log, log  # rank 1 may have left first: the engine's atexit close is quiet
    finally:
        tp2.stop()
    # Random weights answer near-ties: the single-process reply was once empty (EOS first; seen 1 in 3 loaded runs),
    # so an empty reply is no failure as long as the tensor-parallel one is empty too.
    assert got == want


@pytest.mark.parametrize(("extra", "said"), [
    ((), "does not divide the model's kv heads (Step-1's num_attention_groups) (2); sizes that do: 1, 2"),
    (("--chat-url", "http://127.0.0.1:9/v1"), "tensor parallel serving needs --model-path DIR"),
    # the followers loaded without rank 0's folder checks: a FileNotFoundError traceback from rank 1
    (("--model-path", "/tmp/no-such-stepaudio-folder"), "/tmp/no-such-stepaudio-folder does not exist"),
])
def test_every_rank_refuses_what_tensor_parallel_cannot_serve_before_loading(tiny_model_dir, extra, said) -> None:
    """A size that does not divide the Chat LM, or --chat-url: the ranks say so in one line each (no rank's
    traceback, rank 0 never says ready), before any model loads. torchrun stops the other ranks once one has
    failed, so not every rank may get to say it."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "3", "--master-port",
                           str(free_port()), "-m", "controller.cli", "serve", "--profile", "tiny", "--model-path",
                           str(tiny_model_dir), "--port", "0", *extra], capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert 1 <= out.count(said) <= 3, out  # one line from each rank that got that far
    assert "[rank" not in out and "loading" not in out and "ready" not in out, out
    assert "following rank 0" not in out and "FileNotFoundError" not in out, out  # no follower loaded anything


def test_a_cut_short_chat_checkpoint_is_one_line_from_every_rank(tiny_model_dir, tmp_path) -> None:
    """A Chat LM weights file cut short (a download that stopped): the ranks name the file in one line each, before
    any model loads (its header says how long it is). Rank 1 printed a CheckpointError traceback of 30 lines."""
    from tests.step_audio.conftest import layout_without

    weights = Path("Step-Audio-Chat") / "model-00001.safetensors"
    model = layout_without(tiny_model_dir, tmp_path / "model", str(weights))
    (model / weights).write_bytes((tiny_model_dir / weights).read_bytes()[:300_000])
    out = _refused_torchrun_serve(model)
    assert f"error: {model} lacks {weights} (cut short: 300,000 of its " in out, out
    assert "[rank" not in out and "ready" not in out and "loading" not in out, out


def _ctrl_c_tp_serve(model_dir: Path, log: Path, when: Callable[[str], bool], *, wait_s: float,
                     env: dict[str, str] | None = None) -> str:
    """Starts a two-rank torchrun serve of `model_dir`, sends its process group SIGINT once `when(log text)` holds
    (or after 120 s), waits up to `wait_s` for it to exit, and returns its log."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                                 "--master-port", str(free_port()), "-m", "controller.cli", "serve",
                                 "--profile", "tiny", "--model-path", str(model_dir), "--port", "0"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not when(log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: torchrun and every rank
        proc.wait(wait_s)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return log.read_text()


def test_ctrl_c_during_the_model_load_stops_every_rank_at_once(tiny_model_dir, tmp_path) -> None:
    """Ctrl-C while the models load: rank 0 went on loading and then waited in gloo for rank 1, which had stopped,
    until torchrun killed it 30 s later, or failed with a wrong "cannot load ...: Gloo ... Connection closed by
    peer"."""
    # "listening on": rank 0's load begins
    text = _ctrl_c_tp_serve(tiny_model_dir, tmp_path / "serve.log", lambda log: "listening on" in log, wait_s=120)
    assert "SIGINT: stopped during the tensor-parallel model load" in text, text
    assert "cannot load" not in text and "ready:" not in text, text
    assert "Unable to shutdown process" not in text, text  # torchrun's SIGKILL, 30 s after its SIGINT went unheard


def test_ctrl_c_once_the_models_have_loaded_stops_the_server_as_a_loaded_one(tiny_model_dir, tmp_path) -> None:
    """Ctrl-C (rank 0's SIGINT, then torchrun's, which forwards it) once the models had loaded, while the bus waited
    for the broker to take "online": rank 0 said 'stopped during the tensor-parallel model load' of a load that had
    ended, and left without closing its sessions' server, the bus or the models. It now stops as a loaded server
    does, without cutting that stop short at torchrun's signal (the terminal's Ctrl-C comes to rank 0 twice)."""
    from tests.mqtt.helpers import ctrl_c_while_the_broker_takes_online

    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(free_port()), "-m", "controller.cli", "serve", "--profile", "tiny", "--model-path",
               str(tiny_model_dir), "--port", "0"]
    # torchrun's exit status says it was signalled
    _, text = ctrl_c_while_the_broker_takes_online(command, tmp_path,
                                                   held_at=f"loading {tiny_model_dir / 'Step-Audio-Chat'} (tp=2)",
                                                   loaded="step-audio pipeline ready", group=True)
    assert "SIGINT: stopping\n" in text.partition("step-audio pipeline ready")[2], text
    assert "model load" not in text and "signalled twice" not in text and "ready:" not in text, text
    assert "INFO controller.app: stopped" in text and "Unable to shutdown process" not in text, text


def _rank_pid(launcher_pid: int, rank: int) -> int:
    """The pid of torchrun's worker that runs `rank`."""
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == launcher_pid and f"RANK={rank}".encode() in env:
            return int(entry.name)
    raise AssertionError(f"no rank {rank} under {launcher_pid}")


def _healthz(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def _healthz_once_down(url: str) -> dict:
    """/healthz's answer once it is no longer 200 (it asks the pipeline at most every 5 s), which must be 503
    chat_lm_down."""
    for _ in range(300):
        status, body = await asyncio.to_thread(_healthz, url)
        if status != 200:
            break
        await asyncio.sleep(0.1)
    assert (status, body["status"]) == (503, "chat_lm_down"), body
    return body


async def _failed_reply(url: str) -> str:
    """A text turn whose reply must fail; returns the message of the error event that says so."""
    conv = await open_conversation(url)
    try:
        await conv.update_session(output_modalities=["text"])
        n = await conv.ask("Are you there?")
        done = await conv.wait_for("response.done", after=n, timeout=60)
        assert done["response"]["status"] == "failed", done
        error = await conv.wait_for("error", after=n, timeout=10)
        assert error["error"]["code"] == "response_failed", error
        return error["error"]["message"]
    finally:
        await conv.close()


async def test_a_hung_rank_fails_the_reply_and_healthz_says_the_chat_lm_is_down(tiny_model_dir):
    """A follower that stops answering (kill -STOP): every reply hung for good (gloo waits 30 min) while /healthz
    said ok. Now the step gives up after --tp-step-timeout, the reply fails with an error event, /healthz answers
    503 chat_lm_down, and the server still takes sessions, whose replies fail at once."""
    launcher = ("-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()))
    tp2 = ServerProcess("--profile", "tiny", "--model-path", str(tiny_model_dir), "--threads", "2",
                        "--tp-step-timeout", "5", launcher=launcher)
    follower = _rank_pid(tp2.proc.pid, 1)
    try:
        os.kill(follower, signal.SIGSTOP)
        said = await _failed_reply(tp2.ws)
        why = "a tensor-parallel step failed (a rank hung for 5 s or exited)"
        assert why in said, said
        body = await _healthz_once_down(tp2.http)
        assert body["reason"].startswith(f"the chat LM is down: {why}"), body
        assert why in await _failed_reply(tp2.ws)  # a new session, refused no step
        assert "tensor-parallel step failed" in tp2.log(), tp2.log()  # the detail, for the operator
        # The follower resumes: its step fails, it leaves quietly (a traceback and a non-zero exit had made torchrun
        # stop rank 0, the whole server), and rank 0 goes on saying why.
        os.kill(follower, signal.SIGCONT)
        for _ in range(120):
            if not os.path.exists(f"/proc/{follower}") or open(f"/proc/{follower}/stat").read().split()[2] == "Z":
                break
            await asyncio.sleep(0.25)
        await asyncio.sleep(2.0)  # time for torchrun to have stopped rank 0, had it meant to
        assert tp2.proc.poll() is None, tp2.log()
        assert (await _healthz_once_down(tp2.http))["status"] == "chat_lm_down"
        log = tp2.log()
        assert "rank 1: left tensor parallelism after a failed step" in log and "Traceback" not in log, log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(follower, signal.SIGKILL)
        tp2.stop()


async def test_a_dead_rank_fails_replies_with_a_clean_message(tiny_model_dir, tmp_path):
    """Rank 1 killed while rank 0 lives on (the ranks started without torchrun, which would stop rank 0 too, as on
    two hosts): the client's error read "response generation failed: engine step failed for sequences [1]:
    RuntimeError: [/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer
    [127.0.0.1]:43188. This is typically caused by a remote worker crashing. ... GLHF! 🏖️", and the server logged
    two chained tracebacks a reply. Now the client reads why, and the log has gloo's detail once."""
    args = ("--profile", "tiny", "--model-path", str(tiny_model_dir), "--threads", "2")
    ranks = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    with open(tmp_path / "rank1.log", "wb") as log:
        follower = subprocess.Popen([sys.executable, "-m", "controller.cli", "serve", "--port", "0", *args],
                                    env={**os.environ, **ranks, "RANK": "1", "LOCAL_RANK": "1"},
                                    stdout=log, stderr=subprocess.STDOUT)
    try:
        server = ServerProcess(*args, env={**ranks, "RANK": "0", "LOCAL_RANK": "0"})
        try:
            follower.kill()
            follower.wait(30)
            for _ in range(2):  # the step that finds rank 1 gone, then one refused
                said = await _failed_reply(server.ws)
                assert said == ("response generation failed: the chat LM is down: a tensor-parallel step failed "
                                "(a rank hung for 60 s or exited); the server needs a restart"), said
            await _healthz_once_down(server.http)
            log = server.log()
            assert "Traceback" not in log and log.count("Connection closed by peer") == 1, log
        finally:
            server.stop()
    finally:
        if follower.poll() is None:
            follower.kill()


def test_ctrl_c_while_the_ranks_import_exits_without_their_tracebacks(tiny_model_dir, tmp_path) -> None:
    """Ctrl-C in a torchrun serve's first seconds, while rank 0 still imports (Whisper, torch) before its signal
    handlers are in: it printed a KeyboardInterrupt traceback of those imports. A faster_whisper that takes a minute
    to import holds the ranks in that window here. (torchrun's own SignalException traceback is expected.)"""
    slow = tmp_path / "slow" / "faster_whisper"
    slow.mkdir(parents=True)
    (slow / "__init__.py").write_text("import time\nprint('importing faster_whisper', flush=True)\ntime.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(slow.parent), str(Path(__file__).parents[2])])}
    text = _ctrl_c_tp_serve(tiny_model_dir, tmp_path / "serve.log",
                            lambda log: log.count("importing faster_whisper") >= 2, wait_s=60, env=env)
    assert text.count("importing faster_whisper") == 2, text
    assert "KeyboardInterrupt" not in text and "[rank" not in text, text


def test_a_chat_config_json_fault_is_not_blamed_on_torchrun(tiny_model_dir, tmp_path) -> None:
    """A Chat config.json the engine cannot run, under torchrun: its one line read 'torchrun --nproc-per-node 2:
    DIR/Step-Audio-Chat: DIR/Step-Audio-Chat/config.json: ...', a fault of the folder told as one of the launch."""
    import json

    from tests.step_audio.conftest import layout_without

    rel = "Step-Audio-Chat/config.json"
    model = layout_without(tiny_model_dir, tmp_path / "model", rel)
    config = json.loads((tiny_model_dir / rel).read_text())
    (model / rel).write_text(json.dumps({**config, "max_seq_len": 0}))
    out = _refused_torchrun_serve(model)
    assert f"stepaudio-rt serve: error: {model / rel}: max_seq_len is 0; it must be at least 1\n" in out, out
    assert "error: torchrun" not in out and "[rank" not in out and "loading" not in out, out


def _refused_torchrun_serve(model: Path) -> str:
    """The output of `torchrun --nproc-per-node 2 ... serve --profile tiny --model-path MODEL`, which must fail."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                           str(free_port()), "-m", "controller.cli", "serve", "--profile", "tiny", "--model-path",
                           str(model), "--port", "0"], capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    return proc.stdout + proc.stderr
