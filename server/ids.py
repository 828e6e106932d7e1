"""Request numbers: ``YYYYMMDD-NNNNNN``, the city's local date and that day's sequence.

Readable on the phone ("twenty twenty-six eleven thirty, one hundred twenty-three") and
unique across Redis lifetimes: the sequence lives in a per-day Redis counter, and when
Redis has no counter for the day it is recovered from the ledger (see
:func:`sequence_starts`). This module is the one home of the format: it builds, parses and
dates numbers, and decides where a recovered sequence starts; it does no I/O.
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

SEQUENCE_WIDTH = 6  # digits; a day past 999,999 requests gets wider numbers, still unique
# Numbers a recovered sequence skips beyond the highest the ledger recorded. The ledger
# records a request a moment after Redis handed its number out (the writer batches every
# half second), so when Redis loses its data, the last numbers it gave callers and squads
# may be missing from the ledger: starting right after the ledger's highest would give them
# out again. The margin covers that lag with room to spare; a ledger that was behind by
# more than this when Redis lost its data can still collide, and the ledger then refuses
# the newcomer loudly (server.ledger.fold.attribute).
RECOVERY_MARGIN = 1000

# An assist item (a unit ordered to assist with a request) is ``<request number>~<unit>``:
# read out like its request, and never a request number itself (``parse_request_id`` and
# the recovery of a day's sequence pass it over).
ASSIST_SEPARATOR = "~"

_REQUEST_ID = re.compile(r"^([0-9]{8})-([0-9]{6,})$")  # ASCII digits: \d takes any script's


def local_day(at: float, zone: ZoneInfo) -> str:
    """``YYYYMMDD`` of the epoch time ``at`` in ``zone`` (the city's local date)."""
    return datetime.fromtimestamp(at, zone).strftime("%Y%m%d")


def request_id(day: str, number: int) -> str:
    """The request number ``number`` of ``day``: ``"20261130-000123"``."""
    return f"{day}-{number:0{SEQUENCE_WIDTH}d}"


def parse_request_id(text: str) -> tuple[str, int] | None:
    """(day, number) of a request number; None for anything else (e.g. a legacy
    ``R00000001``)."""
    match = _REQUEST_ID.match(text)
    return (match.group(1), int(match.group(2))) if match else None


def assist_id(request_id: str, unit: str) -> str:
    """The id of ``unit``'s assist item on ``request_id``: ``"20261130-000123~power"``."""
    return f"{request_id}{ASSIST_SEPARATOR}{unit}"


def is_assist_id(text: str) -> bool:
    return ASSIST_SEPARATOR in text


def day_bounds(day: str) -> tuple[str, str]:
    """Every request number of ``day`` sorts as text in ``[low, high)``: a range an index
    on the id can answer (``.`` is the character after ``-``)."""
    return f"{day}-", f"{day}."


def sequence_starts(highest_recorded: int) -> tuple[int, int]:
    """Where a day's counter starts (the next number is one more) when Redis has none, given
    the highest number of that day in the ledger (0: none). Two answers, for the script to
    pick from (``sequence.lua``):

    - this Redis counted before (its marker survives): a day that has no number in the
      ledger yet is a new day and starts at 0; a day that has numbers lost its counter
      (Redis restored from an older copy), so it skips the margin;
    - this Redis never counted (it started empty, or is new beside an existing ledger): the
      numbers it gave before losing its data are unknown, so it skips the margin, rounded up
      to a whole thousand so that people can see where the sequence was recovered.
    """
    recovered = -(-(highest_recorded + RECOVERY_MARGIN) // 1000) * 1000
    return (recovered if highest_recorded else 0), recovered
