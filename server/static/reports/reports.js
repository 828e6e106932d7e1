/* What the report pages share, on top of common/page.js (loaded before this):
 *   Reports.me()                 a promise of the signed-in person (asked once)
 *   Reports.mayAct()             a promise: may this person act (the center), or only read
 *   Reports.param(name)           a query-string parameter of this page
 *   Reports.setParams(values)     rewrite the page's query string (no reload)
 *   Reports.rate(share)           "87%" or "–"
 *   Reports.duration(seconds)     "42 s", "12.5 min", "3.1 h" or "–"
 *   Reports.number(value, digits) a number or "–"
 *   Reports.change(value)         "+3.2" / "−1" / "–", and its class ("up" / "down")
 *   Reports.when(epochSeconds)    date and time in the city's zone
 *   Reports.unitName(names, code) the unit's name in the page's language
 *   Reports.status(text, isError) the line under the header
 *   Reports.header()              wires the language, print and sign-out buttons
 *   Reports.table(headers, rows)  a <table> (cells: text, or Page.el elements) in a box that
 *                                 scrolls sideways when the table is wider than the page
 *   Reports.lastMonth() / Reports.lastWeek() / Reports.fortnightAgo()  default periods,
 *                                 counted from the city's date today; Reports.thisMonth() /
 *                                 Reports.thisWeek() the current ones
 *   Reports.offerCurrent(text, current, go)  an empty past period: says so on the status
 *                                 line with a button to the current period */
(function () {
  "use strict";

  Page.texts({
    zh: { print: "打印", csv: "导出 CSV", show: "查看", loading: "加载中…", none: "无",
      forbidden: "无权查看", back: "报表首页", so_far: "查看本期至今：" },
    en: { print: "Print", csv: "Export CSV", show: "Show", loading: "loading…", none: "none",
      forbidden: "not allowed", back: "Reports", so_far: "Show the current one so far: " },
  });

  const Reports = {};

  /* The signed-in person (GET /api/v1/session), asked once per page. */
  let me = null;
  Reports.me = function () {
    me = me || Page.api("GET", "/api/v1/session");
    return me;
  };

  /* Whether that person may act here (close a month, draw or record spot checks): the
   * center's, not a unit desk's, which only reads. */
  Reports.mayAct = function () {
    return Reports.me().then((who) => who.role === "center" || who.role === "admin", () => false);
  };

  Reports.param = function (name) {
    return new URLSearchParams(location.search).get(name);
  };

  Reports.setParams = function (values) {
    const params = new URLSearchParams(location.search);
    for (const [key, value] of Object.entries(values)) {
      if (value === null || value === undefined || value === "") params.delete(key);
      else params.set(key, value);
    }
    history.replaceState(null, "", location.pathname + "?" + params.toString());
  };

  Reports.rate = (share) => (share === null || share === undefined ? "–" : Math.round(share * 100) + "%");

  Reports.number = function (value, digits) {
    if (value === null || value === undefined) return "–";
    return digits === undefined ? String(value) : Number(value).toFixed(digits);
  };

  Reports.duration = function (seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 90) return Math.round(seconds) + " s";
    if (seconds < 5400) return (seconds / 60).toFixed(1) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  };

  Reports.change = function (value, digits) {
    if (value === null || value === undefined) return { text: "–", cls: "" };
    const text = (value > 0 ? "+" : value < 0 ? "−" : "±") +
      Math.abs(value).toFixed(digits === undefined ? 0 : digits);
    return { text, cls: value > 0 ? "up" : value < 0 ? "down" : "" };
  };

  Reports.when = function (epochSeconds) {
    if (!epochSeconds) return "–";
    return Page.dateFormat({ year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
      minute: "2-digit", hour12: false }).format(new Date(epochSeconds * 1000));
  };

  Reports.unitName = function (names, code) {
    const name = names && names[code];
    if (!name) return code;
    return Page.lang === "zh" ? name.zh : name.en;
  };

  Reports.status = function (text, isError) {
    const line = document.getElementById("status");
    if (!line) return;
    line.textContent = text || "";
    line.classList.toggle("error", Boolean(isError));
  };

  /* The period shown (a closed month or week, the pages' default) has nothing on record, as
   * in a new deployment or a fresh demo: say so, and offer the current period so far. */
  Reports.offerCurrent = function (text, current, go) {
    const line = document.getElementById("status");
    if (!line) return;
    const button = Page.el("button", { type: "button", id: "to-current", class: "link" },
      Page.t("so_far") + current);
    button.addEventListener("click", () => go(current));
    line.classList.remove("error");
    line.replaceChildren(text + " ", button);
  };

  Reports.fail = function (error) {
    const text = error && error.status === 403 ? Page.t("forbidden") : (error && error.message) || Page.t("error");
    Reports.status(text, true);
  };

  Reports.header = function () {
    Page.applyTexts();
    const lang = document.getElementById("lang");
    if (lang) {
      lang.textContent = Page.t("switch");
      lang.addEventListener("click", Page.switchLanguage);
    }
    const print = document.getElementById("print");
    if (print) print.addEventListener("click", () => window.print());
    const out = document.getElementById("signout");
    if (out) out.addEventListener("click", Page.signOut);
  };

  Reports.table = function (headers, rows, rowClass) {
    const head = Page.el("thead", null, Page.el("tr", null,
      headers.map((h) => Page.el("th", { class: h.cls || null }, h.text === undefined ? h : h.text))));
    const body = Page.el("tbody", null, rows.map((cells, i) => Page.el("tr",
      { class: rowClass ? rowClass(i) : null },
      cells.map((cell) => (cell instanceof Node && cell.tagName === "TD") ? cell
        : Page.el("td", { class: cell && cell.cls ? cell.cls : null },
          cell && cell.node ? cell.node : cell && cell.text !== undefined ? cell.text : cell)))));
    return Page.el("div", { class: "table-box" }, Page.el("table", null, head, body));
  };

  Reports.fill = function (id, ...children) {
    const box = document.getElementById(id);
    box.replaceChildren(...children);
    return box;
  };

  function pad(n) { return String(n).padStart(2, "0"); }

  /* The city's date, `days` from today, as a Date at midnight UTC: read it with the
   * getUTC... methods (the browser's own zone would move it to another day). */
  function cityDay(days) {
    const today = Page.today();
    return new Date(Date.UTC(today.year, today.month - 1, today.day + days));
  }

  Reports.thisMonth = function () {
    const today = Page.today();
    return today.year + "-" + pad(today.month);
  };

  Reports.lastMonth = function () {
    const today = Page.today();
    const first = new Date(Date.UTC(today.year, today.month - 2, 1));
    return first.getUTCFullYear() + "-" + pad(first.getUTCMonth() + 1);
  };

  /* "2026-W09" of a date read by its UTC fields (as cityDay makes them). */
  Reports.isoWeek = function (date) {
    const day = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
    const weekday = day.getUTCDay() || 7;
    day.setUTCDate(day.getUTCDate() + 4 - weekday);
    const yearStart = new Date(Date.UTC(day.getUTCFullYear(), 0, 1));
    const week = Math.ceil(((day - yearStart) / 86400000 + 1) / 7);
    return day.getUTCFullYear() + "-W" + pad(week);
  };

  Reports.thisWeek = function () {
    return Reports.isoWeek(cityDay(0));
  };

  Reports.lastWeek = function () {
    return Reports.isoWeek(cityDay(-7));
  };

  Reports.fortnightAgo = function () {
    const date = cityDay(-14);
    return date.getUTCFullYear() + "-" + pad(date.getUTCMonth() + 1) + "-" + pad(date.getUTCDate());
  };

  window.Reports = Reports;
})();
