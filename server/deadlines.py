"""Deadlines and supervision notices: the pure rules, no I/O, no clock.

A linkage request has three milestones, each with a limit counted from intake (the citizen's
clock): ``accept``, ``arrive``, ``resolve``. A promise (``defer``) replaces the resolve
deadline by the promised time, the ``promise`` deadline. Each pending deadline is a timer
(``server.store.timers``); when it fires with the milestone unmet, a supervision notice is issued
(:func:`notice_due`), and it escalates one level every interval while the item stays open.

Notice kinds: ``accept``, ``arrive``, ``resolve``, ``promise`` (a broken promise),
``waiting`` (the accept limit passed while the request sat in the queue: no squad could take
it) and ``recheck`` (a spot check's callback found the problem not fixed: the center reopened
it; issued by :meth:`server.notices.Notices.issue_recheck`, not by a timer). A notice closes
when the step that meets its milestone is committed (:func:`closes`); a ``recheck`` with the
resolution.

This module decides; ``server.store.requests`` (commit), ``server.notices`` (timers) and the
Lua scripts carry the decisions out.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from server.lifecycle import FINAL, State
from server.store import timers


class Milestone(StrEnum):
    ACCEPT = "accept"
    ARRIVE = "arrive"
    RESOLVE = "resolve"
    PROMISE = "promise"  # the resolution promised by a ``defer``


class NoticeKind(StrEnum):
    ACCEPT = "accept"
    ARRIVE = "arrive"
    RESOLVE = "resolve"
    PROMISE = "promise"
    WAITING = "waiting"
    RECHECK = "recheck"  # a spot check found it not fixed (server.reports)


NOTICE_KINDS = tuple(k.value for k in NoticeKind)

# The request field holding each milestone's deadline (epoch s).
DEADLINE_FIELD: dict[Milestone, str] = {
    Milestone.ACCEPT: "accept_by",
    Milestone.ARRIVE: "arrive_by",
    Milestone.RESOLVE: "resolve_by",
    Milestone.PROMISE: "promised_by",
}
# The first moment each milestone was met, stamped once in the request (HSETNX) by the commit
# of the step that met it: a request accepted, disputed and upheld stays accepted on time.
STAMP_FIELD: dict[Milestone, str] = {
    Milestone.ACCEPT: "accepted_at",
    Milestone.ARRIVE: "arrived_at",
}

_ACCEPTED = frozenset({State.ACCEPTED, State.EN_ROUTE, State.ON_SCENE, State.DEFERRED})
# States waiting for a squad: an accept limit passing here is a ``waiting`` notice.
_WAITING = frozenset({State.RECEIVED, State.QUEUED})


@functools.cache  # a pure function of the state: computed once per state
def stamps(state: State) -> tuple[str, ...]:
    """Request fields to stamp (once) with the time of a step that leads to ``state``."""
    if state is State.ON_SCENE:
        return (STAMP_FIELD[Milestone.ACCEPT], STAMP_FIELD[Milestone.ARRIVE])
    if state in _ACCEPTED:
        return (STAMP_FIELD[Milestone.ACCEPT],)
    return ()


@functools.cache  # a pure function of the state: computed once per state
def met_by(state: State) -> frozenset[Milestone]:
    """Milestones a step leading to ``state`` meets (or makes moot: a final state)."""
    if state in FINAL:
        return frozenset(Milestone)
    if state is State.ON_SCENE:
        return frozenset({Milestone.ACCEPT, Milestone.ARRIVE})
    if state in _ACCEPTED:
        return frozenset({Milestone.ACCEPT})
    return frozenset()


@functools.cache  # a pure function of the state: computed once per state
def closes(state: State) -> frozenset[NoticeKind]:
    """Notice kinds a step leading to ``state`` closes.

    ``waiting`` closes with ``accept``: once a squad has taken the request it no longer
    waits, and a notice escalating until the resolution would misstate what is late."""
    met = met_by(state)
    kinds = {NoticeKind(m.value) for m in met}
    if Milestone.ACCEPT in met:
        kinds.add(NoticeKind.WAITING)
    if Milestone.RESOLVE in met:
        kinds.add(NoticeKind.RECHECK)
    return frozenset(kinds)


@functools.cache
def _met_in_order(state: State) -> tuple[Milestone, ...]:
    return tuple(sorted(met_by(state)))


def _deadline(fields: Mapping[str, str], milestone: Milestone) -> float | None:
    raw = fields.get(DEADLINE_FIELD[milestone], "")
    return float(raw) if raw not in ("", None) else None


@dataclass(frozen=True, slots=True)
class TimerChanges:
    """Deadline timers a commit adds (member -> due epoch ms) and removes."""

    add: dict[str, int]
    remove: tuple[str, ...]


def deadline_entry(request_id: str, milestone: Milestone) -> str:
    return timers.entry(timers.TimerKind.DEADLINE, f"{request_id}:{milestone.value}")


def timer_changes(request_id: str, state: State, fields: Mapping[str, str]) -> TimerChanges:
    """The deadline timers a step sets in motion, from the fields it writes and the state it
    leads to: intake schedules accept/arrive/resolve; a promise schedules ``promise`` and
    drops the plain resolve deadline; a reopen's new ``resolve_by`` schedules a fresh one; a
    milestone met drops its timer (a stale one would only find it met, but the set stays
    small)."""
    add: dict[str, int] = {}
    for milestone in (Milestone.ACCEPT, Milestone.ARRIVE):
        at = _deadline(fields, milestone)
        if at is not None:
            add[deadline_entry(request_id, milestone)] = int(at * 1000)
    remove = [deadline_entry(request_id, m) for m in _met_in_order(state)]
    promised = _deadline(fields, Milestone.PROMISE)
    resolve_by = _deadline(fields, Milestone.RESOLVE)
    if promised is not None:
        add[deadline_entry(request_id, Milestone.PROMISE)] = int(promised * 1000)
        remove.append(deadline_entry(request_id, Milestone.RESOLVE))
    elif resolve_by is not None:
        add[deadline_entry(request_id, Milestone.RESOLVE)] = int(resolve_by * 1000)
    remove = [m for m in remove if m not in add]
    return TimerChanges(add, tuple(dict.fromkeys(remove)))


def parse_deadline(ident: str) -> tuple[str, Milestone] | None:
    """(request id, milestone) of a deadline timer's id; None if malformed."""
    request_id, _, name = ident.rpartition(":")
    try:
        return request_id, Milestone(name)
    except ValueError:
        return None


def escalation_entry(request_id: str, kind: NoticeKind, level: int) -> str:
    return timers.entry(timers.TimerKind.ESCALATE, f"{request_id}:{kind.value}:{level}")


def parse_escalation(ident: str) -> tuple[str, NoticeKind, int] | None:
    """(request id, kind, level) of an escalation timer's id; None if malformed."""
    parts = ident.rsplit(":", 2)
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    try:
        return parts[0], NoticeKind(parts[1]), int(parts[2])
    except ValueError:
        return None


def notice_id(request_id: str, kind: NoticeKind, level: int) -> str:
    """Readable and deterministic: one notice per request, kind and level."""
    return f"{request_id}-{kind.value}-{level}"


def parse_notice_id(ident: str) -> tuple[str, NoticeKind, int] | None:
    parts = ident.rsplit("-", 2)
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    try:
        return parts[0], NoticeKind(parts[1]), int(parts[2])
    except ValueError:
        return None


# ---- what a firing timer means ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    """What the rules need of a request (see server.store.requests.RequestRecord)."""

    state: State
    accept_by: float | None = None
    arrive_by: float | None = None
    resolve_by: float | None = None
    promised_by: float | None = None
    accepted_at: float | None = None
    arrived_at: float | None = None

    def deadline(self, milestone: Milestone) -> float | None:
        return {
            Milestone.ACCEPT: self.accept_by,
            Milestone.ARRIVE: self.arrive_by,
            Milestone.RESOLVE: self.resolve_by,
            Milestone.PROMISE: self.promised_by,
        }[milestone]


def is_met(progress: Progress, milestone: Milestone) -> bool:
    if progress.state in FINAL:
        return True
    if milestone is Milestone.ACCEPT:
        return progress.accepted_at is not None
    if milestone is Milestone.ARRIVE:
        return progress.arrived_at is not None
    return False  # resolve, promise: only a final state


def kind_is_met(progress: Progress, kind: NoticeKind) -> bool:
    """Whether the item a notice of ``kind`` is about is done (the notice would close)."""
    if kind is NoticeKind.WAITING:
        return is_met(progress, Milestone.ACCEPT)
    if kind is NoticeKind.RECHECK:
        return is_met(progress, Milestone.RESOLVE)
    return is_met(progress, Milestone(kind.value))


class Due(StrEnum):
    ISSUE = "issue"  # the milestone is late: issue the notice
    LATER = "later"  # the deadline moved later: reschedule the timer at ``at``
    DROP = "drop"  # met, superseded, or no such deadline: forget the timer


@dataclass(frozen=True, slots=True)
class Decision:
    due: Due
    kind: NoticeKind | None = None
    at: float | None = None  # the deadline (epoch s)


def notice_due(progress: Progress, milestone: Milestone, now: float) -> Decision:
    """What a firing deadline timer of ``milestone`` means for the request now."""
    if is_met(progress, milestone):
        return Decision(Due.DROP)
    at = progress.deadline(milestone)
    if at is None:
        return Decision(Due.DROP)
    # A promise moved the resolution to the promised time: the plain resolve deadline is the
    # promise's business (its own timer), and a promise a reopen superseded is nobody's.
    promise_holds = progress.promised_by is not None and progress.promised_by == progress.resolve_by
    if milestone is Milestone.RESOLVE and promise_holds:
        return Decision(Due.DROP)
    if milestone is Milestone.PROMISE and not promise_holds:
        return Decision(Due.DROP)
    if at > now:
        return Decision(Due.LATER, at=at)
    if milestone is Milestone.ACCEPT and progress.state in _WAITING:
        return Decision(Due.ISSUE, NoticeKind.WAITING, at)
    return Decision(Due.ISSUE, NoticeKind(milestone.value), at)


def escalation_at(due_at: float, level: int, interval_s: float) -> float:
    """When the notice of ``level + 1`` is due: one interval per level after the deadline,
    so levels mark how late the item is, whenever each was issued."""
    return due_at + level * interval_s


# ---- the supervision queue --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NextDeadline:
    kind: Milestone
    at: float


def next_deadline(progress: Progress) -> NextDeadline | None:
    """The request's next unmet deadline: accept until accepted, arrive until on scene, then
    the resolution (the promise when one holds); None for a final request or no deadlines."""
    if progress.state in FINAL:
        return None
    for milestone in (Milestone.ACCEPT, Milestone.ARRIVE):
        at = progress.deadline(milestone)
        if at is not None and not is_met(progress, milestone):
            return NextDeadline(milestone, at)
    promise_holds = progress.promised_by is not None and progress.promised_by == progress.resolve_by
    if promise_holds and progress.promised_by is not None:
        return NextDeadline(Milestone.PROMISE, progress.promised_by)
    if progress.resolve_by is not None:
        return NextDeadline(Milestone.RESOLVE, progress.resolve_by)
    return None


def overdue_on_map(fields: Mapping[str, str], now: float) -> NextDeadline | None:
    """The deadline an open request has missed (for the wall map), or None. ``fields`` are
    the request's stored text fields (state, deadlines, milestones met)."""

    def moment(name: str) -> float | None:
        raw = fields.get(name, "")
        return float(raw) if raw else None

    deadline = next_deadline(
        Progress(
            state=State(fields.get("state", "received")),
            accept_by=moment("accept_by"),
            arrive_by=moment("arrive_by"),
            resolve_by=moment("resolve_by"),
            promised_by=moment("promised_by"),
            accepted_at=moment("accepted_at"),
            arrived_at=moment("arrived_at"),
        )
    )
    return deadline if deadline is not None and deadline.at <= now else None


def queue_order(deadline: NextDeadline | None, now: float) -> tuple[int, float]:
    """Sort key of the supervision queue: overdue first, then by nearest deadline; items
    without a deadline last."""
    if deadline is None:
        return (2, 0.0)
    return (0 if deadline.at <= now else 1, deadline.at)
