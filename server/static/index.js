/* The hub's front page: who is signed in and the pages this person may open. */
(function () {
  "use strict";

  /* Each page: its file, who may open it, its name and a line about it (zh, en). Pages for
   * one role are shown to that role and to the admin. */
  const PAGES = [
    { href: "center.html", roles: ["center", "unit", "admin"], key: "center" },
    { href: "intake.html", roles: ["calltaker", "admin"], key: "intake" },
    { href: "wall.html", roles: ["wall", "center", "admin"], key: "wall" },
    { href: "reports/index.html", roles: ["center", "unit", "admin"], key: "reports" },
    { href: "squads.html", roles: ["unit", "center", "admin"], key: "squads" },
    { href: "api/v1/health", roles: ["admin", "center"], key: "health" },
  ];

  Page.texts({
    zh: {
      title: "洛阳市城市应急联动调度", api_note: "HTTP API：/api/v1/…（浏览器会话或个人令牌）。",
      center: "督办台", center_about: "待办队列（超时在前）、管辖争议裁决、督办通知、离线分队；每件诉求的全过程与地图。",
      intake: "受理台", intake_about: "接听来电、登记诉求：号码、类别、描述、地点，提交前预览去向与重复。",
      wall: "调度大屏", wall_about: "全屏实时地图：各区边界、分队位置、未结诉求与超时提醒。",
      reports: "报表", reports_about: "月度考核与效能档案、每周暗访通报、领导小组半月协调报告。",
      squads: "分队管理", squads_about: "各单位分队：在线、在岗、在办、最后在线时间；手机丢失时更换令牌；登记新分队（管理员）。",
      health: "服务状态", health_about: "调度中心服务与 Redis 是否正常。",
      none: "此账号没有可打开的页面。", roles: { admin: "管理员", calltaker: "接线员",
        center: "监督中心", unit: "单位值班台", wall: "大屏" },
    },
    en: {
      title: "Luoyang City Linkage Dispatch", api_note: "HTTP API: /api/v1/… (this browser's session or a personal token).",
      center: "Supervision console", center_about: "The queue (overdue first), rulings on disputes, notices, squads offline; each request's timeline and map.",
      intake: "Intake console", intake_about: "Record a caller's request: number, category, description, place; see where it goes and possible duplicates before sending.",
      wall: "Wall map", wall_about: "Full-screen live map: districts, squads, open requests and what is late.",
      reports: "Reports", reports_about: "Monthly evaluation and efficiency records, weekly spot checks, the fortnightly coordination report.",
      squads: "Squads", squads_about: "Each unit's squads: online, on duty, working, last seen; a new token for a lost phone; registering a squad (admin).",
      health: "Health", health_about: "Whether the hub and its Redis answer.",
      none: "This account has no pages to open.", roles: { admin: "admin", calltaker: "call-taker",
        center: "supervision center", unit: "unit desk", wall: "wall display" },
    },
  });

  async function start() {
    Page.applyTexts();
    document.title = Page.t("title");
    document.getElementById("lang").addEventListener("click", Page.switchLanguage);
    document.getElementById("signout").addEventListener("click", Page.signOut);
    const me = await Page.api("GET", "/api/v1/session");
    const role = Page.t("roles")[me.role] || me.role;
    let unit = me.unit || "";
    if (unit) { // its name, not its code
      const found = (await Page.api("GET", "/api/v1/units")).find((u) => u.code === me.unit);
      if (found) unit = Page.lang === "zh" ? found.name_zh : found.name_en;
    }
    document.getElementById("who").textContent = (me.name || me.username) + " · " + role
      + (unit ? " · " + unit : "");
    const mine = PAGES.filter((page) => page.roles.includes(me.role));
    const cards = document.getElementById("cards");
    cards.replaceChildren(...mine.map((page) => Page.el("a", { class: "card", href: page.href },
      Page.el("b", null, Page.t(page.key)), Page.el("span", null, Page.t(page.key + "_about")))));
    if (!mine.length) cards.append(Page.el("p", { class: "muted" }, Page.t("none")));
  }

  start().catch((error) => {
    if (error.status !== 401) document.getElementById("cards").append(
      Page.el("p", { class: "muted" }, Page.t("error") + ": " + error.message));
  });
})();
