"""What one hub process measures, for Prometheus (``GET /metrics`` for admin, or a port of
its own: ``DISPATCH_METRICS_PORT``).

Counters on the hot path are plain integers in a dict, read when scraped (a prometheus_client
counter's ``inc`` checks, locks and adds: about a microsecond a frame); everything that needs
Redis to know (outbox depth, ledger lag, Redis round-trip time) is sampled by
:func:`sample_forever` every few seconds, never per frame. Series:

=====================================  =====================================================
``dispatch_connections``               squad sockets open on this process
``dispatch_frames_in_total{type}``     frames from phones, by frame type
``dispatch_frames_out_total{type}``    frames to phones, by frame type
``dispatch_positions_written_total``   positions written to Redis
``dispatch_intake_to_offer_seconds``   from an intake's arrival to its first offer pushed
``dispatch_offers_passed_on_total``    offers revoked and passed on, by reason
``dispatch_notices_issued_total``      supervision notices, by kind and level
``dispatch_outbox_frames{outbox}``     frames waiting: squads' outboxes (connected here),
                                       the citizens' message queue
``dispatch_ledger_lag_seconds``        age of the oldest event the ledger has not recorded
``dispatch_redis_round_trip_seconds``  a PING's round trip
``dispatch_redis_round_trips_total``   every round trip this process made
``dispatch_timer_lateness_seconds``    how late a timer fired, by kind
``dispatch_event_loop_lag_seconds``    how late a 250 ms sleep woke up
=====================================  =====================================================
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dispatch_field import protocol

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FRAME_TYPES = sorted(
    str(frame.__struct_config__.tag)
    for frame in (*get_args(protocol.PhoneFrame), *get_args(protocol.HubFrame))
)

# a phone frame's class -> its type (the label of dispatch_frames_in)
PHONE_FRAME_TYPES: dict[type, str] = {
    frame: str(frame.__struct_config__.tag) for frame in get_args(protocol.PhoneFrame)
}


class _Live(Collector):
    """Series read when scraped (nothing to do per frame but count)."""

    def __init__(self) -> None:
        # frames by type, in and out: every type listed (0 until seen), so the dicts never
        # change size while a scrape on another thread copies them
        self.frames_in: dict[type, int] = dict.fromkeys(PHONE_FRAME_TYPES, 0)
        self.frames_out = dict.fromkeys(FRAME_TYPES, 0)
        self.connections: Callable[[], int] = lambda: 0
        self.positions: Callable[[], int] = lambda: 0
        self.round_trips: Callable[[], int] = lambda: 0
        # Web Push: (sent, failed, dropped, subscriptions known here)
        self.webpush: Callable[[], tuple[int, int, int, int]] = lambda: (0, 0, 0, 0)

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "dispatch_connections", "squad sockets open on this process", value=self.connections()
        )
        frames = CounterMetricFamily(
            "dispatch_frames_in", "frames from phones, by type", labels=["type"]
        )
        for frame, count in dict(self.frames_in).items():
            frames.add_metric([PHONE_FRAME_TYPES[frame]], count)
        yield frames
        frames = CounterMetricFamily(
            "dispatch_frames_out", "frames to phones, by type", labels=["type"]
        )
        for kind, count in dict(self.frames_out).items():
            frames.add_metric([kind], count)
        yield frames
        yield CounterMetricFamily(
            "dispatch_positions_written", "positions written to Redis", value=self.positions()
        )
        yield CounterMetricFamily(
            "dispatch_redis_round_trips",
            "round trips to Redis made by this process",
            value=self.round_trips(),
        )
        sent, failed, dropped, subscriptions = self.webpush()
        pushes = CounterMetricFamily(
            "dispatch_webpush",
            "Web Pushes to squads' phones by outcome (sent: accepted by the push service; "
            "failed: refused, gone or unreachable; dropped: the send queue was full)",
            labels=["outcome"],
        )
        for outcome, count in (("sent", sent), ("failed", failed), ("dropped", dropped)):
            pushes.add_metric([outcome], count)
        yield pushes
        yield GaugeMetricFamily(
            "dispatch_webpush_subscriptions",
            "squads with a Web Push subscription, as this process knows them",
            value=subscriptions,
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.live = _Live()
        registry.register(self.live)
        self.intake_to_offer = Histogram(
            "dispatch_intake_to_offer_seconds",
            "from an intake's arrival to its first offer pushed",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.offers_passed_on = Counter(
            "dispatch_offers_passed_on",
            "offers revoked and passed on to the next squad, by reason",
            ["reason"],
            registry=registry,
        )
        self.notices_issued = Counter(
            "dispatch_notices_issued",
            "supervision notices issued, by kind and level",
            ["kind", "level"],
            registry=registry,
        )
        self.outbox_frames = Gauge(
            "dispatch_outbox_frames",
            "frames waiting to be delivered (squads connected here; citizens' messages)",
            ["outbox"],
            registry=registry,
        )
        self.ledger_lag = Gauge(
            "dispatch_ledger_lag_seconds",
            "age of the oldest event not yet recorded in the ledger",
            registry=registry,
        )
        self.redis_rtt = Histogram(
            "dispatch_redis_round_trip_seconds",
            "round trip of a PING to Redis",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.timer_lateness = Histogram(
            "dispatch_timer_lateness_seconds",
            "how late a timer fired after its time",
            ["kind"],
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.loop_lag = Histogram(
            "dispatch_event_loop_lag_seconds",
            "how much later than asked a short sleep woke up",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def frame_in(self, frame: object) -> None:
        counts, kind = self.live.frames_in, type(frame)
        if kind in counts:
            counts[kind] += 1

    def frame_out(self, kind: str) -> None:
        counts = self.live.frames_out
        if kind in counts:
            counts[kind] += 1

    def timers_fired(self, kinds_and_due_ms: Iterable[tuple[str, float]], now_ms: float) -> None:
        for kind, due_ms in kinds_and_due_ms:
            self.timer_lateness.labels(kind).observe(max(0.0, (now_ms - due_ms) / 1000))


def frame_type(frame: bytes) -> str:
    """The ``t`` of an encoded frame, read from its first bytes: a map header, the key
    ``t`` (msgspec writes a tagged Struct's tag first) and a short string."""
    if len(frame) > 4 and frame[1:3] == b"\xa1t" and 0xA0 <= frame[3] <= 0xBF:
        return frame[4 : 4 + (frame[3] & 0x1F)].decode(errors="replace")
    return "other"


async def watch_event_loop(metrics: Metrics, every_s: float = 0.25) -> None:
    """Sleep ``every_s`` again and again; how much later than asked it wakes is the event
    loop's lag (a long callback, a full collection, a starved process)."""
    while True:
        asked = time.perf_counter() + every_s
        await asyncio.sleep(every_s)
        metrics.loop_lag.observe(max(0.0, time.perf_counter() - asked))
