"""Report periods in the city's time zone: a month ``YYYY-MM``, an ISO week ``YYYY-Www``, a
fortnight from a day ``YYYY-MM-DD``. Each is a half-open span of epoch seconds
``[start, end)`` between local midnights, so a request received at 23:59 on the last day of
a month belongs to that month wherever the server runs. Pure: no clock, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# ASCII digits only: \d takes any script's, and int() reads them ("٢٠٢٦-١١" would be November
# under a second name).
_MONTH = re.compile(r"^([0-9]{4})-([0-9]{2})$")
_WEEK = re.compile(r"^([0-9]{4})-W([0-9]{2})$")
_DAY = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})$")
FORTNIGHT_DAYS = 14
FIRST_YEAR, LAST_YEAR = 1970, 2100  # the years a report may name


class PeriodError(ValueError):
    """A period's text is not of its form, or names no such period."""


@dataclass(frozen=True, slots=True)
class Span:
    """``[start, end)`` in epoch seconds, and the period's name (``2026-03``, ``2026-W09``,
    ``2026-03-02/14``)."""

    name: str
    start: float
    end: float

    def __contains__(self, at: object) -> bool:
        return isinstance(at, int | float) and self.start <= at < self.end


def _midnight(day: date, zone: ZoneInfo) -> float:
    return datetime.combine(day, time(0), zone).timestamp()


def month(text: str, zone: ZoneInfo) -> Span:
    """The month ``YYYY-MM``; raises PeriodError."""
    match = _MONTH.match(text)
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise PeriodError(f"{text!r} is not a month YYYY-MM")
    _check_year(text, int(match.group(1)))
    first = date(int(match.group(1)), int(match.group(2)), 1)
    return Span(text, _midnight(first, zone), _midnight(_next_month(first), zone))


def month_of(at: float, zone: ZoneInfo) -> str:
    """``YYYY-MM`` of the epoch time ``at`` in ``zone``."""
    return datetime.fromtimestamp(at, zone).strftime("%Y-%m")


def previous_month(text: str) -> str:
    year, number = int(text[:4]), int(text[5:7])
    return f"{year - 1}-12" if number == 1 else f"{year}-{number - 1:02d}"


def months_between(first: str, last: str) -> list[str]:
    """Every month from ``first`` to ``last`` (both included), oldest first."""
    found = [last]
    while found[0] > first:
        found.insert(0, previous_month(found[0]))
    return found


def months_until(last: str, count: int) -> list[str]:
    """``count`` months ending with ``last``, oldest first."""
    found = [last]
    while len(found) < count:
        found.insert(0, previous_month(found[0]))
    return found


def week(text: str, zone: ZoneInfo) -> Span:
    """The ISO week ``YYYY-Www`` (Monday to Sunday); raises PeriodError."""
    match = _WEEK.match(text)
    if not match:
        raise PeriodError(f"{text!r} is not an ISO week YYYY-Www")
    _check_year(text, int(match.group(1)))
    try:
        monday = date.fromisocalendar(int(match.group(1)), int(match.group(2)), 1)
    except ValueError:
        raise PeriodError(f"{text!r}: the year has no such week") from None
    return Span(text, _midnight(monday, zone), _midnight(monday + timedelta(days=7), zone))


def week_of(at: float, zone: ZoneInfo) -> str:
    """``YYYY-Www`` of the epoch time ``at`` in ``zone``."""
    year, number, _ = datetime.fromtimestamp(at, zone).isocalendar()
    return f"{year}-W{number:02d}"


def fortnight(text: str, zone: ZoneInfo) -> Span:
    """Fourteen days from the day ``YYYY-MM-DD``; raises PeriodError."""
    match = _DAY.match(text)
    if not match:
        raise PeriodError(f"{text!r} is not a day YYYY-MM-DD")
    try:
        first = date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        raise PeriodError(f"{text!r} is not a day of the calendar") from None
    _check_year(text, first.year)
    last = first + timedelta(days=FORTNIGHT_DAYS)
    return Span(f"{text}/{FORTNIGHT_DAYS}", _midnight(first, zone), _midnight(last, zone))


def day_of(at: float, zone: ZoneInfo) -> str:
    """``YYYY-MM-DD`` of the epoch time ``at`` in ``zone``."""
    return datetime.fromtimestamp(at, zone).strftime("%Y-%m-%d")


def _check_year(text: str, year: int) -> None:
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise PeriodError(f"{text!r} is not between {FIRST_YEAR} and {LAST_YEAR}")


def _next_month(first: date) -> date:
    return date(first.year + 1, 1, 1) if first.month == 12 else date(first.year, first.month + 1, 1)
