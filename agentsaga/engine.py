"""The local runner: drives a run in this process (docs/design.md,
"Architecture").

It is the imperative shell around the pure saga core (``agentsaga.saga``): it builds the
run's view, asks the core for the next action, carries it out through ``attempts.py`` (a
step's effect) and ``undo.py`` (compensations, restarts, rollback), records, and asks
again. It owns the store, the lease, signals and the clock; the core owns the rules.

Every transition is written to the store before the runner acts on it, so a process killed
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
import contextlib
import enum
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agentsaga import attempts as attempts_mod
from agentsaga import checkout, compensations, gates, namespace, process, takeover, undo
from agentsaga.errors import (
    AgentsagaError,
    CompensationFailed,
    GitUnsafe,
    Interrupted,
    UserInputError,
)
from agentsaga.lease import HeldLease
from agentsaga.pipeline import Pipeline, Step, load_text
from agentsaga.runtime import (
    EngineOptions,
    Event,
    RunResult,
    Runtime,
    StepView,
    current_attempts,
)
from agentsaga.saga import decide, plans
from agentsaga.saga.plans import PlanItem
from agentsaga.saga.view import AttemptFact, current_of, is_done
from agentsaga.states import RunStatus, StepStatus
from agentsaga.steps import KINDS
from agentsaga.store import AttemptRecord, RunRecord, Store, new_run_id
from agentsaga.workspace import GitWorkspace, PlainWorkspace, RunWorkspace

__all__ = [
    "Engine",
    "EngineOptions",
    "Event",
    "PlanItem",
    "RunResult",
    "StepView",
    "current_attempts",
    "is_done",
]


class _Completed(enum.Enum):
    COMPLETED = "completed"


#: ``Engine._execute``: the step completed at its first try.
_COMPLETED = _Completed.COMPLETED

#: A run being, or done being, rolled back: resume refuses it, and creates nothing first.
_UNDOING = (RunStatus.ROLLING_BACK, RunStatus.ROLLED_BACK, RunStatus.ROLLBACK_FAILED)


class Engine:
    def __init__(self, store: Store, home: Path, options: EngineOptions | None = None) -> None:
        self.store = store
        self.home = home  # <repo>/.agentsaga: logs and worktrees live here
        self.options = options or EngineOptions()
        self.cancel = threading.Event()
        self.owner_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Resolved at each call: a benchmark may wrap Engine._emit.
        self.rt = Runtime(store, home, self.options, self.cancel, lambda e: self._emit(e))
        self._held: HeldLease | None = None
        self._driving: str | None = None  # the run this process drives (a second Ctrl-C)

    # --- public entry points ------------------------------------------------------------

    def run(self, pipeline: Pipeline, repo_root: Path | None) -> RunResult:
        self._warm_up(pipeline)
        record = self._create_run(pipeline, repo_root=repo_root)
        run_id = record.id
        self.rt.keep_parsed(pipeline)
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
            takeover.take_over(self.rt, run_id)
            self._finish_workspace(run_id)
            run = self.store.get_run(run_id)
            if run.status == RunStatus.WAITING and pipeline is None and from_step is None:
                gate = gates.still_waiting(self.rt, run, time.time())
                if gate is not None:
                    # Resume never skips a gate: it says what the run waits for.
                    self._emit(Event("note", run_id, gate.step_id, message=_waiting(gate)))
                    return self.result(run_id)
            elif run.status == RunStatus.WAITING:
                # --from or a changed pipeline may restart before the gate: a reset.
                gates.check_edits(self.store, run_id, "resume", self.options.discard_edits)
            new, old = self._prepare_resume(run_id, pipeline, from_step, budget)
            self._warm_up(new)
            return self._drive(run_id, new, old)

    def prepare_resume(
        self,
        run_id: str,
        pipeline: Pipeline | None = None,
        from_step: str | None = None,
        budget: dict[str, float] | None = None,
    ) -> None:
        """What a resume records before it drives (another runner then drives it)."""
        with self._owning(run_id):
            self._prepare_resume(run_id, pipeline, from_step, budget)

    def _prepare_resume(
        self,
        run_id: str,
        pipeline: Pipeline | None,
        from_step: str | None,
        budget: dict[str, float] | None,
    ) -> tuple[Pipeline, Pipeline]:
        """Refuse a rolled-back run; apply a budget override; record the restart point a
        changed pipeline or ``--from`` needs, and the changed text. Returns the pipeline
        to drive and the one the attempts ran under."""
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
        # Read once, as facts (store.attempt_facts: no record decoded): a long run has
        # thousands of attempts, and their records (outputs, errors) were most of a
        # resume's memory and of its time to the first step.
        records = self.store.attempt_facts(run_id)
        plan = self.plan_resume(run_id, pipeline, from_step, records)
        reused = [p.step_id for p in plan if p.action == "reuse"]
        if reused:
            self._emit(Event("reuse", run_id, message="reusing " + _names(reused)))
        restart_index = plans.restart_index(records, plan, new)
        if restart_index is not None:
            # Recorded first: the compensations that follow finish after a crash too.
            run.state["restart_from"] = (
                new.steps[restart_index].id if restart_index < len(new.steps) else ""
            )
            run.state["restart_index"] = restart_index
        if from_step is not None:
            # A rewind by hand: the failure that stopped the run at or after --from reaches
            # the re-run steps in ${{ rewind.error }}, as an automatic rewind's does (after
            # a stuck loop, the model sees why); its loop counters start afresh.
            _carry_failure(run, new, new.index_of(from_step), records, self.store)
            run.state["rewinds"], run.state["signatures"] = {}, {}
        self.store.update_run(run_id, state=run.state)
        if pipeline is not None and pipeline.text != run.pipeline_text:
            # The old text is kept: attempts made under it are undone with its
            # definitions (a dropped step still has a compensation).
            history = run.state.setdefault("old_pipelines", [])
            history.append({"path": run.pipeline_path, "text": run.pipeline_text})
            self.store.update_run(run_id, state=run.state)
            self.store.set_pipeline(run_id, pipeline.path, pipeline.text, pipeline.hash)
            self.rt.keep_parsed(pipeline)
        self.store.update_run(run_id, status=RunStatus.RUNNING, clear_error=True)
        # Nothing changed the attempts since they were read: plan_resume seeded the
        # in-memory view with them.
        return new, old

    def rollback(self, run_id: str) -> RunResult:
        with self._owning(run_id):
            takeover.take_over(self.rt, run_id)
            # Refused where a person changed files while the run waited (they are saved
            # either way, by the rollback itself), unless --discard-edits.
            gates.check_edits(self.store, run_id, "rollback", self.options.discard_edits)
            return self._rollback(run_id)

    def fork(
        self,
        parent_id: str,
        from_step: str,
        overrides: dict[str, str] | None = None,
        pipeline: Pipeline | None = None,
        repo_root: Path | None = None,
    ) -> RunResult:
        record, new, reuse = self.new_fork(parent_id, from_step, overrides, pipeline)
        self.store.create_run(record)
        with self._owning(record.id):
            self.open_fork(record, new, reuse, repo_root)
            return self._drive(record.id, new)

    def new_fork(
        self,
        parent_id: str,
        from_step: str,
        overrides: dict[str, str] | None = None,
        pipeline: Pipeline | None = None,
        **state: Any,
    ) -> tuple[RunRecord, Pipeline, list[str]]:
        """A fork's record (not yet stored), its pipeline, and the parent's steps it
        reuses."""
        parent = self.store.get_run(parent_id)
        base_pipeline = pipeline or self._pipeline_of(parent)
        new = self._fork_pipeline(parent, base_pipeline, overrides)
        reuse = [
            p.step_id
            for p in self.plan_fork(parent_id, from_step, overrides, pipeline)
            if p.action == "reuse"
        ]
        return self.new_record(new, parent_id, from_step, **state), new, reuse

    def open_fork(
        self, record: RunRecord, new: Pipeline, reuse: list[str], repo_root: Path | None
    ) -> None:
        """A stored fork's start: the parent's checkpoints copied, its workspace opened
        where the reused steps left the parent's branch."""
        run_id, parent_id = record.id, str(record.parent_run_id)
        parent = self.store.get_run(parent_id)
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

    # --- plans (decided by saga.plans) --------------------------------------------------

    def plan_resume(
        self,
        run_id: str,
        pipeline: Pipeline | None = None,
        from_step: str | None = None,
        attempts: list[AttemptFact] | None = None,
    ) -> list[PlanItem]:
        run = self.store.get_run(run_id)
        target = pipeline or self._pipeline_of(run)
        if attempts is None:
            attempts = self.store.attempt_facts(run_id)
        # Seeded once: the namespace and the facts below come from the runtime's kept
        # view instead of being built again for each of a long run's steps.
        self.rt.seed_facts(run_id, current_of(attempts))
        ns = self._namespace(run, target, self.rt.current(run_id))
        return plans.plan_resume(
            target,
            self.rt.view(run).current,
            from_step,
            changed=pipeline is not None,
            fingerprint=lambda step: namespace.fingerprint(step, target, ns, run),
        )

    def plan_rollback(self, run_id: str) -> list[PlanItem]:
        run = self.store.get_run(run_id)
        order = plans.rollback_order(
            [AttemptFact.of(a) for a in self.store.attempts(run_id)],
            self.rt.no_compensation_ids(run_id),
            self.rt.steps_by_id(run),
            self.options.force,
        )
        items = [PlanItem(i.attempt.step_id, i.action, i.reason, i.attempt.attempt) for i in order]
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
        current = current_attempts(self.store.attempts(parent_id))
        probe = RunRecord(**{**parent.__dict__, "vars": new.vars})
        ns = self._namespace(probe, new, current)
        return plans.plan_fork(
            new,
            {k: AttemptFact.of(a) for k, a in current.items()},
            from_step,
            fingerprint=lambda step: namespace.fingerprint(step, new, ns, probe),
        )

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
        ws = self.rt.workspace(run)
        if isinstance(ws, GitWorkspace):
            # A worktree removed by hand comes back; a moved or deleted branch refuses.
            ws.reopen()
        # The first restart compensates under the definitions the attempts ran with.
        undo_with = old or pipeline
        try:
            with self._signals():
                position, fresh = 0, True
                while True:
                    self._check_lease(run_id)
                    if not fresh:
                        run = self.store.get_run(run_id)
                    action = decide.next_action(pipeline, self.rt.view(run), position)
                    if isinstance(action, decide.Finish):
                        break
                    if isinstance(action, decide.Restart):
                        undo.finish_restart(self.rt, run_id, undo_with, pipeline)
                        undo_with, position = pipeline, min(action.index, len(pipeline.steps))
                        fresh = False
                        continue
                    position = action.step.index
                    error = self._execute(run, pipeline, action.step, ws)
                    # A step that completed wrote its attempt only: the run's record (its
                    # state, its workspace) is as read, and the lease keeps other writers
                    # out. Anything else (a retry, a rewind, a gate) is read back.
                    fresh = error is _COMPLETED
                    if error is _COMPLETED:
                        continue
                    if isinstance(error, gates.Waiting):
                        # Stopped at a gate; the lease goes.
                        return self.result(run_id, pipeline)
                    if error is not None:
                        return self._fail(run_id, error, pipeline)
        except CompensationFailed as exc:
            # A failed attempt could not be undone: the run stops here, failed and
            # resumable; resume retries the compensation before the step runs again.
            return self._fail(run_id, exc, pipeline)
        except Interrupted as exc:
            self.store.update_run(run_id, status=RunStatus.INTERRUPTED, error=exc.to_json())
            self._emit(Event("run", run_id, status=RunStatus.INTERRUPTED, message=exc.message))
            exc.run_id = run_id
            raise
        self.store.update_run(run_id, status=RunStatus.SUCCEEDED, clear_error=True, finished=True)
        self._emit(Event("run", run_id, status=RunStatus.SUCCEEDED))
        return self.result(run_id, pipeline)

    def _fail(
        self, run_id: str, error: AgentsagaError, pipeline: Pipeline | None = None
    ) -> RunResult:
        self.store.update_run(run_id, status=RunStatus.FAILED, error=error.to_json(), finished=True)
        self._emit(Event("run", run_id, status=RunStatus.FAILED, message=error.message))
        run = self.store.get_run(run_id)
        if getattr(error, "rollback", False) or decide.rollback_after_failure(
            run.state, self.options.rollback_on_failure, isinstance(error, CompensationFailed)
        ):
            self._emit(Event("note", run_id, message="rolling back (rollback on failure)"))
            return self._rollback(run_id)
        return self.result(run_id, pipeline)

    def _execute(
        self, run: RunRecord, pipeline: Pipeline, step: Step, ws: RunWorkspace
    ) -> AgentsagaError | gates.Waiting | _Completed | None:
        """Run ``step`` until it completes (``_COMPLETED``: the first try did, and nothing
        but its attempt was written), rewinds the run or passes a gate (None: the drive
        loop reads the run again), fails (the error) or, for a gate, waits for a
        decision."""
        run_id = run.id
        if step.kind == "approve":
            return gates.turn(self.rt, run, pipeline, step, ws, time.time())
        try_no = 0
        while True:
            try_no += 1
            if try_no > 1:
                run = self.store.get_run(run_id)
            once = attempts_mod.try_once(self.rt, run, pipeline, step, ws, try_no, random.random())
            if isinstance(once.decision, decide.Retry):
                if self.cancel.wait(once.decision.delay_s):
                    raise Interrupted() from None
                continue
            if isinstance(once.decision, decide.Rewind):
                return None
            if once.error is None and try_no == 1:
                return _COMPLETED
            return once.error

    def _rollback(self, run_id: str) -> RunResult:
        with self._signals():
            undo.rollback(self.rt, run_id)
        return self.result(run_id)

    # --- views --------------------------------------------------------------------------

    def result(self, run_id: str, pipeline: Pipeline | None = None) -> RunResult:
        """The run's outcome per step. ``pipeline``: the one just driven, when the caller
        has it (parsing the stored text again cost 0.6 s at the end of 5,000 steps)."""
        run = self.store.get_run(run_id)
        if pipeline is None or pipeline.hash != run.pipeline_hash:
            pipeline = self._pipeline_of(run)
        # A page of attempts at a time, each step's status and count kept: a long run's
        # records all at once were the peak of its memory.
        statuses: dict[str, str] = {}
        counts: collections.Counter[str] = collections.Counter()
        for a in self.store.iter_attempts(run_id):
            if a.reused_from is None:
                counts[a.step_id] += 1
            if not a.superseded:
                statuses[a.step_id] = sys.intern(str(a.status))
        views = [
            StepView(step.id, statuses.get(step.id, StepStatus.PENDING), counts[step.id])
            for step in pipeline.steps
        ]
        result = RunResult(run_id, run.status, views, run.error)
        if run.status == RunStatus.WAITING:
            gate = gates.waiting_gate(self.store, run_id)
            result.gate = gate.to_json() if gate is not None else None
        return result

    # --- helpers ------------------------------------------------------------------------

    def _create_run(
        self,
        pipeline: Pipeline,
        parent_id: str | None = None,
        parent_step: str | None = None,
        repo_root: Path | None = None,
    ) -> RunRecord:
        record = self.new_record(pipeline, parent_id, parent_step)
        # A run meant for git records so in its first write: killed before its workspace
        # exists, it is resumed into a new one, never into the user's own checkout.
        record.workspace = self._planned(record, pipeline, repo_root, None)
        self.store.create_run(record)
        return record

    def _planned(
        self, run: RunRecord, pipeline: Pipeline, repo_root: Path | None, start: str | None
    ) -> dict[str, Any] | None:
        spec = pipeline.workspace
        isolation = spec.get("isolation", self.options.config.get("isolation", "worktree"))
        if isolation == "none" or repo_root is None:
            return None
        return {
            "isolation": isolation,
            "branch": branch_name(run, pipeline),
            "planned": True,
            "repo_root": str(repo_root),
            "path": str(repo_root),
            "start_point": start,
        }

    def _finish_workspace(self, run_id: str) -> None:
        """A run killed while its workspace was being created: finish creating it (every
        step of gitops.create_workspace can be repeated) before anything runs."""
        run = self.store.get_run(run_id)
        planned = run.workspace or {}
        if not planned.get("planned") or run.status in _UNDOING:
            # A rolled-back run is refused next: creating its workspace first would leave
            # a branch and a worktree that no rollback removes any more.
            return
        self._emit(
            Event(
                "note",
                run_id,
                message="the run was stopped while its workspace was being created; "
                "finishing it first",
            )
        )
        pipeline = self._pipeline_of(run)
        root = Path(planned["repo_root"])
        self._open_or_fail(run, pipeline, root, start_point=planned.get("start_point"))

    def new_record(
        self,
        pipeline: Pipeline,
        parent_id: str | None = None,
        parent_step: str | None = None,
        **state: Any,
    ) -> RunRecord:
        """A new run's record, not yet stored; ``state``: extra bookkeeping (where a
        Temporal run was submitted)."""
        return RunRecord(
            id=new_run_id(),
            pipeline_name=pipeline.name,
            pipeline_path=pipeline.path,
            pipeline_text=pipeline.text,
            pipeline_hash=pipeline.hash,
            vars=pipeline.vars,
            status=RunStatus.RUNNING,
            parent_run_id=parent_id,
            parent_step=parent_step,
            state={**self._initial_state(pipeline), **state},
        )

    def open_workspace(self, run: RunRecord, pipeline: Pipeline, repo_root: Path | None) -> None:
        """Create a stored run's workspace (the run fails if it is refused)."""
        self._open_or_fail(run, pipeline, repo_root, start_point=None)

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
            branch = branch_name(run, pipeline)
            self.store.update_run(
                run.id, workspace=self._planned(run, pipeline, repo_root, start_point)
            )
            start, found = start_point, {}
            if isolation == "worktree" and start_point is None:
                # Uncommitted changes in the checkout: said, and started from as asked.
                start_from = self.options.start_from or spec.get("start")
                start, found["start"], note = checkout.start_point(repo_root, run.id, start_from)
                if note:
                    self._emit(Event("note", run.id, message=note))
            ws = GitWorkspace.create(
                repo_root,
                run.id,
                branch,
                isolation,
                self.options.allow_dirty,
                start_point=start,
                pool=bool(spec.get("pool", self.options.config.get("pool", True))),
            )
        data = ws.to_json()
        data["python"] = _python_record(repo_root or ws.path, ws.path)
        self.store.update_run(run.id, workspace=data)
        if isolation == "worktree" and repo_root is not None:
            data["setup"] = {**found, **self._furnish(run.id, ws.path, repo_root, spec, data)}
            self.store.update_run(run.id, workspace=data)

    def _furnish(
        self,
        run_id: str,
        worktree: Path,
        repo_root: Path,
        spec: dict[str, Any],
        data: dict[str, Any],
    ) -> dict[str, Any]:
        """Submodules, workspace.include and workspace.setup in a new worktree."""
        from agentsaga import pyenv

        env = dict(os.environ)
        env.update(pyenv.step_env(data.get("python"), env))
        log_stem = self.rt.log_stem(run_id, "workspace-setup", 1)

        def run(command: str | list[str], cwd: Path) -> tuple[int | None, str]:
            result = process.run_command(command, cwd=cwd, env=env, log_stem=log_stem)
            return result.exit_code, str(result.stdout_path.with_suffix(""))

        record, notes = checkout.furnish(worktree, repo_root, spec, run)
        for note in notes:
            self._emit(Event("note", run_id, message=note))
        return record

    def _warm_up(self, pipeline: Pipeline) -> None:
        """Import the SDKs the pipeline's model steps use in the background (see
        ``providers.warm_up``)."""
        names = model_providers(pipeline)
        if not names:
            return  # no model step: not even the providers package is needed
        from agentsaga import providers

        providers.warm_up(names, self.options.config)

    def _pipeline_of(self, run: RunRecord) -> Pipeline:
        return self.rt.pipeline_of(run)

    def _namespace(
        self, run: RunRecord, pipeline: Pipeline, current: Mapping[str, AttemptRecord]
    ) -> dict[str, Any]:
        return self.rt.namespace(run, pipeline, current)

    def _emit(self, event: Event) -> None:
        if self.options.on_event is not None:
            self.options.on_event(event)

    @contextmanager
    def _owning(self, run_id: str) -> Iterator[None]:
        """Hold the run's lease while driving it (see lease.py)."""
        with HeldLease(self.store, run_id, self.owner_id, self.options.lease_ttl_s) as held:
            self._held, self._driving = held, run_id
            try:
                yield
            finally:
                self._held, self._driving = None, None

    def _exit_now(self) -> None:
        """A second Ctrl-C: leave at once, and say so. The run is marked interrupted when
        the store takes it at once (inside a transaction of our own it cannot: the run is
        then found running with a dead owner, which resume recovers all the same). The
        one line on stderr is the runner's: the process ends here, past any renderer."""
        process.kill_running()
        run_id = self._driving
        message = "interrupted again: exiting now"
        if run_id is not None:
            with contextlib.suppress(Exception):
                self.store.update_run(
                    run_id, status=RunStatus.INTERRUPTED, error=Interrupted().to_json()
                )
            with contextlib.suppress(Exception):
                # The facts in memory, not the records (each read back from the store).
                for attempt in self.rt.view(self.store.get_run(run_id)).current.values():
                    if attempt.status == StepStatus.RUNNING:
                        self.store.finish_attempt(
                            attempt.id, status=StepStatus.INTERRUPTED, error=Interrupted().to_json()
                        )
            message += f"; the run stays resumable: agentsaga resume {run_id}"
        with contextlib.suppress(OSError):
            os.write(2, f"\nerror: {message}\n".encode())
        os._exit(130)

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
                self._exit_now()
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


def _python_record(repo_root: Path, path: Path) -> dict[str, Any]:
    """The user's venv, and (in a worktree) the import roots redirected to it: asked of the
    interpreter only when the run works somewhere other than the checkout."""
    from agentsaga import pyenv

    if path.resolve() != repo_root.resolve():
        return pyenv.detect(repo_root, path, dict(os.environ))
    source, venv = pyenv.find_venv(repo_root, dict(os.environ))
    return {"venv": str(venv) if venv else None, "venv_from": source or "none (python from PATH)"}


def model_providers(pipeline: Pipeline) -> set[str]:
    """The providers the pipeline's model steps name (or default to): a name written as
    an expression is known only when the step runs, and is left out."""
    names = set()
    for step in pipeline.steps:
        if "provider" not in KINDS[step.kind].fields:
            continue
        name = step.fields.get("provider") or pipeline.defaults.get("provider") or "scripted"
        if isinstance(name, str) and "${{" not in name:
            names.add(name)
    return names


def branch_name(run: RunRecord, pipeline: Pipeline) -> str:
    """The run branch: ``workspace.branch`` rendered (default ``agentsaga/<run id>``)."""
    ns = {"run": {"id": run.id, "name": run.pipeline_name}, "vars": run.vars, "env": {}}
    spec = pipeline.workspace.get("branch", "agentsaga/${{ run.id }}")
    return str(compensations.render_any(spec, ns))


def _waiting(gate: gates.Gate) -> str:
    data = gate.to_json()
    return (
        f"waiting for a decision at gate {gate.step_id}: {gate.message}\n"
        f"approve: {data['approve']}\nreject:  {data['reject']}"
    )


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


def _carry_failure(
    run: RunRecord, pipeline: Pipeline, start: int, facts: list[AttemptFact], store: Store
) -> None:
    """``resume --from``: set ``rewind.*`` for the steps from ``start`` to the step whose
    failure stopped the run (its current attempt's error); empty when none did."""
    current = current_of(facts)
    failed = [
        step
        for step in pipeline.steps[start:]
        if (a := current.get(step.id)) is not None and a.failed and not is_done(a)
    ]
    if not failed:
        run.state["rewind"] = dict(namespace.EMPTY_REWIND)
        run.state["rewind_by_step"] = {}
        return
    origin = failed[-1]
    error = store.get_attempt(current[origin.id].id).error
    message = str((error or {}).get("message", ""))
    state = decide.rewound_state(run.state, pipeline, start, origin, message)
    run.state["rewind"], run.state["rewind_by_step"] = state["rewind"], state["rewind_by_step"]
