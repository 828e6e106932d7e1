/* Dispatch wall map: districts, squads and open requests, redrawn from GET /api/v1/map every
 * second. The wall signs in once (signin.html, an HttpOnly session cookie that this script
 * never sees); no token ever appears in the address bar. No tile layer: walls often have no
 * internet, so the district boundaries are the base map. */
(function () {
  "use strict";

  const POLL_MS = 1000;
  const STALE_MS = 5000; // no fresh data for this long: say so on the wall
  const LANG_KEY = "dispatch.wall.lang";

  const STATES = ["queued", "offered", "accepted", "en_route", "on_scene", "deferred", "disputed"];
  const STATE_COLOURS = {
    queued: "#ff1744", offered: "#ffea00", accepted: "#00e5ff", en_route: "#2979ff",
    on_scene: "#00e676", deferred: "#d500f9", disputed: "#ff9100", received: "#b0bec5",
  };
  // Units get colours in file order; distinct enough for a dozen units on a dark map.
  const UNIT_PALETTE = ["#4fc3f7", "#ffd54f", "#ff8a65", "#f06292", "#f48fb1", "#aed581",
    "#ba68c8", "#a1887f", "#4db6ac", "#7986cb", "#e0e0e0", "#dce775", "#90caf9"];

  const TEXT = {
    zh: {
      title: "洛阳市城市应急联动 · 实时态势", connecting: "连接中…", live: "实时",
      stale: "数据中断", denied: "需要登录", squads: "分队", online: "在线", busy: "忙碌",
      free: "空闲", open_requests: "未结诉求", units: "服务单位", free_squad: "空闲分队",
      busy_squad: "执行任务", off_duty: "未上岗", request: "诉求",
      switch: "EN", ago: "前", min: "分", sec: "秒", squad: "分队", overdue: "超时",
      missed: { accept: "超时未接单", arrive: "超时未到场", resolve: "超时未办结", promise: "逾期未兑现承诺" },
      states: { queued: "待派", offered: "已派待接", accepted: "已接单", en_route: "在途",
        on_scene: "到场处置", deferred: "承诺办结", disputed: "管辖争议", received: "已受理" },
    },
    en: {
      title: "Luoyang City Linkage · Live Situation", connecting: "connecting…", live: "live",
      stale: "no fresh data", denied: "sign-in needed", squads: "Squads", online: "online",
      busy: "busy", free: "free", open_requests: "Open requests", units: "Units",
      free_squad: "free squad", busy_squad: "on a job", off_duty: "off duty", request: "request",
      switch: "中文", ago: "ago", min: "min", sec: "s", squad: "squad", overdue: "overdue",
      missed: { accept: "not accepted in time", arrive: "not on scene in time",
        resolve: "not resolved in time", promise: "promise broken" },
      states: { queued: "waiting", offered: "offered", accepted: "accepted", en_route: "en route",
        on_scene: "on scene", deferred: "promised", disputed: "disputed", received: "received" },
    },
  };

  const view = {
    lang: takeLanguage(),
    units: new Map(), // code -> {name_zh, name_en, colour}
    categories: new Map(),
    districts: [],
    squads: new Map(), // id -> circle marker
    requests: new Map(), // id -> marker
    links: new Map(), // request id -> polyline to its squad
    lastGood: 0,
    lastMap: null,
    timer: null,
  };

  const map = L.map("map", {
    zoomControl: false, attributionControl: false, preferCanvas: true, zoomSnap: 0.25,
  });
  L.control.zoom({ position: "bottomright" }).addTo(map);
  const layers = {
    districts: L.layerGroup().addTo(map),
    links: L.layerGroup().addTo(map),
    squads: L.layerGroup().addTo(map),
    requests: L.layerGroup().addTo(map),
  };

  /* ?lang=en|zh sets a wall's language once (remembered like the toggle); default zh-CN. */
  function takeLanguage() {
    const asked = new URLSearchParams(location.search).get("lang");
    if (asked === "en" || asked === "zh") localStorage.setItem(LANG_KEY, asked);
    return localStorage.getItem(LANG_KEY) === "en" ? "en" : "zh";
  }

  const t = (key) => TEXT[view.lang][key] ?? key;
  const stateName = (state) => TEXT[view.lang].states[state] || state;
  const named = (item, code) => (item ? (view.lang === "zh" ? item.name_zh : item.name_en) : code);

  // ---- talking to the hub ------------------------------------------------------------------

  class Denied extends Error {}

  async function api(path) {
    const response = await fetch(path, { credentials: "same-origin" });
    if (response.status === 401 || response.status === 403) throw new Denied(path);
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return response.json();
  }

  async function start() {
    try {
      const [units, categories, districts] = await Promise.all([
        api("/api/v1/units"), api("/api/v1/categories"), api("/api/v1/districts")]);
      units.forEach((u, i) => view.units.set(u.code, { ...u, colour: UNIT_PALETTE[i % UNIT_PALETTE.length] }));
      categories.forEach((c) => view.categories.set(c.code, c));
      view.districts = districts;
    } catch (error) {
      if (error instanceof Denied) return signIn();
      setStatus("stale");
      view.timer = setTimeout(start, 2000); // the hub may still be starting
      return;
    }
    drawDistricts();
    applyLanguage();
    poll();
  }

  async function poll() {
    try {
      const data = await api("/api/v1/map");
      view.lastGood = Date.now();
      view.lastMap = data;
      render(data);
      setStatus("live");
    } catch (error) {
      if (error instanceof Denied) return signIn();
      if (Date.now() - view.lastGood > STALE_MS) setStatus("stale");
    }
    view.timer = setTimeout(poll, POLL_MS);
  }

  /* The session ended (signed out, expired, account disabled): sign in again, then back. */
  function signIn() {
    setStatus("denied");
    const next = location.pathname + location.search;
    const lang = view.lang === "en" ? "&lang=en" : "";
    location.assign("/signin.html?next=" + encodeURIComponent(next) + lang);
  }

  // ---- drawing -----------------------------------------------------------------------------

  function drawDistricts() {
    layers.districts.clearLayers();
    const all = [];
    for (const d of view.districts) {
      // GeoJSON rings are [lon, lat]; Leaflet wants [lat, lon].
      const rings = d.boundary.coordinates.map((ring) => ring.map(([lon, lat]) => [lat, lon]));
      const shape = L.polygon(rings, {
        color: "#4a7aa8", weight: 1.5, fillColor: "#15314d", fillOpacity: 0.55, interactive: false,
      }).addTo(layers.districts);
      shape.bindTooltip("", { permanent: true, direction: "center", className: "district-label" });
      d.layer = shape;
      all.push(shape.getBounds());
      for (const [lat, lon] of d.depots) {
        L.circleMarker([lat, lon], { radius: 3, color: "#6d8aa6", weight: 1, fillOpacity: 0, interactive: false })
          .addTo(layers.districts);
      }
    }
    if (all.length) {
      const bounds = all.reduce((a, b) => a.extend(b), L.latLngBounds(all[0].getSouthWest(), all[0].getNorthEast()));
      // The side panel covers the right of the screen: keep the city clear of it.
      map.fitBounds(bounds, { paddingTopLeft: [20, 70], paddingBottomRight: [330, 20] });
    }
  }

  function squadStyle(squad) {
    const colour = (view.units.get(squad.unit) || {}).colour || "#e0e0e0";
    if (!squad.on_duty) return { radius: 4, color: "#78909c", weight: 1.5, dashArray: "2 2", fillOpacity: 0 };
    if (squad.busy) return { radius: 6, color: "#ffffff", weight: 1.5, fillColor: colour, fillOpacity: 1 };
    return { radius: 5, color: colour, weight: 2, fillColor: colour, fillOpacity: 0.35, dashArray: null };
  }

  /* The colour comes from wall.css (.req.<state> i): the CSP allows no inline style. */
  function requestIcon(state, overdue) {
    return L.divIcon({
      className: "req " + (STATE_COLOURS[state] ? state : "unknown") + (overdue ? " overdue" : ""),
      iconSize: [14, 14],
      iconAnchor: [7, 7], html: "<i></i>",
    });
  }

  function render(data) {
    const squadsAt = new Map();
    syncLayers(view.squads, data.squads, (s) => {
      squadsAt.set(s.id, [s.lat, s.lon]);
      return s;
    }, upsertSquad);
    syncLayers(view.requests, data.requests, (r) => r, upsertRequest);
    drawLinks(data.requests, squadsAt);
    updateCounters(data);
    document.getElementById("clock").textContent = new Date(data.at * 1000).toLocaleTimeString(
      view.lang === "zh" ? "zh-CN" : "en-GB", { hour12: false });
  }

  /* Update markers in place, add new ones, remove the ones that are gone: no flicker. */
  function syncLayers(markers, items, prepare, upsert) {
    const seen = new Set();
    for (const item of items) {
      seen.add(item.id);
      upsert(prepare(item));
    }
    for (const [id, marker] of markers) {
      if (!seen.has(id)) {
        marker.remove();
        markers.delete(id);
      }
    }
  }

  function upsertSquad(s) {
    let marker = view.squads.get(s.id);
    if (!marker) {
      marker = L.circleMarker([s.lat, s.lon], squadStyle(s)).addTo(layers.squads);
      marker.bindTooltip("", { className: "tip" });
      view.squads.set(s.id, marker);
    } else {
      marker.setLatLng([s.lat, s.lon]);
      marker.setStyle(squadStyle(s));
    }
    marker.data = s;
    marker.setTooltipContent(squadTip(s));
  }

  function upsertRequest(r) {
    let marker = view.requests.get(r.id);
    if (!marker) {
      marker = L.marker([r.lat, r.lon], { icon: requestIcon(r.state, r.overdue), keyboard: false }).addTo(layers.requests);
      marker.bindTooltip("", { className: "tip" });
      view.requests.set(r.id, marker);
    } else if (marker.data.state !== r.state || marker.data.overdue !== r.overdue) {
      marker.setIcon(requestIcon(r.state, r.overdue));
    }
    marker.data = r;
    marker.setTooltipContent(requestTip(r));
  }

  function drawLinks(requests, squadsAt) {
    layers.links.clearLayers();
    for (const r of requests) {
      const from = r.squad && squadsAt.get(r.squad);
      if (!from || !["offered", "accepted", "en_route"].includes(r.state)) continue;
      L.polyline([from, [r.lat, r.lon]], {
        color: STATE_COLOURS[r.state], weight: 1.2, opacity: 0.7, dashArray: "4 4", interactive: false,
      }).addTo(layers.links);
    }
  }

  function squadTip(s) {
    const unit = named(view.units.get(s.unit), s.unit);
    const status = !s.on_duty ? t("off_duty") : s.busy ? t("busy_squad") : t("free_squad");
    return "<b>" + escape(s.id) + "</b> · " + escape(unit) + "<br>" + status;
  }

  function requestTip(r) {
    const category = named(view.categories.get(r.category), r.category);
    const unit = named(view.units.get(r.unit), r.unit);
    const age = view.lastMap ? Math.max(0, view.lastMap.at - r.received_at) : 0;
    const lines = ["<b>" + escape(r.id) + "</b> · " + escape(category),
      stateName(r.state) + " · " + formatAge(age) + " " + (view.lang === "zh" ? "" : t("ago")), escape(unit)];
    if (r.squad) lines.push(t("squad") + " " + escape(r.squad));
    if (r.overdue) lines.push("<b class=\"late\">" + escape(t("missed")[r.overdue] || t("overdue")) + "</b>");
    return lines.join("<br>");
  }

  function formatAge(seconds) {
    const m = Math.floor(seconds / 60);
    const s = Math.floor(seconds % 60);
    const text = m ? m + " " + t("min") + " " + s + " " + t("sec") : s + " " + t("sec");
    return view.lang === "zh" ? text.replace(/ /g, "") + t("ago") : text;
  }

  function escape(text) {
    return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  // ---- counters and legend -------------------------------------------------------------------

  function updateCounters(data) {
    const onDuty = data.squads.filter((s) => s.on_duty);
    const busy = data.squads.filter((s) => s.busy).length;
    setText("n-online", data.squads.length);
    setText("n-busy", busy);
    setText("n-free", onDuty.filter((s) => !s.busy).length);
    setText("n-open", data.requests.length);
    setText("n-overdue", data.requests.filter((r) => r.overdue).length);

    const byState = countBy(data.requests, (r) => r.state);
    fillLegend("states", STATES.map((state) => ({
      colour: STATE_COLOURS[state], name: stateName(state), count: byState.get(state) || 0,
    })));

    const online = countBy(data.squads, (s) => s.unit);
    const working = countBy(data.squads.filter((s) => s.busy), (s) => s.unit);
    fillLegend("units", [...view.units.entries()].map(([code, unit]) => ({
      colour: unit.colour, name: named(unit, code),
      count: (working.get(code) || 0) + "/" + (online.get(code) || 0), zero: !online.get(code),
    })));
  }

  function countBy(items, key) {
    const counts = new Map();
    for (const item of items) counts.set(key(item), (counts.get(key(item)) || 0) + 1);
    return counts;
  }

  function fillLegend(id, rows) {
    const list = document.getElementById(id);
    list.replaceChildren(...rows.map((row) => {
      const li = document.createElement("li");
      if (row.zero || row.count === 0) li.className = "zero";
      const swatch = document.createElement("i");
      swatch.className = "swatch";
      swatch.style.background = row.colour;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = row.name;
      name.title = row.name;
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = row.count;
      li.append(swatch, name, count);
      return li;
    }));
  }

  function setText(id, value) {
    document.getElementById(id).textContent = value;
  }

  function setStatus(state) {
    const element = document.getElementById("status");
    element.dataset.state = state;
    element.textContent = t(state);
  }

  // ---- language ------------------------------------------------------------------------------

  function applyLanguage() {
    document.documentElement.lang = view.lang === "zh" ? "zh-CN" : "en";
    for (const element of document.querySelectorAll("[data-i18n]")) {
      if (element.id !== "status") element.textContent = t(element.dataset.i18n);
    }
    setStatus(document.getElementById("status").dataset.state);
    document.getElementById("lang").textContent = t("switch");
    document.title = t("title");
    for (const d of view.districts) {
      // "Laocheng District" -> "Laocheng": the urban districts are small on a city-wide view.
      if (d.layer) d.layer.setTooltipContent(view.lang === "zh" ? d.name_zh : d.name_en.replace(/ District$/, ""));
    }
    if (view.lastMap) render(view.lastMap);
  }

  document.getElementById("lang").addEventListener("click", () => {
    view.lang = view.lang === "zh" ? "en" : "zh";
    localStorage.setItem(LANG_KEY, view.lang);
    applyLanguage();
  });

  applyLanguage();
  start();
})();
