"""The JSON documents the commands print with ``--json`` (and the web view serves as is).

One vocabulary for all of them, described by ``agentsaga schema --output``
(:mod:`agentsaga.output_schema`):

* a run is ``run_id``, a step ``step_id``, an attempt of a step ``attempt`` (its number,
  from 1); a step's attempts are a list under the step, in start order;
* times are ISO-8601 UTC strings (``..._at``); durations are integer milliseconds
  (``..._ms``); costs are US dollars rounded to 6 decimals (``cost_usd``), ``null`` when
  a price is unknown (never invented);
* usage is ``{input, output, cache_read, cache_write, total, cost_usd, estimated}``.

The run document (``show``) is also what ``run``, ``resume``, ``rollback`` and ``fork``
print when they end, so a caller reads one shape whichever command it ran.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from agentsaga.store import AttemptRecord, CompensationRecord, LLMCallRecord, Store, Usage


def cost(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def millis(value: float | None) -> int | None:
    return None if value is None else int(round(value))


def usage(u: Usage) -> dict[str, Any]:
    return {
        "input": u.input,
        "output": u.output,
        "cache_read": u.cache_read,
        "cache_write": u.cache_write,
        "total": u.total,
        "cost_usd": cost(u.cost_usd),
        "estimated": u.estimated,
    }


def error(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored error as ``{type, message}`` (and whatever structured fields it kept)."""
    if not value:
        return None
    return {"type": str(value.get("type") or "Error"), "message": str(value.get("message", ""))}


def compensation(comp: CompensationRecord) -> dict[str, Any]:
    return {
        "step_id": comp.step_id,
        "status": comp.status,
        "reason": comp.reason,
        "tries": comp.tries,
        "started_at": comp.started_at or None,
        "finished_at": comp.finished_at,
        "error": error(comp.error),
    }


def model_calls(records: list[LLMCallRecord]) -> list[dict[str, Any]]:
    """One attempt's call-log rows grouped into model calls: a row with ``http_attempt``
    0 (a reply served from the log) or 1 starts a call; 2, 3, ... are its retries. The
    call's usage is its last HTTP attempt's (the one that answered)."""
    calls: list[dict[str, Any]] = []
    for record in records:
        if record.http_attempt > 1 and calls:
            call = calls[-1]
        else:
            call = {"call": len(calls) + 1, "http_attempts": 0, "latency_ms": 0}
            calls.append(call)
        call["provider"], call["model"] = record.provider, record.model
        call["status"] = record.status
        call["served_from_call_log"] = record.status == "reused"
        call["http_attempts"] += 1 if record.http_attempt else 0
        call["latency_ms"] += millis(record.latency_ms) or 0
        call["usage"] = usage(record.usage)
    return calls


def model_calls_by_attempt(records: list[LLMCallRecord]) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[LLMCallRecord]] = {}
    for record in records:
        if record.attempt_id is not None:
            grouped.setdefault(record.attempt_id, []).append(record)
    return {attempt_id: model_calls(rows) for attempt_id, rows in grouped.items()}


def attempt_brief(
    a: AttemptRecord,
    comps: list[CompensationRecord],
    calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One attempt as a row of ``show``: what a person scans for."""
    output = a.output if isinstance(a.output, dict) else {}
    return {
        "attempt": a.attempt,
        "seq": a.seq,
        "status": status(a),
        "superseded": a.superseded,
        "reused": a.reused_from is not None,
        "started_at": a.started_at or None,
        "finished_at": a.finished_at,
        "duration_ms": millis(a.duration_ms),
        "usage": usage(a.usage),
        "model_calls": calls or [],
        "commit": output.get("commit"),
        "base": a.base_commit,
        "snapshot": a.snapshot,
        "compensations": [compensation(c) for c in comps],
        "error": error(a.error),
    }


def group_by_step(
    ids: list[str], rows: list[tuple[str, dict[str, Any]]], statuses: dict[str, str]
) -> list[dict[str, Any]]:
    """``[{step_id, status, attempts: [...]}]`` in pipeline order, each step's attempts in
    start order; a step that never started is ``pending`` with no attempts."""
    by_step: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    for step_id, row in rows:
        by_step.setdefault(step_id, []).append(row)
    return [
        {"step_id": s, "status": statuses.get(s, "pending"), "attempts": attempts}
        for s, attempts in by_step.items()
    ]


def status(a: AttemptRecord) -> str:
    """An attempt's status as shown: as stored (one stopped by Ctrl-C is ``interrupted``
    since m006; older rows were moved over by that migration)."""
    return str(a.status)


def current_statuses(attempts: list[AttemptRecord]) -> dict[str, str]:
    """Each step's status: its newest attempt that no rewind or change superseded."""
    statuses: dict[str, str] = {}
    for a in attempts:
        if not a.superseded:
            statuses[a.step_id] = status(a)
    return statuses


def run_document(store: Store, run_id: str, notes: list[str] | None = None) -> dict[str, Any]:
    """The run: its record, and each step with its attempts (``show --json``; also the
    closing document of ``run``, ``resume``, ``rollback`` and ``fork``)."""
    from agentsaga.report import step_ids

    run = store.get_run(run_id)
    attempts = store.attempts(run_id)
    records = store.compensations(run_id)
    comps: dict[int, list[CompensationRecord]] = {}
    for comp in records:
        comps.setdefault(comp.attempt_id, []).append(comp)
    number = {a.id: a.attempt for a in attempts}
    calls = model_calls_by_attempt(store.llm_calls(run_id))
    rows = [(a.step_id, attempt_brief(a, comps.get(a.id, []), calls.get(a.id))) for a in attempts]
    ws = run.workspace or {}
    from agentsaga.report import gate_decisions

    total = Usage()
    for a in attempts:
        if a.reused_from is None:
            total = _add(total, a.usage)
    doc = {
        "run_id": run.id,
        "pipeline": run.pipeline_name,
        "status": run.status,
        "parent_run_id": run.parent_run_id,
        "parent_step_id": run.parent_step,
        "branch": ws.get("branch"),
        "workspace": ws.get("path"),
        # What the run found of the user's project (venv, redirected imports, setup).
        "python": ws.get("python"),
        "setup": ws.get("setup"),
        "created_at": run.created_at,
        "updated_at": run.updated_at or None,
        "finished_at": run.finished_at,
        "vars": run.vars,
        "error": error(run.error),
        "usage": usage(total),
        "notes": list(notes or []),
        "steps": group_by_step(step_ids(store, run_id), rows, current_statuses(attempts)),
        # Who decided at each gate visit, and what the run waits for now.
        "decisions": gate_decisions(store, run_id, number),
        "gate": _gate(store, run, attempts),
        # Every compensation in the order it ran (a rollback's newest step first).
        "compensations": [
            {**compensation(c), "attempt": number.get(c.attempt_id)} for c in records
        ],
    }
    from agentsaga.advice import next_commands

    doc["next"] = next_commands(store, doc)
    return doc


def closing_document(
    store: Store,
    run_id: str,
    notes: list[str] | None = None,
    pipeline_ids: list[str] | None = None,
) -> dict[str, Any]:
    """What the closing summary of ``run``, ``resume`` and ``fork`` reads (``--json``
    prints the run document): the run document's fields, but a finished step lists no
    attempt (the summary counts it) and an unfinished one only its last (why it
    stopped). The attempts are read a page at a time: the whole run document of a
    10,000-step run cost more memory at its end than the run itself. ``pipeline_ids``:
    the run's pipeline's step ids, in order, when the caller has them (its result)."""
    import sys

    from agentsaga.report import step_ids

    run = store.get_run(run_id)
    statuses: dict[str, str] = {}
    latest: dict[str, int] = {}
    total = Usage()
    for a in store.iter_attempts(run_id):
        if a.reused_from is None:
            total = _add(total, a.usage)
        latest[a.step_id] = a.id
        if not a.superseded:
            statuses[a.step_id] = sys.intern(status(a))
    comps = store.compensations(run_id) if statuses else []
    steps: list[Mapping[str, Any]] = []
    for step_id in step_ids(store, run_id, latest, pipeline_ids):
        shown = statuses.get(step_id, "pending")
        if shown in ("completed", "skipped") or step_id not in latest:
            steps.append(_Row(step_id, shown))
            continue
        a = store.get_attempt(latest[step_id])
        rows = [attempt_brief(a, [c for c in comps if c.attempt_id == a.id])]
        steps.append({"step_id": step_id, "status": shown, "attempts": rows})
    ws = run.workspace or {}
    doc = {
        "run_id": run.id,
        "pipeline": run.pipeline_name,
        "status": run.status,
        "branch": ws.get("branch"),
        "workspace": ws.get("path"),
        "error": error(run.error),
        "usage": usage(total),
        "notes": list(notes or []),
        "steps": steps,
        "gate": _gate(store, run, store.attempts(run_id) if run.status == "waiting" else []),
    }
    from agentsaga.advice import next_commands

    doc["next"] = next_commands(store, doc)
    return doc


class _Row(Mapping[str, Any]):
    """A closing document's step without attempts to show, as ``{step_id, status,
    attempts: []}`` reads: a slotted pair, not a dict and a list (a 10,000-step run's
    rows were 3 MB at its very end)."""

    __slots__ = ("step_id", "status")
    _KEYS = ("step_id", "status", "attempts")

    def __init__(self, step_id: str, status: str) -> None:
        self.step_id, self.status = step_id, status

    def __getitem__(self, key: str) -> Any:
        if key == "attempts":
            return ()
        if key in ("step_id", "status"):
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._KEYS)

    def __len__(self) -> int:
        return 3


def _gate(store: Store, run: Any, attempts: list[AttemptRecord]) -> dict[str, Any] | None:
    """What a waiting run waits for: the gate, its deadline, what to review, the commands."""
    if run.status != "waiting":
        return None
    from agentsaga.gates import waiting_gate
    from agentsaga.report import waiting_at

    gate = waiting_gate(store, run.id)
    return gate.to_json() if gate is not None else waiting_at(run.id, run.status, attempts)


def _add(a: Usage, b: Usage) -> Usage:
    """The sum; its cost is unknown as soon as one part that used tokens has no price."""
    cost_usd: float | None = None
    if all(u.cost_usd is not None or u.total == 0 for u in (a, b)):
        cost_usd = (a.cost_usd or 0.0) + (b.cost_usd or 0.0)
    return Usage(
        a.input + b.input,
        a.output + b.output,
        a.cache_read + b.cache_read,
        a.cache_write + b.cache_write,
        cost_usd,
        a.estimated or b.estimated,
    )


def runs_document(summaries: list[Any]) -> dict[str, Any]:
    return {
        "runs": [
            {
                "run_id": s.id,
                "pipeline": s.pipeline_name,
                "status": s.status,
                "created_at": s.created_at,
                "updated_at": s.updated_at,
                "parent_run_id": s.parent_run_id,
                "step_count": s.steps,
                "usage": usage(s.usage),
            }
            for s in summaries
        ]
    }


def plan_document(run_id: str, command: str, items: list[Any]) -> dict[str, Any]:
    """What ``resume|rollback|fork --plan`` would do; ``attempt`` is null where an item is
    about a step rather than one of its attempts, ``step_id`` null for the run's
    workspace."""
    return {
        "run_id": run_id,
        "command": command,
        "plan": [
            {
                # The plan's last rollback item is about the run, not a step.
                "step_id": None if item.step_id == "(workspace)" else item.step_id,
                "attempt": getattr(item, "attempt", None),
                "action": item.action,
                "reason": item.reason,
            }
            for item in items
        ],
    }
