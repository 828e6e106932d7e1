"""The field protocol: every frame between a squad's phone and the hub, defined once.

Server, reference client, simulations and tests all import these types; nothing else defines
a frame. One definition gives the MessagePack codec (subprotocol ``dispatch.v1.msgpack``,
binary frames), the JSON codec (``dispatch.v1.json``, text frames), validation with the path of
the offending field, and the JSON Schema published in ``fieldapp-api/schema.json``.

Every frame is a map whose ``t`` field names its type.

Numbered frames (``offer``, ``revoke``, ``notice``) carry ``seq``, a per-squad counter. The hub
keeps each numbered frame until the phone acknowledges it (``ack`` is cumulative) and replays
every kept frame after ``hello.last_seq`` before sending anything new. The hub stores the body
of a numbered frame without ``seq`` (encoded with ``seq=0``, which ``omit_defaults`` leaves out)
and stamps the number when the frame is sent: see :func:`stamp_seq`.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta, Struct

SUBPROTOCOL_MSGPACK: Final = "dispatch.v1.msgpack"
SUBPROTOCOL_JSON: Final = "dispatch.v1.json"
SUBPROTOCOLS: Final = (SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON)

# Redis GEO (Web Mercator) stores latitudes within this bound and refuses the rest: a position
# outside it could never be placed on the map or found by a search.
MAX_LAT: Final = 85.05112878
# 2100-01-01T00:00Z: every bound is finite, so infinity, NaN and year-9999 times never pass.
MAX_TIMESTAMP: Final = 4_102_444_800.0

Lat = Annotated[
    float, Meta(ge=-MAX_LAT, le=MAX_LAT, description="degrees north, within Redis GEO's range")
]
Lon = Annotated[float, Meta(ge=-180.0, le=180.0)]
Timestamp = Annotated[
    float,
    Meta(ge=0.0, le=MAX_TIMESTAMP, description="seconds since the Unix epoch, before 2100"),
]
Id = Annotated[str, Meta(min_length=1, max_length=64)]
# A fix's accuracy radius: finite (infinity and NaN never pass), at most half the Earth round.
Accuracy = Annotated[
    float, Meta(ge=0.0, le=20_000_000.0, description="metres, the fix's accuracy radius")
]
Seq = Annotated[int, Meta(ge=0)]
# A reason is words (a caller is told a promise's, the center reads a dispute's): not blank,
# and no NUL (no person writes one; the ledger's PostgreSQL text takes none).
Reason = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=500,
        pattern=r"^(?=[^\x00]*$)\s*\S",
        description="words: not blank, no NUL",
    ),
]
Note = Annotated[str, Meta(max_length=2000, pattern=r"^[^\x00]*$", description="no NUL")]


class _Frame(Struct, tag_field="t", forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Base of every frame; the subclass's tag is its ``t``."""


# ---- phone -> hub -------------------------------------------------------------------------


class Hello(_Frame, tag="hello"):
    """First frame on every connection: who the squad is, and the last ``seq`` it has."""

    squad: Id
    token: Annotated[str, Meta(min_length=1, max_length=200)]
    last_seq: Seq = 0


class Pos(_Frame, tag="pos"):
    """A position fix. ``ts`` is when the fix was taken, on the phone's clock."""

    lat: Lat
    lon: Lon
    ts: Timestamp
    acc: Accuracy | None = None


class Duty(_Frame, tag="duty"):
    """Going on or off duty. Only squads on duty receive offers."""

    on: bool


class Ack(_Frame, tag="ack"):
    """Cumulative acknowledgement: every numbered frame up to ``seq`` was received."""

    seq: Seq


class _Command(_Frame):
    """A step on an assignment. ``id`` is chosen by the phone and makes a retry idempotent;
    ``at`` is when the step happened on the phone (omitted: when the hub receives it)."""

    assignment: Id
    id: Id
    at: Timestamp | None = None


class Accept(_Command, tag="accept"):
    pass


class Enroute(_Command, tag="enroute"):
    pass


class Arrive(_Command, tag="arrive"):
    pass


class Resolve(_Command, tag="resolve"):
    note: Note = ""


class Defer(_Command, tag="defer", kw_only=True):
    """The matter cannot be finished now: ``until`` is the promised completion time."""

    until: Timestamp
    reason: Reason


class Dispute(_Command, tag="dispute", kw_only=True):
    """Not this unit's jurisdiction: the request goes to the center."""

    reason: Reason


PhoneFrame = Hello | Pos | Duty | Ack | Accept | Enroute | Arrive | Resolve | Defer | Dispute
COMMANDS: Final = (Accept, Enroute, Arrive, Resolve, Defer, Dispute)
Command = Accept | Enroute | Arrive | Resolve | Defer | Dispute

# ---- hub -> phone -------------------------------------------------------------------------


class Welcome(_Frame, tag="welcome"):
    """Answer to ``hello``: the hub's view of the squad's ``last_seq`` after the hello."""

    squad: str
    last_seq: int
    server_time: float = 0.0


class RequestInfo(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What the squad needs of a request. The deadlines (epoch s) count from intake, the
    citizen's clock; ``caller_phone`` is for a call back."""

    id: str
    category: str
    description: str
    lat: float
    lon: float
    address: str = ""
    # Set when this is an assist item: the request number of the request it assists, whose
    # lead unit resolves it; the squad reports its own steps on the item as usual.
    assist_of: str = ""
    caller_phone: str = ""
    accept_by: float | None = None
    arrive_by: float | None = None
    resolve_by: float | None = None  # the promised time once the squad deferred


class Offer(_Frame, tag="offer"):
    """A directive: go to ``request``. Units must accept every directive; ``accept`` before
    ``respond_by`` or the offer is revoked and recorded as a non-response."""

    assignment: str
    request: RequestInfo
    respond_by: float
    seq: int = 0


class Revoke(_Frame, tag="revoke"):
    """The assignment is no longer this squad's (offer window passed, or the center moved it)."""

    assignment: str
    reason: str
    seq: int = 0


# "recheck": a spot check's callback found the problem not fixed and the center reopened it.
NoticeKind = Literal["accept", "arrive", "resolve", "promise", "waiting", "recheck"]


class NoticeInfo(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A supervision notice (督办通知单): ``kind`` of limit missed on ``request``, at
    ``due_at``; ``level`` 1 when issued, one more each escalation while the item stays open.
    ``id`` is ``<request>-<kind>-<level>``: one notice per request, kind and level."""

    id: str
    request: str
    unit: str
    kind: NoticeKind
    level: int
    issued_at: float
    due_at: float
    squad: str = ""


class Notice(_Frame, tag="notice"):
    """A supervision notice about an item this squad holds: its limit passed and the center
    and the unit are told. The squad acknowledges it like every numbered frame."""

    notice: NoticeInfo
    seq: int = 0


class Arrived(_Frame, tag="arrived"):
    """The hub recorded this assignment's arrival itself, at ``at``: the squad's positions
    came within ``DISPATCH_ARRIVAL_RADIUS_M`` of the scene while it was en route. The phone
    shows the assignment on scene. Not numbered: it is sent at once on the connection whose
    positions showed the arrival; a phone that misses it learns it when its own ``arrive`` is
    refused with ``invalid_transition``."""

    assignment: str
    at: float


class Ok(_Frame, tag="ok"):
    """A command with this ``id`` was applied (or had been applied before: retries are safe)."""

    id: str


class Error(_Frame, tag="error"):
    """A frame was refused. ``id`` names the command when the frame carried one."""

    code: str
    message: str
    id: str | None = None


class Assignment(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One of the squad's current assignments, as a ``resync`` lists it."""

    assignment: str
    state: str  # offered, accepted, en_route, on_scene, deferred
    request: RequestInfo
    respond_by: float = 0.0  # for an offer: accept before this


class Resync(_Frame, tag="resync"):
    """The gap since the phone's ``last_seq`` cannot be replayed (``reason``:
    ``outbox_trimmed``, frames were dropped from the outbox before they were acknowledged;
    ``phone_behind``, the phone saw less than the squad acknowledged, a new phone or one
    whose storage was cleared; ``hub_behind``, the hub lost data). ``assignments`` is the
    squad's complete current work: the phone replaces its own list with it and continues from
    ``last_seq``. Numbered frames after ``last_seq`` follow as usual."""

    reason: str
    last_seq: int
    assignments: list[Assignment]


HubFrame = Welcome | Offer | Revoke | Notice | Arrived | Ok | Error | Resync
NUMBERED: Final = (Offer, Revoke, Notice)

# ---- codecs -------------------------------------------------------------------------------

_phone_msgpack = msgspec.msgpack.Decoder(PhoneFrame)
_phone_json = msgspec.json.Decoder(PhoneFrame)
_hub_msgpack = msgspec.msgpack.Decoder(HubFrame)
_hub_json = msgspec.json.Decoder(HubFrame)
_msgpack_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()
_any_msgpack = msgspec.msgpack.Decoder()

DecodeError = msgspec.DecodeError  # base of msgspec.ValidationError too


def decode_phone(data: bytes | str) -> PhoneFrame:
    """Decode and validate one phone frame. ``bytes`` is MessagePack, ``str`` is JSON.

    Raises :class:`msgspec.ValidationError` (a subclass of ``DecodeError``) with the path of
    the offending field for a well-formed frame that breaks the schema, ``DecodeError`` for
    bytes that are not a frame at all.
    """
    if isinstance(data, str):
        return _phone_json.decode(data)
    return _phone_msgpack.decode(data)


def decode_hub(data: bytes | str) -> HubFrame:
    """Decode one hub frame (used by clients)."""
    if isinstance(data, str):
        return _hub_json.decode(data)
    return _hub_msgpack.decode(data)


def encode(frame: _Frame) -> bytes:
    """MessagePack bytes of a frame."""
    return _msgpack_encoder.encode(frame)


def encode_json(frame: _Frame) -> str:
    return _json_encoder.encode(frame).decode()


def msgpack_to_json(data: bytes) -> str:
    """Re-encode a MessagePack frame as JSON text (for ``dispatch.v1.json`` connections)."""
    return _json_encoder.encode(_any_msgpack.decode(data)).decode()


def stamp_seq(body: bytes, seq: int) -> bytes:
    """Return the wire frame: ``body`` (a numbered frame encoded with ``seq`` omitted) with
    ``seq`` appended as its last key.

    MessagePack maps are a header and then key/value pairs, so appending a pair only changes
    the header's count. Frames here have fewer than 15 keys (fixmap headers); anything else is
    a programming error.
    """
    header = body[0]
    if not 0x80 <= header < 0x8F:
        raise ValueError("numbered frame body must be a fixmap with fewer than 15 keys")
    return bytes((header + 1,)) + body[1:] + b"\xa3seq" + _msgpack_encoder.encode(seq)


def json_schema() -> dict[str, object]:
    """JSON Schema of both directions, generated from the types above."""
    (phone, hub), components = msgspec.json.schema_components((PhoneFrame, HubFrame))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "City linkage dispatch field protocol v1",
        "phone_to_hub": phone,
        "hub_to_phone": hub,
        "$defs": components,
    }


def _fix_ref_prefix(schema: dict[str, object]) -> dict[str, object]:
    text = msgspec.json.encode(schema).replace(b"#/components/schemas/", b"#/$defs/")
    result: dict[str, object] = msgspec.json.decode(text)
    return result


def published_schema() -> dict[str, object]:
    """The document written to ``fieldapp-api/schema.json``."""
    return _fix_ref_prefix(json_schema())


# Literal kept for readers of this module: the one list of subprotocol names.
SubprotocolName = Literal["dispatch.v1.msgpack", "dispatch.v1.json"]
