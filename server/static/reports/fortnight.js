/* The fortnightly coordination report for the leadership group (领导小组): open disputes,
 * chronically overdue units and categories, repeat locations, notices still open at level 2
 * or higher; each item links to its request. ?from=YYYY-MM-DD picks the first day. */
(function () {
  "use strict";

  Page.texts({
    zh: {
      title: "领导小组半月协调报告", from: "起始日", disputes: "待裁决的管辖争议", units: "超时单位",
      categories: "超时类别", repeats: "重复诉求地点", notices: "仍未关闭的二级及以上督办通知",
      request: "诉求", unit: "单位", category: "类别", district: "区", disputed_at: "提出争议",
      reason: "理由", requests: "诉求量", missed: "超时", share: "超时比例", chronic: "长期超时",
      overdue_now: "当前超时事项", place: "地点", count: "次数", first: "首次", last: "最近",
      items: "诉求", others: "另有其他单位 {n} 件", notice: "通知", kind: "类型", level: "级别", issued: "下发", yes: "是", no: "",
      as_of: "统计截至 ",
    },
    en: {
      title: "Fortnightly coordination report", from: "From", disputes: "Disputes waiting for a ruling",
      units: "Overdue units", categories: "Overdue categories", repeats: "Repeat locations",
      notices: "Notices still open at level 2 or higher", request: "Request", unit: "Unit",
      category: "Category", district: "District", disputed_at: "Disputed", reason: "Reason",
      requests: "Requests", missed: "Missed a limit", share: "Share", chronic: "Chronic",
      overdue_now: "Overdue now", place: "Place", count: "Reports", first: "First", last: "Last",
      items: "Requests", others: "and {n} more of other units", notice: "Notice", kind: "Kind", level: "Level", issued: "Issued", yes: "yes", no: "",
      as_of: "as of ",
    },
  });

  const R = window.Reports;
  const fromInput = document.getElementById("from");
  let names = {};

  function link(id, href) {
    return { node: Page.el("a", { href }, id), cls: "text" };
  }

  function heads(keys) {
    return keys.map((key) => ({ text: Page.t(key), cls: ["count", "requests", "missed", "share", "level"]
      .includes(key) ? null : "text" }));
  }

  function section(id, keys, rows, flag) {
    R.fill(id, rows.length ? R.table(heads(keys), rows, flag) : Page.el("p", { class: "empty" }, Page.t("none")));
  }

  function render(found) {
    document.getElementById("period").textContent = found.period;
    document.getElementById("asof").textContent = Page.t("as_of") + R.when(found.as_of);
    section("disputes", ["request", "unit", "category", "district", "disputed_at", "reason"],
      found.disputes.map((d) => [link(d.id, d.link), { text: R.unitName(names, d.unit), cls: "text" },
        { text: d.category, cls: "text" }, { text: d.district, cls: "text" },
        { text: R.when(d.disputed_at), cls: "text" }, { text: d.reason, cls: "text" }]));
    const overdue = (key, rows) => rows.map((o) => [
      { text: key === "unit" ? R.unitName(names, o.key) : o.key, cls: "text" }, o.requests, o.missed,
      R.rate(o.share), { text: o.chronic ? Page.t("yes") : Page.t("no"), cls: "text" },
      { node: Page.el("span", null, ...o.overdue_now.flatMap((id) => [Page.el("a", { href: "/api/v1/requests/" + id }, id), " "])),
        cls: "text" }]);
    section("units", ["unit", "requests", "missed", "share", "chronic", "overdue_now"],
      overdue("unit", found.overdue_units), (i) => (found.overdue_units[i].chronic ? "flag" : null));
    section("categories", ["category", "requests", "missed", "share", "chronic", "overdue_now"],
      overdue("category", found.overdue_categories), (i) => (found.overdue_categories[i].chronic ? "flag" : null));
    section("repeats", ["category", "place", "count", "first", "last", "items"],
      found.repeats.map((r) => [{ text: r.category, cls: "text" },
        { text: (r.address ? r.address + " " : "") + "(" + r.lat.toFixed(5) + ", " + r.lon.toFixed(5) + ")", cls: "text" },
        r.count, { text: R.when(r.first_at), cls: "text" }, { text: R.when(r.last_at), cls: "text" },
        { node: Page.el("span", null, ...r.requests.flatMap((i) => [Page.el("a", { href: i.link }, i.id), " "]),
          r.others ? Page.t("others").replace("{n}", r.others) : null), cls: "text" }]));
    section("notices", ["notice", "unit", "kind", "level", "issued"],
      found.notices.map((n) => [link(n.id, n.link), { text: R.unitName(names, n.unit), cls: "text" },
        { text: n.kind, cls: "text" }, n.level, { text: R.when(n.issued_at), cls: "text" }]));
  }

  async function show(day) {
    R.setParams({ from: day });
    fromInput.value = day;
    const query = "?from=" + encodeURIComponent(day);
    document.getElementById("csv").setAttribute("href", "/api/v1/reports/fortnight.csv" + query);
    R.status(Page.t("loading"));
    try {
      render(await Page.api("GET", "/api/v1/reports/fortnight" + query));
      R.status("");
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
    show(fromInput.value);
  });
  loadNames().then(() => show(R.param("from") || R.fortnightAgo()));
})();
