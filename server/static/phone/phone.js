/* The squad phone app: sign in once with the squad's id and token, go on duty, receive
 * offers (sound, vibration, a countdown to respond_by), report each step with one large
 * button, send positions while on duty. The field socket (field.js) carries everything;
 * HTTP only for the squad's profile and its Web Push subscription. What must survive the app
 * being closed (credentials, last seq, steps waiting to be sent, the work) is in PhoneStore
 * (IndexedDB), never in a URL. */
(function () {
  "use strict";

  Page.texts({
    zh: {
      app: "中队终端", signin_title: "中队登录",
      signin_hint: "输入中队编号和口令。只需一次，口令只保存在本机。",
      squad_id: "中队编号", token: "口令", signin: "登录", signing_in: "正在验证…",
      bad_credentials: "中队编号或口令不对（口令更换过？请向本单位值班台要新口令）", need_network: "无法连接调度中心，请检查网络后重试",
      too_many: "尝试次数过多，请稍后再试",
      duty_off: "开始值班", duty_on: "值班中 · 点击结束值班",
      confirm_off_duty: "结束值班？结束后不再接收派单。",
      state_live: "已连接", state_connecting: "连接中…", state_offline: "已断开",
      state_stopped: "已停止", stopped_auth: "口令已失效：请向本单位值班台要新口令，重新登录",
      stopped_replaced: "本中队已在另一台手机上登录", stopped_other: "连接被拒绝",
      fix_waiting: "正在定位…", fix_ok: "已定位 ±{acc} 米", fix_none: "无法定位：请打开定位权限",
      fix_off: "未值班，不上报位置",
      queued: "{n} 项操作待发送", push_on: "后台提醒已开启",
      push_off: "后台提醒不可用：请保持本页打开",
      empty_on: "值班中，等待派单", empty_off: "点击“开始值班”接收派单",
      offered: "新派单", accepted: "已接单", en_route: "在途", on_scene: "在现场",
      deferred: "已承诺时限", resolved: "已办结", disputed: "已提出管辖异议", sending: "待发送",
      accept_within: "{t} 内未接单将转派其他分队", respond_passed: "接单时间已过",
      accept: "接单", enroute: "出发", arrive: "到达现场", resolve: "办结",
      defer: "承诺时限", dispute: "非本单位职责",
      request: "诉求编号", address: "地址", caller: "来电", call: "拨打", navigate: "导航",
      accept_by: "接单时限", arrive_by: "到达时限", resolve_by: "办结时限", promised_by: "承诺完成",
      left: "剩 {t}", overdue: "已超时 {t}",
      assist_of: "协助办理 {id}",
      resolve_title: "办结", resolve_note: "处理结果（可不填）",
      defer_title: "承诺时限", defer_reason: "原因（必填）",
      dispute_title: "非本单位职责", dispute_reason: "原因（必填）",
      until: "承诺在此之前办结", plus_1h: "1 小时后", plus_4h: "4 小时后", tomorrow: "明早 9:00", city_time: "城市时间", hours_short: "小时", later: "后",
      cancel: "取消", submit: "提交", reason_needed: "请填写原因", until_needed: "请选择一个将来的时间",
      notices: "督办通知", notice_accept: "接单超时", notice_arrive: "到达超时",
      notice_resolve: "办结超时", notice_promise: "承诺时限已过", notice_waiting: "等待超时",
      level: "{n} 级", day: "天",
      revoked: "派单已收回", revoked_offer_window_passed: "未按时接单，派单已收回",
      revoked_squad_offline: "离线时间过长，派单已转给其他中队",
      done_resolve: "已办结", done_dispute: "已交调度中心协调", done_defer: "已承诺时限",
      auto_arrived: "已到达现场（按定位自动记录）",
      refused: "未被接受", code_invalid_transition: "当前状态不能做这一步",
      code_unknown_assignment: "这项任务已不属于本中队", code_invalid_time: "时间不合理",
      code_invalid: "内容不合规", code_rate_limited: "操作过快",
      confirm_signout: "退出后需重新输入口令。确定退出？",
      new_offer: "新派单",
    },
    en: {
      app: "Squad", signin_title: "Squad sign-in",
      signin_hint: "Enter the squad ID and token once; the token stays on this phone.",
      squad_id: "Squad ID", token: "Token", signin: "Sign in", signing_in: "Checking…",
      bad_credentials: "Wrong squad ID or token (was it replaced? ask your unit desk for the new one)", need_network: "Cannot reach the hub: check the network and retry",
      too_many: "Too many attempts: wait a little",
      duty_off: "Go on duty", duty_on: "On duty · tap to go off duty",
      confirm_off_duty: "Go off duty? No more offers will come.",
      state_live: "Connected", state_connecting: "Connecting…", state_offline: "Offline",
      state_stopped: "Stopped", stopped_auth: "Token no longer valid: ask your unit desk for the new one and sign in again",
      stopped_replaced: "This squad signed in on another phone", stopped_other: "Connection refused",
      fix_waiting: "Locating…", fix_ok: "Located ±{acc} m", fix_none: "No location: allow location access",
      fix_off: "Off duty: no position sent",
      queued: "{n} steps waiting to send", push_on: "Background alerts on",
      push_off: "Background alerts unavailable: keep this page open",
      empty_on: "On duty, waiting for offers", empty_off: "Tap “Go on duty” to receive offers",
      offered: "New offer", accepted: "Accepted", en_route: "On the way", on_scene: "On scene",
      deferred: "Promised", resolved: "Resolved", disputed: "Disputed", sending: "waiting to send",
      accept_within: "Passes to another squad in {t} unless accepted", respond_passed: "Time to accept has passed",
      accept: "Accept", enroute: "On the way", arrive: "Arrived", resolve: "Resolved",
      defer: "Promise a time", dispute: "Not our jurisdiction",
      request: "Request", address: "Address", caller: "Caller", call: "Call", navigate: "Navigate",
      accept_by: "Accept by", arrive_by: "Arrive by", resolve_by: "Resolve by", promised_by: "Promised by",
      left: "{t} left", overdue: "{t} overdue",
      assist_of: "Assisting {id}",
      resolve_title: "Resolved", resolve_note: "Result (optional)",
      defer_title: "Promise a time", defer_reason: "Reason (required)",
      dispute_title: "Not our jurisdiction", dispute_reason: "Reason (required)",
      until: "Done by", plus_1h: "In 1 hour", plus_4h: "In 4 hours", tomorrow: "9:00 next morning", city_time: "city time", hours_short: "h",
      cancel: "Cancel", submit: "Submit", reason_needed: "Give a reason", until_needed: "Choose a time in the future",
      notices: "Supervision notices", notice_accept: "Accept overdue", notice_arrive: "Arrival overdue",
      notice_resolve: "Resolution overdue", notice_promise: "Promise passed", notice_waiting: "Waiting too long",
      level: "level {n}", day: "d",
      revoked: "Offer withdrawn", revoked_offer_window_passed: "Not accepted in time: offer withdrawn",
      revoked_squad_offline: "Offline too long: offered to another squad",
      done_resolve: "Resolved", done_dispute: "Handed to the center", done_defer: "Time promised",
      auto_arrived: "Arrival at the scene recorded (from your position)",
      refused: "refused", code_invalid_transition: "This step does not fit the current state",
      code_unknown_assignment: "This job is no longer the squad's", code_invalid_time: "The time is not plausible",
      code_invalid: "Not accepted as entered", code_rate_limited: "Too fast",
      confirm_signout: "Signing out means entering the token again. Sign out?",
      new_offer: "New offer",
    },
  });

  const $ = (id) => document.getElementById(id);
  const fill = (key, values) => Page.t(key).replace(/\{(\w+)\}/g, (_, name) => values[name]);

  // What each step moves the job to, and from which states it may be taken (server/lifecycle.py)
  const STEPS = {
    accept: { to: "accepted", from: ["offered"] },
    enroute: { to: "en_route", from: ["accepted", "deferred"] },
    arrive: { to: "on_scene", from: ["accepted", "en_route", "deferred"] },
    resolve: { to: "resolved", from: ["on_scene", "deferred"] },
    defer: { to: "deferred", from: ["accepted", "en_route", "on_scene", "deferred"] },
    dispute: { to: "disputed", from: ["offered", "accepted", "en_route", "on_scene", "deferred"] },
  };
  // The one big step of each state; the others are offered below it.
  const NEXT = { offered: "accept", accepted: "enroute", en_route: "arrive", on_scene: "resolve",
    deferred: "resolve" };
  const GONE = ["resolved", "disputed"];
  const POS_EVERY_MS = 5000; // a new fix is sent at most this often
  const POS_REFRESH_MS = 30000; // and a fresh one asked for at least this often
  const ALARM_EVERY_MS = 10000; // an unanswered offer rings again

  const app = {
    creds: null, // {squad, token}
    profile: null, // GET /api/v1/field/me
    jobs: new Map(), // assignment -> {assignment, state, request, respond_by, sending, prev}
    notices: [],
    duty: false,
    link: null,
    fix: null, // {lat, lon, acc, at}
    fixError: false,
    sentFixAt: 0,
    watchId: null,
  };

  // ---- the squad's HTTP calls (Basic squad:token; never in the URL) ------------------------

  function basic(creds) {
    const pair = new TextEncoder().encode(`${creds.squad}:${creds.token}`);
    let text = "";
    for (const byte of pair) text += String.fromCharCode(byte);
    return { Authorization: "Basic " + btoa(text) };
  }

  Page.onUnauthenticated = function () {}; // a squad's 401 is handled where it happens

  function fieldApi(method, path, body, creds) {
    return Page.api(method, path, body, basic(creds || app.creds));
  }

  // ---- saving ----------------------------------------------------------------------------

  function saveJobs() {
    return PhoneStore.set("jobs", [...app.jobs.values()]);
  }

  // ---- sign-in ---------------------------------------------------------------------------

  /* The id as typed: the hub's ids are "S" and ten lowercase hex digits, which a phone's
   * keyboard may well capitalise ("SC583C724FA"); any other id is kept as it is. */
  function squadId(typed) {
    const id = typed.trim();
    return /^s[0-9a-f]{10}$/i.test(id) ? "S" + id.slice(1).toLowerCase() : id;
  }

  async function signIn(event) {
    event.preventDefault();
    const creds = { squad: squadId($("signin-squad").value), token: $("signin-token").value.replace(/\s+/g, "") };
    const message = $("signin-message");
    message.hidden = true;
    if (!creds.squad || !creds.token) {
      message.textContent = Page.t("bad_credentials");
      message.hidden = false;
      return;
    }
    const button = event.submitter || $("signin-form").querySelector("button");
    button.disabled = true;
    button.textContent = Page.t("signing_in");
    Alarm.unlock();
    try {
      app.profile = await fieldApi("GET", "/api/v1/field/me", undefined, creds);
    } catch (error) {
      message.textContent = Page.t(error.status === 401 ? "bad_credentials"
        : error.status === 429 ? "too_many" : "need_network");
      message.hidden = false;
      return;
    } finally {
      button.disabled = false;
      button.textContent = Page.t("signin");
    }
    if ((await PhoneStore.get("owner")) !== creds.squad) {
      // Another squad's work, seq and queued steps must not carry over to this one.
      for (const key of ["jobs", "last_seq", "pending", "notices", "duty"]) await PhoneStore.del(key);
      await PhoneStore.set("owner", creds.squad);
    }
    app.creds = creds;
    await PhoneStore.set("creds", creds);
    await PhoneStore.set("profile", app.profile);
    $("signin-token").value = "";
    startWork();
  }

  async function signOut() {
    if (!window.confirm(Page.t("confirm_signout"))) return;
    if (app.duty) app.link && app.link.duty(false);
    try {
      await fieldApi("DELETE", "/api/v1/field/push-subscription");
    } catch (error) {
      /* offline: the hub forgets it when the push service says it is gone */
    }
    stopWork();
    await PhoneStore.clear();
    await PhoneStore.set("lang", Page.lang);
    location.reload();
  }

  // ---- work ------------------------------------------------------------------------------

  async function startWork() {
    $("signin").hidden = true;
    $("work").hidden = false;
    showProfile();
    const saved = {
      lastSeq: (await PhoneStore.get("last_seq")) || 0,
      pending: (await PhoneStore.get("pending")) || [],
    };
    for (const job of (await PhoneStore.get("jobs")) || []) app.jobs.set(job.assignment, job);
    app.notices = (await PhoneStore.get("notices")) || [];
    app.duty = Boolean(await PhoneStore.get("duty"));
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    app.link = new FieldLink({
      url: scheme + location.host + "/ws/field",
      squad: app.creds.squad,
      token: app.creds.token,
      lastSeq: saved.lastSeq,
      pending: saved.pending,
      save: async (state) => {
        await PhoneStore.set("last_seq", state.lastSeq);
        await PhoneStore.set("pending", state.pending);
        renderQueued();
      },
      onFrame: received,
      onState: linkState,
    });
    app.link.start();
    if (app.duty) watchPosition(true);
    // Permission given before: renew the subscription quietly (no tap needed to ask again).
    if (app.duty && window.Notification && Notification.permission === "granted") enablePush();
    render();
    refreshProfile();
  }

  function stopWork() {
    if (app.link) app.link.stop();
    watchPosition(false);
  }

  async function refreshProfile() {
    try {
      app.profile = await fieldApi("GET", "/api/v1/field/me");
      await PhoneStore.set("profile", app.profile);
      showProfile();
      render();
    } catch (error) {
      /* offline: the saved profile serves; a revoked token shows on the socket (4100) */
    }
  }

  function showProfile() {
    const profile = app.profile;
    $("squad-name").textContent = profile && profile.name ? profile.name : Page.t("app");
    const unit = profile ? (Page.lang === "zh" ? profile.unit.name_zh : profile.unit.name_en) : "";
    $("squad-id").textContent = [app.creds.squad, unit].filter(Boolean).join(" · ");
  }

  function categoryName(code) {
    const found = app.profile && app.profile.categories.find((c) => c.code === code);
    return found ? (Page.lang === "zh" ? found.name_zh : found.name_en) : code;
  }

  // ---- frames from the hub ----------------------------------------------------------------

  async function received(frame) {
    switch (frame.t) {
      case "welcome":
        app.link.duty(app.duty); // the hub remembers it; saying it again is harmless
        if (app.duty && app.fix) sendFix(true);
        return;
      case "offer":
        return offered(frame);
      case "revoke":
        return revoked(frame);
      case "arrived":
        return arrivedByPosition(frame);
      case "notice":
        app.notices.unshift(frame.notice);
        app.notices = app.notices.slice(0, 20);
        await PhoneStore.set("notices", app.notices);
        Alarm.ring(false);
        renderNotices();
        return;
      case "resync":
        const had = new Map(app.jobs);
        app.jobs.clear();
        for (const item of frame.assignments) {
          const before = had.get(item.assignment);
          const arrived = item.state === "on_scene" ? true
            : ["offered", "accepted", "en_route"].includes(item.state) ? false
              : before ? before.arrived : undefined; // promised: arrived or not, if this phone knew
          app.jobs.set(item.assignment, { assignment: item.assignment, state: item.state,
            request: item.request, respond_by: item.respond_by || 0, sending: null, arrived });
        }
        await saveJobs();
        render();
        return;
      case "ok":
        return answered(frame.id, null);
      case "error":
        if (frame.id) return answered(frame.id, frame);
        return;
    }
  }

  async function offered(frame) {
    const known = app.jobs.get(frame.assignment);
    app.jobs.set(frame.assignment, { assignment: frame.assignment, state: "offered",
      request: frame.request, respond_by: frame.respond_by, sending: null, arrived: false,
      ...(known && known.state !== "offered" ? { state: known.state, arrived: known.arrived } : {}) });
    await saveJobs();
    render();
    Alarm.ring(true);
    if (document.hidden) notifyInBackground(frame);
  }

  /* The hub recorded the arrival itself from the squad's positions: on scene now (a step of
   * the squad's own on its way stays as it is: its answer settles it). */
  async function arrivedByPosition(frame) {
    const job = app.jobs.get(frame.assignment);
    if (!job || job.sending || !STEPS.arrive.from.includes(job.state)) return;
    job.state = STEPS.arrive.to;
    job.arrived = true;
    await saveJobs();
    render();
    toast(Page.t("auto_arrived"));
  }

  async function revoked(frame) {
    if (app.jobs.delete(frame.assignment)) {
      await saveJobs();
      render();
      const key = "revoked_" + frame.reason;
      toast(Page.t(key) === key ? Page.t("revoked") : Page.t(key));
    }
  }

  async function answered(id, error) {
    for (const job of app.jobs.values()) {
      if (!job.sending || job.sending.id !== id) continue;
      const step = job.sending.step;
      if (error && !(error.code === "invalid_transition" && step === "arrive")) {
        // refused: back to where the hub still has it (an arrival the hub recorded by
        // itself from the squad's position is not a refusal)
        job.state = job.sending.prev;
        const key = "code_" + error.code;
        toast(`${Page.t(step)}: ${Page.t("refused")} · ${Page.t(key) === key ? error.message : Page.t(key)}`);
      } else if (GONE.includes(job.state)) {
        app.jobs.delete(job.assignment);
        toast(Page.t("done_" + step));
      } else if (step === "defer") {
        toast(Page.t("done_defer"));
      }
      job.sending = null;
      await saveJobs();
      render();
      return;
    }
  }

  // ---- steps ------------------------------------------------------------------------------

  function step(job, name, fields) {
    const id = app.link.command(name, job.assignment, fields || {});
    job.sending = { id, step: name, prev: job.state };
    job.state = STEPS[name].to;
    if (name === "arrive") job.arrived = true;
    if (name === "defer") job.request = { ...job.request, resolve_by: fields.until };
    saveJobs();
    render();
  }

  function onStep(job, name) {
    Alarm.unlock();
    if (name === "resolve") return openSheet(job, "resolve");
    if (name === "defer" || name === "dispute") return openSheet(job, name);
    step(job, name);
  }

  // ---- the sheet: a note, a reason, a promised time ----------------------------------------

  let sheetFor = null;

  function openSheet(job, name) {
    sheetFor = { job, name };
    $("sheet-title").textContent = Page.t(name + "_title");
    $("sheet-text-name").textContent = Page.t(name === "resolve" ? "resolve_note" : name + "_reason");
    $("sheet-text").value = "";
    $("sheet-text").maxLength = name === "resolve" ? 2000 : 500;
    $("sheet-until").hidden = name !== "defer";
    $("sheet-until-input").value = name === "defer" ? localInput(new Date(Date.now() + 4 * 3600e3)) : "";
    if (name === "defer") untilHint();
    $("sheet-message").hidden = true;
    $("sheet").hidden = false;
    $("sheet-text").focus();
  }

  function closeSheet() {
    sheetFor = null;
    $("sheet").hidden = true;
  }

  /* The promise's time is typed and shown on the city's clock, as the deadlines are, even
   * on a phone set to another zone (Page.zone: the city's, from /city.js). */
  const pad = (n) => String(n).padStart(2, "0");

  function cityParts(date) {
    const parts = new Intl.DateTimeFormat("en-GB", { timeZone: Page.zone, year: "numeric", month: "2-digit",
      day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23" }).formatToParts(date);
    const part = (type) => Number(parts.find((p) => p.type === type).value);
    return { year: part("year"), month: part("month"), day: part("day"), hour: part("hour"), minute: part("minute") };
  }

  /* The input's value ("2026-12-04T09:00") for a city wall time given as a UTC date's fields. */
  function inputValue(wall) {
    return `${wall.getUTCFullYear()}-${pad(wall.getUTCMonth() + 1)}-${pad(wall.getUTCDate())}`
      + `T${pad(wall.getUTCHours())}:${pad(wall.getUTCMinutes())}`;
  }

  function localInput(date) {
    const p = cityParts(date);
    return inputValue(new Date(Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute)));
  }

  /* The moment (ms) the input's value names, read on the city's clock; NaN if none. */
  function fromCityInput(value) {
    const m = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)/.exec(value || "");
    if (!m) return NaN;
    const wall = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]));
    let moment = wall; // then corrected by the zone's offset there (twice: across a change)
    for (let i = 0; i < 2; i++) {
      const p = cityParts(new Date(moment));
      moment += wall - Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute);
    }
    return moment;
  }

  function preset(event) {
    const hours = event.currentTarget.dataset.hours;
    if (hours === "tomorrow") { // the city's next 9:00: this morning's if it is not yet 9
      const p = cityParts(new Date());
      const day = p.hour < 9 ? p.day : p.day + 1;
      $("sheet-until-input").value = inputValue(new Date(Date.UTC(p.year, p.month - 1, day, 9, 0)));
    } else {
      $("sheet-until-input").value = localInput(new Date(Date.now() + Number(hours) * 3600e3));
    }
    untilHint();
  }

  /* Under the promised time: which clock it is on (the city's, with its UTC offset), and how
   * far ahead it is ("in 3 h 20 min"), so a phone set to another zone misleads nobody. */
  function untilHint() {
    const at = fromCityInput($("sheet-until-input").value);
    const zone = new Intl.DateTimeFormat("en", { timeZone: Page.zone, timeZoneName: "shortOffset" })
      .formatToParts(new Date()).find((p) => p.type === "timeZoneName");
    let text = Page.t("city_time") + (zone ? ` (${zone.value})` : "");
    if (Number.isFinite(at) && at > Date.now()) {
      const minutes = Math.round((at - Date.now()) / 60000);
      const span = (minutes >= 60 ? `${Math.floor(minutes / 60)} ${Page.t("hours_short")} ` : "")
        + `${minutes % 60} ${Page.t("min")}`;
      text += " · " + (Page.lang === "zh" ? span + Page.t("later") : "in " + span);
    }
    $("sheet-until-hint").textContent = text;
  }

  function submitSheet(event) {
    event.preventDefault();
    if (!sheetFor) return;
    const { job, name } = sheetFor;
    const text = $("sheet-text").value.trim();
    const message = $("sheet-message");
    if (name !== "resolve" && !text) {
      message.textContent = Page.t("reason_needed");
      message.hidden = false;
      return;
    }
    if (name === "resolve") {
      step(job, "resolve", text ? { note: text } : {});
    } else if (name === "dispute") {
      step(job, "dispute", { reason: text });
    } else {
      const chosen = fromCityInput($("sheet-until-input").value);
      // the phone's clock, moved onto the hub's: `until` is compared with the hub's time
      const until = chosen / 1000 + app.link.offsetS;
      if (!Number.isFinite(until) || until <= app.link.now() + 60) {
        message.textContent = Page.t("until_needed");
        message.hidden = false;
        return;
      }
      step(job, "defer", { until: Math.round(until), reason: text });
    }
    closeSheet();
  }

  // ---- duty and position ------------------------------------------------------------------

  async function toggleDuty() {
    Alarm.unlock();
    if (app.duty && !window.confirm(Page.t("confirm_off_duty"))) return;
    app.duty = !app.duty;
    await PhoneStore.set("duty", app.duty);
    app.link.duty(app.duty);
    watchPosition(app.duty);
    if (app.duty) enablePush();
    render();
  }

  let refreshTimer = null;

  function watchPosition(on) {
    const geo = navigator.geolocation;
    if (app.watchId !== null && geo) geo.clearWatch(app.watchId);
    clearInterval(refreshTimer);
    app.watchId = null;
    if (!on || !geo) {
      renderFix();
      return;
    }
    const options = { enableHighAccuracy: true, maximumAge: 5000, timeout: 30000 };
    app.watchId = geo.watchPosition(located, unlocated, options);
    // A squad standing still gets no new fix from watchPosition: ask for one now and then,
    // so the hub keeps a position younger than DISPATCH_POSITION_MAX_AGE_S.
    refreshTimer = setInterval(() => geo.getCurrentPosition(located, unlocated,
      { enableHighAccuracy: true, maximumAge: POS_REFRESH_MS / 2, timeout: 20000 }), POS_REFRESH_MS);
    renderFix();
  }

  function located(position) {
    const c = position.coords;
    app.fix = { lat: c.latitude, lon: c.longitude, acc: c.accuracy, at: Date.now() };
    app.fixError = false;
    sendFix(false);
    renderFix();
  }

  function unlocated() {
    app.fixError = !app.fix;
    renderFix();
  }

  let trailingFix = null;

  function sendFix(force) {
    if (!app.duty || !app.fix || !app.link) return;
    const wait = app.sentFixAt + POS_EVERY_MS - Date.now();
    if (!force && wait > 0) {
      // Held back, not dropped: the latest fix goes when the interval is over (a squad that
      // stops at the scene right after a fix must not wait for the next refresh).
      if (trailingFix === null) {
        trailingFix = setTimeout(() => { trailingFix = null; sendFix(false); }, wait);
      }
      return;
    }
    const acc = Number.isFinite(app.fix.acc) ? Math.round(app.fix.acc * 10) / 10 : null;
    if (app.link.pos(app.fix.lat, app.fix.lon, acc)) app.sentFixAt = Date.now();
  }

  // ---- Web Push (a backgrounded phone) ------------------------------------------------------

  function keyBytes(base64url) {
    const text = atob(base64url.replace(/-/g, "+").replace(/_/g, "/"));
    return Uint8Array.from(text, (c) => c.charCodeAt(0));
  }

  function sameKey(buffer, bytes) {
    if (!buffer) return false;
    const have = new Uint8Array(buffer);
    return have.length === bytes.length && have.every((b, i) => b === bytes[i]);
  }

  async function enablePush() {
    const box = $("push-state");
    try {
      if (!("serviceWorker" in navigator) || !("PushManager" in window) || !app.profile) {
        throw new Error("unsupported");
      }
      const permission = await Notification.requestPermission();
      if (permission !== "granted") throw new Error(permission);
      const registration = await navigator.serviceWorker.ready;
      const key = keyBytes(app.profile.push_key);
      let subscription = await registration.pushManager.getSubscription();
      if (subscription && !sameKey(subscription.options.applicationServerKey, key)) {
        await subscription.unsubscribe(); // made with another hub key: useless now
        subscription = null;
      }
      if (!subscription) {
        subscription = await registration.pushManager.subscribe({ userVisibleOnly: true,
          applicationServerKey: key });
      }
      await fieldApi("PUT", "/api/v1/field/push-subscription", subscription.toJSON());
      box.textContent = Page.t("push_on");
    } catch (error) {
      // No push service (a browser without one, permission refused): the socket still
      // carries everything while the app is open.
      box.textContent = Page.t("push_off");
    }
    box.hidden = false;
  }

  function notifyInBackground(frame) {
    if (!("serviceWorker" in navigator) || Notification.permission !== "granted") return;
    navigator.serviceWorker.ready.then((registration) => registration.showNotification(
      Page.t("new_offer") + " · " + categoryName(frame.request.category),
      { body: frame.request.address || frame.request.description, tag: frame.assignment,
        renotify: true, requireInteraction: true, vibrate: Alarm.pattern,
        icon: "/phone/icon-192.png" })).catch(() => {});
  }

  // ---- sound and vibration ----------------------------------------------------------------

  const Alarm = {
    context: null,
    pattern: [500, 200, 500, 200, 900],
    unlock() {
      // Browsers start sound only from a tap: every tap makes sure the context runs.
      const AudioContext = window.AudioContext || window.webkitAudioContext;
      if (!this.context && AudioContext) this.context = new AudioContext();
      if (this.context && this.context.state === "suspended") this.context.resume().catch(() => {});
    },
    ring(loud) {
      if (navigator.vibrate) navigator.vibrate(loud ? this.pattern : [300]);
      const context = this.context;
      if (!context || context.state !== "running") return;
      const start = context.currentTime + 0.05;
      const tones = loud ? [988, 784, 988, 784, 988, 784] : [660, 880];
      tones.forEach((frequency, i) => {
        const oscillator = context.createOscillator();
        const gain = context.createGain();
        oscillator.type = "square";
        oscillator.frequency.value = frequency;
        gain.gain.setValueAtTime(0.0001, start + i * 0.22);
        gain.gain.exponentialRampToValueAtTime(0.5, start + i * 0.22 + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, start + i * 0.22 + 0.2);
        oscillator.connect(gain).connect(context.destination);
        oscillator.start(start + i * 0.22);
        oscillator.stop(start + i * 0.22 + 0.21);
      });
    },
  };

  let lastAlarm = 0;
  function alarmAgain() {
    const now = app.link ? app.link.now() : Date.now() / 1000;
    const waiting = [...app.jobs.values()].some((j) => j.state === "offered" && j.respond_by > now);
    if (waiting && Date.now() - lastAlarm > ALARM_EVERY_MS) {
      lastAlarm = Date.now();
      Alarm.ring(true);
    }
  }

  // ---- drawing ----------------------------------------------------------------------------

  function linkState(state, code) {
    const pill = $("link-state");
    pill.dataset.state = state;
    let text = Page.t("state_" + state);
    if (state === "stopped") {
      text = Page.t(code === 4100 ? "stopped_auth" : code === 4102 ? "stopped_replaced" : "stopped_other");
      if (code === 4100) {
        stopWork();
        PhoneStore.del("creds");
        showSignIn(text);
      }
    }
    pill.textContent = text;
  }

  function renderQueued() {
    const count = app.link ? app.link.pending.size : 0;
    const queued = $("queued");
    queued.hidden = count === 0;
    queued.textContent = fill("queued", { n: count });
  }

  function renderFix() {
    const text = !app.duty ? Page.t("fix_off")
      : app.fix ? fill("fix_ok", { acc: Math.round(app.fix.acc || 0) })
        : app.fixError ? Page.t("fix_none") : Page.t("fix_waiting");
    $("fix-state").textContent = text;
    $("fix-state").className = app.duty && !app.fix && app.fixError ? "bad" : "";
  }

  function render() {
    const duty = $("duty");
    duty.dataset.on = String(app.duty);
    duty.textContent = Page.t(app.duty ? "duty_on" : "duty_off");
    renderFix();
    renderQueued();
    const list = $("jobs");
    list.replaceChildren(...[...app.jobs.values()]
      .sort((a, b) => (a.state === "offered" ? 0 : 1) - (b.state === "offered" ? 0 : 1))
      .map(card));
    const empty = $("empty");
    empty.hidden = app.jobs.size > 0;
    empty.textContent = Page.t(app.duty ? "empty_on" : "empty_off");
    renderNotices();
    tick();
  }

  function card(job) {
    const r = job.request;
    const el = Page.el;
    // A promise made before arriving leaves the arrival still to make, and its limit running
    // (a job the phone was sent whole, after a resync, may have arrived: not known here).
    const toArrive = ["offered", "accepted", "en_route"].includes(job.state)
      || (job.state === "deferred" && job.arrived === false);
    const next = job.state === "deferred" && toArrive ? "arrive" : NEXT[job.state];
    const others = Object.keys(STEPS).filter((name) => name !== next
      && STEPS[name].from.includes(job.state) && name !== "resolve");
    const deadlines = [
      // offered: the countdown says when the offer passes on; the unit's accept limit only
      // if it comes first (two accept times side by side read as a contradiction)
      ["accept_by", r.accept_by, job.state === "offered" && r.accept_by < (job.respond_by || Infinity)],
      ["arrive_by", r.arrive_by, toArrive],
      [job.state === "deferred" ? "promised_by" : "resolve_by", r.resolve_by, true],
    ].filter(([, at, shown]) => at && shown);
    return el("article", { class: "job", dataset: { assignment: job.assignment, state: job.state } },
      el("div", { class: "job-head" },
        el("span", { class: "state" }, Page.t(job.state)),
        job.sending ? el("span", { class: "sending" }, Page.t("sending")) : null,
        el("span", { class: "number", title: Page.t("request") }, r.id)),
      el("h2", { class: "category" }, categoryName(r.category)),
      r.assist_of ? el("p", { class: "assist" }, fill("assist_of", { id: r.assist_of })) : null,
      job.state === "offered"
        ? el("p", { class: "countdown", dataset: { respondBy: job.respond_by } }) : null,
      el("p", { class: "address" }, r.address || `${r.lat.toFixed(5)}, ${r.lon.toFixed(5)}`),
      next ? el("button", { type: "button", class: "big primary step", dataset: { step: next },
        onclick: () => onStep(job, next) }, Page.t(next)) : null,
      r.description ? el("p", { class: "description" }, r.description) : null,
      el("div", { class: "links" },
        el("a", { class: "link-button", href: geoLink(r) }, Page.t("navigate")),
        r.caller_phone ? el("a", { class: "link-button", href: "tel:" + r.caller_phone },
          `${Page.t("call")} ${r.caller_phone}`) : null),
      deadlines.length ? el("dl", { class: "deadlines" }, deadlines.flatMap(([key, at]) => [
        el("dt", {}, Page.t(key)),
        el("dd", { dataset: { due: at } }, when(at))])) : null,
      others.length ? el("div", { class: "more" }, others.map((name) =>
        el("button", { type: "button", class: "big secondary step", dataset: { step: name },
          onclick: () => onStep(job, name) }, Page.t(name)))) : null);
  }

  function geoLink(r) {
    const label = encodeURIComponent(r.address || r.id);
    return `geo:${r.lat},${r.lon}?q=${r.lat},${r.lon}(${label})`;
  }

  /* The notices about work the squad still holds (a finished job's are history). */
  function renderNotices() {
    const held = new Set([...app.jobs.values()].map((job) => job.request.id));
    const shown = app.notices.filter((n) => held.has(n.request)).slice(0, 5);
    $("notices-box").hidden = shown.length === 0;
    $("notices").replaceChildren(...shown.map((n) => Page.el("li",
      { class: "notice", dataset: { level: Math.min(n.level, 3) } },
      Page.el("strong", {}, Page.t("notice_" + n.kind)),
      ` ${n.request} · ${fill("level", { n: n.level })} · ${when(n.issued_at)}`)));
  }

  /* "4小时20分钟" / "4 h 20 min": the largest two units that matter. */
  function span(seconds) {
    const s = Math.max(0, Math.round(seconds));
    const [d, h, m] = [Math.floor(s / 86400), Math.floor((s % 86400) / 3600), Math.floor((s % 3600) / 60)];
    const parts = s < 60 ? [[s, "sec"]] : s < 3600 ? [[m, "min"]]
      : s < 2 * 86400 ? [[d * 24 + h, "hour"], [m, "min"]] : [[d, "day"], [h, "hour"]];
    const sep = Page.lang === "zh" ? "" : " ";
    return parts.map(([n, unit]) => n + sep + Page.t(unit)).join(sep);
  }

  /* A countdown clock: "4:07". */
  function clock(seconds) {
    const s = Math.max(0, Math.ceil(seconds));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  /* A deadline: the time of day, with the date when it is not today. */
  /* A deadline on the city's clock (the phone may be set to another zone). */
  function when(epochSeconds) {
    const date = new Date(epochSeconds * 1000);
    const day = Page.dateFormat({ year: "numeric", month: "numeric", day: "numeric" });
    const today = day.format(date) === day.format(new Date());
    const options = { hour: "2-digit", minute: "2-digit", hour12: false };
    if (!today) Object.assign(options, { month: Page.lang === "zh" ? "long" : "short", day: "numeric" });
    return Page.dateFormat(options).format(date);
  }

  /* Once a second: countdowns and deadlines, on the hub's clock. */
  function tick() {
    const now = app.link ? app.link.now() : Date.now() / 1000;
    for (const el of document.querySelectorAll("[data-respond-by]")) {
      const left = Number(el.dataset.respondBy) - now;
      el.textContent = left > 0 ? fill("accept_within", { t: clock(left) }) : Page.t("respond_passed");
      el.classList.toggle("urgent", left < 30);
    }
    for (const el of document.querySelectorAll("[data-due]")) {
      const due = Number(el.dataset.due);
      const left = due - now;
      el.textContent = `${when(due)} · ${fill(left >= 0 ? "left" : "overdue", { t: span(Math.abs(left)) })}`;
      el.classList.toggle("late", left < 0);
    }
  }

  let toastTimer = null;
  function toast(text) {
    const box = $("toast");
    box.textContent = text;
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, 5000);
  }

  function showSignIn(message) {
    $("work").hidden = true;
    $("signin").hidden = false;
    $("link-state").textContent = "";
    $("link-state").dataset.state = "off";
    const box = $("signin-message");
    box.hidden = !message;
    box.textContent = message || "";
  }

  // ---- start ------------------------------------------------------------------------------

  async function main() {
    Page.applyTexts();
    await PhoneStore.set("lang", Page.lang); // the service worker's notifications speak it
    $("lang").addEventListener("click", Page.switchLanguage);
    $("signin-form").addEventListener("submit", signIn);
    $("duty").addEventListener("click", toggleDuty);
    $("signout").addEventListener("click", signOut);
    $("sheet-form").addEventListener("submit", submitSheet);
    $("sheet-cancel").addEventListener("click", closeSheet);
    $("sheet-text").addEventListener("input", () => { $("sheet-message").hidden = true; });
    for (const button of document.querySelectorAll(".preset")) button.addEventListener("click", preset);
    $("sheet-until-input").addEventListener("input", untilHint);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && app.link) app.link.reconnectNow();
    });
    if ("serviceWorker" in navigator) {
      navigator.serviceWorker.register("/phone/sw.js", { scope: "/phone/" }).catch(() => {});
      // A push reached the app on screen (sw.js): the socket should have brought the same
      // offer; if it is down, try now rather than at the end of the back-off.
      navigator.serviceWorker.addEventListener("message", (event) => {
        if (event.data && event.data.push && app.link) app.link.reconnectNow();
      });
    }
    setInterval(() => { tick(); alarmAgain(); }, 1000);
    app.creds = await PhoneStore.get("creds");
    app.profile = await PhoneStore.get("profile");
    if (app.creds) startWork();
    else showSignIn("");
  }

  main();
})();
