"""What one call's agent side does with the caller's key presses and the agent's events (agent_call.py), on a
real event loop with a fake agent connection that records what the bridge sends it."""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import Coroutine

from clients import events as ev
from clients.sip.agent_call import AgentCall
from clients.sip.bridge_config import BridgeConfig
from clients.sip.rtp import RtpPacket
from clients.sip.sdp import SessionDescription, negotiate
from clients.sip.ua_events import IncomingCall

OFFER = (b"v=0\r\no=u 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")
PAUSE_S = 0.2


class _Host:
    def __init__(self) -> None:
        self.config = BridgeConfig(server_url="ws://127.0.0.1:9/v1/realtime", dtmf_pause_s=PAUSE_S)
        self.rng = random.Random(0)

    def pump(self) -> None: ...

    def spawn(self, coro: Coroutine[object, object, None]) -> None:
        asyncio.ensure_future(coro)

    def call_finished(self, call: object) -> None: ...


class _Agent:
    """The agent connection: what the bridge sent, by event type ("item" for a user text item)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, event: dict) -> None:  # type: ignore[type-arg]
        item = event.get("item")
        self.sent.append(item["content"][0]["text"] if isinstance(item, dict) else str(event["type"]))


def _call() -> tuple[AgentCall, _Agent]:
    media = negotiate(SessionDescription.parse(OFFER))
    offer = IncomingCall("call1", "c1", "sip:a@127.0.0.1", ("127.0.0.1", 5070), media)
    call = AgentCall(_Host(), offer)  # type: ignore[arg-type]
    agent = _Agent()
    call.client = agent  # type: ignore[assignment]
    call.answered = True  # a call in progress: keys pressed while it rings wait for the answer
    return call, agent


def _response(kind: str) -> ev.ServerEvent:
    return ev.ServerEvent(f"response.{kind}", {"response": {"id": "resp_1"}})


async def _settle(agent: _Agent, n: int) -> list[str]:
    """What the agent was sent once it holds `n` events (or after 10 s), and a few pauses more: nothing else came."""
    for _ in range(500):
        if len(agent.sent) >= n:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(PAUSE_S * 2)
    return agent.sent


def test_the_agent_answers_a_keyed_in_number_once_the_caller_paused() -> None:
    """A caller who presses keys expects an answer, as after speaking; one keying in a number wants one answer to
    the whole number, so the reply is asked for after the pause that follows the last key."""

    async def main() -> list[str]:
        call, agent = _call()
        for digit in "12#":
            call.dtmf(digit)
        return await _settle(agent, 4)

    assert asyncio.run(main()) == ["DTMF 1", "DTMF 2", "DTMF #", "response.create"]


def test_keys_pressed_while_the_agent_speaks_are_answered_after_its_reply() -> None:
    """The server refuses a second reply while one is under way: the keys' reply is asked for at response.done;
    a reply that the caller's speech started after its keys answers them, and none is asked for on top of it."""

    async def main() -> tuple[list[str], list[str]]:
        call, agent = _call()
        call._on_agent_event(_response("created"))
        call.dtmf("5")
        during = list(await _settle(agent, 1))
        call._on_agent_event(_response("done"))
        await _settle(agent, 2)
        call.dtmf("7")
        call._on_agent_event(_response("created"))  # the caller spoke: the server's VAD started a reply
        call._on_agent_event(_response("done"))
        return during, await _settle(agent, 3)

    during, after = asyncio.run(main())
    assert during == ["DTMF 5"]
    assert after == ["DTMF 5", "response.create", "DTMF 7"]


def test_keys_followed_by_speech_are_answered_by_the_reply_to_the_speech() -> None:
    """A caller presses a key and starts talking before the pause is over (or while the agent's reply is still
    under way): no reply is asked for in the middle of its words; the reply its turn gets answers the keys."""

    async def main() -> list[str]:
        call, agent = _call()
        call.dtmf("1")
        call._on_agent_event(ev.ServerEvent("input_audio_buffer.speech_started", {}))
        await asyncio.sleep(PAUSE_S * 5)  # (a reply asked for would be here by now)
        call._on_agent_event(_response("created"))
        call.dtmf("2")
        await asyncio.sleep(PAUSE_S * 5)  # the timer fires while the reply is under way: the keys wait for its end
        call._on_agent_event(ev.ServerEvent("input_audio_buffer.speech_started", {}))  # the caller barges in
        call._on_agent_event(_response("done"))  # cancelled
        await asyncio.sleep(PAUSE_S * 5)
        return agent.sent

    assert asyncio.run(main()) == ["DTMF 1", "DTMF 2"]


def test_keys_followed_by_speech_that_gets_no_reply_are_still_answered() -> None:
    """A caller presses a key and then coughs (or a noise starts the server's VAD): the server answers a turn that
    held no words with a reply that says nothing (response.done, completed, no output). The key waited for that
    turn's reply, so it was never answered and the caller heard silence. It is asked for after the empty reply,
    once: a reply asked for the keys that says nothing too is not asked again."""

    def done(output: list[object]) -> ev.ServerEvent:
        return ev.ServerEvent("response.done", {"response": {"id": "resp_1", "status": "completed", "output": output}})

    async def main() -> list[str]:
        call, agent = _call()
        call.dtmf("1")
        call._on_agent_event(ev.ServerEvent("input_audio_buffer.speech_started", {}))
        call._on_agent_event(ev.ServerEvent("input_audio_buffer.speech_stopped", {}))
        call._on_agent_event(_response("created"))  # the reply to the cough
        call._on_agent_event(done([]))
        await _settle(agent, 2)
        call._on_agent_event(_response("created"))  # the keys' reply, asked for
        call._on_agent_event(done([]))  # the LM had nothing to say
        await asyncio.sleep(PAUSE_S * 5)
        call.dtmf("2")
        call._on_agent_event(ev.ServerEvent("input_audio_buffer.speech_started", {}))
        call._on_agent_event(_response("created"))  # words this time: the reply answers the keys too
        call._on_agent_event(done([{"type": "message", "role": "assistant"}]))
        await asyncio.sleep(PAUSE_S * 5)
        return agent.sent

    assert asyncio.run(main()) == ["DTMF 1", "response.create", "DTMF 2"]


def _delta(audio: bytes) -> ev.ServerEvent:
    data = {"response_id": "resp_1", "delta": base64.b64encode(audio).decode()}
    return ev.ServerEvent("response.output_audio.delta", data)


def test_talking_over_a_reply_between_two_pieces_of_its_audio_is_a_barge_in() -> None:
    """The agent's reply is under way and its queue just ran dry (all sent, the next piece still being
    synthesized) when the caller talks over it: that is a barge-in for the call log, and the rest of that reply
    must not play over the caller."""

    async def main() -> AgentCall:
        call, _ = _call()
        call._on_agent_event(_response("created"))
        call._on_agent_event(_delta(b"\x10" * 160))
        while call.line.outbound.queued:
            call.line.outbound.tick(fill=True)  # played out: the queue is empty
        call._on_agent_event(ev.ServerEvent("input_audio_buffer.speech_started", {}))
        call._on_agent_event(_delta(b"\x20" * 320))  # the reply's next piece, sent before the server cancelled it
        return call

    call = asyncio.run(main())
    assert call.record.barge_ins == 1
    assert call.line.outbound.queued == 0


def test_on_hold_the_call_log_counts_what_the_caller_sent_not_the_silence_filling_its_quiet() -> None:
    """inbound_on_hold_frames tells the operator how much hold music the caller sent (kept from the agent). A
    held phone that sends nothing must count 0, though the jitter buffer fills its quiet with silence frames."""
    source = ("127.0.0.1", 6000)

    async def main() -> tuple[AgentCall, _Agent]:
        call, agent = _call()
        call.line.expect(source)
        for seq in range(5):  # the caller talks, then holds the call
            call._on_rtp(RtpPacket(0, seq, seq * 160, 0x1234, b"\x10" * 160).serialize(), source)
        call.media_changed(negotiate(SessionDescription.parse(OFFER + b"a=sendonly\r\n")))
        pace = asyncio.create_task(call._pace())
        await asyncio.sleep(0.6)  # a held line, quiet
        sent_before = len(agent.sent)
        for seq in range(5, 8):  # three packets of hold music
            call._on_rtp(RtpPacket(0, seq, seq * 160, 0x1234, b"\x20" * 160).serialize(), source)
        await asyncio.sleep(0.2)
        pace.cancel()
        assert len(agent.sent) == sent_before  # the hold music never reached the agent
        return call, agent

    call, _ = asyncio.run(main())
    assert call.record.inbound_on_hold_frames == 3
