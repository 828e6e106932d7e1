"""The reports as CSV: one row per unit, spot check or item, for spreadsheet programs. The
ledger export's rules (:mod:`server.ledger.queries`): UTF-8 with a byte order mark, a header
row, text a spreadsheet would run as a formula made harmless (citizens' addresses and notes
are text from outside). Pure.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from server.deadlines import NOTICE_KINDS
from server.ledger.queries import CSV_BOM, spreadsheet_safe
from server.reports.fortnight import FortnightReport
from server.reports.scorecard import LIMITS, SPOT_OUTCOMES, Scorecard


def csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV with a BOM and a header row; text cells :func:`spreadsheet_safe`, floats to 4
    decimals, None as an empty cell."""
    out = io.StringIO()
    writer = csv.DictWriter(
        out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    return CSV_BOM + out.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return round(value, 4)
    return spreadsheet_safe(value)


# ---- the monthly evaluation -----------------------------------------------------------------


def card_row(card: Scorecard) -> dict[str, Any]:
    """A scorecard flattened into CSV columns (:func:`card_columns`)."""
    row: dict[str, Any] = {
        "rank": card.rank,
        "unit": card.unit,
        "score": card.score,
        "score_change": card.score_change,
        "rank_change": card.rank_change,
        "requests": card.requests,
        "resolved": card.resolved,
        "open": card.open,
        "cancelled": card.cancelled,
        "reopened": card.reopened,
        "non_responses": card.non_responses,
        "notices": card.notices.total,
        "disputes_raised": card.disputes.raised,
        "disputes_upheld": card.disputes.upheld,
        "disputes_reassigned": card.disputes.reassigned,
        "disputes_open": card.disputes.open,
        "promises_made": card.promises.made,
        "promises_kept": card.promises.kept,
        "promises_broken": card.promises.broken,
        "spot_checks": card.spot_checks.checked,
        "spot_check_pass_rate": card.spot_checks.pass_rate,
    }
    for name in LIMITS:
        row[f"{name}_on_time"] = card.on_time.get(name)
        spread = card.times.get(name)
        row[f"{name}_p50_s"] = spread.p50 if spread else None
        row[f"{name}_p90_s"] = spread.p90 if spread else None
        for verdict, n in card.limits.get(name, {}).items():
            row[f"{name}_{verdict}"] = n
    for kind in NOTICE_KINDS:
        row[f"notices_{kind}"] = card.notices.by_kind.get(kind, 0)
    for level, n in card.notices.by_level.items():
        row[f"notices_level_{level}"] = n
    for outcome in SPOT_OUTCOMES:
        row[f"spot_{outcome}"] = getattr(card.spot_checks, outcome)
    return row


def card_columns(cards: Iterable[Scorecard]) -> list[str]:
    """The columns of :func:`card_row` for these cards (one per notice level seen)."""
    levels = sorted({int(level) for c in cards for level in c.notices.by_level}) or [1]
    return [
        "rank",
        "unit",
        "score",
        "score_change",
        "rank_change",
        "requests",
        "resolved",
        "open",
        "cancelled",
        "reopened",
        *(f"{name}_on_time" for name in LIMITS),
        *(f"{name}_{p}_s" for name in LIMITS for p in ("p50", "p90")),
        *(f"{name}_{v}" for name in LIMITS for v in ("met", "missed", "pending", "void")),
        "non_responses",
        "notices",
        *(f"notices_{kind}" for kind in NOTICE_KINDS),
        *(f"notices_level_{level}" for level in range(1, max(levels) + 1)),
        "disputes_raised",
        "disputes_upheld",
        "disputes_reassigned",
        "disputes_open",
        "promises_made",
        "promises_kept",
        "promises_broken",
        "spot_checks",
        *(f"spot_{outcome}" for outcome in SPOT_OUTCOMES),
        "spot_check_pass_rate",
    ]


def evaluation_csv(
    month: str,
    cards: Sequence[Scorecard],
    names: Mapping[str, tuple[str, str]],
    recomputed: Mapping[str, Scorecard],
    closed: bool,
) -> str:
    """The month's evaluation, one row per unit; ``record`` says whether the row is the
    frozen efficiency record (closed month) or computed now; a closed month's unit whose
    figures computed now differ has its recomputed score beside it."""
    columns = [
        "month",
        "record",
        "name_zh",
        "name_en",
        *card_columns(cards),
        "recomputed_score",
        "recomputed_rank",
    ]
    rows = []
    for card in cards:
        again = recomputed.get(card.unit)
        name_zh, name_en = names.get(card.unit, (card.unit, card.unit))
        rows.append(
            {
                "month": month,
                "record": "closed" if closed else "live",
                "name_zh": name_zh,
                "name_en": name_en,
                **card_row(card),
                "recomputed_score": again.score if again else None,
                "recomputed_rank": again.rank if again else None,
            }
        )
    return csv_text(columns, rows)


def record_csv(unit: str, months: Sequence[Mapping[str, Any]]) -> str:
    """A unit's efficiency record, one row per closed month."""
    cards = [msgspec.convert(m["figures"], Scorecard) for m in months]
    columns = ["month", "closed_at", "closed_by", *card_columns(cards), "recomputed_score"]
    rows = [
        {
            "month": m["month"],
            "closed_at": m["closed_at"],
            "closed_by": m["closed_by"],
            **card_row(card),
            "recomputed_score": (m.get("recomputed") or {}).get("score"),
        }
        for m, card in zip(months, cards, strict=True)
    ]
    return csv_text(columns, rows)


# ---- spot checks ----------------------------------------------------------------------------

SPOT_CHECK_COLUMNS = (
    "id",
    "week",
    "unit",
    "request_id",
    "category",
    "drawn_at",
    "drawn_by",
    "outcome",
    "note",
    "outcome_at",
    "outcome_by",
    "caller_phone",
    "address",
    "description",
    "result",
)


def spot_checks_csv(checks: Iterable[Mapping[str, Any]]) -> str:
    return csv_text(SPOT_CHECK_COLUMNS, checks)


CIRCULAR_COLUMNS = (
    "week",
    "rank",
    "unit",
    "name_zh",
    "name_en",
    "drawn",
    "checked",
    *SPOT_OUTCOMES,
    "pass_rate",
)


def circular_csv(week: str, ranking: Iterable[Mapping[str, Any]]) -> str:
    return csv_text(CIRCULAR_COLUMNS, ({"week": week, **row} for row in ranking))


# ---- the fortnightly report -----------------------------------------------------------------

FORTNIGHT_COLUMNS = (
    "section",
    "id",
    "unit",
    "category",
    "district",
    "count",
    "share",
    "chronic",
    "level",
    "kind",
    "at",
    "detail",
    "link",
)


def fortnight_csv(report: FortnightReport) -> str:
    """The report's sections one after the other, one row per item; ``section`` names it
    (``dispute``, ``overdue_unit``, ``overdue_category``, ``repeat``, ``notice``)."""
    rows: list[dict[str, Any]] = []
    for d in report.disputes:
        rows.append(
            {
                "section": "dispute",
                "id": d.id,
                "unit": d.unit,
                "category": d.category,
                "district": d.district,
                "at": d.disputed_at,
                "detail": d.reason,
                "link": d.link,
            }
        )
    for section, items in (
        ("overdue_unit", report.overdue_units),
        ("overdue_category", report.overdue_categories),
    ):
        for o in items:
            rows.append(
                {
                    "section": section,
                    "unit" if section == "overdue_unit" else "category": o.key,
                    "count": o.missed,
                    "share": o.share,
                    "chronic": "yes" if o.chronic else "no",
                    "detail": f"{o.missed}/{o.requests} missed a limit"
                    + (f"; overdue now: {' '.join(o.overdue_now)}" if o.overdue_now else ""),
                }
            )
    for r in report.repeats:
        rows.append(
            {
                "section": "repeat",
                "id": " ".join(item.id for item in r.requests),
                "category": r.category,
                "count": r.count,
                "at": r.first_at,
                "detail": f"{r.lat:.5f},{r.lon:.5f} {r.address}".strip()
                + (f"; {r.others} more of other units" if r.others else ""),
                "link": r.requests[0].link if r.requests else "",
            }
        )
    for n in report.notices:
        rows.append(
            {
                "section": "notice",
                "id": n.id,
                "unit": n.unit,
                "level": n.level,
                "kind": n.kind,
                "at": n.issued_at,
                "detail": n.request,
                "link": n.link,
            }
        )
    return csv_text(FORTNIGHT_COLUMNS, rows)
