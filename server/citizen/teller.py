"""What the operations call to tell the caller: compose a step's message (pure, before the
step is committed, so a message that cannot be put in words refuses the step) and queue it
(after the commit, idempotently)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from server.citizen.compose import Message, intake_messages, step_message
from server.citizen.messages import Templates
from server.citizen.outbox import CitizenOutbox
from server.city import City
from server.store.requests import QueuedMessage


class CitizenTeller:
    def __init__(
        self, outbox: CitizenOutbox, templates: Templates, city: Callable[[], City]
    ) -> None:
        """``city``: the current city (units may be added while the hub runs)."""
        self.outbox = outbox
        self.templates = templates
        self._city = city

    async def intake(self, unit: str, fields: Mapping[str, str]) -> None:
        """Queue the intake messages of a stored request (again, harmlessly, on a retry)."""
        messages = intake_messages(self.templates, self._city(), unit, fields, time.time())
        await self.outbox.enqueue_all(messages)

    def intake_messages(self, unit: str, fields: Mapping[str, str]) -> list[QueuedMessage]:
        """The intake messages of a request about to be stored, ready for the script that
        stores it (``RequestStore.create``)."""
        messages = intake_messages(self.templates, self._city(), unit, fields, time.time())
        return [self.outbox.prepare(message) for message in messages]

    def step(
        self,
        unit: str,
        fields: Mapping[str, str],
        event: str,
        discriminator: str,
        *,
        note: str = "",
        until: float | None = None,
        reason: str = "",
    ) -> Message | None:
        """The message of a lifecycle step, or None. Raises ValueError (OverflowError,
        OSError) if ``until`` is not a calendar time."""
        return step_message(
            self.templates,
            self._city(),
            unit,
            fields,
            event,
            discriminator,
            time.time(),
            note=note,
            until=until,
            reason=reason,
        )

    async def queue(self, message: Message | None) -> None:
        if message is not None:
            await self.outbox.enqueue(message)
