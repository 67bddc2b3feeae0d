"""Human gates (``kind: approve``): deciding, and carrying a decision out.

The library functions a client calls (the CLI's ``approve``/``reject``, the web view's
approval panel):

* ``waiting_gate(store, run_id) -> Gate | None`` — what a run waits on: the gate's step,
  its message, what to review (``show``), when it arrived and its deadline.
* ``approve(store, run_id, who, comment="") -> GateDecisionRecord``
* ``reject(store, run_id, who, comment, discard_edits=False) -> GateDecisionRecord``
* ``check_edits(store, run_id, doing, discard_edits=False)`` — before anything resets a
  waiting run's worktree: a person's edits there, saved to a ref; ``EditsInWorktree``
  (exit 2) unless ``discard_edits`` (``review_edits.py``; ``reject`` calls it)

Both only *record* the decision (one per visit of the gate: of two deciders, exactly one
wins; the other gets ``GateDecided`` naming the winner) and return it. The run goes on
when a process drives it — ``Engine.resume(run_id)`` locally (what ``agentsaga approve``
does unless ``--detach``), or a Temporal worker: a Temporal runner's update handler calls
the same ``approve``/``reject`` and then wakes its workflow (the hook: whatever drives the
run next finds the recorded decision and applies it through ``drive_gate``). Errors:
``NotWaiting`` (exit 2) when the run is not stopped at a gate, naming its status;
``GateDecided`` when another decision was first or the time to decide ran out
(``on_timeout`` then applies at the next ``agentsaga resume``).

The rules (what a decision, a timeout, ``max_rejects`` lead to) are in ``saga/gate.py``;
``drive_gate`` is the runner's side: it records the visit, waits, or applies the verdict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agentsaga import attempts, faults, review_edits, undo
from agentsaga.errors import AgentsagaError, GateDecided, NotWaiting, StepFailed
from agentsaga.pipeline import Pipeline, Step
from agentsaga.report import gate_commands
from agentsaga.runtime import Event, Runtime, load_stored, vars_key
from agentsaga.saga import decide
from agentsaga.saga import gate as rules
from agentsaga.states import RunStatus, StepStatus
from agentsaga.store import AttemptRecord, GateDecisionRecord, RunRecord, Store
from agentsaga.workspace import RunWorkspace
from agentsaga.workspace import from_json as workspace_from_json


@dataclass
class Gate:
    run_id: str
    step_id: str
    attempt_id: int
    visit: int
    message: str
    show: str
    arrived_at: str
    deadline_s: float | None
    on_timeout: str

    def to_json(self) -> dict[str, Any]:
        return {
            "step_id": self.step_id,
            "visit": self.visit,
            "message": self.message,
            "show": self.show,
            "arrived_at": self.arrived_at,
            "deadline": _iso(self.deadline_s),
            "on_timeout": self.on_timeout,
            **gate_commands(self.run_id),
        }


class GateRejected(StepFailed):
    """A gate's verdict that ends the run: rejected past ``max_rejects`` or with no
    ``on_reject``, or a rollback (``on_reject: rollback``, ``on_timeout: rollback``)."""

    def __init__(self, message: str, rollback: bool) -> None:
        super().__init__(message, kind="rejected", retryable=False)
        self.rollback = rollback


class Waiting:
    """The drive stops here: the run waits for a decision."""


WAITING = Waiting()


# --- deciding (the library API) --------------------------------------------------------


def waiting_gate(store: Store, run_id: str) -> Gate | None:
    """The gate visit the run waits on, or None."""
    run = store.get_run(run_id)
    visit = _visit(store.attempts(run_id))
    if visit is None:
        return None
    step = _step_of(run, visit.step_id)
    output = visit.output or {}
    return Gate(
        run_id=run_id,
        step_id=visit.step_id,
        attempt_id=visit.id,
        visit=visit.attempt,
        message=str(output.get("message") or ""),
        show=str(output.get("show") or ""),
        arrived_at=visit.started_at,
        deadline_s=rules.deadline(step, _epoch(visit.started_at)) if step else None,
        on_timeout=rules.policy(step)["on_timeout"] if step else "wait",
    )


def approve(
    store: Store, run_id: str, who: str, comment: str = "", now_s: float | None = None
) -> GateDecisionRecord:
    """Record that ``who`` approves the gate ``run_id`` waits on."""
    return _decide(store, run_id, rules.APPROVED, who, comment, now_s)


def reject(
    store: Store,
    run_id: str,
    who: str,
    comment: str,
    now_s: float | None = None,
    discard_edits: bool = False,
) -> GateDecisionRecord:
    """Record that ``who`` rejects it; ``comment`` reaches ``${{ rewind.error }}``.
    ``EditsInWorktree`` when a person changed files in the run's worktree while it
    waited (saved to a ref first), unless ``discard_edits``."""
    return _decide(store, run_id, rules.REJECTED, who, comment, now_s, discard_edits)


def check_edits(
    store: Store, run_id: str, doing: str, discard_edits: bool = False
) -> review_edits.ReviewEdits | None:
    """Before ``doing`` resets a waiting run's worktree: the files a person changed there
    while it waited, saved to a ref; ``EditsInWorktree`` unless ``discard_edits``. None
    when the run is not waiting or nothing changed."""
    run = store.get_run(run_id)
    gate = waiting_gate(store, run_id) if run.status == RunStatus.WAITING else None
    if gate is None or not run.workspace:
        return None
    ws = workspace_from_json(run.workspace, run_id)
    edits = review_edits.find(ws, run_id, gate.step_id, gate.visit)
    if edits is not None and not discard_edits:
        raise edits.refusal(doing)
    return edits


def _decide(
    store: Store,
    run_id: str,
    decision: str,
    who: str,
    comment: str,
    now_s: float | None,
    discard_edits: bool = False,
) -> GateDecisionRecord:
    run = store.get_run(run_id)
    gate = waiting_gate(store, run_id) if run.status == RunStatus.WAITING else None
    if gate is None:
        raise NotWaiting(run_id, run.status)
    step = _step_of(run, gate.step_id)
    now = time.time() if now_s is None else now_s
    if step is not None:
        action = rules.at_gate(_pipeline(run), step, run.state, _epoch(gate.arrived_at), None, now)
        if isinstance(action, rules.TimedOut):
            raise GateDecided(
                run_id,
                gate.step_id,
                f"the time to decide ran out at {_iso(gate.deadline_s)}; on_timeout: "
                f"{action.policy} applies at 'agentsaga resume {run_id}'",
            )
    if decision == rules.REJECTED:
        check_edits(store, run_id, "reject", discard_edits)
    record, won = store.record_gate_decision(
        run_id, gate.attempt_id, gate.step_id, decision, who, comment
    )
    faults.point("gate.after_decision")
    if not won:
        raise GateDecided(
            run_id,
            gate.step_id,
            f"already {record.decision} by {record.decided_by} at {record.decided_at}"
            + (f" ({record.comment})" if record.comment else "")
            + f"; 'agentsaga resume {run_id}' continues the run if no one has",
        )
    return record


# --- carrying a decision out (the runner's side) ---------------------------------------


def turn(
    rt: Runtime, run: RunRecord, pipeline: Pipeline, step: Step, ws: RunWorkspace, now_s: float
) -> AgentsagaError | Waiting | None:
    """A runner's turn at a gate step: undo a visit that crashed mid-flight, then
    :func:`drive_gate`. The local runner and the Temporal gate activity both call it."""
    undo.recover(rt, run.id, pipeline, step.id, ws)
    return drive_gate(rt, run, pipeline, step, ws, now_s)


def drive_gate(
    rt: Runtime, run: RunRecord, pipeline: Pipeline, step: Step, ws: RunWorkspace, now_s: float
) -> AgentsagaError | Waiting | None:
    """One turn at a gate: record the visit, wait, or apply the recorded verdict.
    Returns WAITING (the run stops), None (passed: the gate completed, or rewound: the
    drive loop sees the restart point), or the error that ends the run."""
    now: float | None = now_s
    for _ in range(3):  # arrive, time out, apply: each turn records one fact
        visit = _visit(list(rt.current(run.id).values()), step.id)
        verdict = _verdict(rt.store, run.id, visit)
        arrived = _epoch(visit.started_at) if visit else None
        action = rules.at_gate(pipeline, step, run.state, arrived, verdict, now)
        if isinstance(action, rules.Arrive):
            now = None  # a visit this look records waits for the next look
            tried = attempts.run_attempt(rt, run, pipeline, step, ws, done=StepStatus.WAITING)
            if tried.error is not None:
                # What to review could not be prepared: the gate fails as a step does.
                if tried.attempt is not None:
                    attempts.record_failure(rt, run.id, tried.attempt, tried.error, None)
                return tried.error
            if tried.attempt is None:
                return None  # its if: was false: skipped
            continue
        if isinstance(action, rules.TimedOut):
            assert visit is not None
            why = f"no decision within {step.timeout_s:g}s; on_timeout: {action.policy}"
            rt.store.record_gate_decision(
                run.id, visit.id, step.id, rules.TIMED_OUT, "timeout", why
            )
            continue
        assert visit is not None
        if isinstance(action, rules.Wait):
            _wait(rt, run.id, visit)
            return WAITING
        kept = _settle_edits(rt, run, step, visit, verdict, action, ws)
        return _apply(rt, run, step, visit, verdict, action, kept)
    raise AssertionError("a gate settles within three turns")  # pragma: no cover


def _settle_edits(
    rt: Runtime,
    run: RunRecord,
    step: Step,
    visit: AttemptRecord,
    verdict: rules.Verdict | None,
    action: rules.GateAction,
    ws: RunWorkspace,
) -> dict[str, Any]:
    """Before a verdict applies: a person's edits in the worktree are saved to a ref; an
    approval commits them as a commit of their own. Returns what the visit records."""
    edits = review_edits.find(ws, run.id, step.id, visit.attempt)
    if edits is None or verdict is None:
        return {}
    record: dict[str, Any] = edits.to_json()
    if isinstance(action, rules.Pass):
        sha = review_edits.keep(ws, edits, verdict.by)
        record["commit"] = sha
        what = (
            f"committed as {sha[:12]} (a person's commit: a rollback stops there, exit 3, "
            "unless --force)"
            if sha
            else "already committed on the run branch"
        )
        message = f"kept the files changed while the run waited ({edits.shown()}): {what}"
    else:
        message = (
            f"files were changed while the run waited ({edits.shown()}); the "
            f"{verdict.decision} verdict applies"
        )
    rt.emit(Event("note", run.id, step.id, message=f"{message}; saved as {edits.saved}"))
    return {"edits": record}


def _apply(
    rt: Runtime,
    run: RunRecord,
    step: Step,
    visit: AttemptRecord,
    verdict: rules.Verdict | None,
    action: rules.GateAction,
    kept: dict[str, Any],
) -> GateRejected | None:
    assert verdict is not None
    if isinstance(action, rules.Pass):
        output = {**(visit.output or {}), **action.output, **kept}
        rt.store.finish_attempt(visit.id, status=StepStatus.COMPLETED, output=output)
        rt.set_current(run.id, rt.store.get_attempt(visit.id))
        rt.emit(Event("step", run.id, step.id, StepStatus.COMPLETED, visit.attempt, _by(verdict)))
        return None
    assert isinstance(action, decide.Rewind | decide.Fail)
    for note in action.notes:
        rt.emit(Event("note", run.id, step.id, message=note))
    message = rules.rejection_message(step, verdict)
    error = GateRejected(message, rollback=isinstance(action, decide.Fail) and action.rollback)
    rt.store.finish_attempt(
        visit.id,
        status=StepStatus.FAILED,
        output={**(visit.output or {}), **kept} if kept else visit.output,
        error=error.to_json(),
        state=(run.id, action.state) if isinstance(action, decide.Rewind) else None,
    )
    rt.set_current(run.id, rt.store.get_attempt(visit.id))
    rt.emit(Event("step", run.id, step.id, StepStatus.FAILED, visit.attempt, message))
    return None if isinstance(action, decide.Rewind) else error


def _wait(rt: Runtime, run_id: str, visit: AttemptRecord) -> None:
    rt.store.update_run(run_id, status=RunStatus.WAITING, clear_error=True)
    gate = waiting_gate(rt.store, run_id)
    assert gate is not None
    lines = [f"waiting for a decision: {gate.message}"]
    if gate.show.strip():
        lines.append(gate.show.rstrip("\n"))
    if gate.deadline_s is not None:
        lines.append(f"decide by {_iso(gate.deadline_s)} (then on_timeout: {gate.on_timeout})")
    lines += [f"approve: {gate.to_json()['approve']}", f"reject:  {gate.to_json()['reject']}"]
    rt.emit(Event("note", run_id, visit.step_id, message="\n".join(lines)))
    rt.emit(Event("run", run_id, status=RunStatus.WAITING))


def still_waiting(rt: Runtime, run: RunRecord, now_s: float) -> Gate | None:
    """For ``resume`` of a waiting run: the gate when nothing is to be done yet (no
    decision recorded, no timeout to apply); None when driving it would move on."""
    gate = waiting_gate(rt.store, run.id)
    if gate is None:
        return None
    step = _step_of(run, gate.step_id)
    if step is None:
        return None
    visit = rt.store.get_attempt(gate.attempt_id)
    verdict = _verdict(rt.store, run.id, visit)
    action = rules.at_gate(
        _pipeline(run), step, run.state, _epoch(visit.started_at), verdict, now_s
    )
    return gate if isinstance(action, rules.Wait) else None


# --- helpers ---------------------------------------------------------------------------


def _visit(records: list[AttemptRecord], step_id: str | None = None) -> AttemptRecord | None:
    """The newest current attempt in status ``waiting`` (of ``step_id``, if given)."""
    for record in reversed(records):
        if record.superseded or (step_id is not None and record.step_id != step_id):
            continue
        if record.status == StepStatus.WAITING:
            return record
        if step_id is not None:
            return None
    return None


def _verdict(store: Store, run_id: str, visit: AttemptRecord | None) -> rules.Verdict | None:
    if visit is None:
        return None
    for d in store.gate_decisions(run_id):
        if d.attempt_id == visit.id:
            return rules.Verdict(d.decision, d.decided_by, d.comment, d.decided_at)
    return None


def _by(verdict: rules.Verdict) -> str:
    return f"{verdict.decision} by {verdict.by}" + (
        f": {verdict.comment}" if verdict.comment else ""
    )


def _pipeline(run: RunRecord) -> Pipeline:
    return load_stored(run.pipeline_text, run.pipeline_path, vars_key(run.vars))


def _step_of(run: RunRecord, step_id: str) -> Step | None:
    return next((s for s in _pipeline(run).steps if s.id == step_id), None)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
