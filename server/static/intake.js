/* The intake console: a call-taker records a request by keyboard alone.
 *
 *   phone ─Tab/Enter→ category ─Tab/Enter→ description ─Tab→ address ─Enter→ send (Ctrl+Enter)
 *
 * The caller's earlier requests come as soon as the number is typed (POST
 * /api/v1/callers/history: the number travels in the body, never in a URL); the category is
 * found by Chinese, pinyin, initials or English ("gs" finds 供水管道爆裂), in this page, by the
 * rule of server/city/search.py (Page.search); the address from the
 * city's gazetteer (GET /api/v1/places) or a click on the map; before sending, the triage the
 * intake will make and the possible duplicates (POST /api/v1/requests/preview). The send
 * carries an Idempotency-Key bound to its content: a double press or a retry after a lost
 * answer gives the first request back, never a twin. The seat's own requests are polled
 * (GET /api/v1/intake/recent): call-takers do not watch the center feed. */
(function () {
  "use strict";

  const RECENT_POLL_MS = 3000;
  const HISTORY_DELAY_MS = 200; // a pause in typing the number: look the caller up
  const PLACES_DELAY_MS = 100;
  const SENT_KEPT_MS = 120000; // a sent request is listed from its answer until the ledger has it
  const LOOKUP_PHONE = /^\+?[0-9]{7,20}$/;
  const PHONE = /^\+?[0-9]{3,20}$/;
  const FINAL = new Set(["resolved", "cancelled", "transferred"]);
  const PLACE_ZOOM = 13; // a chosen place: near enough to see the duplicate radius

  Page.texts({
    zh: {
      title: "洛阳市城市应急联动 · 受理台", forbidden: "本页面供接线员使用；此账号不能受理。",
      phone: "来电号码", phone_hint: "例如 13800000000", category: "诉求类别",
      category_hint: "输入中文、拼音首字母或英文，如 gs", description: "诉求描述",
      description_hint: "来电人所述情况", address: "地点", address_note: "（或在地图上点击）",
      address_hint: "街道、村庄或地标，如 wcgy", caller_lang: "来电人短信语言",
      triage: "分派预览", triage_wait: "选择类别和地点后显示去向。", send: "提交",
      send_anyway: "仍然提交", new_call: "新来电", recent: "本席最近受理",
      recent_empty: "本班尚无受理记录。", keys: "快捷键", key_tab: "下一项：号码 → 类别 → 描述 → 地点 → 提交",
      key_pick: "在候选中选择", key_digit: "选第 n 个类别", key_send: "提交", key_new: "新来电（清空）",
      key_esc: "关闭候选或详情", close: "关闭",
      duplicates_confirm: "可能重复：再按 Ctrl+Enter 仍然提交，或按 Alt+N 放弃。",
      history_none: "此号码此前无诉求记录", history_one: "此号码此前诉求 1 条", history_some: "此号码此前诉求 {n} 条",
      history_open: "；其中 {n} 条未办结",
      history_partial: "（台账暂不可用，仅显示实时数据）",
      dispatch_to: "派往", transfer_to: "转", not_dispatched: "不派单，记录后移交",
      outside_city: "该地点不在本市辖区内", no_unit: "该区无单位受理此类诉求",
      duplicates_title: "可能重复：{n} 条同类诉求在 {r} 米内（{h} 小时内）", metres: "米",
      need_phone: "请输入来电号码（3–20 位数字，可带 +）", need_category: "请选择诉求类别",
      need_description: "请填写诉求描述", need_location: "请选择地点：输入后按 Enter，或在地图上点击",
      no_place: "无匹配地点，可在地图上点击", no_category: "无匹配类别",
      created: "已受理，诉求编号", took: "用时 {s} 秒",
      offered_to: "已派分队 {s}", queued: "等待分队接单", transferred: "已移交 {s}",
      unsure: "未确认是否提交成功：请再按 Ctrl+Enter 重试（不会重复提交）",
      map_point: "地图选点", detail_state: "状态", detail_category: "类别", detail_unit: "单位",
      detail_district: "区", detail_address: "地址", detail_description: "描述",
      detail_received: "受理时间", detail_squad: "分队",
      routes: { police: "110 报警", fire: "119 火警", medical: "120 急救" },
      events: { received: "受理", queued: "进入待派", transferred: "移交", offered: "派单",
        accepted: "接单", en_route: "出发", arrived: "到场", resolved: "办结", deferred: "承诺办结时间",
        disputed: "提出管辖争议", cancelled: "撤销", note: "备注", reopened: "重新办理",
        citizen_message_queued: "短信排队", citizen_message_delivered: "短信送达",
        citizen_message_attempt: "短信发送", citizen_message_failed: "短信发送失败",
        notice_issued: "督办通知", notice_closed: "督办销号", offer_expired: "派单未响应，重新派单",
        upheld: "裁决：维持原单位", reassigned: "裁决：改派", reassigned_in: "改派转入",
        squad_offline: "分队离线", assist_requested: "请求协办" },
      states: { received: "已受理", queued: "待派", offered: "已派待接", accepted: "已接单",
        en_route: "在途", on_scene: "到场处置", deferred: "承诺办结", disputed: "管辖争议",
        resolved: "已办结", cancelled: "已撤销", transferred: "已移交" },
    },
    en: {
      title: "Luoyang City Linkage · Intake", forbidden: "This page is for call-takers; this account cannot record requests.",
      phone: "Caller's number", phone_hint: "e.g. 13800000000", category: "Category",
      category_hint: "Chinese, pinyin initials or English, e.g. gs", description: "Description",
      description_hint: "What the caller reports", address: "Location", address_note: "(or click the map)",
      address_hint: "Street, village or landmark, e.g. wcgy", caller_lang: "Caller's text messages in",
      triage: "Where it goes", triage_wait: "Shown once category and location are set.", send: "Send",
      send_anyway: "Send anyway", new_call: "New call", recent: "This seat's requests",
      recent_empty: "Nothing recorded this shift yet.", keys: "Keys", key_tab: "Next: number → category → description → location → send",
      key_pick: "Choose among the suggestions", key_digit: "Choose the n-th category", key_send: "Send",
      key_new: "New call (clear)", key_esc: "Close suggestions or details", close: "Close",
      duplicates_confirm: "Possible duplicate: Ctrl+Enter again to send anyway, Alt+N to drop it.",
      history_none: "No earlier requests from this number", history_one: "1 earlier request from this number",
      history_some: "{n} earlier requests from this number", history_open: ", {n} still open",
      history_partial: "(ledger unavailable: live data only)",
      dispatch_to: "To", transfer_to: "Transfer to", not_dispatched: "not dispatched: recorded and handed over",
      outside_city: "This location is outside the city's districts", no_unit: "No unit handles this category there",
      duplicates_title: "Possible duplicate: {n} of the same category within {r} m (last {h} h)", metres: "m",
      need_phone: "Enter the caller's number (3–20 digits, + allowed)", need_category: "Choose a category",
      need_description: "Describe the request", need_location: "Choose a location: type and press Enter, or click the map",
      no_place: "No place matches; click the map", no_category: "No category matches",
      created: "Recorded, request number", took: "took {s} s",
      offered_to: "offered to squad {s}", queued: "waiting for a squad", transferred: "handed over to {s}",
      unsure: "Not sure it was recorded: press Ctrl+Enter to retry (it will not be recorded twice)",
      map_point: "point on the map", detail_state: "State", detail_category: "Category", detail_unit: "Unit",
      detail_district: "District", detail_address: "Address", detail_description: "Description",
      detail_received: "Received", detail_squad: "Squad",
      routes: { police: "110 police", fire: "119 fire", medical: "120 ambulance" },
      events: { received: "received", queued: "waiting for a squad", transferred: "handed over",
        offered: "offered", accepted: "accepted", en_route: "on the way", arrived: "on scene",
        resolved: "resolved", deferred: "completion promised", disputed: "jurisdiction disputed",
        cancelled: "cancelled", note: "note", reopened: "reopened",
        citizen_message_queued: "text message queued", citizen_message_delivered: "text message delivered",
        citizen_message_attempt: "text message sent", citizen_message_failed: "text message failed",
        notice_issued: "supervision notice", notice_closed: "notice closed",
        offer_expired: "offer not answered, offered again", upheld: "ruling: stays with its unit",
        reassigned: "ruling: reassigned", reassigned_in: "reassigned in", squad_offline: "squad offline",
        assist_requested: "assistance requested" },
      states: { received: "received", queued: "waiting", offered: "offered", accepted: "accepted",
        en_route: "en route", on_scene: "on scene", deferred: "promised", disputed: "disputed",
        resolved: "resolved", cancelled: "cancelled", transferred: "transferred" },
    },
  });

  const $ = (id) => document.getElementById(id);
  const fill = (text, values) => text.replace(/\{(\w+)\}/g, (_, name) => String(values[name]));
  const zh = () => Page.lang === "zh";

  const view = {
    me: null,
    categories: [], // with .keys for matching
    byCode: new Map(),
    units: new Map(),
    districts: new Map(),
    catMatches: [],
    catIndex: 0,
    places: [],
    placeIndex: 0,
    placeFor: "", // the query the shown places answer
    placeLoading: null, // the promise of the places being fetched
    placeTimer: null,
    chosen: { category: null, lat: null, lon: null, placeName: "" },
    preview: null,
    previewSeq: 0,
    asking: false, // duplicates shown and the call-taker asked to confirm
    attempt: null, // {key, body}: the key stays with the same content
    startedAt: 0,
    sending: false,
    historyTimer: null,
    historySeq: 0,
    sent: [], // {line, at}: answered but maybe not in the seat's list yet
    lastRecent: [], // the seat's list as last polled
  };

  // ---- matching ---------------------------------------------------------------------------

  function matchingCategories(text) {
    return Page.normalise(text) ? Page.search(text, view.categories, (c) => c.keys) : view.categories.slice();
  }

  // ---- names ------------------------------------------------------------------------------

  const named = (item, code) => (item ? (zh() ? item.name_zh : item.name_en) : code || "");
  const categoryName = (code) => named(view.byCode.get(code), code);
  const unitName = (code) => named(view.units.get(code), code);
  const districtName = (code) => named(view.districts.get(code), code);
  const stateName = (state) => Page.t("states")[state] || state;
  const routeName = (route) => Page.t("routes")[route] || route;

  // ---- start ------------------------------------------------------------------------------

  const map = L.map("map", { zoomControl: true, attributionControl: false, zoomSnap: 0.25 });
  const layers = { districts: L.layerGroup().addTo(map), duplicates: L.layerGroup().addTo(map) };
  let pin = null;
  let radius = null;
  let cityBounds = null; // the whole city: the view of a new call

  async function start() {
    Page.applyTexts();
    document.title = Page.t("title");
    $("lang").addEventListener("click", Page.switchLanguage);
    $("signout").addEventListener("click", Page.signOut);
    tick();
    setInterval(tick, 1000);
    const me = await Page.api("GET", "/api/v1/session");
    view.me = me;
    $("seat").textContent = me.name || me.username;
    if (me.role !== "calltaker" && me.role !== "admin") {
      $("forbidden").hidden = false;
      for (const el of $("intake").elements) el.disabled = true;
      return;
    }
    const [categories, units, districts] = await Promise.all([
      Page.api("GET", "/api/v1/categories"), Page.api("GET", "/api/v1/units"),
      Page.api("GET", "/api/v1/districts")]);
    view.categories = categories.map((c) => ({ ...c, keys: Page.searchKeys(c.name_zh, c.pinyin, c.name_en) }));
    for (const c of view.categories) view.byCode.set(c.code, c);
    for (const u of units) view.units.set(u.code, u);
    for (const d of districts) view.districts.set(d.code, d);
    drawDistricts(districts);
    wire();
    newCall();
    pollRecent();
  }

  function tick() {
    $("clock").textContent = Page.time(Date.now() / 1000);
  }

  function drawDistricts(districts) {
    const bounds = [];
    const labels = [];
    for (const d of districts) {
      const rings = d.boundary.coordinates.map((ring) => ring.map(([lon, lat]) => [lat, lon]));
      const shape = L.polygon(rings, { color: "#5b7da0", weight: 1.5, fillColor: "#f4f7fa", fillOpacity: 0.9,
        interactive: false }).addTo(layers.districts);
      const label = zh() ? d.name_zh : d.name_en.replace(/ District$/, ""); // room on a small map
      shape.bindTooltip(Page.tip(label), { permanent: true, direction: "center", className: "district-label" });
      labels.push(shape.getTooltip());
      bounds.push(shape.getBounds());
    }
    const placeLabels = MapLabels.keepApart(map, () => labels); // never covering each other
    if (bounds.length) {
      cityBounds = bounds.reduce((a, b) => a.extend(b));
      map.fitBounds(cityBounds, { padding: [10, 10] });
    }
    placeLabels();
    map.on("click", (event) => setLocation(event.latlng.lat, event.latlng.lng, ""));
  }

  function wire() {
    const phone = $("phone");
    phone.addEventListener("input", () => { began(); lookUpCallerSoon(); clearError("phone"); });
    phone.addEventListener("change", lookUpCaller);
    phone.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.ctrlKey) {
        event.preventDefault();
        $("category").focus();
      }
    });

    const category = $("category");
    category.addEventListener("focus", () => { category.select(); showCategories(); });
    category.addEventListener("input", () => { began(); showCategories(); clearError("category"); });
    category.addEventListener("blur", () => setTimeout(() => hideList("category"), 150));
    category.addEventListener("keydown", onCategoryKey);

    $("description").addEventListener("input", () => { began(); clearError("description"); });

    const address = $("address");
    address.addEventListener("input", () => { began(); findPlacesSoon(); clearError("address"); });
    address.addEventListener("blur", () => setTimeout(() => hideList("place"), 150));
    address.addEventListener("keydown", onAddressKey);

    $("intake").addEventListener("submit", (event) => { event.preventDefault(); send(); });
    $("new-call").addEventListener("click", newCall);
    document.addEventListener("keydown", onGlobalKey, true);
    for (const list of [$("history-list"), $("duplicate-list"), $("recent")]) {
      list.addEventListener("click", onLineClick);
    }
  }

  function began() {
    if (!view.startedAt) view.startedAt = performance.now();
  }

  // ---- keys -------------------------------------------------------------------------------

  function onGlobalKey(event) {
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      event.preventDefault();
      send();
    } else if (event.altKey && !event.ctrlKey && event.code === "KeyN") {
      event.preventDefault();
      newCall();
    } else if (event.altKey && !event.ctrlKey && /^(Digit|Numpad)[1-9]$/.test(event.code)) {
      event.preventDefault();
      const n = Number(event.code.slice(-1));
      const matches = matchingCategories(typedSinceChoice("category") ? $("category").value : "");
      if (matches[n - 1]) {
        const inCategory = document.activeElement === $("category");
        chooseCategory(matches[n - 1]);
        if (inCategory || document.activeElement === $("phone")) $("description").focus();
      }
    } else if (event.key === "Escape") {
      hideList("category");
      hideList("place");
    }
  }

  function onCategoryKey(event) {
    const open = !$("category-list").hidden;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      if (!open) showCategories();
      moveHighlight("category", event.key === "ArrowDown" ? 1 : -1);
    } else if (event.key === "Enter" && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      const picked = view.catMatches[view.catIndex];
      if (picked) {
        chooseCategory(picked);
        $("description").focus();
      }
    } else if (event.key === "Tab" && !event.shiftKey && open && typedSinceChoice("category")) {
      const picked = view.catMatches[view.catIndex];
      if (picked) chooseCategory(picked); // and Tab goes on to the description
    }
  }

  async function onAddressKey(event) {
    const open = !$("place-list").hidden;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      moveHighlight("place", event.key === "ArrowDown" ? 1 : -1);
    } else if (event.key === "Enter" && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      const place = await currentPlace();
      if (place) {
        choosePlace(place);
        $("send").focus();
      }
    } else if (event.key === "Tab" && !event.shiftKey && open && typedSinceChoice("address")) {
      const place = view.places[view.placeIndex];
      if (place && view.placeFor === $("address").value.trim()) choosePlace(place);
    }
  }

  /* The field's text is not what was last chosen there: the call-taker typed a new query. */
  function typedSinceChoice(field) {
    const value = $(field).value.trim();
    if (!value) return false;
    if (field === "category") return !view.chosen.category || value !== categoryLabel(view.byCode.get(view.chosen.category));
    return value !== view.chosen.placeName;
  }

  // ---- category -----------------------------------------------------------------------------

  function categoryLabel(category) {
    return category ? named(category, category.code) : "";
  }

  function showCategories() {
    const text = $("category").value;
    const chosen = view.chosen.category && text === categoryLabel(view.byCode.get(view.chosen.category));
    view.catMatches = matchingCategories(chosen ? "" : text);
    view.catIndex = 0;
    if (chosen) view.catIndex = Math.max(0, view.catMatches.findIndex((c) => c.code === view.chosen.category));
    const list = $("category-list");
    if (!view.catMatches.length) {
      list.replaceChildren(Page.el("li", { class: "empty" }, Page.t("no_category")));
    } else {
      list.replaceChildren(...view.catMatches.map((c, i) => Page.el("li", {
        id: "category-option-" + i, role: "option", "aria-selected": String(i === view.catIndex),
        dataset: { index: String(i) },
        onmousedown: (event) => { event.preventDefault(); chooseCategory(c); $("description").focus(); },
      }, Page.el("span", { class: "n" }, i < 9 ? String(i + 1) : ""), named(c, c.code),
      c.route !== "linkage" ? Page.el("span", { class: "tag" }, routeName(c.route)) : null,
      Page.el("span", { class: "sub" }, zh() ? c.name_en : c.name_zh))));
    }
    showList("category");
  }

  function chooseCategory(category) {
    view.chosen.category = category.code;
    $("category").value = categoryLabel(category);
    $("category-chosen").replaceChildren(Page.el("b", null, named(category, category.code)),
      " · ", zh() ? category.name_en : category.name_zh,
      category.route !== "linkage" ? " · " + Page.t("transfer_to") + " " + routeName(category.route) : "");
    hideList("category");
    clearError("category");
    refreshPreview();
  }

  // ---- place ------------------------------------------------------------------------------

  function findPlacesSoon() {
    clearTimeout(view.placeTimer);
    const text = $("address").value.trim();
    if (!text || text === view.chosen.placeName) {
      hideList("place");
      return;
    }
    view.placeTimer = setTimeout(() => { view.placeLoading = findPlaces(text); }, PLACES_DELAY_MS);
  }

  async function findPlaces(text) {
    let found = [];
    try {
      found = await Page.api("GET", "/api/v1/places?limit=8&q=" + encodeURIComponent(text.slice(0, 50)));
    } catch (error) {
      if (error.status === 401) return [];
      found = [];
    }
    if ($("address").value.trim() !== text) return found; // typed on meanwhile
    view.places = found;
    view.placeFor = text;
    view.placeIndex = 0;
    renderPlaces();
    return found;
  }

  /* The highlighted place for the text in the field, waiting for its search if need be. */
  async function currentPlace() {
    const text = $("address").value.trim();
    if (!text) return null;
    if (view.placeFor !== text) {
      clearTimeout(view.placeTimer);
      await findPlaces(text);
    }
    return view.places[view.placeIndex] || null;
  }

  function renderPlaces() {
    const list = $("place-list");
    if (!view.places.length) {
      list.replaceChildren(Page.el("li", { class: "empty" }, Page.t("no_place")));
    } else {
      list.replaceChildren(...view.places.map((p, i) => Page.el("li", {
        id: "place-option-" + i, role: "option", "aria-selected": String(i === view.placeIndex),
        onmousedown: (event) => { event.preventDefault(); choosePlace(p); $("send").focus(); },
      }, zh() ? p.name_zh : p.name_en,
      Page.el("span", { class: "sub" }, (zh() ? p.name_en : p.name_zh) + " · " + districtName(p.district)))));
    }
    showList("place");
  }

  function choosePlace(place) {
    view.chosen.placeName = place.name_zh;
    $("address").value = place.name_zh;
    hideList("place");
    setLocation(place.lat, place.lon, place.name_zh);
  }

  function setLocation(lat, lon, placeName) {
    view.chosen.lat = Math.round(lat * 1e6) / 1e6;
    view.chosen.lon = Math.round(lon * 1e6) / 1e6;
    clearError("address");
    const where = [view.chosen.lat.toFixed(5), view.chosen.lon.toFixed(5)].join(", ");
    $("location").replaceChildren(Page.el("i", { class: "mark" }),
      placeName ? Page.el("b", null, placeName) : Page.t("map_point"), " · " + where);
    const icon = L.divIcon({ className: "pin", iconSize: [18, 18], iconAnchor: [9, 18], html: "<i></i>" });
    if (pin) pin.setLatLng([lat, lon]);
    else pin = L.marker([lat, lon], { icon, keyboard: false, interactive: false }).addTo(map);
    map.setView([lat, lon], Math.max(map.getZoom(), PLACE_ZOOM));
    refreshPreview();
  }

  // ---- lists (combobox) -------------------------------------------------------------------

  function listOf(which) {
    return which === "category" ? { list: $("category-list"), input: $("category") }
      : { list: $("place-list"), input: $("address") };
  }

  function showList(which) {
    const { list, input } = listOf(which);
    if (document.activeElement !== input) return;
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
    updateActive(which);
  }

  function hideList(which) {
    const { list, input } = listOf(which);
    list.hidden = true;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
  }

  function moveHighlight(which, step) {
    const count = which === "category" ? view.catMatches.length : view.places.length;
    if (!count) return;
    if (which === "category") view.catIndex = (view.catIndex + step + count) % count;
    else view.placeIndex = (view.placeIndex + step + count) % count;
    updateActive(which);
  }

  function updateActive(which) {
    const { list, input } = listOf(which);
    const index = which === "category" ? view.catIndex : view.placeIndex;
    const prefix = which === "category" ? "category-option-" : "place-option-";
    for (const item of list.querySelectorAll("[role=option]")) {
      const on = item.id === prefix + index;
      item.setAttribute("aria-selected", String(on));
      if (on) item.scrollIntoView({ block: "nearest" });
    }
    if (list.querySelector("#" + prefix + index)) input.setAttribute("aria-activedescendant", prefix + index);
  }

  // ---- the caller ---------------------------------------------------------------------------

  function lookUpCallerSoon() {
    clearTimeout(view.historyTimer);
    view.historyTimer = setTimeout(lookUpCaller, HISTORY_DELAY_MS);
  }

  /* The caller's number as typed, without the separators people write ("+86 138-0013-8000",
   * "(0379) 6321 1234"): the hub takes digits and a leading +. */
  function callerNumber() {
    return $("phone").value.replace(/[\s\-().]/g, "");
  }

  async function lookUpCaller() {
    clearTimeout(view.historyTimer);
    const phone = callerNumber();
    const seq = ++view.historySeq;
    if (!LOOKUP_PHONE.test(phone)) {
      $("history").hidden = true;
      return;
    }
    let answer;
    try {
      answer = await Page.api("POST", "/api/v1/callers/history", { phone, limit: 10 });
    } catch (error) {
      return;
    }
    if (seq !== view.historySeq) return;
    const lines = answer.requests;
    const open = lines.filter((line) => !FINAL.has(line.state)).length;
    let title = !lines.length ? Page.t("history_none") : lines.length === 1 ? Page.t("history_one")
      : fill(Page.t("history_some"), { n: lines.length });
    if (open) title += fill(Page.t("history_open"), { n: open });
    if (!answer.ledger) title += " " + Page.t("history_partial");
    $("history-title").textContent = title;
    $("history-list").replaceChildren(...lines.map(lineItem));
    $("history").classList.toggle("seen", lines.length > 0);
    $("history").hidden = false;
  }

  function lineItem(line) {
    const where = [line.district ? districtName(line.district) : "", line.address].filter(Boolean).join(" · ");
    const handled = line.unit ? unitName(line.unit) : line.route && line.route !== "linkage" ? routeName(line.route) : "";
    return Page.el("li", null,
      Page.el("a", { class: "id", href: "#" + line.id, dataset: { request: line.id } }, line.id),
      Page.el("span", { class: "what" }, categoryName(line.category)),
      Page.el("span", { class: "state " + line.state }, stateName(line.state)),
      Page.el("span", { class: "when" }, line.received_at ? Page.ago(line.received_at) : ""),
      Page.el("span", { class: "where" }, [where, handled].filter(Boolean).join(" · ")));
  }

  // ---- the preview --------------------------------------------------------------------------

  async function refreshPreview() {
    const { category, lat, lon } = view.chosen;
    view.asking = false;
    showAsking();
    if (!category || lat === null) return;
    const seq = ++view.previewSeq;
    let answer = null;
    let failure = null;
    try {
      answer = await Page.api("POST", "/api/v1/requests/preview", { category, lat, lon });
    } catch (error) {
      failure = error;
    }
    if (seq !== view.previewSeq) return;
    view.preview = answer;
    renderPreview(answer, failure);
  }

  function renderPreview(answer, failure) {
    const triage = $("triage");
    triage.className = "";
    layers.duplicates.clearLayers();
    if (radius) { radius.remove(); radius = null; }
    if (failure) {
      triage.className = "error";
      triage.textContent = Page.t(failure.code) !== failure.code ? Page.t(failure.code) : failure.message;
      $("duplicates").hidden = true;
      if (failure.code === "outside_city") showError("address", Page.t("outside_city"));
      return;
    }
    const district = answer.district ? districtName(answer.district) : "";
    if (answer.route === "linkage") {
      triage.replaceChildren(Page.t("dispatch_to") + " ", Page.el("b", null, unitName(answer.unit)), " · " + district);
    } else {
      triage.className = "transfer";
      triage.replaceChildren(Page.t("transfer_to") + " ", Page.el("b", null, routeName(answer.route)),
        "（" + Page.t("not_dispatched") + "）", district ? " · " + district : "");
    }
    radius = L.circle([view.chosen.lat, view.chosen.lon], { radius: answer.radius_m, color: "#1f6feb", weight: 1,
      dashArray: "4 4", fill: false, interactive: false }).addTo(map);
    const dups = answer.duplicates;
    $("duplicates").hidden = !dups.length;
    if (!dups.length) return;
    $("duplicates-title").textContent = fill(Page.t("duplicates_title"),
      { n: dups.length, r: Math.round(answer.radius_m), h: +(answer.window_s / 3600).toFixed(1) });
    $("duplicate-list").replaceChildren(...dups.map((d) => Page.el("li", null,
      Page.el("a", { class: "id", href: "#" + d.id, dataset: { request: d.id } }, d.id),
      Page.el("span", { class: "what" }, Math.round(d.distance_m) + " " + Page.t("metres")),
      Page.el("span", { class: "state " + d.state }, stateName(d.state)),
      Page.el("span", { class: "when" }, Page.ago(d.received_at)),
      Page.el("span", { class: "where" }, [districtName(d.district), d.address].filter(Boolean).join(" · ")))));
    const icon = L.divIcon({ className: "dup", iconSize: [12, 12], iconAnchor: [6, 6], html: "<i></i>" });
    for (const d of dups) {
      L.marker([d.lat, d.lon], { icon, keyboard: false }).bindTooltip(Page.tip(d.id)).addTo(layers.duplicates);
    }
  }

  function showAsking() {
    $("duplicates-confirm").hidden = !view.asking;
    $("duplicates").classList.toggle("asking", view.asking);
    $("send").classList.toggle("asking", view.asking);
    $("send-label").textContent = Page.t(view.asking ? "send_anyway" : "send");
  }

  // ---- sending ------------------------------------------------------------------------------

  function validate() {
    const problems = [];
    const phone = callerNumber();
    if (!PHONE.test(phone)) problems.push(["phone", Page.t("need_phone")]);
    if (!view.chosen.category) problems.push(["category", Page.t("need_category")]);
    if (!$("description").value.trim()) problems.push(["description", Page.t("need_description")]);
    if (view.chosen.lat === null) problems.push(["address", Page.t("need_location")]);
    for (const [field, text] of problems) showError(field, text);
    return problems;
  }

  async function send() {
    if (view.sending || (view.me && view.me.role !== "calltaker" && view.me.role !== "admin")) return;
    $("form-error").hidden = true;
    const problems = validate();
    if (problems.length) {
      $(problems[0][0]).focus();
      return;
    }
    if (view.preview && view.preview.duplicates.length && !view.asking) {
      view.asking = true; // the second Ctrl+Enter sends
      showAsking();
      $("send").focus();
      return;
    }
    const body = {
      caller_phone: callerNumber(),
      category: view.chosen.category,
      description: $("description").value.trim(),
      lat: view.chosen.lat,
      lon: view.chosen.lon,
      address: $("address").value.trim(),
      lang: $("caller-lang").value,
    };
    const content = JSON.stringify(body);
    if (!view.attempt || view.attempt.body !== content) view.attempt = { key: newKey(), body: content };
    view.sending = true;
    $("send").disabled = true;
    try {
      const answer = await Page.api("POST", "/api/v1/requests", body, { "Idempotency-Key": view.attempt.key });
      done(answer, body);
    } catch (error) {
      failed(error);
    } finally {
      view.sending = false;
      $("send").disabled = false;
    }
  }

  function newKey() {
    // crypto.randomUUID needs a secure context; a hub on the LAN may be plain http.
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return "intake-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function done(answer, body) {
    const took = view.startedAt ? (performance.now() - view.startedAt) / 1000 : 0;
    const line = {
      id: answer.id, state: answer.state, received_at: Date.now() / 1000, category: body.category,
      route: answer.route, unit: answer.unit || undefined, district: answer.district || "",
      address: body.address,
    };
    view.sent = view.sent.filter((s) => s.line.id !== answer.id);
    view.sent.push({ line, at: Date.now() });
    const what = answer.route !== "linkage" ? fill(Page.t("transferred"), { s: routeName(answer.route) })
      : answer.squad ? fill(Page.t("offered_to"), { s: answer.squad }) : Page.t("queued");
    const result = $("result");
    result.replaceChildren(Page.t("created"),
      Page.el("span", { class: "number", id: "result-number" }, answer.id),
      [answer.unit ? unitName(answer.unit) : "", what].filter(Boolean).join(" · "), " ",
      took ? Page.el("span", { class: "took" }, fill(Page.t("took"), { s: took.toFixed(1) })) : null);
    result.dataset.request = answer.id;
    result.hidden = false;
    clearForm();
    renderRecent(view.lastRecent);
    pollRecent();
    $("phone").focus();
  }

  function failed(error) {
    const box = $("form-error");
    const fields = { caller_phone: "phone", category: "category", description: "description",
      lat: "address", lon: "address", address: "address" };
    let shown = false;
    // The hub's reason in the page's language where its code has words here (outside_city,
    // no_unit), else its own words.
    const said = Page.t(error.code) !== error.code ? Page.t(error.code) : null;
    for (const [name, reason] of Object.entries(error.fields || {})) {
      if (fields[name]) { showError(fields[name], said || reason); shown = true; }
    }
    if (error.status === 0 || error.status >= 500) {
      box.textContent = Page.t("unsure"); // the same key again: no twin
    } else {
      box.textContent = Page.t("error") + ": " + (Page.t(error.code) !== error.code ? Page.t(error.code) : error.message);
    }
    box.hidden = shown && error.status === 422;
    if (error.status === 422) {
      const first = Object.keys(error.fields || {}).map((n) => fields[n]).find(Boolean);
      if (first) $(first).focus();
    }
  }

  function showError(field, text) {
    $(field).setAttribute("aria-invalid", "true");
    $(field + "-error").textContent = text;
  }

  function clearError(field) {
    $(field).removeAttribute("aria-invalid");
    $(field + "-error").textContent = "";
  }

  function clearForm() {
    for (const id of ["phone", "category", "description", "address"]) {
      $(id).value = "";
      clearError(id);
    }
    $("caller-lang").value = "zh";
    view.chosen = { category: null, lat: null, lon: null, placeName: "" };
    view.preview = null;
    view.previewSeq++;
    view.historySeq++;
    view.asking = false;
    view.attempt = null;
    view.startedAt = 0;
    view.places = [];
    view.placeFor = "";
    $("category-chosen").textContent = "";
    $("location").textContent = "";
    $("history").hidden = true;
    $("duplicates").hidden = true;
    $("triage").className = "muted";
    $("triage").textContent = Page.t("triage_wait");
    $("form-error").hidden = true;
    showAsking();
    hideList("category");
    hideList("place");
    layers.duplicates.clearLayers();
    if (pin) { pin.remove(); pin = null; }
    if (radius) { radius.remove(); radius = null; }
    if (cityBounds) map.fitBounds(cityBounds, { padding: [10, 10] });
  }

  function newCall() {
    clearForm();
    $("result").hidden = true;
    $("phone").focus();
  }

  // ---- the seat's requests ------------------------------------------------------------------

  let recentTimer = null;

  async function pollRecent() {
    clearTimeout(recentTimer);
    try {
      const answer = await Page.api("GET", "/api/v1/intake/recent?limit=20");
      view.lastRecent = answer.requests;
      renderRecent(answer.requests);
      $("recent-status").dataset.state = "live";
    } catch (error) {
      if (error.status === 401) return;
      $("recent-status").dataset.state = "stale";
    }
    recentTimer = setTimeout(pollRecent, RECENT_POLL_MS);
  }

  function renderRecent(lines) {
    const known = new Set(lines.map((line) => line.id));
    const now = Date.now();
    view.sent = view.sent.filter((s) => !known.has(s.line.id) && now - s.at < SENT_KEPT_MS);
    const shown = [...view.sent.map((s) => s.line), ...lines]
      .sort((a, b) => (b.received_at || 0) - (a.received_at || 0)).slice(0, 20);
    $("recent").replaceChildren(...shown.map((line) => {
      const item = lineItem(line);
      item.dataset.id = line.id;
      if (!known.has(line.id)) item.classList.add("sent");
      return item;
    }));
    $("recent-empty").hidden = shown.length > 0;
  }

  // ---- a request's details ------------------------------------------------------------------

  function onLineClick(event) {
    const link = event.target.closest("a[data-request]");
    if (!link) return;
    event.preventDefault();
    showDetail(link.dataset.request);
  }

  async function showDetail(id) {
    const dialog = $("detail");
    $("detail-title").textContent = id;
    $("detail-fields").replaceChildren();
    $("detail-timeline").replaceChildren();
    if (!dialog.open) dialog.showModal();
    let request;
    try {
      request = await Page.api("GET", "/api/v1/requests/" + encodeURIComponent(id));
    } catch (error) {
      $("detail-fields").append(Page.el("dd", null, error.message));
      return;
    }
    const rows = [
      ["detail_state", stateName(request.state)],
      ["detail_category", categoryName(request.category)],
      ["detail_unit", request.unit ? unitName(request.unit) : routeName(request.route)],
      ["detail_district", districtName(request.district)],
      ["detail_address", request.address],
      ["detail_description", request.description],
      ["detail_received", Page.time(request.received_at)],
      ["detail_squad", request.squad_name ? request.squad_name + " · " + request.squad : request.squad],
    ];
    $("detail-fields").replaceChildren(...rows.filter((row) => row[1]).flatMap(([key, value]) => [
      Page.el("dt", null, Page.t(key)), Page.el("dd", null, value)]));
    $("detail-timeline").replaceChildren(...(request.timeline || []).map((event) => Page.el("li", null,
      Page.time(event.at) + " · " + (Page.t("events")[event.type] || event.type) + " · " + Page.actor(event.by))));
  }

  start().catch((error) => {
    if (error.status === 401) return;
    const box = $("form-error");
    box.textContent = Page.t("error") + ": " + error.message;
    box.hidden = false;
  });
})();
