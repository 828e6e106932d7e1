"""What a squad session may use of its process: exactly these parts, nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.actions import SquadActions
from server.assign.dispatcher import Dispatcher
from server.background import Background
from server.guard import AddressBuckets
from server.metrics import Metrics
from server.presence.tracker import PresenceTracker
from server.settings import Settings
from server.store.availability import RedisAvailability
from server.store.positions import PositionWriter
from server.store.requests import RequestStore
from server.store.squads import SquadStore

if TYPE_CHECKING:
    from server.components import Components


@dataclass(frozen=True, slots=True)
class FieldContext:
    settings: Settings
    squads: SquadStore  # authentication, the outbox, duty, acknowledgements
    requests: RequestStore  # a scene's place
    positions: PositionWriter
    actions: SquadActions  # the squad's commands
    presence: PresenceTracker  # online here / offline
    dispatcher: Dispatcher  # a unit's queue moves when a squad comes free
    failed_hellos: AddressBuckets  # per client address
    availability: RedisAvailability
    background: Background
    metrics: Metrics

    @classmethod
    def of(cls, parts: Components) -> FieldContext:
        return cls(
            settings=parts.settings,
            squads=parts.squads,
            requests=parts.requests,
            positions=parts.positions,
            actions=parts.actions,
            presence=parts.presence,
            dispatcher=parts.dispatcher,
            failed_hellos=parts.failed_hellos,
            availability=parts.availability,
            background=parts.background,
            metrics=parts.metrics,
        )
