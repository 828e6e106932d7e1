"""How squad members behave: every decision about one job, made up front.

Pure: :func:`plan_job` draws a :class:`JobPlan` from a seeded ``random.Random``; the I/O
agent in :mod:`simulations.squad` only carries the plan out. All durations are simulated
seconds.

Human delays are lognormal: most people answer in about the same time, a few take much
longer, and nobody answers in negative time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace

from server.city import Category


@dataclass(frozen=True, slots=True)
class Behaviour:
    """Shares of jobs with each human trait, and the typical delays (simulated seconds)."""

    slow_share: float = 0.05  # answers after the offer window: passed over, counted against
    signal_loss_share: float = 0.08  # the phone loses signal on the way for a while
    dispute_share: float = 0.03  # "not our jurisdiction": the request goes to the center
    defer_share: float = 0.06  # cannot finish now: promises a completion time
    explicit_arrive_share: float = 0.5  # presses "arrived"; the rest leave it to the geofence
    broken_promise_share: float = 0.2  # of the deferrals: finished after the promised time
    accept_median_s: float = 20.0
    accept_sigma: float = 0.5
    enroute_median_s: float = 60.0  # to the vehicle and off
    speed_median_kmh: float = 30.0  # urban driving, lights and traffic included
    speed_sigma: float = 0.15
    work_sigma: float = 0.35  # spread of on-scene work around the category's work_s
    work_scale: float = 1.0  # shortens all on-scene work (short test runs)
    outage_median_s: float = 120.0
    look_median_s: float = 300.0  # time on scene before a dispute


def lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(rng.gauss(0.0, sigma))


@dataclass(frozen=True, slots=True)
class SignalLoss:
    at_fraction: float  # of the drive to the scene
    duration_s: float


@dataclass(frozen=True, slots=True)
class Deferral:
    after_fraction: float  # of the planned work, done before the promise
    promise_s: float  # promised completion, counted from the deferral
    finish_s: float  # when the work is actually done, counted from the deferral
    reason: str

    @property
    def kept(self) -> bool:
        return self.finish_s <= self.promise_s


@dataclass(frozen=True, slots=True)
class JobPlan:
    accept_delay_s: float
    enroute_delay_s: float
    speed_kmh: float
    arrive_by_command: bool
    press_arrive_m: float  # distance from the scene at which "arrived" is pressed
    work_s: float
    note: str
    signal_loss: SignalLoss | None = None
    dispute_after_s: float | None = None
    dispute_reason: str = ""
    deferral: Deferral | None = None


NOTES: Mapping[str, tuple[str, ...]] = {
    "water": ("已关阀抢修，恢复供水", "更换破损管段，已通水"),
    "power": ("故障线路已抢修，恢复供电", "更换熔断器，恢复送电"),
    "gas": ("已检测并处置泄漏点，恢复供气", "阀门已修复，无泄漏"),
    "heating": ("排气后暖气恢复正常",),
    "municipal": ("已修复", "已更换井盖并设置警示", "已疏通"),
    "sanitation": ("已清运完毕", "已维修并恢复使用"),
    "urban_mgmt": ("已劝离并恢复通行", "已责令停工整改", "倒伏树木已清理"),
    "housing": ("已维修完毕", "被困人员已安全救出"),
    "transport": ("已协调恢复正常", "信号灯已修复"),
    "telecom": ("线路已修复，通信恢复",),
}
GENERIC_NOTES = ("现场处置完毕", "问题已解决，已回访群众")
DEFER_REASONS = ("需更换配件，配件明日到货", "需停水（停电）施工，已报批", "需协调其他单位配合")
DISPUTE_REASONS = ("经现场核实，不属本单位管辖范围", "产权属小区物业，应由物业负责")


def _delay_after_window(rng: random.Random, offer_window_s: float) -> float:
    return offer_window_s * rng.uniform(1.2, 3.0)


def plan_job(
    rng: random.Random, category: Category, unit: str, behaviour: Behaviour, offer_window_s: float
) -> JobPlan:
    """Every decision for one offer of ``category`` to a squad of ``unit``."""
    b = behaviour
    slow = rng.random() < b.slow_share
    accept = (
        _delay_after_window(rng, offer_window_s)
        if slow
        else lognormal(rng, b.accept_median_s, b.accept_sigma)
    )
    speed = min(50.0, max(15.0, lognormal(rng, b.speed_median_kmh, b.speed_sigma)))
    work = max(60.0, lognormal(rng, category.work_s, b.work_sigma)) * b.work_scale
    plan = JobPlan(
        accept_delay_s=accept,
        enroute_delay_s=lognormal(rng, b.enroute_median_s, 0.5),
        speed_kmh=speed,
        arrive_by_command=rng.random() < b.explicit_arrive_share,
        # Pulling up: the site is a compound or the street is blocked, so people press
        # "arrived" a little before the geofence would have noticed.
        press_arrive_m=rng.uniform(200.0, 450.0),
        work_s=work,
        note=rng.choice(NOTES.get(unit, GENERIC_NOTES)),
        signal_loss=_signal_loss(rng, b),
    )
    if rng.random() < b.dispute_share:
        return replace(
            plan,
            dispute_after_s=lognormal(rng, b.look_median_s, 0.5),
            dispute_reason=rng.choice(DISPUTE_REASONS),
        )
    if rng.random() < b.defer_share:
        return replace(plan, deferral=_deferral(rng, b, work))
    return plan


def _signal_loss(rng: random.Random, b: Behaviour) -> SignalLoss | None:
    if rng.random() >= b.signal_loss_share:
        return None
    return SignalLoss(
        at_fraction=rng.uniform(0.1, 0.9),
        duration_s=min(1800.0, lognormal(rng, b.outage_median_s, 0.8)),
    )


def _deferral(rng: random.Random, b: Behaviour, work_s: float) -> Deferral:
    done_first = rng.uniform(0.2, 0.5)
    remaining = work_s * (1 - done_first)
    # Promises are padded: the remaining work plus time to get parts or permission.
    promise = remaining * rng.uniform(1.5, 3.0) + 1800.0 * b.work_scale
    broken = rng.random() < b.broken_promise_share
    finish = promise * rng.uniform(1.1, 1.5) if broken else promise * rng.uniform(0.5, 0.95)
    return Deferral(
        after_fraction=done_first,
        promise_s=promise,
        finish_s=finish,
        reason=rng.choice(DEFER_REASONS),
    )
