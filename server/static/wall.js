/* Dispatch wall map: districts, squads and open requests, live over /ws/map (a snapshot,
 * then about once a second what changed); the day's figures; what is late, listed and
 * pulsing; a ticker of the latest events. The wall signs in once (signin.html: an HttpOnly
 * session cookie this script never sees; no token in any URL). No tile layer: walls often
 * have no internet, so the district boundaries are the base map. */
(function () {
  "use strict";

  const STALE_MS = 5000; // no message for this long: say so on the wall
  const TICKER_LINES = 6;
  const LATE_LINES = 6;

  const STATES = ["queued", "offered", "accepted", "en_route", "on_scene", "deferred", "disputed"];
  const STATE_COLOURS = {
    queued: "#ff1744", offered: "#ffea00", accepted: "#00e5ff", en_route: "#2979ff",
    on_scene: "#00e676", deferred: "#d500f9", disputed: "#ff9100", received: "#b0bec5",
  };
  // Units get colours in file order; distinct enough for a dozen units on a dark map.
  const UNIT_PALETTE = ["#4fc3f7", "#ffd54f", "#ff8a65", "#f06292", "#f48fb1", "#aed581",
    "#ba68c8", "#a1887f", "#4db6ac", "#7986cb", "#e0e0e0", "#dce775", "#90caf9"];
  const ON_DUTY = 1;
  const BUSY = 2;

  Page.texts({
    zh: {
      title: "洛阳市城市应急联动 · 实时态势", stale: "数据中断", squads: "分队", online: "在线",
      busy: "忙碌", free: "空闲", open_requests: "未结诉求", overdue: "超时",
      dispatched_today: "今日派单", median_arrival: "今日到场用时（中位）",
      overdue_items: "超时诉求", by_state: "诉求状态", units: "服务单位", free_squad: "空闲分队",
      busy_squad: "执行任务", off_duty: "未上岗", request: "诉求", squad: "分队", latest: "最新动态",
      late_by: "已超时", missed: { accept: "超时未接单", arrive: "超时未到场", resolve: "超时未办结",
        promise: "逾期未兑现承诺", waiting: "超时无人接派" },
      states: { queued: "待派", offered: "已派待接", accepted: "已接单", en_route: "在途",
        on_scene: "到场处置", deferred: "承诺办结", disputed: "管辖争议", received: "已受理" },
      events: { received: "受理", queued: "排队待派", transferred: "转警/消防/急救", offered: "派单",
        offer_expired: "超时未接，重新派单", accepted: "接单", en_route: "出发", arrived: "到场",
        deferred: "承诺办结", disputed: "提出管辖争议", upheld: "裁决：维持原单位", reassigned: "改派",
        reassigned_in: "改派转入", resolved: "办结", reopened: "重新办理", cancelled: "撤销", note: "备注",
        notice_issued: "督办通知", notice_closed: "督办解除", squad_offline: "分队离线",
        assist_requested: "请求协办" },
      level: "级",
    },
    en: {
      title: "Luoyang City Linkage · Live Situation", stale: "no fresh data", squads: "Squads",
      online: "online", busy: "busy", free: "free", open_requests: "open requests",
      overdue: "overdue", dispatched_today: "dispatched today",
      median_arrival: "median time to arrival today", overdue_items: "Overdue",
      by_state: "Requests by state", units: "Units", free_squad: "free squad",
      busy_squad: "on a job", off_duty: "off duty", request: "request", squad: "squad",
      latest: "Latest", late_by: "late by",
      missed: { accept: "not accepted in time", arrive: "not on scene in time",
        resolve: "not resolved in time", promise: "promise broken",
        waiting: "no squad took it in time" },
      states: { queued: "waiting", offered: "offered", accepted: "accepted", en_route: "en route",
        on_scene: "on scene", deferred: "promised", disputed: "disputed", received: "received" },
      events: { received: "received", queued: "queued", transferred: "transferred to 110/119/120",
        offered: "offered", offer_expired: "offer expired, offered again", accepted: "accepted",
        en_route: "on the way", arrived: "arrived", deferred: "promised a time",
        disputed: "disputed", upheld: "ruling: stays with its unit", reassigned: "reassigned",
        reassigned_in: "reassigned in", assist_requested: "assistance requested",
        resolved: "resolved", reopened: "reopened", cancelled: "cancelled", note: "note",
        notice_issued: "supervision notice", notice_closed: "notice closed",
        squad_offline: "squad offline" },
      level: "level",
    },
  });

  const view = {
    units: new Map(), // code -> {name_zh, name_en, colour}
    categories: new Map(),
    districts: [],
    labels: [], // the districts' name tooltips, in the city file's order
    bounds: null, // the city's, to fit it on screen
    requests: new Map(), // id -> marker (marker.data: the request)
    ticker: [], // newest first
    tickerSeen: new Set(),
    figures: {},
    at: 0, // the hub's time of the newest message
    lastMessage: 0,
    started: false, // a snapshot arrived on this connection
    takeMs: [], // how long the newest messages took to apply (ms)
  };

  // No zoom buttons: a wall is looked at, not clicked (wheel, pinch and double-click zoom).
  const map = L.map("map", {
    zoomControl: false, attributionControl: false, preferCanvas: true, zoomSnap: 0.25,
  });
  const layers = {
    districts: L.layerGroup().addTo(map),
    links: L.layerGroup().addTo(map),
    requests: L.layerGroup().addTo(map),
  };
  const squads = new SquadLayer({ style: squadStyle, tip: squadTip });
  squads.addTo(map);

  const t = (key) => Page.t(key);
  const stateName = (state) => t("states")[state] || state;
  const named = (item, code) => (item ? (Page.lang === "zh" ? item.name_zh : item.name_en) : code);
  const $ = (id) => document.getElementById(id);

  // ---- talking to the hub ------------------------------------------------------------------

  async function start() {
    Page.applyTexts();
    document.title = t("title");
    $("lang").addEventListener("click", Page.switchLanguage);
    $("signout").addEventListener("click", Page.signOut);
    try {
      const [units, categories, districts] = await Promise.all([
        Page.api("GET", "/api/v1/units"), Page.api("GET", "/api/v1/categories"),
        Page.api("GET", "/api/v1/districts")]);
      units.forEach((u, i) => view.units.set(u.code, { ...u, colour: UNIT_PALETTE[i % UNIT_PALETTE.length] }));
      categories.forEach((c) => view.categories.set(c.code, c));
      view.districts = districts;
    } catch (error) {
      if (error.status === 401) return; // Page.api went to sign in
      setStatus("stale");
      setTimeout(start, 2000); // the hub may still be starting
      return;
    }
    drawDistricts();
    Page.live("/ws/map", { open: () => { view.started = false; }, message: take, state: setStatus });
    setInterval(watchdog, 1000);
  }

  function take(message) {
    const started = performance.now();
    takeMessage(message);
    view.takeMs.push(performance.now() - started); // the frames-per-second tool reads these
    if (view.takeMs.length > 100) view.takeMs.shift();
  }

  function takeMessage(message) {
    view.lastMessage = Date.now();
    if (message.t === "snapshot") {
      view.started = true;
      squads.set(message.squads);
      for (const marker of view.requests.values()) marker.remove();
      view.requests.clear();
      message.requests.forEach(upsertRequest);
    } else if (message.t === "delta" && view.started) {
      squads.update(message.squads, message.gone);
      (message.requests || []).forEach(upsertRequest);
      for (const id of message.closed || []) {
        const marker = view.requests.get(id);
        if (marker) marker.remove();
        view.requests.delete(id);
      }
    } else {
      return;
    }
    view.at = message.at;
    $("clock").textContent = Page.time(view.at);
    if (message.figures) view.figures = message.figures;
    if (message.ticker) addTicker(message.ticker);
    setStatus("live");
    drawLinks();
    updatePanel();
  }

  function watchdog() {
    if (view.lastMessage && Date.now() - view.lastMessage > STALE_MS) setStatus("stale");
    // the clock runs on between messages (the hub's time, moved on by the local clock)
    if (view.at) $("clock").textContent = Page.time(view.at + (Date.now() - view.lastMessage) / 1000);
  }

  // ---- drawing -----------------------------------------------------------------------------

  function drawDistricts() {
    layers.districts.clearLayers();
    view.labels = [];
    const all = [];
    for (const d of view.districts) {
      // GeoJSON rings are [lon, lat]; Leaflet wants [lat, lon].
      const rings = d.boundary.coordinates.map((ring) => ring.map(([lon, lat]) => [lat, lon]));
      const shape = L.polygon(rings, {
        color: "#4a7aa8", weight: 1.5, fillColor: "#15314d", fillOpacity: 0.55, interactive: false,
      }).addTo(layers.districts);
      // "Laocheng District" -> "Laocheng": the urban districts are small on a city-wide view.
      const label = Page.lang === "zh" ? d.name_zh : d.name_en.replace(/ District$/, "");
      shape.bindTooltip(Page.tip(label), { permanent: true, direction: "center", className: "district-label" });
      view.labels.push(shape.getTooltip());
      all.push(shape.getBounds());
      for (const [lat, lon] of d.depots) {
        L.circleMarker([lat, lon], { radius: 3, color: "#6d8aa6", weight: 1, fillOpacity: 0, interactive: false })
          .addTo(layers.districts);
      }
    }
    if (all.length) {
      view.bounds = all.reduce((a, b) => a.extend(b), L.latLngBounds(all[0].getSouthWest(), all[0].getNorthEast()));
      map.fitBounds(view.bounds, fitPadding());
    }
    placeLabels();
  }

  // The district names never cover each other (common/map-labels.js).
  const placeLabels = MapLabels.keepApart(map, () => view.labels);

  /* A wall's browser often changes size after the page loads (full screen, kiosk mode):
   * the whole city again, clear of the panels. */
  map.on("resize", () => {
    if (view.bounds) map.fitBounds(view.bounds, { ...fitPadding(), animate: false });
  });

  /* Keep the city clear of the panels: the title, the side panel on the right and the
   * ticker at the bottom (on a phone both are below the map). */
  function fitPadding() {
    const narrow = map.getSize().x < 700;
    return narrow ? { paddingTopLeft: [6, 60], paddingBottomRight: [6, 6] }
      : { paddingTopLeft: [20, 70], paddingBottomRight: [360, 170] };
  }

  function squadStyle(row) {
    const colour = (view.units.get(row[1]) || {}).colour || "#e0e0e0";
    if (!(row[4] & ON_DUTY)) return { radius: 3.5, stroke: "#78909c", dashed: true, fill: null };
    if (row[4] & BUSY) return { radius: 5, stroke: "#ffffff", fill: colour };
    return { radius: 4.5, stroke: colour, fill: colour + "59" }; // 35% fill
  }

  function squadTip(row) {
    const unit = named(view.units.get(row[1]), row[1]);
    const status = !(row[4] & ON_DUTY) ? t("off_duty") : row[4] & BUSY ? t("busy_squad") : t("free_squad");
    return "<b>" + escape(row[0]) + "</b> · " + escape(unit) + "<br>" + escape(status);
  }

  /* The colour comes from wall.css (.req.<state> i): the CSP allows no inline style. */
  function requestIcon(r) {
    const late = Boolean(r.overdue);
    return L.divIcon({
      className: "req " + (STATE_COLOURS[r.state] ? r.state : "unknown") + (late ? " overdue" : ""),
      iconSize: late ? [22, 22] : [14, 14], iconAnchor: late ? [11, 11] : [7, 7], html: "<i></i>",
    });
  }

  function upsertRequest(r) {
    let marker = view.requests.get(r.id);
    if (!marker) {
      marker = L.marker([r.lat, r.lon], {
        icon: requestIcon(r), keyboard: false, zIndexOffset: r.overdue ? 1000 : 0,
      }).addTo(layers.requests);
      marker.bindTooltip("", { className: "tip" });
      view.requests.set(r.id, marker);
    } else {
      if (marker.data.state !== r.state || marker.data.overdue !== r.overdue) {
        marker.setIcon(requestIcon(r));
        marker.setZIndexOffset(r.overdue ? 1000 : 0);
      }
      if (marker.data.lat !== r.lat || marker.data.lon !== r.lon) marker.setLatLng([r.lat, r.lon]);
    }
    marker.data = r;
    marker.setTooltipContent(requestTip(r));
  }

  function drawLinks() {
    layers.links.clearLayers();
    for (const marker of view.requests.values()) {
      const r = marker.data;
      const squad = r.squad && squads.get(r.squad);
      if (!squad || !["offered", "accepted", "en_route"].includes(r.state)) continue;
      L.polyline([[squad[2], squad[3]], [r.lat, r.lon]], {
        color: STATE_COLOURS[r.state], weight: 1.2, opacity: 0.7, dashArray: "4 4", interactive: false,
      }).addTo(layers.links);
    }
  }

  function requestTip(r) {
    const category = named(view.categories.get(r.category), r.category);
    const unit = named(view.units.get(r.unit), r.unit);
    const lines = ["<b>" + escape(r.id) + "</b> · " + escape(category),
      escape(stateName(r.state)) + " · " + escape(Page.ago(r.received_at)), escape(unit)];
    if (r.squad) lines.push(escape(t("squad") + " " + r.squad));
    if (r.overdue) lines.push("<b class=\"late\">" + escape(t("missed")[r.overdue] || t("overdue")) + "</b>");
    return lines.join("<br>");
  }

  function escape(text) {
    return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  // ---- the side panel and the ticker ---------------------------------------------------------

  function updatePanel() {
    const f = view.figures;
    const requests = [...view.requests.values()].map((m) => m.data);
    const late = requests.filter((r) => r.overdue)
      .sort((a, b) => (a.overdue_since || 0) - (b.overdue_since || 0));
    setText("n-open", f.open ?? requests.length);
    setText("n-overdue", f.overdue ?? late.length);
    setText("n-dispatched", f.dispatched_today ?? "–");
    setText("n-arrival", f.median_arrival_s == null ? "–" : duration(f.median_arrival_s));
    $("n-overdue").parentElement.classList.toggle("alarm", late.length > 0);

    $("late-box").hidden = late.length === 0;
    $("late").replaceChildren(...late.slice(0, LATE_LINES).map((r) => Page.el("li", null,
      Page.el("span", { class: "what" }, named(view.categories.get(r.category), r.category)),
      Page.el("span", { class: "how-long" }, duration(view.at - r.overdue_since)),
      Page.el("span", { class: "why" }, t("missed")[r.overdue] || t("overdue")),
      Page.el("span", { class: "who" }, named(view.units.get(r.unit), r.unit) + " · " + r.id))));

    let online = 0, busy = 0, free = 0;
    const onlineBy = new Map(), busyBy = new Map();
    for (const row of squads.rows()) {
      online += 1;
      onlineBy.set(row[1], (onlineBy.get(row[1]) || 0) + 1);
      if (!(row[4] & ON_DUTY)) continue; // online, off duty: neither busy nor free
      if (row[4] & BUSY) {
        busy += 1;
        busyBy.set(row[1], (busyBy.get(row[1]) || 0) + 1);
      } else {
        free += 1;
      }
    }
    setText("n-online", online);
    setText("n-busy", busy);
    setText("n-free", free);

    const byState = new Map();
    for (const r of requests) byState.set(r.state, (byState.get(r.state) || 0) + 1);
    fillLegend("states", STATES.map((state) => ({
      colour: STATE_COLOURS[state], name: stateName(state), count: byState.get(state) || 0,
    })));
    fillLegend("units", [...view.units.entries()].map(([code, unit]) => ({
      colour: unit.colour, name: named(unit, code),
      count: (busyBy.get(code) || 0) + "/" + (onlineBy.get(code) || 0), zero: !onlineBy.get(code),
    })));
  }

  /* "4:05" under an hour, "1 h 20 min" above. */
  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 3600) return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
    return Math.floor(s / 3600) + " " + t("hour") + " " + Math.floor((s % 3600) / 60) + " " + t("min");
  }

  function addTicker(items) {
    for (const item of items) {
      const key = item.unit + "/" + item.id;
      if (view.tickerSeen.has(key)) continue;
      view.tickerSeen.add(key);
      view.ticker.unshift(item);
    }
    view.ticker.sort((a, b) => (b.at || 0) - (a.at || 0));
    view.ticker.length = Math.min(view.ticker.length, TICKER_LINES);
    view.tickerSeen = new Set(view.ticker.map((item) => item.unit + "/" + item.id));
    $("ticker").replaceChildren(...view.ticker.map(tickerLine));
  }

  function tickerLine(item) {
    const notice = item.type === "notice_issued";
    let what = t("events")[item.type] || item.type;
    if (notice) what += " · " + (t("missed")[item.notice_kind] || item.notice_kind || "")
      + " · " + (Page.lang === "zh" ? item.level + t("level") : t("level") + " " + item.level);
    const request = item.request && view.requests.get(item.request);
    const category = request ? named(view.categories.get(request.data.category), request.data.category)
      : item.category ? named(view.categories.get(item.category), item.category) : "";
    return Page.el("li", { class: notice ? "notice" : "" },
      Page.el("time", null, Page.time(item.at)),
      Page.el("span", { class: "what" }, what),
      Page.el("span", { class: "about" }, [category, item.request, item.squad ? t("squad") + " " + item.squad : ""]
        .filter(Boolean).join(" · ")),
      Page.el("span", { class: "unit" }, named(view.units.get(item.unit), item.unit === "-" ? "" : item.unit)));
  }

  function fillLegend(id, rows) {
    $(id).replaceChildren(...rows.map((row) => {
      const swatch = Page.el("i", { class: "swatch" });
      swatch.style.background = row.colour;
      return Page.el("li", { class: row.zero || row.count === 0 ? "zero" : null },
        swatch, Page.el("span", { class: "name", title: row.name }, row.name),
        Page.el("span", { class: "count" }, row.count));
    }));
  }

  function setText(id, value) {
    $(id).textContent = value;
  }

  function setStatus(state) {
    const element = $("status");
    element.dataset.state = state;
    element.textContent = t(state === "offline" ? "offline" : state);
  }

  window.wallView = { squads, view }; // for the frames-per-second tool and the tests

  start();
})();
