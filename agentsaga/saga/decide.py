"""What a run does next: facts in, a decision out. Nothing here reads a clock, a store,
git, the environment or a random source; a jitter value comes in as an argument.

The drive loop of every runner is the same::

    action = next_action(pipeline, view)       # Restart | RunStep | Finish
    # Restart: compensate (plans.restart_targets) and supersede, clear the point
    # RunStep: recover the step's crashed attempt, run one attempt; if it fails:
    decision = after_failure(pipeline, step, view.state, Failure.of(exc), try_no, jitter)
    # Retry: compensate, wait decision.delay_s, try again
    # Rewind: record decision.state with the failure, compensate, ask next_action again
    # Fail: compensate; rollback_after_failure(...) says whether to roll back
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentsaga.errors import StepFailed
from agentsaga.pipeline import Pipeline, RetrySpec, Step
from agentsaga.saga.view import EMPTY_REWIND, RunView
from agentsaga.states import RunStatus

# --- the drive loop --------------------------------------------------------------------


@dataclass(frozen=True)
class Restart:
    """Carry out the recorded restart point: undo, newest first, every live attempt of
    the steps from ``index`` on (and of dropped steps), supersede them, clear the point."""

    index: int


@dataclass(frozen=True)
class RunStep:
    """Run (or re-run) this step: the first of the pipeline that is not done."""

    step: Step


@dataclass(frozen=True)
class Finish:
    status: RunStatus


Action = Restart | RunStep | Finish


def next_action(pipeline: Pipeline, view: RunView, start: int = 0) -> Action:
    """The next thing a run must do. ``start`` is a hint for long runs: every step before
    it is known to be done (the runner's position), so the scan starts there."""
    restart = view.restart_index
    if restart is not None:
        return Restart(restart)
    steps = pipeline.steps
    # By index, not a slice: a slice copies the rest of a long run's steps at each step.
    for index in range(start, len(steps)):
        if not view.done(steps[index].id):
            return RunStep(steps[index])
    return Finish(RunStatus.SUCCEEDED)


# --- a failed attempt ------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """What a decision needs to know about why an attempt failed."""

    message: str
    kind: str = "error"  # StepFailed.kind: test, edit, schema, budget, timeout, error...
    retryable: bool = True
    #: A StepFailed (the step's own failure) rather than another error (a bad expression,
    #: a git refusal): only a step's failure may rewind the run.
    step_failure: bool = True
    failing_tests: tuple[str, ...] = ()

    @classmethod
    def of(cls, exc: Any) -> Failure:
        """From an ``AgentsagaError``."""
        output = getattr(exc, "output", None) or {}
        failing = (output.get("details") or {}).get("failing") or ()
        return cls(
            message=str(getattr(exc, "message", exc)),
            kind=str(getattr(exc, "kind", "error")),
            retryable=bool(getattr(exc, "retryable", False)),
            step_failure=isinstance(exc, StepFailed),
            failing_tests=tuple(str(t) for t in failing),
        )


@dataclass(frozen=True)
class Retry:
    delay_s: float
    note: str


@dataclass(frozen=True)
class Rewind:
    to: str
    #: The run's bookkeeping after the rewind, to record with the failed attempt (in one
    #: transaction), so a crash before the compensations still restarts from ``to``.
    state: dict[str, Any]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fail:
    notes: tuple[str, ...] = ()
    #: Roll the run back whatever its on_failure says (a gate's ``on_reject: rollback``).
    rollback: bool = False


Decision = Retry | Rewind | Fail


def after_failure(
    pipeline: Pipeline,
    step: Step,
    state: Mapping[str, Any],
    failure: Failure,
    try_no: int,
    jitter: float,
) -> Decision:
    """After try ``try_no`` of ``step`` failed: retry (under its retry policy, with a
    delay from ``jitter`` in [0, 1)), rewind (under its on_failure policy), or fail."""
    retry = step.retry
    if failure.retryable and try_no < retry.attempts:
        delay = backoff(retry, try_no, jitter)
        return Retry(delay, f"retrying in {delay:.1f}s ({try_no}/{retry.attempts})")
    return rewind_decision(pipeline, step, state, failure)


def rewind_decision(
    pipeline: Pipeline, step: Step, state: Mapping[str, Any], failure: Failure
) -> Rewind | Fail:
    """Rewind to ``on_failure.rewind_to`` unless the policy does not apply, its
    ``max_rewinds`` is spent, or the failure repeats unchanged (a stuck loop)."""
    policy = step.on_failure
    if policy is None or failure.kind == "budget" or not failure.step_failure:
        return Fail()
    if policy.when not in ("any", failure.kind):
        return Fail((f"no rewind: failure is {failure.kind}, on_failure wants {policy.when}",))
    counts: dict[str, int] = dict(state.get("rewinds") or {})
    signatures: dict[str, str] = dict(state.get("signatures") or {})
    signature = failure_signature(failure)
    if counts.get(step.id, 0) >= policy.max_rewinds:
        return Fail((f"no rewind: max_rewinds ({policy.max_rewinds}) reached",))
    if signatures.get(step.id) == signature:
        return Fail(("no rewind: the same failure repeated unchanged (stuck)",))
    counts[step.id] = counts.get(step.id, 0) + 1
    signatures[step.id] = signature
    start = pipeline.index_of(policy.rewind_to)
    new_state = rewound_state(state, pipeline, start, step, failure.message)
    new_state["rewinds"], new_state["signatures"] = counts, signatures
    note = f"rewinding to {policy.rewind_to} ({counts[step.id]}/{policy.max_rewinds})"
    return Rewind(policy.rewind_to, new_state, (note,))


def rewound_state(
    state: Mapping[str, Any], pipeline: Pipeline, start: int, origin: Step, message: str
) -> dict[str, Any]:
    """The bookkeeping of a run going back to step ``start`` because of ``origin``: the
    restart point, and ``rewind.*`` (count, from, error) for the steps it goes back
    through (only those see why; the others keep theirs)."""
    new_state: dict[str, Any] = json.loads(json.dumps(dict(state)))
    previous: Mapping[str, Any] = new_state.get("rewind") or EMPTY_REWIND
    rewind = {"count": int(previous.get("count") or 0) + 1, "from": origin.id, "error": message}
    new_state["rewind"] = rewind
    by_step = new_state.setdefault("rewind_by_step", {})
    for rewound in pipeline.steps[start : origin.index + 1]:
        by_step[rewound.id] = rewind
    new_state["restart_from"] = pipeline.steps[start].id
    new_state["restart_index"] = start
    return new_state


def backoff(retry: RetrySpec, try_no: int, jitter: float) -> float:
    """Exponential backoff with full jitter (``jitter`` in [0, 1)): spreads the retries
    of many runs apart. Between half the ceiling and the ceiling."""
    ceiling = min(retry.max_backoff_s, retry.backoff_s * (2 ** (try_no - 1)))
    return ceiling / 2 + (ceiling / 2) * jitter if ceiling > 0 else 0.0


def failure_signature(failure: Failure) -> str:
    """What makes two failures "the same": the failing tests, else the message with its
    digits masked (a duration or a line number changing is no progress)."""
    if failure.failing_tests:
        return "tests:" + ",".join(sorted(failure.failing_tests))
    text = "".join("#" if ch.isdigit() else ch for ch in failure.message)
    return "message:" + hashlib.sha256(text.encode()).hexdigest()[:16]


# --- a failed run ----------------------------------------------------------------------


def rollback_after_failure(
    state: Mapping[str, Any], override: bool | None, compensation_failed: bool
) -> bool:
    """Whether a failed run rolls back now: ``--rollback-on-failure`` (``override``), else
    the pipeline's ``on_failure: rollback`` recorded at the start. Never when the failure
    is a compensation that could not run: undoing more would build on a broken state."""
    wanted = bool(state.get("rollback_on_failure")) if override is None else override
    return wanted and not compensation_failed


def rollback_halts(state: Mapping[str, Any], pipeline: Pipeline) -> bool:
    """``on_compensation_failure: halt`` stops a rollback at the first failed
    compensation; ``continue`` undoes the rest and reports the failures at the end."""
    return bool(state.get("on_compensation_failure", pipeline.on_compensation_failure) == "halt")
