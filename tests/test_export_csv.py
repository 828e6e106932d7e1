"""The ledger's CSV export is safe to open in a spreadsheet: no caller's text runs as a
formula, and Chinese text reads as UTF-8."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from server.ledger.queries import spreadsheet_safe
from tests.helpers import XIGONG, Api, auth, eventually


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("\n=1+1", "'\n=1+1"),
        ('＝HYPERLINK("http://x","y")', '\'＝HYPERLINK("http://x","y")'),  # full width
        ("＋1", "'＋1"),
        ("－1", "'－1"),
        ("＠SUM(A1)", "'＠SUM(A1)"),
        ("pipe burst = flooding", "pipe burst = flooding"),  # only the first character counts
        ("水管爆裂", "水管爆裂"),
        ("", ""),
        (-1.5, -1.5),  # numbers stay numbers: a coordinate west or south is not a formula
        (34.67, 34.67),
        (None, None),
    ],
)
def test_spreadsheet_safe_neutralises_text_that_starts_a_formula(value: Any, shown: Any) -> None:
    assert spreadsheet_safe(value) == shown


async def test_the_export_neutralises_formulas_in_callers_text(hubs) -> None:
    hub = hubs.start()
    api = Api(hub)
    hyperlink = '=HYPERLINK("http://x","y")'
    command = "+cmd|' /C calc'!A0"
    made = {
        hyperlink: (await api.request(*XIGONG, description=hyperlink))["id"],
        command: (await api.request(*XIGONG, description=command, address="@home"))["id"],
        "水管爆裂": (await api.request(*XIGONG, description="水管爆裂"))["id"],
    }
    center = auth("center")

    async def recorded() -> bool:
        response = await api.http.get("/api/v1/ledger/requests", headers=center)
        rows = response.json()
        return len(rows) == 3 and all(row["description"] for row in rows)

    await eventually(recorded)
    response = await api.http.get("/api/v1/ledger/export.csv", headers=center)
    assert response.status_code == 200
    assert response.content.startswith(b"\xef\xbb\xbf")  # UTF-8 byte order mark
    rows = {
        row["id"]: row for row in csv.DictReader(io.StringIO(response.content.decode("utf-8-sig")))
    }
    assert rows[made[hyperlink]]["description"] == "'" + hyperlink
    assert rows[made[command]]["description"] == "'" + command
    assert rows[made[command]]["address"] == "'@home"
    assert rows[made["水管爆裂"]]["description"] == "水管爆裂"
    for row in rows.values():
        assert float(row["lat"]) == XIGONG[0]  # numbers are written as numbers
    # The record says who took the callers' data out, when, and with which filters.
    await api.http.get("/api/v1/ledger/export.csv?unit=water", headers=center)
    trail = await api.http.get("/api/v1/audit?action=ledger_export", headers=auth("admin"))
    assert trail.status_code == 200, trail.text
    exports = trail.json()
    assert [e["by"] for e in exports] == ["center:bootstrap-center"] * 2
    assert exports[0]["detail"]["filters"]["unit"] == "water"  # newest first
    assert "unit" not in exports[1]["detail"]["filters"]
    assert exports[1]["detail"]["bytes"] == len(response.content)
    forbidden = await api.http.get("/api/v1/audit", headers=center)
    assert forbidden.status_code == 403
    await api.close()
