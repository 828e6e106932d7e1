"""A load-test squad's behaviour: what it answers to each hub frame. No I/O.

On an offer it acknowledges the frame and accepts at once, then reports en route, arrival and
resolution, each step as soon as the previous one is confirmed with ``ok``, so its capacity
frees within milliseconds. A share of offers (``ignore_share``) is acknowledged and left
unanswered, so the hub's offer timer fires and passes it on. Commands not answered when a
connection ends are sent again (same ids) after the next welcome. Everything it observes goes
into a :class:`Tally` shared by all squads of a client process.

A squad that *holds* (the ``--storm`` mode) acknowledges and answers nothing, so every
numbered frame it gets stays in its outbox on the hub; after :meth:`SquadAgent.start_replay`
it says hello with ``last_seq`` 0 and counts the frames replayed to it.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from dispatch_field import protocol

Step = protocol.Accept | protocol.Enroute | protocol.Arrive | protocol.Resolve

# The step that follows each confirmed one (resolve ends the job).
NEXT_STEP: dict[str, type[Step] | None] = {
    "accept": protocol.Enroute,
    "enroute": protocol.Arrive,
    "arrive": protocol.Resolve,
    "resolve": None,
}


@dataclass
class Tally:
    """What the squads of one client process observed (times are ``time.monotonic()``)."""

    offers: list[tuple[str, str, str, float]] = field(default_factory=list)  # rq, squad, as, t
    ack_ms: list[float] = field(default_factory=list)  # accept sent -> its ok received
    step_ms: list[float] = field(default_factory=list)  # enroute/arrive/resolve -> ok
    over_capacity: int = 0  # offers received while already holding an unresolved one
    revokes: int = 0
    duplicates: int = 0  # numbered frames received twice (absorbed by seq)
    errors: Counter[str] = field(default_factory=Counter)
    auto_arrivals: int = 0  # the hub saw us arrive (position near the scene) before we said so
    pending: int = 0  # commands sent and not answered yet
    acked: list[tuple[str, str]] = field(default_factory=list)  # (assignment, step) ``ok``ed
    ignored: list[str] = field(default_factory=list)  # assignments left to expire
    revoked: list[str] = field(default_factory=list)  # assignments revoked by the hub


@dataclass(slots=True)
class _Sent:
    kind: str
    assignment: str
    at: float
    command: Step


class SquadAgent:
    """One squad with capacity 1. ``handle`` returns the frames to send in reply."""

    __slots__ = (
        "squad",
        "token",
        "last_seq",
        "holding",
        "_sent",
        "_tally",
        "_count",
        "hold",
        "seqs",
        "before",
        "welcome_seq",
        "_duty_sent",
        "ignore_share",
    )

    def __init__(
        self, squad: str, token: str, tally: Tally, hold: bool = False, ignore_share: float = 0.0
    ) -> None:
        self.squad, self.token = squad, token
        self.last_seq = 0
        self.holding: set[str] = set()  # assignments offered and not yet resolved by us
        self._sent: dict[str, _Sent] = {}
        self._tally = tally
        self._count = 0
        self.hold = hold
        self.seqs: set[int] = set()  # numbered frames received on this connection (holding)
        self.before: set[int] = set()  # those received before the replay began
        self.welcome_seq = -1  # the hub's last seq in the latest welcome; -1: none yet
        self._duty_sent = False
        self.ignore_share = ignore_share

    def hello(self) -> protocol.Hello:
        return protocol.Hello(squad=self.squad, token=self.token, last_seq=self.last_seq)

    def handle(self, frame: protocol.HubFrame, now: float) -> list[protocol.PhoneFrame]:
        if self.hold:
            return self._held(frame, now)
        match frame:
            case protocol.Offer():
                return self._offered(frame, now)
            case protocol.Ok():
                return self._confirmed(frame.id, now)
            case protocol.Revoke():
                return self._revoked(frame)
            case protocol.Notice():  # numbered: acknowledged, nothing else to do
                self.last_seq = max(self.last_seq, frame.seq)
                return [protocol.Ack(seq=self.last_seq)]
            case protocol.Error():
                return self._refused(frame, now)
            case protocol.Welcome():
                self.last_seq = min(self.last_seq, frame.last_seq)
                # On duty once: the hub keeps the duty across connections. Commands whose
                # answer the last connection did not bring go again, with the same ids (the
                # hub answers a step it already committed with its recorded outcome).
                duty = [] if self._duty_sent else [protocol.Duty(on=True)]
                self._duty_sent = True
                return [*duty, *(sent.command for sent in self._sent.values())]
        return []

    # ---- holding (the reconnect storm) ----------------------------------------------------

    def _held(self, frame: protocol.HubFrame, now: float) -> list[protocol.PhoneFrame]:
        if isinstance(frame, protocol.Welcome):
            self.welcome_seq = frame.last_seq
            if self._duty_sent:  # the hub keeps the duty across connections
                return []
            self._duty_sent = True
            return [protocol.Duty(on=True)]
        if isinstance(frame, protocol.Offer | protocol.Revoke):
            if frame.seq in self.seqs:
                self._tally.duplicates += 1
                return []
            self.seqs.add(frame.seq)
            if frame.seq not in self.before:  # a replayed frame is not a new offer
                if isinstance(frame, protocol.Offer):
                    self._tally.offers.append((frame.request.id, self.squad, frame.assignment, now))
                else:
                    self._tally.revokes += 1
        elif isinstance(frame, protocol.Error):
            self._tally.errors[frame.code] += 1
        return []

    def start_replay(self) -> None:
        """Forget the connection: the next hello says ``last_seq`` 0, and the frames received
        so far are what the replay must bring back."""
        self.before |= self.seqs
        self.seqs = set()
        self.last_seq = 0
        self.welcome_seq = -1

    def replayed(self) -> bool:
        """Welcomed again, and every frame the hub numbered up to its welcome is here."""
        return self.welcome_seq >= 0 and all(
            seq in self.seqs for seq in range(1, self.welcome_seq + 1)
        )

    # ---- working ---------------------------------------------------------------------------

    def _offered(self, offer: protocol.Offer, now: float) -> list[protocol.PhoneFrame]:
        if offer.seq <= self.last_seq:
            self._tally.duplicates += 1
            return [protocol.Ack(seq=self.last_seq)]
        self.last_seq = offer.seq
        self._tally.offers.append((offer.request.id, self.squad, offer.assignment, now))
        if self.holding:
            self._tally.over_capacity += 1
        self.holding.add(offer.assignment)
        if self.ignore_share and random.random() < self.ignore_share:
            self._tally.ignored.append(offer.assignment)  # held until the hub revokes it
            return [protocol.Ack(seq=offer.seq)]
        return [protocol.Ack(seq=offer.seq), self._command(protocol.Accept, offer.assignment, now)]

    def _confirmed(self, command_id: str, now: float) -> list[protocol.PhoneFrame]:
        sent = self._sent.pop(command_id, None)
        if sent is None:
            return []
        self._tally.pending -= 1
        self._tally.acked.append((sent.assignment, sent.kind))
        elapsed_ms = (now - sent.at) * 1000.0
        (self._tally.ack_ms if sent.kind == "accept" else self._tally.step_ms).append(elapsed_ms)
        step = NEXT_STEP[sent.kind]
        return [] if step is None else [self._command(step, sent.assignment, now)]

    def _refused(self, error: protocol.Error, now: float) -> list[protocol.PhoneFrame]:
        sent = self._sent.pop(error.id, None) if error.id is not None else None
        if sent is not None:
            self._tally.pending -= 1
        if sent is not None and sent.kind == "arrive" and error.code == "invalid_transition":
            # A fix within the arrival radius already recorded the arrival: go on.
            self._tally.auto_arrivals += 1
            return [self._command(protocol.Resolve, sent.assignment, now)]
        self._tally.errors[error.code] += 1
        return []

    def _revoked(self, revoke: protocol.Revoke) -> list[protocol.PhoneFrame]:
        if revoke.seq <= self.last_seq:
            self._tally.duplicates += 1
            return [protocol.Ack(seq=self.last_seq)]
        self.last_seq = revoke.seq
        self._tally.revokes += 1
        self._tally.revoked.append(revoke.assignment)
        self.holding.discard(revoke.assignment)
        return [protocol.Ack(seq=revoke.seq)]

    def _command(self, kind: type[Step], assignment: str, now: float) -> Step:
        self._count += 1
        command = kind(assignment=assignment, id=f"{self.squad}-{self._count}")
        name = command.__struct_config__.tag
        assert isinstance(name, str)
        if name == "resolve":  # from here the hub may offer this squad the next job
            self.holding.discard(assignment)
        self._sent[command.id] = _Sent(name, assignment, now, command)
        self._tally.pending += 1
        return command
