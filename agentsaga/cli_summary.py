"""The one closing summary of a run, resume, rollback or fork: how the run ended, what
it did (after a rollback: what was undone, and what could not be), and what to do next."""

from __future__ import annotations

from typing import Any

_DONE = ("completed", "skipped")


def summary_lines(doc: dict[str, Any], command: str, advice: list[dict[str, str]]) -> list[str]:
    """Plain text lines (no markup); the caller escapes them."""
    rid, status = doc["run_id"], doc["status"]
    steps = doc["steps"]
    if status in ("rolled_back", "rollback_failed") and command == "rollback":
        lines = _rollback_lines(doc)
    else:
        done = [s["step_id"] for s in steps if s["status"] in _DONE]
        lines = [f"run {rid} {status.replace('_', ' ')}: {len(done)} of {len(steps)} steps done"]
        failed = [s for s in steps if s["status"] not in _DONE and s["attempts"]]
        if failed and status != "succeeded":
            last = failed[-1]
            lines[0] += f"; stopped at {last['step_id']} ({last['status']})"
        u = doc["usage"]
        cost = "" if u["cost_usd"] is None else f" (${u['cost_usd']:.4f})"
        if u["total"]:
            lines.append(f"  tokens: {u['total']:,}{cost}; details: agentsaga report {rid}")
    if doc.get("error") and status != "succeeded":
        lines += _why(doc["error"]["message"])
    gate = doc.get("gate")
    if status == "waiting" and gate:
        lines.append(f"  gate {gate['step_id']}: {gate['message']}")
        if gate.get("show"):
            lines += [f"    {row}" for row in str(gate["show"]).splitlines()[:8]]
    for note in doc.get("notes") or []:
        lines.append(f"  note: {note}")
    if advice:
        lines.append("next:")
        width = max(len(a["command"]) for a in advice)
        for a in advice:
            lines.append(f"  {a['command'].ljust(width)}  # {a['does']}")
    return lines


def _why(message: str, shown: int = 8) -> list[str]:
    """The error, its first lines (a test failure's output tail can be long: ``show``
    and ``logs`` have all of it)."""
    rows = [row for row in message.strip().splitlines() if row.strip()] or [""]
    lines = [f"  why: {rows[0]}"] + [f"    {row}" for row in rows[1:shown]]
    if len(rows) > shown:
        lines.append(f"    ... {len(rows) - shown} more lines")
    return lines


def _rollback_lines(doc: dict[str, Any]) -> list[str]:
    rid = doc["run_id"]
    undone: list[str] = []
    nothing: list[str] = []
    failed: list[str] = []
    merged: list[str] = []
    for step in doc["steps"]:
        for a in step["attempts"]:
            label = f"{step['step_id']} #{a['attempt']}"
            if a.get("merged_into"):
                merged.append(f"{label} ({(a['commit'] or '')[:8]} is in {a['merged_into']})")
            # The latest try counts: a compensation that failed, then succeeded on a
            # later rollback, is undone.
            tries = [c for c in a["compensations"] if c["reason"] == "rollback"]
            if not tries:
                continue
            comp = tries[-1]
            if comp["status"] in ("succeeded", "compensated"):
                undone.append(label)
            elif comp["status"] == "skipped":
                nothing.append(step["step_id"])
            else:
                failed.append(label)
    verb = "rolled back" if doc["status"] == "rolled_back" else "rollback stopped"
    lines = [f"run {rid} {verb}"]
    lines.append("  undone: " + (", ".join(undone) if undone else "nothing needed undoing"))
    if nothing:
        lines.append("  nothing to undo (no side effect): " + ", ".join(dict.fromkeys(nothing)))
    if failed:
        lines.append("  not undone: " + ", ".join(failed))
    if doc["status"] == "rolled_back" and doc.get("branch"):
        lines.append(f"  removed: branch {doc['branch']} and its worktree")
    if merged:
        lines.append(
            "  already merged, so they stay: " + "; ".join(merged) + ". agentsaga cannot undo "
            "a merge it did not make: git revert those commits there if needed"
        )
    return lines
