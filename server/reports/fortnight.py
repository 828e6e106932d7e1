"""The fortnightly coordination report for the leadership group (领导小组, seed §3.4): what
is stuck. Pure: the caller reads the ledger and passes plain rows.

- **Open disputes**: requests waiting for the center's ruling on a jurisdiction dispute.
- **Chronically overdue** units and categories: of the fortnight's requests, the share that
  missed a limit, flagged when it reaches the policy's threshold (``[fortnight]`` in
  policy.toml), with each unit's items overdue now.
- **Repeat locations**: the same problem (category) reported again and again within a
  radius in the fortnight: a cluster starts at a request and takes every later request of
  the category within the radius of that first one.
- **Notices still open** at the policy's level or higher (the ledger's ``notices``).

Every item carries ``link``, the API path of the request.

A unit desk's report (``unit``) holds that unit's requests only: its disputes, notices and
overdue figures (a category's too: a category two units share, split by district, counts
only the unit's own requests), and in a repeat location its own requests, the other units'
only counted (``others``): their callers' addresses and their ids are not the desk's to see.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from server.reports.policy import Fortnight
from server.reports.scorecard import RequestFacts

EARTH_RADIUS_M = 6_371_008.8
ASSIST_SEPARATOR = "~"  # server.ids: an assist item sits where its request does


def link(request_id: str) -> str:
    return f"/api/v1/requests/{request_id}"


class OpenDispute(msgspec.Struct):
    id: str
    unit: str
    category: str
    district: str
    received_at: float | None
    disputed_at: float | None
    reason: str
    link: str


class Overdue(msgspec.Struct):
    """A unit's or a category's share of requests that missed a limit."""

    key: str  # the unit or the category
    requests: int
    missed: int
    share: float
    chronic: bool
    overdue_now: list[str] = []  # a unit's open items past a deadline now


class RepeatItem(msgspec.Struct):
    id: str
    unit: str
    received_at: float | None
    address: str
    link: str


class Repeat(msgspec.Struct):
    """A cluster. Place and times are those of the requests listed; ``count`` is every
    request of the cluster, ``others`` those of other units left out (a unit desk's)."""

    category: str
    lat: float
    lon: float
    address: str
    count: int
    first_at: float | None
    last_at: float | None
    requests: list[RepeatItem]
    others: int = 0


class OpenNotice(msgspec.Struct):
    id: str
    request: str
    unit: str
    kind: str
    level: int
    issued_at: float | None
    link: str


class FortnightReport(msgspec.Struct):
    period: str  # "2026-03-02/14"
    start: float
    end: float
    as_of: float
    disputes: list[OpenDispute]
    overdue_units: list[Overdue]
    overdue_categories: list[Overdue]
    repeats: list[Repeat]
    notices: list[OpenNotice]


# ---- the parts ----------------------------------------------------------------------------


def open_disputes(
    rows: Iterable[Mapping[str, Any]], disputed: Mapping[str, Mapping[str, Any]]
) -> list[OpenDispute]:
    """``rows``: requests in state ``disputed``; ``disputed``: the last ``disputed`` event's
    JSON of each (by request id). Oldest dispute first."""
    found = []
    for row in rows:
        event = disputed.get(str(row["id"]), {})
        found.append(
            OpenDispute(
                id=str(row["id"]),
                unit=str(row.get("unit") or ""),
                category=str(row.get("category") or ""),
                district=str(row.get("district") or ""),
                received_at=row.get("received_at"),
                disputed_at=event.get("at"),
                reason=str(event.get("reason") or ""),
                link=link(str(row["id"])),
            )
        )
    return sorted(found, key=lambda d: (d.disputed_at or 0.0, d.id))


def overdue(
    facts: Iterable[RequestFacts], key: str, policy: Fortnight, overdue_now: Mapping[str, list[str]]
) -> list[Overdue]:
    """Per ``key`` (``"unit"`` or ``"category"``): the linkage requests and those that
    missed a limit, and ``overdue_now`` (items past a deadline now, by key, whenever they
    were received); only keys with a miss or an item overdue now, chronic ones first, then
    by share."""
    requests: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    for item in facts:
        if item.verdicts is None:
            continue
        name = getattr(item, key)
        requests[name] += 1
        missed[name] += "missed" in item.verdicts.values()
    found = []
    for name in set(requests) | set(overdue_now):
        n, late = requests[name], missed[name]
        if not late and not overdue_now.get(name):
            continue
        share = late / n if n else 0.0
        chronic = share >= policy.overdue_share and late >= policy.overdue_min
        found.append(Overdue(name, n, late, share, chronic, sorted(overdue_now.get(name, []))))
    return sorted(found, key=lambda o: (not o.chronic, -o.share, -o.missed, o.key))


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in metres between two (lat, lon) points (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def repeats(
    rows: Iterable[Mapping[str, Any]], policy: Fortnight, unit: str | None = None
) -> list[Repeat]:
    """Clusters of ``repeat_min`` or more requests of one category within
    ``repeat_radius_m`` of the cluster's first request; largest first. Rows need ``id``,
    ``category``, ``lat``, ``lon``, ``received_at`` (``unit``, ``address`` shown).
    ``unit``: only the clusters holding a request of it, each showing its requests only."""
    radius = policy.repeat_radius_m
    cell_lat = radius / 111_320.0
    clusters: list[list[Mapping[str, Any]]] = []
    anchors: dict[tuple[str, int, int], list[int]] = defaultdict(list)  # cell -> clusters
    ordered = sorted(
        (r for r in rows if _placed(r) and ASSIST_SEPARATOR not in str(r["id"])),
        key=lambda r: (r.get("received_at") or 0.0, str(r["id"])),
    )
    for row in ordered:
        point = (float(row["lat"]), float(row["lon"]))
        category = str(row.get("category") or "")
        cell_lon = cell_lat / max(0.01, math.cos(math.radians(point[0])))
        cell = (int(point[0] // cell_lat), int(point[1] // cell_lon))
        home = _nearest(clusters, anchors, category, cell, point, radius)
        if home is None:
            anchors[(category, *cell)].append(len(clusters))
            clusters.append([row])
        else:
            clusters[home].append(row)
    found = []
    for cluster in clusters:
        shown = cluster if unit is None else [r for r in cluster if r.get("unit") == unit]
        if len(cluster) >= policy.repeat_min and shown:
            found.append(_repeat(shown, len(cluster)))
    return sorted(found, key=lambda r: (-r.count, r.first_at or 0.0))


def _placed(row: Mapping[str, Any]) -> bool:
    lat, lon = row.get("lat"), row.get("lon")
    return isinstance(lat, int | float) and isinstance(lon, int | float) and (lat, lon) != (0, 0)


def _nearest(
    clusters: Sequence[Sequence[Mapping[str, Any]]],
    anchors: Mapping[tuple[str, int, int], list[int]],
    category: str,
    cell: tuple[int, int],
    point: tuple[float, float],
    radius: float,
) -> int | None:
    best: tuple[float, int] | None = None
    for d_lat in (-1, 0, 1):
        for d_lon in (-1, 0, 1):
            for index in anchors.get((category, cell[0] + d_lat, cell[1] + d_lon), ()):
                first = clusters[index][0]
                gap = distance_m(point, (float(first["lat"]), float(first["lon"])))
                if gap <= radius and (best is None or gap < best[0]):
                    best = (gap, index)
    return best[1] if best else None


def _repeat(shown: Sequence[Mapping[str, Any]], count: int) -> Repeat:
    """``shown``: the cluster's requests to list, in order; ``count``: all of them."""
    first = shown[0]
    times = [float(r["received_at"]) for r in shown if r.get("received_at") is not None]
    return Repeat(
        category=str(first.get("category") or ""),
        lat=float(first["lat"]),
        lon=float(first["lon"]),
        address=str(first.get("address") or ""),
        count=count,
        first_at=min(times) if times else None,
        last_at=max(times) if times else None,
        requests=[
            RepeatItem(
                id=str(r["id"]),
                unit=str(r.get("unit") or ""),
                received_at=r.get("received_at"),
                address=str(r.get("address") or ""),
                link=link(str(r["id"])),
            )
            for r in shown
        ],
        others=count - len(shown),
    )


def open_notices(rows: Iterable[Mapping[str, Any]], level: int) -> list[OpenNotice]:
    """Notices not closed, at ``level`` or higher, most escalated first. ``rows``: the
    ledger's ``notices`` rows (``id``, ``request_id``, ``unit``, ``kind``, ``level``,
    ``issued_at``, ``closed_at``)."""
    found = [
        OpenNotice(
            id=str(row["id"]),
            request=str(row["request_id"]),
            unit=str(row["unit"]),
            kind=str(row["kind"]),
            level=int(row["level"]),
            issued_at=row.get("issued_at"),
            link=link(str(row["request_id"])),
        )
        for row in rows
        if row.get("closed_at") is None and int(row["level"]) >= level
    ]
    return sorted(found, key=lambda n: (-n.level, n.issued_at or 0.0, n.id))


def report(
    *,
    period: str,
    start: float,
    end: float,
    as_of: float,
    rows: Sequence[Mapping[str, Any]],
    facts: Sequence[RequestFacts],
    disputed_rows: Iterable[Mapping[str, Any]],
    disputed_events: Mapping[str, Mapping[str, Any]],
    open_items: Iterable[tuple[str, str]],
    notice_rows: Iterable[Mapping[str, Any]],
    policy: Fortnight,
    unit: str | None = None,
) -> FortnightReport:
    """The report. ``rows`` / ``facts``: the fortnight's requests; ``open_items``: (unit,
    request id) of each item overdue now; ``unit``: a unit desk's report (see above)."""

    def own(holder: object) -> bool:
        return unit is None or holder == unit

    overdue_now: dict[str, list[str]] = defaultdict(list)
    for holder, request_id in open_items:
        if own(holder):
            overdue_now[holder].append(request_id)
    facts = [f for f in facts if own(f.unit)]
    return FortnightReport(
        period=period,
        start=start,
        end=end,
        as_of=as_of,
        disputes=[d for d in open_disputes(disputed_rows, disputed_events) if own(d.unit)],
        overdue_units=overdue(facts, "unit", policy, overdue_now),
        overdue_categories=overdue(facts, "category", policy, {}),
        repeats=repeats(rows, policy, unit),
        notices=[n for n in open_notices(notice_rows, policy.notice_level) if own(n.unit)],
    )
