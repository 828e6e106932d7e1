/* The center console's words (zh-CN first, English second) and its navigation.
 * Loaded after common/page.js; every other center/*.js script reads window.Center. */
(function () {
  "use strict";

  const Center = (window.Center = window.Center || {});

  /* The center's pages. The reports pages (/reports/…) add their entries here; `roles`
   * limits an entry to some roles (a unit desk sees its own unit's reports). */
  Center.NAV = [
    { key: "nav_console", href: "/center.html", current: true },
    { key: "nav_reports", href: "/reports/" },
    { key: "nav_squads", href: "/squads.html" },
    { key: "nav_wall", href: "/wall.html", roles: ["center", "admin"] },
    { key: "nav_ledger", href: "/api/v1/ledger/export.csv", download: true },
  ];

  Page.texts({
    zh: {
      title: "应急联动服务中心 · 督办台", nav: "导航",
      nav_console: "督办台", nav_reports: "统计报表", nav_squads: "分队管理", nav_wall: "调度大屏", nav_ledger: "台账导出",
      denied: "此页面供应急联动服务中心与各单位值班台使用。", desk_of: "值班台", desk_title: "值班台",
      tab_queue: "待办队列", tab_disputes: "管辖争议", tab_notices: "督办通知", tab_offline: "离线分队",
      unit: "单位", all_units: "全部单位", open: "未销号", closed: "已销号", goto: "按编号打开",
      pick: "选择一项诉求，查看其全过程、地图和处理操作。",
      timeline: "全过程", scene: "现场", track_now: "当前分队轨迹", track_before: "此前分队轨迹",
      steps: "处置节点", no_track: "暂无分队轨迹（分队持单移动时记录）",
      track_gone: "轨迹已不再保留", empty_queue: "没有未结诉求", empty_disputes: "没有待裁决的争议",
      empty_notices: "没有督办通知", empty_offline: "没有持单离线的分队",
      overdue: "超时", left: "剩余", next: "下一时限", none: "无", squad: "分队", category: "类别",
      district: "区域", caller: "来电号码", description: "诉求内容", address: "地址",
      received_at: "受理时间", reason: "理由", disputed_by: "提出单位分队", candidates: "可改派单位",
      since: "离线于", holds: "持有诉求", last_point: "最后位置", issued: "下发",
      due: "时限", closed_by: "销号", not_found: "没有这个编号的诉求", loading: "加载中…",
      deadline_accept_by: "接单时限", deadline_arrive_by: "到场时限", deadline_resolve_by: "办结时限",
      promised_by: "承诺办结", met: "已完成", new_notice: "新督办通知", squad_offline_toast: "分队离线",
      // actions and forms
      act_rule: "裁决", act_cancel: "撤销", act_note: "备注", act_reopen: "重新办理",
      decision: "裁决结果", uphold: "维持原单位（原分队继续处置）", reassign: "改派有管辖权的单位",
      target_unit: "改派单位", choose: "请选择", target_category: "类别", keep_category: "保持原类别",
      assist: "协办单位", note: "说明", submit_ruling: "提交裁决", cancel_reason: "撤销原因",
      reason_duplicate: "重复诉求", reason_withdrawn: "群众撤回", reason_unfounded: "诉求不实",
      duplicate_of: "原诉求编号", submit_cancel: "确认撤销", submit_note: "添加备注",
      submit_reopen: "重新办理", close_form: "取消", done_ruling: "已裁决", done_cancel: "已撤销",
      done_note: "备注已添加", done_reopen: "已重新办理", check_field: "请检查",
      required: "必填", bad_format: "格式不对", number_hint: "例：20260101-000001",
      refused_held: "{unit}不负责{district}的{category}（由{holder}负责）",
      refused_nobody: "{unit}不负责{district}的{category}，也没有其他单位负责",
      refused_district: "{unit}不服务{district}", refused_same_unit: "诉求已在{unit}：请选择维持原单位",
      wrong_state: "当前状态不允许此操作：", forbidden: "无权执行此操作",
      // one short name per event of the timeline
      ev: {
        received: "受理", queued: "待派", transferred: "转警（110/119/120）", offered: "派单",
        offer_expired: "派单未响应", accepted: "接单", en_route: "出发", arrived: "到场",
        deferred: "承诺办结时间", disputed: "提出管辖异议", upheld: "裁决：维持原单位",
        reassigned: "裁决：改派", reassigned_in: "转入本单位", resolved: "办结", reopened: "重新办理",
        cancelled: "撤销", note: "备注", notice_issued: "督办通知", notice_closed: "督办销号",
        squad_offline: "分队离线", assist_requested: "请求协办",
        citizen_message_queued: "短信待发", citizen_message_attempt: "短信发送",
        citizen_message_delivered: "短信送达", citizen_message_failed: "短信发送失败",
      },
      states: {
        received: "已受理", queued: "待派", offered: "已派待接", accepted: "已接单", en_route: "在途",
        on_scene: "到场处置", deferred: "承诺办结", disputed: "管辖争议", resolved: "已办结",
        cancelled: "已撤销", transferred: "已转警",
      },
      kinds: { accept: "接单", arrive: "到场", resolve: "办结", promise: "承诺", waiting: "待派" },
      notice_kinds: { accept: "超时未接单", arrive: "超时未到场", resolve: "超时未办结",
        promise: "逾期未兑现承诺", waiting: "无分队可派" },
      actors: { system: "系统", squad: "分队", calltaker: "话务员", center: "中心", unit: "单位值班台",
        admin: "管理员" },
    },
    en: {
      title: "Linkage Service Center · Supervision console", nav: "Navigation",
      nav_console: "Console", nav_reports: "Reports", nav_squads: "Squads", nav_wall: "Wall map", nav_ledger: "Ledger CSV",
      denied: "This console is for the linkage service center and the units' desks.",
      desk_of: "desk", desk_title: "Duty desk",
      tab_queue: "Queue", tab_disputes: "Disputes", tab_notices: "Notices", tab_offline: "Offline",
      unit: "Unit", all_units: "All units", open: "Open", closed: "Closed", goto: "Open by number",
      pick: "Pick an item to see its timeline, its map and what can be done.",
      timeline: "Timeline", scene: "scene", track_now: "current squad's track",
      track_before: "earlier squads' tracks", steps: "steps",
      no_track: "No squad track yet (recorded while a squad holding it moves)",
      track_gone: "the track is no longer kept", empty_queue: "No open requests",
      empty_disputes: "No disputes waiting for a ruling", empty_notices: "No notices",
      empty_offline: "No squad is offline while holding work",
      overdue: "overdue", left: "left", next: "next", none: "none", squad: "Squad",
      category: "Category", district: "District", caller: "Caller", description: "Request",
      address: "Address", received_at: "Received", reason: "Reason", disputed_by: "Disputed by",
      candidates: "Could go to", since: "offline since", holds: "Holds", last_point: "Last seen at",
      issued: "issued", due: "due", closed_by: "closed", not_found: "No request with that number",
      loading: "loading…", deadline_accept_by: "Accept by", deadline_arrive_by: "On scene by",
      deadline_resolve_by: "Resolve by", promised_by: "Promised", met: "met",
      new_notice: "New supervision notice", squad_offline_toast: "Squad offline",
      last_seen_here: "last seen here",
      act_rule: "Rule", act_cancel: "Cancel", act_note: "Note", act_reopen: "Reopen",
      decision: "Decision", uphold: "Uphold (the unit's squad carries on)",
      reassign: "Reassign to the unit with jurisdiction", target_unit: "Unit", choose: "choose…",
      target_category: "Category", keep_category: "keep the category", assist: "Assisting units",
      note: "Note", submit_ruling: "Rule", cancel_reason: "Reason",
      reason_duplicate: "duplicate", reason_withdrawn: "withdrawn by the caller",
      reason_unfounded: "unfounded", duplicate_of: "Original request number",
      submit_cancel: "Cancel the request", submit_note: "Add the note", submit_reopen: "Reopen",
      close_form: "Close", done_ruling: "Ruled", done_cancel: "Cancelled", done_note: "Note added",
      done_reopen: "Reopened", check_field: "Check", required: "required",
      bad_format: "wrong format", number_hint: "e.g. 20260101-000001",
      refused_held: "{unit} does not handle {category} in {district} ({holder} does)",
      refused_nobody: "{unit} does not handle {category} in {district}, nor does any unit",
      refused_district: "{unit} does not serve {district}",
      refused_same_unit: "The request is with {unit} already: uphold instead",
      wrong_state: "Not possible in its current state: ", forbidden: "Not allowed for your role",
      ev: {
        received: "received", queued: "waiting for a squad", transferred: "transferred (110/119/120)",
        offered: "offered", offer_expired: "offer not answered", accepted: "accepted",
        en_route: "on the way", arrived: "on scene", deferred: "promised a time",
        disputed: "disputed: not our jurisdiction", upheld: "ruling: upheld",
        reassigned: "ruling: reassigned", reassigned_in: "moved in", resolved: "resolved",
        reopened: "reopened", cancelled: "cancelled", note: "note", notice_issued: "supervision notice",
        notice_closed: "notice closed", squad_offline: "squad offline", assist_requested: "assist requested",
        citizen_message_queued: "text queued", citizen_message_attempt: "text sent",
        citizen_message_delivered: "text delivered", citizen_message_failed: "text failed",
      },
      states: {
        received: "received", queued: "waiting", offered: "offered", accepted: "accepted",
        en_route: "en route", on_scene: "on scene", deferred: "promised", disputed: "disputed",
        resolved: "resolved", cancelled: "cancelled", transferred: "transferred",
      },
      kinds: { accept: "accept", arrive: "arrive", resolve: "resolve", promise: "promise",
        waiting: "waiting" },
      notice_kinds: { accept: "not accepted in time", arrive: "not on scene in time",
        resolve: "not resolved in time", promise: "promise broken", waiting: "no squad could take it" },
      actors: { system: "system", squad: "squad", calltaker: "call-taker", center: "center",
        unit: "unit desk", admin: "admin" },
    },
  });

  /* A word from one of the nested tables (ev, states, kinds, ...), or the code itself. */
  Center.word = function (table, code) {
    const words = Page.t(table);
    return (words && typeof words === "object" && words[code]) || code;
  };

  /* "1 h 12 min" / "1小时12分" for a number of seconds. */
  Center.span = function (seconds) {
    const s = Math.max(0, Math.round(Math.abs(seconds)));
    const zh = Page.lang === "zh";
    if (s < 60) return s + (zh ? "秒" : " s");
    const m = Math.floor(s / 60) % 60;
    const h = Math.floor(s / 3600);
    if (!h) return m + (zh ? "分" : " min");
    const d = Math.floor(h / 24);
    if (d >= 2) return d + (zh ? "天" : " d") + (h % 24 ? (h % 24) + (zh ? "小时" : " h") : "");
    return h + (zh ? "小时" : " h") + (m ? m + (zh ? "分" : " min") : "");
  };

  /* A notice's level: "2级" / "level 2". */
  Center.level = function (n) {
    return Page.lang === "zh" ? n + "级" : "level " + n;
  };

  /* The squads' names by id, learnt from every list and track the console reads: people
   * call a squad by its name, the id is for the record. */
  Center.squadNames = new Map();
  Center.learnSquads = function (pairs) {
    for (const [id, name] of pairs) if (id && name) Center.squadNames.set(id, name);
  };
  /* A squad as people call it: its name, or its id while the console has not learnt it. */
  Center.squad = function (id) {
    return Center.squadNames.get(id) || id || "";
  };

  /* Who did it, as a person reads it: "squad:S12ab" -> "分队 water-laocheng-1". */
  Center.actor = function (by) {
    if (!by) return "";
    const [kind, ...rest] = String(by).split(":");
    const who = kind === "squad" ? Center.squad(rest.join(":")) : rest.join(":");
    const word = Center.word("actors", kind);
    return who ? word + " " + who : word;
  };

  /* Name of a unit, category or district in the page's language. */
  Center.named = function (table, code) {
    const item = table && table.get(code);
    if (!item) return code || "";
    return Page.lang === "zh" ? item.name_zh : item.name_en;
  };
})();
