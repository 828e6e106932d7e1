/* The phone app's service worker: the app opens without a network (its files are cached;
 * the work and the queued steps are in IndexedDB), and a Web Push wakes the phone with a
 * notification when the app is not on screen. */
"use strict";

importScripts("/phone/store.js");

const CACHE = "phone-v2";
const SHELL = [
  "/phone/",
  "/phone/phone.css",
  "/phone/phone.js",
  "/phone/field.js",
  "/phone/store.js",
  "/phone/manifest.webmanifest",
  "/phone/icon-192.png",
  "/phone/icon-512.png",
  "/city.js",
  "/common/page.js",
  "/common/fonts.css",
  "/vendor/msgpack/msgpack.min.js",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((names) => Promise.all(names.filter((n) => n !== CACHE).map((n) => caches.delete(n))))
    .then(() => self.clients.claim()));
});

/* The app's files: the network first (a new version arrives as soon as there is one), the
 * cache when there is no network. Everything else (the API) goes to the network untouched. */
self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== location.origin) return;
  const path = url.pathname === "/phone/index.html" ? "/phone/" : url.pathname;
  if (!SHELL.includes(path)) return;
  event.respondWith(fetch(request).then((response) => {
    if (response.ok) {
      const copy = response.clone();
      caches.open(CACHE).then((cache) => cache.put(path, copy));
    }
    return response;
  }).catch(() => caches.match(path).then((cached) => cached || Response.error())));
});

const TEXT = {
  zh: { offer: "新派单", notice: "督办通知", open: "打开中队终端接单",
    accept: "接单超时", arrive: "到达超时", resolve: "办结超时", promise: "承诺时限已过",
    waiting: "等待超时", level: "级" },
  en: { offer: "New offer", notice: "Supervision notice", open: "Open the squad app to accept",
    accept: "accept overdue", arrive: "arrival overdue", resolve: "resolution overdue",
    promise: "promise passed", waiting: "waiting too long", level: "level" },
};

/* The category's name from the squad's profile the app saved (the code if there is none). */
async function categoryName(code, lang) {
  const profile = await PhoneStore.get("profile");
  const found = profile && profile.categories.find((c) => c.code === code);
  return found ? (lang === "zh" ? found.name_zh : found.name_en) : code;
}

self.addEventListener("push", (event) => {
  event.waitUntil(handlePush(event));
});

async function handlePush(event) {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch (error) {
    data = {};
  }
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const visible = windows.filter((w) => w.visibilityState === "visible");
  if (visible.length) {
    // The app is on screen: its socket brings the offer, with sound; nothing to show here.
    for (const client of visible) client.postMessage({ push: data });
    return;
  }
  const lang = (await PhoneStore.get("lang")) === "en" ? "en" : "zh";
  const text = TEXT[lang];
  let title = text.offer;
  let body = text.open;
  if (data.t === "offer") {
    title = `${text.offer} · ${await categoryName(data.category, lang)}`;
    body = [data.request, data.address].filter(Boolean).join(" · ") || text.open;
  } else if (data.t === "notice") {
    title = text.notice;
    const level = lang === "zh" ? `${data.level} ${text.level}` : `${text.level} ${data.level}`;
    body = [data.request, text[data.kind] || data.kind, level].join(" · ");
  }
  await self.registration.showNotification(title, {
    body,
    tag: data.assignment || data.request || "dispatch",
    renotify: true,
    requireInteraction: data.t === "offer",
    vibrate: [500, 200, 500, 200, 900],
    icon: "/phone/icon-192.png",
    badge: "/phone/icon-192.png",
    data,
  });
}

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(self.clients.matchAll({ type: "window", includeUncontrolled: true })
    .then((windows) => {
      const open = windows.find((w) => new URL(w.url).pathname.startsWith("/phone/"));
      return open ? open.focus() : self.clients.openWindow("/phone/");
    }));
});
