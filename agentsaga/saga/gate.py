"""The rules of a human gate (``kind: approve``): pure, like the rest of the core.

A run that reaches a gate records an attempt of it in status ``waiting`` (its *visit*:
a rewind through the gate makes a new one) and stops, status ``waiting``, holding no
lease. A decision is recorded against that attempt — one per visit, the store's unique
key makes two deciders race to one winner — and the next process to drive the run
applies it: ``approve`` passes the gate; ``reject`` rewinds to ``on_reject.rewind_to``
with the comment as ``rewind.error`` (``rewind.from`` is the gate), or rolls the run back
(``on_reject: rollback``), or fails it past ``max_rejects``.

A timeout is a fact compared with a clock the runner passes in: when a process drives the
run after the deadline and no decision was recorded, ``on_timeout`` applies — ``wait``
(the default: nothing happens), ``reject`` (as a rejection by ``timeout``), ``rollback``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentsaga.pipeline import Pipeline, Step
from agentsaga.saga.decide import Fail, Rewind, rewound_state

APPROVED, REJECTED, TIMED_OUT = "approved", "rejected", "timed_out"
DECISIONS = (APPROVED, REJECTED, TIMED_OUT)


@dataclass(frozen=True)
class Verdict:
    """A recorded decision on one visit of a gate."""

    decision: str  # approved | rejected | timed_out
    by: str
    comment: str = ""
    at: str = ""


@dataclass(frozen=True)
class Arrive:
    """Record the visit (an attempt ``waiting``), then wait."""


@dataclass(frozen=True)
class Wait:
    """No decision yet: the run stops, status ``waiting``."""

    deadline_s: float | None


@dataclass(frozen=True)
class TimedOut:
    """The deadline passed with no decision and ``on_timeout`` acts: record a
    ``timed_out`` verdict (it may lose the race to a person's decision), then ask again."""

    policy: str


@dataclass(frozen=True)
class Pass:
    """The gate is approved: its attempt completes with this output."""

    output: dict[str, Any]


GateAction = Arrive | Wait | TimedOut | Pass | Rewind | Fail


def policy(step: Step) -> dict[str, Any]:
    """The gate's fields with their defaults."""
    fields = step.fields
    on_reject = fields.get("on_reject")
    return {
        "timeout_s": step.timeout_s,
        "on_timeout": fields.get("on_timeout") or "wait",
        "on_reject": on_reject if on_reject is not None else {},
    }


def deadline(step: Step, arrived_at_s: float | None) -> float | None:
    timeout = policy(step)["timeout_s"]
    if arrived_at_s is None or timeout is None:
        return None
    return arrived_at_s + float(timeout)


def at_gate(
    pipeline: Pipeline,
    step: Step,
    state: Mapping[str, Any],
    arrived_at_s: float | None,
    verdict: Verdict | None,
    now_s: float | None,
) -> GateAction:
    """What a gate does, given its current visit (``arrived_at_s``: None when the run has
    not reached it yet), the verdict recorded on that visit, and the time now (None: the
    visit was recorded by this very look, which waits whatever the timeout)."""
    if arrived_at_s is None:
        return Arrive()
    rules = policy(step)
    due = deadline(step, arrived_at_s)
    if verdict is None:
        late = due is not None and now_s is not None and now_s >= due
        if late and rules["on_timeout"] != "wait":
            return TimedOut(rules["on_timeout"])
        return Wait(due)
    if verdict.decision == APPROVED:
        return Pass(_output(verdict))
    if verdict.decision == TIMED_OUT and rules["on_timeout"] == "rollback":
        return Fail((f"gate {step.id}: no decision in time; on_timeout: rollback",), True)
    return _rejected(pipeline, step, state, verdict, rules["on_reject"])


def _rejected(
    pipeline: Pipeline,
    step: Step,
    state: Mapping[str, Any],
    verdict: Verdict,
    on_reject: Any,
) -> Rewind | Fail:
    why = verdict.comment or ("no decision in time" if verdict.decision == TIMED_OUT else "")
    if on_reject == "rollback":
        return Fail((f"gate {step.id} rejected by {verdict.by}: rolling back",), True)
    target = on_reject.get("rewind_to") if isinstance(on_reject, dict) else None
    if target is None:
        return Fail((f"gate {step.id} rejected by {verdict.by}",))
    limit = int(on_reject.get("max_rejects", 2))
    rejects: dict[str, int] = dict(state.get("gate_rejects") or {})
    if rejects.get(step.id, 0) >= limit:
        return Fail((f"no rewind: max_rejects ({limit}) reached",))
    rejects[step.id] = rejects.get(step.id, 0) + 1
    new_state = rewound_state(state, pipeline, pipeline.index_of(target), step, why)
    new_state["gate_rejects"] = rejects
    note = f"rejected by {verdict.by}: rewinding to {target} ({rejects[step.id]}/{limit})"
    return Rewind(target, new_state, (note,))


def _output(verdict: Verdict) -> dict[str, Any]:
    return {
        "decision": verdict.decision,
        "by": verdict.by,
        "comment": verdict.comment,
        "at": verdict.at,
    }


def rejection_message(step: Step, verdict: Verdict) -> str:
    """The failed visit's error, as ``show`` and ``steps.<gate>.error`` see it."""
    what = "timed out" if verdict.decision == TIMED_OUT else f"rejected by {verdict.by}"
    return f"gate {step.id} {what}" + (f": {verdict.comment}" if verdict.comment else "")
