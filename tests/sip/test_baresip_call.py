"""A second real SIP peer: baresip (Debian's baresip-core) calls the bridge and records what it hears.

baresip runs headless: the aufile module plays Beckett's "Ever tried. Ever failed." at 8 kHz followed by silence
(baresip hangs up when the file ends), the sndfile module records the decoded audio it received. We assert the
agent heard the caller, baresip received speech energy, and the hang-up closed the agent session.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.sip.media import free_udp_tcp_port, free_udp_port, heard_beckett, pcm8k_wav, peak_rms_dbfs, \
    speech_seconds, wait_for
from tests.sip.peers import BridgeProcess, env_without_display, need

pytestmark = pytest.mark.slow

CONFIG = """poll_method\t\tpoll
sip_listen\t\t127.0.0.1:{sip_port}
net_interface\t\t127.0.0.1
audio_source\t\taufile,{speech}
audio_player\t\taubridge,nil
audio_alert\t\taubridge,nil
ausrc_srate\t\t8000
auplay_srate\t\t8000
rtp_ports\t\t{rtp_lo}-{rtp_hi}
module_path\t\t/usr/lib/baresip/modules
module\t\t\tg711.so
module\t\t\taufile.so
module\t\t\taubridge.so
module\t\t\tsndfile.so
module_app\t\taccount.so
module_app\t\tmenu.so
snd_path\t\t{rec}
"""


def test_baresip_caller_hears_the_agent(embedded_server, beckett_wav: Path, tmp_path: Path) -> None:
    need("baresip", "sox")
    conf = tmp_path / "baresip"
    rec = tmp_path / "rec"
    conf.mkdir()
    rec.mkdir()
    speech = tmp_path / "speech8k.wav"
    subprocess.run(["sox", "-D", str(beckett_wav), str(tmp_path / "first.wav"), "trim", "0", "2.9"], check=True)
    pcm8k_wav(tmp_path / "first.wav", speech, lead_s=0.5, tail_s=16.0)  # the call lasts as long as this file
    rtp_lo = free_udp_port() & ~1
    (conf / "config").write_text(CONFIG.format(sip_port=free_udp_tcp_port(), speech=speech, rec=rec,
                                               rtp_lo=rtp_lo, rtp_hi=rtp_lo + 10))
    (conf / "accounts").write_text("<sip:caller@127.0.0.1>;regint=0;audio_codecs=PCMA,PCMU\n")
    bridge = BridgeProcess(embedded_server.ws, tmp_path, "--silence-ms", "1000",
                           "--instructions", "You are on the phone. Answer in one short sentence.")
    try:
        out = subprocess.run(["baresip", "-f", str(conf), "-e", f"/dial sip:agent@127.0.0.1:{bridge.port}",
                              "-t", "40"], capture_output=True, text=True, timeout=60, env=env_without_display())
        calls = wait_for(bridge.calls, 10)
    finally:
        bridge.stop()
    assert "Call established" in out.stdout or "established" in out.stdout, out.stdout[-3000:]
    assert len(calls) == 1, bridge.log()
    call = calls[0]
    assert call["end_reason"] == "remote hangup", (call, out.stdout[-2000:])
    assert call["codec"] == "PCMA"  # baresip's first choice; the bridge takes the offerer's preference
    assert heard_beckett(call["user_transcripts"]), call
    assert call["rtp_out_packets"] > 0
    assert wait_for(lambda: embedded_server.metrics()["stepaudio_sessions_live"] == 0, 10)

    received = sorted(rec.glob("*-dec.wav"))
    assert received, f"baresip recorded nothing: {list(rec.iterdir())}"
    audio, rate = sf.read(str(received[0]), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    assert rate == 8000
    assert peak_rms_dbfs(audio, rate) > -35.0
    # A one-sentence answer may be a word ("Hello!" is ~0.5 s: a CI run heard exactly 0.5 s); the call log says the
    # agent spoke, the recording that the caller heard at least a word of it.
    assert call["agent_transcripts"], call
    assert speech_seconds(audio, rate) >= 0.3, (call, speech_seconds(audio, rate))
    assert np.isfinite(audio).all()


def _ctrl(port: int, command: str, params: str = "") -> None:
    """One baresip ctrl_tcp command (a netstring of JSON)."""
    data = json.dumps({"command": command, "params": params, "token": command}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"%d:%s," % (len(data), data))
        time.sleep(0.5)  # let baresip read it before the socket closes


def test_baresip_dtmf_is_heard_once_and_costs_no_audio(embedded_server, tmp_path: Path) -> None:
    """RFC 4733: baresip's key presses reach the agent once each, and their packets, which take sequence numbers
    of the audio stream (2.1), are not counted as lost audio."""
    need("baresip", "sox")
    conf, rec = tmp_path / "baresip", tmp_path / "rec"
    conf.mkdir()
    rec.mkdir()
    silence = tmp_path / "silence.wav"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(silence), "trim", "0", "40"], check=True)
    rtp_lo, ctrl = free_udp_port() & ~1, free_udp_tcp_port()  # ctrl_tcp listens on TCP
    (conf / "config").write_text(CONFIG.format(sip_port=free_udp_tcp_port(), speech=silence, rec=rec, rtp_lo=rtp_lo,
                                               rtp_hi=rtp_lo + 10)
                                 + f"module_app\t\tctrl_tcp.so\nctrl_tcp_listen\t\t127.0.0.1:{ctrl}\n")
    (conf / "accounts").write_text("<sip:caller@127.0.0.1>;regint=0;audio_codecs=PCMU\n")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    log = open(tmp_path / "baresip.log", "wb")  # noqa: SIM115 - closed in finally
    phone = subprocess.Popen(["baresip", "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                             env=env_without_display())
    try:
        assert wait_for(lambda: b"baresip is ready" in (tmp_path / "baresip.log").read_bytes(), 20)
        _ctrl(ctrl, "dial", f"sip:agent@127.0.0.1:{bridge.port}")
        assert wait_for(lambda: "confirmed (ACK)" in bridge.log(), 20), bridge.log()
        for digit in "12#":
            _ctrl(ctrl, "sndcode", digit)
            time.sleep(1.0)
        _ctrl(ctrl, "hangup")
        calls = wait_for(bridge.calls, 15)
    finally:
        phone.terminate()
        phone.wait(10)
        log.close()
        bridge.stop()
    assert len(calls) == 1, bridge.log()
    call = calls[0]
    assert call["dtmf"] == ["1", "2", "#"], call
    assert call["rtp_in_packets"] > 100 and call["rtp_lost"] == 0, call
    assert call["end_reason"] == "remote hangup"
