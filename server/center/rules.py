"""What the center may order, checked against the city: pure, no I/O.

A ruling names units and categories by code; these functions say whether the city allows
it (the unit exists, handles the category in the request's district) and which units could
take a disputed request. They raise :class:`RulingRefused` naming the offending field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.city import City


class RulingRefused(Exception):
    """The city does not allow the order: ``code`` and the offending ``field``; ``names``:
    the codes the refusal is about (``unit``, ``category``, ``district``, ``holder``), for a
    page to say it with the names people use."""

    def __init__(
        self, code: str, field: str, message: str, names: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.field, self.message = code, field, message
        self.names = names or {}


@dataclass(frozen=True, slots=True)
class Reassignment:
    """A reassignment the city allows."""

    unit: str
    category: str  # the request's category after it ("" : unchanged)
    assist: tuple[str, ...]


def check_reassignment(
    city: City,
    *,
    current_unit: str,
    district: str,
    category: str,
    unit: str,
    new_category: str | None,
    assist: list[str],
) -> Reassignment:
    """The reassignment of a request (now with ``current_unit``, in ``district``, of
    ``category``) to ``unit``, as ``new_category`` if given, with ``assist`` units."""
    target = city.unit(unit)
    if target is None:
        raise RulingRefused("unknown_unit", "unit", f"no unit {unit}")
    wanted = new_category or category
    known = city.category(wanted)
    if known is None or known.route != "linkage":
        raise RulingRefused(
            "unknown_category", "category", f"{wanted} is not a category dispatched to units"
        )
    competent = city.unit_for(wanted, district)
    if competent is None or competent.code != unit:
        holder = f" ({competent.code} does)" if competent else ""
        raise RulingRefused(
            "no_jurisdiction",
            "unit",
            f"unit {unit} does not handle {wanted} in district {district}{holder}",
            {
                "unit": unit,
                "category": wanted,
                "district": district,
                "holder": competent.code if competent else "",
            },
        )
    if unit == current_unit:
        raise RulingRefused(
            "same_unit",
            "unit",
            f"the request is with {unit} already: uphold the duty instead",
            {"unit": unit},
        )
    if len(set(assist)) != len(assist):
        raise RulingRefused("invalid", "assist", "a unit is named twice")
    for code in assist:
        helper = city.unit(code)
        if helper is None:
            raise RulingRefused("unknown_unit", "assist", f"no unit {code}")
        if code == unit:
            raise RulingRefused("invalid", "assist", f"{code} has jurisdiction: it leads")
        if district not in helper.districts:
            raise RulingRefused(
                "no_jurisdiction",
                "assist",
                f"unit {code} does not serve district {district}",
                {"unit": code, "district": district},
            )
    changed = new_category if new_category and new_category != category else ""
    return Reassignment(unit, changed, tuple(assist))


def candidate_units(city: City, district: str, current_unit: str) -> list[dict[str, Any]]:
    """Units a disputed request in ``district`` could be reassigned to: every unit serving
    the district but the current one, with the categories it handles there."""
    return [
        {
            "unit": unit.code,
            "name_zh": unit.name_zh,
            "name_en": unit.name_en,
            "categories": list(unit.categories),
        }
        for unit in city.units
        if district in unit.districts and unit.code != current_unit
    ]
