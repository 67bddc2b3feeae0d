/* agentsaga web view: helpers shared by the page (app.js) and its charts (charts.js):
 * reading the CLI's documents whatever their vocabulary, and building DOM nodes. */
"use strict";

(function (A) {
  const ACTIVE = new Set(["running", "rolling_back"]);

  // --- the documents, whatever the CLI's vocabulary of the day ---------------------------

  const runIdOf = (r) => r.run_id ?? r.id;
  const stepIdOf = (a) => a.step_id ?? a.step;

  function runOf(detail) {
    return detail.run ?? detail;
  }

  /** Every attempt in start order, each with step_id and step_index. */
  function attemptsOf(detail) {
    let list;
    if (Array.isArray(detail.attempts)) {
      list = detail.attempts.map((a) => ({ ...a, step_id: stepIdOf(a) }));
    } else {
      list = (detail.steps || []).flatMap((s, i) =>
        (s.attempts || []).map((a) => ({
          ...a,
          step_id: stepIdOf(s),
          step_index: a.step_index ?? s.step_index ?? i,
        })),
      );
    }
    const order = stepOrder(detail, list);
    for (const a of list) a.step_index = a.step_index ?? order.indexOf(a.step_id);
    return list.sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0) || ms(a.started_at) - ms(b.started_at));
  }

  function stepOrder(detail, list) {
    if (Array.isArray(detail.steps) && detail.steps.length && typeof detail.steps[0] !== "number") {
      return detail.steps.map((s) => (typeof s === "string" ? s : stepIdOf(s)));
    }
    const seen = [];
    const byIndex = [...list].sort((a, b) => (a.step_index ?? 0) - (b.step_index ?? 0));
    for (const a of byIndex) if (!seen.includes(a.step_id)) seen.push(a.step_id);
    return seen;
  }

  /** The compensations in the order they ran: the run's list, or each attempt's own. */
  function compensationsOf(detail, attempts) {
    if (Array.isArray(detail.compensations)) return detail.compensations;
    return attempts
      .filter((a) => a.compensation && typeof a.compensation === "object")
      .map((a) => ({ ...a.compensation, step_id: a.step_id, attempt: a.attempt }))
      .sort((x, y) => ms(x.started_at) - ms(y.started_at));
  }

  const isReused = (a) => Boolean(a.reused_from || a.reused === true);
  const compStatus = (c) => (c && typeof c === "object" ? c.status : c || "");

  function tokensOf(a) {
    if (typeof a.tokens === "number") return a.tokens;
    return a.usage ? a.usage.total ?? 0 : 0;
  }

  function errorText(e) {
    if (!e) return "";
    if (typeof e === "string") return e;
    return e.message ?? JSON.stringify(e);
  }

  const firstLine = (s) => (s || "").trim().split("\n")[0];
  const ms = (iso) => (iso ? Date.parse(iso) : NaN);

  // --- small DOM helpers -----------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const badge = (status) => el("span", { class: "badge s-" + status, text: status });
  const fmtInt = (n) => (n === null || n === undefined ? "-" : Number(n).toLocaleString("en-US"));
  function fmtCost(c, tokens) {
    if (!tokens) return "-";
    if (c === null || c === undefined) return "unknown";
    return "$" + Number(c).toFixed(4);
  }
  function fmtDuration(msValue) {
    if (msValue === null || msValue === undefined || Number.isNaN(msValue)) return "-";
    if (msValue < 1000) return Math.round(msValue) + " ms";
    const s = msValue / 1000;
    if (s < 120) return s.toFixed(1) + " s";
    return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  }
  const fmtTime = (iso) => (iso ? iso.slice(0, 19).replace("T", " ") : "-");
  const pre = (text, cls) => el("pre", { class: cls || "block", text: text });

  function section(title, ...children) {
    return el("div", { class: "section" }, el("h4", { text: title }), children);
  }

  const folded = (title, body) => el("details", { class: "fold" }, el("summary", { text: title }), body);

  Object.assign(A, { ACTIVE, runIdOf, stepIdOf, runOf, attemptsOf, stepOrder, compensationsOf, isReused, compStatus, tokensOf, errorText, firstLine, ms, el, badge, fmtInt, fmtCost, fmtDuration, fmtTime, pre, section, folded });
})((window.agentsaga = window.agentsaga || {}));
