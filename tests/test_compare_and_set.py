"""The one compare-and-set loop (``server.store.requests.compare_and_set``), on its own; the
callers' races (concurrent steps, center rulings, offer expiries, notices) are tested on
real Redis in their own modules."""

from __future__ import annotations

import pytest

from server.store.requests import KeptChanging, StaleRequest, compare_and_set


async def test_an_attempt_that_meets_a_newer_version_runs_again_until_it_commits() -> None:
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(len(calls))
        if len(calls) < 3:
            raise StaleRequest("R1")
        return "committed"

    assert await compare_and_set(attempt, 8) == "committed"
    assert len(calls) == 3


async def test_every_attempt_stale_is_kept_changing_after_the_bound() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise StaleRequest("R1")

    with pytest.raises(KeptChanging):
        await compare_and_set(attempt, 5)
    assert calls == 5


async def test_any_other_error_is_not_retried() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        await compare_and_set(attempt, 5)
    assert calls == 1
