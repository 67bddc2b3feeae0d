"""Views of a run built from the store: the detail behind ``show`` (and, later, ``report``)."""

from __future__ import annotations

from typing import Any

from agentsaga.store import Store


def run_detail(store: Store, run_id: str) -> dict[str, Any]:
    run = store.get_run(run_id)
    comps: dict[int, str] = {}
    for comp in store.compensations(run_id):
        comps[comp.attempt_id] = comp.status
    attempts = []
    for a in store.attempts(run_id):
        output = a.output or {}
        attempts.append(
            {
                "step": a.step_id,
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
            "created_at": run.created_at,
            "finished_at": run.finished_at,
            "error": run.error,
            "vars": run.vars,
        },
        "attempts": attempts,
    }


def token_report(store: Store, run_id: str) -> dict[str, Any]:
    """Tokens and cost per step attempt, what was reused, and the failed-run tax.

    * ``spent``: every call the providers were paid for (usage as the API reported it).
    * ``reused``: tokens not paid again — replies served from the call log, and the
      checkpoints of the steps before each point where the run went back (a retry, a
      rewind, a resume, a fork), which a restart from scratch would have paid again.
    * ``clean pass``: the tokens of each step's final attempt: one run with no failure.
    * ``restart``: the counterfactual — what the saga paid plus what it reused.
    * tax = spent / clean pass − 1, under each policy.
    """
    attempts = store.attempts(run_id)
    calls = store.llm_calls(run_id)
    memo_reused: dict[int, int] = {}
    by_id = {c.id: c for c in calls}
    for call in calls:
        if call.status == "reused" and call.served_from in by_id and call.attempt_id:
            source = by_id[call.served_from]
            memo_reused[call.attempt_id] = memo_reused.get(call.attempt_id, 0) + source.usage.total
    rows = []
    latest: dict[str, int] = {}  # each step's tokens in its newest attempt so far
    index_of: dict[str, int] = {}
    checkpoint_reused = 0
    previous_index = -1
    for a in attempts:
        tokens = a.usage.total
        if a.reused_from is not None:
            # A fork's copy of its parent's checkpoint: paid by the parent, reused here.
            tokens = store.get_attempt(a.reused_from).usage.total
            checkpoint_reused += tokens
        elif a.step_index <= previous_index:
            # The run went back — a retry, a rewind, a resume after a crash or a failure,
            # resume --from: a restart from scratch would have paid every step before
            # this one again; the saga reused their checkpoints.
            checkpoint_reused += sum(t for s, t in latest.items() if index_of[s] < a.step_index)
        if a.reused_from is None:
            previous_index = a.step_index
        rows.append(
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
        )
        index_of[a.step_id] = a.step_index
        latest[a.step_id] = tokens
    paid = [c for c in calls if c.status == "ok"]
    spent = sum(c.usage.total for c in paid)
    # The run's usage as the APIs reported it, summed per field (reused calls cost nothing).
    usage = {
        field: sum(getattr(c.usage, field) for c in paid)
        for field in ("input", "output", "cache_read", "cache_write")
    }
    cost_known = [c.usage.cost_usd for c in calls if c.status == "ok"]
    cost = None if any(c is None for c in cost_known) else sum(c or 0.0 for c in cost_known)
    # One clean pass: each step's last successful attempt (its last attempt if none was).
    final: dict[str, int] = {}
    succeeded: set[str] = set()
    for a in attempts:
        # A reply the memo served is part of what one clean pass costs.
        tokens = a.usage.total + memo_reused.get(a.id, 0)
        if a.reused_from is not None:
            tokens = store.get_attempt(a.reused_from).usage.total
        if a.error is None:
            final[a.step_id] = tokens
            succeeded.add(a.step_id)
        elif a.step_id not in succeeded:
            final[a.step_id] = tokens
    clean = sum(final.values())
    # Restarting from scratch pays all the saga paid, plus all it reused.
    restart_total = spent + checkpoint_reused + sum(memo_reused.values())
    return {
        "run_id": run_id,
        "attempts": rows,
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
    attempt = mine[-1]
    output = attempt.output or {}
    if output.get("commit") and output.get("base") and output["commit"] != output["base"]:
        return gitops.diff(repo, output["base"], output["commit"], stat=stat)
    if not attempt.snapshot:
        return f"step {step!r} changed nothing in the workspace\n"
    later = [a.snapshot for a in attempts if a.seq > attempt.seq and a.snapshot]
    if later:
        return gitops.diff(repo, attempt.snapshot, later[0], stat=stat)
    path = Path(ws.get("path") or repo)
    return gitops.diff_worktree(path, attempt.snapshot, stat=stat)
