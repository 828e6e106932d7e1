/* The monthly evaluation (月度考核): every unit's scorecard, score and rank, from
 * GET /api/v1/reports/evaluation?month=; charts from .../evaluation.svg; the center closes
 * the month into the efficiency records. ?month=YYYY-MM picks the month. */
(function () {
  "use strict";

  Page.texts({
    zh: {
      title: "月度考核通报", month: "月份", close_month: "归档本月（效能档案）", ranking: "各单位得分与排名",
      recomputed: "归档后重新计算（与档案不同，仅供参考）", weights: "评分权重",
      empty_month: "这个月台账上没有诉求。",
      legend: "及时率 = 按时完成 / 已到期；时间为受理起算的中位数 / 90%分位；通知 = 督办通知单；争议 = 提出 / 维持 / 改派；承诺 = 兑现 / 失约；暗访 = 满意率（联系上的回访）。",
      rank: "排名", unit: "单位", score: "得分", score_change: "得分变化", rank_change: "名次变化",
      requests: "诉求量", resolved: "办结", open: "未结", accept: "接单及时率", arrive: "到场及时率",
      resolve: "办结及时率", accept_t: "接单用时", arrive_t: "到场用时", resolve_t: "办结用时",
      notices: "督办通知", non_responses: "未响应", disputes: "争议", promises: "承诺", spot: "暗访满意率",
      closed_by: "已归档：", live: "未归档：按当前台账计算，截至 ", confirm_close: "归档后本月效能档案不再改变。确定归档？",
      closed_ok: "已归档", record: "效能档案",
      weight_names: { accept_on_time: "接单及时", arrive_on_time: "到场及时", resolve_on_time: "办结及时",
        spot_check_pass: "暗访满意", promises_kept: "承诺兑现", responsiveness: "响应", notice_free: "少督办",
        disputes_founded: "争议成立" },
    },
    en: {
      title: "Monthly evaluation", month: "Month", close_month: "Close the month (efficiency records)",
      ranking: "Scores and ranking", recomputed: "Computed again since the month was closed (differs from the record; for information)",
      weights: "Weights of the score",
      legend: "On time = met / decided; times from receipt, median / 90th percentile; notices = supervision notices; disputes = raised / upheld / reassigned; promises = kept / broken; spot checks = satisfied of those reached.",
      rank: "Rank", unit: "Unit", score: "Score", score_change: "Δ score", rank_change: "Δ rank",
      requests: "Requests", resolved: "Resolved", open: "Open", accept: "Accept on time",
      arrive: "Arrive on time", resolve: "Resolve on time", accept_t: "Accept time", arrive_t: "Arrive time",
      resolve_t: "Resolve time", notices: "Notices", non_responses: "Non-responses", disputes: "Disputes",
      promises: "Promises", spot: "Spot-check pass", closed_by: "Closed: ",
      empty_month: "The ledger holds no request for this month.",
      live: "Not closed: computed from the ledger as of ", confirm_close: "A closed month's efficiency records never change. Close it?",
      closed_ok: "closed", record: "record",
      weight_names: { accept_on_time: "accept on time", arrive_on_time: "arrive on time",
        resolve_on_time: "resolve on time", spot_check_pass: "spot-check pass", promises_kept: "promises kept",
        responsiveness: "responsiveness", notice_free: "few notices", disputes_founded: "disputes founded" },
    },
  });

  const R = window.Reports;
  const monthInput = document.getElementById("month");

  function headers() {
    return ["rank", "unit", "score", "score_change", "rank_change", "requests", "resolved", "open",
      "accept", "arrive", "resolve", "accept_t", "arrive_t", "resolve_t", "notices", "non_responses",
      "disputes", "promises", "spot"].map((key) => ({ text: Page.t(key), cls: key === "unit" ? "text" : null }));
  }

  function times(spread) {
    return spread && spread.count ? R.duration(spread.p50) + " / " + R.duration(spread.p90) : "–";
  }

  function row(card, names, month) {
    const score = R.change(card.score_change, 1);
    const rank = R.change(card.rank_change);
    const link = Page.el("a", { href: "record.html?unit=" + encodeURIComponent(card.unit) + "&month=" + month },
      R.unitName(names, card.unit));
    const notices = card.notices;
    const levels = Object.entries(notices.by_level).map(([l, n]) => "L" + l + ":" + n).join(" ");
    return [
      R.number(card.rank), { node: link, cls: "text" }, R.number(card.score, 1),
      { text: score.text, cls: score.cls }, { text: rank.text, cls: rank.cls },
      card.requests, card.resolved, card.open,
      R.rate(card.on_time.accept), R.rate(card.on_time.arrive), R.rate(card.on_time.resolve),
      times(card.times.accept), times(card.times.arrive), times(card.times.resolve),
      notices.total + (levels ? " (" + levels + ")" : ""), card.non_responses,
      card.disputes.raised + " / " + card.disputes.upheld + " / " + card.disputes.reassigned,
      card.promises.kept + " / " + card.promises.broken, R.rate(card.spot_checks.pass_rate),
    ];
  }

  function render(found) {
    document.getElementById("period").textContent = found.month;
    const month = found.month;
    const rows = found.units.map((card) => row(card, found.names, month));
    R.fill("cards", rows.length ? R.table(headers(), rows, (i) => (found.units[i].rank ? null : "unranked"))
      : Page.el("p", { class: "empty" }, Page.t("none")));
    const box = document.getElementById("recomputed-box");
    box.hidden = !found.recomputed.length;
    if (found.recomputed.length) {
      R.fill("recomputed", R.table(headers(), found.recomputed.map((card) => row(card, found.names, month))));
    }
    document.getElementById("closed").textContent = found.closed
      ? Page.t("closed_by") + R.when(found.closed.at) + " · " + found.closed.by
      : Page.t("live") + R.when(found.as_of);
    document.getElementById("close").hidden = Boolean(found.closed) || !acts; // a desk only reads
    document.getElementById("weights").textContent = Object.entries(found.weights)
      .filter(([, weight]) => weight > 0)
      .map(([name, weight]) => (Page.t("weight_names")[name] || name) + " " + weight).join(" · ");
  }

  async function show(month) {
    R.setParams({ month });
    monthInput.value = month;
    const query = "?month=" + encodeURIComponent(month);
    document.getElementById("csv").setAttribute("href", "/api/v1/reports/evaluation.csv" + query);
    const lang = "&lang=" + Page.lang;
    document.getElementById("bars").src = "/api/v1/reports/evaluation.svg" + query + "&chart=bars" + lang;
    document.getElementById("trend").src = "/api/v1/reports/evaluation.svg" + query + "&chart=trend&months=6" + lang;
    R.status(Page.t("loading"));
    try {
      const found = await Page.api("GET", "/api/v1/reports/evaluation" + query);
      render(found);
      const empty = found.units.every((card) => !card.requests && !card.resolved && !card.open);
      if (empty && month < R.thisMonth()) R.offerCurrent(Page.t("empty_month"), R.thisMonth(), show);
      else R.status("");
    } catch (error) {
      R.fail(error);
    }
  }

  async function closeMonth() {
    if (!window.confirm(Page.t("confirm_close"))) return;
    try {
      render(await Page.api("POST", "/api/v1/reports/evaluation/" + encodeURIComponent(monthInput.value) + "/close"));
      R.status(Page.t("closed_ok"));
    } catch (error) {
      R.fail(error);
    }
  }

  R.header();
  document.getElementById("pick").addEventListener("submit", (event) => {
    event.preventDefault();
    show(monthInput.value);
  });
  document.getElementById("close").addEventListener("click", closeMonth);
  let acts = false;
  R.mayAct().then((may) => { acts = may; show(R.param("month") || R.lastMonth()); });
})();
