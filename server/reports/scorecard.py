"""Unit scorecards: from the ledger's rows and events to each unit's figures, its score and
its rank. The one source of per-unit figures: the monthly evaluation, the efficiency records
and the simulation's report all call these functions. Pure: no I/O, no clock (the caller
passes ``as_of``).

Two steps:

1. :func:`facts_of` reduces one request (its ledger row and its events) to
   :class:`RequestFacts`: how long each step took, whether each limit was met, and the
   things that count against the unit that held the request at the time (non-responses,
   disputes, promises, notices).
2. :func:`scorecards` adds the facts up per unit (with the spot checks' outcomes), weighs
   them into one score (:mod:`server.reports.policy`), ranks the units and sets the change
   against the previous month.

Rules (the README's "Reports" section says the same for people):

- A request counts for the unit that holds it in the end (after any reassignment): volume,
  limits, times. An event counts for the unit that held the request when it happened (the
  stream it was recorded in): a non-response, a dispute, a promise, a notice.
- Limits are judged against the request's own deadlines (set at intake from its category,
  scaled by DISPATCH_TIME_SCALE; a promise or a reopening moves the resolution deadline).
  A limit is ``met`` when its step happened by the deadline, ``missed`` when it happened
  later or had not happened when the deadline passed (before ``as_of``, or before the
  request was cancelled), ``pending`` when it can still be met, and ``void`` when the request
  was cancelled in time or has no such deadline. A resolution meets the arrive limit of a
  request resolved without an arrival (as it closes the arrive notice).
- The resolution is the last one: a request reopened and not resolved again is unresolved.
  The ``resolved`` events of a request never reopened may be left out: the row's
  ``resolved_at`` (its first resolution) stands for them, so a reader of a month need not
  fetch one event per request.
- A promise is the last ``deferred`` of a request: kept when the request was resolved by the
  promised time, broken when it was resolved later or was still open past it.
- A dispute is ruled ``upheld`` (the unit keeps the request), ``reassigned`` (moved to the
  unit with jurisdiction), ``cancelled``, or is still ``open``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from server.reports.policy import Policy, Weights

LIMITS = ("accept", "arrive", "resolve")
Verdict = Literal["met", "missed", "pending", "void"]
VERDICTS: tuple[Verdict, ...] = ("met", "missed", "pending", "void")
RULINGS = ("upheld", "reassigned", "cancelled", "open")
SPOT_OUTCOMES = ("satisfied", "not_satisfied", "not_fixed", "unreachable")
# Callback outcomes that reached the citizen, and those of them that pass.
SPOT_REACHED = frozenset({"satisfied", "not_satisfied", "not_fixed"})
SPOT_PASSED = frozenset({"satisfied"})

# The event types the figures read: a reader of the ledger may fetch only these (and
# ``resolved`` only for requests with a ``reopened``: see the module docstring).
COUNTED_EVENTS = frozenset(
    {
        "offer_expired",
        "disputed",
        "upheld",
        "reassigned",
        "deferred",
        "resolved",
        "reopened",
        "cancelled",
        "notice_issued",
    }
)
# The request columns facts_of reads (the ledger's names).
ROW_COLUMNS = (
    "id",
    "unit",
    "category",
    "district",
    "route",
    "state",
    "received_at",
    "accept_by",
    "arrive_by",
    "resolve_by",
    "accepted_at",
    "arrived_at",
    "resolved_at",
)
_TIME_COLUMNS = frozenset(ROW_COLUMNS[6:])
_RULING_OF = {"upheld": "upheld", "reassigned": "reassigned", "cancelled": "cancelled"}


# ---- percentiles ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation between the closest ranks
    (numpy's default); None for no values. ``values`` need not be sorted."""
    if not values:
        return None
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} outside 0-100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Spread(msgspec.Struct):
    """How long a step took (seconds from receipt): count, median, 90th percentile, max."""

    count: int = 0
    p50: float | None = None
    p90: float | None = None
    max: float | None = None


def spread(values: Iterable[float]) -> Spread:
    ordered = sorted(values)
    if not ordered:
        return Spread()
    return Spread(len(ordered), percentile(ordered, 50), percentile(ordered, 90), ordered[-1])


# ---- one request ---------------------------------------------------------------------------


# Not frozen, here and in RequestFacts: a month is hundreds of thousands of these, and a
# frozen dataclass pays for every field it sets in __init__. Nothing changes them.
@dataclass(slots=True)
class Event:
    """One event of a request: its type, time, the unit that held the request when it
    happened, and the event's JSON as recorded."""

    type: str
    at: float | None
    unit: str
    payload: Mapping[str, Any] = field(default_factory=dict)


def ledger_events(rows: Iterable[Mapping[str, Any]]) -> list[Event]:
    """Events from ``events`` rows of the ledger (``unit`` is the stream the event was
    recorded in; ``data`` the JSON, as text or decoded)."""
    found = []
    for row in rows:
        data = row.get("data")
        payload = json.loads(data) if isinstance(data, str | bytes) else (data or {})
        found.append(Event(str(row["type"]), _number(row.get("at")), str(row["unit"]), payload))
    return found


def timeline_events(timeline: Iterable[Mapping[str, Any]], unit: str) -> list[Event]:
    """Events from a request's timeline as the hub answers it (``GET /api/v1/requests/{id}``),
    which does not say which unit held the request at each step: it starts with the unit of
    the ``received`` event (else ``unit``) and follows each ``reassigned`` to the unit it
    names (the reassignment itself is the old unit's)."""
    events = list(timeline)
    holder = next(
        (str(e["unit"]) for e in events if e.get("type") == "received" and e.get("unit")), unit
    )
    found = []
    for event in events:
        kind = str(event.get("type", ""))
        found.append(Event(kind, _number(event.get("at")), holder, event))
        if kind == "reassigned" and event.get("unit"):
            holder = str(event["unit"])
    return found


@dataclass(slots=True)
class RequestFacts:
    """One request, reduced to what the scorecards count. Durations are seconds from
    receipt (times ``duration_scale``); None when the step has not happened."""

    id: str
    unit: str  # the unit holding it in the end
    category: str
    district: str
    route: str
    state: str
    received_at: float
    took: Mapping[str, float | None]
    verdicts: Mapping[str, Verdict] | None  # None: not a linkage request (not scored)
    non_responses: tuple[str, ...] = ()  # the unit of each offer left to expire
    disputes: tuple[tuple[str, str], ...] = ()  # (unit, ruling) of each dispute
    promise: tuple[str, bool | None] | None = None  # (unit, kept) of the last promise
    notices: tuple[tuple[str, str, int], ...] = ()  # (unit, kind, level) of each notice
    reopened: int = 0
    cancelled: str | None = None  # the reason, if cancelled

    @property
    def linkage(self) -> bool:
        return self.verdicts is not None


def facts_of(
    row: Mapping[str, Any],
    events: Iterable[Event],
    as_of: float,
    duration_scale: float = 1.0,
) -> RequestFacts:
    """Reduce one request: ``row`` has every column of :data:`ROW_COLUMNS` (times as floats
    or None, as the ledger holds them; :func:`detail_row` makes one from the hub's answer);
    ``events`` are its events (any types; those outside :data:`COUNTED_EVENTS` are passed
    over). ``as_of``: the moment the figures are judged at.

    One pass over the events, in time order (a month is hundreds of thousands of requests:
    this is the hot loop of the evaluation)."""
    non_responses: list[str] = []
    notices: list[tuple[str, str, int]] = []
    disputes: list[list[str]] = []  # [unit, ruling]
    unruled: list[list[str]] = []
    reopened = resolutions = 0
    resolution: float | None = None  # the last resolution not followed by a reopening
    first_accepted = first_arrived = None
    cancelled: Event | None = None
    promise: Event | None = None
    promise_resolved: float | None = None  # the first resolution after the last promise
    promise_cancelled: float | None = None
    ordered = (
        events if isinstance(events, list) and len(events) < 2 else sorted(events, key=_time_of)
    )
    for event in ordered:
        kind = event.type
        if kind == "resolved":
            resolution = event.at
            resolutions += 1
            if promise is not None and promise_resolved is None:
                promise_resolved = event.at
        elif kind == "accepted":
            if first_accepted is None:
                first_accepted = event.at
        elif kind == "arrived":
            if first_arrived is None:
                first_arrived = event.at
        elif kind == "offer_expired":
            non_responses.append(event.unit)
        elif kind == "notice_issued":
            payload = event.payload
            notices.append(
                (event.unit, str(payload.get("notice_kind", "?")), _level(payload.get("level")))
            )
        elif kind == "deferred":
            promise, promise_resolved, promise_cancelled = event, None, None
        elif kind == "disputed":
            dispute = [event.unit, "open"]
            disputes.append(dispute)
            unruled.append(dispute)
        elif kind in _RULING_OF:
            for dispute in unruled:
                dispute[1] = _RULING_OF[kind]
            unruled = []
            if kind == "cancelled":
                cancelled = event
                if promise is not None and promise_cancelled is None:
                    promise_cancelled = event.at
        elif kind == "reopened":
            reopened += 1
            resolution = None
    received: float = row["received_at"] or 0.0
    state = row["state"]
    if not resolutions and not reopened:  # resolved events left out: the row's stands
        resolution = row["resolved_at"]
        if (
            promise is not None
            and resolution is not None
            and promise_resolved is None
            and (promise.at is None or resolution >= promise.at)
        ):
            promise_resolved = resolution
    resolved_at = resolution if state == "resolved" else None
    accepted_at = row["accepted_at"]
    arrived_at = row["arrived_at"]
    if accepted_at is None:
        accepted_at = first_accepted
    if arrived_at is None:
        arrived_at = first_arrived
    arrive_moment = arrived_at if arrived_at is not None else resolved_at
    took = {
        "accept": _took(accepted_at, received, duration_scale),
        "arrive": _took(arrive_moment, received, duration_scale),
        "resolve": _took(resolved_at, received, duration_scale),
    }
    verdicts: dict[str, Verdict] | None = None
    route = row["route"]
    if route == "linkage":
        cancelled_at = cancelled.at if cancelled is not None else None
        closed = as_of if cancelled_at is None or as_of < cancelled_at else cancelled_at
        verdicts = {
            "accept": verdict(accepted_at, row["accept_by"], closed, cancelled_at),
            "arrive": verdict(arrive_moment, row["arrive_by"], closed, cancelled_at),
            "resolve": verdict(resolved_at, row["resolve_by"], closed, cancelled_at),
        }
    return RequestFacts(
        id=row["id"],
        unit=row["unit"] or "",
        category=row["category"] or "",
        district=row["district"] or "",
        route=route or "",
        state=state or "",
        received_at=received,
        took=took,
        verdicts=verdicts,
        non_responses=tuple(non_responses),
        disputes=tuple((unit, ruling) for unit, ruling in disputes),
        promise=(
            None
            if promise is None
            else (promise.unit, _kept(promise, promise_resolved, promise_cancelled, as_of))
        ),
        notices=tuple(notices),
        reopened=reopened,
        cancelled=(
            str(cancelled.payload.get("reason") or cancelled.payload.get("cancel_reason") or "")
            if cancelled is not None
            else None
        ),
    )


def _took(at: float | None, received: float, scale: float) -> float | None:
    if at is None:
        return None
    return (at - received) * scale if at > received else 0.0


def verdict(
    done_at: float | None, deadline: float | None, closed: float, cancelled_at: float | None
) -> Verdict:
    """One limit: the step's time, its deadline, when it stopped being possible (``as_of``,
    or the cancellation), and whether the request was cancelled."""
    if deadline is None:
        return "void"
    if done_at is not None:
        return "met" if done_at <= deadline else "missed"
    if closed > deadline:
        return "missed"
    return "void" if cancelled_at is not None else "pending"


def _kept(
    promise: Event, resolved: float | None, cancelled: float | None, as_of: float
) -> bool | None:
    """Whether the last promise was kept: True kept, False broken, None still running (or
    moot: cancelled before it fell due)."""
    until = _number(promise.payload.get("until"))
    if until is None:
        return None
    if resolved is not None:
        return resolved <= until
    ended = cancelled if cancelled is not None else as_of
    return False if ended > until else None


def _time_of(event: Event) -> float:
    return event.at if event.at is not None else -math.inf


def _number(value: Any) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _level(value: Any) -> int:
    number = _number(value)
    return int(number) if number is not None else 1


# ---- one unit ------------------------------------------------------------------------------


class Notices(msgspec.Struct):
    total: int = 0
    by_kind: dict[str, int] = {}
    by_level: dict[str, int] = {}  # level (as text: a JSON key) -> notices


class Disputes(msgspec.Struct):
    raised: int = 0
    upheld: int = 0  # the center ruled the unit keeps it: the dispute was unfounded
    reassigned: int = 0  # moved to the unit with jurisdiction: the dispute was founded
    cancelled: int = 0
    open: int = 0  # no ruling yet


class Promises(msgspec.Struct):
    made: int = 0
    kept: int = 0
    broken: int = 0
    running: int = 0  # not yet due (or moot)


class SpotTally(msgspec.Struct):
    checked: int = 0  # outcomes recorded
    satisfied: int = 0
    not_satisfied: int = 0
    not_fixed: int = 0
    unreachable: int = 0
    pass_rate: float | None = None  # satisfied of those reached; None: none reached


class Scorecard(msgspec.Struct, kw_only=True):
    """One unit's figures for a period, its score and its rank (see the module docstring
    and policy.toml)."""

    unit: str
    requests: int = 0  # volume: requests held in the end, received in the period
    resolved: int = 0
    open: int = 0
    cancelled: int = 0
    reopened: int = 0
    limits: dict[str, dict[str, int]] = {}  # limit -> verdict -> requests
    on_time: dict[str, float | None] = {}  # limit -> met / (met + missed)
    times: dict[str, Spread] = {}  # limit -> how long the step took
    non_responses: int = 0  # offers a squad of the unit let expire
    notices: Notices = msgspec.field(default_factory=Notices)
    disputes: Disputes = msgspec.field(default_factory=Disputes)
    promises: Promises = msgspec.field(default_factory=Promises)
    spot_checks: SpotTally = msgspec.field(default_factory=SpotTally)
    components: dict[str, float | None] = {}  # score component -> share (0..1)
    score: float | None = None  # 0..100; None: nothing to score
    rank: int | None = None  # 1 is best; None: not ranked (too few requests)
    previous_score: float | None = None
    previous_rank: int | None = None
    score_change: float | None = None  # score - previous score
    rank_change: int | None = None  # places gained since the previous month (+ is up)


@dataclass
class _Tally:
    """A unit's figures while they are added up."""

    requests: int = 0
    resolved: int = 0
    open: int = 0
    cancelled: int = 0
    reopened: int = 0
    limits: dict[str, Counter[str]] = field(
        default_factory=lambda: {name: Counter() for name in LIMITS}
    )
    times: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in LIMITS})
    non_responses: int = 0
    notice_kinds: Counter[str] = field(default_factory=Counter)
    notice_levels: Counter[int] = field(default_factory=Counter)
    rulings: Counter[str] = field(default_factory=Counter)
    promises: Counter[str] = field(default_factory=Counter)
    spot: Counter[str] = field(default_factory=Counter)


_FINAL = frozenset({"resolved", "cancelled", "transferred"})


def _add_request(tally: _Tally, facts: RequestFacts) -> None:
    tally.requests += 1
    tally.resolved += facts.state == "resolved"
    tally.cancelled += facts.state == "cancelled"
    tally.open += facts.state not in _FINAL
    tally.reopened += facts.reopened
    assert facts.verdicts is not None
    for name in LIMITS:
        tally.limits[name][facts.verdicts[name]] += 1
        took = facts.took[name]
        if took is not None:
            tally.times[name].append(took)


def tally_facts(
    facts: Iterable[RequestFacts],
    spot_checks: Iterable[tuple[str, str]] = (),
    group: str | None = None,
) -> dict[str, Scorecard]:
    """Each unit's figures (no score yet): linkage requests count for the unit holding them
    in the end, events for the unit that held them then. ``spot_checks``: (unit, outcome) of
    each callback recorded. ``group``: add everything up under this one name instead (the
    whole city's figures; that card is there, all zeros, when nothing was counted)."""
    tallies: dict[str, _Tally] = {} if group is None else {group: _Tally()}

    def of(unit: str) -> _Tally:
        key = group if group is not None else unit
        found = tallies.get(key)
        if found is None:
            found = tallies[key] = _Tally()
        return found

    for item in facts:
        if not item.linkage:
            continue
        _add_request(of(item.unit), item)
        for unit in item.non_responses:
            of(unit).non_responses += 1
        for unit, ruling in item.disputes:
            of(unit).rulings[ruling] += 1
        if item.promise is not None:
            unit, kept = item.promise
            of(unit).promises["kept" if kept else "broken" if kept is False else "running"] += 1
        for unit, kind, level in item.notices:
            tally = of(unit)
            tally.notice_kinds[kind] += 1
            tally.notice_levels[level] += 1
    for unit, outcome in spot_checks:
        of(unit).spot[outcome] += 1
    return {unit: _card(unit, tally) for unit, tally in sorted(tallies.items())}


def _card(unit: str, tally: _Tally) -> Scorecard:
    limits = {name: {str(v): tally.limits[name][v] for v in VERDICTS} for name in LIMITS}
    reached = sum(tally.spot[o] for o in SPOT_REACHED)
    return Scorecard(
        unit=unit,
        requests=tally.requests,
        resolved=tally.resolved,
        open=tally.open,
        cancelled=tally.cancelled,
        reopened=tally.reopened,
        limits=limits,
        on_time={name: on_time_rate(limits[name]) for name in LIMITS},
        times={name: spread(tally.times[name]) for name in LIMITS},
        non_responses=tally.non_responses,
        notices=Notices(
            total=sum(tally.notice_kinds.values()),
            by_kind=dict(sorted(tally.notice_kinds.items())),
            by_level={str(level): n for level, n in sorted(tally.notice_levels.items())},
        ),
        disputes=Disputes(
            raised=sum(tally.rulings.values()), **{r: tally.rulings[r] for r in RULINGS}
        ),
        promises=Promises(
            made=sum(tally.promises.values()),
            kept=tally.promises["kept"],
            broken=tally.promises["broken"],
            running=tally.promises["running"],
        ),
        spot_checks=SpotTally(
            checked=sum(tally.spot.values()),
            **{o: tally.spot[o] for o in SPOT_OUTCOMES},
            pass_rate=(sum(tally.spot[o] for o in SPOT_PASSED) / reached) if reached else None,
        ),
    )


def on_time_rate(counts: Mapping[str, int]) -> float | None:
    """Met over decided (met + missed); None when nothing is decided yet."""
    decided = counts["met"] + counts["missed"]
    return counts["met"] / decided if decided else None


# ---- score, rank, change -------------------------------------------------------------------


def components(card: Scorecard) -> dict[str, float | None]:
    """The score's components, each a share from 0 to 1 (1 best), None when the month gives
    no value for it (policy.toml defines each)."""
    ruled = card.disputes.upheld + card.disputes.reassigned
    judged = card.promises.kept + card.promises.broken
    return {
        "accept_on_time": card.on_time.get("accept"),
        "arrive_on_time": card.on_time.get("arrive"),
        "resolve_on_time": card.on_time.get("resolve"),
        "spot_check_pass": card.spot_checks.pass_rate,
        "promises_kept": card.promises.kept / judged if judged else None,
        "responsiveness": (
            max(0.0, 1.0 - card.non_responses / card.requests) if card.requests else None
        ),
        "notice_free": (
            max(0.0, 1.0 - card.notices.total / card.requests) if card.requests else None
        ),
        "disputes_founded": card.disputes.reassigned / ruled if ruled else None,
    }


def score(parts: Mapping[str, float | None], weights: Weights) -> float | None:
    """100 x the weighted mean of the components that have a value; None if none has."""
    total = weighted = 0.0
    for name, weight in weights.items():
        value = parts.get(name)
        if value is None or weight <= 0:
            continue
        total += weight
        weighted += weight * value
    return round(100.0 * weighted / total, 2) if total else None


def rank(cards: Iterable[Scorecard], min_requests: int) -> None:
    """Set each card's ``rank``: by score, highest first; equal scores share a rank (1, 2, 2,
    4); a card without a score or with fewer than ``min_requests`` requests is not ranked."""
    ranked = sorted(
        (c for c in cards if c.score is not None and c.requests >= max(min_requests, 1)),
        key=lambda c: -(c.score or 0.0),
    )
    for position, card in enumerate(ranked, start=1):
        previous = ranked[position - 2] if position > 1 else None
        card.rank = previous.rank if previous and previous.score == card.score else position


def compare(card: Scorecard, previous: Scorecard | None) -> None:
    """Set the change against ``previous`` (the same unit's card of the month before)."""
    if previous is None:
        return
    card.previous_score, card.previous_rank = previous.score, previous.rank
    if card.score is not None and previous.score is not None:
        card.score_change = round(card.score - previous.score, 2)
    if card.rank is not None and previous.rank is not None:
        card.rank_change = previous.rank - card.rank


def scorecards(
    facts: Iterable[RequestFacts],
    policy: Policy,
    *,
    units: Iterable[str] = (),
    spot_checks: Iterable[tuple[str, str]] = (),
    previous: Mapping[str, Scorecard] | None = None,
) -> list[Scorecard]:
    """Every unit's scorecard for a period, ranked: the units of ``units`` (a unit without a
    request still gets a card, with 0s) and any other unit the facts name; best rank first,
    then the unranked by unit code. ``previous``: last month's cards by unit (for the
    change)."""
    cards = tally_facts(facts, spot_checks)
    for unit in units:
        cards.setdefault(unit, _card(unit, _Tally()))
    for card in cards.values():
        card.components = components(card)
        card.score = score(card.components, policy.weights)
    rank(cards.values(), policy.ranking.min_requests)
    for card in cards.values():
        compare(card, (previous or {}).get(card.unit))
    return sorted(cards.values(), key=lambda c: (c.rank is None, c.rank or 0, c.unit))


def detail_row(detail: Mapping[str, Any]) -> dict[str, Any]:
    """A request as the hub answers it (``GET /api/v1/requests/{id}``: deadlines nested under
    ``deadlines``) as a row of :data:`ROW_COLUMNS` for :func:`facts_of` (times as floats)."""
    deadlines = detail.get("deadlines") or {}
    row = {}
    for name in ROW_COLUMNS:
        value = deadlines.get(name, detail.get(name)) if name.endswith("_by") else detail.get(name)
        row[name] = _number(value) if name in _TIME_COLUMNS else value
    return row
