"""The protocol fuzzer's seeded random client: Realtime client events, valid and invalid, as raw frames.

Every event gets an event_id ("fz1", "fz2", ...) unless it is one the server cannot read an id from (bad JSON, no
object, random bytes, an event over the size limit); `Sent.must_fail` marks those the server has to refuse. Valid
events may still be refused (a commit of too little audio, a cancel with no reply): at most one error each.
tests/controller/test_protocol_fuzz.py runs it and checks what the server sent back.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass

import numpy as np

from tests.controller.scripted_pipeline import speech
from tests.e2e.helpers import RATE, silence, to_pcm16


@dataclass(frozen=True, slots=True)
class Sent:
    raw: str | bytes
    event_id: str | None  # the id the server can read back from it
    must_fail: bool  # an event the server has to refuse


class EventMaker:
    """Random client events. `seen`: the server events received so far (the list grows), to aim at real items,
    responses and function calls."""

    def __init__(self, rng: random.Random, seen: list[dict]) -> None:
        self.rng = rng
        self.seen = seen
        self.n = 0

    def next(self) -> list[Sent]:
        """One event, or a few that make a scene: a spoken turn, a typed question."""
        kinds = [(self.valid, 12), (self.invalid, 4), (self.garbage, 1), (self.extreme, 1), (self.turn, 2),
                 (self.question, 2)]
        make = self.rng.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
        return make()

    def _eid(self) -> str:
        self.n += 1
        return f"fz{self.n}"

    def turn(self) -> list[Sent]:
        """Speech and the silence that ends its turn under server_vad, in 100 ms appends."""
        pcm = to_pcm16(np.concatenate([speech(self.rng.choice([0.3, 1.0])), silence(0.7)]))
        step = 2 * RATE // 10
        return [self._sent({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i:i + step]).decode()})
                for i in range(0, len(pcm), step)]

    def question(self) -> list[Sent]:
        return [self._sent({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Why?"}]}}),
            self._sent({"type": "response.create"})]

    def _sent(self, event: dict) -> Sent:
        eid = self._eid()
        return Sent(json.dumps({**event, "event_id": eid}), eid, must_fail=False)

    # ---- valid events (some may still be refused: a commit of nothing, a cancel with no reply) ----

    def valid(self) -> list[Sent]:
        r = self.rng
        eid = self._eid()
        makers = [self.session_update, self.append, self.append, self.append, self.commit, self.clear, self.item_create,
                  self.item_other, self.response_create, self.response_cancel, self.output_clear]
        event = r.choice(makers)()
        unknown = r.random() < 0.1
        if unknown:  # refused as the API refuses it (unknown_parameter)
            event["x_unknown_field"] = r.choice([1, "x", None, {"a": []}])
        event["event_id"] = eid
        return [Sent(self._json(event), eid, must_fail=unknown)]

    def _json(self, event: dict) -> str | bytes:
        raw = json.dumps(event)
        return raw.encode() if self.rng.random() < 0.05 else raw  # JSON in a binary frame is read as text

    def session_update(self) -> dict:
        r = self.rng
        session: dict = {"type": "realtime"}
        if r.random() < 0.4:
            session["instructions"] = r.choice(["", "Be brief.", "x" * r.randint(1, 400)])
        if r.random() < 0.3:
            session["output_modalities"] = r.choice([["audio"], ["text"]])
        audio_in: dict = {}
        if r.random() < 0.5:
            audio_in["turn_detection"] = r.choice([None, {"type": "server_vad"}, {
                "type": "server_vad", "silence_duration_ms": r.randint(200, 900), "threshold": r.random(),
                "prefix_padding_ms": r.randint(0, 500), "create_response": r.random() < 0.7,
                "interrupt_response": r.random() < 0.7}, {"type": "semantic_vad", "eagerness": "high"}])
        if r.random() < 0.2:
            audio_in["format"] = r.choice([{"type": "audio/pcm", "rate": 24000}, {"type": "audio/pcmu"},
                                           {"type": "audio/pcma"}])
        if r.random() < 0.2:
            audio_in["transcription"] = r.choice([None, {"model": "whisper-1"}, {"language": "en"}])
        audio_out: dict = {}
        if r.random() < 0.2:
            audio_out["format"] = r.choice([{"type": "audio/pcm", "rate": 24000}, {"type": "audio/pcmu"}])
        if r.random() < 0.2:
            audio_out["speed"] = r.uniform(0.25, 1.5)
        if audio_in or audio_out:
            session["audio"] = {k: v for k, v in (("input", audio_in), ("output", audio_out)) if v}
        if r.random() < 0.2:
            session["max_output_tokens"] = r.choice(["inf", r.randint(1, 4096)])
        if r.random() < 0.3:
            session["tools"] = [{"type": "function", "name": "get_time", "description": "time",
                                 "parameters": {"type": "object", "properties": {}}}]
            session["tool_choice"] = r.choice(["auto", "none", "required"])
        return {"type": "session.update", "session": session}

    def _samples(self) -> bytes:
        r = self.rng
        seconds = r.choice([0.0, 0.02, 0.1, 0.3, 1.0])
        pcm = speech(seconds) if r.random() < 0.5 else silence(seconds)
        data = to_pcm16(pcm)
        return data[:-1] if data and r.random() < 0.15 else data  # an odd byte count: half a sample

    def append(self) -> dict:
        return {"type": "input_audio_buffer.append", "audio": base64.b64encode(self._samples()).decode()}

    def commit(self) -> dict:
        return {"type": "input_audio_buffer.commit"}

    def clear(self) -> dict:
        return {"type": "input_audio_buffer.clear"}

    def output_clear(self) -> dict:
        return {"type": "output_audio_buffer.clear"}

    def _item_id(self) -> str:
        """Mostly a real item, often the newest (a reply still streaming, a turn still being transcribed)."""
        ids = [e["item"]["id"] for e in self.seen if e["type"] in ("conversation.item.added",
                                                                   "response.output_item.added")]
        r = self.rng.random()
        if not ids or r < 0.2:
            return f"item_nope{self.rng.randint(0, 9)}"
        return ids[-1] if r < 0.6 else self.rng.choice(ids)

    def _item(self) -> dict:
        r = self.rng
        role = r.choice(["user", "user", "assistant", "system"])
        ctype = {"user": "input_text", "assistant": "output_text", "system": "input_text"}[role]
        item: dict = {"type": "message", "role": role, "content": [{"type": ctype, "text": r.choice(["hi", "", "?"])}]}
        if role == "user" and r.random() < 0.2:
            item["content"] = [{"type": "input_audio", "audio": base64.b64encode(to_pcm16(speech(0.3))).decode()}]
        if r.random() < 0.2:
            item["id"] = f"item_c{r.randint(0, 5)}"  # may repeat: a duplicate id is refused
        return item

    def item_create(self) -> dict:
        calls = [e["item"]["call_id"] for e in self.seen
                 if e["type"] == "response.output_item.added" and e["item"]["type"] == "function_call"]
        if calls and self.rng.random() < 0.5:
            return {"type": "conversation.item.create", "item": {
                "type": "function_call_output", "call_id": self.rng.choice(calls), "output": '{"time": "noon"}'}}
        event: dict = {"type": "conversation.item.create", "item": self._item()}
        if self.rng.random() < 0.3:
            event["previous_item_id"] = self.rng.choice(["root", self._item_id()])
        return event

    def item_other(self) -> dict:
        r = self.rng
        kind = r.choice(["retrieve", "delete", "truncate"])
        event: dict = {"type": f"conversation.item.{kind}", "item_id": self._item_id()}
        if kind == "truncate":
            event.update(content_index=0, audio_end_ms=r.choice([0, 10, 500, 100000]))
        return event

    def response_create(self) -> dict:
        r = self.rng
        if r.random() < 0.3:
            return {"type": "response.create"}
        resp: dict = {}
        if r.random() < 0.3:
            resp["conversation"] = r.choice(["auto", "none"])
        if r.random() < 0.3:
            resp["output_modalities"] = r.choice([["audio"], ["text"]])
        if r.random() < 0.2:
            resp["instructions"] = "Answer."
        if r.random() < 0.2:
            resp["max_output_tokens"] = r.choice(["inf", r.randint(1, 10)])
        if r.random() < 0.2:
            resp["metadata"] = {"k": "v"}
        if r.random() < 0.2:
            resp["input"] = r.choice([[], [self._item()], [{"type": "item_reference", "id": self._item_id()}]])
        return {"type": "response.create", "response": resp}

    def response_cancel(self) -> dict:
        event: dict = {"type": "response.cancel"}
        if self.rng.random() < 0.3:
            ids = [e["response"]["id"] for e in self.seen if e["type"] == "response.created"]
            event["response_id"] = self.rng.choice(["resp_nope", *ids])
        return event

    # ---- events the server must refuse, each with one error naming its event_id ----

    def invalid(self) -> list[Sent]:
        r = self.rng
        eid: str | None = self._eid()
        cases: list[dict] = [
            {"type": "no.such.event"},
            {"type": 7},
            {},
            {"type": "input_audio_buffer.append"},
            {"type": "input_audio_buffer.append", "audio": r.choice(["@@@", "abc", "A===", 12, None, ["AA"]])},
            {"type": "session.update"},
            {"type": "session.update", "session": r.choice([[], "x", 1, None])},
            {"type": "session.update", "session": {"type": "realtime", "instructions": 5}},
            {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["smell"]}},
            {"type": "session.update", "session": {"type": "realtime", "max_output_tokens": r.choice([0, -1, 10**12,
                                                                                                     "lots", 1.5])}},
            {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
                "format": {"type": "audio/ogg"}}}}},
            {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": {
                "type": "server_vad", "threshold": r.choice([-1, 2, "high"])}}}}},
            {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": {
                "type": "server_vad", "silence_duration_ms": r.choice([-5, "x", True])}}}}},
            {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {
                "speed": r.choice([0, 9, "fast"])}}}},
            {"type": "session.update", "session": {"type": "realtime", "temperature": r.choice([-1, 3, "hot"])}},
            {"type": "session.update", "session": {"type": "realtime", "tool_choice": "required", "tools": []}},
            {"type": "conversation.item.create"},
            {"type": "conversation.item.create", "item": {"type": "message", "role": "robot", "content": []}},
            {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": "hi"}},
            {"type": "conversation.item.create", "item": {"type": "item_reference", "id": "x"}},
            {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "nope",
                                                          "output": "x"}},
            {"type": "conversation.item.create", "previous_item_id": "item_missing",
             "item": {"type": "message", "role": "user", "content": []}},
            {"type": "conversation.item.retrieve", "item_id": r.choice([None, 5, "item_missing"])},
            {"type": "conversation.item.delete", "item_id": r.choice([None, 5, "item_missing"])},
            {"type": "conversation.item.truncate", "item_id": "item_missing", "content_index": 0, "audio_end_ms": 0},
            {"type": "conversation.item.truncate", "item_id": self._item_id(), "content_index": -1,
             "audio_end_ms": 0},
            {"type": "conversation.item.truncate", "item_id": self._item_id(), "content_index": 0,
             "audio_end_ms": r.choice([-1, "x", 1.5])},
            {"type": "response.create", "response": r.choice([5, "x", []])},
            {"type": "response.create", "response": {"conversation": "other"}},
            {"type": "response.create", "response": {"input": [{"type": "item_reference", "id": "item_missing"}]}},
            {"type": "response.create", "response": {"metadata": {"k": 5}}},
            {"type": "response.create", "response": {"max_output_tokens": 0}},
            {"type": "response.cancel", "response_id": 5},
            {"type": "response.cancel", "response_id": "resp_missing"},
        ]
        event = r.choice(cases)
        if not isinstance(event.get("type"), str) or event.get("type") == "no.such.event" or r.random() < 0.9:
            event["event_id"] = eid
        else:
            eid = None
        return [Sent(self._json(event), eid, must_fail=True)]

    def extreme(self) -> list[Sent]:
        """Legal types at extreme values, which the server may take or refuse (once), but not fail on."""
        r = self.rng
        eid = self._eid()
        big = r.choice([10**9, 2**63, 10**30, 10**400])
        td = r.choice(["silence_duration_ms", "prefix_padding_ms", "idle_timeout_ms"])
        cases: list[dict] = [
            {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": {
                "type": "server_vad", td: big}}}}},
            {"type": "session.update", "session": {"type": "realtime", "max_output_tokens": big}},
            {"type": "response.create", "response": {"max_output_tokens": big}},
            {"type": "conversation.item.truncate", "item_id": self._item_id(), "content_index": r.choice([0, big]),
             "audio_end_ms": big},
            {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"speed": 1e308}}}},
            {"type": "session.update", "session": {"type": "realtime", "instructions": "\u0000\ud800" * 50}},
            {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "\ud800" + "y" * r.choice([10, 10000])}]}},
        ]
        event = r.choice(cases)
        event["event_id"] = eid
        raw = json.dumps(event)
        if r.random() < 0.3:  # Python's json reads these; strict JSON has no such numbers
            raw = raw.replace("1e+308", r.choice(["NaN", "Infinity", "-Infinity"]))
        return [Sent(raw, eid, must_fail=False)]

    def garbage(self) -> list[Sent]:
        """Frames with no event_id to read: bad JSON, JSON that is no object, an id of the wrong type, random
        bytes, an event past the size limit."""
        r = self.rng
        raw: str | bytes = r.choice([
            "{not json", "", "[]", "null", "42", '"str"', '{"type": "session.update", "event_id": 5}',
            bytes(r.getrandbits(8) for _ in range(r.randint(1, 64))), '{"type": "response.create", "x": NaN}x',
        ])
        if r.random() < 0.02:
            raw = '{"type": "input_audio_buffer.append", "audio": "' + "A" * (16 * 1024 * 1024) + '"}'
        return [Sent(raw, None, must_fail=True)]
