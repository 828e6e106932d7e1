/* A unit's efficiency record (效能档案): its frozen scorecard of every closed month, with the
 * figures computed now beside it where they differ (on request). ?unit=<code>. */
(function () {
  "use strict";

  Page.texts({
    zh: {
      title: "单位效能档案", unit: "单位", recompute: "对照重新计算", months: "逐月档案（已归档月份）",
      month: "月份", rank: "排名", score: "得分", requests: "诉求量", accept: "接单及时率",
      arrive: "到场及时率", resolve: "办结及时率", notices: "督办通知", non_responses: "未响应",
      disputes: "争议", promises: "承诺兑现/失约", spot: "暗访满意率", closed: "归档", now: "现算得分",
    },
    en: {
      title: "Efficiency record", unit: "Unit", recompute: "compare with a recomputation",
      months: "Month by month (closed months)", month: "Month", rank: "Rank", score: "Score",
      requests: "Requests", accept: "Accept on time", arrive: "Arrive on time", resolve: "Resolve on time",
      notices: "Notices", non_responses: "Non-responses", disputes: "Disputes", promises: "Promises kept/broken",
      spot: "Spot-check pass", closed: "Closed", now: "Score now",
    },
  });

  const R = window.Reports;
  const select = document.getElementById("unit");
  const recompute = document.getElementById("recompute");

  function render(found) {
    document.getElementById("who").textContent = Page.lang === "zh" ? found.name.zh : found.name.en;
    const keys = ["month", "rank", "score", "requests", "accept", "arrive", "resolve", "notices",
      "non_responses", "disputes", "promises", "spot", "closed", "now"];
    const rows = found.months.map((m) => {
      const f = m.figures;
      return [{ text: m.month, cls: "text" }, R.number(f.rank), R.number(f.score, 1), f.requests,
        R.rate(f.on_time.accept), R.rate(f.on_time.arrive), R.rate(f.on_time.resolve), f.notices.total,
        f.non_responses, f.disputes.raised, f.promises.kept + " / " + f.promises.broken,
        R.rate(f.spot_checks.pass_rate), { text: R.when(m.closed_at) + " · " + m.closed_by, cls: "text" },
        m.recomputed ? R.number(m.recomputed.score, 1) : ""];
    });
    R.fill("months", rows.length ? R.table(keys.map((k) => ({ text: Page.t(k), cls: k === "month" ? "text" : null })), rows,
      (i) => (found.months[i].recomputed ? "flag" : null)) : Page.el("p", { class: "empty" }, Page.t("none")));
  }

  async function show(unit) {
    R.setParams({ unit, recompute: recompute.checked ? "1" : null });
    select.querySelector("option.asked")?.remove();
    if (![...select.options].some((o) => o.value === unit)) {
      // Asked for a unit the list does not offer (another unit's, for a desk): the list
      // names what was asked, not a blank, beside the hub's answer; it cannot be picked.
      const known = allUnits.find((u) => u.code === unit);
      select.append(Page.el("option", { value: unit, class: "asked", disabled: "" },
        known ? (Page.lang === "zh" ? known.name_zh : known.name_en) : unit));
    }
    select.value = unit;
    const path = "/api/v1/units/" + encodeURIComponent(unit) + "/record";
    document.getElementById("csv").setAttribute("href", path + ".csv");
    const month = R.param("month") || R.lastMonth();
    const trend = document.getElementById("trend");
    trend.hidden = true; // shown with the unit's record only: never beside a refusal
    R.status(Page.t("loading"));
    try {
      render(await Page.api("GET", path + (recompute.checked ? "?recompute=true" : "")));
      trend.src = "/api/v1/reports/evaluation.svg?chart=trend&months=12&month=" +
        encodeURIComponent(month) + "&lang=" + Page.lang;
      trend.hidden = false;
      R.status("");
    } catch (error) {
      document.getElementById("who").textContent = "";
      R.fill("months", Page.el("p", { class: "empty" }, Page.t("none")));
      R.fail(error);
    }
  }

  let allUnits = [];

  async function start() {
    let session = null;
    try {
      session = await R.me();
      // A unit desk sees only its own unit's record: the list offers no other.
      allUnits = await Page.api("GET", "/api/v1/units");
      const units = allUnits.filter((u) => !session.unit || u.code === session.unit);
      select.replaceChildren(...units.map((u) => Page.el("option", { value: u.code },
        Page.lang === "zh" ? u.name_zh : u.name_en)));
    } catch (error) {
      R.fail(error);
      return;
    }
    recompute.checked = R.param("recompute") === "1";
    const own = session && session.unit;
    show(R.param("unit") || own || select.value);
  }

  R.header();
  document.getElementById("pick").addEventListener("submit", (event) => {
    event.preventDefault();
    show(select.value);
  });
  start();
})();
