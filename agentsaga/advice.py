"""What to do next with a run, and what each choice would do.

A failed run can be resumed, resumed from an earlier step, or rolled back; which helps
depends on how it failed. A plain ``resume`` re-runs the failed step on the checkpoints it
had: right after a flaky command or a provider outage, useless after a rewind loop that
stopped because the same failure repeated (the tests would fail the same way on the same
code). Then ``resume --from <the step the rewinds went back to>`` asks that step again with
the failure in ``${{ rewind.error }}``. The advice is data (a list of
``{command, does}``), shown by the CLI under a run's summary and served by the web view.
"""

from __future__ import annotations

from typing import Any

from agentsaga.store import RunRecord, Store


def _failed_step(doc: dict[str, Any]) -> str | None:
    for step in doc["steps"]:
        stopped = ("failed", "interrupted", "compensated", "compensation_failed")
        if step["status"] in stopped and step["attempts"]:
            last = step["attempts"][-1]
            if last["error"] is not None:
                return str(step["step_id"])
    return None


def _rewind_target(store: Store, run_id: str, step_id: str) -> str | None:
    from agentsaga.report import stored_steps

    for step in stored_steps(store, run_id):
        if str(step.get("id")) == step_id:
            policy = step.get("on_failure")
            if isinstance(policy, dict) and policy.get("rewind_to"):
                return str(policy["rewind_to"])
    return None


def _stuck(run: RunRecord, step_id: str) -> bool:
    """Whether the run ended because its rewinds stopped: the same failure repeated, or
    max_rewinds was reached (both leave a signature for the step)."""
    return step_id in (run.state.get("signatures") or {})


def next_commands(store: Store, doc: dict[str, Any]) -> list[dict[str, str]]:
    """Commands that make sense for the run in ``doc`` (a run document), best first."""
    rid, status = doc["run_id"], doc["status"]
    if status == "succeeded":
        items = [
            {"command": f"agentsaga diff {rid}", "does": "shows what the run changed, as a patch"},
            {"command": f"agentsaga rollback {rid}", "does": "undoes everything the run did"},
        ]
        if doc.get("branch"):
            items.insert(1, {"command": f"git merge {doc['branch']}", "does": "takes the change"})
        return items
    if status == "waiting" and doc.get("gate"):
        gate = doc["gate"]
        return [
            {"command": gate["approve"], "does": f"lets the run go on past {gate['step_id']}"},
            {"command": gate["reject"], "does": "sends it back with your comment"},
        ]
    if status in ("failed", "interrupted"):
        return _after_failure(store, doc)
    if status == "rollback_failed":
        return [
            {
                "command": f"agentsaga rollback {rid}",
                "does": "continues the rollback where it stopped, once the cause is fixed",
            }
        ]
    return []


def _after_failure(store: Store, doc: dict[str, Any]) -> list[dict[str, str]]:
    rid = doc["run_id"]
    failed = _failed_step(doc)
    run = store.get_run(rid)
    reused = [s["step_id"] for s in doc["steps"] if s["status"] in ("completed", "skipped")]
    kept = f"reuses {', '.join(reused)}" if reused else "reuses nothing"
    items: list[dict[str, str]] = []
    target = _rewind_target(store, rid, failed) if failed else None
    if failed and target and _stuck(run, failed):
        items.append(
            {
                "command": f"agentsaga resume {rid} --from {target}",
                "does": f"asks {target} again with this failure in ${{{{ rewind.error }}}}, "
                f"then runs what follows (a plain resume would run {failed} again on the "
                "same code and fail the same way)",
            }
        )
    again = f"runs {failed} again" if failed else "continues from the first unfinished step"
    items.append({"command": f"agentsaga resume {rid}", "does": f"{again}; {kept}"})
    items.append({"command": f"agentsaga rollback {rid}", "does": "undoes everything the run did"})
    return items
