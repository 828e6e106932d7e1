/* What every signed-in page shares (loaded before the page's own script, no build step):
 *   Page.lang          "zh" (default) or "en"; ?lang= sets it once, remembered per browser
 *   Page.t(key)        the page's text in that language (Page.texts(TEXT) registers it)
 *   Page.applyTexts()  fills every [data-i18n] element; [data-i18n-placeholder] too
 *   Page.api(method, path, body?, headers?) -> parsed JSON (or null for 204); throws
 *                      Page.ApiError with .status, .code, .fields; a 401 calls
 *                      Page.onUnauthenticated() (default: Page.signIn)
 *   Page.signIn()      to signin.html?next=<this page>, keeping the language
 *   Page.signOut()     DELETE /api/v1/session, then to signin.html
 *   Page.feed(after, onEvent, onState) the live center feed (/ws/center) with resume
 *   Page.time(epochSeconds) / Page.ago(epochSeconds)  local clock text, "3 min ago"
 *   Page.el(tag, attrs, ...children)  a DOM element (text children are escaped)
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
      error: "出错了" },
    en: { sign_out: "Sign out", switch: "中文", live: "live", connecting: "connecting…",
      offline: "connection lost, reconnecting…", ago: "ago", min: "min", sec: "s", hour: "h",
      error: "Something went wrong" },
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
    constructor(status, code, message, fields) {
      super(message || code || "HTTP " + status);
      this.status = status;
      this.code = code || "http_" + status;
      this.fields = fields || {};
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
      throw new ApiError(response.status, e.code, e.message, e.fields);
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

  /* The live center feed: resumes from the newest stream id per unit after any drop, with a
   * growing, jittered delay. onEvent(unit, id, event); onState("live" | "offline"). */
  Page.feed = function (onEvent, onState) {
    const cursors = {};
    let delay = 500;
    let socket = null;
    let stopped = false;
    function connect() {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      socket = new WebSocket(scheme + location.host + "/ws/center");
      socket.onopen = () => {
        const hello = { t: "hello" };
        if (Object.keys(cursors).length) hello.after = cursors;
        socket.send(JSON.stringify(hello));
      };
      socket.onmessage = (message) => {
        for (const frame of JSON.parse(message.data)) {
          if (frame.t === "welcome") {
            delay = 500;
            if (onState) onState("live");
          } else if (frame.t === "event") {
            cursors[frame.unit] = frame.id;
            onEvent(frame.unit, frame.id, frame.event);
          }
        }
      };
      socket.onclose = (close) => {
        if (onState) onState("offline");
        if (stopped) return;
        if (close.code === 4100) return Page.signIn();
        setTimeout(connect, delay + Math.random() * delay);
        delay = Math.min(delay * 2, 15000);
      };
    }
    connect();
    return { stop() { stopped = true; if (socket) socket.close(); } };
  };

  const timeFormat = () => new Intl.DateTimeFormat(Page.lang === "zh" ? "zh-CN" : "en-GB", {
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });

  Page.time = function (epochSeconds) {
    return epochSeconds ? timeFormat().format(new Date(epochSeconds * 1000)) : "";
  };

  Page.ago = function (epochSeconds) {
    const s = Math.max(0, Math.round(Date.now() / 1000 - epochSeconds));
    const text = s < 60 ? s + Page.t("sec") : s < 3600 ? Math.floor(s / 60) + Page.t("min")
      : Math.floor(s / 3600) + Page.t("hour");
    return Page.lang === "zh" ? text + Page.t("ago") : text + " " + Page.t("ago");
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

  window.Page = Page;
})();
