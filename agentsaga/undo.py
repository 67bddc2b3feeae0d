"""Carrying out compensations: one attempt's (under its retry policy, every try recorded),
a restart's (a rewind or a changed pipeline), a crashed attempt's recovery, a rollback.

What to undo and in which order is decided in ``agentsaga.saga.plans``; this module runs
it and records it, through ``compensations.run_once`` for the effect itself. A failed
compensation is recorded, then raised as ``CompensationFailed``.
"""

from __future__ import annotations

import json
import random

from agentsaga import compensations, expressions, faults
from agentsaga.errors import AgentsagaError, CompensationFailed, GitError, Interrupted
from agentsaga.pipeline import Compensation, Pipeline, Step
from agentsaga.runtime import Event, Runtime
from agentsaga.saga import decide, plans
from agentsaga.saga.view import AttemptFact
from agentsaga.states import CompensationStatus, RunStatus, StepStatus
from agentsaga.store import AttemptRecord, RunRecord
from agentsaga.workspace import GitWorkspace, RunWorkspace


def compensate(
    rt: Runtime,
    run_id: str,
    pipeline: Pipeline,
    ws: RunWorkspace,
    attempt: AttemptRecord,
    reason: str,
) -> bool:
    """Run one attempt's compensation under its retry policy; record every try.

    Returns False when the step has no compensation (recorded as skipped)."""
    run = rt.store.get_run(run_id)
    step = rt.steps_by_id(run, pipeline).get(attempt.step_id)
    comp = plans.effective_compensation(step) if step else None
    if comp is None or step is None:
        rt.store.record_skipped_compensation(run_id, attempt.id, attempt.step_id, reason)
        return False
    comp_id = rt.store.start_compensation(run_id, attempt.id, step.id, reason)
    rt.emit(
        Event(
            "compensate",
            run_id,
            step.id,
            StepStatus.COMPENSATING,
            attempt.attempt,
            plans.describe(comp),
        )
    )
    ci = _input(rt, run, pipeline, ws, step, comp, attempt)
    error: AgentsagaError | None = None
    tries = 0
    faults.point("comp.before")
    for tries in range(1, comp.retry.attempts + 1):
        try:
            compensations.run_once(comp, ci)
        except Interrupted:
            raise
        except AgentsagaError as exc:
            error = exc
            if not exc.retryable or tries == comp.retry.attempts:
                break
            if rt.cancel.wait(decide.backoff(comp.retry, tries, random.random())):
                raise Interrupted() from None
            continue
        faults.point("comp.after_effect")
        rt.store.finish_compensation(
            comp_id, attempt.id, status=CompensationStatus.SUCCEEDED, tries=tries
        )
        rt.mark(run_id, attempt.id, StepStatus.COMPENSATED)
        faults.point("comp.between")
        rt.emit(Event("compensate", run_id, step.id, StepStatus.COMPENSATED, attempt.attempt))
        return True
    assert error is not None
    failure = CompensationFailed(step.id, error.message)
    rt.store.finish_compensation(
        comp_id, attempt.id, status=CompensationStatus.FAILED, tries=tries, error=failure.to_json()
    )
    rt.emit(
        Event(
            "compensate",
            run_id,
            step.id,
            StepStatus.COMPENSATION_FAILED,
            attempt.attempt,
            failure.message,
        )
    )
    raise failure


def _input(
    rt: Runtime,
    run: RunRecord,
    pipeline: Pipeline,
    ws: RunWorkspace,
    step: Step,
    comp: Compensation,
    attempt: AttemptRecord,
) -> compensations.CompensationInput:
    # A git compensation, or a command without expressions, reads no namespace.
    needs_ns = comp.run is not None and (
        bool(comp.env) or expressions.has_expressions(json.dumps(comp.run))
    )
    return compensations.CompensationInput(
        run_id=run.id,
        step=step,
        attempt=attempt,
        namespace=rt.namespace(run, pipeline, rt.current(run.id)) if needs_ns else {},
        workspace=ws,
        base_env=rt.base_env(run, pipeline),
        log_stem=rt.log_stem(run.id, step.id, attempt.attempt, "compensate"),
        cancel=rt.cancel,
        force=rt.options.force,
        expected_head=expected_head(rt, run.id, ws, attempt),
    )


def close_crashed(rt: Runtime, attempt: AttemptRecord) -> AttemptRecord:
    """An attempt left ``running`` by a dead process is closed as failed before it is
    undone: its end is recorded, and the tokens its calls were paid for are summed into
    it, as for any attempt that ends."""
    if not plans.crashed_mid_flight(AttemptFact.of(attempt)):
        return attempt
    rt.store.finish_attempt(
        attempt.id,
        status=StepStatus.FAILED,
        error={"type": "Crashed", "message": "the process running it died"},
    )
    return rt.store.get_attempt(attempt.id)


def finish_restart(rt: Runtime, run_id: str, old: Pipeline, new: Pipeline) -> None:
    """Carry out a recorded restart point: compensate, newest first, every live attempt
    of the steps from there on (and of steps the new pipeline dropped), mark them
    superseded, then clear the point. Safe to repeat after a crash."""
    run = rt.store.get_run(run_id)
    if "restart_index" not in run.state:
        return
    index = int(run.state["restart_index"])
    keep = {s.id for s in new.steps if s.index < index}
    ws = rt.workspace(run)
    records = rt.store.attempts(run_id)
    by_id = {a.id: a for a in records}
    undo, affected = plans.restart_targets(
        [AttemptFact.of(a) for a in records], keep, rt.no_compensation_ids(run_id)
    )
    for fact in undo:
        compensate(rt, run_id, old, ws, close_crashed(rt, by_id[fact.id]), "rewind")
    rt.store.supersede(run_id, affected)
    rt.forget(run_id)
    state = dict(run.state)
    state.pop("restart_from", None)
    state.pop("restart_index", None)
    rt.store.update_run(run_id, state=state)


def recover(rt: Runtime, run_id: str, pipeline: Pipeline, step_id: str, ws: RunWorkspace) -> None:
    """Compensate this step's attempt that crashed or was interrupted mid-flight."""
    latest = rt.current(run_id).get(step_id)
    if latest is None:
        return
    fact = AttemptFact.of(latest)
    if not fact.live or fact.done:
        return  # the common case, answered from memory
    if plans.recovery_target({step_id: fact}, step_id, rt.no_compensation_ids(run_id)) is None:
        return
    attempt = latest
    if plans.crashed_mid_flight(fact):
        attempt = close_crashed(rt, attempt)
        rt.emit(
            Event(
                "note",
                run_id,
                step_id,
                message=(
                    f"attempt {attempt.attempt} was left running by a process that is gone: "
                    "compensating it with output null"
                ),
            )
        )
    compensate(rt, run_id, pipeline, ws, attempt, "recovery")


def expected_head(rt: Runtime, run_id: str, ws: RunWorkspace, attempt: AttemptRecord) -> str | None:
    """The compare-and-swap value for an attempt's git compensation: where the run left
    the branch. An attempt that crashed after committing but before its checkpoint
    recorded no commit; its own commit (named after the run and step) is accepted."""
    if not isinstance(ws, GitWorkspace) or not ws.exists():
        return None
    believed = believed_tip(rt, run_id, ws)
    if attempt.status in (StepStatus.RUNNING, StepStatus.COMPENSATING) or attempt.error:
        from agentsaga import gitops

        tip = gitops.head(ws.ws)
        if tip != believed and gitops.is_step_commit(
            ws.ws, tip, run_id, attempt.step_id, parent=believed
        ):
            return tip
    return believed


def believed_tip(rt: Runtime, run_id: str, ws: GitWorkspace) -> str | None:
    run = rt.store.get_run(run_id)
    compensated = [
        (c.started_at, c.attempt_id)
        for c in rt.store.compensations(run_id)
        if c.status == CompensationStatus.SUCCEEDED
    ]
    return plans.believed_tip(
        str(ws.ws.base_commit),
        [AttemptFact.of(a) for a in rt.store.attempts(run_id)],
        compensated,
        rt.steps_by_id(run),
    )


# --- rollback --------------------------------------------------------------------------


def rollback(rt: Runtime, run_id: str) -> None:
    """Undo the run, newest first (plans.rollback_order), then remove its branch and
    worktree. Ends ``rolled_back``, or ``rollback_failed`` with what is left to do."""
    run = rt.store.get_run(run_id)
    if run.status == RunStatus.ROLLED_BACK:
        rt.emit(Event("note", run_id, message="already rolled back; nothing to do"))
        return
    pipeline = rt.pipeline_of(run)
    ws = rt.workspace(run)
    halt = decide.rollback_halts(run.state, pipeline)
    if run.status == RunStatus.WAITING:
        _save_review_edits(rt, run_id, ws)
    rt.store.update_run(run_id, status=RunStatus.ROLLING_BACK)
    rt.emit(Event("run", run_id, status=RunStatus.ROLLING_BACK))
    records = rt.store.attempts(run_id)
    by_id = {a.id: a for a in records}
    order = plans.rollback_order(
        [AttemptFact.of(a) for a in records],
        rt.no_compensation_ids(run_id),
        rt.steps_by_id(run, pipeline),
        rt.options.force,
    )
    failures: list[CompensationFailed] = []
    for item in order:
        if item.action == "stop":
            left = ", ".join(item.left)
            _stopped(
                rt,
                run_id,
                f"stopped before irreversible step {item.attempt.step_id!r}: undo by hand "
                f"what remains ({left}), then 'agentsaga rollback {run_id} --force' to finish",
            )
            return
        try:
            done = compensate(
                rt, run_id, pipeline, ws, close_crashed(rt, by_id[item.attempt.id]), "rollback"
            )
        except CompensationFailed as exc:
            failures.append(exc)
            if halt:
                _stopped(
                    rt,
                    run_id,
                    f"{exc.message}; fix the cause and run 'agentsaga rollback "
                    f"{run_id}' again to continue where it stopped (or --force)",
                )
                return
            continue
        if not done:
            rt.emit(
                Event(
                    "compensate",
                    run_id,
                    item.attempt.step_id,
                    "skipped",
                    item.attempt.attempt,
                    "no compensation: nothing to undo",
                )
            )
    if failures:
        names = ", ".join(f.step_id for f in failures)
        _stopped(
            rt,
            run_id,
            f"could not undo {names}; the rest was undone. Fix them by hand or "
            f"run 'agentsaga rollback {run_id}' again",
        )
        return
    _teardown(rt, run_id, ws)


def _save_review_edits(rt: Runtime, run_id: str, ws: RunWorkspace) -> None:
    """A waiting run's worktree may hold a person's edits: whoever allowed the rollback
    (``--discard-edits``, or a host that could not see the worktree), they are saved to
    a ref first and named."""
    from agentsaga import review_edits

    visit = next(
        (a for a in reversed(rt.store.attempts(run_id)) if a.status == StepStatus.WAITING), None
    )
    edits = visit and review_edits.find(ws, run_id, visit.step_id, visit.attempt)
    if edits:
        rt.emit(
            Event(
                "note",
                run_id,
                visit.step_id if visit else None,
                message=f"files changed while the run waited ({edits.shown()}) are saved as "
                f"{edits.saved}",
            )
        )


def _teardown(rt: Runtime, run_id: str, ws: RunWorkspace) -> None:
    if isinstance(ws, GitWorkspace):
        ws.expected_head = believed_tip(rt, run_id, ws)
    try:
        ws.teardown(run_id, keep_refs=rt.options.keep_refs, force=rt.options.force)
    except GitError as exc:
        _stopped(
            rt,
            run_id,
            f"every step was undone, but the run branch could not be removed: {exc.message}",
        )
        return
    rt.store.update_run(run_id, status=RunStatus.ROLLED_BACK, clear_error=True, finished=True)
    rt.emit(Event("run", run_id, status=RunStatus.ROLLED_BACK))


def _stopped(rt: Runtime, run_id: str, message: str) -> None:
    error = {"type": "RollbackFailed", "message": message}
    rt.store.update_run(run_id, status=RunStatus.ROLLBACK_FAILED, error=error, finished=True)
    rt.emit(Event("run", run_id, status=RunStatus.ROLLBACK_FAILED, message=message))
