/* agentsaga web view: the runs, and a run as a picture.
 *
 * Reads the CLI's --json documents: from the JSON API when served by `agentsaga ui`, or
 * from the <script id="agentsaga-data"> block of a file written by `show --html`. Every
 * text from the store (prompts, replies, outputs, errors) is set as textContent, never as
 * HTML; diffs go through diff2html, which escapes them.
 */
"use strict";

(function (A) {
  const { ACTIVE, runIdOf, stepIdOf, runOf, attemptsOf, isReused, compStatus, tokensOf, errorText,
    firstLine, ms, el, badge, fmtInt, fmtCost, fmtDuration, fmtTime, pre, section, folded,
    drawTimeline, drawTokens } = A;
  const EMBEDDED = document.getElementById("agentsaga-data");
  const STATIC = EMBEDDED ? JSON.parse(EMBEDDED.textContent) : null;
  const TOKEN_META = document.querySelector('meta[name="agentsaga-token"]');
  const TOKEN = TOKEN_META ? TOKEN_META.content : "";
  const POLL_ACTIVE_MS = 1500;
  const POLL_IDLE_MS = 5000;
  const app = document.getElementById("app");
  let pollTimer = null;
  let charts = [];

  function setWhere(text) {
    document.getElementById("where").textContent = text;
  }

  // --- data ------------------------------------------------------------------------------

  async function api(path) {
    if (STATIC) return fromEmbedded(path);
    const response = await fetch(path, { headers: { Accept: "application/json" } });
    const data = await response.json();
    if (!response.ok) throw Object.assign(new Error(data.error || response.statusText), { data });
    return data;
  }

  function fromEmbedded(path) {
    const parts = path.split("/").filter(Boolean); // api runs ID [report|steps STEP]
    if (parts.length === 2) return [summaryFromDetail(STATIC.run)];
    if (parts.length === 3) return STATIC.run;
    if (parts[3] === "report") return STATIC.report;
    if (parts[3] === "gate") {
      if (!STATIC.gate) throw new Error("this run is not waiting at a gate");
      return STATIC.gate;
    }
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
    if (!response.ok) throw Object.assign(new Error(data.error || response.statusText), { data });
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
        {
          class: "run-row",
          "data-run": id,
          "data-status": r.status,
          onclick: (e) => {
            if (e.target.tagName !== "A") location.hash = "#/runs/" + encodeURIComponent(id);
          },
        },
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
    // What awaits a person comes first, whatever the filters (runs --status waiting).
    const waiting = runs.filter((r) => r.status === "waiting");
    const link = (r) => el("a", { href: "#/runs/" + encodeURIComponent(runIdOf(r)), text: runIdOf(r) });
    const banner = waiting.length
      ? el("p", { class: "waiting-banner", id: "waiting" },
          `${waiting.length} run${waiting.length > 1 ? "s wait" : " waits"} for a decision: `,
          waiting.map((r, i) => [i ? ", " : "", link(r), ` (${r.pipeline})`]))
      : null;
    app.replaceChildren(
      el(
        "section",
        { class: "card" },
        el("div", { class: "filters" }, el("h1", { text: "Runs" }), select("status", statuses),
          select("pipeline", pipelines)),
        banner,
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
      run.status === "waiting" ? approvalPanel(run, detail) : null,
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
        `reused ${fmtInt(report.reused_checkpoint_tokens)} from a parent's checkpoints and ` +
        `${fmtInt(report.reused_from_log_tokens)} from the call log; ` +
        `saved ${fmtInt(report.saved_tokens ?? 0)} by keeping checkpoints where the run went ` +
        `back. Failed-run tax: saga ` +
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
    const calls = a.calls || a.model_calls || [];
    // The attempt's prompt, unless its calls carry their whole requests (shown with each).
    if (a.prompt && typeof a.prompt === "object" && !calls.some((c) => c.request)) {
      card.append(section("Prompt", a.prompt.system ? folded("system", pre(a.prompt.system)) : null,
        pre(a.prompt.user || "")));
    }
    // A conversation grows call by call: each call shows only the messages it added.
    let seen = 0;
    for (const call of calls) {
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

  function approvalPanel(run, detail) {
    const rid = runIdOf(run);
    const panel = el("section", { class: "card approval", id: "approval" },
      el("h2", { text: "Waiting for a decision" }));
    const about = el("div", { class: "gate" }, el("p", { class: "muted", text: "loading…" }));
    panel.append(about);
    api("/api/runs/" + encodeURIComponent(rid) + "/gate")
      .then(async (gate) => about.replaceChildren(...gateView(gate, await lastReply(rid, detail))))
      .catch((err) => about.replaceChildren(el("p", { class: "error", text: err.message })));
    const history = detail.decisions || [];
    if (history.length) {
      panel.append(el("h4", { text: "Earlier decisions" }), el("ul", { class: "decisions" },
        history.map((d) => el("li", {}, `${d.step_id ?? d.step} visit ${d.visit}: `, badge(d.decision),
          ` by ${d.decided_by ?? d.by} at ${fmtTime(d.decided_at ?? d.at)}`, d.comment ? ` — ${d.comment}` : ""))));
    }
    if (STATIC) {
      panel.append(el("p", { class: "muted", text:
        `decide with: agentsaga approve ${rid}  or  agentsaga reject ${rid} --comment "…"` }));
      return panel;
    }
    const comment = el("textarea", { id: "decision-comment", rows: 3,
      placeholder: "why (a rejection's comment reaches the model in ${{ rewind.error }})" });
    const message = el("p", { class: "decision-result", id: "decision-result" });
    const buttons = [];
    const decide = async (verdict, discardEdits = false) => {
      buttons.forEach((b) => (b.disabled = true));
      message.className = "decision-result";
      message.textContent = "sending…";
      try {
        const result = await post("/api/runs/" + encodeURIComponent(rid) + "/" + verdict,
          { comment: comment.value, discard_edits: discardEdits });
        message.textContent = result.message || verdict;
        message.dataset.decision = result.decision;
        stopPolling();
        schedule(() => showRun(rid, null), true);
      } catch (err) {
        message.textContent = err.message;
        message.className = "decision-result error";
        buttons.forEach((b) => (b.disabled = false));
        if (err.data && err.data.files) {
          // A person's edits in the worktree refused the rejection; they are saved at
          // err.data.saved. Going on discards them from the worktree, never from the ref.
          message.append(el("button", { id: "reject-discarding", class: "reject",
            onclick: () => decide(verdict, true),
            text: `Reject anyway, discarding ${err.data.files.length} edited file(s) (kept at ${err.data.saved})` }));
        }
      }
    };
    buttons.push(
      el("button", { id: "approve", class: "approve", onclick: () => decide("approve"), text: "Approve" }),
      el("button", { id: "reject", class: "reject", onclick: () => decide("reject"), text: "Reject" }),
    );
    panel.append(comment, el("div", { class: "buttons" }, buttons), message);
    return panel;
  }

  /** What the model said last before the gate: the reply beside the diff it produced. */
  async function lastReply(rid, detail) {
    const spent = attemptsOf(detail).filter((a) => !a.superseded && tokensOf(a) > 0 && !isReused(a));
    const last = spent[spent.length - 1];
    if (!last) return null;
    const step = await api("/api/runs/" + encodeURIComponent(rid) + "/steps/" +
      encodeURIComponent(last.step_id));
    const attempt = (step.attempts || []).find((a) => a.attempt === last.attempt);
    const calls = attempt ? attempt.calls || attempt.model_calls || [] : [];
    const call = calls[calls.length - 1];
    if (!call || call.reply == null) return null;
    return { step: last.step_id, attempt: last.attempt, reply: call.reply };
  }

  function gateView(gate, said) {
    const parts = [el("p", {}, "Gate ", el("code", { text: gate.step_id ?? gate.step }),
      ` (visit ${gate.visit}), waiting since ${fmtTime(gate.arrived_at)}` +
      (gate.deadline ? `; decide by ${fmtTime(gate.deadline)} (then: ${gate.on_timeout})` : ""))];
    if (gate.message) parts.push(pre(gate.message));
    // What to review: a diff is drawn as one, anything else shown as text.
    if (gate.show) parts.push(section("To review", pre(gate.show)));
    const diff = gate.diff && /^diff --git /m.test(gate.diff) ? diffBlock(gate.diff) : null;
    const reply = said
      ? section(`What the model said (${said.step}, attempt ${said.attempt})`, pre(said.reply))
      : null;
    if (diff && reply) parts.push(el("div", { class: "pair review" }, diff, reply));
    else parts.push(diff, reply);
    return parts.filter(Boolean);
  }

  window.addEventListener("hashchange", route);
  route();
})(window.agentsaga);
