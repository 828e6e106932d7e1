/* The four lists of the console's left column: the queue (nearest deadline first, overdue on
 * top), the disputes waiting for a ruling, the supervision notices by level, and the squads
 * offline while holding work. Each item opens its request (Center.select). */
(function () {
  "use strict";

  const Center = window.Center;
  const el = (...args) => Page.el(...args);

  function itemAttrs(requestId, extraClass) {
    const selected = Center.selectedId === requestId;
    return {
      class: "item " + (extraClass || "") + (selected ? " selected" : ""),
      tabindex: "0", role: "button",
      dataset: { request: requestId },
      "aria-current": selected ? "true" : null,
    };
  }

  /* Enter or click on an item opens its request. */
  function wire(list) {
    if (list.dataset.wired) return;
    list.dataset.wired = "1";
    const open = (event) => {
      const link = event.target.closest("[data-open]");
      const item = event.target.closest("[data-request]");
      const id = (link && link.dataset.open) || (item && item.dataset.request);
      if (id) Center.select(id);
    };
    list.addEventListener("click", open);
    list.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        open(event);
      }
    });
  }

  function empty(key) {
    return el("li", { class: "empty" }, Page.t(key));
  }

  function stateBadge(state) {
    return el("span", { class: "state s-" + state }, Center.word("states", state));
  }

  /* Queue order, as the hub sorts it (server/deadlines.py queue_order), on the local clock so
   * an item moves to the top the moment its deadline passes. */
  function queueKey(item, now) {
    const next = item.next_deadline;
    if (!next) return [2, 0];
    return [next.at <= now ? 0 : 1, next.at];
  }

  function deadlineText(next, now) {
    if (!next) return el("span", { class: "due none" }, Page.t("none"));
    const gap = next.at - now;
    const kind = Center.word("kinds", next.kind);
    if (gap <= 0) {
      return el("span", { class: "due late" }, kind + " " + Page.t("overdue") + " " + Center.span(gap));
    }
    return el("span", { class: "due" + (gap < 600 ? " soon" : "") },
      kind + " " + Page.time(next.at) + " · " + Page.t("left") + " " + Center.span(gap));
  }

  function renderQueue(items, now) {
    const list = document.getElementById("pane-queue");
    wire(list);
    const sorted = [...items].sort((a, b) => {
      const [x, y] = [queueKey(a, now), queueKey(b, now)];
      return x[0] - y[0] || x[1] - y[1];
    });
    let overdue = 0;
    const rows = sorted.map((item) => {
      const late = item.next_deadline && item.next_deadline.at <= now;
      if (late) overdue += 1;
      const level = Math.max(0, ...item.notices.map((n) => n.level));
      return el("li", itemAttrs(item.id, late ? "overdue" : ""),
        el("div", { class: "line1" },
          el("b", { class: "rid" }, item.id), stateBadge(item.state),
          level ? el("span", { class: "notice-badge l" + Math.min(level, 5),
            title: Page.t("tab_notices") }, "⚑" + Center.level(level)) : null),
        el("div", { class: "line2" },
          el("span", {}, Center.named(Center.data.categories, item.category)),
          el("span", { class: "muted" }, Center.named(Center.data.units, item.unit) + " · " +
            Center.named(Center.data.districts, item.district))),
        el("div", { class: "line3" }, deadlineText(item.next_deadline, now),
          item.squad ? el("span", { class: "muted" }, Page.t("squad") + " " + Center.squad(item.squad)) : null));
    });
    const focused = list.contains(document.activeElement) ? document.activeElement.dataset.request : null;
    list.replaceChildren(...(rows.length ? rows : [empty("empty_queue")]));
    if (focused) {
      const again = list.querySelector(`[data-request="${CSS.escape(focused)}"]`);
      if (again) again.focus(); // a live reload must not take the keyboard's place away
    }
    document.getElementById("n-queue").textContent = items.length;
    const badge = document.getElementById("n-overdue");
    badge.textContent = Page.t("overdue") + " " + overdue;
    badge.hidden = overdue === 0;
  }

  function renderDisputes(disputes) {
    const list = document.getElementById("pane-disputes");
    wire(list);
    const rows = disputes.map((d) => el("li", itemAttrs(d.id, "dispute"),
      el("div", { class: "line1" }, el("b", { class: "rid" }, d.id),
        el("span", { class: "muted" }, d.disputed_at ? Page.ago(d.disputed_at) : "")),
      el("div", { class: "line2" },
        el("span", {}, Center.named(Center.data.categories, d.category)),
        el("span", { class: "muted" }, Center.named(Center.data.units, d.unit) + " · " +
          Center.named(Center.data.districts, d.district))),
      el("div", { class: "line3 reason" }, "“" + (d.reason || "") + "”"),
      el("div", { class: "line3 muted" }, Page.t("candidates") + ": " +
        d.candidates.map((c) => Center.named(Center.data.units, c.unit)).join("、"))));
    list.replaceChildren(...(rows.length ? rows : [empty("empty_disputes")]));
    document.getElementById("n-disputes").textContent = disputes.length;
  }

  /* Notices grouped by level, highest first. */
  function renderNotices(notices, state) {
    const pane = document.getElementById("pane-notices");
    wire(pane);
    const levels = [...new Set(notices.map((n) => n.level))].sort((a, b) => b - a);
    const groups = levels.map((level) => el("section", { class: "level-group" },
      el("h3", { class: "level-head l" + Math.min(level, 5) }, Center.level(level) + " · " +
        notices.filter((n) => n.level === level).length),
      el("ol", {}, ...notices.filter((n) => n.level === level).map((n) =>
        el("li", itemAttrs(n.request, "notice" + (n.state === "closed" ? " done" : "")),
          el("div", { class: "line1" }, el("b", { class: "rid" }, n.request),
            el("span", { class: "notice-kind" }, Center.word("notice_kinds", n.kind))),
          el("div", { class: "line2 muted" },
            Center.named(Center.data.units, n.unit) + (n.squad ? " · " + Page.t("squad") + " " + Center.squad(n.squad) : "")),
          el("div", { class: "line3 muted" },
            Page.t("issued") + " " + Page.time(n.issued_at) + " · " + Page.t("due") + " " + Page.time(n.due_at) +
            (n.closed_at ? " · " + Page.t("closed_by") + " " + Page.time(n.closed_at) + " " +
              Center.word("ev", n.closed_by) : "")))))));
    pane.replaceChildren(...(groups.length ? groups : [el("p", { class: "empty" }, Page.t("empty_notices"))]));
    if (state === "open") document.getElementById("n-notices").textContent = notices.length;
  }

  function renderOffline(squads) {
    const list = document.getElementById("pane-offline");
    wire(list);
    const rows = squads.map((s) => el("li", { class: "item offline", tabindex: "-1" },
      el("div", { class: "line1" }, el("b", {}, s.name || s.squad),
        el("span", { class: "muted" }, s.squad),
        el("span", { class: "due late" }, s.last_seen ? Page.t("since") + " " + Page.time(s.last_seen) +
          " (" + Page.ago(s.last_seen) + ")" : "")),
      el("div", { class: "line2 muted" }, Center.named(Center.data.units, s.unit) +
        (s.last_point ? " · " + Page.t("last_point") + " " + Page.time(s.last_point.at) : "")),
      el("div", { class: "line3" }, Page.t("holds") + ": ",
        ...s.requests.map((r) => el("button", { type: "button", class: "link", dataset: { open: r.id } },
          r.id + " " + Center.word("states", r.state))))));
    list.replaceChildren(...(rows.length ? rows : [empty("empty_offline")]));
    document.getElementById("n-offline").textContent = squads.length;
  }

  Center.lists = { renderQueue, renderDisputes, renderNotices, renderOffline };
})();
