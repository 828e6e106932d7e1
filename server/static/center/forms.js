/* The center's actions on a request: the ruling on a dispute (uphold, or reassign to a unit
 * with a category and assisting units), cancel (reason, duplicate_of), note, reopen.
 *
 * The forms do not validate by themselves: the hub does, and its 4xx answer names each field
 * at fault (`fields`); the reason is shown next to that field, anything else above the button. */
(function () {
  "use strict";

  const Center = window.Center;
  const el = (...args) => Page.el(...args);

  /* A labelled control with the place for its error. */
  function field(name, labelKey, control, extraClass) {
    return el("label", { class: "field " + (extraClass || ""), dataset: { field: name } },
      el("span", { class: "label" }, Page.t(labelKey)), control,
      el("span", { class: "field-error", dataset: { errorFor: name }, role: "alert" }));
  }

  function noteField() {
    return field("note", "note", el("textarea", { name: "note", rows: "3", maxlength: "2000" }));
  }

  /* The hub's reason in the page's language where it is a common one (msgspec's words). */
  function friendly(reason) {
    if (/length >= 1\b|missing required field|regex '\\S'/.test(reason)) return Page.t("required");
    if (/matching regex|pattern/.test(reason)) return Page.t("bad_format");
    return reason;
  }

  /* A ruling the city refused, said with the names people use (the hub's `refused` names
   * the codes): "洛阳市燃气公司不负责西工区的供水管道爆裂（由洛阳市自来水公司负责）". */
  function refusal(error, name) {
    const codes = error.detail && error.detail.refused;
    if (!codes || !codes.unit) return null;
    const names = {
      unit: Center.named(Center.data.units, codes.unit),
      holder: Center.named(Center.data.units, codes.holder),
      district: Center.named(Center.data.districts, codes.district),
      category: Center.named(Center.data.categories, codes.category),
    };
    let key = null;
    if (error.code === "same_unit") key = "refused_same_unit";
    else if (error.code === "no_jurisdiction" && name === "assist") key = "refused_district";
    else if (error.code === "no_jurisdiction") key = codes.holder ? "refused_held" : "refused_nobody";
    return key && Page.t(key).replace(/\{(\w+)\}/g, (_, word) => names[word] || "");
  }

  function clearErrors(form) {
    for (const spot of form.querySelectorAll(".field-error, .form-error")) spot.textContent = "";
    for (const bad of form.querySelectorAll(".invalid")) bad.classList.remove("invalid");
    for (const bad of form.querySelectorAll("[aria-invalid]")) bad.removeAttribute("aria-invalid");
  }

  /* The hub's error on the form: each named field's reason beside it. */
  function showError(form, error) {
    clearErrors(form);
    const general = form.querySelector(".form-error");
    const unplaced = [];
    for (const [name, reason] of Object.entries(error.fields || {})) {
      const spot = form.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
      if (!spot) {
        unplaced.push(name + ": " + reason);
        continue;
      }
      spot.textContent = refusal(error, name) ||
        Page.t("check_field") + (Page.lang === "zh" ? "：" : ": ") + friendly(reason);
      spot.title = reason; // the hub's own words
      const box = spot.closest(".field");
      if (box) box.classList.add("invalid");
      const control = box && box.querySelector("input, select, textarea");
      if (control) control.setAttribute("aria-invalid", "true");
    }
    let text = unplaced.join("; ");
    if (error.status === 409 && error.detail && error.detail.state) {
      text = Page.t("wrong_state") + Center.word("states", error.detail.state);
    } else if (error.status === 403) {
      text = Page.t("forbidden");
    } else if (!Object.keys(error.fields || {}).length) {
      text = error.message || Page.t("error");
    }
    general.textContent = text;
    const first = form.querySelector(".invalid input, .invalid select, .invalid textarea");
    if (first) first.focus();
  }

  /* A form that posts body() to path and calls done(doneKey) on success. */
  function actionForm(id, titleKey, fields, submitKey, path, body, doneKey, done, close) {
    const submit = el("button", { type: "submit", class: "primary" }, Page.t(submitKey));
    const form = el("form", { id, class: "action-form", novalidate: true },
      el("h3", {}, Page.t(titleKey)), ...fields,
      el("p", { class: "form-error", role: "alert" }),
      el("div", { class: "buttons" }, submit,
        el("button", { type: "button", class: "plain", onclick: close }, Page.t("close_form"))));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      submit.disabled = true;
      try {
        await Page.api("POST", path, body(form));
        done(doneKey);
      } catch (error) {
        if (error instanceof Page.ApiError) showError(form, error);
        else throw error;
      } finally {
        submit.disabled = false;
      }
    });
    return form;
  }

  const value = (form, name) => {
    const control = form.elements.namedItem(name);
    return control ? control.value.trim() : "";
  };

  function options(items, chosen) {
    return items.map(([code, label]) => el("option", { value: code, selected: code === chosen }, label));
  }

  /* detail: the request; candidates: [{unit, categories}] that could take it. */
  function ruling(detail, candidates, done, close) {
    const path = `/api/v1/requests/${encodeURIComponent(detail.id)}/ruling`;
    const units = candidates.length ? candidates
      : [...Center.data.units.values()].filter((u) => u.code !== detail.unit)
        .map((u) => ({ unit: u.code, categories: u.categories }));
    const unitSelect = el("select", { name: "unit" },
      el("option", { value: "" }, Page.t("choose")),
      ...options(units.map((c) => [c.unit, Center.named(Center.data.units, c.unit)])));
    const categorySelect = el("select", { name: "category" });
    const assistBox = el("div", { class: "checks" });
    function refill() {
      const chosen = units.find((c) => c.unit === unitSelect.value);
      const categories = chosen ? chosen.categories : [];
      categorySelect.replaceChildren(el("option", { value: "" }, Page.t("keep_category")),
        ...options(categories.map((code) => [code, Center.named(Center.data.categories, code)])));
      assistBox.replaceChildren(...units.filter((c) => c.unit !== unitSelect.value).map((c) =>
        el("label", { class: "check" },
          el("input", { type: "checkbox", name: "assist", value: c.unit }),
          Center.named(Center.data.units, c.unit))));
    }
    unitSelect.addEventListener("change", refill);
    refill();
    const reassignPart = el("fieldset", { class: "reassign-part" },
      field("unit", "target_unit", unitSelect),
      field("category", "target_category", categorySelect),
      field("assist", "assist", assistBox));
    const decision = el("div", { class: "choice", role: "radiogroup" },
      ...["reassign", "uphold"].map((code) => el("label", { class: "check" },
        el("input", { type: "radio", name: "decision", value: code, checked: code === "reassign" }),
        Page.t(code))));
    const form = actionForm("ruling-form", "act_rule",
      [field("decision", "decision", decision), reassignPart, noteField()],
      "submit_ruling", path, (f) => {
        const body = { decision: f.elements.namedItem("decision").value, note: value(f, "note") };
        if (body.decision === "reassign") {
          // none chosen: left out, so the hub says "required" (not "wrong format") beside it
          if (value(f, "unit")) body.unit = value(f, "unit");
          if (value(f, "category")) body.category = value(f, "category");
          const assist = [...f.querySelectorAll("input[name=assist]:checked")].map((i) => i.value);
          if (assist.length) body.assist = assist;
        }
        return body;
      }, "done_ruling", done, close);
    decision.addEventListener("change", () => {
      const reassign = form.elements.namedItem("decision").value === "reassign";
      reassignPart.hidden = !reassign;
      reassignPart.disabled = !reassign;
    });
    return form;
  }

  function cancel(detail, done, close) {
    const path = `/api/v1/requests/${encodeURIComponent(detail.id)}/cancel`;
    const reason = el("select", { name: "reason" },
      ...options(["duplicate", "withdrawn", "unfounded"].map((r) => [r, Page.t("reason_" + r)]), "withdrawn"));
    const original = field("duplicate_of", "duplicate_of",
      el("input", { name: "duplicate_of", autocomplete: "off", spellcheck: "false",
        placeholder: Page.t("number_hint") }));
    original.hidden = true;
    reason.addEventListener("change", () => { original.hidden = reason.value !== "duplicate"; });
    return actionForm("cancel-form", "act_cancel",
      [field("reason", "cancel_reason", reason), original, noteField()],
      "submit_cancel", path, (f) => {
        const body = { reason: value(f, "reason"), note: value(f, "note") };
        if (body.reason === "duplicate") body.duplicate_of = value(f, "duplicate_of");
        return body;
      }, "done_cancel", done, close);
  }

  function note(detail, done, close) {
    const path = `/api/v1/requests/${encodeURIComponent(detail.id)}/notes`;
    return actionForm("note-form", "act_note", [noteField()], "submit_note", path,
      (f) => ({ note: value(f, "note") }), "done_note", done, close);
  }

  function reopen(detail, done, close) {
    const path = `/api/v1/requests/${encodeURIComponent(detail.id)}/reopen`;
    return actionForm("reopen-form", "act_reopen", [noteField()], "submit_reopen", path,
      (f) => ({ note: value(f, "note") }), "done_reopen", done, close);
  }

  Center.forms = { ruling, cancel, note, reopen };
})();
