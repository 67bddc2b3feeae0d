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
        attempts.append({
            "step": a.step_id, "attempt": a.attempt, "seq": a.seq, "status": a.status,
            "superseded": a.superseded, "reused_from": a.reused_from,
            "duration_ms": a.duration_ms, "tokens": a.usage.total, "usage": a.usage.to_json(),
            "commit": output.get("commit") if isinstance(output, dict) else None,
            "base": a.base_commit, "snapshot": a.snapshot,
            "compensation": comps.get(a.id), "error": (a.error or {}).get("message"),
            "started_at": a.started_at, "finished_at": a.finished_at,
        })
    ws = run.workspace or {}
    return {
        "run": {
            "id": run.id, "pipeline": run.pipeline_name, "status": run.status,
            "parent_run_id": run.parent_run_id, "parent_step": run.parent_step,
            "branch": ws.get("branch"), "workspace": ws.get("path"),
            "created_at": run.created_at, "finished_at": run.finished_at,
            "error": run.error, "vars": run.vars,
        },
        "attempts": attempts,
    }
