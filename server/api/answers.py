"""The shapes of the API's answers, as msgspec Structs: what the OpenAPI document
(:mod:`server.api.openapi`) publishes. Handlers build these answers as plain mappings; a test
checks real answers against the published schemas, so the two cannot drift."""

from __future__ import annotations

from typing import Any

import msgspec


class Health(msgspec.Struct, omit_defaults=True):
    """``status`` for anyone; the rest for admin and center."""

    status: str  # "ok" | "degraded"
    hub: str | None = None
    redis: bool | None = None
    squads_connected: int | None = None
    positions_written: int | None = None
    redis_round_trips: int | None = None  # commands, pipelines and scripts sent since start


class IntakeAnswer(msgspec.Struct, omit_defaults=True):
    id: str  # the request number YYYYMMDD-NNNNNN, read out to the caller
    state: str
    route: str  # "linkage", or the service it was transferred to (police, fire, medical)
    unit: str | None = None
    district: str | None = None
    squad: str | None = None
    assignment: str | None = None


class Deadlines(msgspec.Struct):
    accept_by: float | None
    arrive_by: float | None
    resolve_by: float | None


class RequestDetail(msgspec.Struct, omit_defaults=True):
    id: str
    state: str
    unit: str | None
    deadlines: Deadlines
    timeline: list[dict[str, Any]]  # the events, oldest first: {type, at, by, ...}
    category: str = ""
    description: str = ""
    address: str = ""
    caller_phone: str = ""
    lat: float = 0.0
    lon: float = 0.0
    district: str = ""
    route: str = ""
    received_at: float = 0.0  # every time: epoch seconds
    offered_at: float | None = None  # the current offer's
    accepted_at: float | None = None  # the first acceptance
    arrived_at: float | None = None  # the first arrival on scene
    promised_by: float | None = None
    squad: str = ""
    squad_name: str | None = None  # the squad's name, beside its id
    assignment: str = ""
    result: str = ""
    archived: bool = False  # true: its live state has left Redis; this is the ledger's record


class SquadCreated(msgspec.Struct):
    id: str
    unit: str
    name: str
    capacity: int
    skills: list[str]
    token: str  # shown this once; stored hashed


class SquadToken(msgspec.Struct):
    id: str
    unit: str
    token: str  # shown this once; stored hashed; the squad's former token no longer works
    closed: bool  # a connection of the squad (on any process) was closed


class SquadRow(msgspec.Struct):
    """A squad of a unit's roster (``GET /api/v1/squads``)."""

    id: str
    unit: str
    name: str
    online: bool
    on_duty: bool
    capacity: int
    free_capacity: int
    active: int  # assignments it holds (offered or accepted)
    skills: list[str]  # categories it is offered; ["*"]: every category of its unit
    last_seen: float | None  # offline: when its connection ended (null: online, or never)
    registered_at: float | None
    token_replaced_at: float | None
    token_replaced_by: str | None  # who replaced its token last ("unit:desk_water")


class LiveMap(msgspec.Struct):
    at: float
    squads: list[dict[str, Any]]  # id, unit, lat, lon, on_duty, busy
    requests: list[dict[str, Any]]  # open requests: id, unit, category, state, lat, lon, ...


Rows = list[dict[str, Any]]  # ledger rows or events, one mapping each
Anything = dict[str, Any]
