"""Benchmark: a month's scorecards for 150,000 requests (SPEC target: computed in ≤ 5 s).

    python -m tools.reports_bench [--requests 150000] [--db var/bench-ledger.sqlite3]
                                  [--database-url postgresql://...] [--repeat 3] [--json out.json]

Fills a ledger (a SQLite file by default, kept for the next run: ``--fresh`` to fill it
again) with a synthetic month: ``--requests`` linkage requests over the city's categories and
districts, each with the events the hub records for it (received, queued, offers and the odd
offer left to expire, accepted, en route, arrived, resolved; disputes and rulings, promises,
supervision notices, cancellations, a share still open at the month's end) and the citizen's
messages of each step (queued, attempted, delivered): about 20 events a request, 3 million
event rows for the target. Then times, ``--repeat`` times each:

- ``read``: the month's request rows and counted events from the ledger, reduced to facts
  (:func:`server.reports.store.period_facts`);
- ``score``: the scorecards from those facts (:func:`server.reports.scorecard.scorecards`);
- ``evaluation``: what ``GET /api/v1/reports/evaluation`` computes
  (:meth:`server.reports.service.Reports.evaluation`: the month and the month before it).

The figure held against the target is ``read + score`` (one month's scorecards), wall-clock
and CPU seconds of the process (all its threads: SQLite runs in the driver's thread). On a
machine shared with other work the wall-clock figure grows with the load average (recorded
too); the CPU figure is what the computation itself costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from server.city import City, load_city
from server.ledger import Ledger, tables
from server.ledger.fold import sort_key
from server.reports import periods, store
from server.reports.policy import load_policy
from server.reports.scorecard import scorecards
from server.reports.service import Reports

MONTH = "2026-03"
BATCH = 20_000


def _categories(city: City) -> list[tuple[str, str, str, Any]]:
    """(category, district, unit, limits) of every linkage category in every district."""
    found = []
    for category in city.categories:
        if category.route != "linkage":
            continue
        for district in city.districts:
            unit = city.unit_for(category.code, district.code)
            if unit is not None:
                found.append((category.code, district.code, unit.code, category.limits))
    return found


class Month:
    """Synthetic requests of one month, as the ledger's writer would leave them."""

    def __init__(self, city: City, span: periods.Span, count: int, seed: int = 7) -> None:
        self.city, self.span, self.count = city, span, count
        self.rng = random.Random(seed)
        self.choices = _categories(city)
        self.units = [u.code for u in city.units]
        self.sequence = 0

    def requests(self) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        step = (self.span.end - self.span.start) / self.count
        for n in range(self.count):
            yield self._one(n, self.span.start + n * step + self.rng.random() * step)

    def _event(
        self,
        rows: list[dict[str, Any]],
        request: tuple[str, str],
        kind: str,
        at: float,
        data: dict[str, Any] | None = None,
    ) -> None:
        """One event of ``request`` (id, the unit whose stream records it)."""
        request_id, unit = request
        self.sequence += 1
        stream_id = f"{int(at * 1000)}-{self.sequence}"
        payload = {"type": kind, "request": request_id, "at": round(at, 3), "by": "squad:S1"}
        payload.update(data or {})
        rows.append(
            {
                "unit": unit,
                "stream_id": stream_id,
                "sort_key": sort_key(stream_id),
                "request_id": request_id,
                "type": kind,
                "at": at,
                "by": payload["by"],
                "data": json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
            }
        )

    def _one(self, n: int, received: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        rng = self.rng
        category, district, unit, limits = rng.choice(self.choices)
        request_id = f"20260301-{n:06d}"
        events: list[dict[str, Any]] = []

        def add(kind: str, at: float, **data: Any) -> None:
            self._event(events, (request_id, unit), kind, at, data)

        def tell(step: str, at: float) -> None:
            message = {"message": f"{request_id}:{step}"}
            add("citizen_message_queued", at, event=step, **message)
            add("citizen_message_attempt", at + 0.5, **message)
            add("citizen_message_delivered", at + 0.6, **message)

        row: dict[str, Any] = {
            "id": request_id,
            "unit": unit,
            "category": category,
            "district": district,
            "route": "linkage",
            "caller_phone": "13800000000",
            "description": "水管爆裂，路面积水",
            "address": "西工区中州路",
            "lat": 34.67 + rng.uniform(-0.05, 0.05),
            "lon": 112.44 + rng.uniform(-0.05, 0.05),
            "received_at": received,
            "accept_by": received + limits.accept_s,
            "arrive_by": received + limits.arrive_s,
            "resolve_by": received + limits.resolve_s,
        }
        add("received", received, category=category, unit=unit, district=district)
        add("queued", received, route="linkage")
        t = received + rng.uniform(0.1, 5)
        add("offered", t, squad="S1")
        if rng.random() < 0.08:
            t += 60
            add("offer_expired", t)
            add("offered", t + 1, squad="S2")
        if rng.random() < 0.02:
            t += rng.uniform(30, 600)
            add("cancelled", t, reason="duplicate")
            row |= {"state": "cancelled", "updated_at": t}
            return row, events
        t += rng.expovariate(1 / (limits.accept_s * 0.4))
        row["accepted_at"] = t
        add("accepted", t)
        if t > row["accept_by"]:
            add("notice_issued", row["accept_by"], notice_kind="accept", level=1)
        if rng.random() < 0.04:
            t += 60
            add("disputed", t, reason="not ours")
            t += rng.uniform(120, 1800)
            if rng.random() < 0.5:
                add("reassigned", t, unit=(moved := rng.choice(self.units)))
                unit = row["unit"] = moved
            else:
                add("upheld", t)
            add("offered", t + 1, squad="S3")
            add("accepted", t + 30)
        tell("accepted", t)
        t += rng.uniform(10, 120)
        add("en_route", t)
        tell("en_route", t)
        t += rng.expovariate(1 / (limits.arrive_s * 0.4))
        row["arrived_at"] = t
        add("arrived", t)
        tell("arrived", t)
        if rng.random() < 0.06:
            until = t + rng.uniform(3600, 86_400 * 3)
            add("deferred", t + 60, until=until)
            row["resolve_by"] = until
            t = until + rng.uniform(-7200, 3600)
        else:
            t += rng.expovariate(1 / (limits.resolve_s * 0.3))
        if t > row["resolve_by"]:
            kind = "promise" if row["resolve_by"] != received + limits.resolve_s else "resolve"
            for level in range(1, rng.randint(1, 3) + 1):
                due = row["resolve_by"] + 1800 * (level - 1)
                add("notice_issued", due, notice_kind=kind, level=level)
        if t > self.span.end or rng.random() < 0.05:
            row |= {"state": "on_scene", "updated_at": t}
            return row, events
        add("resolved", t, note="修好了")
        tell("resolved", t)
        row |= {"state": "resolved", "resolved_at": t, "updated_at": t, "result": "修好了"}
        return row, events


async def fill(ledger: Ledger, month: Month) -> tuple[int, int]:
    """Write the month into the ledger; (requests, events) written."""
    requests = events = 0
    batch_rows: list[dict[str, Any]] = []
    batch_events: list[dict[str, Any]] = []
    columns = [c.name for c in tables.requests.columns]

    async def flush() -> None:
        async with ledger.engine.begin() as conn:
            if batch_rows:
                await conn.execute(tables.requests.insert(), batch_rows)
            if batch_events:
                await conn.execute(tables.events.insert(), batch_events)
        batch_rows.clear()
        batch_events.clear()

    for row, evs in month.requests():
        batch_rows.append({name: row.get(name) for name in columns})
        batch_events.extend(evs)
        requests += 1
        events += len(evs)
        if len(batch_events) >= BATCH:
            await flush()
    await flush()
    return requests, events


def _sqlite_file(db: Path, fresh: bool) -> str:
    if fresh and db.exists():
        db.unlink()
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{db.resolve()}"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    city = load_city()
    span = periods.month(MONTH, city.zone)
    url = args.database_url or _sqlite_file(Path(args.db), args.fresh)
    ledger = await Ledger.open(url)
    try:
        async with ledger.engine.connect() as conn:
            have = (await conn.execute(tables.requests.select().limit(1))).first() is not None
        filled: dict[str, Any] = {}
        if not have:
            started = time.perf_counter()
            count, events = await fill(ledger, Month(city, span, args.requests))
            filled = {"requests": count, "events": events, "fill_s": time.perf_counter() - started}
            print(f"filled {count} requests, {events} events in {filled['fill_s']:.0f} s")
        policy = load_policy()
        as_of = span.end + 3600
        timings: dict[str, list[float]] = {"read": [], "score": [], "evaluation": []}
        cpu: list[float] = []  # read + score, CPU seconds of the process (every thread)
        cards: list[Any] = []
        facts: list[Any] = []
        for _ in range(args.repeat):
            started, cpu_started = time.perf_counter(), time.process_time()
            _, facts = await store.period_facts(ledger.engine, span, as_of)
            read = time.perf_counter()
            cards = scorecards(facts, policy, units=[u.code for u in city.units])
            scored = time.perf_counter()
            cpu.append(time.process_time() - cpu_started)
            timings["read"].append(read - started)
            timings["score"].append(scored - read)
            reports = Reports(ledger.engine, city, policy, clock=lambda: as_of)
            started = time.perf_counter()
            await reports.evaluation(MONTH)
            timings["evaluation"].append(time.perf_counter() - started)
        month_s = [r + s for r, s in zip(timings["read"], timings["score"], strict=True)]
        result = {
            "database": ledger.engine.dialect.name,
            "requests_in_month": len(facts),
            "units": len(cards),
            "filled": filled,
            "seconds": {
                k: {"best": min(v), "median": statistics.median(v)} for k, v in timings.items()
            },
            "month_scorecards_s": {"best": min(month_s), "median": statistics.median(month_s)},
            "month_scorecards_cpu_s": {"best": min(cpu), "median": statistics.median(cpu)},
            "load_average": os.getloadavg(),
            "target_s": 5.0,
        }
    finally:
        await ledger.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=150_000)
    parser.add_argument("--db", default="var/bench-ledger.sqlite3")
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL instead of the SQLite file"
    )
    parser.add_argument("--fresh", action="store_true", help="fill the SQLite file again")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
