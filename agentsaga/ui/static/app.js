/* agentsaga web view: the runs, and a run as a picture.
 *
 * Reads the CLI's --json documents: from the JSON API when served by `agentsaga ui`, or
 * from the <script id="agentsaga-data"> block of a file written by `show --html`. Every
 * text from the store (prompts, replies, outputs, errors) is set as textContent, never as
 * HTML; diffs go through diff2html, which escapes them.
 */
"use strict";

(function () {
  const EMBEDDED = document.getElementById("agentsaga-data");
  const STATIC = EMBEDDED ? JSON.parse(EMBEDDED.textContent) : null;
  const TOKEN_META = document.querySelector('meta[name="agentsaga-token"]');
  const TOKEN = TOKEN_META ? TOKEN_META.content : "";
  const ACTIVE = new Set(["running", "rolling_back"]);
  const POLL_ACTIVE_MS = 1500;
  const POLL_IDLE_MS = 5000;
  const app = document.getElementById("app");
  let pollTimer = null;
  let charts = [];

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

  function setWhere(text) {
    document.getElementById("where").textContent = text;
  }

  // --- data ------------------------------------------------------------------------------

  async function api(path) {
    if (STATIC) return fromEmbedded(path);
    const response = await fetch(path, { headers: { Accept: "application/json" } });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  function fromEmbedded(path) {
    const parts = path.split("/").filter(Boolean); // api runs ID [report|steps STEP]
    if (parts.length === 2) return [summaryFromDetail(STATIC.run)];
    if (parts.length === 3) return STATIC.run;
    if (parts[3] === "report") return STATIC.report;
    const step = decodeURIComponent(parts[4]);
    if (STATIC.steps && STATIC.steps[step]) return STATIC.steps[step];
    throw new Error("step " + step + " is not in this file");
  }

  function summaryFromDetail(detail) {
    const run = runOf(detail);
    return { ...run, id: runIdOf(run), steps: attemptsOf(detail).length, usage: {} };
  }

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Agentsaga-Token": TOKEN },
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  // --- routing ---------------------------------------------------------------------------

  function route() {
    stopPolling();
    destroyCharts();
    app.dataset.key = "";
    const hash = location.hash.replace(/^#/, "");
    const m = hash.match(/^\/runs\/([^/]+)(?:\/steps\/([^/]+))?$/);
    if (m) return showRun(decodeURIComponent(m[1]), m[2] ? decodeURIComponent(m[2]) : null);
    if (STATIC) return showRun(runIdOf(runOf(STATIC.run)), null);
    return showRuns();
  }

  function schedule(fn, active) {
    if (STATIC) return;
    pollTimer = setTimeout(fn, active ? POLL_ACTIVE_MS : POLL_IDLE_MS);
  }

  function stopPolling() {
    if (pollTimer) clearTimeout(pollTimer);
    pollTimer = null;
  }

  function destroyCharts() {
    for (const c of charts) c.destroy();
    charts = [];
  }

  function showError(err) {
    app.replaceChildren(el("p", { class: "error", text: String(err.message || err) }));
  }

  // --- the runs page ---------------------------------------------------------------------

  const filters = { status: "", pipeline: "" };

  async function showRuns() {
    setWhere("runs");
    let runs;
    try {
      runs = await api("/api/runs?limit=200");
    } catch (err) {
      showError(err);
      schedule(showRuns, false);
      return;
    }
    runs = Array.isArray(runs) ? runs : runs.runs || [];
    renderRuns(runs);
    schedule(showRuns, runs.some((r) => ACTIVE.has(r.status)));
  }

  function renderRuns(runs) {
    const statuses = [...new Set(runs.map((r) => r.status))].sort();
    const pipelines = [...new Set(runs.map((r) => r.pipeline))].sort();
    const select = (name, values) =>
      el(
        "select",
        {
          id: "filter-" + name,
          onchange: (e) => {
            filters[name] = e.target.value;
            renderRuns(runs);
          },
        },
        el("option", { value: "", text: "any " + name }),
        values.map((v) => el("option", { value: v, selected: filters[name] === v, text: v })),
      );
    const shown = runs.filter(
      (r) =>
        (!filters.status || r.status === filters.status) &&
        (!filters.pipeline || r.pipeline === filters.pipeline),
    );
    const rows = shown.map((r) => {
      const usage = r.usage || {};
      const end = ACTIVE.has(r.status) ? Date.now() : ms(r.finished_at ?? r.updated_at);
      const id = runIdOf(r);
      return el(
        "tr",
        { class: "run-row", "data-run": id, "data-status": r.status },
        el("td", {}, el("a", { href: "#/runs/" + encodeURIComponent(id), text: id })),
        el("td", { text: r.pipeline }),
        el("td", {}, badge(r.status)),
        el("td", { class: "num", text: r.step_count ?? r.steps }),
        el("td", { class: "num", text: fmtInt(usage.total) }),
        el("td", { class: "num", text: fmtCost(usage.cost_usd, usage.total) }),
        el("td", { class: "num", text: fmtDuration(end - ms(r.created_at)) }),
        el("td", { text: fmtTime(r.created_at) }),
      );
    });
    const head = ["run", "pipeline", "status", "steps", "tokens", "cost", "duration", "started"];
    app.replaceChildren(
      el(
        "section",
        { class: "card" },
        el("div", { class: "filters" }, el("h1", { text: "Runs" }), select("status", statuses),
          select("pipeline", pipelines)),
        runs.length === 0
          ? el("p", { class: "muted", text: "no runs yet; start one with: agentsaga run PIPELINE.yml" })
          : el(
              "table",
              { class: "grid", id: "runs" },
              el("thead", {}, el("tr", {}, head.map((h) => el("th", { text: h })))),
              el("tbody", {}, rows),
            ),
      ),
    );
  }

  // --- the run page ----------------------------------------------------------------------

  async function showRun(runId, step) {
    setWhere("run " + runId);
    let detail, report;
    try {
      [detail, report] = await Promise.all([
        api("/api/runs/" + encodeURIComponent(runId)),
        api("/api/runs/" + encodeURIComponent(runId) + "/report"),
      ]);
    } catch (err) {
      showError(err);
      return;
    }
    const run = runOf(detail);
    const active = ACTIVE.has(run.status);
    const key = JSON.stringify([detail, report]);
    if (app.dataset.key !== key) {
      app.dataset.key = key;
      await renderRun(detail, report, step);
    }
    schedule(() => showRun(runId, step), active || run.status === "waiting");
  }

  async function renderRun(detail, report, step) {
    destroyCharts();
    const run = runOf(detail);
    const attempts = attemptsOf(detail);
    const page = el(
      "div",
      { class: "run-page", "data-run": runIdOf(run), "data-status": run.status },
      runHeader(run, report),
      run.status === "waiting" ? approvalPanel(run, attempts) : null,
      el(
        "section",
        { class: "card" },
        el("h2", { text: "Timeline" }),
        el("p", {
          class: "muted",
          text: "Each attempt is a bar; arrows go back where a retry or a rewind began, " +
            "compensations (undo) are numbered in the order they ran.",
        }),
        el("div", { class: "chart-box", id: "timeline-box" }, el("canvas", { id: "timeline" })),
      ),
      el(
        "section",
        { class: "card" },
        el("h2", { text: "Tokens per step" }),
        taxLine(report),
        el("div", { class: "chart-box short" }, el("canvas", { id: "tokens" })),
      ),
      el("section", { class: "card" }, el("h2", { text: "Attempts" }), attemptsTable(run, attempts)),
      el("section", { class: "card", id: "step-detail" }),
    );
    app.replaceChildren(page);
    charts.push(drawTimeline(document.getElementById("timeline"), detail, attempts, run));
    const tokens = drawTokens(document.getElementById("tokens"), report, attempts);
    if (tokens) charts.push(tokens);
    if (step) await showStep(runIdOf(run), step);
  }

  function runHeader(run, report) {
    const end = ACTIVE.has(run.status) || run.status === "waiting" ? Date.now() : ms(run.finished_at);
    const facts = [
      ["pipeline", run.pipeline],
      ["branch", run.branch],
      ["started", fmtTime(run.created_at)],
      ["duration", fmtDuration(end - ms(run.created_at))],
      ["tokens spent", fmtInt(report.spent_tokens)],
      ["cost", fmtCost(report.cost_usd, report.spent_tokens)],
    ];
    return el(
      "section",
      { class: "card head" },
      el("h1", {}, "run ", el("code", { text: runIdOf(run) }), " ", badge(run.status)),
      el("dl", { class: "facts" }, facts.filter((f) => f[1]).map(([k, v]) =>
        el("div", {}, el("dt", { text: k }), el("dd", { text: v })))),
      run.parent_run_id
        ? el("p", {}, "forked from ", el("a", { href: "#/runs/" + run.parent_run_id,
            text: run.parent_run_id }), " at " + (run.parent_step_id ?? run.parent_step ?? "?"))
        : null,
      run.error ? pre(errorText(run.error), "block error") : null,
    );
  }

  function taxLine(report) {
    const pct = (x) => (x === undefined || x === null ? "-" : (x * 100).toFixed(1) + "%");
    return el(
      "p",
      { class: "tax" },
      `spent ${fmtInt(report.spent_tokens)} tokens; one clean pass ${fmtInt(report.clean_pass_tokens)}; ` +
        `reused ${fmtInt(report.reused_checkpoint_tokens)} from checkpoints and ` +
        `${fmtInt(report.reused_from_log_tokens)} from the call log. Failed-run tax: saga ` +
        `${pct(report.tax_saga)}, a restart from scratch ${pct(report.tax_restart)} ` +
        `(${fmtInt(report.restart_counterfactual_tokens)} tokens).`,
    );
  }

  function attemptsTable(run, attempts) {
    const rid = runIdOf(run);
    const head = ["step", "attempt", "status", "started", "duration", "tokens", "compensation",
      "error"];
    return el(
      "table",
      { class: "grid", id: "attempts" },
      el("thead", {}, el("tr", {}, head.map((h) => el("th", { text: h })))),
      el(
        "tbody",
        {},
        attempts.map((a) =>
          el(
            "tr",
            {
              class: "attempt-row" + (a.superseded ? " superseded" : ""),
              "data-step": a.step_id,
              "data-attempt": a.attempt,
              onclick: () => {
                location.hash = "#/runs/" + encodeURIComponent(rid) + "/steps/" +
                  encodeURIComponent(a.step_id);
              },
            },
            el("td", {}, el("a", {
              href: "#/runs/" + encodeURIComponent(rid) + "/steps/" + encodeURIComponent(a.step_id),
              text: a.step_id,
            })),
            el("td", { class: "num", text: a.attempt }),
            el("td", {}, badge(a.status), isReused(a) ? " reused" : "",
              a.superseded ? " superseded" : ""),
            el("td", { text: fmtTime(a.started_at) }),
            el("td", { class: "num", text: fmtDuration(a.duration_ms) }),
            el("td", { class: "num", text: fmtInt(tokensOf(a)) }),
            el("td", { text: compStatus(a.compensation) }),
            el("td", { class: "clip", text: firstLine(errorText(a.error)) }),
          ),
        ),
      ),
    );
  }

  // --- the timeline ----------------------------------------------------------------------

  const COLORS = {
    completed: "#2da44e",
    failed: "#cf222e",
    running: "#d4a72c",
    undone: "#8c959f",
    other: "#a475f9",
    compensation: "#8250df",
  };

  function category(a) {
    if (a.status === "running" || a.status === "compensating") return "running";
    if (a.status === "completed") return "completed";
    if (a.status === "failed" || (a.error && a.status !== "compensated")) return "failed";
    if (a.status === "compensated" || a.status === "compensation_failed") {
      return a.error ? "failed" : "undone";
    }
    return "other";
  }

  /** Bars, arrows and undo marks on one time axis (seconds since the run began). */
  function timelineModel(detail, attempts, run) {
    const rows = stepOrder(detail, attempts);
    const t0 = Math.min(ms(run.created_at), ...attempts.map((a) => ms(a.started_at)).filter(isFinite));
    const now = Date.now();
    const sec = (iso, fallback) => {
      const t = ms(iso);
      return isFinite(t) ? (t - t0) / 1000 : fallback;
    };
    const bars = attempts.map((a) => {
      const start = Math.max(0, sec(a.started_at, 0));
      const end = a.finished_at
        ? sec(a.finished_at, start)
        : a.duration_ms != null ? start + a.duration_ms / 1000 : (now - t0) / 1000;
      return { kind: "attempt", a, step: a.step_id, start, end: Math.max(end, start),
        cat: isReused(a) ? "other" : category(a) };
    });
    const arrows = [];
    let prev = null;
    for (const bar of bars) {
      if (isReused(bar.a)) continue;
      if (prev && bar.a.step_index <= prev.a.step_index) {
        const kind = bar.a.step_index < prev.a.step_index ? "rewind" : "retry";
        arrows.push({ kind, from: prev, to: bar, why: firstLine(errorText(prev.a.error)) });
      }
      prev = bar;
    }
    const undo = compensationsOf(detail, attempts).filter((c) => c.status !== "skipped");
    const comps = undo.map((c, i) => {
      const start = Math.max(0, sec(c.started_at, 0));
      return { kind: "compensation", c, step: stepIdOf(c), n: i + 1, start,
        end: Math.max(start, sec(c.finished_at, start)), cat: "compensation" };
    });
    return { rows, bars, arrows, comps };
  }

  const sagaPlugin = {
    id: "sagaMarks",
    afterDatasetsDraw(chart) {
      const model = chart.$saga;
      if (!model) return;
      const { ctx, scales } = chart;
      const x = (v) => scales.x.getPixelForValue(v);
      const y = (step) => scales.y.getPixelForValue(model.rows.indexOf(step));
      let arrows = 0;
      const taken = []; // label boxes already drawn: a label moves up until it fits
      const place = (text, cx, cy) => {
        const w = ctx.measureText(text).width + 6;
        let top = cy;
        while (taken.some((b) => cx - w / 2 < b.r && cx + w / 2 > b.l && top - 12 < b.b && top > b.t)) {
          top -= 12;
        }
        taken.push({ l: cx - w / 2, r: cx + w / 2, t: top - 12, b: top });
        ctx.fillText(text, cx, top);
      };
      ctx.save();
      ctx.font = "11px system-ui, sans-serif";
      ctx.textAlign = "center";
      for (const ar of model.arrows) {
        const x1 = x(ar.from.end), y1 = y(ar.from.step);
        const x2 = x(ar.to.start), y2 = y(ar.to.step);
        const color = ar.kind === "rewind" ? "#0969da" : "#9a6700";
        // A retry loops over its own row; a rewind climbs to the earlier step's row.
        const lift = ar.kind === "retry" ? 26 : 12;
        const c1 = [x1 + 12, Math.min(y1, y2) - lift];
        const c2 = [x2 - 12, Math.min(y1, y2) - lift];
        ctx.strokeStyle = color;
        ctx.fillStyle = color;
        ctx.lineWidth = 1.5;
        ctx.setLineDash([5, 3]);
        ctx.beginPath();
        ctx.moveTo(x1, y1);
        ctx.bezierCurveTo(c1[0], c1[1], c2[0], c2[1], x2, y2);
        ctx.stroke();
        ctx.setLineDash([]);
        const angle = Math.atan2(y2 - c2[1], x2 - c2[0]);
        ctx.beginPath();
        ctx.moveTo(x2, y2);
        ctx.lineTo(x2 - 8 * Math.cos(angle - 0.4), y2 - 8 * Math.sin(angle - 0.4));
        ctx.lineTo(x2 - 8 * Math.cos(angle + 0.4), y2 - 8 * Math.sin(angle + 0.4));
        ctx.closePath();
        ctx.fill();
        // The failure that sent the run back, shortened; the tooltip and the table have it all.
        const why = ar.why.length > 40 ? ar.why.slice(0, 39) + "…" : ar.why;
        place(ar.kind + (why ? ": " + why : ""), (x1 + x2) / 2, Math.min(y1, y2) - lift * 0.75 - 2);
        arrows += 1;
      }
      ctx.fillStyle = COLORS.compensation;
      ctx.textAlign = "right";
      for (const c of model.comps) ctx.fillText("undo " + c.n, x(c.start) - 4, y(c.step) + 4);
      ctx.restore();
      chart.$sagaDrawn = { arrows, undo: model.comps.length };
    },
  };

  function drawTimeline(canvas, detail, attempts, run) {
    const model = timelineModel(detail, attempts, run);
    const box = canvas.parentElement;
    box.style.height = Math.max(160, 48 * model.rows.length + 70) + "px";
    const dataset = (cat, label, items) => ({
      label,
      data: items.filter((b) => b.cat === cat).map((b) => ({ x: [b.start, b.end], y: b.step, bar: b })),
      backgroundColor: cat === "compensation" ? "rgba(130,80,223,0.35)" : COLORS[cat],
      borderColor: cat === "compensation" ? COLORS.compensation : "rgba(0,0,0,0.25)",
      borderWidth: 1,
      borderSkipped: false,
      grouped: false,
      minBarLength: 4,
      barPercentage: cat === "compensation" ? 0.35 : 0.7,
      categoryPercentage: 1,
    });
    const datasets = [
      dataset("completed", "completed", model.bars),
      dataset("failed", "failed", model.bars),
      dataset("running", "running", model.bars),
      dataset("undone", "undone later", model.bars),
      dataset("other", "skipped / reused / other", model.bars),
      dataset("compensation", "compensation (undo)", model.comps),
    ].filter((d) => d.data.length);
    const chart = new Chart(canvas, {
      type: "bar",
      data: { labels: model.rows, datasets },
      plugins: [sagaPlugin],
      options: {
        indexAxis: "y",
        animation: false,
        layout: { padding: { top: 28 } },
        responsive: true,
        maintainAspectRatio: false,
        scales: {
          x: { type: "linear", min: 0, title: { display: true, text: "seconds since the run began" } },
          y: { type: "category", labels: model.rows },
        },
        plugins: {
          legend: { position: "bottom" },
          tooltip: { callbacks: { label: (item) => barLabel(item.raw.bar) } },
        },
        onClick: (evt, elements) => {
          if (!elements.length) return;
          const raw = chart.data.datasets[elements[0].datasetIndex].data[elements[0].index];
          location.hash = "#/runs/" + encodeURIComponent(runIdOf(run)) + "/steps/" +
            encodeURIComponent(raw.bar.step);
        },
      },
    });
    chart.$saga = model;
    chart.draw();
    canvas.dataset.attempts = String(model.bars.length);
    canvas.dataset.arrows = JSON.stringify(model.arrows.map((a) => a.kind));
    canvas.dataset.undo = JSON.stringify(model.comps.map((c) => c.step));
    return chart;
  }

  function barLabel(bar) {
    const dur = fmtDuration((bar.end - bar.start) * 1000);
    if (bar.kind === "compensation") {
      return `undo ${bar.n}: ${bar.step} (${bar.c.reason}) ${bar.c.status}, ${dur}`;
    }
    const why = firstLine(errorText(bar.a.error));
    return `${bar.step} #${bar.a.attempt} ${bar.a.status}, ${dur}` + (why ? ` - ${why}` : "");
  }

  // --- the token chart -------------------------------------------------------------------

  function perStep(report, attempts) {
    const split = (report.steps || []).filter((s) => typeof s.spent_tokens === "number");
    if (split.length) {
      return split.map((s) => ({ step: stepIdOf(s), spent: s.spent_tokens,
        reused: (s.reused_checkpoint_tokens ?? 0) + (s.reused_from_log_tokens ?? 0),
        restart: s.restart_counterfactual_tokens }));
    }
    const steps = [];
    for (const a of attempts) {
      let s = steps.find((x) => x.step === a.step_id);
      if (!s) steps.push((s = { step: a.step_id, spent: 0, reused: 0, restart: 0 }));
      if (!isReused(a)) s.spent += tokensOf(a);
      s.restart = s.spent;
    }
    return steps;
  }

  function drawTokens(canvas, report, attempts) {
    const steps = perStep(report, attempts);
    if (!steps.some((st) => st.spent || st.reused || st.restart)) {
      canvas.parentElement.replaceWith(el("p", { class: "muted", id: "tokens-none",
        text: "This run made no model calls." }));
      return null;
    }
    return new Chart(canvas, {
      type: "bar",
      data: {
        labels: steps.map((s) => s.step),
        datasets: [
          { label: "spent", data: steps.map((s) => s.spent), backgroundColor: "#0969da" },
          { label: "reused (not paid again)", data: steps.map((s) => s.reused), backgroundColor: "#2da44e" },
          { label: "restart from scratch would pay", data: steps.map((s) => s.restart),
            backgroundColor: "#afb8c1" },
        ],
      },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        scales: { y: { beginAtZero: true, title: { display: true, text: "tokens" } } },
        plugins: { legend: { position: "bottom" } },
      },
    });
  }

  // --- a step's detail -------------------------------------------------------------------

  async function showStep(runId, step) {
    const box = document.getElementById("step-detail");
    if (!box) return;
    box.replaceChildren(el("h2", { text: "Step " + step }), el("p", { class: "muted", text: "loading…" }));
    let detail;
    try {
      detail = await api("/api/runs/" + encodeURIComponent(runId) + "/steps/" + encodeURIComponent(step));
    } catch (err) {
      box.replaceChildren(el("h2", { text: "Step " + step }), el("p", { class: "error", text: err.message }));
      return;
    }
    box.replaceChildren(el("h2", { text: "Step " + step }), ...(detail.attempts || []).map(attemptCard));
    box.dataset.step = step;
    box.scrollIntoView({ block: "start" });
  }

  function attemptCard(a) {
    const tokens = a.usage ? a.usage.total : 0;
    const card = el(
      "article",
      { class: "attempt", "data-attempt": a.attempt },
      el("h3", {}, `attempt ${a.attempt} `, badge(a.status),
        ` ${fmtDuration(a.duration_ms)} · ${fmtInt(tokens)} tokens`,
        a.superseded ? " · superseded" : ""),
      a.error ? section("Error", pre(errorText(a.error), "block error")) : null,
      (a.compensations || []).length
        ? section("Compensation", a.compensations.map((c) =>
            el("p", {}, `${c.reason}: `, badge(c.status), c.error ? " " + errorText(c.error) : "")))
        : null,
    );
    if (a.prompt && typeof a.prompt === "object") {
      card.append(section("Prompt", a.prompt.system ? folded("system", pre(a.prompt.system)) : null,
        pre(a.prompt.user || "")));
    }
    // A conversation grows call by call: each call shows only the messages it added.
    let seen = 0;
    for (const call of a.calls || a.model_calls || []) {
      card.append(callBlock(call, seen));
      const sent = call.request && Array.isArray(call.request.messages) ? call.request.messages.length : 0;
      seen = sent ? sent + 1 : 0; // + the reply, which the next request carries back
    }
    const transcript = a.transcript || (a.output && a.output.transcript);
    if (Array.isArray(transcript) && transcript.length) card.append(transcriptBlock(transcript));
    const logs = a.logs || (a.log && typeof a.log.stdout === "string" && !a.log.stdout.startsWith("/")
      ? a.log : {});
    if (logs.stdout || logs.stderr) {
      card.append(section("Command output",
        logs.stdout ? [el("h4", { text: "stdout" }), pre(logs.stdout)] : null,
        logs.stderr ? [el("h4", { text: "stderr" }), pre(logs.stderr)] : null));
    }
    if (a.diff) card.append(diffBlock(a.diff));
    if (a.output) {
      card.append(el("details", { class: "raw" }, el("summary", { text: "output (JSON)" }),
        pre(JSON.stringify(a.output, null, 2))));
    }
    return card;
  }

  function section(title, ...children) {
    return el("div", { class: "section" }, el("h4", { text: title }), children);
  }

  function callBlock(call, seen) {
    const u = call.usage || {};
    const req = call.request;
    const all = req && Array.isArray(req.messages) ? req.messages : [];
    const skip = seen && seen <= all.length ? seen : 0;
    const messages = all.slice(skip);
    const reply = el("div", { class: "reply" }, el("h4", { text: "reply" }),
      call.reply != null || (call.tool_calls || []).length
        ? pre(messageText({ content: call.reply, tool_calls: call.tool_calls }))
        : null,
      call.error ? pre(errorText(call.error), "block error") : null);
    const http = call.http_attempts ?? call.http_attempt;
    return el(
      "details",
      { class: "call", open: true },
      el("summary", {}, `model call ${call.id ?? call.call} · ${call.provider}/${call.model} · `,
        badge(call.status),
        ` · in ${fmtInt(u.input)} out ${fmtInt(u.output)} cache r ${fmtInt(u.cache_read)} w ${fmtInt(u.cache_write)}` +
        ` · ${fmtCost(u.cost_usd, u.total)} · ${fmtDuration(call.latency_ms)}` +
        (http > 1 ? ` · ${http} HTTP attempts` : "")),
      // The prompt beside the reply when the document has the request (the web view's
      // step detail); else the attempt's prompt is shown once above its calls.
      req
        ? el("div", { class: "pair" },
            el("div", { class: "prompt" }, el("h4", { text: "prompt" }),
              req.system ? folded("system", pre(req.system)) : null,
              req.cache_prefix ? folded("cached prefix", pre(req.cache_prefix)) : null,
              skip ? el("p", { class: "muted", text: `${skip} earlier messages, as in the calls above` }) : null,
              messages.map((m) => [el("h5", { text: m.role || "message" }), pre(messageText(m))])),
            reply)
        : reply,
    );
  }

  const folded = (title, body) => el("details", { class: "fold" }, el("summary", { text: title }), body);

  function messageText(m) {
    const parts = [];
    const text = contentText(m.content);
    if (text) parts.push(text);
    for (const t of m.tool_calls || []) parts.push(`[tool call] ${t.name}(${JSON.stringify(t.arguments)})`);
    for (const r of m.tool_results || []) {
      const body = typeof r.content === "string" ? r.content : JSON.stringify(r.content);
      parts.push(`[tool result${r.is_error ? ", error" : ""}]\n${body}`);
    }
    return parts.join("\n\n");
  }

  function contentText(content) {
    if (content === null || content === undefined) return "";
    if (typeof content === "string") return content;
    if (!Array.isArray(content)) return JSON.stringify(content, null, 2);
    return content.map((block) => {
      if (block.type === "text") return block.text;
      if (block.type === "tool_use") return `[tool call] ${block.name}(${JSON.stringify(block.input)})`;
      if (block.type === "tool_result") {
        const inner = typeof block.content === "string" ? block.content : JSON.stringify(block.content);
        return `[tool result]\n${inner}`;
      }
      return JSON.stringify(block, null, 2);
    }).join("\n\n");
  }

  /** An agent's turns: what it said, its tokens, and each tool call with its result size. */
  function transcriptBlock(turns) {
    const call = (c) => {
      const size = c.status !== "done" ? "no result (in flight)"
        : c.result_chars == null ? "?" : fmtInt(c.result_chars) + " chars";
      return el("li", { class: c.is_error ? "error" : "" },
        el("code", { text: `${c.tool}(${c.arguments ?? ""})` }), ` → ${size}`, c.is_error ? " error" : "");
    };
    return section("Tool transcript", el("table", { class: "grid transcript" },
      el("thead", {}, el("tr", {}, ["turn", "tokens in / out / cache", "said", "tool calls"].map((h) =>
        el("th", { text: h })))),
      el("tbody", {}, turns.map((t) => {
        const tok = t.tokens || {};
        return el("tr", { class: "turn" + (t.complete === false ? " in-flight" : "") },
          el("td", { class: "num", text: t.turn }),
          el("td", { class: "num", text: `${fmtInt(tok.input)} / ${fmtInt(tok.output)} / ${fmtInt(tok.cache_read)}` }),
          el("td", { text: (t.text || "") + (t.complete === false ? " (in flight when its process died)" : "") }),
          el("td", {}, el("ul", { class: "calls" }, (t.calls || []).map(call))));
      }))));
  }

  function diffBlock(diff) {
    const target = el("div", { class: "diff" });
    const block = section("Diff", target);
    // diff2html escapes the patch; highlight.js colours the code by file extension.
    const ui = new Diff2HtmlUI(target, diff, {
      drawFileList: false,
      matching: "lines",
      outputFormat: "line-by-line",
      highlight: true,
      synchronisedScroll: false,
    });
    ui.draw();
    ui.highlightCode();
    return block;
  }

  // --- approvals -------------------------------------------------------------------------

  function approvalPanel(run, attempts) {
    const gate = [...attempts].reverse().find((a) => a.status === "waiting" || a.status === "running");
    const rid = runIdOf(run);
    const comment = el("textarea", { id: "decision-comment", rows: 3,
      placeholder: "why (a rejection's comment reaches the model in ${{ rewind.error }})" });
    const message = el("p", { class: "decision-result", id: "decision-result" });
    const decide = async (verdict) => {
      message.textContent = "sending…";
      try {
        const result = await post("/api/runs/" + encodeURIComponent(rid) + "/" + verdict,
          { comment: comment.value });
        message.textContent = result.message || verdict + "d";
        app.dataset.key = "";
      } catch (err) {
        message.textContent = err.message;
        message.className = "decision-result error";
      }
    };
    const panel = el(
      "section",
      { class: "card approval", id: "approval" },
      el("h2", { text: "Waiting for a decision" }),
      gate ? el("p", {}, "Gate ", el("code", { text: gate.step_id }), ": review the diff and the steps' detail below.") : null,
      run.gate && run.gate.message ? pre(run.gate.message) : null,
    );
    if (STATIC) {
      panel.append(el("p", { class: "muted", text:
        `decide with: agentsaga approve ${rid}  or  agentsaga reject ${rid} --comment "…"` }));
      return panel;
    }
    panel.append(comment, el("div", { class: "buttons" },
      el("button", { id: "approve", class: "approve", onclick: () => decide("approve"), text: "Approve" }),
      el("button", { id: "reject", class: "reject", onclick: () => decide("reject"), text: "Reject" })),
      message);
    return panel;
  }

  window.addEventListener("hashchange", route);
  route();
})();
