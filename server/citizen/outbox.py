"""The citizen outbox in Redis: messages queued once, sent in order, retried until delivered
or given up, every step recorded in the unit's event stream (and so in the ledger).

Keys are the request's unit's (hash tag ``{u:<unit>}``): a request's messages hash
(``keys.citizen_messages``) and the unit's due set (``keys.citizen_due``), beside its event
stream, so each script touches one slot, and queuing could join the step's own commit script.

- :meth:`CitizenOutbox.enqueue` (``citizen_enqueue.lua``): a message is queued once per
  idempotency key, with its ``citizen_message_queued`` event, atomically.
- :meth:`CitizenOutbox.deliver_due`, run by every hub process: claims due requests with a lease
  (``due.lua``, as timers are; every unit in one round trip), takes each one's oldest
  undelivered message (``citizen_take.lua``; all of them in one round trip), sends it, and
  records the attempt and what follows (``citizen_done.lua``). A process that dies mid-send
  leaves the lease to run out; another process then sends the message again, with the same
  idempotency key: delivery is at-least-once to the gateway, which must dedupe by
  ``Idempotency-Key`` for exactly-once on the phone. One request's messages never overtake
  each other: the next is taken only once the one before is delivered or has failed for good.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from redis.asyncio import Redis

from server.citizen.compose import Message
from server.citizen.delivery import Attempt, Outcome, RetryPolicy, next_step
from server.group_commit import GroupCommit
from server.store import keys, timers
from server.store.requests import Actor, QueuedMessage, event_json
from server.store.scripts import ScriptCall, Scripts
from server.store.text import text

log = logging.getLogger(__name__)

CITIZEN = Actor("system", "citizen")
_decode_message = msgspec.json.Decoder(Message)
CONCURRENT_SENDS = 16  # messages of different requests in flight at once, per process


class CitizenSender(Protocol):
    """Hands a message to the phone network. Never raises for a failed send: it answers
    with the :class:`Attempt` (a raised exception counts as a transient failure)."""

    async def send(self, message: Message) -> Attempt: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception


def mask_phone(phone: str) -> str:
    """Phone numbers are personal data: logs and events show only the last four digits."""
    return "*" * max(len(phone) - 4, 0) + phone[-4:]


class CitizenOutbox:
    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        policy: RetryPolicy,
        *,
        lease_s: float,
        keep_s: int,
        events_maxlen: int,
    ) -> None:
        """``lease_s``: how long a claimed message is this process's to send (longer than a
        send may take). ``keep_s``: how long a request's idempotency keys are remembered
        after its last message is done (longer than a step may be retried)."""
        self._redis = redis
        self._scripts = scripts
        self.policy = policy
        self._lease_ms = int(lease_s * 1000)
        self._keep_s = keep_s
        self._events_maxlen = events_maxlen
        # Outcomes that come back together (a pass's sends through the log file, or webhooks
        # answering at once) are recorded in one round trip; one that comes back alone is
        # recorded at once, as before.
        self._records: GroupCommit[ScriptCall, Any] = GroupCommit(self._run_each)

    # ---- queuing -------------------------------------------------------------------------

    async def enqueue(self, message: Message) -> bool:
        """Queue ``message`` unless its key was queued before; True if queued now."""
        queued = self.prepare(message)
        n = await self._scripts.citizen_enqueue(
            keys=self._keys(message.unit, message.request),
            args=[
                queued.key,
                message.request,
                queued.queued_ms,
                queued.body,
                queued.event,
                self._events_maxlen,
            ],
        )
        return int(n) > 0

    @staticmethod
    def prepare(message: Message) -> QueuedMessage:
        """``message`` as the script that commits its step queues it (``apply.lua``: the
        same queue, once per key, as :meth:`enqueue`)."""
        event = event_json(
            "citizen_message_queued",
            message.request,
            message.queued_at,
            CITIZEN,
            key=message.key,
            message=message.id,
            event=message.event,
            lang=message.lang,
            text=message.text,
            phone=mask_phone(message.phone),
        )
        return QueuedMessage(
            message.key, int(message.queued_at * 1000), msgspec.json.encode(message).decode(), event
        )

    async def enqueue_all(self, messages: Iterable[Message]) -> None:
        """Queue in order (a request's messages are sent in the order queued)."""
        for message in messages:
            await self.enqueue(message)

    # ---- delivery ------------------------------------------------------------------------

    async def deliver_due(
        self, sender: CitizenSender, units: Iterable[str], batch: int = 100
    ) -> int:
        """One pass: send every due message of ``units`` (one per request at a time).
        Returns how many attempts were made. Two round trips before the sends, whatever the
        number of units and messages: every unit's due requests claimed in one pipeline,
        then every claimed request's next message taken in another; each message's outcome
        is recorded as soon as its send returns, together with the outcomes that came back
        meanwhile (one round trip for a pass whose sends all return at once)."""
        now_ms = int(time.time() * 1000)
        units = list(units)
        dues = [
            ScriptCall(self._scripts.due, [keys.citizen_due(unit)], [now_ms, self._lease_ms, batch])
            for unit in units
        ]
        claimed: list[tuple[str, str]] = []
        for unit, due in zip(units, await self._run(dues), strict=True):
            claimed += [(unit, text(request)) for request, _ in timers.claimed(due)]
        if not claimed:
            return 0
        takes = [
            ScriptCall(
                self._scripts.citizen_take,
                [keys.citizen_messages(unit, request), keys.citizen_due(unit)],
                [request],
            )
            for unit, request in claimed
        ]
        taken = [answer for answer in await self._run(takes) if answer]
        limit = asyncio.Semaphore(CONCURRENT_SENDS)

        async def one(taken: list[Any]) -> None:
            async with limit:
                await self._deliver(sender, taken)

        await asyncio.gather(*(one(t) for t in taken))
        return len(taken)

    async def _run(self, calls: list[ScriptCall]) -> list[Any]:
        """The calls' answers, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for call in calls:
            call.queue(pipe)
        answers = await pipe.execute(raise_on_error=False)
        return [await call.settle(a) for call, a in zip(calls, answers, strict=True)]

    async def _run_each(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """The calls' answers, in one round trip; a call that failed answers its exception
        (raised to its own caller only)."""
        pipe = self._redis.pipeline(transaction=False)
        for call in calls:
            call.queue(pipe)
        answers = await pipe.execute(raise_on_error=False)
        settled: list[Any] = []
        for call, answer in zip(calls, answers, strict=True):
            try:
                settled.append(await call.settle(answer))
            except Exception as exc:  # noqa: BLE001 - that call's caller raises it
                settled.append(_Failed(exc))
        return settled

    async def _deliver(self, sender: CitizenSender, taken: list[Any]) -> None:
        """Send a message ``citizen_take.lua`` took, and record the attempt."""
        n, number, raw = int(taken[0]), int(taken[1]), taken[2]
        message = _decode_message.decode(raw)
        try:
            attempt = await sender.send(message)
        except Exception as exc:  # noqa: BLE001 - a broken sender is a failed attempt, retried
            log.warning("sending message %s failed: %s", message.id, type(exc).__name__)
            attempt = Attempt(Outcome.RETRY, error=f"{type(exc).__name__}")
        now = time.time()
        outcome, retry_at = next_step(attempt, number, message.queued_at, now, self.policy)
        await self._record(message, n, number, attempt, outcome, retry_at, now)

    async def _record(
        self,
        message: Message,
        n: int,
        number: int,
        attempt: Attempt,
        outcome: Outcome,
        retry_at: float,
        now: float,
    ) -> None:
        common: dict[str, Any] = {"key": message.key, "message": message.id}
        attempted = event_json(
            "citizen_message_attempt",
            message.request,
            now,
            CITIZEN,
            **common,
            attempt=number,
            outcome=attempt.outcome.value,
            status=attempt.status,
            error=attempt.error,
            retry_at=round(retry_at, 3) if outcome is Outcome.RETRY else None,
        )
        final = ""
        if outcome is Outcome.DELIVERED:
            final = event_json(
                "citizen_message_delivered",
                message.request,
                now,
                CITIZEN,
                **common,
                attempts=number,
            )
        elif outcome is Outcome.FAILED:
            final = event_json(
                "citizen_message_failed",
                message.request,
                now,
                CITIZEN,
                **common,
                attempts=number,
                status=attempt.status,
                error=attempt.error or "gave up",
            )
            log.warning(
                "message %s to %s failed after %d attempt(s): %s",
                message.id,
                mask_phone(message.phone),
                number,
                attempt.error or attempt.status,
            )
        call = ScriptCall(
            self._scripts.citizen_done,
            self._keys(message.unit, message.request),
            [
                message.request,
                n,
                number,
                outcome.value,
                int(retry_at * 1000),
                int(now * 1000),
                attempted,
                final,
                self._events_maxlen,
                self._keep_s,
            ],
        )
        answer = await self._records.submit(call)
        if isinstance(answer, _Failed):
            raise answer.error

    @staticmethod
    def _keys(unit: str, request: str) -> list[str]:
        return [keys.citizen_messages(unit, request), keys.citizen_due(unit), keys.events(unit)]
