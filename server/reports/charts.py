"""The reports' charts as SVG text, drawn on the server: bars per unit, a trend per unit
over months. Pure.

Why SVG from the server rather than a chart library in the page: the charts are two simple
kinds; SVG prints sharp at any size (the pages are printed and circulated); a page shows
one as ``<img src=...svg>`` under the strict Content-Security-Policy (an SVG image runs no
script, and these carry no ``<style>``: presentation attributes only); the same figures
the tables show are drawn by the same Python that computed them, so a test can read the
chart back; and there is no front-end dependency to vendor, pin and keep up.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape, quoteattr

FONT = "Noto Sans CJK SC, Microsoft YaHei, PingFang SC, sans-serif"
# Twelve colours that stay apart on paper and for the common colour blindnesses (Tableau 10
# with two more).
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#1b9e77",
    "#7570b3",
)
BAR = "#4e79a7"
GRID = "#d0d0d0"
INK = "#222222"


# A label's room: as wide as the widest label needs (units' English names run to 40-odd
# characters), within these bounds; a label beyond the upper one is shortened with "…" and
# kept whole in its tooltip.
LABEL_MIN, LABEL_MAX = 80, 420


def text_width(text: str, size: float = 12) -> float:
    """The width of ``text`` at ``size`` px, estimated without a font at hand: a wide (CJK)
    character is one em, any other about 0.62 em (Noto Sans's widest common Latin average,
    so a label is given a little more room than it needs rather than less)."""
    return sum(size if unicodedata.east_asian_width(c) in "WF" else 0.62 * size for c in text)


def fitted(text: str, room: float, size: float = 12) -> str:
    """``text`` if it fits in ``room`` px, else as much of it as fits, then "…"."""
    if text_width(text, size) <= room:
        return text
    while text and text_width(text + "…", size) > room:
        text = text[:-1]
    return text.rstrip() + "…"


def _label_room(labels: Sequence[str]) -> int:
    widest = max((text_width(label) for label in labels), default=0.0)
    return int(min(max(widest, LABEL_MIN), LABEL_MAX)) + 1


def _label(x: float, y: float, label: str, room: int, anchor: str = "start") -> str:
    """A label's text at (x, y), shortened to ``room``; when shortened, whole in a tooltip."""
    shown = fitted(label, room)
    tip = f"<title>{escape(label)}</title>" if shown != label else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{tip}{escape(shown)}</text>'


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-family={quoteattr(FONT)} '
        f'font-size="12" fill="{INK}">'
        f"<title>{escape(title)}</title>"
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>'
        f'<text x="8" y="18" font-size="14" font-weight="bold">{escape(title)}</text>'
        + "".join(body)
        + "</svg>"
    )


def bars(
    title: str,
    items: Sequence[tuple[str, float | None]],
    *,
    maximum: float = 100.0,
    decimals: int = 1,
) -> str:
    """A horizontal bar per item (label, value), in the order given; a None value is drawn
    as "–" with no bar. Values are clipped to ``[0, maximum]``."""
    room = _label_room([label for label, _ in items])
    label_w, bar_w, row_h, top = room + 14, 420, 22, 30
    width, height = label_w + bar_w + 70, top + row_h * max(1, len(items)) + 24
    body = []
    for tick in range(0, 5):
        x = label_w + bar_w * tick / 4
        body.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 20}" stroke="{GRID}"/>'
            f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle" font-size="10">'
            f"{maximum * tick / 4:g}</text>"
        )
    for i, (label, value) in enumerate(items):
        y = top + i * row_h
        body.append(_label(label_w - 6, y + 15, label, room, "end"))
        if value is None:
            body.append(f'<text x="{label_w + 4}" y="{y + 15}">–</text>')
            continue
        length = bar_w * min(max(value, 0.0), maximum) / maximum
        body.append(
            f'<rect x="{label_w}" y="{y + 3}" width="{length:.1f}" height="{row_h - 6}" '
            f'fill="{BAR}"><title>{escape(label)}: {value:.{decimals}f}</title></rect>'
            f'<text x="{label_w + length + 4:.1f}" y="{y + 15}">{value:.{decimals}f}</text>'
        )
    return _svg(width, height, title, body)


def trend(
    title: str,
    months: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    maximum: float = 100.0,
) -> str:
    """One line per series (label -> a value per month, None for a month without one: the
    line breaks there), months along the bottom, a legend on the right."""
    room = _label_room(list(series))
    left, plot_w, plot_h, top, legend_w = 40, 520, 240, 30, room + 42
    width = left + plot_w + legend_w
    height = top + plot_h + 40
    step = plot_w / max(1, len(months) - 1)

    def x(i: int) -> float:
        return left + (i * step if len(months) > 1 else plot_w / 2)

    def y(value: float) -> float:
        return top + plot_h * (1 - min(max(value, 0.0), maximum) / maximum)

    body = []
    for tick in range(0, 5):
        level = maximum * tick / 4
        body.append(
            f'<line x1="{left}" y1="{y(level):.1f}" x2="{left + plot_w}" y2="{y(level):.1f}" '
            f'stroke="{GRID}"/><text x="{left - 4}" y="{y(level) + 4:.1f}" text-anchor="end" '
            f'font-size="10">{level:g}</text>'
        )
    for i, month in enumerate(months):
        body.append(
            f'<text x="{x(i):.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
            f'font-size="10">{escape(month)}</text>'
        )
    for n, (label, values) in enumerate(series.items()):
        colour = PALETTE[n % len(PALETTE)]
        for run in _runs(values):
            points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in run)
            if len(run) > 1:
                body.append(
                    f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
                )
            for i, v in run:
                body.append(
                    f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}">'
                    f"<title>{escape(label)} {escape(months[i])}: {v:.1f}</title></circle>"
                )
        ly = top + 6 + n * 18
        body.append(
            f'<rect x="{left + plot_w + 16}" y="{ly - 9}" width="12" height="12" fill="{colour}"/>'
            + _label(left + plot_w + 34, ly + 1, label, room)
        )
    return _svg(width, max(height, top + 18 * len(series) + 20), title, body)


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """Stretches of consecutive months with a value."""
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for i, value in enumerate(values):
        if value is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append((i, value))
    if current:
        runs.append(current)
    return runs
