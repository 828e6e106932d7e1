"""A run's statistics: the server's own scorecards (:mod:`server.reports.scorecard`, the
module the monthly evaluation uses) over the hub's request details, plus what only a run
has to say (whether each request's state agrees with its timeline, arrivals by geofence).

Input is what ``GET /api/v1/requests/{id}`` answers (``received_at``, ``state``,
``deadlines``, ``timeline`` of ``{"type", "at", "by", ...}`` in real epoch seconds). Limits
are judged against the request's own deadlines, which the hub set from the category's
limits on the simulation's time scale; durations are turned back into simulated seconds by
multiplying by the run's speed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from server import lifecycle
from server.city import City
from server.reports.policy import Policy, load_policy
from server.reports.scorecard import (
    LIMITS,
    RequestFacts,
    Verdict,
    detail_row,
    facts_of,
    scorecards,
    tally_facts,
    timeline_events,
)

# The state a request is in right after each timeline event: the lifecycle's own table.
STATE_AFTER_EVENT: Mapping[str, str] = {
    event: state.value for event, state in lifecycle.STATE_AFTER_EVENT.items()
}
FINAL_STATES = frozenset(state.value for state in lifecycle.FINAL)
AUTO_ARRIVAL_BY = "system:auto-arrival"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request of the run: the server's facts about it, and what the run checks."""

    facts: RequestFacts
    timeline_state: str
    elapsed_s: float  # simulated seconds from receipt to the report
    auto_arrival: bool | None  # arrived by the geofence (True) or the button; None: no arrival
    deadlines: Mapping[str, float | None]
    offers: int  # offers made (the scorecards count non-responses, not offers)

    @property
    def id(self) -> str:
        return self.facts.id

    @property
    def state(self) -> str:
        return self.facts.state

    @property
    def consistent(self) -> bool:
        return self.facts.state == self.timeline_state

    @property
    def final(self) -> bool:
        return self.facts.state in FINAL_STATES

    @property
    def took(self) -> Mapping[str, float | None]:
        return self.facts.took

    @property
    def verdicts(self) -> Mapping[str, Verdict] | None:
        return self.facts.verdicts

    @property
    def non_responses(self) -> int:
        return len(self.facts.non_responses)

    @property
    def deferred(self) -> bool:
        return self.facts.promise is not None

    @property
    def promise_kept(self) -> bool | None:
        return self.facts.promise[1] if self.facts.promise else None

    @property
    def disputed(self) -> bool:
        return bool(self.facts.disputes)

    @property
    def ruling(self) -> str | None:
        """The ruling on the last dispute, if there was one and it is ruled."""
        rulings = [r for _, r in self.facts.disputes if r in ("upheld", "reassigned")]
        return rulings[-1] if rulings else None

    @property
    def cancelled(self) -> str | None:
        """The reason, if the center cancelled it."""
        return self.facts.cancelled

    @property
    def notices(self) -> tuple[tuple[str, int], ...]:
        """(kind, level) of every supervision notice."""
        return tuple((kind, level) for _, kind, level in self.facts.notices)

    def to_json(self) -> dict[str, Any]:
        facts = self.facts
        return {
            "id": facts.id,
            "category": facts.category,
            "unit": facts.unit or None,
            "district": facts.district,
            "route": facts.route,
            "state": facts.state,
            "timeline_state": self.timeline_state,
            "consistent": self.consistent,
            "received_at": facts.received_at,
            "elapsed_s": round(self.elapsed_s, 1),
            "took_s": {k: None if v is None else round(v, 1) for k, v in facts.took.items()},
            "deadlines": dict(self.deadlines),
            "limits": dict(facts.verdicts) if facts.verdicts is not None else None,
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


def outcome_of(detail: Mapping[str, Any], speed: float, now: float) -> Outcome:
    """Reduce one request detail; ``now`` is the real time the report is made at."""
    timeline: Sequence[Mapping[str, Any]] = detail.get("timeline") or []
    row = detail_row(detail)
    events = timeline_events(timeline, str(detail.get("unit") or ""))
    arrived = next((e for e in timeline if e.get("type") == "arrived"), None)
    received = float(detail["received_at"])
    return Outcome(
        facts=facts_of(row, events, as_of=now, duration_scale=speed),
        timeline_state=state_from_timeline(timeline),
        elapsed_s=max(0.0, now - received) * speed,
        auto_arrival=None if arrived is None else arrived.get("by") == AUTO_ARRIVAL_BY,
        deadlines={name: row[f"{name}_by"] for name in LIMITS},
        offers=sum(e.get("type") == "offered" for e in timeline),
    )


def summarize(
    outcomes: Sequence[Outcome], city: City, policy: Policy | None = None
) -> dict[str, Any]:
    """The run's numbers. ``by_state`` counts add up to ``requests``; every linkage request
    has one verdict per limit, so met + missed + pending + void = ``linkage`` for each.
    ``per_unit`` are the server's scorecards (scored and ranked by ``policy``, the shipped
    one by default), with each unit's names."""
    facts = [o.facts for o in outcomes]
    linkage = [o for o in outcomes if o.facts.linkage]
    whole = tally_facts(facts, group="*")["*"]  # all zeros when nothing was counted
    cards = scorecards(facts, policy or load_policy())
    arrivals = [o.auto_arrival for o in outcomes if o.auto_arrival is not None]
    return {
        "requests": len(outcomes),
        "linkage": len(linkage),
        "transferred": sum(o.state == "transferred" for o in outcomes),
        "resolved": sum(o.state == "resolved" for o in outcomes),
        "open": sum(not o.final for o in outcomes),
        "by_state": dict(sorted(Counter(o.state for o in outcomes).items())),
        "by_category": dict(sorted(Counter(o.facts.category for o in outcomes).items())),
        "limits": whole.limits,
        "on_time": whole.on_time,
        "times_s": {name: msgspec.to_builtins(whole.times[name]) for name in LIMITS},
        "per_unit": [_unit_row(msgspec.to_builtins(card), city) for card in cards],
        "offers": sum(o.offers for o in outcomes),
        "non_responses": sum(o.non_responses for o in outcomes),
        "disputes": sum(len(o.facts.disputes) for o in outcomes),
        "deferrals": sum(o.deferred for o in outcomes),
        "promises": {
            "kept": sum(o.promise_kept is True for o in outcomes),
            "broken": sum(o.promise_kept is False for o in outcomes),
        },
        "arrivals": {"by_geofence": sum(arrivals), "by_command": len(arrivals) - sum(arrivals)},
        "notices": {
            "total": whole.notices.total,
            "by_unit": {card.unit: card.notices.total for card in cards if card.notices.total},
            "by_kind": whole.notices.by_kind,
            "by_level": whole.notices.by_level,
        },
        "rulings": dict(
            sorted(Counter(r for o in outcomes for _, r in o.facts.disputes if r != "open").items())
        ),
        "cancelled": dict(
            sorted(Counter(c for o in outcomes if (c := o.facts.cancelled) is not None).items())
        ),
        "inconsistent": [o.id for o in outcomes if not o.consistent],
    }


def _unit_row(card: dict[str, Any], city: City) -> dict[str, Any]:
    info = city.unit(card["unit"])
    return {
        "unit": card["unit"],
        "name_zh": info.name_zh if info else card["unit"],
        "name_en": info.name_en if info else card["unit"],
        **{k: v for k, v in card.items() if k != "unit"},
    }
