"""The center's reports over HTTP (see :mod:`server.reports`):

- ``GET  /api/v1/reports/evaluation?month=YYYY-MM``        every unit's scorecard, ranked
- ``POST /api/v1/reports/evaluation/{month}/close``        freeze the efficiency records
- ``GET  /api/v1/reports/evaluation.svg?month=&chart=``     bars per unit, or a trend
- ``GET  /api/v1/units/{code}/record``                     a unit's efficiency record
- ``POST /api/v1/spotchecks/draw?week=YYYY-Www``           draw the week's spot checks
- ``GET  /api/v1/spotchecks?week=``                        the spot checks
- ``POST /api/v1/spotchecks/{id}/outcome``                 the callback's outcome
- ``GET  /api/v1/reports/spotchecks?week=``                the weekly circular (ranking)
- ``GET  /api/v1/reports/fortnight?from=YYYY-MM-DD``       the coordination report

Roles: ``center`` (and admin); a unit's desk reads its own unit only (its row of a ranking,
its record, its spot checks once their outcome is recorded: a spot check is a covert
callback). Every report is also CSV: ``Accept: text/csv`` or the same path with ``.csv``
(UTF-8 with a BOM, formula-safe; each CSV export is recorded in the audit trail).
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api.answers import Anything
from server.api.common import (
    ApiError,
    Code,
    authorize,
    components,
    json_response,
    ledger_of,
    read_body,
    read_query,
    require_unit,
    units_in_view,
)
from server.api.openapi import described
from server.center.actions import CenterError
from server.ledger import record_audit
from server.reports import charts, exports, periods, store
from server.reports.fortnight import FortnightReport
from server.reports.policy import Policy, load_policy
from server.reports.service import Circular, Evaluation, Reports, UnitRecord
from server.store.requests import Actor

Month = Annotated[str, Meta(pattern=r"^[0-9]{4}-[0-9]{2}$")]  # ASCII digits: \d takes any script's
Week = Annotated[str, Meta(pattern=r"^[0-9]{4}-W[0-9]{2}$")]
Day = Annotated[str, Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
Lang = Literal["zh", "en"]
CSV = "text/csv"
SVG = "image/svg+xml"
MEASURES = ("score", "accept_on_time", "arrive_on_time", "resolve_on_time", "spot_check_pass")


class EvaluationQuery(msgspec.Struct, forbid_unknown_fields=True):
    month: Month


class ChartQuery(msgspec.Struct, forbid_unknown_fields=True):
    month: Month
    chart: Literal["bars", "trend"] = "bars"
    measure: Literal[
        "score", "accept_on_time", "arrive_on_time", "resolve_on_time", "spot_check_pass"
    ] = "score"
    months: Annotated[int, Meta(ge=2, le=24)] = 6  # of the trend, ending with ``month``
    lang: Lang = "zh"


class RecordQuery(msgspec.Struct, forbid_unknown_fields=True):
    recompute: bool = False  # compute each month again and show it where it differs


class DrawQuery(msgspec.Struct, forbid_unknown_fields=True):
    week: Week
    size: Annotated[int, Meta(ge=1, le=50)] | None = None  # per unit; the policy's by default
    seed: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None  # None: random


class SpotCheckQuery(msgspec.Struct, forbid_unknown_fields=True):
    week: Week | None = None
    unit: Code | None = None


class Outcome(msgspec.Struct, forbid_unknown_fields=True):
    """The callback's outcome: ``satisfied``, ``not_satisfied``, ``not_fixed`` (the problem
    is still there: the request is reopened and its unit gets a ``recheck`` notice) or
    ``unreachable``."""

    outcome: Literal["satisfied", "not_satisfied", "not_fixed", "unreachable"]
    note: Annotated[str, Meta(max_length=2000)] = ""


class CircularQuery(msgspec.Struct, forbid_unknown_fields=True):
    week: Week
    lang: Lang = "zh"  # of the chart


class FortnightQuery(msgspec.Struct, forbid_unknown_fields=True):
    from_: Day = msgspec.field(name="from")


# ---- shared --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _policy(path: str | None) -> Policy:
    return load_policy(path)


def _reports(request: Request) -> Reports:
    services = components(request)
    policy = _policy(services.settings.reports_policy)
    return Reports(ledger_of(request).engine, services.city, policy)


def _wants_csv(request: Request) -> bool:
    return request.url.path.endswith(".csv") or CSV in request.headers.get("accept", "")


def _period_error(field: str, exc: periods.PeriodError) -> ApiError:
    return ApiError(422, "invalid", str(exc), {field: str(exc)})


async def _csv(request: Request, actor: Actor, name: str, text: str, detail: Any) -> Response:
    """A CSV answer; the export is recorded (who took which report, when) once the answer
    is made, so that no export is recorded that nobody received."""
    response = Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )
    await record_audit(
        ledger_of(request),
        actor.label(),
        "report_export",
        {"report": name, "query": detail, "bytes": len(text.encode())},
    )
    return response


def _svg(text: str) -> Response:
    return Response(text, media_type=SVG, headers={"Cache-Control": "no-store"})


def _own_units(actor: Actor) -> set[str] | None:
    """The units a caller may see (None: all)."""
    return {actor.unit} if actor.kind == "unit" else None


# ---- the monthly evaluation ----------------------------------------------------------------


async def _evaluation(request: Request, actor: Actor, month: str) -> Evaluation:
    try:
        found = await _reports(request).evaluation(month)
    except periods.PeriodError as exc:
        raise _period_error("month", exc) from None
    visible = _own_units(actor)
    if visible is not None:
        found.units = [c for c in found.units if c.unit in visible]
        found.recomputed = [c for c in found.recomputed if c.unit in visible]
    return found


@described(
    summary="The month's evaluation: every unit's scorecard, score and rank",
    roles=("center", "unit"),
    query=EvaluationQuery,
    answer=Evaluation,
    errors=(422, 503),
    alternatives=(CSV,),
)
async def evaluation(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    query = read_query(request, EvaluationQuery)
    found = await _evaluation(request, actor, query.month)
    if _wants_csv(request):
        names = {u: (n.zh, n.en) for u, n in found.names.items()}
        text = exports.evaluation_csv(
            found.month,
            found.units,
            names,
            {c.unit: c for c in found.recomputed},
            found.closed is not None,
        )
        return await _csv(request, actor, f"evaluation-{found.month}", text, {"month": query.month})
    return json_response(found)


@described(
    summary="The month's evaluation as CSV (one row per unit)",
    roles=("center", "unit"),
    query=EvaluationQuery,
    answer=str,
    media_type=CSV,
    errors=(422, 503),
)
async def evaluation_csv(request: Request) -> Response:
    return await evaluation(request)


@described(
    summary="Close the month: freeze each unit's efficiency record",
    roles=("center",),
    answer=Evaluation,
    errors=(409, 422, 503),
)
async def close_month(request: Request) -> Response:
    actor = authorize(request, "center")
    month = request.path_params["month"]
    try:
        closed = await _reports(request).close(month, actor.label())
    except periods.PeriodError as exc:
        raise _period_error("month", exc) from None
    except store.Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return json_response(closed)


@described(
    summary="A chart of the month: bars per unit, or a trend per unit over months (SVG)",
    roles=("center", "unit"),
    query=ChartQuery,
    answer=str,
    media_type=SVG,
    errors=(422, 503),
)
async def evaluation_chart(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    query = read_query(request, ChartQuery)
    reports = _reports(request)
    names = reports.names()
    visible = _own_units(actor)

    def label(unit: str) -> str:
        name = names.get(unit)
        return (name.zh if query.lang == "zh" else name.en) if name else unit

    def measure(card: Any) -> float | None:
        if card is None:
            return None
        if query.measure == "score":
            return card.score  # type: ignore[no-any-return]
        value = card.components.get(query.measure)
        return None if value is None else 100.0 * value

    title = _TITLES[query.lang][query.measure]
    if query.chart == "bars":
        found = await _evaluation(request, actor, query.month)
        items = [(label(c.unit), measure(c)) for c in found.units]
        return _svg(charts.bars(f"{title} · {query.month}", items))
    try:
        months, series = await reports.trend(query.month, query.months)
    except periods.PeriodError as exc:
        raise _period_error("month", exc) from None
    lines = {
        label(unit): [measure(card) for card in cards]
        for unit, cards in series.items()
        if (visible is None or unit in visible) and any(card is not None for card in cards)
    }
    return _svg(charts.trend(f"{title} · {months[0]} – {months[-1]}", months, lines))


_TITLES = {
    "zh": {
        "score": "考核得分",
        "accept_on_time": "按时接单率 %",
        "arrive_on_time": "按时到场率 %",
        "resolve_on_time": "按时办结率 %",
        "spot_check_pass": "暗访满意率 %",
    },
    "en": {
        "score": "Score",
        "accept_on_time": "Accepted on time %",
        "arrive_on_time": "Arrived on time %",
        "resolve_on_time": "Resolved on time %",
        "spot_check_pass": "Spot-check pass rate %",
    },
}


@described(
    summary="A unit's efficiency record, month by month (closed months)",
    roles=("center", "unit"),
    query=RecordQuery,
    answer=UnitRecord,
    errors=(404, 422, 503),
    alternatives=(CSV,),
)
async def unit_record(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    code = request.path_params["code"]
    require_unit(actor, code)
    if components(request).city.unit(code) is None:
        raise ApiError(404, "not_found", f"no unit {code}")
    query = read_query(request, RecordQuery)
    found = await _reports(request).record(code, query.recompute)
    if _wants_csv(request):
        months = [msgspec.to_builtins(m) for m in found.months]
        text = exports.record_csv(code, months)
        return await _csv(request, actor, f"record-{code}", text, {"unit": code})
    return json_response(found)


@described(
    summary="A unit's efficiency record as CSV (one row per closed month)",
    roles=("center", "unit"),
    query=RecordQuery,
    answer=str,
    media_type=CSV,
    errors=(404, 422, 503),
)
async def unit_record_csv(request: Request) -> Response:
    return await unit_record(request)


# ---- spot checks ---------------------------------------------------------------------------


@described(
    summary="Draw the week's spot checks: per unit, stratified by category, seeded",
    roles=("center",),
    query=DrawQuery,
    answer=Anything,
    status=201,
    errors=(409, 422, 503),
)
async def draw(request: Request) -> Response:
    actor = authorize(request, "center")
    query = read_query(request, DrawQuery)
    reports = _reports(request)
    try:
        seed, ids = await reports.draw(query.week, query.size, query.seed, actor.label())
    except periods.PeriodError as exc:
        raise _period_error("week", exc) from None
    except store.Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    checks = await store.spot_checks(ledger_of(request).engine, week=query.week)
    return json_response({"week": query.week, "seed": seed, "drawn": ids, "checks": checks}, 201)


async def _checks(request: Request, actor: Actor, query: SpotCheckQuery) -> list[dict[str, Any]]:
    if query.week is not None:  # a week the year has (2026-W54 is none): as the circular
        try:
            periods.week(query.week, components(request).city.zone)
        except periods.PeriodError as exc:
            raise _period_error("week", exc) from None
    unit = None  # the center, asking for no unit: every unit's
    if actor.kind == "unit" or query.unit is not None:
        [unit] = units_in_view(components(request), actor, query.unit)
    return await store.spot_checks(
        ledger_of(request).engine, week=query.week, unit=unit, with_outcome=actor.kind == "unit"
    )


@described(
    summary="Spot checks by week and unit, with what the callback needs",
    roles=("center", "unit"),
    query=SpotCheckQuery,
    answer=list[dict[str, Any]],
    errors=(422, 503),
    alternatives=(CSV,),
)
async def spot_checks(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    query = read_query(request, SpotCheckQuery)
    checks = await _checks(request, actor, query)
    if _wants_csv(request):
        text = exports.spot_checks_csv(checks)
        name = f"spotchecks-{query.week or 'all'}"
        return await _csv(request, actor, name, text, msgspec.to_builtins(query))
    return json_response(checks)


@described(
    summary="Spot checks as CSV",
    roles=("center", "unit"),
    query=SpotCheckQuery,
    answer=str,
    media_type=CSV,
    errors=(422, 503),
)
async def spot_checks_csv(request: Request) -> Response:
    return await spot_checks(request)


@described(
    summary="Record a callback's outcome; not_fixed reopens the request with a notice",
    roles=("center",),
    body=Outcome,
    answer=Anything,
    errors=(404, 409, 503),
)
async def spot_check_outcome(request: Request) -> Response:
    actor = authorize(request, "center")
    body = await read_body(request, Outcome)
    text_id = request.path_params["check_id"]
    # A row id: ASCII digits within SQL's 64-bit integer; anything else names no check.
    check_id = int(text_id) if text_id.isascii() and text_id.isdigit() else -1
    engine = ledger_of(request).engine
    found = await store.spot_checks(engine, check_id=check_id) if 0 < check_id < 2**63 else []
    if not found:
        raise ApiError(404, "not_found", f"no spot check {text_id[:40]}")
    check = found[0]
    now = time.time()
    if not await store.claim_outcome(engine, check_id, body.outcome, body.note, actor.label(), now):
        raise ApiError(
            409, "conflict", f"spot check {check_id} has its outcome: {check['outcome']}"
        )
    answer: dict[str, Any] = {"reopened": False, "notice": None}
    text = f"spot check {check_id}: {body.outcome}" + (f". {body.note}" if body.note else "")
    center, request_id = components(request).center, str(check["request_id"])
    if body.outcome == "not_fixed":
        try:
            await center.reopen(request_id, text, actor)
        except CenterError as exc:
            if exc.status not in (404, 409):
                await store.release_outcome(engine, check_id, actor.label())
                raise ApiError(exc.status, exc.code, exc.message, exc.fields) from None
            # Reopened or closed meanwhile, or gone from the live state: the outcome stands.
            answer["refused"] = {"code": exc.code, "message": exc.message}
        except BaseException:
            await store.release_outcome(engine, check_id, actor.label())
            raise
        else:
            answer["reopened"] = True
            answer["notice"] = await components(request).notices.issue_recheck(request_id)
    else:
        # Gone from the live state: the outcome is in the spot check all the same.
        with contextlib.suppress(CenterError):
            await center.note(request_id, text, actor)
    answer["check"] = (await store.spot_checks(engine, check_id=check_id))[0]
    return json_response(answer)


async def _circular(request: Request, actor: Actor, week: str) -> Circular:
    try:
        return await _reports(request).circular(week, _own_units(actor))
    except periods.PeriodError as exc:
        raise _period_error("week", exc) from None


@described(
    summary="The weekly circular: units ranked by spot-check pass rate",
    roles=("center", "unit"),
    query=CircularQuery,
    answer=Circular,
    errors=(422, 503),
    alternatives=(CSV,),
)
async def circular(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    query = read_query(request, CircularQuery)
    found = await _circular(request, actor, query.week)
    if _wants_csv(request):
        rows = [msgspec.to_builtins(r) for r in found.units]
        text = exports.circular_csv(found.week, rows)
        return await _csv(request, actor, f"circular-{found.week}", text, {"week": query.week})
    return json_response(found)


@described(
    summary="The weekly circular as CSV",
    roles=("center", "unit"),
    query=CircularQuery,
    answer=str,
    media_type=CSV,
    errors=(422, 503),
)
async def circular_csv(request: Request) -> Response:
    return await circular(request)


@described(
    summary="The weekly circular's chart: pass rate per unit (SVG)",
    roles=("center", "unit"),
    query=CircularQuery,
    answer=str,
    media_type=SVG,
    errors=(422, 503),
)
async def circular_chart(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    query = read_query(request, CircularQuery)
    found = await _circular(request, actor, query.week)
    items = [
        (
            row.name_zh if query.lang == "zh" else row.name_en,
            None if row.pass_rate is None else 100.0 * row.pass_rate,
        )
        for row in found.units
    ]
    title = "暗访满意率 %" if query.lang == "zh" else "Spot-check pass rate %"
    return _svg(charts.bars(f"{title} · {found.week}", items))


# ---- the fortnightly report ----------------------------------------------------------------


@described(
    summary="The fortnightly coordination report: disputes, overdue, repeats, notices",
    roles=("center", "unit"),
    query=FortnightQuery,
    answer=FortnightReport,
    errors=(422, 503),
    alternatives=(CSV,),
)
async def fortnight(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    query = read_query(request, FortnightQuery)
    # A desk's report is computed from its own unit's requests (not filtered afterwards): a
    # repeat location or a category it shares with another unit shows it none of theirs.
    unit = actor.unit if actor.kind == "unit" else None
    try:
        found = await _reports(request).fortnight(query.from_, unit)
    except periods.PeriodError as exc:
        raise _period_error("from", exc) from None
    if _wants_csv(request):
        text = exports.fortnight_csv(found)
        name = f"fortnight-{query.from_}"
        return await _csv(request, actor, name, text, {"from": query.from_})
    return json_response(found)


@described(
    summary="The fortnightly coordination report as CSV (a section column)",
    roles=("center", "unit"),
    query=FortnightQuery,
    answer=str,
    media_type=CSV,
    errors=(422, 503),
)
async def fortnight_csv(request: Request) -> Response:
    return await fortnight(request)


def report_routes() -> list[Route]:
    prefix = "/api/v1"
    return [
        Route(f"{prefix}/reports/evaluation", evaluation),
        Route(f"{prefix}/reports/evaluation.csv", evaluation_csv),
        Route(f"{prefix}/reports/evaluation.svg", evaluation_chart),
        Route(f"{prefix}/reports/evaluation/{{month}}/close", close_month, methods=["POST"]),
        Route(f"{prefix}/units/{{code}}/record", unit_record),
        Route(f"{prefix}/units/{{code}}/record.csv", unit_record_csv),
        Route(f"{prefix}/spotchecks/draw", draw, methods=["POST"]),
        Route(f"{prefix}/spotchecks", spot_checks),
        Route(f"{prefix}/spotchecks.csv", spot_checks_csv),
        Route(f"{prefix}/spotchecks/{{check_id}}/outcome", spot_check_outcome, methods=["POST"]),
        Route(f"{prefix}/reports/spotchecks", circular),
        Route(f"{prefix}/reports/spotchecks.csv", circular_csv),
        Route(f"{prefix}/reports/spotchecks.svg", circular_chart),
        Route(f"{prefix}/reports/fortnight", fortnight),
        Route(f"{prefix}/reports/fortnight.csv", fortnight_csv),
    ]
