"""Delivery rules, pure: what one attempt's answer means, when to try again, when to give up.

- 2xx: delivered.
- 4xx except 408 and 429: the gateway refuses this message for good (a bad number, a body
  it cannot take); trying again cannot help: ``failed``.
- 5xx, 408, 429, a timeout or a connection error: try again after an exponential backoff
  with jitter, at least the ``Retry-After`` the gateway asked for, until ``max_attempts``
  attempts or ``max_age_s`` since the message was queued: then ``failed``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum

RETRY_AFTER_CAP_S = 3600.0  # a gateway asking for more is not taken at its word


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # a transient failure
    FAILED = "failed"  # permanent: never tried again


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one send attempt gave."""

    outcome: Outcome
    status: int | None = None  # the gateway's HTTP status, None without an answer
    error: str = ""  # short, for the record: never holds the token or the phone number
    retry_after_s: float | None = None  # the gateway's Retry-After, if any


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_s: float  # the first retry waits about this long; each further one twice as long
    cap_s: float  # no wait is longer (Retry-After aside)
    max_attempts: int
    max_age_s: float


def http_outcome(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if 400 <= status < 500 and status not in (408, 429):
        return Outcome.FAILED
    return Outcome.RETRY  # 5xx, 408, 429, and anything odd (1xx, 3xx): try again


def retry_after_s(header: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent
    or unreadable."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return min(float(header), RETRY_AFTER_CAP_S)
    try:
        when: datetime = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    return min(max(0.0, when.timestamp() - now), RETRY_AFTER_CAP_S)


def backoff_s(attempt: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """The wait after failed attempt number ``attempt`` (1 = the first): exponential, capped,
    with "equal jitter" (half fixed, half random) so that messages failing together (the
    gateway down) do not all come back at the same moment, yet never retry at once."""
    ceiling = min(policy.cap_s, policy.base_s * math.pow(2, min(attempt - 1, 60)))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def next_step(
    attempt: Attempt,
    number: int,
    queued_at: float,
    now: float,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> tuple[Outcome, float]:
    """(outcome to record, time of the next attempt) after attempt ``number`` of a message
    queued at ``queued_at``. A transient failure past the limits becomes ``failed``."""
    if attempt.outcome is not Outcome.RETRY:
        return attempt.outcome, 0.0
    wait = max(backoff_s(number, policy, rng), attempt.retry_after_s or 0.0)
    if number >= policy.max_attempts or now + wait - queued_at > policy.max_age_s:
        return Outcome.FAILED, 0.0
    return Outcome.RETRY, now + wait
