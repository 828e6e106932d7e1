"""Report statistics: pure functions from the hub's request timelines to the numbers.

Input is what ``GET /api/v1/requests/{id}`` answers (``received_at``, ``state``,
``timeline`` of ``{"type", "at", "by", ...}`` in real epoch seconds). Durations are turned
back into simulated seconds by multiplying by the run's speed, then compared with the
category's limits (counted from receipt, as the hub counts them).

A limit is *met* when the step happened within it, *missed* when it happened later or has
not happened and the limit has passed, and *pending* when it has not happened yet but still
can in time.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from server import lifecycle
from server.city import City


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation between the closest ranks
    (numpy's default); None for no values."""
    if not values:
        return None
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} outside 0-100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


LIMITS = ("accept", "arrive", "resolve")
FIRST_EVENT = {"accept": "accepted", "arrive": "arrived", "resolve": "resolved"}
Verdict = Literal["met", "missed", "pending"]

# The state a request is in right after each timeline event: the lifecycle's own table.
STATE_AFTER_EVENT: Mapping[str, str] = {
    event: state.value for event, state in lifecycle.STATE_AFTER_EVENT.items()
}
FINAL_STATES = frozenset(state.value for state in lifecycle.FINAL)
AUTO_ARRIVAL_BY = "system:auto-arrival"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request, reduced to what the report counts. Times are simulated seconds from
    receipt; None when the step has not happened."""

    id: str
    category: str
    unit: str | None
    district: str
    route: str
    state: str
    timeline_state: str
    received_at: float
    elapsed_s: float
    took: Mapping[str, float | None]
    verdicts: Mapping[str, Verdict] | None  # None: not dispatched (handed to 110/119/120)
    offers: int
    non_responses: int
    deferred: bool
    promise_kept: bool | None
    disputed: bool
    auto_arrival: bool | None
    notices: tuple[tuple[str, int], ...] = ()  # (kind, level) of every supervision notice
    ruling: str | None = None  # "upheld" / "reassigned" after a dispute
    cancelled: str | None = None  # the reason, if the center cancelled it

    @property
    def consistent(self) -> bool:
        return self.state == self.timeline_state

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "unit": self.unit,
            "district": self.district,
            "route": self.route,
            "state": self.state,
            "timeline_state": self.timeline_state,
            "consistent": self.consistent,
            "received_at": self.received_at,
            "elapsed_s": round(self.elapsed_s, 1),
            "took_s": {k: None if v is None else round(v, 1) for k, v in self.took.items()},
            "limits": dict(self.verdicts) if self.verdicts is not None else None,
            "offers": self.offers,
            "non_responses": self.non_responses,
            "deferred": self.deferred,
            "promise_kept": self.promise_kept,
            "disputed": self.disputed,
            "auto_arrival": self.auto_arrival,
            "notices": [list(n) for n in self.notices],
            "ruling": self.ruling,
            "cancelled": self.cancelled,
        }


def state_from_timeline(timeline: Sequence[Mapping[str, Any]]) -> str:
    """The state the last state-changing event leaves the request in."""
    state = "received"
    for event in timeline:
        state = STATE_AFTER_EVENT.get(str(event.get("type")), state)
    return state


def first_at(timeline: Sequence[Mapping[str, Any]], kind: str) -> float | None:
    for event in timeline:
        if event.get("type") == kind:
            return float(event["at"])
    return None


def verdict(took_s: float | None, elapsed_s: float, limit_s: float) -> Verdict:
    if took_s is not None:
        return "met" if took_s <= limit_s else "missed"
    return "missed" if elapsed_s > limit_s else "pending"


def outcome_of(detail: Mapping[str, Any], city: City, speed: float, now: float) -> Outcome:
    """Reduce one request detail; ``now`` is the real time the report is made at."""
    timeline: Sequence[Mapping[str, Any]] = detail.get("timeline") or []
    received = float(detail["received_at"])
    types = [e.get("type") for e in timeline]
    took = {name: _since(first_at(timeline, FIRST_EVENT[name]), received, speed) for name in LIMITS}
    elapsed = max(0.0, now - received) * speed
    category = city.category(detail["category"])
    verdicts: dict[str, Verdict] | None = None
    if detail.get("route") == "linkage" and category is not None:
        verdicts = {
            name: verdict(took[name], elapsed, getattr(category.limits, f"{name}_s"))
            for name in LIMITS
        }
    arrived = next((e for e in timeline if e.get("type") == "arrived"), None)
    return Outcome(
        id=detail["id"],
        category=detail["category"],
        unit=detail.get("unit"),
        district=detail.get("district") or "",
        route=detail.get("route") or "",
        state=detail["state"],
        timeline_state=state_from_timeline(timeline),
        received_at=received,
        elapsed_s=elapsed,
        took=took,
        verdicts=verdicts,
        offers=types.count("offered"),
        non_responses=types.count("offer_expired"),
        deferred="deferred" in types,
        promise_kept=_promise_kept(detail, timeline, now),
        disputed="disputed" in types,
        auto_arrival=None if arrived is None else arrived.get("by") == AUTO_ARRIVAL_BY,
        notices=tuple(
            (str(e.get("notice_kind", "?")), int(e.get("level", 1)))
            for e in timeline
            if e.get("type") == "notice_issued"
        ),
        ruling=next((str(t) for t in reversed(types) if t in ("upheld", "reassigned")), None),
        cancelled=next(
            (
                str(e.get("reason") or e.get("cancel_reason") or "")
                for e in timeline
                if e.get("type") == "cancelled"
            ),
            None,
        ),
    )


def _since(at: float | None, received: float, speed: float) -> float | None:
    return None if at is None else max(0.0, at - received) * speed


def _promise_kept(
    detail: Mapping[str, Any], timeline: Sequence[Mapping[str, Any]], now: float
) -> bool | None:
    """Kept if resolved by the last promised time; broken if resolved later or still open
    past it; None if nothing was promised or the promise is still running."""
    promised = detail.get("promised_by")
    if not promised:
        return None
    resolved = first_at(timeline, "resolved")
    if resolved is not None:
        return resolved <= float(promised)
    return False if now > float(promised) else None


# ---- aggregation ---------------------------------------------------------------------------


def percentiles(values: Iterable[float]) -> dict[str, float | int | None]:
    """count, p50, p90 and max (linear interpolation between order statistics)."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "p50": None, "p90": None, "max": None}
    return {
        "count": len(ordered),
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "max": ordered[-1],
    }


def limit_counts(outcomes: Iterable[Outcome]) -> dict[str, dict[str, int]]:
    counts = {name: {"met": 0, "missed": 0, "pending": 0} for name in LIMITS}
    for outcome in outcomes:
        if outcome.verdicts is not None:
            for name in LIMITS:
                counts[name][outcome.verdicts[name]] += 1
    return counts


def on_time_rate(counts: Mapping[str, int]) -> float | None:
    """Met over decided (met + missed); None when nothing is decided yet."""
    decided = counts["met"] + counts["missed"]
    return counts["met"] / decided if decided else None


def time_distributions(outcomes: Sequence[Outcome]) -> dict[str, dict[str, float | int | None]]:
    return {
        name: percentiles(t for o in outcomes if (t := o.took[name]) is not None) for name in LIMITS
    }


def unit_row(unit: str, outcomes: Sequence[Outcome], city: City) -> dict[str, Any]:
    info = city.unit(unit)
    limits = limit_counts(outcomes)
    return {
        "unit": unit,
        "name_zh": info.name_zh if info else unit,
        "name_en": info.name_en if info else unit,
        "requests": len(outcomes),
        "resolved": sum(o.state == "resolved" for o in outcomes),
        "open": sum(not o.final for o in outcomes),
        "limits": limits,
        "on_time": {name: on_time_rate(limits[name]) for name in LIMITS},
        "times": time_distributions(outcomes),
        "non_responses": sum(o.non_responses for o in outcomes),
        "disputes": sum(o.disputed for o in outcomes),
        "deferrals": sum(o.deferred for o in outcomes),
        "broken_promises": sum(o.promise_kept is False for o in outcomes),
        "notices": sum(len(o.notices) for o in outcomes),
    }


def notice_counts(outcomes: Iterable[Outcome]) -> dict[str, Any]:
    """Supervision notices by unit, by kind and by level (each notice counted once)."""
    by_unit: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    by_level: Counter[int] = Counter()
    for outcome in outcomes:
        for kind, level in outcome.notices:
            by_unit[outcome.unit or "-"] += 1
            by_kind[kind] += 1
            by_level[level] += 1
    return {
        "total": sum(by_kind.values()),
        "by_unit": dict(sorted(by_unit.items())),
        "by_kind": dict(sorted(by_kind.items())),
        "by_level": {str(level): n for level, n in sorted(by_level.items())},
    }


def summarize(outcomes: Sequence[Outcome], city: City) -> dict[str, Any]:
    """The report's numbers. ``by_state`` counts add up to ``requests``; every linkage
    request has one verdict per limit, so met + missed + pending = ``linkage`` for each."""
    linkage = [o for o in outcomes if o.verdicts is not None]
    units = sorted({o.unit for o in linkage if o.unit})
    arrivals = [o.auto_arrival for o in outcomes if o.auto_arrival is not None]
    limits = limit_counts(linkage)
    return {
        "requests": len(outcomes),
        "linkage": len(linkage),
        "transferred": sum(o.state == "transferred" for o in outcomes),
        "resolved": sum(o.state == "resolved" for o in outcomes),
        "open": sum(not o.final for o in outcomes),
        "by_state": dict(sorted(Counter(o.state for o in outcomes).items())),
        "by_category": dict(sorted(Counter(o.category for o in outcomes).items())),
        "limits": limits,
        "on_time": {name: on_time_rate(limits[name]) for name in LIMITS},
        "times_s": time_distributions(linkage),
        "per_unit": [unit_row(u, [o for o in linkage if o.unit == u], city) for u in units],
        "offers": sum(o.offers for o in outcomes),
        "non_responses": sum(o.non_responses for o in outcomes),
        "disputes": sum(o.disputed for o in outcomes),
        "deferrals": sum(o.deferred for o in outcomes),
        "promises": {
            "kept": sum(o.promise_kept is True for o in outcomes),
            "broken": sum(o.promise_kept is False for o in outcomes),
        },
        "arrivals": {"by_geofence": sum(arrivals), "by_command": len(arrivals) - sum(arrivals)},
        "notices": notice_counts(outcomes),
        "rulings": dict(sorted(Counter(o.ruling for o in outcomes if o.ruling).items())),
        "cancelled": dict(
            sorted(Counter(o.cancelled for o in outcomes if o.cancelled is not None).items())
        ),
        "inconsistent": [o.id for o in outcomes if not o.consistent],
    }
