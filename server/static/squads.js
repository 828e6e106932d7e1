/* Squads: a unit's roster (GET /api/v1/squads) for its desk, the center and the admin; a
 * desk and the admin replace a lost phone's token (POST /api/v1/squads/{id}/token), the
 * admin registers a squad (POST /api/v1/squads). A token is shown once, in this page only:
 * never put in a URL or in storage. */
(function () {
  "use strict";

  const REFRESH_MS = 15000;

  Page.texts({
    zh: {
      home: "首页", title: "分队管理", unit: "单位", find: "查找", find_hint: "分队名称或编号",
      col_name: "分队", col_state: "状态", col_work: "在办 / 容量", col_skills: "可派类别",
      col_token: "口令更换", col_act: "操作",
      online: "在线", offline: "离线", on_duty: "在岗", off_duty: "未上岗", never: "从未连接",
      since: "自", all_categories: "本单位全部类别", none_yet: "未更换",
      summary: (n, online, duty, busy) => `${n} 个分队 · 在线 ${online} · 在岗 ${duty} · 在办 ${busy}`,
      no_squads: "这个单位还没有登记分队。", no_match: "没有名称或编号相符的分队。",
      replace: "更换口令", replace_confirm: "确认更换", cancel: "取消",
      replace_ask: (name, id) => `更换分队“${name}”（${id}）的口令？手机丢失或被盗时用：旧口令立即失效，手机被退出登录。`,
      new_token: (name) => `分队“${name}”的新口令`,
      created_token: (name) => `新登记分队“${name}”的口令`,
      once: "只显示这一次：现在交给分队，在分队手机上输入中队编号和口令登录。",
      closed: "旧口令已失效，分队手机已被退出登录。",
      was_offline: "旧口令已失效（分队当时不在线）。",
      phone_at: "在分队手机上打开", squad_id: "中队编号", token_word: "口令",
      copy: "复制口令", copied: "已复制", secret_done: "已交给分队，关闭",
      register: "登记新分队", register_in: (unit) => `登记新分队 · ${unit}`, name: "名称",
      capacity: "同时可办（件）",
      capacity_default: (n) => `默认 ${n}`,
      skills: "可派类别（不选：本单位全部类别）", register_submit: "登记",
      name_required: "请填写分队名称。", capacity_range: "同时可办为 1 到 20 件。",
      loaded: (time) => `更新于 ${time}`, denied: "此页面供各单位值班台、监督中心和管理员使用。",
      roles: { admin: "管理员", center: "监督中心", unit: "单位值班台", calltaker: "接线员", wall: "大屏" },
    },
    en: {
      home: "Home", title: "Squads", unit: "Unit", find: "Find", find_hint: "squad name or id",
      col_name: "Squad", col_state: "State", col_work: "Work / capacity", col_skills: "Offered",
      col_token: "Token replaced", col_act: "",
      online: "online", offline: "offline", on_duty: "on duty", off_duty: "off duty",
      never: "never connected", since: "since", all_categories: "every category of its unit",
      none_yet: "never",
      summary: (n, online, duty, busy) => `${n} ${n === 1 ? "squad" : "squads"} · ${online} online · ${duty} on duty · ${busy} working`,
      no_squads: "No squad of this unit is registered yet.", no_match: "No squad has that name or id.",
      replace: "Replace token", replace_confirm: "Replace it", cancel: "Cancel",
      replace_ask: (name, id) => `Replace the token of squad “${name}” (${id})? For a lost or stolen phone: the old token stops working at once and the phone is signed out.`,
      new_token: (name) => `The new token of squad “${name}”`,
      created_token: (name) => `The token of the new squad “${name}”`,
      once: "Shown this once: give it to the squad now, to sign in on its phone with the squad ID and this token.",
      closed: "The old token no longer works; the squad's phone was signed out.",
      was_offline: "The old token no longer works (the squad was not connected).",
      phone_at: "On the squad's phone, open", squad_id: "Squad ID", token_word: "Token",
      copy: "Copy the token", copied: "Copied", secret_done: "Handed over, close",
      register: "Register a squad", register_in: (unit) => `Register a squad · ${unit}`, name: "Name",
      capacity: "Jobs at once",
      capacity_default: (n) => `default ${n}`,
      skills: "Offered (none ticked: every category of the unit)", register_submit: "Register",
      name_required: "Give the squad a name.", capacity_range: "Jobs at once: 1 to 20.",
      loaded: (time) => `updated ${time}`,
      denied: "This page is for the units' desks, the supervision center and the admin.",
      roles: { admin: "admin", center: "supervision center", unit: "unit desk", calltaker: "call-taker",
        wall: "wall display" },
    },
  });

  const $ = (id) => document.getElementById(id);
  const state = { me: null, units: [], categories: new Map(), rows: [], unit: null, confirming: null };

  const nameOf = (item) => (item ? (Page.lang === "zh" ? item.name_zh : item.name_en) : "");
  const mayReplace = () => state.me.role === "admin" || state.me.role === "unit";
  // a date no reader takes the wrong way round: "12月4日 01:11", "4 Dec, 01:11"
  const stamp = () => Page.dateFormat({ month: "short", day: "numeric", hour: "2-digit",
    minute: "2-digit", hour12: false });
  const fresh = new Set(); // squads just registered here: marked in the list for a while

  function status(text, isError) {
    $("status").textContent = text || "";
    $("status").classList.toggle("error", Boolean(isError));
  }

  /* Since when: the clock time (with the date past half a day), and how long ago. */
  function since(epochSeconds) {
    const old = Date.now() / 1000 - epochSeconds > 12 * 3600;
    const when = old ? stamp().format(new Date(epochSeconds * 1000)) : Page.time(epochSeconds).slice(0, 5);
    return `${Page.t("since")} ${when} (${Page.ago(epochSeconds)})`;
  }

  function stateCell(row) {
    if (row.online) {
      return Page.el("td", { class: "text" }, Page.el("b", { class: "on" }, Page.t("online")),
        " · ", Page.t(row.on_duty ? "on_duty" : "off_duty"));
    }
    return Page.el("td", { class: "text" }, Page.el("b", { class: "off" }, Page.t("offline")), " · ",
      row.last_seen ? since(row.last_seen) : Page.t("never"));
  }

  function skillsText(row) {
    if (row.skills.includes("*")) return Page.t("all_categories");
    return row.skills.map((code) => nameOf(state.categories.get(code)) || code)
      .join(Page.lang === "zh" ? "、" : ", ");
  }

  function tokenCell(row) {
    if (!row.token_replaced_at) return Page.el("td", { class: "text muted" }, Page.t("none_yet"));
    return Page.el("td", { class: "text" }, stamp().format(new Date(row.token_replaced_at * 1000)),
      Page.el("br"), Page.el("span", { class: "muted" }, Page.actor(row.token_replaced_by)));
  }

  function actionCell(row) {
    if (!mayReplace()) return null; // the center reads only: no column
    return Page.el("td", { class: "text act" }, Page.el("button", {
      type: "button", disabled: state.confirming === row.id,
      onclick: () => { state.confirming = row.id; render(); },
    }, Page.t("replace")));
  }

  /* The second click, on a line of its own under the squad's row: it names the squad (on a
   * phone the name column may be scrolled out of view) and says what replacing does. */
  function confirmRow(row) {
    return Page.el("tr", { class: "confirm", dataset: { confirm: row.id } },
      Page.el("td", { class: "text", colspan: 6 },
        Page.el("p", null, Page.t("replace_ask")(row.name, row.id)),
        Page.el("button", { type: "button", class: "danger", onclick: () => replace(row) },
          Page.t("replace_confirm")), " ",
        Page.el("button", { type: "button", onclick: () => { state.confirming = null; render(); } },
          Page.t("cancel"))));
  }

  function render() {
    const query = $("find").value.trim().toLowerCase();
    const rows = query
      ? state.rows.filter((row) => row.name.toLowerCase().includes(query) || row.id.toLowerCase().includes(query))
      : state.rows;
    const body = $("roster").tBodies[0];
    body.replaceChildren(...rows.flatMap((row) => [Page.el("tr", {
      dataset: { squad: row.id }, class: fresh.has(row.id) ? "fresh" : null },
      Page.el("td", { class: "text" }, Page.el("b", { dir: "auto", class: "name" }, row.name), " ",
        Page.el("span", { class: "muted id" }, row.id)),
      stateCell(row),
      Page.el("td", null, `${row.active} / ${row.capacity}`),
      Page.el("td", { class: "text skills" }, skillsText(row)),
      tokenCell(row),
      actionCell(row)),
    state.confirming === row.id ? confirmRow(row) : null].filter(Boolean)));
    if (!rows.length) {
      body.append(Page.el("tr", null, Page.el("td", { class: "text empty", colspan: mayReplace() ? 6 : 5 },
        Page.t(state.rows.length ? "no_match" : "no_squads"))));
    }
    const all = state.rows;
    $("summary").textContent = Page.t("summary")(all.length, all.filter((r) => r.online).length,
      all.filter((r) => r.online && r.on_duty).length, all.filter((r) => r.active > 0).length);
  }

  async function load() {
    const unit = state.unit;
    const rows = await Page.api("GET", "/api/v1/squads?unit=" + encodeURIComponent(unit));
    if (unit !== state.unit) return; // the unit changed while this was on its way
    state.rows = rows;
    render();
    status(Page.t("loaded")(Page.time(Date.now() / 1000)));
  }

  function reload() {
    load().catch((error) => { if (error.status !== 401) status(Page.t("error") + ": " + error.message, true); });
  }

  /* A token, shown once, with what the phone signs in with beside it: where, the squad's
   * id, the token (in groups of four to read out; the phone ignores the spaces). */
  function showSecret(title, squad, token, note) {
    $("secret-title").textContent = title;
    $("secret-url").textContent = location.origin + "/phone/";
    $("secret-squad").textContent = squad;
    $("secret-token").textContent = token.match(/.{1,4}/g).join(" ");
    $("secret-token").dataset.token = token;
    $("secret-note").replaceChildren(Page.t("once"), note ? Page.el("br") : null, note || "");
    $("secret-copy").textContent = Page.t("copy");
    $("secret").hidden = false;
    $("secret").scrollIntoView({ block: "nearest" });
  }

  function hideSecret() {
    $("secret-token").textContent = "";
    delete $("secret-token").dataset.token;
    $("secret").hidden = true;
  }

  async function replace(row) {
    state.confirming = null;
    render();
    try {
      const answer = await Page.api("POST", `/api/v1/squads/${encodeURIComponent(row.id)}/token`);
      showSecret(Page.t("new_token")(row.name), row.id, answer.token,
        Page.t(answer.closed ? "closed" : "was_offline"));
      await load();
    } catch (error) {
      if (error.status !== 401) status(Page.t("error") + ": " + error.message, true);
    }
  }

  function fillRegister() {
    const unit = state.units.find((u) => u.code === state.unit);
    if (!unit) return;
    $("register-title").textContent = Page.t("register_in")(nameOf(unit));
    $("new-capacity").placeholder = Page.t("capacity_default")(unit.squad_capacity);
    const legend = Page.el("legend", null, Page.t("skills"));
    $("new-skills").replaceChildren(legend, ...unit.categories.map((code) => Page.el("label", { class: "skill" },
      Page.el("input", { type: "checkbox", value: code }), " ", nameOf(state.categories.get(code)) || code)));
  }

  async function register(event) {
    event.preventDefault();
    const error = $("register-error");
    error.textContent = "";
    const name = $("new-name").value.trim();
    const capacityText = $("new-capacity").value.trim();
    if (!name) { error.textContent = Page.t("name_required"); $("new-name").focus(); return; }
    const capacity = capacityText ? Number(capacityText) : null;
    if (capacity !== null && !(Number.isInteger(capacity) && capacity >= 1 && capacity <= 20)) {
      error.textContent = Page.t("capacity_range");
      $("new-capacity").focus();
      return;
    }
    const skills = [...$("new-skills").querySelectorAll("input:checked")].map((box) => box.value);
    const body = { unit: state.unit, name, skills };
    if (capacity !== null) body.capacity = capacity;
    try {
      const created = await Page.api("POST", "/api/v1/squads", body);
      $("register").reset();
      fresh.add(created.id);
      setTimeout(() => { fresh.delete(created.id); render(); }, 60000);
      showSecret(Page.t("created_token")(created.name), created.id, created.token, "");
      await load();
    } catch (failure) {
      if (failure.status === 401) return;
      const fields = Object.entries(failure.fields || {}).map(([field, why]) => `${field}: ${why}`);
      error.textContent = Page.t("error") + ": " + (fields.length ? fields.join("; ") : failure.message);
    }
  }

  function chooseUnit(code) {
    state.unit = code;
    state.rows = [];
    state.confirming = null;
    const url = new URL(location.href);
    url.searchParams.set("unit", code);
    history.replaceState(null, "", url.pathname + url.search);
    if (state.me.role === "admin") fillRegister();
    reload();
  }

  async function start() {
    Page.applyTexts();
    document.title = Page.t("title");
    $("lang").addEventListener("click", Page.switchLanguage);
    $("signout").addEventListener("click", Page.signOut);
    const me = await Page.api("GET", "/api/v1/session");
    state.me = me;
    $("who").textContent = (me.name || me.username) + " · " + ((Page.t("roles") || {})[me.role] || me.role);
    if (!["admin", "center", "unit"].includes(me.role)) { // nothing here it may read
      for (const id of ["roster", "find", "unit"]) $(id).closest(".table-box, label").hidden = true;
      return status(Page.t("denied"), true);
    }
    const [units, categories] = await Promise.all([Page.api("GET", "/api/v1/units"),
      Page.api("GET", "/api/v1/categories")]);
    for (const category of categories) state.categories.set(category.code, category);
    state.units = me.role === "unit" ? units.filter((u) => u.code === me.unit) : units;
    const select = $("unit");
    select.replaceChildren(...state.units.map((u) => Page.el("option", { value: u.code }, nameOf(u))));
    select.disabled = me.role === "unit";
    const asked = new URLSearchParams(location.search).get("unit");
    const first = state.units.find((u) => u.code === asked) || state.units[0];
    if (!first) return status(Page.t("no_squads"));
    select.value = first.code;
    select.addEventListener("change", () => chooseUnit(select.value));
    $("find").addEventListener("input", render);
    $("secret-done").addEventListener("click", hideSecret);
    $("secret-copy").addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText($("secret-token").dataset.token || "");
        $("secret-copy").textContent = Page.t("copied");
      } catch (error) {
        window.getSelection().selectAllChildren($("secret-token")); // copied by hand then
      }
    });
    document.querySelector("#roster th.act").hidden = !mayReplace();
    if (me.role === "admin") {
      $("register").hidden = false;
      $("register").addEventListener("submit", register);
    }
    chooseUnit(first.code);
    setInterval(() => { if (!document.hidden && state.confirming === null) reload(); }, REFRESH_MS);
  }

  start().catch((error) => {
    if (error.status !== 401) status(Page.t("error") + ": " + error.message, true);
  });
})();
