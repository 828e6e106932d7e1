/* Sign-in: POST /api/v1/session with the username and password; the hub answers with an
 * HttpOnly session cookie (this script never sees it), then the browser goes to ?next=, a
 * path on this site only, in the language chosen here. Chinese by default, ?lang=en for
 * English. */
(function () {
  "use strict";

  const TEXT = {
    zh: { title: "城市应急联动调度 · 登录", username: "用户名", password: "密码", submit: "登录",
      other: "English", otherLang: "en", wrong: "用户名或密码错误。", throttled: "错误次数过多，请稍后再试。",
      failed: "无法连接调度中心，请重试。", pageTitle: "登录 · 城市应急联动调度" },
    en: { title: "City linkage dispatch · Sign in", username: "Username", password: "Password",
      submit: "Sign in", other: "中文", otherLang: "zh", wrong: "Wrong username or password.",
      throttled: "Too many failed attempts; try again later.",
      failed: "Could not reach the hub; try again.", pageTitle: "Sign in · City linkage dispatch" },
  };

  const params = new URLSearchParams(location.search);
  const lang = chooseLanguage();
  const t = TEXT[lang];

  /* ?lang= here, else the ?lang= of the page being opened (?next=), else the language this
   * browser chose before (common/page.js remembers it), else Chinese. */
  function chooseLanguage() {
    let asked = params.get("lang");
    if (!asked) {
      try {
        asked = new URL(params.get("next") || "/", location.origin).searchParams.get("lang");
      } catch (error) {
        asked = null;
      }
    }
    if (!asked) asked = localStorage.getItem("dispatch.lang");
    return asked === "en" ? "en" : "zh";
  }

  /* Only a path on this site: "/wall.html?lang=en" yes; "//evil", "https://evil", "/\evil" no. */
  function safeNext(target) {
    if (!target || target[0] !== "/" || target[1] === "/" || target.includes("\\")) return "/";
    if (/[\u0000-\u001f]/.test(target)) return "/";
    try {
      const url = new URL(target, location.origin);
      return url.origin === location.origin ? url.pathname + url.search + url.hash : "/";
    } catch (error) {
      return "/";
    }
  }

  /* Where to go once signed in: ?next=, with this page's ?lang= when one was given (the
   * page opened would otherwise speak the language it was remembered in, or Chinese). */
  function destination() {
    const next = safeNext(params.get("next"));
    if (!params.get("lang")) return next;
    const url = new URL(next, location.origin);
    url.searchParams.set("lang", lang);
    return url.pathname + url.search + url.hash;
  }

  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.title = t.pageTitle;
  for (const element of document.querySelectorAll("[data-i18n]")) {
    element.textContent = t[element.dataset.i18n];
  }
  const other = new URLSearchParams(params);
  other.set("lang", t.otherLang);
  const switcher = document.getElementById("lang");
  switcher.textContent = t.other;
  switcher.href = "?" + other.toString();

  const form = document.getElementById("signin");
  const message = document.getElementById("message");

  function say(text) {
    message.textContent = text;
    message.hidden = !text;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    say("");
    try {
      const response = await fetch("/api/v1/session", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          username: document.getElementById("username").value.trim(),
          password: document.getElementById("password").value,
        }),
      });
      if (response.ok) {
        location.assign(destination());
        return;
      }
      say(response.status === 429 ? t.throttled : response.status < 500 ? t.wrong : t.failed);
    } catch (error) {
      say(t.failed);
    } finally {
      button.disabled = false;
    }
  });
})();
