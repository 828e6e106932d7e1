"""What this process knows of the requests behind squads' open assignments, so that a squad's
command is one round trip: the step is computed from the record this process last wrote (the
offer it made, the steps it committed) and committed with that record's version; a ``stale``
answer (someone else changed the request meanwhile) makes the caller read it again.

A cache, never an authority: every commit is compare-and-set on the version, so a record
held here that is out of date costs a read, never a wrong step. Bounded: the oldest entries
are dropped first (a dropped entry also just costs a read).
"""

from __future__ import annotations

from collections import OrderedDict

import msgspec

from server import deadlines
from server.lifecycle import Step
from server.store.requests import RequestRecord

DEFAULT_ENTRIES = 50_000  # a few per connected squad: an open assignment each, usually


class KnownRequests:
    def __init__(self, max_entries: int = DEFAULT_ENTRIES) -> None:
        self._max = max_entries
        self._records: OrderedDict[tuple[str, str, str], RequestRecord] = OrderedDict()

    def get(self, unit: str, squad: str, assignment: str) -> RequestRecord | None:
        """The record of ``squad``'s ``assignment`` as this process last wrote it, or None.
        Keyed by squad too: a squad never gets another squad's record from here."""
        return self._records.get((unit, squad, assignment))

    def remember(self, unit: str, squad: str, assignment: str, record: RequestRecord) -> None:
        key = (unit, squad, assignment)
        self._records[key] = record
        self._records.move_to_end(key)
        while len(self._records) > self._max:
            self._records.popitem(last=False)

    def forget(self, unit: str, squad: str, assignment: str) -> None:
        self._records.pop((unit, squad, assignment), None)

    def __len__(self) -> int:
        return len(self._records)


def after_step(record: RequestRecord, step: Step, version: int, at: float) -> RequestRecord:
    """``record`` as ``apply.lua`` leaves it after committing ``step`` at ``at``: the step's
    fields and state, the first-time stamps, the new version (pure)."""
    updated = record.with_fields(step.fields | {"state": step.state.value, "v": str(version)})
    stamped = {
        name: round(at, 3)
        for name in deadlines.stamps(step.state)
        if getattr(updated, name) is None
    }
    return msgspec.structs.replace(updated, **stamped) if stamped else updated
