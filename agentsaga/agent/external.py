"""``external``: an agent CLI (Claude Code, Codex) run non-interactively as a step.

The CLI runs in the workspace like a command step — the engine snapshots the files first,
and the default compensation is ``git: reset`` to that snapshot, as for ``write`` — and
what it changed is committed on the run branch. Its token usage goes into the ledger (the
call log) as the CLI reported it, so budgets, ``report`` and the tax see it:

- ``claude-code``: ``claude -p ... --output-format json`` prints one JSON object with
  ``result``, ``is_error``, ``num_turns``, ``session_id``, ``total_cost_usd`` and
  ``usage`` (``input_tokens``, ``output_tokens``, ``cache_creation_input_tokens``,
  ``cache_read_input_tokens``): one ledger row, its cost the CLI's own figure.
- ``codex``: ``codex exec --json ...`` prints JSON lines; each ``turn.completed`` carries
  ``usage`` (``input_tokens`` including ``cached_input_tokens``, ``output_tokens``): one
  ledger row per turn, priced from the step's ``model`` when the price is known. The last
  ``agent_message`` item is the summary; ``turn.failed`` or ``error`` fail the step.

Such a CLI is one opaque effect: a crash mid-run re-runs it whole (after the reset); only
the built-in ``agent`` kind resumes at a turn. Its spending is known only when it ends: the
budget cannot stop it midway, but a budget already spent keeps it from starting.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentsaga.context import StepContext
from agentsaga.errors import BudgetExceeded, StepFailed, StepTimeout
from agentsaga.process import argv_for, run_command
from agentsaga.redact import redact_json, secret_values
from agentsaga.store import Usage

FORMATS = ("claude-code", "codex")
_MAX_OUTPUT_BYTES = 20_000_000


@dataclass
class Parsed:
    summary: str = ""
    failed: str | None = None
    session_id: str | None = None
    turns: int = 0
    model: str | None = None
    #: (usage, cost in USD or None) per ledger row.
    rows: list[tuple[Usage, float | None]] = field(default_factory=list)


def guess_format(argv: list[str]) -> str | None:
    words = " ".join(Path(a).name for a in argv[:3]).lower()
    if "claude" in words:
        return "claude-code"
    if "codex" in words:
        return "codex"
    return None


def parse_claude(text: str) -> Parsed:
    data = _last_json_object(text)
    if data is None:
        return Parsed(failed="the output holds no JSON result (was --output-format json given?)")
    u = data.get("usage") or {}
    usage = Usage(
        input=int(u.get("input_tokens") or 0),
        output=int(u.get("output_tokens") or 0),
        cache_read=int(u.get("cache_read_input_tokens") or 0),
        cache_write=int(u.get("cache_creation_input_tokens") or 0),
    )
    cost = data.get("total_cost_usd")
    model_usage = data.get("modelUsage")
    return Parsed(
        summary=str(data.get("result") or ""),
        failed=str(data.get("result") or data.get("subtype") or "error")
        if data.get("is_error")
        else None,
        session_id=data.get("session_id"),
        turns=int(data.get("num_turns") or 0),
        model=next(iter(model_usage)) if isinstance(model_usage, dict) and model_usage else None,
        rows=[(usage, float(cost) if isinstance(cost, int | float) else None)],
    )


def parse_codex(text: str) -> Parsed:
    parsed = Parsed()
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        kind = event.get("type")
        if kind == "thread.started":
            parsed.session_id = event.get("thread_id")
        elif kind == "turn.completed":
            u = event.get("usage") or {}
            cached = int(u.get("cached_input_tokens") or 0)
            parsed.rows.append(
                (
                    Usage(
                        # Codex counts cached tokens inside input_tokens (OpenAI's way);
                        # the ledger's input excludes them.
                        input=max(0, int(u.get("input_tokens") or 0) - cached),
                        output=int(u.get("output_tokens") or 0),
                        cache_read=cached,
                    ),
                    None,
                )
            )
            parsed.turns += 1
        elif kind == "item.completed":
            item = event.get("item") or {}
            if item.get("type") == "agent_message" and item.get("text"):
                parsed.summary = str(item["text"])
        elif kind == "turn.failed":
            parsed.failed = str((event.get("error") or {}).get("message") or "turn failed")
        elif kind == "error":
            parsed.failed = str(event.get("message") or "error")
    return parsed


def _last_json_object(text: str) -> dict[str, Any] | None:
    stripped = text.strip()
    candidates = [stripped] + [line for line in reversed(stripped.splitlines())]
    for candidate in candidates:
        if candidate.startswith("{"):
            try:
                value = json.loads(candidate)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def execute(ctx: StepContext) -> dict[str, Any]:
    command = ctx.params["run"]
    argv = argv_for(command)
    fmt = ctx.params.get("format") or guess_format(argv if isinstance(command, list) else [])
    if fmt not in FORMATS:
        raise StepFailed(
            "cannot tell which agent CLI this is: give 'format: claude-code' or 'format: codex'",
            kind="error",
            retryable=False,
        )
    _check_budget(ctx)
    base = ctx.workspace.head()
    result = run_command(
        command,
        cwd=ctx.cwd,
        env=ctx.env,
        log_stem=ctx.log_stem,
        timeout_s=ctx.timeout_s,
        cancel=ctx.cancel,
    )
    text = _stdout(result.stdout_path)
    parsed = parse_claude(text) if fmt == "claude-code" else parse_codex(text)
    model = str(ctx.params.get("model") or parsed.model or fmt)
    _record_usage(ctx, fmt, model, command, parsed, result.duration_ms)
    output: dict[str, Any] = {
        "summary": parsed.summary,
        "turns": parsed.turns,
        "session_id": parsed.session_id,
        "exit_code": result.exit_code,
        "base": base,
        "commit": base,
        "changed": [],
        "diffstat": None,
    }
    if result.timed_out:
        assert ctx.timeout_s is not None
        error = StepTimeout(f"agent CLI {ctx.step.id!r}", ctx.timeout_s)
        error.output = output
        raise error
    if result.exit_code != 0 or parsed.failed:
        why = parsed.failed or result.stderr_tail.strip()[-1500:] or result.stdout_tail[-1500:]
        raise StepFailed(
            f"the agent CLI failed (exit code {result.exit_code}): {why}",
            kind="error",
            output=output,
        )
    if ctx.workspace.uses_git:
        from agentsaga.steps.write import _diffstat

        commit = ctx.workspace.commit(
            f"agentsaga {ctx.run_id}: step {ctx.step.id} (attempt {ctx.attempt})"
        )
        if commit and base:
            from agentsaga import gitops

            output["commit"] = commit
            output["changed"] = gitops.changed_files(ctx.cwd, base, commit)
            output["diffstat"] = _diffstat(ctx, base, commit)
    return output


def _check_budget(ctx: StepContext) -> None:
    """A CLI's spending is known only when it ends, so the budget cannot stop it midway;
    but a run (or step) whose budget is already spent does not start one."""
    llm = ctx.llm
    if llm is None or not (llm.run_budget or llm.step_budget):
        return
    paid = [c for c in llm.store.llm_calls(ctx.run_id) if c.status == "ok"]
    for scope, budget, calls in (
        ("the run", llm.run_budget, paid),
        (f"step {ctx.step.id!r}", llm.step_budget, [c for c in paid if c.step_id == ctx.step.id]),
    ):
        spent = {
            "max_tokens": float(sum(c.usage.total for c in calls)),
            "max_cost_usd": sum(c.usage.cost_usd or 0.0 for c in calls),
        }
        for unit, limit in (budget or {}).items():
            if unit in spent and spent[unit] >= float(limit):
                raise BudgetExceeded(
                    f"{scope}: already spent, before starting the agent CLI",
                    round(spent[unit], 6),
                    float(limit),
                    unit,
                    ctx.run_id,
                )


def _stdout(path: Path) -> str:
    try:
        if path.stat().st_size > _MAX_OUTPUT_BYTES:
            return ""
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _record_usage(
    ctx: StepContext,
    fmt: str,
    model: str,
    command: str | list[str],
    parsed: Parsed,
    duration_ms: float,
) -> None:
    """One ledger row per usage the CLI reported (status ``ok``: it was paid for)."""
    from agentsaga.pricing import cost_usd
    from agentsaga.providers.base import Usage as ProviderUsage

    if ctx.llm is None:
        return
    store = ctx.llm.store
    secrets = secret_values()
    request = redact_json({"external": fmt, "command": command}, secrets)
    # Its own hash space: an external run is never a memo answer to a model request.
    request_hash = hashlib.sha256(
        ("external:" + json.dumps(request, sort_keys=True)).encode()
    ).hexdigest()
    provider = "anthropic" if fmt == "claude-code" else "openai"
    for n, (usage, reported_cost) in enumerate(parsed.rows, start=1):
        cost = reported_cost
        if cost is None:
            priced = ProviderUsage(usage.input, usage.output, usage.cache_read, usage.cache_write)
            cost = cost_usd(provider, model, priced, ctx.config.get("prices"))
        store.record_llm_call(
            run_id=ctx.run_id,
            attempt_id=ctx.attempt_id,
            step_id=ctx.step.id,
            provider=fmt,
            model=model,
            request_hash=request_hash,
            request=request,
            response=redact_json(
                {"text": parsed.summary[:4000], "session_id": parsed.session_id, "turn": n},
                secrets,
            ),
            error=None,
            status="ok",
            http_attempt=n,
            usage=Usage(
                usage.input, usage.output, usage.cache_read, usage.cache_write, cost, False
            ),
            latency_ms=duration_ms if n == 1 else 0.0,
        )
