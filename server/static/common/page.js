/* What every signed-in page shares (loaded before the page's own script, no build step):
 *   Page.lang          "zh" (default) or "en"; ?lang= sets it once, remembered per browser
 *   Page.t(key)        the page's text in that language (Page.texts(TEXT) registers it)
 *   Page.applyTexts()  fills every [data-i18n] element; [data-i18n-placeholder] too
 *   Page.api(method, path, body?, headers?) -> parsed JSON (or null for 204); throws
 *                      Page.ApiError with .status, .code, .fields, .detail (the error
 *                      object, e.g. a 409's "state"); a 401 calls
 *                      Page.onUnauthenticated() (default: Page.signIn)
 *   Page.signIn()      to signin.html?next=<this page>, keeping the language
 *   Page.signOut()     DELETE /api/v1/session, then to signin.html
 *   Page.feed(onEvent, onState) the live center feed (/ws/center) with resume
 *   Page.live(path, {open, message, state}) any of the hub's JSON sockets, reconnecting
 *                      with a growing, jittered delay; 4100 (not signed in) -> sign in
 *   Page.zone          the city's time zone (window.City from /city.js, which a page loads
 *                      before this script): every clock time a page shows is the city's,
 *                      whatever zone the browser's machine is set to
 *   Page.dateFormat(options) an Intl.DateTimeFormat in the page's language and the city's zone
 *   Page.today()       the city's date now: {year, month, day} (month 1-12)
 *   Page.time(epochSeconds) / Page.ago(epochSeconds)  the city's clock, "3 min ago"
 *   Page.actor(by)     who did it, from an event's `by` ("squad:S1" -> "分队 S1")
 *   Page.el(tag, attrs, ...children)  a DOM element (text children are escaped)
 *   Page.search(query, items, keysOf) the items matching a name as typed (Chinese, pinyin,
 *                      initials, English), best first; keysOf(item) = Page.searchKeys(zh,
 *                      pinyin, en); the rule of server/city/search.py
 * The session is an HttpOnly cookie this script never sees: no token in any URL or storage. */
(function () {
  "use strict";

  const LANG_KEY = "dispatch.lang";

  function takeLanguage() {
    const asked = new URLSearchParams(location.search).get("lang");
    if (asked === "en" || asked === "zh") localStorage.setItem(LANG_KEY, asked);
    return localStorage.getItem(LANG_KEY) === "en" ? "en" : "zh";
  }

  const COMMON = {
    zh: { sign_out: "退出登录", switch: "EN", live: "实时", connecting: "连接中…",
      offline: "连接中断，正在重连…", ago: "前", min: "分钟", sec: "秒", hour: "小时",
      error: "出错了", actors: { system: "系统", squad: "分队", calltaker: "话务员", center: "中心",
        unit: "单位值班台", admin: "管理员" } },
    en: { sign_out: "Sign out", switch: "中文", live: "live", connecting: "connecting…",
      offline: "connection lost, reconnecting…", ago: "ago", min: "min", sec: "s", hour: "h",
      error: "Something went wrong", actors: { system: "system", squad: "squad",
        calltaker: "call-taker", center: "center", unit: "unit desk", admin: "admin" } },
  };

  const Page = {
    lang: takeLanguage(),
    _texts: { zh: { ...COMMON.zh }, en: { ...COMMON.en } },
  };

  Page.texts = function (table) {
    for (const lang of ["zh", "en"]) Object.assign(Page._texts[lang], table[lang] || {});
  };

  Page.t = function (key) {
    const value = Page._texts[Page.lang][key];
    return value === undefined ? key : value;
  };

  Page.applyTexts = function (root) {
    const scope = root || document;
    document.documentElement.lang = Page.lang === "zh" ? "zh-CN" : "en";
    for (const el of scope.querySelectorAll("[data-i18n]")) el.textContent = Page.t(el.dataset.i18n);
    for (const el of scope.querySelectorAll("[data-i18n-placeholder]")) {
      el.setAttribute("placeholder", Page.t(el.dataset.i18nPlaceholder));
    }
    for (const el of scope.querySelectorAll("[data-i18n-title]")) {
      el.setAttribute("title", Page.t(el.dataset.i18nTitle));
    }
  };

  Page.switchLanguage = function () {
    localStorage.setItem(LANG_KEY, Page.lang === "zh" ? "en" : "zh");
    const url = new URL(location.href);
    url.searchParams.delete("lang");
    location.assign(url.pathname + url.search + url.hash);
  };

  class ApiError extends Error {
    constructor(status, code, message, fields, detail) {
      super(message || code || "HTTP " + status);
      this.status = status;
      this.code = code || "http_" + status;
      this.fields = fields || {};
      this.detail = detail || {}; // the whole error object: e.g. a 409's current "state"
    }
  }
  Page.ApiError = ApiError;

  Page.api = async function (method, path, body, headers) {
    const init = { method, credentials: "same-origin", headers: { ...(headers || {}) } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, "network", String(error));
    }
    if (response.status === 401) {
      Page.onUnauthenticated();
      throw new ApiError(401, "unauthenticated", "not signed in");
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    if (!response.ok) {
      const e = (data && data.error) || {};
      throw new ApiError(response.status, e.code, e.message, e.fields, e);
    }
    return data;
  };

  /* What a 401 does. A person's page goes to sign in; a page signed in otherwise (the squad
   * phone app, with the squad's token) replaces this. */
  Page.onUnauthenticated = function () {
    Page.signIn();
  };

  Page.signIn = function () {
    const next = location.pathname + location.search;
    const lang = Page.lang === "en" ? "&lang=en" : "";
    location.assign("/signin.html?next=" + encodeURIComponent(next) + lang);
  };

  Page.signOut = async function () {
    try {
      await fetch("/api/v1/session", { method: "DELETE", credentials: "same-origin" });
    } finally {
      location.assign("/signin.html" + (Page.lang === "en" ? "?lang=en" : ""));
    }
  };

  /* A socket of the hub (same origin, the session cookie): JSON messages in, reconnects
   * after any drop with a growing, jittered delay (reset once a message arrives). handlers:
   * open(socket) on each connection, message(data) per message, state("live"|"offline").
   * A close with 4100 (not signed in) sends the browser to the sign-in page. */
  Page.live = function (path, handlers) {
    let delay = 500;
    let socket = null;
    let stopped = false;
    function connect() {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      socket = new WebSocket(scheme + location.host + path);
      socket.onopen = () => { if (handlers.open) handlers.open(socket); };
      socket.onmessage = (message) => {
        delay = 500;
        handlers.message(JSON.parse(message.data));
      };
      socket.onclose = (close) => {
        if (handlers.state) handlers.state("offline");
        if (stopped) return;
        if (close.code === 4100) return Page.signIn();
        setTimeout(connect, delay + Math.random() * delay);
        delay = Math.min(delay * 2, 15000);
      };
    }
    connect();
    return { stop() { stopped = true; if (socket) socket.close(); } };
  };

  /* The live center feed: resumes from the newest stream id per unit after any drop.
   * onEvent(unit, id, event); onState("live" | "offline"). */
  Page.feed = function (onEvent, onState) {
    const cursors = {};
    return Page.live("/ws/center", {
      open(socket) {
        const hello = { t: "hello" };
        if (Object.keys(cursors).length) hello.after = cursors;
        socket.send(JSON.stringify(hello));
      },
      message(frames) {
        for (const frame of frames) {
          if (frame.t === "welcome") {
            // Where each unit starts: the cursor to resume from even if no event came yet
            // (else a drop before the first event would lose what happened meanwhile).
            for (const [unit, id] of Object.entries(frame.cursor || {})) {
              if (!(unit in cursors)) cursors[unit] = id;
            }
            if (onState) onState("live");
          } else if (frame.t === "event") {
            cursors[frame.unit] = frame.id;
            onEvent(frame.unit, frame.id, frame.event);
          }
        }
      },
      state: onState,
    });
  };

  Page.zone = (window.City && window.City.timezone) || undefined; // undefined: the browser's

  Page.dateFormat = function (options) {
    return new Intl.DateTimeFormat(Page.lang === "zh" ? "zh-CN" : "en-GB", { ...options, timeZone: Page.zone });
  };

  Page.today = function () {
    const parts = new Intl.DateTimeFormat("en-GB", {
      timeZone: Page.zone, year: "numeric", month: "numeric", day: "numeric" }).formatToParts(new Date());
    const part = (type) => Number(parts.find((p) => p.type === type).value);
    return { year: part("year"), month: part("month"), day: part("day") };
  };

  const timeFormat = () => Page.dateFormat({ hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });

  Page.time = function (epochSeconds) {
    return epochSeconds ? timeFormat().format(new Date(epochSeconds * 1000)) : "";
  };

  Page.ago = function (epochSeconds) {
    const s = Math.max(0, Math.round(Date.now() / 1000 - epochSeconds));
    const text = s < 60 ? s + Page.t("sec") : s < 3600 ? Math.floor(s / 60) + Page.t("min")
      : Math.floor(s / 3600) + Page.t("hour");
    return Page.lang === "zh" ? text + Page.t("ago") : text + " " + Page.t("ago");
  };

  Page.actor = function (by) {
    if (!by) return "";
    const [kind, ...rest] = String(by).split(":");
    const who = rest.join(":");
    const word = (Page.t("actors") || {})[kind] || kind;
    return who ? word + " " + who : word;
  };

  /* A map tooltip's content as text: Leaflet puts a string in as HTML, and names (a
   * squad's, a district's) are set by people. */
  Page.tip = function (text) {
    return Page.el("span", {}, String(text));
  };

  Page.el = function (tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") el.className = value;
      else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else if (name === "dataset") Object.assign(el.dataset, value);
      else el.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  };

  /* Finding a name as it is typed: the rule of server/city/search.py (which the hub applies
   * to places), kept in step by tests/browser/test_intake.py. Rank 0: a key (the Chinese
   * name, the pinyin initials, the pinyin, the English name) starts with the query; rank 1:
   * the Chinese name contains it, or a key starts with it from a later syllable or word. */
  const SEPARATORS = /[\s'’·\-_/.,]+/g;

  Page.normalise = function (query) {
    return query.normalize("NFKC").toLowerCase().replace(/ü/g, "v").replace(SEPARATORS, "");
  };

  Page.searchKeys = function (nameZh, pinyin, nameEn) {
    const syllables = (pinyin || "").split(" ").filter(Boolean);
    const words = (nameEn || "").normalize("NFKC").toLowerCase().trim().split(SEPARATORS)
      .filter(Boolean);
    const initials = syllables.map((s) => s[0]).join("");
    const later = [];
    for (let i = 1; i < syllables.length; i++) later.push(syllables.slice(i).join(""), initials.slice(i));
    for (let i = 1; i < words.length; i++) later.push(words.slice(i).join(""));
    return { zh: nameZh, starts: [nameZh, initials, syllables.join(""), words.join("")], later };
  };

  Page.matchRank = function (query, keys) {
    if (!query) return null;
    if (keys.starts.some((key) => key.startsWith(query))) return 0;
    if (keys.zh.includes(query) || keys.later.some((key) => key.startsWith(query))) return 1;
    return null;
  };

  Page.search = function (query, items, keysOf) {
    const wanted = Page.normalise(query);
    const ranked = [];
    items.forEach((item, index) => {
      const rank = Page.matchRank(wanted, keysOf(item));
      if (rank !== null) ranked.push([rank, index, item]);
    });
    ranked.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    return ranked.map((entry) => entry[2]);
  };

  window.Page = Page;
})();
