"""A request's messages to the caller, as the ledger recorded them (pure).

The outbox records ``citizen_message_queued``, one ``citizen_message_attempt`` per attempt,
then ``citizen_message_delivered`` or ``citizen_message_failed``, all keyed by the message's
idempotency key; :func:`messages_of` folds them into one record per message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PREFIX = "citizen_message_"


def messages_of(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per message, in the order queued, from ledger event rows (``type``,
    ``at``, ``data``: the decoded event) in stream order. A message's state is ``queued``
    until its delivery or failure is recorded; a duplicate row (an entry read twice) counts
    once."""
    found: dict[str, dict[str, Any]] = {}
    for row in events:
        kind = str(row.get("type", ""))
        if not kind.startswith(PREFIX):
            continue
        data = row.get("data") or {}
        key = data.get("key")
        if not isinstance(key, str):
            continue
        record = found.setdefault(
            key,
            {
                "key": key,
                "id": data.get("message"),
                "event": None,
                "lang": None,
                "text": None,
                "phone": None,
                "state": "queued",
                "queued_at": None,
                "done_at": None,
                "attempts": [],
            },
        )
        step = kind[len(PREFIX) :]
        if step == "queued":
            record.update(
                event=data.get("event"),
                lang=data.get("lang"),
                text=data.get("text"),
                phone=data.get("phone"),
                queued_at=data.get("at"),
            )
        elif step == "attempt":
            attempt = {
                name: data.get(name)
                for name in ("attempt", "at", "outcome", "status", "error", "retry_at")
            }
            if attempt not in record["attempts"]:
                record["attempts"].append(attempt)
        elif step in ("delivered", "failed"):
            record.update(state=step, done_at=data.get("at"))
            if step == "failed":
                record["error"] = data.get("error")
    return list(found.values())
