"""One attempt of one step: its effect, and its records.

An attempt is recorded ``running`` (with its fingerprint and base commit) before anything
happens, its workspace snapshot before the step touches the tree, and its output with its
token totals in one transaction when it ends. A failed attempt is returned, not decided
on: the saga core (``saga.decide.after_failure``) says whether it is retried, rewinds the
run or fails it, and :func:`record_failure` writes that with the failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentsaga import faults, namespace, undo
from agentsaga.context import StepContext
from agentsaga.errors import AgentsagaError, Interrupted, StepFailed, UserInputError
from agentsaga.llm import LLMGateway
from agentsaga.pipeline import Pipeline, Step
from agentsaga.process import attempt_token, with_token
from agentsaga.runtime import Event, Runtime
from agentsaga.saga import decide
from agentsaga.states import StepStatus
from agentsaga.steps import KINDS
from agentsaga.store import AttemptRecord, RunRecord
from agentsaga.workspace import RunWorkspace

GATE_UNSUPPORTED = (
    "step {step} is a human gate (kind: approve), which this runner cannot wait at yet; "
    "run the pipeline with the local runner"
)
#: Failures caused by the model's reply: that reply is judged and never served again.
REPLY_FAILURES = frozenset({"edit", "schema"})


@dataclass
class Tried:
    """How one attempt ended. ``error`` set and ``attempt`` None: the step could not even
    start (a bad expression); the failure is recorded and final (no retry, no rewind)."""

    attempt: AttemptRecord | None = None
    error: AgentsagaError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def run_attempt(
    rt: Runtime,
    run: RunRecord,
    pipeline: Pipeline,
    step: Step,
    ws: RunWorkspace,
    done: StepStatus = StepStatus.COMPLETED,
) -> Tried:
    """Run one attempt of ``step`` (or record it skipped when its ``if:`` is false).
    ``done``: the status its success is recorded with (a gate's visit: ``waiting``)."""
    run_id = run.id
    ns = rt.namespace(run, pipeline, rt.current(run_id))
    ns["rewind"] = namespace.rewind_for(run, step)
    try:
        if step.if_ is not None and not namespace.truthy(step.if_, ns):
            _record_skipped(rt, run, pipeline, step, ns)
            return Tried()
        params = namespace.render_fields(step, ns)
        step_env = namespace.step_env(step, ns)
    except UserInputError as exc:
        attempt = rt.store.start_attempt(
            run_id, step.id, step.index, fingerprint=None, base_commit=None, snapshot=None
        )
        rt.store.finish_attempt(attempt.id, status=StepStatus.FAILED, error=exc.to_json())
        return Tried(None, exc)
    base = ws.head()
    token, process_record = attempt_token()
    faults.point("step.before_record")
    attempt = rt.store.start_attempt(
        run_id,
        step.id,
        step.index,
        fingerprint=namespace.fingerprint(step, pipeline, ns, run, (params, step_env)),
        base_commit=base,
        snapshot=None,
        process=process_record,
    )
    env = {**rt.base_env(run, pipeline), **step_env, "AGENTSAGA_STEP_ID": step.id}
    # Every process the step starts carries the token recorded above: a takeover finds
    # what a killed owner left running by it (process.stop_attempt_processes).
    with_token(env, token)
    rt.set_current(run_id, attempt)
    faults.point("step.after_record")
    rt.emit(Event("step", run_id, step.id, StepStatus.RUNNING, attempt.attempt))
    env["AGENTSAGA_IDEMPOTENCY_KEY"] = f"{run_id}:{step.id}:{attempt.attempt}"
    env["AGENTSAGA_ATTEMPT"] = str(attempt.attempt)
    log_stem = rt.log_stem(run_id, step.id, attempt.attempt)
    try:
        output = _effect(rt, run, pipeline, step, ws, attempt, base, params, env, ns, log_stem)
    except Interrupted as exc:
        # Not the step's failure: a status of its own, undone on resume like a failed
        # attempt, and not counted toward the step's retries (docs/design.md).
        rt.store.finish_attempt(attempt.id, status=StepStatus.INTERRUPTED, error=exc.to_json())
        rt.emit(Event("step", run_id, step.id, StepStatus.INTERRUPTED, attempt.attempt))
        raise
    except AgentsagaError as exc:
        rt.emit(Event("step", run_id, step.id, StepStatus.FAILED, attempt.attempt, exc.message))
        return Tried(attempt, exc)
    except Exception as exc:
        # A bug of ours: keep the record true (the step failed), then let the CLI report
        # it; the run stays resumable.
        rt.store.finish_attempt(
            attempt.id,
            status=StepStatus.FAILED,
            error={"type": type(exc).__name__, "message": str(exc), "internal": True},
        )
        raise
    faults.point("step.after_effect")
    # A reply or a command may echo a secret: the store masks it before it is kept.
    rt.store.finish_attempt(
        attempt.id, status=done, output=output, log_path=str(log_stem), judge=True
    )
    # The facts are known here; the record (its masked output, its duration, the tokens
    # summed by the store) is read back only if an expression or an undo asks for it.
    rt.set_finished(run_id, attempt, done, output)
    faults.point("step.after_checkpoint")
    rt.emit(Event("step", run_id, step.id, done, attempt.attempt))
    return Tried(attempt)


def _effect(
    rt: Runtime,
    run: RunRecord,
    pipeline: Pipeline,
    step: Step,
    ws: RunWorkspace,
    attempt: AttemptRecord,
    base: str | None,
    params: dict[str, Any],
    env: dict[str, str],
    ns: dict[str, Any],
    log_stem: Path,
) -> dict[str, Any]:
    """The step's side effect: snapshot the tree, run the kind's executor, commit."""
    run_id = run.id
    if step.changes_workspace and ws.uses_git:
        snap = ws.snapshot(f"refs/agentsaga/{run_id}/{step.id}/{attempt.attempt}")
        if snap:
            rt.store.set_attempt_snapshot(attempt.id, base, snap)
            attempt.snapshot = snap
    ctx = StepContext(
        run_id=run_id,
        step=step,
        attempt=attempt.attempt,
        attempt_id=attempt.id,
        pipeline=pipeline,
        params=params,
        env=env,
        workspace=ws,
        log_stem=log_stem,
        timeout_s=step.timeout_s,
        cancel=rt.cancel,
        namespace=ns,
        config=rt.options.config,
        llm=LLMGateway(
            rt.store,
            run_id=run_id,
            step_id=step.id,
            attempt_id=attempt.id,
            config=rt.options.config,
            run_budget=run.state.get("budget") or {},
            step_budget=step.budget,
            memo=rt.options.config.get("memo", "run"),
        ),
    )
    output: dict[str, Any] = KINDS[step.kind].executor()(ctx)
    if step.commit and step.kind != "write" and ws.uses_git:
        output["base"] = base
        output["commit"] = ws.commit(f"agentsaga {run_id}: step {step.id}") or base
    elif step.changes_workspace and ws.uses_git and "commit" not in output:
        # A command that committed by itself (`git commit` in its script): a commit made
        # during the step's own attempt is the step's, and its undo may move past it.
        head = ws.head()
        if head and head != base:
            output["base"], output["commit"] = base, head
    return output


def _record_skipped(
    rt: Runtime, run: RunRecord, pipeline: Pipeline, step: Step, ns: dict[str, Any]
) -> None:
    attempt = rt.store.start_attempt(
        run.id,
        step.id,
        step.index,
        fingerprint=namespace.fingerprint(step, pipeline, ns, run),
        base_commit=None,
        snapshot=None,
        status=StepStatus.SKIPPED,
    )
    rt.set_current(run.id, attempt)
    rt.emit(Event("step", run.id, step.id, StepStatus.SKIPPED, message=f"if: {step.if_} is false"))


def record_failure(
    rt: Runtime,
    run_id: str,
    attempt: AttemptRecord,
    exc: AgentsagaError,
    state: dict[str, Any] | None,
) -> AttemptRecord:
    """Record a failed attempt, with the run's new bookkeeping (a rewind's restart point)
    in the same transaction. Returns the attempt as recorded."""
    rt.store.finish_attempt(
        attempt.id,
        status=StepStatus.FAILED,
        output=getattr(exc, "output", None),
        error=exc.to_json(),
        log_path=str(rt.log_stem(run_id, attempt.step_id, attempt.attempt)),
        state=(run_id, state) if state else None,
    )
    if getattr(exc, "kind", "") in REPLY_FAILURES:
        rt.store.judge_calls(attempt.id)
    return rt.store.get_attempt(attempt.id)


@dataclass
class Once:
    """How one try of a step ended: completed (nothing set); failed for good (``error``,
    with ``decision`` Fail, or None when the step could not even start); or with a
    decision the runner carries out: Retry (wait ``delay_s``, try again) or Rewind (the
    restart point is recorded: the drive loop restarts from it)."""

    decision: decide.Decision | None = None
    error: AgentsagaError | None = None


def try_once(
    rt: Runtime,
    run: RunRecord,
    pipeline: Pipeline,
    step: Step,
    ws: RunWorkspace,
    try_no: int,
    jitter: float,
) -> Once:
    """One try of a step's retry loop, as every runner makes it: recover the step's
    crashed attempt, run one attempt; if it fails, ask the saga core what follows (with
    ``jitter`` in [0, 1) for the backoff), record the failure with that decision, and
    compensate the failed attempt before any retry or rewind. Raises
    ``CompensationFailed`` when a compensation cannot run (the run then fails)."""
    run_id = run.id
    if step.kind == "approve":
        # A gate waits for a person: gates.drive_gate is its turn (the local runner calls
        # it). A runner without a way to wait must not let the gate pass unseen.
        return Once(error=StepFailed(GATE_UNSUPPORTED.format(step=step.id), retryable=False))
    undo.recover(rt, run_id, pipeline, step.id, ws)
    tried = run_attempt(rt, run, pipeline, step, ws)
    if tried.error is None:
        return Once()
    if tried.attempt is None:
        return Once(error=tried.error)  # it could not start: final
    exc = tried.error
    decision = decide.after_failure(
        pipeline, step, run.state, decide.Failure.of(exc), try_no, jitter
    )
    for note in getattr(decision, "notes", ()):
        rt.emit(Event("note", run_id, step.id, message=note))
    state = decision.state if isinstance(decision, decide.Rewind) else None
    failed = record_failure(rt, run_id, tried.attempt, exc, state)
    last = not isinstance(decision, decide.Retry)
    undo.compensate(rt, run_id, pipeline, ws, failed, "failure" if last else "retry")
    if isinstance(decision, decide.Retry):
        rt.emit(Event("note", run_id, step.id, message=decision.note))
    return Once(decision, exc)
