"""From stream entries to ledger rows: pure functions, no I/O.

An entry of a unit's event stream becomes a :class:`LedgerEvent` (one ``events`` row). The
``requests`` row is then *folded*: :func:`fold` applies a request's events, and optionally a
snapshot of its Redis hash, onto the row as it stands in the database. The fold converges
whatever order and however often the events arrive, because several consumers share the
streams and a taken-over entry may be written after newer ones:

- the state (and the squad holding the request) follows the newest event by stream order
  (``event_key``); an older event never overwrites it;
- ``accepted_at`` / ``arrived_at`` / ``resolved_at`` keep the earliest time seen, and
  ``updated_at`` the latest;
- static fields (caller, place, deadlines) come from the request hash, newest version
  (``v``) wins; the ``received`` event's own fields fill them when no hash was read;
- a promise (``deferred``) sets ``resolve_by`` unless a newer promise already did;
- a ruling that moved the request (``reassigned``) sets its ``unit`` (and category) when it
  is the newest state change; the hash (its ``unit`` field, versioned across the move) says
  the same whatever order the two units' streams are read in.

A row records ONE request. Should Redis hand an id out again (it lost its data while the
ledger lagged behind by more than the margin of :mod:`server.ids`), a second request's
events would arrive under the same id; :func:`attribute` sorts them out before the fold.
The rule: a request under an id is known by its ``received_at`` (its ``received`` event's
time); an event belongs to the request under its id received latest at or before the
event's time, and the row keeps the request it recorded first. The others' events are
refused (the writer keeps them in the ``conflicts`` table), and so is a request hash whose
``received_at`` is another request's. Sound because a newcomer is received after the
request it collides with ended in Redis (that Redis lost its data), so it cannot own an
earlier event, and the lost request can have no later one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from server.lifecycle import SQUAD_RELEASED, STATE_AFTER_EVENT

# The request's state after each event type, and the events after which no squad holds it:
# the lifecycle's own tables (other types leave the state alone).
STATE_AFTER: Mapping[str, str] = {event: s.value for event, s in STATE_AFTER_EVENT.items()}
# Moments kept as the earliest time seen: a request re-offered after a dispute keeps the
# first acceptance, which is what the deadline rules measure.
FIRST_MOMENT: dict[str, str] = {
    "accepted": "accepted_at",
    "arrived": "arrived_at",
    "resolved": "resolved_at",
}
# Events that change the request hash's static fields: the writer reads the hash for them.
# A reassignment moves the request to another unit (its ``unit`` field and maybe its
# category); a reopening gives it a new resolution deadline.
SNAPSHOT_EVENTS = frozenset({"received", "deferred", "reassigned", "reassigned_in", "reopened"})

_SNAPSHOT_TEXT = (
    "unit",
    "category",
    "district",
    "route",
    "caller_phone",
    "description",
    "address",
    "result",
)
_SNAPSHOT_TIME = ("lat", "lon", "received_at", "accept_by", "arrive_by", "resolve_by")


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """One stream entry, ready to be an ``events`` row."""

    unit: str
    stream_id: str
    sort_key: str
    request_id: str | None
    type: str
    at: float | None
    by: str | None
    data: str  # always JSON text
    payload: Mapping[str, Any]

    def row(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "stream_id": self.stream_id,
            "sort_key": self.sort_key,
            "request_id": self.request_id,
            "type": self.type,
            "at": self.at,
            "by": self.by,
            "data": self.data,
        }


def sort_key(stream_id: str) -> str:
    """``"<ms>-<seq>"`` zero-padded so that text order is stream order ("1-10" > "1-9")."""
    ms, _, seq = stream_id.partition("-")
    return f"{int(ms):015d}-{int(seq or 0):020d}"


def parse_entry(unit: str, stream_id: str, fields: Mapping[str, str]) -> LedgerEvent | None:
    """The event in a stream entry; None when the entry's data is gone (trimmed or deleted
    while pending), so there is nothing to record.

    Never raises on a bad payload: an entry that is not an event object is recorded with
    type ``"unreadable"`` and its fields kept, so one bad entry cannot block the stream.
    """
    if not fields:
        return None
    raw = fields.get("e")
    payload = _json_object(raw) if raw is not None else None
    if payload is not None and raw is not None and "\\u0000" in raw:  # JSON's way of a NUL
        payload = _without_nul(payload)
    if payload is None:
        data = json.dumps({"unreadable": dict(fields)}, ensure_ascii=False)
        return LedgerEvent(
            unit, stream_id, sort_key(stream_id), None, "unreadable", None, None, data, {}
        )
    assert raw is not None  # a payload was decoded from it
    return LedgerEvent(
        unit=unit,
        stream_id=stream_id,
        sort_key=sort_key(stream_id),
        request_id=_text_or_none(payload.get("request")),
        type=_text_or_none(payload.get("type")) or "unknown",
        at=_number(payload.get("at")),
        by=_text_or_none(payload.get("by")),
        data=raw,
        payload=payload,
    )


# Events carry times rounded to the millisecond, request hashes full precision; two
# requests under one id are received seconds apart at the very least (a Redis restart).
SAME_MOMENT_S = 0.01


@dataclass(frozen=True, slots=True)
class Attribution:
    """A request id's events, sorted out by :func:`attribute`."""

    received_at: float | None  # of the request the row records (None: not known yet)
    own: list[LedgerEvent]  # that request's events: fold them
    refused: list[tuple[LedgerEvent, float]]  # (event, received_at of the request it is of)
    newcomers: list[float]  # received_at of other requests first met in these events

    def owns(self, snapshot: Mapping[str, str] | None) -> bool:
        """Whether a request hash read from Redis is this row's request (not a newcomer's
        that took its id)."""
        received = _number(snapshot.get("received_at")) if snapshot else None
        return received is None or self.received_at is None or _same(received, self.received_at)


def attribute(
    row_received_at: float | None, others: Iterable[float], events: Iterable[LedgerEvent]
) -> Attribution:
    """Which of a request id's ``events`` are the row's (see the module docstring).

    ``row_received_at``: the row's, None when it has none yet (the first ``received`` event
    among ``events`` then names the row's request); ``others``: the ``received_at`` of the
    other requests already refused under this id. Pure; the same answer however the events
    are batched, as long as the row's own ``received`` is recorded first."""
    ordered = sorted(events, key=lambda e: e.sort_key)
    mine = row_received_at
    if mine is None:
        mine = next((e.at for e in ordered if e.type == "received" and e.at is not None), None)
    if mine is None:
        return Attribution(None, ordered, [], [])
    known = sorted(set(others))
    newcomers: list[float] = []
    for event in ordered:
        at = event.at
        if (
            event.type == "received"
            and at is not None
            and not _same(at, mine)
            and not any(_same(at, other) for other in known)
        ):
            known.append(at)
            newcomers.append(at)
    own: list[LedgerEvent] = []
    refused: list[tuple[LedgerEvent, float]] = []
    for event in ordered:
        other = _other_owner(event, mine, known)
        if other is None:
            own.append(event)
        else:
            refused.append((event, other))
    return Attribution(mine, own, refused, newcomers)


def _other_owner(event: LedgerEvent, mine: float, others: list[float]) -> float | None:
    """The ``received_at`` of the other request ``event`` belongs to; None: the row's."""
    at = event.at
    if at is None:
        return None  # no time to tell by: the row's, as before
    if event.type == "received":
        return next((other for other in others if _same(at, other)), None)
    later = [other for other in others if mine < other <= at + SAME_MOMENT_S]
    if at + SAME_MOMENT_S < mine:
        # Before the row's request was received: an earlier request's (rows never start
        # before their own request; see the module docstring), else the row's.
        earlier = [other for other in others if other <= at + SAME_MOMENT_S]
        return max(earlier) if earlier else None
    return max(later) if later else None


def fold(
    request_id: str,
    unit: str,
    row: Mapping[str, Any] | None,
    events: Iterable[LedgerEvent],
    snapshot: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The ``requests`` row after ``events`` and the hash ``snapshot`` (None: not read, or
    the hash is gone), starting from ``row`` (None: no row yet). Idempotent and
    order-insensitive (see the module docstring)."""
    folded: dict[str, Any] = dict(row) if row else {}
    folded["id"] = request_id
    folded.setdefault("unit", unit)
    for event in sorted(events, key=lambda e: e.sort_key):
        _apply_event(folded, event)
    if snapshot:
        _apply_snapshot(folded, snapshot)
    return folded


def _apply_event(row: dict[str, Any], event: LedgerEvent) -> None:
    payload, at = event.payload, event.at
    if at is not None:
        row["updated_at"] = _latest(row.get("updated_at"), at)
        moment = FIRST_MOMENT.get(event.type)
        if moment:
            row[moment] = _earliest(row.get(moment), at)
    if event.type == "received":
        _fill(row, "received_at", at)
        _fill(row, "category", _text_or_none(payload.get("category")))
        _fill(row, "district", _text_or_none(payload.get("district")))
    _fill(row, "route", _text_or_none(payload.get("route")))
    if event.type == "resolved" and payload.get("note"):
        row["result"] = str(payload["note"])
    if event.type == "cancelled":  # final: no later event undoes it
        _set_if_given(row, "cancel_reason", _text_or_none(payload.get("reason")))
        _set_if_given(row, "duplicate_of", _text_or_none(payload.get("duplicate_of")))
    until = _number(payload.get("until")) if event.type == "deferred" else None
    if until is not None and (row.get("promise_key") or "") < event.sort_key:
        row["resolve_by"], row["promise_key"] = until, event.sort_key  # the newest promise
    state = STATE_AFTER.get(event.type)
    if state is None or (row.get("event_key") or "") >= event.sort_key:
        return  # not a state change, or an older one than what the row shows
    row["state"], row["event_key"] = state, event.sort_key
    if event.type == "reassigned":  # the center moved it: the row follows to the new unit
        _set_if_given(row, "unit", _text_or_none(payload.get("unit")))
        _set_if_given(row, "category", _text_or_none(payload.get("category")))
    if event.type in SQUAD_RELEASED:
        row["squad"] = None
    elif payload.get("squad"):
        row["squad"] = str(payload["squad"])


def _apply_snapshot(row: dict[str, Any], snapshot: Mapping[str, str]) -> None:
    version = int(_number(snapshot.get("v")) or 0)
    if row.get("version") is not None and version < row["version"]:
        return  # a newer snapshot is already in the row
    for column in _SNAPSHOT_TEXT:
        _set_if_given(row, column, _text_or_none(snapshot.get(column)))
    for column in _SNAPSHOT_TIME:
        _set_if_given(row, column, _number(snapshot.get(column)))
    row["version"] = version


def _same(a: float, b: float) -> bool:
    return abs(a - b) < SAME_MOMENT_S


def _fill(row: dict[str, Any], column: str, value: Any) -> None:
    if row.get(column) is None and value is not None:
        row[column] = value


def _set_if_given(row: dict[str, Any], column: str, value: Any) -> None:
    if value is not None:
        row[column] = value


def _earliest(current: float | None, value: float) -> float:
    return value if current is None else min(current, value)


def _latest(current: float | None, value: float) -> float:
    return value if current is None else max(current, value)


def _json_object(raw: str) -> dict[str, Any] | None:
    try:
        value = _JSON.decode(raw)  # a third of json.loads' time
    except msgspec.DecodeError:
        try:  # what msgspec refuses and json reads (NaN, say) is read as before
            value = json.loads(raw)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


_JSON = msgspec.json.Decoder()


def _without_nul(value: Any) -> Any:
    """``value`` with NUL characters taken out of its text, however deep. PostgreSQL's text
    holds none (the whole pass would fail on one, and every later event of the stream wait
    behind it), and a squad's note or a caller's description may carry one; both ledgers
    keep the same text. The event's own JSON (``data``) keeps it escaped."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _text_or_none(value: Any) -> str | None:
    """Text of a present, non-empty value ("" means "none" in request hashes)."""
    if value is None or value == "":
        return None
    return str(value)


def _number(value: Any) -> float | None:
    """A finite float, or None for absent or malformed values (never raises)."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
