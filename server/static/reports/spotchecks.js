/* Weekly spot checks (暗访): draw the week's sample, record each callback's outcome
 * (not_fixed reopens the request with a notice to its unit), and the circular ranking units
 * by pass rate. ?week=YYYY-Www picks the week. A unit desk sees its own checks once their
 * outcome is recorded. */
(function () {
  "use strict";

  Page.texts({
    zh: {
      title: "每周暗访通报", week: "周", csv_circular: "导出通报 CSV", csv_checks: "导出回访清单 CSV",
      size: "每单位抽取", seed: "随机种子（可选）", draw: "抽取本周样本", circular: "各单位暗访满意率排名",
      checks: "回访清单", rank: "排名", unit: "单位", drawn: "抽取", checked: "已回访",
      satisfied: "满意", not_satisfied: "不满意", not_fixed: "问题未解决", unreachable: "联系不上",
      pass_rate: "满意率", request: "诉求", category: "类别", phone: "来电号码", address: "地点",
      description: "诉求内容", result: "处理结果", outcome: "回访结果", note: "备注", save: "保存",
      pending: "待回访", drew: "已抽取 ", drew_none: "本周没有可抽取的新诉求", saved: "已保存",
      reopened: "已重新交办并下发督办通知 ", seed_was: "，种子 ",
      empty_week: "这一周没有抽取暗访样本。",
    },
    en: {
      title: "Weekly spot checks", week: "Week", csv_circular: "Circular CSV", csv_checks: "Callbacks CSV",
      size: "Per unit", seed: "Seed (optional)", draw: "Draw this week's sample", circular: "Units by pass rate",
      checks: "Callbacks", rank: "Rank", unit: "Unit", drawn: "Drawn", checked: "Called",
      satisfied: "satisfied", not_satisfied: "not satisfied", not_fixed: "not fixed", unreachable: "unreachable",
      pass_rate: "Pass rate", request: "Request", category: "Category", phone: "Caller", address: "Place",
      description: "Request", result: "Result reported", outcome: "Outcome", note: "Note", save: "Save",
      pending: "to call", drew: "drawn: ", drew_none: "nothing new to draw this week", saved: "saved",
      reopened: "reopened, notice issued: ", seed_was: ", seed ",
      empty_week: "No sample was drawn for this week.",
    },
  });

  const R = window.Reports;
  const OUTCOMES = ["satisfied", "not_satisfied", "not_fixed", "unreachable"];
  const weekInput = document.getElementById("week");
  let names = {};

  function circularTable(found) {
    const heads = ["rank", "unit", "drawn", "checked", ...OUTCOMES, "pass_rate"]
      .map((key) => ({ text: Page.t(key), cls: key === "unit" ? "text" : null }));
    const rows = found.units.map((row) => [
      R.number(row.rank), { text: Page.lang === "zh" ? row.name_zh : row.name_en, cls: "text" },
      row.drawn, row.checked, row.satisfied, row.not_satisfied, row.not_fixed, row.unreachable,
      R.rate(row.pass_rate),
    ]);
    return rows.length ? R.table(heads, rows, (i) => (found.units[i].rank ? null : "unranked"))
      : Page.el("p", { class: "empty" }, Page.t("none"));
  }

  function outcomeCell(check) {
    if (check.outcome) {
      return { text: Page.t(check.outcome) + (check.outcome_by ? " · " + check.outcome_by : ""), cls: "text" };
    }
    if (!acts) return { text: Page.t("pending"), cls: "text" }; // a desk only reads
    const select = Page.el("select", { "aria-label": Page.t("outcome") },
      OUTCOMES.map((o) => Page.el("option", { value: o }, Page.t(o))));
    const note = Page.el("input", { type: "text", maxlength: "2000", "aria-label": Page.t("note") });
    const save = Page.el("button", { type: "button", onclick: () => record(check.id, select.value, note.value) },
      Page.t("save"));
    const td = Page.el("td", { class: "text note noprint" }, select, " ", note, " ", save);
    return td;
  }

  function checksTable(checks) {
    const heads = ["unit", "request", "category", "phone", "address", "description", "result", "outcome"]
      .map((key) => ({ text: Page.t(key), cls: "text" }));
    const rows = checks.map((c) => [
      { text: R.unitName(names, c.unit), cls: "text" }, { text: c.request_id, cls: "text" },
      { text: c.category || "", cls: "text" }, { text: c.caller_phone || "", cls: "text" },
      { text: c.address || "", cls: "text" }, { text: c.description || "", cls: "text" },
      { text: c.result || "", cls: "text" }, outcomeCell(c),
    ]);
    return rows.length ? R.table(heads, rows, (i) => (checks[i].outcome === "not_fixed" ? "flag" : null))
      : Page.el("p", { class: "empty" }, Page.t("none"));
  }

  async function show(week) {
    R.setParams({ week });
    weekInput.value = week;
    document.getElementById("period").textContent = week;
    const query = "?week=" + encodeURIComponent(week);
    document.getElementById("csv-circular").setAttribute("href", "/api/v1/reports/spotchecks.csv" + query);
    document.getElementById("csv-checks").setAttribute("href", "/api/v1/spotchecks.csv" + query);
    document.getElementById("chart").src = "/api/v1/reports/spotchecks.svg" + query + "&lang=" + Page.lang;
    try {
      const [found, checks] = await Promise.all([
        Page.api("GET", "/api/v1/reports/spotchecks" + query),
        Page.api("GET", "/api/v1/spotchecks" + query),
      ]);
      R.fill("circular", circularTable(found));
      R.fill("checks", checksTable(checks));
      const empty = !checks.length && found.units.every((row) => !row.drawn);
      if (empty && week < R.thisWeek()) R.offerCurrent(Page.t("empty_week"), R.thisWeek(), show);
      else R.status("");
    } catch (error) {
      R.fail(error);
    }
  }

  async function record(id, outcome, note) {
    try {
      const answer = await Page.api("POST", "/api/v1/spotchecks/" + id + "/outcome", { outcome, note });
      R.status(answer.reopened ? Page.t("reopened") + (answer.notice || "") : Page.t("saved"));
      await show(weekInput.value);
    } catch (error) {
      R.fail(error);
    }
  }

  async function draw(event) {
    event.preventDefault();
    const params = new URLSearchParams({ week: weekInput.value });
    const size = document.getElementById("size").value;
    const seed = document.getElementById("seed").value.trim();
    if (size) params.set("size", size);
    if (seed) params.set("seed", seed);
    try {
      const answer = await Page.api("POST", "/api/v1/spotchecks/draw?" + params.toString());
      R.status(answer.drawn.length ? Page.t("drew") + answer.drawn.length + Page.t("seed_was") + answer.seed
        : Page.t("drew_none"));
      await show(weekInput.value);
    } catch (error) {
      R.fail(error);
    }
  }

  async function loadNames() {
    try {
      for (const unit of await Page.api("GET", "/api/v1/units")) names[unit.code] = { zh: unit.name_zh, en: unit.name_en };
    } catch (error) {
      names = {};
    }
  }

  R.header();
  document.getElementById("pick").addEventListener("submit", (event) => {
    event.preventDefault();
    show(weekInput.value);
  });
  document.getElementById("draw").addEventListener("submit", draw);
  let acts = false;
  Promise.all([loadNames(), R.mayAct()]).then(([, may]) => {
    acts = may;
    document.getElementById("draw").hidden = !may; // the center draws; a desk only reads
    show(R.param("week") || R.lastWeek());
  });
})();
