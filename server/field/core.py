"""The squad session's decisions, pure: no sockets, no Redis, no clock of its own.

- :func:`plan_resume`: what a hello's ``last_seq`` means against the squad's outbox.
- :class:`Sequencer`: numbered frames go out in order, once per connection, gaps filled.
- :class:`Geofence`: the scenes a squad is on its way to, and which one a fix arrived at.
- :class:`PendingAck`: the phone's latest acknowledgement not yet recorded.
- :func:`decode_error`: the error frame for a frame that did not decode.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import msgspec

from dispatch_field import protocol
from dispatch_field.codes import ErrorCode
from server.assign.ranking import haversine_m


class Closed(Exception):
    """The connection is ending with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """Where the writer starts (``sent_seq``: every frame above it is replayed from the
    outbox), and why the phone must be sent its whole current work instead (``resync``),
    if it must."""

    sent_seq: int
    resync: str | None = None


def plan_resume(last_seq: int, seq: int, trimmed: int, acked: int = 0) -> ResumePlan:
    """A phone that saw frames up to ``last_seq`` reconnects; the outbox holds frames
    ``trimmed + 1 .. seq``, and the squad acknowledged frames up to ``acked`` (an
    acknowledged frame leaves the outbox). Within that range, resume exactly. Otherwise the
    gap cannot be replayed: frames after ``last_seq`` were dropped unacknowledged
    (retention); the phone says it saw less than the squad acknowledged (a new phone in
    place of a lost one, or its storage cleared: the frames it acknowledged are gone); or the
    phone is ahead of the hub (Redis lost data). Say so, and resync from ``seq``."""
    if last_seq > seq:
        return ResumePlan(seq, "hub_behind")
    if last_seq < trimmed:
        return ResumePlan(seq, "outbox_trimmed")
    if last_seq < acked:
        return ResumePlan(seq, "phone_behind")
    return ResumePlan(last_seq)


class Step(enum.Enum):
    SKIP = "skip"  # sent already on this connection
    SEND = "send"  # the next one
    FILL = "fill"  # a gap before it: send the outbox's frames in between first


class Sequencer:
    """Numbered frames go out in order exactly once per connection: a frame at or below the
    last one sent is skipped, and a gap (a frame pushed through another route arrived
    first) is filled from the outbox before it."""

    def __init__(self, sent: int = 0) -> None:
        self.sent = sent

    def step(self, seq: int) -> Step:
        if seq <= self.sent:
            return Step.SKIP
        return Step.SEND if seq == self.sent + 1 else Step.FILL

    def sent_up_to(self, seq: int) -> bool:
        """Record ``seq`` as sent; False if it was sent already (do not send it again)."""
        if seq <= self.sent:
            return False
        self.sent = seq
        return True


@dataclass(slots=True)
class Scene:
    request: str
    lat: float
    lon: float


@dataclass
class Geofence:
    """The scenes of the squad's en-route assignments. A position within ``radius_m`` of
    one is an arrival there (each scene arrives once)."""

    radius_m: float
    scenes: dict[str, Scene] = field(default_factory=dict)

    def track(self, assignment: str, request: str, lat: float, lon: float) -> None:
        self.scenes[assignment] = Scene(request, lat, lon)

    def forget(self, assignment: str) -> None:
        self.scenes.pop(assignment, None)

    def __bool__(self) -> bool:
        return bool(self.scenes)

    def arrived(self, lat: float, lon: float) -> list[str]:
        """The assignments whose scene ``lat, lon`` is at; they are forgotten."""
        here = [
            assignment
            for assignment, scene in self.scenes.items()
            if haversine_m(lat, lon, scene.lat, scene.lon) <= self.radius_m
        ]
        for assignment in here:
            del self.scenes[assignment]
        return here


class PendingAck:
    """The phone's latest acknowledgement not yet recorded in Redis (0: none). Most are
    carried by the command that follows at once; :meth:`take` hands it over."""

    def __init__(self) -> None:
        self.seq = 0

    def note(self, seq: int) -> None:
        self.seq = max(self.seq, seq)

    def take(self) -> int:
        seq, self.seq = self.seq, 0
        return seq


class _Envelope(msgspec.Struct):
    """What an error frame can say about a frame that did not decode: its type and id."""

    t: Any = None
    id: Any = None


_envelope_msgpack = msgspec.msgpack.Decoder(_Envelope)
_envelope_json = msgspec.json.Decoder(_Envelope)


def decode_error(data: bytes | str, exc: Exception) -> protocol.Error:
    """An error frame for a frame that did not decode, naming the field and its command id.
    ``malformed`` unless the frame is a map that broke the schema (``invalid``,
    ``unknown_type``)."""
    message = str(exc)[:500] or type(exc).__name__
    if not isinstance(exc, msgspec.ValidationError):
        return protocol.Error(code=ErrorCode.MALFORMED, message=message)
    try:
        envelope = (
            _envelope_json.decode(data) if isinstance(data, str) else _envelope_msgpack.decode(data)
        )
    except msgspec.ValidationError:
        return protocol.Error(
            code=ErrorCode.MALFORMED, message="a frame must be a map with text keys"
        )
    except Exception:  # noqa: BLE001 - nested too deep to look at (RecursionError): not a frame
        return protocol.Error(code=ErrorCode.MALFORMED, message=message)
    command_id = envelope.id if isinstance(envelope.id, str) else None
    code = (
        ErrorCode.UNKNOWN_TYPE
        if message.endswith("at `$.t`") and envelope.t is not None
        else ErrorCode.INVALID
    )
    return protocol.Error(code=code, message=message, id=command_id)
