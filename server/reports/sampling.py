"""The weekly spot-check draw (暗访, seed §4.4): a sample of each unit's resolved requests
for the center to call back. Pure.

- **Per unit**, ``size`` requests (all of them when the unit resolved fewer).
- **Stratified by category**: the sample is shared among the unit's categories in
  proportion to how many requests of each it resolved (largest remainders, ties to the
  larger category, then by code), so a unit's rare categories are checked as often as
  their share says, not as luck would have it.
- **Reproducible**: within a category the requests are sorted by id and picked by a random
  generator seeded with ``seed/unit/category``; the same seed, candidates and exclusions
  give the same sample on any machine (``random.Random`` hashes a text seed with SHA-512).
- **Never the same request twice**: ``excluded`` (every request ever drawn) is left out
  before anything is picked.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Candidate:
    """A resolved request that may be drawn."""

    id: str
    unit: str
    category: str


def quotas(counts: Mapping[str, int], size: int) -> dict[str, int]:
    """How many of ``size`` each category gets, in proportion to ``counts`` (largest
    remainder method); every category with a count is named, with 0 if it gets none. The
    quotas add up to ``min(size, sum(counts))`` and never exceed a category's count."""
    total = sum(counts.values())
    if size >= total:
        return dict(counts)
    shares = {category: size * n / total for category, n in counts.items()}
    given = {category: math.floor(share) for category, share in shares.items()}
    left = size - sum(given.values())
    order = sorted(counts, key=lambda c: (-(shares[c] - given[c]), -counts[c], c))
    for category in order[:left]:
        given[category] += 1
    return given


def draw(
    candidates: Iterable[Candidate], size: int, seed: str, excluded: Collection[str] = ()
) -> list[Candidate]:
    """The sample: up to ``size`` per unit, stratified by category, from ``candidates`` not
    in ``excluded``; ordered by unit, category, id."""
    if size < 0:
        raise ValueError("a sample size is not negative")
    strata: dict[str, dict[str, list[Candidate]]] = defaultdict(lambda: defaultdict(list))
    for candidate in candidates:
        if candidate.id not in excluded:
            strata[candidate.unit][candidate.category].append(candidate)
    picked: list[Candidate] = []
    for unit in sorted(strata):
        by_category = strata[unit]
        shares = quotas({c: len(items) for c, items in by_category.items()}, size)
        for category in sorted(by_category):
            pool = sorted({c.id: c for c in by_category[category]}.values(), key=lambda c: c.id)
            chooser = random.Random(f"{seed}/{unit}/{category}")
            chosen = chooser.sample(pool, min(shares[category], len(pool)))
            picked.extend(sorted(chosen, key=lambda c: c.id))
    return picked
