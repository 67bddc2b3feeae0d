/* agentsaga web view: the run's timeline and its token chart, drawn with Chart.js. */
"use strict";

(function (A) {
  const { runIdOf, stepIdOf, stepOrder, compensationsOf, isReused, tokensOf, errorText, firstLine, ms, el, fmtDuration } = A;

  // --- the timeline ----------------------------------------------------------------------

  const COLORS = {
    completed: "#2da44e",
    failed: "#cf222e",
    interrupted: "#99286e",
    running: "#d4a72c",
    waiting: "#54aeff",
    undone: "#8c959f",
    other: "#a475f9",
    compensation: "#8250df",
  };

  function category(a) {
    if (a.status === "running" || a.status === "compensating") return "running";
    if (a.status === "completed") return "completed";
    if (a.status === "waiting") return "waiting";
    if (a.status === "interrupted") return "interrupted";
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
      dataset("interrupted", "interrupted (Ctrl-C)", model.bars),
      dataset("running", "running", model.bars),
      dataset("waiting", "waiting for a person", model.bars),
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
        reused: (s.reused_checkpoint_tokens ?? 0) + (s.reused_from_log_tokens ?? 0) + (s.saved_tokens ?? 0),
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

  Object.assign(A, { drawTimeline, drawTokens });
})((window.agentsaga = window.agentsaga || {}));
