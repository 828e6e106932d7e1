"""The wall map marks what is late: an open request past its next deadline carries the
deadline it missed."""

from __future__ import annotations

from server.deadlines import Milestone, overdue_on_map
from tests.helpers import XIGONG, Api, auth, eventually


def test_overdue_on_map_names_the_deadline_missed() -> None:
    fields = {"state": "queued", "accept_by": "100", "arrive_by": "200", "resolve_by": "900"}
    assert overdue_on_map(fields, now=99) is None
    late = overdue_on_map(fields, now=150)
    assert late is not None and late.kind is Milestone.ACCEPT and late.at == 100
    accepted = fields | {"state": "accepted", "accepted_at": "90"}
    assert overdue_on_map(accepted, now=150) is None  # accepted in time; arrival not due
    arrive = overdue_on_map(accepted, now=250)
    assert arrive is not None and arrive.kind is Milestone.ARRIVE
    promised = accepted | {
        "state": "deferred",
        "arrived_at": "150",
        "promised_by": "700",
        "resolve_by": "700",
    }
    promise = overdue_on_map(promised, now=800)
    assert promise is not None and promise.kind is Milestone.PROMISE
    assert overdue_on_map(fields | {"state": "resolved"}, now=10_000) is None


async def test_the_map_shows_a_request_waiting_past_its_accept_limit(hubs) -> None:
    hub = hubs.start(time_scale=0.005, timer_poll_ms=50)  # a 300 s accept limit: 1.5 s
    api = Api(hub)
    created = await api.request(*XIGONG)  # no squad on duty: it waits

    async def shown() -> dict[str, object]:
        answer = await api.http.get("/api/v1/map", headers=auth("wall"))
        return next(r for r in answer.json()["requests"] if r["id"] == created["id"])

    assert (await shown())["overdue"] is None
    late = await eventually(lambda: _late(shown), timeout_s=20)
    assert late["overdue"] == "accept" and late["state"] == "queued"
    assert isinstance(late["overdue_since"], float)
    await api.close()


async def _late(shown):  # type: ignore[no-untyped-def]
    item = await shown()
    return item if item["overdue"] else None
