"""Run and step statuses: one definition, used by the engine and by the database CHECKs."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    #: Stopped at a human gate (``kind: approve``) until someone decides; holds no lease.
    WAITING = "waiting"


class StepStatus(StrEnum):
    """The status of one attempt of a step. A step's status is its latest attempt's."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
    #: A gate's visit awaiting a decision: nothing to undo, not done.
    WAITING = "waiting"
    #: Stopped by Ctrl-C or SIGTERM: not the step's failure. Its side effects may remain
    #: (undone on resume, as a failed attempt's are); it does not count toward ``retry``.
    INTERRUPTED = "interrupted"


class CompensationStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # the step has no compensation: recorded, so rollback says so


#: Attempts whose side effects may still be in the workspace or the world.
LIVE_ATTEMPT = frozenset(
    {
        StepStatus.RUNNING,
        StepStatus.COMPLETED,
        StepStatus.FAILED,
        StepStatus.INTERRUPTED,
        StepStatus.COMPENSATING,
        StepStatus.COMPENSATION_FAILED,
    }
)


def check_constraint(column: str, enum: type[StrEnum] | tuple[str, ...]) -> str:
    values = ", ".join(f"'{member}'" for member in enum)
    return f"CHECK ({column} IN ({values}))"
