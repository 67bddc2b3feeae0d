"""The facts a decision reads, as immutable values (no store, no git, no clock).

A runner reads its records and hands them here: each attempt as an :class:`AttemptFact`,
the run's bookkeeping (``state``: rewind counters, failure signatures, a pending restart
point, rollback options) as a read-only mapping. The decisions in ``decide.py`` and
``plans.py`` take these and return new values; they never change them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from agentsaga.states import LIVE_ATTEMPT, StepStatus

EMPTY_REWIND: Mapping[str, Any] = MappingProxyType({"count": 0, "from": "", "error": ""})


class AttemptState(Protocol):
    """What deciding where a run restarts reads of an attempt (a fact or a store record
    alike)."""

    @property
    def step_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def superseded(self) -> bool: ...
    @property
    def reused_from(self) -> int | None: ...


class AttemptLike(AttemptState, Protocol):
    """What a record of one attempt offers (``store.AttemptRecord`` fits)."""

    @property
    def id(self) -> int: ...
    @property
    def attempt(self) -> int: ...
    @property
    def fingerprint(self) -> str | None: ...
    @property
    def snapshot(self) -> str | None: ...
    @property
    def base_commit(self) -> str | None: ...
    @property
    def output(self) -> dict[str, Any] | None: ...
    @property
    def error(self) -> dict[str, Any] | None: ...
    @property
    def started_at(self) -> str: ...


@dataclass(frozen=True, slots=True)
class AttemptFact:
    """One attempt of one step, as far as a decision cares."""

    id: int
    step_id: str
    attempt: int
    status: str
    superseded: bool = False
    #: Set on a fork's copy of its parent's checkpoint: the parent undoes it, not the fork.
    reused_from: int | None = None
    fingerprint: str | None = None
    snapshot: str | None = None
    base_commit: str | None = None
    #: ``output.commit`` / ``output.base``: where the step left the run branch.
    commit: str | None = None
    commit_base: str | None = None
    failed: bool = False  # an error is recorded
    started_at: str = ""

    @classmethod
    def of(cls, record: AttemptLike) -> AttemptFact:
        return cls.ended(record, record.status, record.output, record.error is not None)

    @classmethod
    def ended(
        cls,
        record: AttemptLike,
        status: str,
        output: Mapping[str, Any] | None,
        failed: bool = False,
    ) -> AttemptFact:
        """``record`` as it is once recorded with ``status`` and ``output`` (the runner
        knows them when it writes them: it need not read the record back)."""
        commit, base = (output or {}).get("commit"), (output or {}).get("base")
        # Interned: a run keeps one fact per step, and every record read back brings its
        # own copy of the step's id and of "completed".
        return cls(
            id=record.id,
            step_id=sys.intern(record.step_id),
            attempt=record.attempt,
            status=sys.intern(str(status)),
            superseded=record.superseded,
            reused_from=record.reused_from,
            fingerprint=record.fingerprint,
            snapshot=record.snapshot,
            base_commit=record.base_commit,
            commit=str(commit) if commit else None,
            commit_base=str(base) if base else None,
            failed=failed,
            started_at=record.started_at,
        )

    @property
    def done(self) -> bool:
        return self.status in (StepStatus.COMPLETED, StepStatus.SKIPPED)

    @property
    def live(self) -> bool:
        """Its side effects may still be in the workspace or the world."""
        return self.status in LIVE_ATTEMPT

    @property
    def label(self) -> str:
        return f"{self.step_id}#{self.attempt}"


class _Status(Protocol):
    @property
    def status(self) -> str: ...


def is_done(attempt: _Status | None) -> bool:
    return attempt is not None and attempt.status in (StepStatus.COMPLETED, StepStatus.SKIPPED)


class _Superseded(Protocol):
    @property
    def step_id(self) -> str: ...
    @property
    def superseded(self) -> bool: ...


A = TypeVar("A", bound=_Superseded)


def current_of(attempts: Iterable[A]) -> dict[str, A]:
    """Each step's latest attempt that a rewind or a pipeline change has not superseded
    (of facts or of records alike)."""
    latest: dict[str, A] = {}
    for attempt in attempts:
        if not attempt.superseded:
            latest[attempt.step_id] = attempt
    return latest


@dataclass(frozen=True)
class RunView:
    """A run as a decision sees it: each step's current attempt and the bookkeeping."""

    current: Mapping[str, AttemptFact] = field(default_factory=dict)
    state: Mapping[str, Any] = field(default_factory=dict)

    def done(self, step_id: str) -> bool:
        return is_done(self.current.get(step_id))

    @property
    def restart_index(self) -> int | None:
        """A recorded restart point not yet carried out (a rewind, a changed pipeline)."""
        value = self.state.get("restart_index")
        return None if value is None else int(value)

    def with_attempt(self, fact: AttemptFact) -> RunView:
        return RunView({**self.current, fact.step_id: fact}, self.state)

    def with_state(self, state: Mapping[str, Any]) -> RunView:
        return RunView(self.current, state)
