"""The Temporal workflow's effects: each activity is one piece of the local runner's work.

An activity opens the store, builds the same :class:`~agentsaga.runtime.Runtime` the local
runner uses, and calls the same functions: ``attempts`` for a step's attempt, ``undo`` for
compensations and rollback, ``saga.decide`` for what a failure means. It returns a small
delta of the run's facts (:func:`fact_json`) for the workflow's view; everything else
(outputs, logs, prompts, replies, tokens) is written to the store, which stays the record.

* ``attempt``: recover the step's crashed attempt if any, run one attempt, and on failure
  decide (with the workflow's jitter), record and compensate it: one try of the local
  runner's retry loop. A worker killed in the middle leaves the attempt ``running``; the
  activity is retried on another worker (its heartbeat stops), which recovers it exactly
  as ``resume`` would. An LLM reply received before the kill is in the call log, unjudged:
  the retried attempt is served from it and does not pay again (llm.py).
* ``restart``: carry out a recorded restart point (a rewind): undo, supersede.
* ``begin`` / ``finish`` / ``fail`` / ``stopped``: the run's record.
* ``rollback``: the whole rollback (undo.rollback). Every compensation is recorded as it
  goes, so an activity retried after a crash continues where the last one stopped.

No activity takes the run's lease in the store: the workflow id is the run id, so Temporal
itself lets one workflow drive a run at a time and runs its activities one after another,
and the CLI sends ``resume`` and ``rollback`` of a Temporal run to Temporal (refused while
its workflow runs). A lease per activity cost ~25 ms a step and protected nothing more.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from agentsaga import attempts as attempts_mod
from agentsaga import gates, undo
from agentsaga.errors import AgentsagaError, CompensationFailed, Interrupted
from agentsaga.runners import temporal_git
from agentsaga.runtime import EngineOptions, load_stored, vars_key
from agentsaga.saga import decide
from agentsaga.saga.view import AttemptFact
from agentsaga.states import RunStatus
from agentsaga.store import AttemptRecord, RunRecord, Store, open_store

#: How often a running activity tells Temporal it is alive (the workflow presumes a
#: worker dead after HEARTBEAT without one: temporal_workflow.py).
BEAT_S = 2.0


def fact_json(record: AttemptRecord) -> dict[str, Any]:
    return asdict(AttemptFact.of(record))


def _current_facts(store: Store, run_id: str) -> list[dict[str, Any]]:
    from agentsaga.runtime import current_attempts

    return [fact_json(a) for a in current_attempts(store.attempts(run_id)).values()]


@contextlib.contextmanager
def _heartbeating(cancel: threading.Event) -> Iterator[None]:
    """Heartbeat from a side thread while the activity's thread works; a cancellation
    delivered through the heartbeat sets ``cancel``, which the step's command polls."""
    stop = threading.Event()
    ctx = contextvars.copy_context()  # activity.heartbeat() reads the activity's context

    def beat() -> None:
        while not stop.wait(BEAT_S):
            try:
                activity.heartbeat()
                if activity.is_cancelled():
                    cancel.set()
            except Exception:  # noqa: BLE001 - a failed heartbeat must not kill the step
                continue

    thread = threading.Thread(target=ctx.run, args=(beat,), daemon=True, name="heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _failure(exc: AgentsagaError) -> ApplicationError:
    """Our error as Temporal's: its type and message reach the workflow, which records
    them on the run. A refusal (a moved branch, a bad expression) is not retried; an
    interrupted attempt (this worker stopping) is, on another worker."""
    retry = exc.retryable or isinstance(exc, Interrupted)
    return ApplicationError(exc.message, type=type(exc).__name__, non_retryable=not retry)


class Activities:
    """The activities of one worker: its store, its config, and the host it runs on."""

    def __init__(
        self,
        store_location: str | None,
        config: dict[str, Any],
        host_id: str,
        home: Path,
    ) -> None:
        self.store_location = store_location
        self.config = config
        self.host_id = host_id
        self.home = home  # the worker's .agentsaga (logs of runs without a repository)

    def all(self) -> list[Any]:
        return [
            self.begin,
            self.attempt,
            self.gate,
            self.record_decision,
            self.restart,
            self.fail,
            self.finish,
            self.stopped,
            self.interrupted,
            self.rollback,
        ]

    # --- plumbing ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _session(
        self, run_id: str, **options: Any
    ) -> Iterator[tuple[temporal_git.TemporalRuntime, RunRecord]]:
        store = open_store(self.store_location)
        cancel = threading.Event()
        notes: list[list[str | None]] = []

        def rt_notes(event: Any) -> None:
            # The store records steps and compensations; a runner's notes (retrying in,
            # rewinding to, reusing) travel back with the activity's result instead.
            if event.kind in ("note", "reuse") and event.message:
                notes.append([event.step_id, event.message])

        try:
            run = store.get_run(run_id)
            submitted = (run.state.get("temporal") or {}).get("config") or {}
            opts = EngineOptions(config={**self.config, **submitted}, **options)
            rt = temporal_git.TemporalRuntime(store, self._home_of(run), opts, cancel, rt_notes)
            rt.host_id, rt.worker_home, rt.notes = self.host_id, self.home, notes
            with _heartbeating(cancel):
                try:
                    yield rt, run
                except AgentsagaError as exc:
                    if isinstance(exc, Interrupted) and activity.is_cancelled():
                        # The run was cancelled (Ctrl-C of its follower): the step was
                        # stopped and recorded; the activity ends cancelled, not failed.
                        raise CancelledError("the run was cancelled") from exc
                    raise _failure(exc) from exc
        finally:
            store.close()

    def _home_of(self, run: RunRecord) -> Path:
        """Where the run's logs go: beside its repository when this host has it."""
        ws = run.workspace or {}
        root = ws.get("repo_root") or (run.state.get("temporal") or {}).get("home_parent")
        if root and Path(root).is_dir():
            return Path(root) / ".agentsaga"
        return self.home

    # --- the run's record -------------------------------------------------------------

    @activity.defn(name="agentsaga.begin", no_thread_cancel_exception=True)
    def begin(self, run_id: str, run_input: dict[str, Any]) -> dict[str, Any]:
        with self._session(run_id) as (rt, run):
            if run_input.get("mode") == "resume":
                rt.store.update_run(run_id, status=RunStatus.RUNNING, clear_error=True)
            # A worktree removed by hand comes back; a moved or deleted branch refuses.
            temporal_git.open_workspace(rt, run, self.host_id)
            run = rt.store.get_run(run_id)
            return {
                "pipeline_text": run.pipeline_text,
                "pipeline_path": run.pipeline_path,
                "vars": run.vars,
                "facts": _current_facts(rt.store, run_id),
                "state": run.state,
                "host_id": temporal_git.holder(run, self.host_id),
                "notes": rt.notes,
            }

    @activity.defn(name="agentsaga.finish", no_thread_cancel_exception=True)
    def finish(self, run_id: str, status: str) -> dict[str, Any]:
        with self._session(run_id) as (rt, _run):
            rt.store.update_run(run_id, status=status, clear_error=True, finished=True)
            return {"status": status}

    @activity.defn(name="agentsaga.fail", no_thread_cancel_exception=True)
    def fail(self, run_id: str, error: dict[str, Any], rollback: bool) -> dict[str, Any]:
        """The run failed; ``rollback``: its failure demands one (a gate's on_reject)."""
        with self._session(run_id) as (rt, run):
            rt.store.update_run(run_id, status=RunStatus.FAILED, error=error, finished=True)
            rollback = rollback or decide.rollback_after_failure(
                run.state, None, error.get("type") == CompensationFailed.__name__
            )
            return {"status": RunStatus.FAILED, "rollback": rollback}

    @activity.defn(name="agentsaga.interrupted", no_thread_cancel_exception=True)
    def interrupted(self, run_id: str) -> dict[str, Any]:
        """The workflow was cancelled: the run is interrupted and resumable."""
        with self._session(run_id) as (rt, _run):
            error = Interrupted().to_json()
            rt.store.update_run(run_id, status=RunStatus.INTERRUPTED, error=error)
        return {"status": RunStatus.INTERRUPTED}

    @activity.defn(name="agentsaga.stopped", no_thread_cancel_exception=True)
    def stopped(self, run_id: str, error: dict[str, Any]) -> dict[str, Any]:
        """An activity failed past its retries: the run ends failed (resumable) with why."""
        with self._session(run_id) as (rt, _run):
            rt.store.update_run(run_id, status=RunStatus.FAILED, error=error, finished=True)
        return {"status": RunStatus.FAILED}

    # --- steps ------------------------------------------------------------------------

    @activity.defn(name="agentsaga.attempt", no_thread_cancel_exception=True)
    def attempt(self, run_id: str, step_id: str, try_no: int, jitter: float) -> dict[str, Any]:
        with self._session(run_id) as (rt, run):
            pipeline = rt.pipeline_of(run)
            step = pipeline.steps[pipeline.index_of(step_id)]
            workspace = temporal_git.open_workspace(rt, run, self.host_id)
            # Opening may have recorded the workspace anew (created here, taken over from
            # a lost host): the step's environment and namespace read the run's record.
            run = rt.store.get_run(run_id)
            try:
                outcome = attempts_mod.try_once(rt, run, pipeline, step, workspace, try_no, jitter)
            except CompensationFailed as exc:
                outcome = attempts_mod.Once(error=exc)
            temporal_git.publish(rt, run_id, workspace)
            decision: dict[str, Any] | None = None
            if isinstance(outcome.decision, decide.Retry):
                decision = {"kind": "retry", "delay_s": outcome.decision.delay_s}
            elif isinstance(outcome.decision, decide.Rewind):
                decision = {"kind": "rewind", "to": outcome.decision.to}
            elif outcome.error is not None:
                decision = {"kind": "fail", "error": outcome.error.to_json()}
            current = rt.current(run_id).get(step_id)
            return {
                "facts": [fact_json(current)] if current is not None else [],
                "state": rt.store.get_run(run_id).state,
                "decision": decision,
                "host_id": temporal_git.holder(run, self.host_id),
                "notes": rt.notes,
            }

    # --- human gates ------------------------------------------------------------------

    @activity.defn(name="agentsaga.gate", no_thread_cancel_exception=True)
    def gate(self, run_id: str, step_id: str) -> dict[str, Any]:
        """A turn at a gate (``gates.turn``, as locally): record the visit and say the run
        waits (with the deadline), or apply the recorded decision or timeout."""
        with self._session(run_id) as (rt, run):
            pipeline = rt.pipeline_of(run)
            step = pipeline.step(step_id)
            workspace = temporal_git.open_workspace(rt, run, self.host_id)
            outcome = gates.turn(rt, run, pipeline, step, workspace, time.time())
            temporal_git.publish(rt, run_id, workspace)
            decision: dict[str, Any] | None = None
            if isinstance(outcome, gates.Waiting):
                waiting = gates.waiting_gate(rt.store, run_id)
                deadline = waiting.deadline_s if waiting is not None else None
                decision = {"kind": "wait", "deadline_s": deadline}
            else:
                if rt.store.get_run(run_id).status == RunStatus.WAITING:
                    rt.store.update_run(run_id, status=RunStatus.RUNNING)
                if outcome is not None:
                    rollback = bool(getattr(outcome, "rollback", False))
                    decision = {"kind": "fail", "error": outcome.to_json(), "rollback": rollback}
            current = rt.current(run_id).get(step_id)
            return {
                "facts": [fact_json(current)] if current is not None else [],
                "state": rt.store.get_run(run_id).state,
                "decision": decision,
                "host_id": temporal_git.holder(run, self.host_id),
                "notes": rt.notes,
            }

    @activity.defn(name="agentsaga.decide", no_thread_cancel_exception=True)
    def record_decision(self, run_id: str, verdict: dict[str, str]) -> dict[str, Any]:
        """Record a person's decision (the workflow's ``decide`` update calls this, then
        wakes): ``gates.approve`` / ``gates.reject``, as the CLI and the web view do."""
        with self._session(run_id) as (rt, _run):
            who, comment = verdict["who"], verdict.get("comment", "")
            if verdict["decision"] == "approve":
                record = gates.approve(rt.store, run_id, who, comment)
            else:
                discard = bool(verdict.get("discard_edits"))
                record = gates.reject(rt.store, run_id, who, comment, discard_edits=discard)
            return {
                "decision": record.decision,
                "decided_by": record.decided_by,
                "decided_at": record.decided_at,
                "comment": record.comment,
            }

    @activity.defn(name="agentsaga.restart", no_thread_cancel_exception=True)
    def restart(self, run_id: str, first: bool) -> dict[str, Any]:
        with self._session(run_id) as (rt, run):
            pipeline = rt.pipeline_of(run)
            old = pipeline
            history = run.state.get("old_pipelines") or []
            if first and history:
                # A resume with a changed pipeline: the first restart undoes attempts
                # under the definitions they ran with.
                old = load_stored(history[-1]["text"], history[-1]["path"], vars_key(run.vars))
            workspace = temporal_git.open_workspace(rt, run, self.host_id)
            try:
                undo.finish_restart(rt, run_id, old, pipeline)
            finally:
                temporal_git.publish(rt, run_id, workspace)
            return {
                "reset": True,
                "facts": _current_facts(rt.store, run_id),
                "state": rt.store.get_run(run_id).state,
                "notes": rt.notes,
            }

    # --- rollback ---------------------------------------------------------------------

    @activity.defn(name="agentsaga.rollback", no_thread_cancel_exception=True)
    def rollback(self, run_id: str, force: bool, keep_refs: bool) -> dict[str, Any]:
        with self._session(run_id, force=force, keep_refs=keep_refs) as (rt, run):
            workspace = temporal_git.open_workspace(rt, run, self.host_id, for_rollback=True)
            try:
                undo.rollback(rt, run_id)
            except AgentsagaError as exc:
                error = {"type": type(exc).__name__, "message": exc.message}
                rt.store.update_run(
                    run_id, status=RunStatus.ROLLBACK_FAILED, error=error, finished=True
                )
            temporal_git.publish(rt, run_id, workspace)
            return {"status": str(rt.store.get_run(run_id).status), "notes": rt.notes}
