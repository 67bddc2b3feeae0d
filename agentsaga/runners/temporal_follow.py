"""Following a run that another process drives (a Temporal worker), from the store.

The store is the record: every attempt and compensation is written there before and after
it acts. Polling it gives the same events the local engine emits as it goes (a step
running, completed, failed; a compensation), so ``run --temporal`` shows the same live
display as a local run, and needs no worker to answer a query (a Temporal query needs a
live worker: without one it hangs ~29 s, then fails).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentsaga.errors import AgentsagaError
from agentsaga.store import Store


@dataclass
class FollowEvent:
    """The fields of ``engine.Event`` (kept here so following imports no engine)."""

    kind: str
    run_id: str
    step_id: str | None = None
    status: str | None = None
    attempt: int | None = None
    message: str = ""


@dataclass
class Follower:
    """Turns successive reads of a run's records into events, each emitted once."""

    store: Store
    run_id: str
    sink: Callable[[Any], None]
    make_event: Callable[..., Any] = FollowEvent
    _attempts: dict[int, str] = field(default_factory=dict)
    _comps: dict[int, str] = field(default_factory=dict)
    _run_status: str | None = None
    emitted: int = 0
    waiting: bool = False
    #: The gate visit (its attempt id) the run waited at when following began: a decision
    #: sent to it is followed until the run stops at a *new* visit, even when the rewind
    #: and the new visit both happen between two polls (the status reads "waiting" then).
    _primed_gate: int | None = None

    def prime(self) -> None:
        """Take what is recorded now as seen: a resume or a rollback shows only what it
        does."""
        run = self.store.get_run(self.run_id)
        self._run_status = run.status
        self._attempts = {a.id: a.status for a in self.store.attempts(self.run_id)}
        self._comps = {c.id: c.status for c in self.store.compensations(self.run_id)}
        self._primed_gate = self._gate_attempt() if run.status == "waiting" else None

    def _gate_attempt(self) -> int | None:
        from agentsaga import gates

        gate = gates.waiting_gate(self.store, self.run_id)
        return gate.attempt_id if gate is not None else None

    def poll(self) -> str:
        """Emit what changed since the last poll; returns the run's status."""
        run = self.store.get_run(self.run_id)
        if run.status != self._run_status:
            self._run_status = run.status
            # A run that reaches a gate stops there until a person decides: so does following.
            self.waiting = run.status == "waiting"
            # A resumed run going back to running says nothing new: its steps will.
            if run.status != "running":
                message = (run.error or {}).get("message", "") if run.error else ""
                self.emit(self.make_event("run", self.run_id, None, run.status, None, message))
        if run.status == "waiting" and not self.waiting:
            gate = self._gate_attempt()
            self.waiting = gate is not None and gate != self._primed_gate
        attempts = {a.id: a for a in self.store.attempts(self.run_id)}
        for attempt in attempts.values():
            if attempt.reused_from is not None:
                continue
            if self._attempts.get(attempt.id) == attempt.status:
                continue
            seen = self._attempts.get(attempt.id)
            self._attempts[attempt.id] = attempt.status
            if seen is None and attempt.status != "running":
                # Started and ended between two polls: show it ran, then how it ended.
                self._step(attempt, "running", "")
            if attempt.status in ("compensating", "compensated", "compensation_failed"):
                continue  # shown from the compensation records below
            message = (attempt.error or {}).get("message", "") if attempt.error else ""
            self._step(attempt, attempt.status, message)
        for comp in self.store.compensations(self.run_id):
            if self._comps.get(comp.id) == comp.status:
                continue
            seen = self._comps.get(comp.id)
            self._comps[comp.id] = comp.status
            number = attempts[comp.attempt_id].attempt if comp.attempt_id in attempts else None
            status = {
                "running": "compensating",
                "succeeded": "compensated",
                "failed": "compensation_failed",
            }.get(comp.status, comp.status)
            if status == "compensating" or (seen is None and status != "skipped"):
                how = self._describe(run, comp.step_id)
                self.emit(
                    self.make_event(
                        "compensate", self.run_id, comp.step_id, "compensating", number, how
                    )
                )
            if status != "compensating":
                message = (comp.error or {}).get("message", "") if comp.error else ""
                if status == "skipped":
                    continue  # no compensation: nothing happened to show
                self.emit(
                    self.make_event(
                        "compensate", self.run_id, comp.step_id, status, number, message
                    )
                )
        return str(run.status)

    def _describe(self, run: Any, step_id: str) -> str:
        """What the compensation does (``git: reset``), as the local display says."""
        from agentsaga.runtime import load_stored, vars_key
        from agentsaga.saga import plans

        try:
            pipeline = load_stored(run.pipeline_text, run.pipeline_path, vars_key(run.vars))
            step = pipeline.step(step_id)
        except (AgentsagaError, KeyError):
            return ""  # a step a changed pipeline dropped: its name says enough
        comp = plans.effective_compensation(step)
        return plans.describe(comp) if comp is not None else ""

    def emit(self, event: Any) -> None:
        self.emitted += 1
        self.sink(event)

    def note(self, step_id: str | None, message: str) -> None:
        self.emit(self.make_event("note", self.run_id, step_id, None, None, message))

    def _step(self, attempt: Any, status: str, message: str) -> None:
        self.emit(
            self.make_event("step", self.run_id, attempt.step_id, status, attempt.attempt, message)
        )
