"""The reports' policy: the monthly score's weighting, who is ranked, the spot checks' size,
the fortnightly report's thresholds. Read once from ``policy.toml`` next to this module, or
from the file ``DISPATCH_REPORTS_POLICY`` names; that file documents every value. Pure
apart from reading the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

DEFAULT_PATH = Path(__file__).with_name("policy.toml")

Weight = Annotated[float, Meta(ge=0, le=1000)]


class Weights(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The weight of each score component (see policy.toml for what each measures)."""

    accept_on_time: Weight = 15
    arrive_on_time: Weight = 20
    resolve_on_time: Weight = 25
    spot_check_pass: Weight = 20
    promises_kept: Weight = 10
    responsiveness: Weight = 5
    notice_free: Weight = 5
    disputes_founded: Weight = 0

    def items(self) -> list[tuple[str, float]]:
        return [(name, float(getattr(self, name))) for name in self.__struct_fields__]


class Ranking(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    min_requests: Annotated[int, Meta(ge=0)] = 1


class SpotChecks(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    per_unit: Annotated[int, Meta(ge=1, le=50)] = 3


class Fortnight(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    overdue_share: Annotated[float, Meta(ge=0, le=1)] = 0.2
    overdue_min: Annotated[int, Meta(ge=1)] = 3
    repeat_radius_m: Annotated[float, Meta(gt=0, le=10_000)] = 200.0
    repeat_min: Annotated[int, Meta(ge=2)] = 3
    notice_level: Annotated[int, Meta(ge=1)] = 2


class Policy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    weights: Weights = msgspec.field(default_factory=Weights)
    ranking: Ranking = msgspec.field(default_factory=Ranking)
    spot_checks: SpotChecks = msgspec.field(default_factory=SpotChecks)
    fortnight: Fortnight = msgspec.field(default_factory=Fortnight)


class PolicyError(ValueError):
    """The policy file is not TOML of the expected form."""


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy in ``path`` (None: the shipped ``policy.toml``); raises PolicyError naming
    the file and the value at fault. A weighting whose weights are all 0 is refused."""
    source = Path(path) if path else DEFAULT_PATH
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
        policy = msgspec.convert(raw, Policy)
    except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise PolicyError(f"{source}: {exc}") from None
    if not any(weight > 0 for _, weight in policy.weights.items()):
        raise PolicyError(f"{source}: every weight is 0; nothing would be scored")
    return policy
