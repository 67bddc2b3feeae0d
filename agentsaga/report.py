"""Views of a run built from the store: the documents behind ``runs``, ``show`` and
``report`` (their ``--json``), which the web view (``agentsaga ui``) serves unchanged."""

from __future__ import annotations

from typing import Any

from agentsaga.agent.record import continued_tokens
from agentsaga.store import AttemptRecord, LLMCallRecord, Store


def run_summaries(store: Store, status: str | None, limit: int | None) -> list[dict[str, Any]]:
    """The runs, newest first, with their tokens and cost (``runs --json``)."""
    return [
        {
            "id": s.id,
            "pipeline": s.pipeline_name,
            "status": s.status,
            "created_at": s.created_at,
            "updated_at": s.updated_at,
            "parent_run_id": s.parent_run_id,
            "steps": s.steps,
            "usage": s.usage.to_json(),
        }
        for s in store.list_runs(status, limit)
    ]


def run_detail(store: Store, run_id: str) -> dict[str, Any]:
    run = store.get_run(run_id)
    records = store.attempts(run_id)
    attempt_no = {a.id: a.attempt for a in records}
    comps: dict[int, str] = {}
    compensations = []
    for comp in store.compensations(run_id):
        comps[comp.attempt_id] = comp.status
        # In the order they ran: a rollback's are newest step first.
        compensations.append(
            {
                "step_id": comp.step_id,
                "attempt": attempt_no.get(comp.attempt_id),
                "reason": comp.reason,
                "status": comp.status,
                "tries": comp.tries,
                "error": (comp.error or {}).get("message"),
                "started_at": comp.started_at,
                "finished_at": comp.finished_at,
            }
        )
    attempts = []
    for a in records:
        output = a.output or {}
        attempts.append(
            {
                "step": a.step_id,
                "step_index": a.step_index,
                "attempt": a.attempt,
                "seq": a.seq,
                "status": a.status,
                "superseded": a.superseded,
                "reused_from": a.reused_from,
                "duration_ms": a.duration_ms,
                "tokens": a.usage.total,
                "usage": a.usage.to_json(),
                "commit": output.get("commit") if isinstance(output, dict) else None,
                "base": a.base_commit,
                "snapshot": a.snapshot,
                "compensation": comps.get(a.id),
                "error": (a.error or {}).get("message"),
                "started_at": a.started_at,
                "finished_at": a.finished_at,
            }
        )
    ws = run.workspace or {}
    return {
        "run": {
            "id": run.id,
            "pipeline": run.pipeline_name,
            "status": run.status,
            "parent_run_id": run.parent_run_id,
            "parent_step": run.parent_step,
            "branch": ws.get("branch"),
            "workspace": ws.get("path"),
            "python": ws.get("python"),
            "setup": ws.get("setup"),
            "created_at": run.created_at,
            "finished_at": run.finished_at,
            "error": run.error,
            "vars": run.vars,
        },
        "attempts": attempts,
        "compensations": compensations,
        "decisions": gate_decisions(store, run_id, attempt_no),
        "gate": waiting_at(run.id, run.status, records),
    }


def gate_commands(run_id: str) -> dict[str, str]:
    """The two commands a waiting run's gate offers."""
    return {
        "approve": f"agentsaga approve {run_id} [--comment TEXT]",
        "reject": f"agentsaga reject {run_id} --comment TEXT",
    }


def waiting_at(run_id: str, status: str, records: list[AttemptRecord]) -> dict[str, Any] | None:
    """For a run ``waiting``: the gate's visit, what to review and the two commands."""
    if status != "waiting":
        return None
    visit = next((a for a in reversed(records) if a.status == "waiting" and not a.superseded), None)
    if visit is None:
        return None
    output = visit.output or {}
    return {
        "step": visit.step_id,
        "visit": visit.attempt,
        "message": output.get("message", ""),
        "show": output.get("show", ""),
        "arrived_at": visit.started_at,
        **gate_commands(run_id),
    }


def gate_decisions(
    store: Store, run_id: str, attempt_no: dict[int, int] | None = None
) -> list[dict[str, Any]]:
    """Who decided at each gate visit, when, and why."""
    if attempt_no is None:
        attempt_no = {a.id: a.attempt for a in store.attempts(run_id)}
    return [
        {
            "step": d.step_id,
            "visit": attempt_no.get(d.attempt_id),
            "decision": d.decision,
            "by": d.decided_by,
            "comment": d.comment,
            "at": d.decided_at,
        }
        for d in store.gate_decisions(run_id)
    ]


def token_report(store: Store, run_id: str) -> dict[str, Any]:
    """Tokens and cost per step attempt, what was reused, and the failed-run tax.

    * ``spent``: every call the providers were paid for (usage as the API reported it).
    * ``reused``: tokens not paid again — replies served from the call log, and the
      checkpoints of the steps before each point where the run went back (a retry, a
      rewind, a resume, a fork), which a restart from scratch would have paid again.
    * ``clean pass``: the tokens of each step's final attempt: one run with no failure.
    * ``restart``: the counterfactual — what the saga paid plus what it reused.
    * tax = spent / clean pass − 1, under each policy.

    ``steps`` splits spent, reused and restart by step (the web view's chart); each
    column adds up to the run's total.
    """
    attempts = store.attempts(run_id)
    calls = store.llm_calls(run_id)
    memo_reused: dict[int, int] = {}
    by_id = {c.id: c for c in calls}
    for call in calls:
        if call.status == "reused" and call.served_from in by_id and call.attempt_id:
            source = by_id[call.served_from]
            memo_reused[call.attempt_id] = memo_reused.get(call.attempt_id, 0) + source.usage.total
    rows = [
        {
            "step": a.step_id,
            "attempt": a.attempt,
            "status": a.status,
            "failed": a.error is not None,
            "usage": a.usage.to_json(),
            "tokens": a.usage.total,
            "cost_usd": a.usage.cost_usd,
            "reused_from_log": memo_reused.get(a.id, 0),
            "reused_checkpoint": a.reused_from is not None,
        }
        for a in attempts
    ]
    checkpoint_by_step = _checkpoint_reuse(store, attempts)
    checkpoint_reused = sum(checkpoint_by_step.values())
    paid = [c for c in calls if c.status == "ok"]
    spent = sum(c.usage.total for c in paid)
    # The run's usage as the APIs reported it, summed per field (reused calls cost nothing).
    usage = {
        field: sum(getattr(c.usage, field) for c in paid)
        for field in ("input", "output", "cache_read", "cache_write")
    }
    cost_known = [c.usage.cost_usd for c in paid]
    cost = None if any(c is None for c in cost_known) else sum(c or 0.0 for c in cost_known)
    clean = _clean_pass(store, attempts, memo_reused)
    # Restarting from scratch pays all the saga paid, plus all it reused.
    restart_total = spent + checkpoint_reused + sum(memo_reused.values())
    return {
        "run_id": run_id,
        "decisions": gate_decisions(store, run_id),
        "attempts": rows,
        "steps": _per_step(attempts, paid, memo_reused, checkpoint_by_step),
        "spent_tokens": spent,
        "usage": usage,
        "cost_usd": cost,
        "reused_from_log_tokens": sum(memo_reused.values()),
        "reused_checkpoint_tokens": checkpoint_reused,
        "clean_pass_tokens": clean,
        "restart_counterfactual_tokens": restart_total,
        "tax_saga": (spent / clean - 1) if clean else 0.0,
        "tax_restart": (restart_total / clean - 1) if clean else 0.0,
    }


def _checkpoint_reuse(store: Store, attempts: list[AttemptRecord]) -> dict[str, int]:
    """Per step, the tokens of its checkpoints that the run reused instead of paying again."""
    reused: dict[str, int] = {}
    latest: dict[str, int] = {}  # each step's tokens in its newest attempt so far
    index_of: dict[str, int] = {}
    previous_index = -1
    for a in attempts:
        tokens = a.usage.total
        if a.reused_from is not None:
            # A fork's copy of its parent's checkpoint: paid by the parent, reused here.
            tokens = store.get_attempt(a.reused_from).usage.total
            reused[a.step_id] = reused.get(a.step_id, 0) + tokens
        elif a.step_index <= previous_index:
            # The run went back — a retry, a rewind, a resume after a crash or a failure,
            # resume --from: a restart from scratch would have paid every step before
            # this one again; the saga reused their checkpoints.
            for step_id, step_tokens in latest.items():
                if index_of[step_id] < a.step_index:
                    reused[step_id] = reused.get(step_id, 0) + step_tokens
            # An agent that continued its conversation reused its completed turns too.
            turns = continued_tokens(store, attempts, a)
            if turns:
                reused[a.step_id] = reused.get(a.step_id, 0) + turns
        if a.reused_from is None:
            previous_index = a.step_index
        index_of[a.step_id] = a.step_index
        latest[a.step_id] = tokens
    return reused


def _clean_pass(store: Store, attempts: list[AttemptRecord], memo_reused: dict[int, int]) -> int:
    """One clean pass: each step's last successful attempt (its last attempt if none was)."""
    final: dict[str, int] = {}
    succeeded: set[str] = set()
    for a in attempts:
        # A reply the memo served is part of what one clean pass costs, and so are the
        # turns an agent attempt continued (paid by the attempts before it).
        tokens = a.usage.total + memo_reused.get(a.id, 0)
        if a.error is None:
            tokens += continued_tokens(store, attempts, a)
        if a.reused_from is not None:
            tokens = store.get_attempt(a.reused_from).usage.total
        if a.error is None:
            final[a.step_id] = tokens
            succeeded.add(a.step_id)
        elif a.step_id not in succeeded:
            final[a.step_id] = tokens
    return sum(final.values())


def _per_step(
    attempts: list[AttemptRecord],
    paid: list[LLMCallRecord],
    memo_reused: dict[int, int],
    checkpoint_by_step: dict[str, int],
) -> list[dict[str, Any]]:
    order: dict[str, int] = {}
    for a in attempts:
        order.setdefault(a.step_id, a.step_index)
    steps = []
    for step_id in sorted(order, key=order.__getitem__):
        mine = [c for c in paid if c.step_id == step_id]
        spent = sum(c.usage.total for c in mine)
        costs = [c.usage.cost_usd for c in mine]
        from_log = sum(memo_reused.get(a.id, 0) for a in attempts if a.step_id == step_id)
        checkpoint = checkpoint_by_step.get(step_id, 0)
        steps.append(
            {
                "step_id": step_id,
                "spent_tokens": spent,
                "cost_usd": None if None in costs else float(sum(c or 0.0 for c in costs)),
                "reused_checkpoint_tokens": checkpoint,
                "reused_from_log_tokens": from_log,
                "restart_counterfactual_tokens": spent + checkpoint + from_log,
            }
        )
    return steps


def step_detail(store: Store, run_id: str, step_id: str) -> dict[str, Any]:
    """Everything about one step's attempts: error, output, each model call (prompt, reply,
    usage), an agent's transcript (its turns and tool calls), the command's output and the
    diff it made. The web view's step panel."""
    from agentsaga.agent.transcript import agent_transcript

    run = store.get_run(run_id)
    records = store.attempts(run_id)
    calls = store.llm_calls(run_id)
    comps = store.compensations(run_id)
    turns = agent_transcript(store, run_id, step_id)["turns"]  # empty unless an agent step
    attempts = []
    for a in records:
        if a.step_id != step_id:
            continue
        attempts.append(
            {
                "attempt": a.attempt,
                "seq": a.seq,
                "status": a.status,
                "superseded": a.superseded,
                "reused_from": a.reused_from,
                "started_at": a.started_at,
                "finished_at": a.finished_at,
                "duration_ms": a.duration_ms,
                "usage": a.usage.to_json(),
                "error": a.error,
                "output": a.output,
                "compensations": [
                    {"reason": c.reason, "status": c.status, "tries": c.tries, "error": c.error}
                    for c in comps
                    if c.attempt_id == a.id
                ],
                "calls": [_call_json(c) for c in calls if c.attempt_id == a.id],
                "transcript": [t for t in turns if t["attempt"] == a.attempt],
                "logs": _log_tails(a.log_path),
                "diff": _diff_or_none(run.workspace or {}, a, records),
            }
        )
    return {"run_id": run_id, "step_id": step_id, "attempts": attempts}


_LOG_TAIL_BYTES = 64 * 1024


def _diff_or_none(
    ws: dict[str, Any], attempt: AttemptRecord, attempts: list[AttemptRecord]
) -> str | None:
    from agentsaga.errors import GitError

    if not (attempt.output or {}).get("commit") and attempt.status != "completed":
        # A failed attempt's snapshot is followed by its compensation: against the next
        # snapshot the diff would show the undo, not what the attempt did.
        return None
    try:
        return _attempt_diff(ws, attempt, attempts, stat=False)
    except GitError:
        # The repository or the commits are gone (a deleted worktree, a gc'd branch):
        # the rest of the step's detail is still worth showing.
        return None


def _log_tails(stem: str | None) -> dict[str, str]:
    from pathlib import Path

    tails: dict[str, str] = {}
    for name in ("stdout", "stderr"):
        path = Path(f"{stem}.{name[3:]}") if stem else None
        if path is None or not path.is_file():
            continue
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - _LOG_TAIL_BYTES))
            text = f.read().decode("utf-8", errors="replace")
        if text:
            tails[name] = text
    return tails


def _call_json(call: LLMCallRecord) -> dict[str, Any]:
    return {
        "id": call.id,
        "provider": call.provider,
        "model": call.model,
        "status": call.status,
        "http_attempt": call.http_attempt,
        "latency_ms": call.latency_ms,
        "created_at": call.created_at,
        "served_from": call.served_from,
        "usage": call.usage.to_json(),
        "request": call.request,
        "reply": (call.response or {}).get("text"),
        "tool_calls": (call.response or {}).get("tool_calls") or [],
        "error": call.error,
    }


def _attempt_diff(
    ws: dict[str, Any], attempt: AttemptRecord, attempts: list[AttemptRecord], stat: bool
) -> str | None:
    """What one attempt changed: its commit, else its snapshot against the next snapshot
    (or the workspace as it is now). None when it changed nothing."""
    from pathlib import Path

    from agentsaga import gitops

    repo = Path(ws.get("repo_root") or ws.get("path") or ".")
    output = attempt.output or {}
    if output.get("commit") and output.get("base") and output["commit"] != output["base"]:
        return gitops.diff(repo, output["base"], output["commit"], stat=stat)
    if not attempt.snapshot:
        return None
    later = [a.snapshot for a in attempts if a.seq > attempt.seq and a.snapshot]
    if later:
        return gitops.diff(repo, attempt.snapshot, later[0], stat=stat)
    return gitops.diff_worktree(Path(ws.get("path") or repo), attempt.snapshot, stat=stat)


def run_diff(store: Store, run_id: str, step: str | None, stat: bool) -> str:
    """What a step changed (its commit, else its snapshot against the next snapshot or the
    workspace as it is now), or the whole run (its base to the newest commit)."""
    from pathlib import Path

    from agentsaga import gitops

    run = store.get_run(run_id)
    ws = run.workspace or {}
    repo = Path(ws.get("repo_root") or ws.get("path") or ".")
    attempts = store.attempts(run_id)
    if step is None:
        live = [a for a in attempts if not a.superseded and (a.output or {}).get("commit")]
        if not live:
            return f"run {run_id} made no commit\n"
        base, head = ws.get("base_commit"), (live[-1].output or {}).get("commit")
        return gitops.diff(repo, base, head, stat=stat) if base and head else "nothing to show\n"
    mine = [a for a in attempts if a.step_id == step and not a.superseded]
    if not mine:
        return f"step {step!r} has not run in run {run_id}\n"
    diff = _attempt_diff(ws, mine[-1], attempts, stat)
    if diff is None:
        return f"step {step!r} changed nothing in the workspace\n"
    return diff
