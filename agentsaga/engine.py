"""The run / resume / rollback state machine (DESIGN.md §2).

Every transition is written to the store before the engine acts on it, so a process killed
at any instant leaves a run that ``resume`` or ``rollback`` can finish:

* before a step starts, its attempt is recorded ``running`` with its fingerprint and base;
* its output and token totals are recorded in one transaction when it ends;
* a failed attempt is compensated at once (output null), before a retry or a rewind;
* a rewind or a changed pipeline first records *where the run restarts*
  (``state.restart_from``) in the same transaction as the failure, then compensates the
  steps from there on, newest first, and marks them superseded. A crash in the middle is
  finished by the next ``resume``.

An attempt found ``running`` or ``compensating`` without a live owner (the lease guarantees
there is no other) crashed mid-flight: its compensation runs (again, for ``compensating``:
compensations are idempotent by contract) before the step re-executes.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import os
import random
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentsaga import compensations, expressions, faults, namespace, process
from agentsaga.context import StepContext
from agentsaga.errors import (
    AgentsagaError,
    CompensationFailed,
    GitError,
    GitUnsafe,
    Interrupted,
    StepFailed,
    UserInputError,
)
from agentsaga.lease import HeldLease
from agentsaga.llm import LLMGateway
from agentsaga.pipeline import Pipeline, RetrySpec, Step, load_text
from agentsaga.redact import redact_json, secret_values
from agentsaga.states import LIVE_ATTEMPT, CompensationStatus, RunStatus, StepStatus
from agentsaga.steps import KINDS
from agentsaga.store import AttemptRecord, RunRecord, Store, new_run_id
from agentsaga.workspace import GitWorkspace, PlainWorkspace, RunWorkspace
from agentsaga.workspace import from_json as workspace_from_json

#: Failures caused by the model's reply: that reply is judged and never served again.
REPLY_FAILURES = frozenset({"edit", "schema"})


@dataclass
class Event:
    kind: str  # run, step, compensate, reuse, note
    run_id: str
    step_id: str | None = None
    status: str | None = None
    attempt: int | None = None
    message: str = ""


@dataclass
class EngineOptions:
    rollback_on_failure: bool | None = None  # None: the pipeline's top-level on_failure
    force: bool = False
    keep_refs: bool = False
    allow_dirty: bool = False
    lease_ttl_s: float = 30.0
    budget: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    on_event: Callable[[Event], None] | None = None


@dataclass
class PlanItem:
    step_id: str
    action: str  # reuse | run | rerun | compensate | skip | stop
    reason: str


@dataclass
class StepView:
    id: str
    status: str
    attempts: int


@dataclass
class RunResult:
    run_id: str
    status: str
    steps: list[StepView]
    error: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "steps": [s.__dict__ for s in self.steps],
            "error": self.error,
            "notes": self.notes,
        }


@dataclass
class _Outcome:
    ok: bool
    error: AgentsagaError | None = None
    rewind_to: str | None = None


def current_attempts(attempts: list[AttemptRecord]) -> dict[str, AttemptRecord]:
    """Each step's latest attempt that a rewind or a pipeline change has not superseded."""
    latest: dict[str, AttemptRecord] = {}
    for attempt in attempts:
        if not attempt.superseded:
            latest[attempt.step_id] = attempt
    return latest


def is_done(attempt: AttemptRecord | None) -> bool:
    return attempt is not None and attempt.status in (StepStatus.COMPLETED, StepStatus.SKIPPED)


class Engine:
    def __init__(self, store: Store, home: Path, options: EngineOptions | None = None) -> None:
        self.store = store
        self.home = home  # <repo>/.agentsaga: logs and worktrees live here
        self.options = options or EngineOptions()
        self.cancel = threading.Event()
        self.owner_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._cache: dict[str, AttemptRecord] | None = None
        self._cache_run: str | None = None
        self._ns_steps: dict[str, dict[str, Any]] = {}
        self._held: HeldLease | None = None
        self._steps_key: tuple[Any, ...] | None = None
        self._steps_value: dict[str, Step] = {}

    # --- public entry points ------------------------------------------------------------

    def run(self, pipeline: Pipeline, repo_root: Path | None) -> RunResult:
        record = self._create_run(pipeline)
        run_id = record.id
        with self._owning(run_id):
            self._emit(Event("run", run_id, status="started", message=pipeline.name))
            self._open_or_fail(record, pipeline, repo_root, start_point=None)
            return self._drive(run_id, pipeline)

    def resume(
        self,
        run_id: str,
        pipeline: Pipeline | None = None,
        from_step: str | None = None,
        budget: dict[str, float] | None = None,
    ) -> RunResult:
        with self._owning(run_id):
            run = self.store.get_run(run_id)
            if budget:
                run.state["budget"] = {**run.state.get("budget", {}), **budget}
                self.store.update_run(run_id, state=run.state)
            if run.status in (
                RunStatus.ROLLED_BACK,
                RunStatus.ROLLING_BACK,
                RunStatus.ROLLBACK_FAILED,
            ):
                raise UserInputError(
                    f"run {run_id} is {run.status}; 'agentsaga rollback {run_id}' finishes a "
                    f"rollback, 'agentsaga fork {run_id} --from STEP' starts again from it"
                )
            old = self._pipeline_of(run)
            new = pipeline or old
            attempts = self.store.attempts(run_id)  # read once: a long run has thousands
            plan = self.plan_resume(run_id, pipeline, from_step, attempts)
            reused = [p.step_id for p in plan if p.action == "reuse"]
            if reused:
                self._emit(Event("reuse", run_id, message="reusing " + _names(reused)))
            restart_index = self._restart_index(attempts, plan, new)
            if restart_index is not None:
                # Recorded first: the compensations that follow finish after a crash too.
                run.state["restart_from"] = (
                    new.steps[restart_index].id if restart_index < len(new.steps) else ""
                )
                run.state["restart_index"] = restart_index
            if from_step is not None:
                # A rewind by hand: the re-run steps start afresh, with no stale failure.
                run.state["rewind"] = dict(namespace.EMPTY_REWIND)
                run.state["rewind_by_step"] = {}
                run.state["rewinds"], run.state["signatures"] = {}, {}
            self.store.update_run(run_id, state=run.state)
            if pipeline is not None and pipeline.text != run.pipeline_text:
                # The old text is kept: attempts made under it are undone with its
                # definitions (a dropped step still has a compensation).
                history = run.state.setdefault("old_pipelines", [])
                history.append({"path": run.pipeline_path, "text": run.pipeline_text})
                self.store.update_run(run_id, state=run.state)
                self.store.set_pipeline(run_id, pipeline.path, pipeline.text, pipeline.hash)
            self.store.update_run(run_id, status=RunStatus.RUNNING, clear_error=True)
            # Nothing changed the attempts since they were read: seed the in-memory view.
            self._cache, self._cache_run = current_attempts(attempts), run_id
            self._ns_steps = {k: namespace.step_namespace(a) for k, a in self._cache.items()}
            return self._drive(run_id, new, old)

    def _restart_index(
        self, attempts: list[AttemptRecord], plan: list[PlanItem], new: Pipeline
    ) -> int | None:
        """Where a resume must undo and re-run from: the first step the plan runs, when any
        completed step after it re-runs or a step the new pipeline dropped still has live
        attempts; None when the run simply continues."""
        first = next((i for i, p in enumerate(plan) if p.action in ("rerun", "run")), None)
        live_ids = {
            a.step_id
            for a in attempts
            if a.status in LIVE_ATTEMPT and not a.superseded and a.reused_from is None
        }
        dropped = live_ids - {s.id for s in new.steps}
        # A step whose last attempt failed or crashed is recovered when it runs again;
        # only completed steps that must run again need the restart's compensations.
        current = current_attempts(attempts)
        rerun = any(p.action == "rerun" and is_done(current.get(p.step_id)) for p in plan)
        if not rerun and not dropped:
            return None
        return first if first is not None else len(new.steps)

    def rollback(self, run_id: str) -> RunResult:
        with self._owning(run_id):
            return self._rollback(run_id)

    def fork(
        self,
        parent_id: str,
        from_step: str,
        overrides: dict[str, str] | None = None,
        pipeline: Pipeline | None = None,
        repo_root: Path | None = None,
    ) -> RunResult:
        parent = self.store.get_run(parent_id)
        base_pipeline = pipeline or self._pipeline_of(parent)
        new = self._fork_pipeline(parent, base_pipeline, overrides)
        reuse = [
            p.step_id
            for p in self.plan_fork(parent_id, from_step, overrides, pipeline)
            if p.action == "reuse"
        ]
        record = self._create_run(new, parent_id, from_step)
        run_id = record.id
        with self._owning(run_id):
            parent_current = current_attempts(self.store.attempts(parent_id))
            start_point = None
            if reuse:
                last = parent_current[reuse[-1]]
                start_point = (last.output or {}).get("commit") or _head_after(
                    parent_current, reuse, parent
                )
            self.store.copy_attempts(parent_id, run_id, reuse)
            if reuse:
                self._emit(Event("reuse", run_id, message="reusing from parent " + _names(reuse)))
            self._open_or_fail(record, new, repo_root, start_point=start_point)
            return self._drive(run_id, new)

    # --- plans --------------------------------------------------------------------------

    def plan_resume(
        self,
        run_id: str,
        pipeline: Pipeline | None = None,
        from_step: str | None = None,
        attempts: list[AttemptRecord] | None = None,
    ) -> list[PlanItem]:
        run = self.store.get_run(run_id)
        target = pipeline or self._pipeline_of(run)
        current = current_attempts(self.store.attempts(run_id) if attempts is None else attempts)
        ns = self._namespace(run, target, current)
        stop_at = target.index_of(from_step) if from_step else None
        items: list[PlanItem] = []
        invalid: str | None = None
        for step in target.steps:
            attempt = current.get(step.id)
            if invalid is not None:
                action = "rerun" if attempt is not None else "run"
                items.append(PlanItem(step.id, action, invalid))
                continue
            if stop_at is not None and step.index >= stop_at:
                invalid = f"upstream: resume --from {from_step}"
                reason = f"resume --from {from_step}"
                items.append(PlanItem(step.id, "rerun" if attempt else "run", reason))
                continue
            if not is_done(attempt):
                why = "not started" if attempt is None else f"its last attempt {attempt.status}"
                items.append(PlanItem(step.id, "rerun" if attempt else "run", why))
                invalid = f"upstream: {step.id} runs again"
                continue
            assert attempt is not None
            # Fingerprints decide only against a changed pipeline (DESIGN §2): the stored
            # one, with the same vars, gives completed steps the inputs they had.
            if pipeline is None or attempt.fingerprint == namespace.fingerprint(
                step, target, ns, run
            ):
                items.append(PlanItem(step.id, "reuse", "completed; fingerprint unchanged"))
                continue
            items.append(PlanItem(step.id, "rerun", "fingerprint changed (definition or inputs)"))
            invalid = f"upstream: {step.id} changed"
        return items

    def plan_rollback(self, run_id: str) -> list[PlanItem]:
        run = self.store.get_run(run_id)
        steps = self._steps_by_id(run)
        skipped = self._no_compensation_ids(run_id)
        items = []
        for attempt in reversed(self.store.attempts(run_id)):
            if attempt.status not in LIVE_ATTEMPT or attempt.id in skipped:
                continue
            if attempt.reused_from is not None:
                continue  # the parent's checkpoint: the parent's rollback undoes it
            step = steps.get(attempt.step_id)
            comp = compensations.effective(step) if step else None
            label = f"{attempt.step_id}#{attempt.attempt}"
            if step is not None and step.irreversible and not self.options.force:
                items.append(PlanItem(label, "stop", "irreversible: undo by hand or --force"))
                break
            if comp is None:
                items.append(PlanItem(label, "skip", "no compensation"))
            else:
                items.append(PlanItem(label, "compensate", compensations.describe(comp)))
        items.append(PlanItem("(workspace)", "compensate", "remove the run branch and worktree"))
        return items

    def plan_fork(
        self,
        parent_id: str,
        from_step: str,
        overrides: dict[str, str] | None = None,
        pipeline: Pipeline | None = None,
    ) -> list[PlanItem]:
        parent = self.store.get_run(parent_id)
        base = pipeline or self._pipeline_of(parent)
        new = self._fork_pipeline(parent, base, overrides)
        stop_at = new.index_of(from_step)
        current = current_attempts(self.store.attempts(parent_id))
        probe = RunRecord(**{**parent.__dict__, "vars": new.vars})
        ns = self._namespace(probe, new, current)
        items: list[PlanItem] = []
        invalid: str | None = None
        for step in new.steps:
            attempt = current.get(step.id)
            if invalid is None and step.index >= stop_at:
                invalid = f"fork --from {from_step}"
            if invalid is None and not is_done(attempt):
                invalid = (
                    f"not completed in the parent ({attempt.status if attempt else 'pending'})"
                )
            if invalid is None and attempt is not None:
                if attempt.fingerprint != namespace.fingerprint(step, new, ns, probe):
                    invalid = f"{step.id}'s inputs differ from the parent's"
            if invalid is None:
                items.append(PlanItem(step.id, "reuse", "checkpoint of the parent run"))
            else:
                items.append(PlanItem(step.id, "run", invalid))
        return items

    def _fork_pipeline(
        self,
        parent: RunRecord,
        base: Pipeline,
        overrides: dict[str, str] | None,
    ) -> Pipeline:
        """The fork's pipeline: the parent's vars that it declares, then ``--var``
        overrides, which must be declared (load_text says so if not)."""
        inherited = {k: str(v) for k, v in parent.vars.items() if k in base.vars}
        merged = {**inherited, **(overrides or {})}
        return load_text(base.text, base.path, merged)

    # --- driving ------------------------------------------------------------------------

    def _drive(self, run_id: str, pipeline: Pipeline, old: Pipeline | None = None) -> RunResult:
        run = self.store.get_run(run_id)
        ws = self._workspace(run)
        if isinstance(ws, GitWorkspace):
            # A worktree removed by hand comes back; a moved or deleted branch refuses.
            ws.reopen()
        try:
            with self._signals():
                # Compensate under the definitions the attempts ran with.
                self._finish_restart(run_id, old or pipeline, pipeline)
                index = 0
                while index < len(pipeline.steps):
                    self._check_lease(run_id)
                    step = pipeline.steps[index]
                    if is_done(self._current(run_id).get(step.id)):
                        index += 1
                        continue
                    outcome = self._execute(run_id, pipeline, step, ws)
                    if outcome.ok:
                        index += 1
                    elif outcome.rewind_to is not None:
                        self._finish_restart(run_id, pipeline, pipeline)
                        index = pipeline.index_of(outcome.rewind_to)
                    else:
                        assert outcome.error is not None
                        return self._fail(run_id, pipeline, outcome.error)
        except CompensationFailed as exc:
            # A failed attempt could not be undone: the run stops here, failed and
            # resumable; resume retries the compensation before the step runs again.
            return self._fail(run_id, pipeline, exc)
        except Interrupted as exc:
            self.store.update_run(run_id, status=RunStatus.INTERRUPTED, error=exc.to_json())
            self._emit(Event("run", run_id, status=RunStatus.INTERRUPTED, message=exc.message))
            exc.run_id = run_id
            raise
        self.store.update_run(run_id, status=RunStatus.SUCCEEDED, clear_error=True, finished=True)
        self._emit(Event("run", run_id, status=RunStatus.SUCCEEDED))
        return self.result(run_id)

    def _fail(self, run_id: str, pipeline: Pipeline, error: AgentsagaError) -> RunResult:
        self.store.update_run(run_id, status=RunStatus.FAILED, error=error.to_json(), finished=True)
        self._emit(Event("run", run_id, status=RunStatus.FAILED, message=error.message))
        run = self.store.get_run(run_id)
        wanted = self.options.rollback_on_failure
        if wanted is None:
            wanted = bool(run.state.get("rollback_on_failure"))
        if wanted and not isinstance(error, CompensationFailed):
            self._emit(Event("note", run_id, message="rolling back (rollback on failure)"))
            return self._rollback(run_id)
        return self.result(run_id)

    def _execute(self, run_id: str, pipeline: Pipeline, step: Step, ws: RunWorkspace) -> _Outcome:
        retry = step.retry
        for try_no in range(1, retry.attempts + 1):
            run = self.store.get_run(run_id)
            self._recover_attempts_of(run_id, pipeline, step, ws)
            ns = self._namespace(run, pipeline, self._current(run_id))
            ns["rewind"] = namespace.rewind_for(run, step)
            try:
                if step.if_ is not None and not namespace.truthy(step.if_, ns):
                    self._set_current(
                        run_id,
                        self.store.start_attempt(
                            run_id,
                            step.id,
                            step.index,
                            fingerprint=namespace.fingerprint(step, pipeline, ns, run),
                            base_commit=None,
                            snapshot=None,
                            status=StepStatus.SKIPPED,
                        ),
                    )
                    self._emit(
                        Event(
                            "step",
                            run_id,
                            step.id,
                            StepStatus.SKIPPED,
                            message=f"if: {step.if_} is false",
                        )
                    )
                    return _Outcome(ok=True)
                params = namespace.render_fields(step, ns)
                step_env = namespace.step_env(step, ns)
            except UserInputError as exc:
                attempt = self.store.start_attempt(
                    run_id, step.id, step.index, fingerprint=None, base_commit=None, snapshot=None
                )
                self.store.finish_attempt(attempt.id, status=StepStatus.FAILED, error=exc.to_json())
                return _Outcome(ok=False, error=exc)
            base = ws.head()
            faults.point("step.before_record")
            attempt = self.store.start_attempt(
                run_id,
                step.id,
                step.index,
                fingerprint=namespace.fingerprint(step, pipeline, ns, run),
                base_commit=base,
                snapshot=None,
            )
            env = {**self._base_env(run_id, pipeline), **step_env, "AGENTSAGA_STEP_ID": step.id}
            self._set_current(run_id, attempt)
            faults.point("step.after_record")
            self._emit(Event("step", run_id, step.id, StepStatus.RUNNING, attempt.attempt))
            env["AGENTSAGA_IDEMPOTENCY_KEY"] = f"{run_id}:{step.id}:{attempt.attempt}"
            env["AGENTSAGA_ATTEMPT"] = str(attempt.attempt)
            try:
                if step.changes_workspace and ws.uses_git:
                    snap = ws.snapshot(f"refs/agentsaga/{run_id}/{step.id}/{attempt.attempt}")
                    if snap:
                        self.store.set_attempt_snapshot(attempt.id, base, snap)
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
                    log_stem=self._log_stem(run_id, step.id, attempt.attempt),
                    timeout_s=step.timeout_s,
                    cancel=self.cancel,
                    namespace=ns,
                    config=self.options.config,
                    llm=LLMGateway(
                        self.store,
                        run_id=run_id,
                        step_id=step.id,
                        attempt_id=attempt.id,
                        config=self.options.config,
                        run_budget=run.state.get("budget") or {},
                        step_budget=step.budget,
                        memo=self.options.config.get("memo", "run"),
                    ),
                )
                output = KINDS[step.kind].executor()(ctx)
                if step.commit and step.kind != "write" and ws.uses_git:
                    output["base"] = base
                    output["commit"] = ws.commit(f"agentsaga {run_id}: step {step.id}") or base
            except Interrupted as exc:
                self.store.finish_attempt(attempt.id, status=StepStatus.FAILED, error=exc.to_json())
                raise
            except AgentsagaError as exc:
                last = try_no == retry.attempts or not exc.retryable
                self._emit(
                    Event("step", run_id, step.id, StepStatus.FAILED, attempt.attempt, exc.message)
                )
                state = self._rewind_decision(run, step, exc) if last else None
                self.store.finish_attempt(
                    attempt.id,
                    status=StepStatus.FAILED,
                    output=getattr(exc, "output", None),
                    error=exc.to_json(),
                    log_path=str(self._log_stem(run_id, step.id, attempt.attempt)),
                    state=(run_id, state) if state else None,
                )
                if getattr(exc, "kind", "") in REPLY_FAILURES:
                    self.store.judge_calls(attempt.id)
                self._compensate(
                    run_id,
                    pipeline,
                    ws,
                    self.store.get_attempt(attempt.id),
                    "retry" if not last else "failure",
                )
                if last:
                    rewind_to = state.get("restart_from") if state else None
                    return _Outcome(ok=False, error=exc, rewind_to=rewind_to)
                delay = _backoff(retry, try_no)
                self._emit(
                    Event(
                        "note",
                        run_id,
                        step.id,
                        message=f"retrying in {delay:.1f}s ({try_no}/{retry.attempts})",
                    )
                )
                if self.cancel.wait(delay):
                    raise Interrupted() from None
                continue
            except Exception as exc:
                # A bug of ours: keep the record true (the step failed), then let the CLI
                # report it; the run stays resumable.
                self.store.finish_attempt(
                    attempt.id,
                    status=StepStatus.FAILED,
                    error={"type": type(exc).__name__, "message": str(exc), "internal": True},
                )
                raise
            faults.point("step.after_effect")
            self.store.finish_attempt(
                attempt.id,
                status=StepStatus.COMPLETED,
                # A reply or a command may echo a secret: it is masked before it is kept.
                output=redact_json(output, secret_values()),
                log_path=str(ctx.log_stem),
            )
            self._set_current(run_id, self.store.get_attempt(attempt.id))
            faults.point("step.after_checkpoint")
            self.store.judge_calls(attempt.id)
            self._emit(Event("step", run_id, step.id, StepStatus.COMPLETED, attempt.attempt))
            return _Outcome(ok=True)
        raise AssertionError("unreachable: the last try returns")  # pragma: no cover

    def _rewind_decision(
        self, run: RunRecord, step: Step, exc: AgentsagaError
    ) -> dict[str, Any] | None:
        """The run state after a rewind, or None when this failure is terminal."""
        policy = step.on_failure
        kind = getattr(exc, "kind", "error")
        if policy is None or kind == "budget" or not isinstance(exc, StepFailed):
            return None
        if policy.when != "any" and policy.when != kind:
            self._emit(
                Event(
                    "note",
                    run.id,
                    step.id,
                    message=f"no rewind: failure is {kind}, on_failure wants {policy.when}",
                )
            )
            return None
        state: dict[str, Any] = json.loads(json.dumps(run.state))
        counts = state.setdefault("rewinds", {})
        signatures = state.setdefault("signatures", {})
        signature = _failure_signature(exc)
        if counts.get(step.id, 0) >= policy.max_rewinds:
            self._emit(
                Event(
                    "note",
                    run.id,
                    step.id,
                    message=f"no rewind: max_rewinds ({policy.max_rewinds}) reached",
                )
            )
            return None
        if signatures.get(step.id) == signature:
            self._emit(
                Event(
                    "note",
                    run.id,
                    step.id,
                    message="no rewind: the same failure repeated unchanged (stuck)",
                )
            )
            return None
        counts[step.id] = counts.get(step.id, 0) + 1
        signatures[step.id] = signature
        previous: dict[str, Any] = state.get("rewind") or dict(namespace.EMPTY_REWIND)
        state["rewind"] = {
            "count": int(previous.get("count") or 0) + 1,
            "from": step.id,
            "error": exc.message,
        }
        # Only the steps the run goes back through see why; the others keep theirs.
        pipeline = self._pipeline_of(run)
        start = pipeline.index_of(policy.rewind_to)
        by_step = state.setdefault("rewind_by_step", {})
        for rewound in pipeline.steps[start : step.index + 1]:
            by_step[rewound.id] = state["rewind"]
        state["restart_from"] = policy.rewind_to
        state["restart_index"] = next(
            i for i, s in enumerate(self._pipeline_of(run).steps) if s.id == policy.rewind_to
        )
        self._emit(
            Event(
                "note",
                run.id,
                step.id,
                message=f"rewinding to {policy.rewind_to} ({counts[step.id]}/{policy.max_rewinds})",
            )
        )
        return state

    def _finish_restart(self, run_id: str, old: Pipeline, new: Pipeline) -> None:
        """Carry out a recorded restart point: compensate, newest first, every live
        attempt of the steps from there on (and of steps the new pipeline dropped), mark
        them superseded, then clear the point. Safe to repeat after a crash."""
        run = self.store.get_run(run_id)
        if "restart_index" not in run.state:
            return
        index = int(run.state["restart_index"])
        keep = {s.id for s in new.steps if s.index < index}
        ws = self._workspace(run)
        skipped = self._no_compensation_ids(run_id)
        attempts = self.store.attempts(run_id)
        affected = sorted({a.step_id for a in attempts if a.step_id not in keep})
        for attempt in reversed(attempts):
            if attempt.step_id in keep or attempt.superseded or attempt.reused_from is not None:
                continue
            if attempt.status in LIVE_ATTEMPT and attempt.id not in skipped:
                self._compensate(run_id, old, ws, self._close_crashed(attempt), "rewind")
        self.store.supersede(run_id, affected)
        self._forget(run_id)
        state = dict(run.state)
        state.pop("restart_from", None)
        state.pop("restart_index", None)
        self.store.update_run(run_id, state=state)

    def _recover_attempts_of(
        self, run_id: str, pipeline: Pipeline, step: Step, ws: RunWorkspace
    ) -> None:
        """Compensate this step's attempts that crashed or were interrupted mid-flight."""
        latest = self._current(run_id).get(step.id)
        if latest is None or latest.status not in LIVE_ATTEMPT or is_done(latest):
            return  # the common case, answered from memory
        # Only the newest attempt can be stale: each earlier one was compensated (or
        # recorded as needing none) before the next began.
        stale = [latest]
        skipped = self._no_compensation_ids(run_id)
        for attempt in reversed(stale):
            if attempt.id in skipped:
                continue
            if attempt.status == StepStatus.RUNNING:
                attempt = self._close_crashed(attempt)
                self._emit(
                    Event(
                        "note",
                        run_id,
                        step.id,
                        message=(
                            f"attempt {attempt.attempt} was left running by a process that "
                            "is gone: compensating it with output null"
                        ),
                    )
                )
            self._compensate(run_id, pipeline, ws, attempt, "recovery")

    def _close_crashed(self, attempt: AttemptRecord) -> AttemptRecord:
        """An attempt left ``running`` by a dead process is closed as failed before it is
        undone: its end is recorded, and the tokens its calls were paid for are summed
        into it, as for any attempt that ends."""
        if attempt.status != StepStatus.RUNNING:
            return attempt
        self.store.finish_attempt(
            attempt.id,
            status=StepStatus.FAILED,
            error={"type": "Crashed", "message": "the process running it died"},
        )
        return self.store.get_attempt(attempt.id)

    # --- compensation and rollback ------------------------------------------------------

    def _compensate(
        self,
        run_id: str,
        pipeline: Pipeline,
        ws: RunWorkspace,
        attempt: AttemptRecord,
        reason: str,
    ) -> bool:
        """Run one attempt's compensation under its retry policy; record every try.

        Returns False when the step has no compensation (recorded as skipped)."""
        run = self.store.get_run(run_id)
        step = self._steps_by_id(run, pipeline).get(attempt.step_id)
        comp = compensations.effective(step) if step else None
        if comp is None or step is None:
            self.store.record_skipped_compensation(run_id, attempt.id, attempt.step_id, reason)
            return False
        comp_id = self.store.start_compensation(run_id, attempt.id, step.id, reason)
        self._emit(
            Event(
                "compensate",
                run_id,
                step.id,
                StepStatus.COMPENSATING,
                attempt.attempt,
                compensations.describe(comp),
            )
        )
        # A git compensation, or a command without expressions, reads no namespace.
        needs_ns = comp.run is not None and (
            bool(comp.env) or expressions.has_expressions(json.dumps(comp.run))
        )
        ci = compensations.CompensationInput(
            run_id=run_id,
            step=step,
            attempt=attempt,
            namespace=self._namespace(run, pipeline, self._current(run_id)) if needs_ns else {},
            workspace=ws,
            base_env=self._base_env(run_id, pipeline),
            log_stem=self._log_stem(run_id, step.id, attempt.attempt, "compensate"),
            cancel=self.cancel,
            force=self.options.force,
            expected_head=self._expected_head(run_id, ws, attempt),
        )
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
                if self.cancel.wait(_backoff(comp.retry, tries)):
                    raise Interrupted() from None
                continue
            faults.point("comp.after_effect")
            self.store.finish_compensation(
                comp_id, attempt.id, status=CompensationStatus.SUCCEEDED, tries=tries
            )
            self._mark_cached(run_id, attempt.id, StepStatus.COMPENSATED)
            faults.point("comp.between")
            self._emit(
                Event("compensate", run_id, step.id, StepStatus.COMPENSATED, attempt.attempt)
            )
            return True
        assert error is not None
        failure = CompensationFailed(step.id, error.message)
        self.store.finish_compensation(
            comp_id,
            attempt.id,
            status=CompensationStatus.FAILED,
            tries=tries,
            error=failure.to_json(),
        )
        self._emit(
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

    def _rollback(self, run_id: str) -> RunResult:
        run = self.store.get_run(run_id)
        if run.status == RunStatus.ROLLED_BACK:
            self._emit(Event("note", run_id, message="already rolled back; nothing to do"))
            return self.result(run_id)
        pipeline = self._pipeline_of(run)
        ws = self._workspace(run)
        halt = run.state.get("on_compensation_failure", pipeline.on_compensation_failure) == "halt"
        self.store.update_run(run_id, status=RunStatus.ROLLING_BACK)
        self._emit(Event("run", run_id, status=RunStatus.ROLLING_BACK))
        failures: list[CompensationFailed] = []
        skipped = self._no_compensation_ids(run_id)
        steps = self._steps_by_id(run, pipeline)
        with self._signals():
            # A fork's copied checkpoints belong to its parent: the parent undoes them.
            todo = [
                a
                for a in reversed(self.store.attempts(run_id))
                if a.status in LIVE_ATTEMPT and a.id not in skipped and a.reused_from is None
            ]
            for position, attempt in enumerate(todo):
                step = steps.get(attempt.step_id)
                if step is not None and step.irreversible and not self.options.force:
                    left = ", ".join(f"{a.step_id}#{a.attempt}" for a in todo[position:])
                    return self._rollback_stopped(
                        run_id,
                        f"stopped before irreversible step {step.id!r}: undo by hand "
                        f"what remains ({left}), then 'agentsaga rollback {run_id} --force' to "
                        "finish",
                    )
                try:
                    done = self._compensate(
                        run_id, pipeline, ws, self._close_crashed(attempt), "rollback"
                    )
                except CompensationFailed as exc:
                    failures.append(exc)
                    if halt:
                        return self._rollback_stopped(
                            run_id,
                            f"{exc.message}; fix the cause and run 'agentsaga rollback "
                            f"{run_id}' again to continue where it stopped (or --force)",
                        )
                    continue
                if not done:
                    self._emit(
                        Event(
                            "compensate",
                            run_id,
                            attempt.step_id,
                            "skipped",
                            attempt.attempt,
                            "no compensation: nothing to undo",
                        )
                    )
            if failures:
                names = ", ".join(f.step_id for f in failures)
                return self._rollback_stopped(
                    run_id,
                    f"could not undo {names}; the rest was undone. Fix them by hand or "
                    f"run 'agentsaga rollback {run_id}' again",
                )
            if isinstance(ws, GitWorkspace):
                ws.expected_head = self._believed_tip(run_id, ws)
            try:
                ws.teardown(run_id, keep_refs=self.options.keep_refs, force=self.options.force)
            except GitError as exc:
                return self._rollback_stopped(
                    run_id,
                    f"every step was undone, but the run branch could not be removed: "
                    f"{exc.message}",
                )
        self.store.update_run(run_id, status=RunStatus.ROLLED_BACK, clear_error=True, finished=True)
        self._emit(Event("run", run_id, status=RunStatus.ROLLED_BACK))
        return self.result(run_id)

    def _believed_tip(self, run_id: str, ws: GitWorkspace) -> str | None:
        """Where the run left its branch, replayed from the records in time order: each
        step commit moves it forward, each `git: reset` (or `git: revert`, which gitops
        sees through) compensation moves it back to the commit that attempt started from."""
        run = self.store.get_run(run_id)
        steps = self._steps_by_id(run)
        attempts = self.store.attempts(run_id)
        by_id = {a.id: a for a in attempts}
        events: list[tuple[str, int, int]] = [(a.started_at, 1, a.id) for a in attempts]
        events += [
            (c.started_at, 0, -c.attempt_id)
            for c in self.store.compensations(run_id)
            if c.status == CompensationStatus.SUCCEEDED
        ]
        tip: str | None = str(ws.ws.base_commit)
        for _, _, key in sorted(events):
            attempt = by_id[abs(key)]
            if key > 0:
                tip = (attempt.output or {}).get("commit") or tip
                continue
            step = steps.get(attempt.step_id)
            comp = compensations.effective(step) if step else None
            if comp is not None and comp.git == "reset" and attempt.snapshot:
                tip = attempt.base_commit or tip
            elif comp is not None and comp.git == "revert" and (attempt.output or {}).get("commit"):
                # gitops sees through its own revert commits to the reverted range's base.
                tip = (attempt.output or {}).get("base") or attempt.base_commit or tip
        return tip

    def _expected_head(self, run_id: str, ws: RunWorkspace, attempt: AttemptRecord) -> str | None:
        """The compare-and-swap value for an attempt's git compensation: where the run left
        the branch. An attempt that crashed after committing but before its checkpoint
        recorded no commit; its own commit (named after the run and step) is accepted."""
        if not isinstance(ws, GitWorkspace) or not ws.exists():
            return None
        believed = self._believed_tip(run_id, ws)
        if attempt.status in (StepStatus.RUNNING, StepStatus.COMPENSATING) or attempt.error:
            from agentsaga import gitops

            tip = gitops.head(ws.ws)
            if tip != believed and gitops.is_step_commit(
                ws.ws, tip, run_id, attempt.step_id, parent=believed
            ):
                return tip
        return believed

    def _rollback_stopped(self, run_id: str, message: str) -> RunResult:
        error = {"type": "RollbackFailed", "message": message}
        self.store.update_run(run_id, status=RunStatus.ROLLBACK_FAILED, error=error, finished=True)
        self._emit(Event("run", run_id, status=RunStatus.ROLLBACK_FAILED, message=message))
        return self.result(run_id)

    # --- views --------------------------------------------------------------------------

    def result(self, run_id: str) -> RunResult:
        run = self.store.get_run(run_id)
        pipeline = self._pipeline_of(run)
        attempts = self.store.attempts(run_id)
        current = current_attempts(attempts)
        counts = collections.Counter(a.step_id for a in attempts if a.reused_from is None)
        views = []
        for step in pipeline.steps:
            count = counts[step.id]
            attempt = current.get(step.id)
            views.append(
                StepView(step.id, attempt.status if attempt else StepStatus.PENDING, count)
            )
        return RunResult(run_id, run.status, views, run.error)

    # --- helpers ------------------------------------------------------------------------

    def _create_run(
        self, pipeline: Pipeline, parent_id: str | None = None, parent_step: str | None = None
    ) -> RunRecord:
        record = RunRecord(
            id=new_run_id(),
            pipeline_name=pipeline.name,
            pipeline_path=pipeline.path,
            pipeline_text=pipeline.text,
            pipeline_hash=pipeline.hash,
            vars=pipeline.vars,
            status=RunStatus.RUNNING,
            parent_run_id=parent_id,
            parent_step=parent_step,
            state=self._initial_state(pipeline),
        )
        self.store.create_run(record)
        return record

    def _initial_state(self, pipeline: Pipeline) -> dict[str, Any]:
        rollback = self.options.rollback_on_failure
        return {
            "rollback_on_failure": pipeline.on_failure == "rollback"
            if rollback is None
            else rollback,
            "on_compensation_failure": pipeline.on_compensation_failure,
            "rewind": dict(namespace.EMPTY_REWIND),
            "budget": {**pipeline.budget, **self.options.budget},
        }

    def _open_or_fail(
        self, run: RunRecord, pipeline: Pipeline, repo_root: Path | None, start_point: str | None
    ) -> None:
        """Open the workspace; if it is refused, the run ends ``failed`` (not ``running``
        for ever) with the reason, and the refusal reaches the user."""
        try:
            self._open_workspace(run, pipeline, repo_root, start_point)
        except AgentsagaError as exc:
            self.store.update_run(
                run.id, status=RunStatus.FAILED, error=exc.to_json(), finished=True
            )
            raise

    def _open_workspace(
        self, run: RunRecord, pipeline: Pipeline, repo_root: Path | None, start_point: str | None
    ) -> None:
        spec = pipeline.workspace
        isolation = spec.get("isolation", self.options.config.get("isolation", "worktree"))
        if isolation != "none" and repo_root is None:
            raise GitUnsafe(
                f"{Path(spec.get('repo', '.')).resolve()} is not inside a git repository (a "
                f"checkout with commits); cd into one, set workspace.repo, or set "
                "workspace.isolation: none to run the commands without git"
            )
        if isolation == "none" or repo_root is None:
            path = Path(spec.get("repo", ".")).resolve() if repo_root is None else repo_root
            ws: RunWorkspace = PlainWorkspace(path)
        else:
            ns = {"run": {"id": run.id, "name": run.pipeline_name}, "vars": run.vars, "env": {}}
            branch = str(
                compensations.render_any(spec.get("branch", "agentsaga/${{ run.id }}"), ns)
            )
            self.store.update_run(
                run.id,
                workspace={
                    "isolation": isolation,
                    "branch": branch,
                    "planned": True,
                    "repo_root": str(repo_root),
                    "path": str(repo_root),
                },
            )
            ws = GitWorkspace.create(
                repo_root,
                run.id,
                branch,
                isolation,
                self.options.allow_dirty,
                start_point=start_point,
            )
        self.store.update_run(run.id, workspace=ws.to_json())

    def _workspace(self, run: RunRecord) -> RunWorkspace:
        if not run.workspace:
            return PlainWorkspace(Path.cwd())
        return workspace_from_json(run.workspace, run.id)

    def _pipeline_of(self, run: RunRecord) -> Pipeline:
        return _load_stored(run.pipeline_text, run.pipeline_path, _vars_key(run.vars))

    def _steps_by_id(self, run: RunRecord, pipeline: Pipeline | None = None) -> dict[str, Step]:
        """Step definitions by id: the run's pipeline, and the older texts a resume with
        --pipeline replaced, so a step since dropped can still be undone. Kept per
        pipeline: a rollback asks once per compensation."""
        key = (run.id, run.pipeline_hash, len(run.state.get("old_pipelines") or []), id(pipeline))
        if self._steps_key != key:
            self._steps_key, self._steps_value = key, self._load_steps_by_id(run, pipeline)
        return self._steps_value

    def _load_steps_by_id(self, run: RunRecord, pipeline: Pipeline | None) -> dict[str, Step]:
        steps: dict[str, Step] = {}
        for older in run.state.get("old_pipelines") or []:
            try:
                loaded = _load_stored(older["text"], older["path"], _vars_key(run.vars))
            except AgentsagaError:
                continue
            steps.update({s.id: s for s in loaded.steps})
        steps.update({s.id: s for s in self._pipeline_of(run).steps})
        if pipeline is not None:
            steps.update({s.id: s for s in pipeline.steps})
        return steps

    def _no_compensation_ids(self, run_id: str) -> set[int]:
        return {
            c.attempt_id
            for c in self.store.compensations(run_id)
            if c.status == CompensationStatus.SKIPPED
        }

    def _current(self, run_id: str) -> dict[str, AttemptRecord]:
        """Each step's current attempt, kept in memory while this process owns the run
        (the lease makes it the only writer): reading every attempt back for every step
        would make a long run quadratic."""
        if self._cache_run != run_id or self._cache is None:
            self._cache = current_attempts(self.store.attempts(run_id))
            self._cache_run = run_id
            self._ns_steps = {k: namespace.step_namespace(a) for k, a in self._cache.items()}
        return self._cache

    def _forget(self, run_id: str) -> None:
        if self._cache_run == run_id:
            self._cache = None

    def _set_current(self, run_id: str, attempt: AttemptRecord) -> None:
        self._current(run_id)[attempt.step_id] = attempt
        self._ns_steps[attempt.step_id] = namespace.step_namespace(attempt)

    def _mark_cached(self, run_id: str, attempt_id: int, status: str) -> None:
        """Keep the in-memory view true after a compensation changed one attempt."""
        if self._cache_run != run_id or self._cache is None:
            return
        for attempt in self._cache.values():
            if attempt.id == attempt_id:
                attempt.status = status
                self._ns_steps[attempt.step_id] = namespace.step_namespace(attempt)

    def _namespace(
        self, run: RunRecord, pipeline: Pipeline, current: dict[str, AttemptRecord]
    ) -> dict[str, Any]:
        if current is self._cache:
            steps = self._ns_steps  # kept up to date attempt by attempt
        else:
            steps = {step_id: namespace.step_namespace(a) for step_id, a in current.items()}
        return namespace.build(run, pipeline, steps)

    def _base_env(self, run_id: str, pipeline: Pipeline) -> dict[str, str]:
        env = dict(os.environ)
        # The store URL may hold a password, and a step has no business with our store.
        env.pop("AGENTSAGA_STORE", None)
        env.update(namespace.pipeline_env(self.store.get_run(run_id), pipeline))
        env["AGENTSAGA_RUN_ID"] = run_id
        return env

    def _log_stem(self, run_id: str, step_id: str, attempt: int, suffix: str = "") -> Path:
        name = f"{step_id}-{attempt}" + (f".{suffix}" if suffix else "")
        return self.home / "logs" / run_id / name

    def _emit(self, event: Event) -> None:
        if self.options.on_event is not None:
            self.options.on_event(event)

    @contextmanager
    def _owning(self, run_id: str) -> Iterator[None]:
        """Hold the run's lease while driving it (see lease.py)."""
        with HeldLease(self.store, run_id, self.owner_id, self.options.lease_ttl_s) as held:
            self._held = held
            try:
                yield
            finally:
                self._held = None

    def _check_lease(self, run_id: str) -> None:
        if self._held is not None:
            self._held.check()

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """First Ctrl-C (or SIGTERM): stop the current command, record, leave a resumable
        run. A second Ctrl-C exits at once; the records written so far stand."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.cancel.is_set():
                os._exit(130)
            self.cancel.set()
            if not process.command_running():
                # Nothing polls the cancel event (an LLM call, git): interrupt it here.
                # Store transactions roll back on it; the attempt stays resumable.
                raise Interrupted()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def _head_after(
    current: dict[str, AttemptRecord], reuse: list[str], parent: RunRecord
) -> str | None:
    """The run branch commit after the last reused step: the newest recorded commit."""
    for step_id in reversed(reuse):
        output = current[step_id].output or {}
        if output.get("commit"):
            return str(output["commit"])
    return (parent.workspace or {}).get("base_commit")


def _names(ids: list[str], shown: int = 8) -> str:
    """``a, b, c`` — or, for a long run, the first few and how many more."""
    if len(ids) <= shown:
        return ", ".join(ids)
    return f"{', '.join(ids[:shown])} and {len(ids) - shown} more ({len(ids)} steps)"


def _vars_key(values: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(v)) for k, v in values.items()))


@functools.lru_cache(maxsize=32)
def _load_stored(text: str, path: str, vars_key: tuple[tuple[str, str], ...]) -> Pipeline:
    """A run's stored pipeline, parsed once per process (it is read at every turn of a
    rollback or a rewind). Stored vars the text does not declare are ignored: a resume
    with a changed pipeline may have dropped one."""
    return load_text(text, path, dict(vars_key), ignore_undeclared=True, checked=True)


def _backoff(retry: RetrySpec, try_no: int) -> float:
    """Exponential backoff with full jitter: spreads retries of many runs apart."""
    ceiling = min(retry.max_backoff_s, retry.backoff_s * (2 ** (try_no - 1)))
    return random.uniform(ceiling / 2, ceiling) if ceiling > 0 else 0.0


def _failure_signature(exc: AgentsagaError) -> str:
    """What makes two failures "the same": the failing tests, else the message."""
    output = getattr(exc, "output", None) or {}
    details = output.get("details") or {}
    failing = details.get("failing")
    if failing:
        return "tests:" + ",".join(sorted(failing))
    text = "".join("#" if ch.isdigit() else ch for ch in exc.message)
    return "message:" + hashlib.sha256(text.encode()).hexdigest()[:16]
