"""The wall's ticker: the latest events and notices, cut down to what a screen on a wall may
show. A wall is seen by whoever walks past: no caller's phone, no description, address or
note text, no person's name (the role that acted stays)."""

from __future__ import annotations

from collections import deque
from typing import Any

import msgspec

# The fields of an event a wall may show; everything else is left out.
SHOWN = ("type", "request", "at", "squad", "notice_kind", "level", "category", "district")
# Events that are noise on a wall (the citizen's message queue, bookkeeping).
HIDDEN_PREFIXES = ("citizen_", "test_")
KEPT = 30  # items a new wall is shown at once

_decode = msgspec.json.Decoder()


def ticker_item(unit: str, stream_id: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """The ticker's line for one event, or None for an event a wall does not show."""
    kind = event.get("type")
    if not isinstance(kind, str) or kind.startswith(HIDDEN_PREFIXES):
        return None
    item = {k: event[k] for k in SHOWN if k in event and isinstance(event[k], str | int | float)}
    by = event.get("by")
    if isinstance(by, str) and by:
        item["by"] = by.partition(":")[0]  # "calltaker:alice" -> "calltaker"
    return item | {"unit": unit, "id": stream_id}


def item_of_frame(frame: bytes) -> dict[str, Any] | None:
    """The ticker's line for a center-feed frame (``{"t":"event","unit","id","event"}``)."""
    try:
        decoded = _decode.decode(frame)
    except msgspec.DecodeError:
        return None
    event = decoded.get("event") if isinstance(decoded, dict) else None
    if not isinstance(event, dict):
        return None
    return ticker_item(str(decoded.get("unit", "")), str(decoded.get("id", "")), event)


class Ticker:
    """The newest :data:`KEPT` items, and the ones added since the last :meth:`take`."""

    def __init__(self) -> None:
        self.latest: deque[dict[str, Any]] = deque(maxlen=KEPT)
        self._new: list[dict[str, Any]] = []

    def add(self, item: dict[str, Any]) -> None:
        self.latest.append(item)
        self._new.append(item)
        del self._new[:-KEPT]

    def take(self) -> list[dict[str, Any]]:
        new, self._new = self._new, []
        return new
