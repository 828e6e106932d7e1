"""The end-of-run report: from the hub's request timelines to JSON, PNG plots and one HTML
page that opens offline (the plots are embedded as data URIs).

Files written to the output folder:

* ``summary.json``  the run's parameters and :func:`simulations.stats.summarize`
* ``requests.json`` one record per request (times in simulated seconds, limit verdicts)
* ``samples.json``  the once-a-second samples of the run (load over time)
* ``times.png``, ``limits.png``, ``units.png``, ``load.png`` and ``report.html``
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
from matplotlib.figure import Figure  # noqa: E402

from server.city import City  # noqa: E402
from server.reports.scorecard import LIMITS, VERDICTS, spread  # noqa: E402
from simulations.api import ApiError, HubApi  # noqa: E402
from simulations.run import SimRun  # noqa: E402
from simulations.stats import Outcome, outcome_of, state_from_timeline, summarize  # noqa: E402

STATE_COLOURS = {"met": "#2e7d32", "missed": "#c62828", "pending": "#9e9e9e", "void": "#e0e0e0"}
LIMIT_COLOURS = {"accept": "#1565c0", "arrive": "#ef6c00", "resolve": "#6a1b9a"}


@dataclass(frozen=True, slots=True)
class ReportFiles:
    folder: Path
    html: Path
    summary: Path
    requests: Path
    images: tuple[Path, ...]


# ---- collecting ------------------------------------------------------------------------------


async def fetch_details(
    api: HubApi, ids: Sequence[str], concurrency: int = 16
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every request's detail, and the ids the hub did not know.

    A request's fields and timeline are two reads on the hub; a step landing between them
    makes them disagree for a moment, so a disagreeing pair is read again (a few times)."""
    gate = asyncio.Semaphore(concurrency)
    missing: list[str] = []

    async def one(request_id: str) -> dict[str, Any] | None:
        async with gate:
            detail: dict[str, Any] | None = None
            for _ in range(4):
                try:
                    detail = await api.get_request(request_id)
                except ApiError as exc:
                    if exc.status == 404:
                        missing.append(request_id)
                        return None
                    raise
                if state_from_timeline(detail["timeline"]) == detail["state"]:
                    break
                await asyncio.sleep(0.1)
            return detail

    found = await asyncio.gather(*(one(i) for i in ids))
    return [d for d in found if d is not None], missing


async def collect_and_write(api: HubApi, city: City, run: SimRun, out_dir: Path) -> ReportFiles:
    details, missing = await fetch_details(api, [r.id for r in run.requests])
    return write_report(run, details, city, out_dir, missing=missing)


# ---- writing ---------------------------------------------------------------------------------


def write_report(
    run: SimRun,
    details: Sequence[Mapping[str, Any]],
    city: City,
    out_dir: Path,
    *,
    missing: Sequence[str] = (),
    now: float | None = None,
) -> ReportFiles:
    # Judged as of the end of the run: after it, no squad works, so a limit or promise
    # running out while the report is made says nothing about the squads.
    now = (run.ended_at or time.time()) if now is None else now
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = [outcome_of(d, run.speed, now) for d in details]
    summary = summarize(outcomes, city)
    summary["missing"] = list(missing)
    document = {"run": run.to_json(), "made_at": now, "summary": summary}
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(document, ensure_ascii=False, indent=2))
    requests_path = out_dir / "requests.json"
    made = {r.id: r for r in run.requests}
    requests_path.write_text(
        json.dumps(
            [o.to_json() | {"sim_t": made[o.id].sim_t if o.id in made else None} for o in outcomes],
            ensure_ascii=False,
            indent=1,
        )
    )
    (out_dir / "samples.json").write_text(json.dumps([asdict(s) for s in run.samples]))
    images = _write_plots(run, outcomes, summary, out_dir)
    html_path = out_dir / "report.html"
    html_path.write_text(render_html(run, summary, city, images), encoding="utf-8")
    return ReportFiles(out_dir, html_path, summary_path, requests_path, tuple(images))


# ---- plots -----------------------------------------------------------------------------------


def _write_plots(
    run: SimRun, outcomes: Sequence[Outcome], summary: Mapping[str, Any], out_dir: Path
) -> list[Path]:
    plots = {
        "times.png": _times_figure(outcomes),
        "limits.png": _limits_figure(summary),
        "units.png": _units_figure(summary),
        "load.png": _load_figure(run),
    }
    paths = []
    for name, figure in plots.items():
        path = out_dir / name
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)
    return paths


def _times_figure(outcomes: Sequence[Outcome]) -> Figure:
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, name in zip(axes, LIMITS, strict=True):
        minutes = [t / 60 for o in outcomes if o.verdicts and (t := o.took[name]) is not None]
        if minutes:
            ax.hist(
                minutes,
                bins=min(30, max(5, len(minutes) // 3)),
                color=LIMIT_COLOURS[name],
                alpha=0.8,
            )
            quantiles = spread(minutes)  # the same quantiles as the tables
            for key, style in (("p50", "-"), ("p90", "--")):
                value = float(getattr(quantiles, key) or 0.0)
                ax.axvline(
                    value,
                    color="black",
                    linestyle=style,
                    linewidth=1,
                    label=f"{key} {value:.1f} min",
                )
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "none yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"time to {name} (n={len(minutes)})")
        ax.set_xlabel("simulated minutes from receipt")
    axes[0].set_ylabel("requests")
    figure.tight_layout()
    return figure


def _limits_figure(summary: Mapping[str, Any]) -> Figure:
    figure, ax = plt.subplots(figsize=(7, 2.8))
    left = [0.0] * len(LIMITS)
    for verdict in VERDICTS:
        values = [summary["limits"][name].get(verdict, 0) for name in LIMITS]
        ax.barh(list(LIMITS), values, left=left, color=STATE_COLOURS[verdict], label=verdict)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_xlabel("linkage requests")
    ax.set_title("limits met / missed / pending / void (cancelled in time)")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return figure


def _units_figure(summary: Mapping[str, Any]) -> Figure:
    rows = summary["per_unit"]
    figure, ax = plt.subplots(figsize=(8, 0.45 * max(4, len(rows)) + 1))
    height = 0.27
    for i, name in enumerate(LIMITS):
        values = [100 * r["on_time"][name] if r["on_time"][name] is not None else 0.0 for r in rows]
        positions = [k + (i - 1) * height for k in range(len(rows))]
        ax.barh(positions, values, height=height, color=LIMIT_COLOURS[name], label=name)
    ax.set_yticks(range(len(rows)), [r["unit"] for r in rows])
    ax.set_xlim(0, 100)
    ax.set_xlabel("on time, % of decided requests")
    ax.set_title("on-time rate per unit")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return figure


def _load_figure(run: SimRun) -> Figure:
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    hours = [run.start_hour + s.sim_t / 3600 for s in run.samples]
    if run.samples:
        top.plot(hours, [s.made for s in run.samples], label="made")
        top.plot(hours, [s.offered for s in run.samples], label="offered")
        top.plot(hours, [s.resolved for s in run.samples], label="resolved")
        bottom.plot(hours, [s.open for s in run.samples], label="open")
        bottom.plot(hours, [s.waiting for s in run.samples], label="waiting for a squad")
        bottom.plot(hours, [s.squads_busy for s in run.samples], label="squads busy")
    top.set_ylabel("requests (cumulative)")
    bottom.set_ylabel("now")
    bottom.set_xlabel("simulated hour of day")
    for ax in (top, bottom):
        if run.samples:  # no line, no legend
            ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    top.set_title("load over the run")
    figure.tight_layout()
    return figure


# ---- HTML ------------------------------------------------------------------------------------


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def fmt_rate(rate: float | None) -> str:
    return "–" if rate is None else f"{100 * rate:.0f}%"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], table_id: str = "") -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    head = f"<thead><tr>{cells}</tr></thead>" if headers else ""
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}>{head}<tbody>{body}</tbody></table>"


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _limits_table(summary: Mapping[str, Any], city: City) -> str:
    rows = []
    for name in LIMITS:
        c = summary["limits"][name]
        t = summary["times_s"][name]
        rows.append(
            [
                name,
                c["met"],
                c["missed"],
                c["pending"],
                c["void"],
                fmt_rate(summary["on_time"][name]),
                t["count"],
                fmt_duration(t["p50"]),
                fmt_duration(t["p90"]),
                fmt_duration(t["max"]),
            ]
        )
    return _table(
        [
            "limit 时限",
            "met 达标",
            "missed 超时",
            "pending 未到期",
            "void 已撤销",
            "on time 及时率",
            "n",
            "p50",
            "p90",
            "max",
        ],
        rows,
    )


def _units_table(summary: Mapping[str, Any]) -> str:
    rows = []
    for r in summary["per_unit"]:
        times = r["times"]
        rows.append(
            [
                r["unit"],
                r["name_zh"],
                r["rank"] if r["rank"] is not None else "–",
                "–" if r["score"] is None else f"{r['score']:.1f}",
                r["requests"],
                r["resolved"],
                r["open"],
                *(fmt_rate(r["on_time"][name]) for name in LIMITS),
                *(
                    f"{fmt_duration(times[n]['p50'])} / {fmt_duration(times[n]['p90'])}"
                    for n in LIMITS
                ),
                r["non_responses"],
                r["notices"]["total"],
                r["disputes"]["raised"],
                r["promises"]["made"],
                r["promises"]["broken"],
            ]
        )
    return _table(
        [
            "unit",
            "单位",
            "rank 排名",
            "score 得分",
            "requests",
            "resolved",
            "open",
            "accept on time",
            "arrive on time",
            "resolve on time",
            "accept p50/p90",
            "arrive p50/p90",
            "resolve p50/p90",
            "non-responses",
            "notices",
            "disputes",
            "promises",
            "broken promises",
        ],
        rows,
        table_id="per-unit",
    )


def _notices_table(summary: Mapping[str, Any]) -> str:
    notices = summary["notices"]
    levels = sorted(notices["by_level"], key=int)
    rows: list[list[object]] = [[unit, n] for unit, n in notices["by_unit"].items()]
    kinds = _table(["kind 类别", "notices"], list(notices["by_kind"].items()))
    level_rows = [[f"level {level}", notices["by_level"][level]] for level in levels]
    return (
        _table(["unit 单位", "notices 督办通知单"], rows, table_id="notices")
        + kinds
        + _table(["level 级别", "notices"], level_rows)
    )


def render_html(run: SimRun, summary: Mapping[str, Any], city: City, images: Sequence[Path]) -> str:
    info = run.to_json()
    facts = [
        ("speed 倍速", f"×{run.speed:g}"),
        ("simulated time 模拟时长", fmt_duration(run.sim_duration_s)),
        ("real time 实际时长", fmt_duration(run.ended_at - run.started_at)),
        ("calls per simulated hour 每小时来电", f"{run.rate_per_hour:g}"),
        ("squads 分队", run.squads),
        ("requests 诉求", summary["requests"]),
        ("resolved 办结", summary["resolved"]),
        ("open 未结", summary["open"]),
        ("handed to 110/119/120 转警", summary["transferred"]),
        ("non-responses 未响应", summary["non_responses"]),
        ("disputes 管辖争议", summary["disputes"]),
        ("deferrals 承诺办结", summary["deferrals"]),
        ("supervision notices 督办通知", summary["notices"]["total"]),
        (
            "rulings upheld / reassigned 裁决(维持/改派)",
            f"{summary['rulings'].get('upheld', 0)} / {summary['rulings'].get('reassigned', 0)}",
        ),
        ("cancelled 撤销", sum(summary["cancelled"].values())),
        (
            "promises kept / broken 承诺兑现/失约",
            f"{summary['promises']['kept']} / {summary['promises']['broken']}",
        ),
        (
            "arrivals by geofence / by button 到场(定位/按键)",
            f"{summary['arrivals']['by_geofence']} / {summary['arrivals']['by_command']}",
        ),
        ("signal losses 信号中断", info["squad_actions"]["signal_losses"]),
        ("seed", run.seed if run.seed is not None else "random"),
    ]
    states = _table(["state 状态", "requests"], list(summary["by_state"].items()))
    problems = ""
    if summary["inconsistent"] or summary["missing"]:
        problems = (
            f"<p class=warn>state differs from timeline: "
            f"{html.escape(', '.join(summary['inconsistent']) or 'none')}; "
            f"missing: {html.escape(', '.join(summary['missing']) or 'none')}</p>"
        )
    pictures = "".join(_image(p) for p in images)
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>{html.escape(city.name_zh)} 模拟运行报告 · simulation report</title>
<style>
body {{ font: 14px/1.45 system-ui, "Noto Sans CJK SC", sans-serif; margin: 2em auto;
       max-width: 1300px; color: #222; padding: 0 1em; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f0f3f7; }} td:first-child, th:first-child {{ text-align: left; }}
#per-unit td:nth-child(2) {{ text-align: left; white-space: nowrap; }}
#per-unit td {{ white-space: nowrap; }}
img {{ max-width: 100%; display: block; margin: 1em 0; }}
.warn {{ color: #c62828; font-weight: bold; }} small {{ color: #666; }}
</style></head><body>
<h1>{html.escape(city.name_zh)} 城市应急联动 · 模拟运行报告
<small>{html.escape(city.name_en)} city linkage simulation report</small></h1>
<p><small>times are simulated (real durations × speed); limits are the categories' limits,
counted from receipt. 时间均为模拟时间，时限按受理时起算。</small></p>
{problems}
<h2>Run 运行概况</h2>{_table([], facts)}
<h2>Limits 时限达标</h2>{_limits_table(summary, city)}
<h2>Per unit 各单位</h2>{_units_table(summary)}
<h2>Supervision notices 督办通知单</h2>{_notices_table(summary)}
<h2>States 状态</h2>{states}
<h2>Plots 图表</h2>{pictures}
</body></html>
"""
