/* The center console (/center.html): roles center and admin see every unit; a unit desk
 * (role unit) sees the same console restricted to its own unit by the hub, and may only add
 * notes. Live over the center feed (Page.feed, which resumes after a drop): an event reloads
 * what it changes (the lists at most about once a second, the open request at once), a new
 * notice or a squad going offline is also announced. The selected request is in the address
 * (#<number>), so a link opens it. */
(function () {
  "use strict";

  const Center = window.Center;
  const el = (...args) => Page.el(...args);
  const WATCHERS = ["center", "admin", "unit"];
  const RULERS = ["center", "admin"];
  const FINAL = ["resolved", "cancelled", "transferred"];
  const HELD = ["offered", "accepted", "en_route", "on_scene", "deferred"];
  const LIST_GAP_MS = 1200; // the lists reload at most this often while events pour in
  const SAFETY_RELOAD_MS = 30000; // and this often anyway (a squad back online says nothing)
  const QUEUE_REDRAW_S = 5; // the queue's countdowns are redrawn this often

  Center.data = { units: new Map(), categories: new Map(), districts: new Map(), track_interval_s: 10 };
  Center.selectedId = null;

  const view = {
    me: null,
    tab: "queue",
    unit: "",
    noticeState: "open",
    queue: [],
    disputes: [],
    skew: 0, // hub clock minus this browser's, seconds
    queueDrawnAt: 0,
    detail: null,
    shownId: null, // the request the map shows (kept in view while it updates)
    openForm: null,
    offlineSquads: new Set(),
    map: null,
  };

  const now = () => Date.now() / 1000 + view.skew;
  const mayRule = () => view.me && RULERS.includes(view.me.role);

  // ---- small helpers -------------------------------------------------------------------------

  /* fn at most once per gapMs, the last call never lost, never two at once. */
  function throttled(fn, gapMs) {
    let last = 0;
    let timer = null;
    let running = false;
    let again = false;
    async function run() {
      timer = null;
      if (running) {
        again = true;
        return;
      }
      running = true;
      last = Date.now();
      try {
        await fn();
      } catch (error) {
        report(error);
      } finally {
        running = false;
        if (again) {
          again = false;
          schedule();
        }
      }
    }
    function schedule(atOnce) {
      if (timer) {
        if (!atOnce) return;
        clearTimeout(timer);
      }
      timer = setTimeout(run, atOnce ? 0 : Math.max(0, last + gapMs - Date.now()));
    }
    return schedule;
  }

  function report(error) {
    if (error instanceof Page.ApiError && error.status === 401) return; // signing in again
    toast(Page.t("error") + ": " + (error.message || error), "error");
    console.warn(error);
  }

  function toast(text, kind, requestId) {
    const box = document.getElementById("toasts");
    const note = el("div", { class: "toast " + (kind || ""), role: "status",
      dataset: requestId ? { request: requestId } : {} }, text);
    if (requestId) note.addEventListener("click", () => Center.select(requestId));
    box.prepend(note);
    while (box.children.length > 5) box.lastChild.remove();
    setTimeout(() => note.remove(), 8000);
  }

  const unitQuery = (sep) => (view.unit ? sep + "unit=" + encodeURIComponent(view.unit) : "");

  // ---- the lists -----------------------------------------------------------------------------

  async function loadQueue() {
    const asked = Date.now() / 1000;
    const data = await Page.api("GET", "/api/v1/center/queue?limit=500" + unitQuery("&"));
    view.skew = data.at - (asked + Date.now() / 1000) / 2;
    view.queue = data.items;
    Center.learnSquads(data.items.map((item) => [item.squad, item.squad_name]));
    drawQueue();
  }

  function drawQueue() {
    view.queueDrawnAt = now();
    Center.lists.renderQueue(view.queue, view.queueDrawnAt);
  }

  async function loadDisputes() {
    const all = await Page.api("GET", "/api/v1/center/disputes");
    view.disputes = all;
    Center.lists.renderDisputes(view.unit ? all.filter((d) => d.unit === view.unit) : all);
  }

  async function loadNotices() {
    const open = await Page.api("GET", "/api/v1/notices?state=open&limit=500" + unitQuery("&"));
    document.getElementById("n-notices").textContent = open.length;
    if (view.noticeState === "open") return Center.lists.renderNotices(open, "open");
    const closed = await Page.api("GET", "/api/v1/notices?state=closed&limit=200" + unitQuery("&"));
    Center.lists.renderNotices(closed, "closed");
  }

  async function loadOffline() {
    const squads = await Page.api("GET", "/api/v1/center/offline-squads" + unitQuery("?"));
    view.offlineSquads = new Set(squads.map((s) => s.squad));
    Center.learnSquads(squads.map((s) => [s.squad, s.name]));
    Center.lists.renderOffline(squads);
  }

  const queueSoon = throttled(loadQueue, LIST_GAP_MS);
  const disputesSoon = throttled(loadDisputes, LIST_GAP_MS);
  const noticesSoon = throttled(loadNotices, LIST_GAP_MS);
  const offlineSoon = throttled(loadOffline, LIST_GAP_MS);
  const detailSoon = throttled(() => loadDetail(Center.selectedId), 300);

  function reloadLists() {
    queueSoon(true);
    disputesSoon(true);
    noticesSoon(true);
    offlineSoon(true);
  }

  function showTab(tab) {
    view.tab = tab;
    for (const button of document.querySelectorAll("#tabs [role=tab]")) {
      button.setAttribute("aria-selected", String(button.dataset.tab === tab));
    }
    for (const name of ["queue", "disputes", "notices", "offline"]) {
      document.getElementById("pane-" + name).hidden = name !== tab;
    }
    document.getElementById("notice-state").hidden = tab !== "notices";
  }

  // ---- the selected request ------------------------------------------------------------------

  Center.select = function (requestId) {
    if (!requestId) return;
    if (location.hash !== "#" + requestId) history.replaceState(null, "", "#" + requestId);
    if (Center.selectedId !== requestId) {
      Center.selectedId = requestId;
      view.openForm = null;
      for (const item of document.querySelectorAll(".item[data-request]")) {
        item.classList.toggle("selected", item.dataset.request === requestId);
      }
    }
    detailSoon(true);
  };

  async function loadDetail(requestId) {
    if (!requestId) return;
    let detail;
    try {
      detail = await Page.api("GET", "/api/v1/requests/" + encodeURIComponent(requestId));
    } catch (error) {
      if (error instanceof Page.ApiError && (error.status === 404 || error.status === 403)) {
        showMissing(requestId, error.status);
        return;
      }
      throw error;
    }
    if (requestId !== Center.selectedId) return; // another one was picked meanwhile
    const [track, squadNow] = await Promise.all([
      detail.unit ? Page.api("GET", `/api/v1/requests/${encodeURIComponent(requestId)}/track`)
        .catch(() => null) : null,
      detail.squad && HELD.includes(detail.state)
        ? Page.api("GET", "/api/v1/squads/" + encodeURIComponent(detail.squad)).catch(() => null) : null,
    ]);
    if (requestId !== Center.selectedId) return;
    if (track) Center.data.track_interval_s = track.interval_s;
    if (track) Center.learnSquads(track.segments.map((s) => [s.squad, s.name]));
    if (squadNow) Center.learnSquads([[squadNow.id, squadNow.name]]);
    view.detail = detail;
    renderDetail(detail);
    // A live update keeps the map where the user put it, unless another squad took over.
    const shown = requestId + "/" + (detail.squad || "");
    const keep = view.shownId === shown;
    view.shownId = shown;
    const points = view.map.show(detail, track, squadNow, keep);
    const mapNote = document.getElementById("map-note");
    mapNote.hidden = points > 0 || !detail.unit;
    mapNote.textContent = Page.t("no_track");
  }

  function showMissing(requestId, status) {
    document.getElementById("detail-empty").hidden = false;
    document.getElementById("detail-empty").textContent =
      (status === 403 ? Page.t("forbidden") : Page.t("not_found")) + ": " + requestId;
    document.getElementById("request").hidden = true;
    view.detail = null;
    view.shownId = null;
    view.map.showCity();
  }

  /* The holding squad by name, its id beside it for the record. */
  function squadFact(id) {
    const name = Center.squad(id);
    return name === id ? id : el("span", {}, name + " ", el("span", { class: "muted" }, id));
  }

  function renderDetail(d) {
    document.getElementById("detail-empty").hidden = true;
    document.getElementById("request").hidden = false;
    const next = (view.queue.find((i) => i.id === d.id) || {}).next_deadline;
    const late = next && next.at <= now();
    document.getElementById("request-head").replaceChildren(
      el("h2", {}, el("span", { class: "rid" }, d.id),
        el("span", { class: "state s-" + d.state }, Center.word("states", d.state)),
        late ? el("span", { class: "late-flag" }, Page.t("overdue")) : null),
      el("p", { class: "category" }, Center.named(Center.data.categories, d.category)));
    const facts = [
      ["unit", d.unit ? Center.named(Center.data.units, d.unit) : d.route],
      ["district", Center.named(Center.data.districts, d.district)],
      ["squad", d.squad ? squadFact(d.squad) : ""],
      ["caller", d.caller_phone ? el("a", { href: "tel:" + d.caller_phone }, d.caller_phone) : ""],
      ["received_at", Page.time(d.received_at) + " (" + Page.ago(d.received_at) + ")"],
      ["address", d.address || ""],
      ["description", d.description || ""],
      ["reason", { disputed: d.dispute_reason, deferred: d.defer_reason, cancelled: d.cancel_reason }[d.state] || ""],
    ].filter(([, value]) => value);
    document.getElementById("request-facts").replaceChildren(...facts.flatMap(([key, value]) => [
      el("dt", {}, Page.t(key)), el("dd", { dataset: { fact: key } }, value)]));
    renderDeadlines(d);
    renderActions(d);
    renderTimeline(d.timeline);
  }

  function renderDeadlines(d) {
    const t = now();
    const met = {
      accept_by: d.accepted_at || ["en_route", "on_scene", "deferred", "resolved"].includes(d.state),
      arrive_by: d.arrived_at || ["on_scene", "resolved"].includes(d.state),
      resolve_by: d.state === "resolved",
    };
    const chips = ["accept_by", "arrive_by", "resolve_by"].filter((k) => d.deadlines[k]).map((k) => {
      const at = d.deadlines[k];
      const done = met[k] || FINAL.includes(d.state);
      const late = !done && at <= t;
      return el("div", { class: "deadline" + (done ? " met" : late ? " late" : "") },
        el("span", { class: "label" }, Page.t("deadline_" + k)),
        el("b", {}, Page.time(at)),
        el("span", { class: "gap" }, done ? (met[k] ? "✓ " + Page.t("met") : "")
          : late ? Page.t("overdue") + " " + Center.span(t - at) : Page.t("left") + " " + Center.span(at - t)));
    });
    if (d.promised_by) {
      chips.push(el("div", { class: "deadline promise" }, el("span", { class: "label" }, Page.t("promised_by")),
        el("b", {}, Page.time(d.promised_by))));
    }
    document.getElementById("deadlines").replaceChildren(...chips);
  }

  function renderActions(d) {
    const actions = [];
    const open = !FINAL.includes(d.state);
    if (mayRule() && d.state === "disputed") actions.push("rule");
    if (mayRule() && open && d.unit) actions.push("cancel");
    if (mayRule() && d.state === "resolved") actions.push("reopen");
    if (d.unit) actions.push("note");
    if (view.openForm && !actions.includes(view.openForm)) view.openForm = null;
    if (!view.openForm && actions.includes("rule")) view.openForm = "rule"; // what it waits for
    document.getElementById("actions").replaceChildren(...actions.map((action) =>
      el("button", { type: "button", class: "action" + (view.openForm === action ? " active" : ""),
        dataset: { action }, onclick: () => openForm(action) }, Page.t("act_" + action))));
    const area = document.getElementById("form-area");
    const current = area.firstElementChild;
    // A live update must not wipe what is being typed: the form stays while its action does.
    if (current && current.dataset.formFor === d.id + ":" + view.openForm) return;
    area.replaceChildren();
    if (view.openForm) area.append(buildForm(view.openForm, d));
  }

  function buildForm(action, d) {
    const close = () => {
      view.openForm = null;
      renderActions(view.detail);
    };
    const done = (key) => {
      toast(Page.t(key) + " · " + d.id, "ok", d.id);
      view.openForm = null;
      document.getElementById("form-area").replaceChildren();
      detailSoon(true);
      reloadLists();
    };
    let form;
    if (action === "rule") {
      const dispute = view.disputes.find((x) => x.id === d.id);
      form = Center.forms.ruling(d, dispute ? dispute.candidates : [], done, close);
    } else {
      form = Center.forms[action](d, done, close);
    }
    form.dataset.formFor = d.id + ":" + action;
    return form;
  }

  function openForm(action) {
    view.openForm = view.openForm === action ? null : action;
    if (view.openForm === "rule" && !view.disputes.some((x) => x.id === view.detail.id)) {
      loadDisputes().then(() => renderActions(view.detail)).catch(report);
    }
    renderActions(view.detail);
    const first = document.querySelector("#form-area textarea, #form-area select, #form-area input");
    if (first) first.focus();
  }

  function eventDetails(e) {
    const parts = [];
    if (e.squad && e.by !== "squad:" + e.squad) parts.push(Page.t("squad") + " " + Center.squad(e.squad));
    if (e.notice_kind) parts.push(Center.word("notice_kinds", e.notice_kind) + " · " + Center.level(e.level));
    if (e.from_unit && e.unit) {
      parts.push(Center.named(Center.data.units, e.from_unit) + " → " + Center.named(Center.data.units, e.unit));
    } else if (e.type === "received" && e.unit) {
      parts.push(Center.named(Center.data.units, e.unit));
    }
    if (e.category && ["reassigned", "reassigned_in"].includes(e.type)) {
      parts.push(Center.named(Center.data.categories, e.category));
    }
    const assist = e.assist || (e.type === "assist_requested" ? e.units : null);
    if (Array.isArray(assist) && assist.length) {
      parts.push(Page.t("assist") + ": " + assist.map((u) => Center.named(Center.data.units, u)).join("、"));
    }
    if (e.until) parts.push(Page.t("promised_by") + " " + Page.time(e.until));
    if (e.reason) parts.push(Center.word("ev", e.reason) === e.reason ? e.reason : Center.word("ev", e.reason));
    if (e.duplicate_of) parts.push(Page.t("duplicate_of") + " " + e.duplicate_of);
    for (const key of ["note", "result", "text"]) if (e[key]) parts.push("“" + e[key] + "”");
    return parts;
  }

  function renderTimeline(timeline) {
    const rows = (timeline || []).map((e) => el("li", { class: "ev t-" + e.type },
      el("time", {}, Page.time(e.at)),
      el("div", {},
        el("b", {}, Center.word("ev", e.type)), el("span", { class: "by" }, Center.actor(e.by)),
        ...eventDetails(e).map((part) => el("span", { class: "part" }, part)))));
    document.getElementById("timeline").replaceChildren(...rows.reverse()); // newest on top
  }

  // ---- live ----------------------------------------------------------------------------------

  function onEvent(unit, id, event) {
    queueSoon();
    const type = event.type;
    if (["disputed", "upheld", "reassigned", "reassigned_in", "cancelled"].includes(type)) disputesSoon();
    if (type === "notice_issued" || type === "notice_closed") noticesSoon();
    if (type === "notice_issued") {
      toast(Page.t("new_notice") + " · " + event.request + " · " +
        Center.word("notice_kinds", event.notice_kind) + " " + Center.level(event.level),
        "notice", event.request);
    }
    const by = String(event.by || "");
    if (type === "squad_offline") {
      offlineSoon();
      toast(Page.t("squad_offline_toast") + " · " + Center.squad(event.squad) + " · " + event.request, "offline", event.request);
    } else if (by.startsWith("squad:") && view.offlineSquads.has(by.slice(6))) {
      offlineSoon(); // it is back
    } else if (["resolved", "cancelled", "reassigned", "offer_expired"].includes(type) && view.offlineSquads.size) {
      offlineSoon();
    }
    if (event.request && event.request === Center.selectedId) detailSoon();
  }

  function onState(state) {
    const status = document.getElementById("status");
    status.dataset.state = state === "live" ? "live" : "stale";
    status.textContent = Page.t(state === "live" ? "live" : "offline");
    if (state === "live") reloadLists(); // after a drop: what the resume cannot tell
  }

  /* Every second: the clock, the open request's deadlines; the queue every few seconds (its
   * countdowns), and at once when one of its deadlines passes (the item goes to the top). */
  function tick() {
    const t = now();
    document.getElementById("clock").textContent = Page.time(t);
    const drawn = view.queueDrawnAt;
    const crossed = view.queue.some((i) => i.next_deadline && i.next_deadline.at <= t && i.next_deadline.at > drawn);
    if (crossed || t - drawn >= QUEUE_REDRAW_S) drawQueue();
    if (view.detail) renderDeadlines(view.detail);
  }

  // ---- start ---------------------------------------------------------------------------------

  function drawNav() {
    const role = view.me ? view.me.role : "";
    const links = Center.NAV.filter((entry) => !entry.roles || entry.roles.includes(role)).map((entry) =>
      el("a", { href: entry.href, class: entry.current ? "current" : null,
        "aria-current": entry.current ? "page" : null, download: entry.download ? "" : null },
        Page.t(entry.key)));
    document.getElementById("nav").replaceChildren(...links);
  }

  function drawUnitFilter() {
    const box = document.getElementById("unit-filter-box");
    const select = document.getElementById("unit-filter");
    if (view.me.role === "unit") {
      box.hidden = true;
      return;
    }
    select.replaceChildren(el("option", { value: "" }, Page.t("all_units")),
      ...[...Center.data.units.values()].map((u) => el("option", { value: u.code }, Center.named(Center.data.units, u.code))));
    select.addEventListener("change", () => {
      view.unit = select.value;
      reloadLists();
    });
  }

  function wireControls() {
    document.getElementById("lang").addEventListener("click", Page.switchLanguage);
    document.getElementById("signout").addEventListener("click", Page.signOut);
    for (const button of document.querySelectorAll("#tabs [role=tab]")) {
      button.addEventListener("click", () => showTab(button.dataset.tab));
    }
    for (const button of document.querySelectorAll("#notice-state button")) {
      button.addEventListener("click", () => {
        view.noticeState = button.dataset.state;
        for (const b of document.querySelectorAll("#notice-state button")) {
          b.setAttribute("aria-pressed", String(b === button));
        }
        noticesSoon(true);
      });
    }
    document.getElementById("goto").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = document.getElementById("goto-id");
      const id = input.value.trim();
      if (id) Center.select(id);
      input.value = "";
    });
    window.addEventListener("hashchange", () => Center.select(decodeURIComponent(location.hash.slice(1))));
  }

  async function start() {
    Page.applyTexts();
    wireControls();
    drawNav();
    try {
      view.me = await Page.api("GET", "/api/v1/session");
    } catch (error) {
      return report(error);
    }
    drawNav();
    const who = view.me.role === "unit" ? view.me.unit : view.me.role;
    document.getElementById("who").textContent = (view.me.name || view.me.username) + " · " +
      (view.me.role === "unit" ? Center.named(Center.data.units, who) + " " + Page.t("desk_of") : who);
    if (!WATCHERS.includes(view.me.role)) {
      document.getElementById("denied").hidden = false;
      document.getElementById("console").hidden = true;
      document.getElementById("status").hidden = true;
      return;
    }
    const [units, categories, districts] = await Promise.all([
      Page.api("GET", "/api/v1/units"), Page.api("GET", "/api/v1/categories"),
      Page.api("GET", "/api/v1/districts")]);
    for (const u of units) Center.data.units.set(u.code, u);
    for (const c of categories) Center.data.categories.set(c.code, c);
    for (const d of districts) Center.data.districts.set(d.code, d);
    if (view.me.role === "unit") {
      const unitName = Center.named(Center.data.units, view.me.unit);
      document.getElementById("who").textContent = (view.me.name || view.me.username) + " · " +
        unitName + " " + Page.t("desk_of");
      // the unit's own desk, not the center's supervision console
      const title = unitName + " · " + Page.t("desk_title");
      document.querySelector("h1[data-i18n=title]").textContent = title;
      document.title = title;
    }
    view.map = new Center.RequestMap(document.getElementById("map"));
    view.map.drawDistricts(districts);
    drawUnitFilter();
    reloadLists();
    Page.feed(onEvent, onState);
    setInterval(tick, 1000);
    setInterval(reloadLists, SAFETY_RELOAD_MS);
    tick();
    if (location.hash.length > 1) Center.select(decodeURIComponent(location.hash.slice(1)));
  }

  start().catch(report);
})();
