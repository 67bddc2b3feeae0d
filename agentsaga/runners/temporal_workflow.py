"""The one generic Temporal workflow that drives any pipeline: the saga core in a workflow.

The workflow is the local runner's drive loop with its effects moved into activities::

    view = begin()                                  # activity: the run's facts
    while (action := decide.next_action(pipeline, view, position)) is not Finish:
        Restart  -> restart()                       # activity: undo, supersede
        RunStep  -> attempt(step, try_no, jitter)   # activity: one attempt, recorded;
                    Retry  -> workflow.sleep(delay)   a failure's decision comes back
                    Rewind -> loop (the state holds the restart point)
                    Fail   -> fail()                # activity: record, maybe roll back
    finish()

The decisions are ``agentsaga.saga.decide``'s, the same functions the local runner calls:
no rule is written twice. What is not deterministic is not read here: the run id and the
pipeline text were fixed at submission (the workflow input and the store), the jitter of a
retry's backoff comes from ``workflow.random()``, waiting is a durable timer
(``workflow.sleep``), and everything that touches the store, git, the environment or an
LLM runs in an activity. The pipeline is data (its text in the store), so editing a YAML
file never breaks the replay of a running workflow.

The history carries small values only: attempt facts (ids, statuses, commits), the run's
bookkeeping, short messages. Outputs, prompts and replies stay in the store.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutType
from temporalio.exceptions import CancelledError as TemporalCancelled
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from agentsaga.pipeline import Pipeline, load_text
    from agentsaga.runners.temporal_io import WORKFLOW_NAME, host_queue
    from agentsaga.saga import decide
    from agentsaga.saga.view import AttemptFact, RunView

#: Infrastructure failures (a worker killed, a host lost) are retried by Temporal; an
#: activity that fails this often is a bug or a broken store, and fails the run.
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=6,
)
#: A worker that stops heartbeating for this long is presumed dead: its activity is
#: given to another worker (which recovers the crashed attempt, as ``resume`` would).
HEARTBEAT = timedelta(seconds=10)
#: A history past this many events is carried on in a new run of the workflow (Temporal
#: warns from ~10,000 events and stops a workflow at ~51,200): ~1,300 steps each.
HISTORY_EVENTS = 8_000
#: No activity is expected to outlive a day (a step's own ``timeout:`` is enforced inside).
START_TO_CLOSE = timedelta(hours=24)


def _history_full(limit: int) -> bool:
    info = workflow.info()
    return info.get_current_history_length() > limit or info.is_continue_as_new_suggested()


def _not_picked_up(exc: ActivityError) -> bool:
    cause = exc.cause
    return isinstance(cause, ActivityTimeout) and cause.type == TimeoutType.SCHEDULE_TO_START


def apply(view: RunView, delta: dict[str, Any]) -> RunView:
    """The view after an activity: the facts it changed, and the run's new bookkeeping."""
    current = dict(view.current)
    if delta.get("reset"):
        current = {}
    for raw in delta.get("facts") or []:
        fact = AttemptFact(**raw)
        if fact.superseded:
            if current.get(fact.step_id, fact).id == fact.id:
                current.pop(fact.step_id, None)
            continue
        current[fact.step_id] = fact
    state = delta.get("state")
    return RunView(current, view.state if state is None else state)


@workflow.defn(name=WORKFLOW_NAME)
class SagaWorkflow:
    def __init__(self) -> None:
        self.pipeline: Pipeline | None = None
        self.input: dict[str, Any] = {}
        self.notes: list[Any] = []
        self.woken = False

    async def _act(self, name: str, *args: Any, host: bool = False) -> Any:
        """One activity. ``host``: it needs the run's worktree, so it runs on the worker of
        the host that holds it (``workspace.remote``), or anywhere on a single host."""
        queue = self.input["task_queue"]
        schedule_to_start = None
        if host and self.host_id:
            queue = host_queue(queue, self.host_id)
            # A host whose worker is gone leaves its queue unpolled: after this long the
            # step moves to any host, which continues from the pushed state.
            schedule_to_start = timedelta(seconds=float(self.input.get("host_timeout_s", 30)))
        try:
            return await self._execute(name, args, queue, schedule_to_start)
        except ActivityError as exc:
            if schedule_to_start is None or not _not_picked_up(exc):
                raise
        # Nothing polled the holder's queue: that host is lost. Any worker takes the
        # worktree over from the pushed state (temporal_git.open_workspace).
        workflow.logger.warning("host %s lost; %s moves to any worker", self.host_id, name)
        return await self._execute(name, args, self.input["task_queue"], None)

    async def _execute(
        self, name: str, args: tuple[Any, ...], queue: str, schedule_to_start: timedelta | None
    ) -> Any:
        result = await workflow.execute_activity(
            name,
            args=[self.input["run_id"], *args],
            task_queue=queue,
            start_to_close_timeout=START_TO_CLOSE,
            schedule_to_start_timeout=schedule_to_start,
            heartbeat_timeout=HEARTBEAT,
            retry_policy=ACTIVITY_RETRY,
            # A cancelled run waits for the step to stop and be recorded.
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        if isinstance(result, dict):
            self.notes.extend(result.get("notes") or [])
        return result

    @workflow.query(name="notes")
    def notes_since(self, since: int) -> list[Any]:
        """The runner's notes (retrying in, rewinding to) from number ``since`` on, for a
        client following the run; numbered across continue-as-new."""
        return self.notes[max(0, since - int(self.input.get("notes_before") or 0)) :]

    @property
    def host_id(self) -> str | None:
        return self.input.get("host_id")

    @workflow.run
    async def run(self, run_input: dict[str, Any]) -> dict[str, Any]:
        self.input = dict(run_input)
        try:
            if run_input["mode"] == "rollback":
                return await self._rollback()
            return await self._drive()
        except asyncio.CancelledError:
            return await self._interrupted()
        except ActivityError as exc:
            if isinstance(exc.cause, TemporalCancelled):
                return await self._interrupted()
            # An activity failed for good: a refusal (a moved branch), or past its retries
            # (a bug, a broken store). The run stays resumable; its record says why.
            cause = exc.cause or exc
            error: dict[str, Any]
            if isinstance(cause, ApplicationError) and cause.type:
                error = {"type": cause.type, "message": cause.message}
            else:
                message = f"{type(cause).__name__}: {cause}"
                error = {"type": "InternalError", "message": message, "internal": True}
            failed: dict[str, Any] = await self._act("agentsaga.stopped", error)
            return failed

    async def _interrupted(self) -> dict[str, Any]:
        """Ctrl-C of the following command (or `temporal workflow cancel`): the step in
        flight was stopped and recorded (its activity waited for that); the run ends
        interrupted and resumable, as a local Ctrl-C leaves it."""
        stopped: dict[str, Any] = await self._act("agentsaga.interrupted")
        return stopped

    async def _begin(self) -> RunView:
        begun = await self._act("agentsaga.begin", self.input, host=True)
        self.input["host_id"] = begun.get("host_id")
        self.pipeline = load_text(
            begun["pipeline_text"],
            begun["pipeline_path"],
            {k: str(v) for k, v in begun["vars"].items()},
            ignore_undeclared=True,
            checked=True,
        )
        return apply(RunView({}, {}), begun)

    async def _drive(self) -> dict[str, Any]:
        view = await self._begin()
        assert self.pipeline is not None
        pipeline, position, restarted = self.pipeline, 0, False
        while True:
            action = decide.next_action(pipeline, view, position)
            if isinstance(action, decide.Finish):
                done: dict[str, Any] = await self._act("agentsaga.finish", str(action.status))
                return done
            if isinstance(action, decide.Restart):
                first = not restarted and bool(self.input.get("changed_pipeline"))
                view = apply(view, await self._act("agentsaga.restart", first, host=True))
                restarted, position = True, min(action.index, len(pipeline.steps))
                continue
            if _history_full(int(self.input.get("history_events") or HISTORY_EVENTS)):
                # A long run: start afresh from the store's facts (begin reads them).
                workflow.continue_as_new(
                    {
                        **self.input,
                        "mode": "continue",
                        "notes_before": int(self.input.get("notes_before") or 0) + len(self.notes),
                        "changed_pipeline": self.input.get("changed_pipeline") and not restarted,
                    }
                )
            step = action.step
            if step.kind == "approve":
                view, failure = await self._gate(view, step.id)
            else:
                view, failure = await self._attempts(view, step.id)
            if failure is None:
                if view.done(step.id):
                    position = step.index + 1
                continue  # completed, skipped, or rewound (the state holds the restart)
            result: dict[str, Any] = await self._act(
                "agentsaga.fail",
                failure.get("error") or {},
                bool(failure.get("rollback")),
                host=True,
            )
            if result.get("rollback"):
                return await self._rollback()
            return result

    def _applied(self, view: RunView, outcome: dict[str, Any]) -> RunView:
        self.input["host_id"] = outcome.get("host_id")
        return apply(view, outcome)

    async def _attempts(self, view: RunView, step_id: str) -> tuple[RunView, Any]:
        """A step's tries: each an activity; a retry's wait a durable timer. Returns the
        failure that ends the run, or None (completed, skipped, or rewound)."""
        try_no = 1
        while True:
            jitter = workflow.random().random()
            outcome = await self._act("agentsaga.attempt", step_id, try_no, jitter, host=True)
            view = self._applied(view, outcome)
            decision = outcome.get("decision")
            if decision is None or decision["kind"] == "rewind":
                return view, None
            if decision["kind"] != "retry":
                return view, decision
            await workflow.sleep(timedelta(seconds=float(decision["delay_s"])))
            try_no += 1

    async def _gate(self, view: RunView, step_id: str) -> tuple[RunView, Any]:
        """A human gate: its turns are activities (gates.turn); between them the workflow
        waits for the ``decide`` update (approve/reject record the decision, then wake it)
        or for the gate's deadline, whichever comes first."""
        while True:
            outcome = await self._act("agentsaga.gate", step_id, host=True)
            view = self._applied(view, outcome)
            decision = outcome.get("decision")
            if decision is None or decision["kind"] != "wait":
                return view, decision
            timeout = None
            if decision.get("deadline_s") is not None:
                remaining = float(decision["deadline_s"]) - workflow.now().timestamp()
                if remaining > 0:  # past it, on_timeout is wait: only a decision moves on
                    timeout = timedelta(seconds=remaining)
            self.woken = False
            try:
                await workflow.wait_condition(lambda: self.woken, timeout=timeout)
            except TimeoutError:
                pass  # the next turn applies on_timeout

    @workflow.update(name="decide")
    async def decide_gate(self, verdict: dict[str, str]) -> dict[str, Any]:
        """``agentsaga approve|reject`` of a run waiting here: record the decision (an
        activity: the store's unique visit key lets one of two deciders win), then wake."""
        record: dict[str, Any] = await workflow.execute_activity(
            "agentsaga.decide",
            args=[self.input["run_id"], verdict],
            task_queue=self.input["task_queue"],
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
        self.woken = True
        return record

    async def _rollback(self) -> dict[str, Any]:
        """One activity: undo.rollback records each compensation as it goes, so a retry
        after a lost worker continues where the last one stopped."""
        result: dict[str, Any] = await self._act(
            "agentsaga.rollback",
            bool(self.input.get("force")),
            bool(self.input.get("keep_refs")),
            host=True,
        )
        return result
