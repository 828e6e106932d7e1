"""The load test's arithmetic: percentiles, rates, and matching offers to intake. Pure.

Latencies are differences of ``time.monotonic()`` readings taken in different processes of
the same machine: on Linux that is ``CLOCK_MONOTONIC``, one clock for the whole system.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from server.reports.scorecard import percentile


def summarize(
    values: Sequence[float], qs: Iterable[int] = (50, 95, 99), digits: int = 3
) -> dict[str, float | None]:
    """{"p50": ..., "p95": ..., ...} of ``values``, rounded."""
    result: dict[str, float | None] = {}
    for q in qs:
        value = percentile(values, q)
        result[f"p{q}"] = None if value is None else round(value, digits)
    return result


def cpu_percent(cpu_s_before: float, cpu_s_after: float, wall_s: float) -> float:
    """CPU use of a process over ``wall_s`` seconds, in percent of one core."""
    if wall_s <= 0:
        return 0.0
    return round(100.0 * (cpu_s_after - cpu_s_before) / wall_s, 1)


def rate(count_before: int, count_after: int, wall_s: float) -> float:
    return round((count_after - count_before) / wall_s, 1) if wall_s > 0 else 0.0


def ingest_rate(samples: Sequence[int], window_s: float) -> float:
    """Fixes per second from samples of "squads whose last fix lies in the last ``window_s``".

    With a window shorter than a squad's position interval, each squad has at most one fix in
    it, so a sample counts the fixes the hub wrote during that window.
    """
    if not samples or window_s <= 0:
        return 0.0
    return round(sum(samples) / len(samples) / window_s, 1)


@dataclass(frozen=True, slots=True)
class Intake:
    """One POST /api/v1/requests as the load generator saw it."""

    sent_at: float  # monotonic, when the request was due to leave
    status: int  # HTTP status, 0 if no response (connection failed or timed out)
    request_id: str = ""
    squad: str = ""  # the squad the API says the offer went to ("" if it queued)
    assignment: str = ""
    answered_at: float = 0.0  # monotonic, when the response was read (0: none)
    error: str = ""  # why it failed: the API's error code, "timeout" or "connection"
    attempts: int = 1  # POSTs sent (retries carry the first one's Idempotency-Key)
    caller: str = ""  # the caller_phone sent: finds the request when no answer came


@dataclass(frozen=True, slots=True)
class OfferSeen:
    """An offer frame as a squad's client received it."""

    request_id: str
    squad: str
    assignment: str
    received_at: float  # monotonic


def dispatch_latencies_ms(intakes: Sequence[Intake], offers: Sequence[OfferSeen]) -> list[float]:
    """Intake sent -> offer frame received by the squad the API named, for requests offered
    at intake. An offer that reached another squad does not count (it is a lost frame)."""
    received = {(o.assignment, o.squad): o.received_at for o in offers}
    latencies = []
    for intake in intakes:
        seen = received.get((intake.assignment, intake.squad)) if intake.assignment else None
        if seen is not None:
            latencies.append((seen - intake.sent_at) * 1000.0)
    return latencies


def dispatch_series(
    intakes: Sequence[Intake], offers: Sequence[OfferSeen], start: float
) -> list[tuple[float, float]]:
    """(seconds since ``start`` the request was sent, intake -> offer ms), in sending order."""
    received = {(o.assignment, o.squad): o.received_at for o in offers}
    series = []
    for intake in intakes:
        seen = received.get((intake.assignment, intake.squad)) if intake.assignment else None
        if seen is not None:
            latency = round((seen - intake.sent_at) * 1e3, 3)
            series.append((round(intake.sent_at - start, 3), latency))
    return series


def response_latencies_ms(intakes: Sequence[Intake]) -> list[float]:
    """Intake sent -> HTTP response read, for answered requests."""
    return [(i.answered_at - i.sent_at) * 1000.0 for i in intakes if i.answered_at]


def failures(intakes: Sequence[Intake]) -> dict[str, int]:
    """How many intakes failed, by reason."""
    counts: dict[str, int] = {}
    for intake in intakes:
        if intake.status != 201:
            reason = f"{intake.status} {intake.error}".strip()
            counts[reason] = counts.get(reason, 0) + 1
    return counts


def missing_offers(
    expected: Iterable[tuple[str, str]], offers: Sequence[OfferSeen]
) -> list[tuple[str, str]]:
    """The (assignment, squad) pairs the hub reported that never reached that squad."""
    received = {(o.assignment, o.squad) for o in offers}
    return sorted(set(expected) - received)


def expected_offers(intakes: Sequence[Intake]) -> list[tuple[str, str]]:
    """(assignment, squad) of every offer the API named in an intake response."""
    return [(i.assignment, i.squad) for i in intakes if i.assignment and i.squad]


def storm_summary(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The reconnect storm over all client processes: from the first drop to the last squad
    back with every frame the hub numbered, and the resumes per second that makes."""
    if not parts:
        return {}
    dropped = min(p["dropped_at"] for p in parts)
    # Each process timed its squads from its own drop; shift them onto the earliest one.
    back = [s + p["dropped_at"] - dropped for p in parts for s in p["back_after_s"]]
    squads = sum(p["squads"] for p in parts)
    all_back_s = max(back) if back else None
    return {
        "squads": squads,
        "back": len(back),
        "all_back_s": round(all_back_s, 3) if all_back_s is not None else None,
        "resumes_per_s": round(len(back) / all_back_s, 1) if all_back_s else None,
        "back_s": summarize(back, (50, 99)),
        "frames_held": sum(p["frames_before"] for p in parts),
        "frames_replayed": sum(p["frames_replayed"] for p in parts),
        "frames_missing": sum(p["frames_missing"] for p in parts),
        "failed": sum(p["failed"] for p in parts),
    }


def cpu_ms_per_lifecycle(
    busy_percent: float, idle_percent: float, lifecycles: int, wall_s: float
) -> float | None:
    """A server's CPU per request lifecycle (intake to resolution), in ms: its CPU while the
    requests ran (``busy_percent`` of a core over ``wall_s``) less its CPU over a window
    just before, with the same connections and positions but no requests
    (``idle_percent``), shared among the ``lifecycles`` of the window. None without any."""
    if lifecycles <= 0 or wall_s <= 0:
        return None
    return round(max(0.0, busy_percent - idle_percent) / 100 * wall_s / lifecycles * 1000, 3)


def versus_floor(
    hub: dict[str, float | None],
    floor: dict[str, float | None],
    hub_lifecycle_ms: float | None = None,
    floor_lifecycle_ms: float | None = None,
) -> dict[str, Any]:
    """The hub's intake -> offer percentiles over the bare dispatch's, measured the same way,
    and (with ``--baseline``) its CPU per request lifecycle over the bare dispatch's."""

    def ratio(h: float | None, f: float | None) -> float | None:
        return round(h / f, 2) if h is not None and f else None

    return {
        "dispatch_p50_ratio": ratio(hub.get("p50"), floor.get("p50")),
        "dispatch_p99_ratio": ratio(hub.get("p99"), floor.get("p99")),
        "lifecycle_cpu_ratio": ratio(hub_lifecycle_ms, floor_lifecycle_ms),
        "hub_dispatch_ms": {q: hub.get(q) for q in ("p50", "p99")},
        "floor_dispatch_ms": {q: floor.get(q) for q in ("p50", "p99")},
    }


def histogram_quantiles(
    buckets: Sequence[tuple[float, float]], qs: Iterable[int] = (50, 95, 99), scale: float = 1.0
) -> dict[str, float | None]:
    """Percentiles of a cumulative histogram (``(upper bound, count at or below)``, the last
    bound ``inf``), interpolated linearly within a bucket as Prometheus' ``histogram_quantile``
    does; one in the ``inf`` bucket is the highest finite bound. ``scale`` multiplies the
    results (seconds to milliseconds: 1000)."""
    ordered = sorted(buckets)
    total = ordered[-1][1] if ordered else 0.0
    result: dict[str, float | None] = {}
    for q in qs:
        if not total:
            result[f"p{q}"] = None
            continue
        rank = total * q / 100
        lower, below = 0.0, 0.0
        value = ordered[-2][0] if len(ordered) > 1 else 0.0
        for bound, count in ordered:
            if count >= rank:
                if bound != float("inf"):
                    within = (rank - below) / (count - below) if count > below else 1.0
                    value = lower + (bound - lower) * within
                break
            lower, below = bound, count
        result[f"p{q}"] = round(value * scale, 3)
    return result
