"""An operator's commands to one session, from the event bus (controller.mqtt_bus, by way of app.py): say a text,
change the instructions, hang up. Each acts as the client's own request would, but a refusal is the operator's to
hear (raised), not the client's (who asked for nothing).

Split from session.py to keep the session shell about its client; `OperatorMixin` is only ever mixed into Session
and uses its turn-taking, budget and config (session_host.SessionHost declares what it uses, for mypy).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from controller import turn_events as te
from controller import turn_taking as tt
from controller.errors import RemoteProtocolError
from controller.realtime.session_config import session_to_wire
from controller.response import Say

if TYPE_CHECKING:
    from controller.session_host import SessionHost as _Base
else:
    _Base = object


class OperatorMixin(_Base):
    async def say(self, text: str) -> None:
        """Speak `text` as the assistant's next reply.

        Raises RemoteProtocolError while a reply is in progress: the operator who asked is told (on the bus),
        not the client, who asked for nothing (turn-taking's own refusal would send the client an `error`)."""
        self._refuse_in_transcription("responses")
        if self.turns.state in (tt.TurnState.RESPONDING, tt.TurnState.SPEAKING):
            raise RemoteProtocolError("A response is already in progress; say again after its response.done.",
                                      code="conversation_already_has_active_response")
        self._say = Say(text)
        await self.apply(te.ResponseRequested())

    async def set_instructions(self, instructions: str) -> None:
        self._refuse_in_transcription("instructions")
        async with self._config_changes:
            new = replace(self.cfg, instructions=instructions)
            await self.budget.check_instructions(new, self.cfg, "instructions")
            self.cfg = new
            await self.emit(self.events.session_updated(session_to_wire(
                self.cfg, session_id=self.session_id, model=self.model)))
        await self.apply(te.ContextChanged())

    def _refuse_in_transcription(self, what: str) -> None:
        """An operator's command that a transcription session's client could not expect (as response.create)."""
        if self.cfg.kind == "transcription":
            raise RemoteProtocolError(f"A transcription session has no {what}: it only transcribes the input audio.",
                                      code="unsupported_in_transcription_session")

    async def hangup(self) -> None:
        if self._ws is not None:
            await self._ws.close(1000, "hangup")
