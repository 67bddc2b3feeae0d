"""What a resume reuses, what a changed pipeline or ``--from`` re-runs, what a fork
copies, and what a rollback or a restart undoes in which order. Pure: fingerprints come in
as a function the runner supplies (they read the environment), records as facts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from agentsaga.pipeline import Compensation, Pipeline, Step
from agentsaga.saga.view import AttemptFact, AttemptState, current_of, is_done
from agentsaga.states import LIVE_ATTEMPT, StepStatus

#: Write and agent steps undo themselves by default: their only side effect is on the run
#: branch (an agent's allowed commands run in the workspace, which the reset restores).
DEFAULT_FOR_KIND = {kind: Compensation(git="reset") for kind in ("write", "agent", "external")}

#: A step's fingerprint under the pipeline being planned (None: it cannot be rendered).
Fingerprint = Callable[[Step], str | None]


@dataclass
class PlanItem:
    step_id: str  # "(workspace)": the run's branch, worktree and refs
    action: str  # reuse | run | rerun | compensate | skip | stop
    reason: str
    attempt: int | None = None  # set where the item is about one attempt (rollback)


def effective_compensation(step: Step) -> Compensation | None:
    return step.compensate or DEFAULT_FOR_KIND.get(step.kind)


def describe(comp: Compensation) -> str:
    if comp.git:
        return f"git: {comp.git}"
    return f"run: {comp.run if isinstance(comp.run, str) else ' '.join(map(str, comp.run or []))}"


# --- resume and fork -------------------------------------------------------------------


def plan_resume(
    target: Pipeline,
    current: Mapping[str, AttemptFact],
    from_step: str | None,
    changed: bool,
    fingerprint: Fingerprint,
) -> list[PlanItem]:
    """Per step: reuse its checkpoint, or run it (again). Everything after the first step
    that runs again runs again. Fingerprints decide only against a ``changed`` pipeline
    (docs/design.md, Semantics): the stored one, with the same vars, gives completed
    steps their inputs."""
    stop_at = target.index_of(from_step) if from_step else None
    items: list[PlanItem] = []
    invalid: str | None = None
    for step in target.steps:
        attempt = current.get(step.id)
        again = "rerun" if attempt is not None else "run"
        if invalid is not None:
            items.append(PlanItem(step.id, again, invalid))
            continue
        if stop_at is not None and step.index >= stop_at:
            invalid = f"upstream: resume --from {from_step}"
            items.append(PlanItem(step.id, again, f"resume --from {from_step}"))
            continue
        if attempt is None or not attempt.done:
            why = "not started" if attempt is None else f"its last attempt {attempt.status}"
            items.append(PlanItem(step.id, again, why))
            invalid = f"upstream: {step.id} runs again"
            continue
        if not changed or attempt.fingerprint == fingerprint(step):
            items.append(PlanItem(step.id, "reuse", "completed; fingerprint unchanged"))
            continue
        items.append(PlanItem(step.id, "rerun", "fingerprint changed (definition or inputs)"))
        invalid = f"upstream: {step.id} changed"
    return items


def restart_index(
    attempts: Sequence[AttemptState], plan: Sequence[PlanItem], new: Pipeline
) -> int | None:
    """Where a resume must undo and re-run from: the first step the plan runs, when any
    completed step after it re-runs or a step the new pipeline dropped still has live
    attempts; None when the run simply continues (a step whose last attempt failed or
    crashed is recovered when it runs again)."""
    first = next((i for i, p in enumerate(plan) if p.action in ("rerun", "run")), None)
    live_ids = {
        a.step_id
        for a in attempts
        if a.status in LIVE_ATTEMPT and not a.superseded and a.reused_from is None
    }
    dropped = live_ids - {s.id for s in new.steps}
    current = current_of(attempts)
    rerun = any(p.action == "rerun" and is_done(current.get(p.step_id)) for p in plan)
    if not rerun and not dropped:
        return None
    return first if first is not None else len(new.steps)


def plan_fork(
    new: Pipeline,
    parent_current: Mapping[str, AttemptFact],
    from_step: str,
    fingerprint: Fingerprint,
) -> list[PlanItem]:
    """A fork reuses its parent's checkpoints before ``from_step`` while they completed
    and their inputs are the same under the fork's vars; from the first that is not, it
    runs everything."""
    stop_at = new.index_of(from_step)
    items: list[PlanItem] = []
    invalid: str | None = None
    for step in new.steps:
        attempt = parent_current.get(step.id)
        if invalid is None and step.index >= stop_at:
            invalid = f"fork --from {from_step}"
        if invalid is None and (attempt is None or not attempt.done):
            invalid = f"not completed in the parent ({attempt.status if attempt else 'pending'})"
        if invalid is None and attempt is not None and attempt.fingerprint != fingerprint(step):
            invalid = f"{step.id}'s inputs differ from the parent's"
        if invalid is None:
            items.append(PlanItem(step.id, "reuse", "checkpoint of the parent run"))
        else:
            items.append(PlanItem(step.id, "run", invalid))
    return items


# --- undoing ---------------------------------------------------------------------------


def restart_targets(
    attempts: Sequence[AttemptFact], keep: set[str], no_compensation: set[int]
) -> tuple[list[AttemptFact], list[str]]:
    """A restart: the attempts to compensate, newest first (the live ones of every step
    not kept), and the steps whose attempts are then superseded."""
    affected = sorted({a.step_id for a in attempts if a.step_id not in keep})
    undo = [
        a
        for a in reversed(attempts)
        if a.step_id not in keep
        and not a.superseded
        and a.reused_from is None
        and a.live
        and a.id not in no_compensation
    ]
    return undo, affected


def recovery_target(
    current: Mapping[str, AttemptFact], step_id: str, no_compensation: set[int]
) -> AttemptFact | None:
    """The step's attempt a crash or an interrupt left mid-flight, to compensate before
    the step runs again. Only the newest can be: each earlier one was compensated (or
    recorded as needing none) before the next began."""
    latest = current.get(step_id)
    if latest is None or not latest.live or latest.done or latest.id in no_compensation:
        return None
    return latest


@dataclass(frozen=True)
class RollbackItem:
    attempt: AttemptFact
    action: str  # compensate | skip (no compensation) | stop (irreversible)
    reason: str
    #: For ``stop``: what remains to undo by hand, this attempt included, newest first.
    left: tuple[str, ...] = ()


def rollback_order(
    attempts: Sequence[AttemptFact],
    no_compensation: set[int],
    steps: Mapping[str, Step],
    force: bool,
) -> list[RollbackItem]:
    """What a rollback undoes, newest first: every live attempt, except a fork's copies
    of its parent's checkpoints (the parent's rollback undoes those). It stops before an
    irreversible step unless ``force``; the list then ends with that ``stop``."""
    todo = [
        a
        for a in reversed(attempts)
        if a.live and a.id not in no_compensation and a.reused_from is None
    ]
    items: list[RollbackItem] = []
    for position, attempt in enumerate(todo):
        step = steps.get(attempt.step_id)
        if step is not None and step.irreversible and not force:
            left = tuple(a.label for a in todo[position:])
            items.append(
                RollbackItem(attempt, "stop", "irreversible: undo by hand or --force", left)
            )
            break
        comp = effective_compensation(step) if step is not None else None
        if comp is None:
            items.append(RollbackItem(attempt, "skip", "no compensation"))
        else:
            items.append(RollbackItem(attempt, "compensate", describe(comp)))
    return items


def believed_tip(
    base_commit: str | None,
    attempts: Iterable[AttemptFact],
    compensated: Iterable[tuple[str, int]],
    steps: Mapping[str, Step],
) -> str | None:
    """Where the run left its branch, replayed from the records in time order: each step
    commit moves it forward, each ``git: reset`` (or ``git: revert``, which gitops sees
    through) compensation moves it back to the commit that attempt started from.
    ``compensated``: (started_at, attempt id) of each compensation that succeeded."""
    by_id = {a.id: a for a in attempts}
    events = [(a.started_at, 1, a.id) for a in by_id.values()]
    events += [(started_at, 0, -attempt_id) for started_at, attempt_id in compensated]
    tip = base_commit
    #: Where the run had left the branch when each attempt began. Undoing an attempt puts
    #: the branch back *there*, not at the base the attempt saw: a commit a person made
    #: between two steps is in the later one's base, and must never count as the run's.
    before: dict[int, str | None] = {}
    for _, _, key in sorted(events):
        attempt = by_id[abs(key)]
        if key > 0:
            before[attempt.id] = tip
            tip = attempt.commit or tip
            continue
        step = steps.get(attempt.step_id)
        comp = effective_compensation(step) if step else None
        undone = comp is not None and (
            (comp.git == "reset" and attempt.snapshot) or (comp.git == "revert" and attempt.commit)
        )
        if undone:
            tip = before.get(attempt.id, attempt.base_commit) or tip
    return tip


def crashed_mid_flight(attempt: AttemptFact) -> bool:
    """Left ``running`` by a process that is gone: closed as failed before it is undone."""
    return attempt.status == StepStatus.RUNNING
