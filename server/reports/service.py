"""The reports, put together: reads the ledger through :mod:`server.reports.store`, computes
with the pure modules, and keeps spot checks and efficiency records. The API
(:mod:`server.api.reports`) calls this, and adds who may see what and the CSV and SVG forms.

Months are judged as of the moment they are computed (``as_of`` in every answer): a request
still open after its deadline has missed it, whenever the month is looked at. Closing a
month freezes each unit's scorecard as of that moment; computing the month again later shows
what changed beside the frozen record (``recomputed``), never over it.
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine

from server import deadlines
from server.city import City
from server.lifecycle import State
from server.reports import fortnight, periods, sampling, store
from server.reports.policy import Policy
from server.reports.scorecard import (
    SPOT_OUTCOMES,
    SPOT_PASSED,
    SPOT_REACHED,
    RequestFacts,
    Scorecard,
    scorecards,
)

# Fields of a scorecard that depend on the month before, not on the month itself.
_CHANGE_FIELDS = ("previous_score", "previous_rank", "score_change", "rank_change")


class UnitName(msgspec.Struct):
    zh: str
    en: str


class Closed(msgspec.Struct):
    at: float
    by: str
    as_of: float  # the moment the frozen figures were judged at


class Evaluation(msgspec.Struct):
    """A month's evaluation: each unit's scorecard, best rank first. For a closed month the
    cards are the frozen efficiency records and ``recomputed`` holds the units whose figures
    computed now differ from their record."""

    month: str
    start: float
    end: float
    as_of: float
    closed: Closed | None
    weights: dict[str, float]
    units: list[Scorecard]
    recomputed: list[Scorecard]
    names: dict[str, UnitName]


class RecordMonth(msgspec.Struct):
    month: str
    closed_at: float
    closed_by: str
    as_of: float
    figures: Scorecard
    weights: dict[str, float]
    recomputed: Scorecard | None = None  # only when asked for, and only if it differs


class UnitRecord(msgspec.Struct):
    unit: str
    name: UnitName
    months: list[RecordMonth]


class CircularRow(msgspec.Struct):
    unit: str
    name_zh: str
    name_en: str
    drawn: int
    checked: int
    satisfied: int
    not_satisfied: int
    not_fixed: int
    unreachable: int
    pass_rate: float | None
    rank: int | None


class Circular(msgspec.Struct):
    """The weekly circular: units ranked by spot-check pass rate (satisfied of the callbacks
    that reached the citizen); units without such a callback are listed unranked."""

    week: str
    start: float
    end: float
    units: list[CircularRow]


WEEKLY_DRAWER = "system:weekly-spot-checks"


class Reports:
    def __init__(
        self,
        engine: AsyncEngine,
        city: City,
        policy: Policy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._city = city
        self._policy = policy
        self._clock = clock

    @property
    def zone(self) -> Any:
        return self._city.zone

    def names(self) -> dict[str, UnitName]:
        return {u.code: UnitName(u.name_zh, u.name_en) for u in self._city.units}

    def weights(self) -> dict[str, float]:
        return dict(self._policy.weights.items())

    # ---- the monthly evaluation -----------------------------------------------------------

    async def evaluation(self, month: str) -> Evaluation:
        """The month's evaluation (raises periods.PeriodError for a bad month)."""
        span = periods.month(month, self.zone)
        now = self._clock()
        frozen = await store.records(self._engine, month=month)
        live = (await self.compute([month], now))[month]
        if not frozen:
            return Evaluation(
                month, span.start, span.end, now, None, self.weights(), live, [], self.names()
            )
        cards = _sorted([msgspec.convert(r["figures"], Scorecard) for r in frozen])
        by_unit = {c.unit: c for c in cards}
        recomputed = [c for c in live if differs(by_unit.get(c.unit), c)]
        first = frozen[0]
        return Evaluation(
            month=month,
            start=span.start,
            end=span.end,
            as_of=now,
            closed=Closed(first["closed_at"], first["closed_by"], first["as_of"]),
            weights=dict(first["policy"].get("weights", {})),
            units=cards,
            recomputed=recomputed,
            names=self.names(),
        )

    async def close(self, month: str, by: str) -> Evaluation:
        """Freeze every unit's scorecard of ``month`` as its efficiency record. Raises
        store.Conflict if the month is closed already or not over yet."""
        span = periods.month(month, self.zone)
        now = self._clock()
        if span.end > now:
            raise store.Conflict(f"month {month} is not over yet")
        cards = (await self.compute([month], now))[month]
        policy = {"weights": self.weights(), "ranking": msgspec.to_builtins(self._policy.ranking)}
        await store.close_month(self._engine, month, cards, policy, now, by, now)
        return await self.evaluation(month)

    async def compute(self, months: Sequence[str], as_of: float) -> dict[str, list[Scorecard]]:
        """Each month's scorecards computed now, from the ledger, in one pass over the
        requests from the month before the first to the last. The change is against the
        month before: its frozen records if it is closed, else that month computed too."""
        wanted = sorted(set(months))
        sequence = periods.months_between(periods.previous_month(wanted[0]), wanted[-1])
        closed = await store.closed_months(self._engine, sequence)
        frozen = {
            month: {
                r["unit"]: msgspec.convert(r["figures"], Scorecard)
                for r in await store.records(self._engine, month=month)
            }
            for month in sorted(closed)
        }
        needed = [m for m in sequence if m in wanted or m not in closed]
        spans = [periods.month(m, self.zone) for m in needed]
        whole = periods.Span("", spans[0].start, spans[-1].end)
        _, facts = await store.period_facts(self._engine, whole, as_of)
        outcomes = await store.spot_outcomes(self._engine, whole)
        facts_by_month: dict[str, list[RequestFacts]] = defaultdict(list)
        for item in facts:
            facts_by_month[periods.month_of(item.received_at, self.zone)].append(item)
        spots_by_month: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for unit, outcome, at in outcomes:
            spots_by_month[periods.month_of(at, self.zone)].append((unit, outcome))
        results: dict[str, list[Scorecard]] = {}
        previous: Mapping[str, Scorecard] | None = None
        for month in sequence:
            if month in needed:
                results[month] = scorecards(
                    facts_by_month.get(month, []),
                    self._policy,
                    units=[u.code for u in self._city.units],
                    spot_checks=spots_by_month.get(month, []),
                    previous=previous,
                )
            previous = frozen.get(month) or {c.unit: c for c in results[month]}
        return {m: results[m] for m in wanted}

    async def record(self, unit: str, recompute: bool = False) -> UnitRecord:
        """The unit's efficiency record, month by month (closed months only)."""
        rows = await store.records(self._engine, unit=unit)
        again: dict[str, list[Scorecard]] = {}
        if recompute and rows:
            again = await self.compute([r["month"] for r in rows], self._clock())
        months = []
        for row in rows:
            figures = msgspec.convert(row["figures"], Scorecard)
            live = next((c for c in again.get(row["month"], []) if c.unit == unit), None)
            months.append(
                RecordMonth(
                    month=row["month"],
                    closed_at=row["closed_at"],
                    closed_by=row["closed_by"],
                    as_of=row["as_of"],
                    figures=figures,
                    weights=dict(row["policy"].get("weights", {})),
                    recomputed=live if live is not None and differs(figures, live) else None,
                )
            )
        name = self.names().get(unit, UnitName(unit, unit))
        return UnitRecord(unit, name, months)

    async def trend(
        self, last: str, count: int
    ) -> tuple[list[str], dict[str, list[Scorecard | None]]]:
        """The ``count`` months up to ``last``: each unit's card per month (the frozen
        record for a closed month, computed now for an open one)."""
        months = periods.months_until(last, count)
        closed = await store.closed_months(self._engine, months)
        open_months = [m for m in months if m not in closed]
        computed = await self.compute(open_months, self._clock()) if open_months else {}
        frozen: dict[str, dict[str, Scorecard]] = defaultdict(dict)
        for month in closed:
            for row in await store.records(self._engine, month=month):
                frozen[month][row["unit"]] = msgspec.convert(row["figures"], Scorecard)
        series: dict[str, list[Scorecard | None]] = {u.code: [] for u in self._city.units}
        for month in months:
            cards = frozen[month] if month in closed else {c.unit: c for c in computed[month]}
            for unit, values in series.items():
                values.append(cards.get(unit))
        return months, series

    # ---- spot checks -----------------------------------------------------------------------

    async def draw(
        self, week: str, size: int | None, seed: str | None, by: str
    ) -> tuple[str, list[int]]:
        """Draw ``week``'s spot checks (``size`` per unit, the policy's by default; a random
        seed unless given). Returns the seed and the new checks' ids. Raises store.Conflict
        when a concurrent draw took one of the requests."""
        span = periods.week(week, self.zone)
        seed = seed or secrets.token_hex(8)
        candidates = await store.resolved_in(self._engine, span)
        excluded = await store.drawn_among(self._engine, {c.id for c in candidates})
        per_unit = size if size is not None else self._policy.spot_checks.per_unit
        picked = sampling.draw(candidates, per_unit, seed, excluded)
        ids = await store.insert_draw(self._engine, week, picked, seed, by, self._clock())
        return seed, ids

    async def draw_last_week(self, now: float) -> tuple[str, list[int]] | None:
        """The weekly draw (seed §4.4): once a week is over, its spot checks are drawn unless
        someone drew them already (on demand, or another process). Returns the week and the
        new checks, or None if there was nothing to do. A concurrent draw that took one of
        the requests wins; this one draws nothing (the next call finds the week drawn)."""
        week = periods.week_of(now - 7 * 86_400, self.zone)
        if await store.spot_checks(self._engine, week=week):
            return None
        try:
            _, ids = await self.draw(week, None, None, WEEKLY_DRAWER)
        except store.Conflict:
            return None
        return week, ids

    async def circular(self, week: str, units: Iterable[str] | None = None) -> Circular:
        span = periods.week(week, self.zone)
        checks = await store.spot_checks(self._engine, week=week)
        return Circular(week, span.start, span.end, circular_rows(checks, self.names(), units))

    # ---- the fortnightly report ----------------------------------------------------------

    async def fortnight(self, first_day: str, unit: str | None = None) -> fortnight.FortnightReport:
        """The report of the fortnight from ``first_day``; ``unit``: a unit desk's, of its
        own requests only (see :mod:`server.reports.fortnight`)."""
        span = periods.fortnight(first_day, self.zone)
        now = self._clock()
        rows, facts = await store.period_facts(self._engine, span, now, places=True)
        disputed = await store.rows_in_state(self._engine, State.DISPUTED.value)
        disputed_events = await store.last_events(
            self._engine, [r["id"] for r in disputed], "disputed"
        )
        late = [(r["unit"], r["id"]) for r in await store.open_rows(self._engine) if _late(r, now)]
        notices = await store.open_notices(self._engine, self._policy.fortnight.notice_level)
        return fortnight.report(
            period=span.name,
            start=span.start,
            end=span.end,
            as_of=now,
            rows=rows,
            facts=facts,
            disputed_rows=disputed,
            disputed_events=disputed_events,
            open_items=late,
            notice_rows=notices,
            policy=self._policy.fortnight,
            unit=unit,
        )


def _late(row: Mapping[str, Any], now: float) -> bool:
    """Whether an open request is past its next deadline (the rules of the supervision
    queue, :func:`server.deadlines.next_deadline`)."""
    try:
        state = State(row.get("state") or "received")
    except ValueError:
        return False
    upcoming = deadlines.next_deadline(
        deadlines.Progress(
            state=state,
            accept_by=row.get("accept_by"),
            arrive_by=row.get("arrive_by"),
            resolve_by=row.get("resolve_by"),
            accepted_at=row.get("accepted_at"),
            arrived_at=row.get("arrived_at"),
        )
    )
    return upcoming is not None and upcoming.at <= now


def differs(frozen: Scorecard | None, live: Scorecard) -> bool:
    """Whether the month's figures computed now differ from the frozen record (the change
    against the month before is not the month's own figure: left out)."""
    if frozen is None:
        return live.requests > 0 or live.spot_checks.checked > 0
    a, b = msgspec.to_builtins(frozen), msgspec.to_builtins(live)
    for name in _CHANGE_FIELDS:
        a.pop(name, None)
        b.pop(name, None)
    return bool(a != b)


def _sorted(cards: list[Scorecard]) -> list[Scorecard]:
    return sorted(cards, key=lambda c: (c.rank is None, c.rank or 0, c.unit))


def circular_rows(
    checks: Iterable[Mapping[str, Any]],
    names: Mapping[str, UnitName],
    units: Iterable[str] | None = None,
) -> list[CircularRow]:
    """The week's spot checks per unit, ranked by pass rate (equal rates share a rank);
    ``units``: only these (a unit desk's own). Pure."""
    drawn: dict[str, int] = defaultdict(int)
    outcomes: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPOT_OUTCOMES, 0))
    for check in checks:
        unit = str(check["unit"])
        drawn[unit] += 1
        if check.get("outcome") in SPOT_OUTCOMES:
            outcomes[unit][str(check["outcome"])] += 1
    rows = []
    for unit in sorted(drawn):
        counts = outcomes[unit]
        reached = sum(counts[o] for o in SPOT_REACHED)
        name = names.get(unit, UnitName(unit, unit))
        rows.append(
            CircularRow(
                unit=unit,
                name_zh=name.zh,
                name_en=name.en,
                drawn=drawn[unit],
                checked=sum(counts.values()),
                pass_rate=sum(counts[o] for o in SPOT_PASSED) / reached if reached else None,
                rank=None,
                **counts,
            )
        )
    ranked = sorted((r for r in rows if r.pass_rate is not None), key=lambda r: -(r.pass_rate or 0))
    for position, row in enumerate(ranked, start=1):
        before = ranked[position - 2] if position > 1 else None
        row.rank = before.rank if before and before.pass_rate == row.pass_rate else position
    if units is not None:
        wanted = set(units)
        rows = [r for r in rows if r.unit in wanted]
    return sorted(rows, key=lambda r: (r.rank is None, r.rank or 0, r.unit))
