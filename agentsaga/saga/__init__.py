"""The saga's decisions, in one pure, deterministic place (docs/design.md,
"Architecture").

Nothing in this package performs I/O: no store, git, clock, random source, environment or
subprocess (tests/test_saga_core.py proves the imports). Facts come in as values, decisions
go out as values. This is what lets a Temporal workflow replay the same decisions on any
host, and what lets a test of a rule run without a repository.

Modules:

* ``view``: the facts — :class:`RunView` (each step's current :class:`AttemptFact`, the
  run's bookkeeping ``state``: rewind counters, failure signatures, a pending restart).
* ``decide``: the drive loop's next action (:func:`next_action` → ``Restart`` /
  ``RunStep`` / ``Finish``), what follows a failed attempt (:func:`after_failure` →
  ``Retry`` with a delay from a jitter passed in / ``Rewind`` / ``Fail``, stuck-loop
  detection included), whether a failed run rolls back, whether a rollback halts.
* ``plans``: what a resume reuses and re-runs (changed pipeline, ``--from``), what a
  fork copies, restart and recovery targets, rollback order (irreversible stops it), where
  the run branch should stand (the compare-and-swap value of a git compensation).

API for a runner (the local one is ``agentsaga/engine.py``; a Temporal workflow does the
same with activities for the effects)::

    view = RunView({step_id: AttemptFact.of(record), ...}, run.state)
    while True:
        action = decide.next_action(pipeline, view, position)
        match action:
            case Finish():   record the run's status; stop
            case Restart():  undo, newest first, plans.restart_targets(...) (undo.py),
                             supersede those steps, clear state.restart_index
            case RunStep(step):
                compensate plans.recovery_target(...) if any (a crashed attempt), then run
                one attempt (attempts.py). On failure ask decide.after_failure(pipeline,
                step, run.state, Failure.of(exc), try_no, jitter) and carry it out:
                record the failed attempt (with Rewind.state, in the same transaction),
                compensate it, then Retry: wait delay_s and try again; Rewind: loop;
                Fail: record the run failed, roll back if decide.rollback_after_failure.
        view = <the view with the new records>

The runner owns the store, the lease, the clock, signals and the process; it records each
transition before acting on it (so a crash leaves a run ``resume`` finishes). The core owns
the meaning: a rule changes here, once, for every runner.
"""

from agentsaga.saga.decide import (
    Action,
    Decision,
    Fail,
    Failure,
    Finish,
    Restart,
    Retry,
    Rewind,
    RunStep,
    after_failure,
    next_action,
)
from agentsaga.saga.plans import PlanItem
from agentsaga.saga.view import AttemptFact, RunView

__all__ = [
    "Action",
    "AttemptFact",
    "Decision",
    "Fail",
    "Failure",
    "Finish",
    "PlanItem",
    "Restart",
    "Retry",
    "Rewind",
    "RunStep",
    "RunView",
    "after_failure",
    "next_action",
]
