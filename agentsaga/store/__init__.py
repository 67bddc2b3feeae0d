"""The checkpoint store: the records the engine keeps and the small interface it keeps them by.

The engine talks to ``Store`` only; ``sqlite.py`` and ``postgres.py`` implement it, and
they are the only modules that run SQL. Every method that changes state is one transaction:
a checkpoint is never half-written.

A step's history is a list of *attempts* in start order (``seq``). An attempt's status
moves ``running -> completed | failed -> compensating -> compensated | compensation_failed``
(or is ``skipped``). A rewind or a changed pipeline marks attempts ``superseded``: they no
longer count as the step's current state, but rollback still sees them, so nothing that
ran is forgotten.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agentsaga.errors import ConfigError, NoStore

if TYPE_CHECKING:
    from agentsaga.saga.view import AttemptFact

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_run_id() -> str:
    """12 characters: 4 random, then 8 of milliseconds since 2024.

    Random first, as git's hashes are: runs started in the same minute then differ in
    their first characters, so the 4 or 5 a person types are a unique prefix in practice
    (two runs share a 4-character prefix with odds of about 1 in a million). The time part
    keeps ids made in different milliseconds distinct; listings sort by ``created_at``.
    """
    ms = int(time.time() * 1000) - 1_704_067_200_000
    stamp = "".join(_CROCKFORD[(ms >> shift) & 31] for shift in range(35, -1, -5))
    head = "".join(secrets.choice(_CROCKFORD) for _ in range(4))
    return head + stamp[-8:]


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class RunRecord:
    id: str
    pipeline_name: str
    pipeline_path: str
    pipeline_text: str
    pipeline_hash: str
    vars: dict[str, Any]
    status: str
    created_at: str = ""
    updated_at: str = ""
    finished_at: str | None = None
    parent_run_id: str | None = None
    parent_step: str | None = None
    workspace: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    #: Engine bookkeeping that must survive a crash: rewind counts and signatures, a
    #: pending restart point, options such as rollback_on_failure and budgets.
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class Usage:
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cost_usd: float | None = None
    estimated: bool = False

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write

    def to_json(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "cache_read": self.cache_read,
            "cache_write": self.cache_write,
            "total": self.total,
            "cost_usd": self.cost_usd,
            "estimated": self.estimated,
        }


@dataclass
class AttemptRecord:
    id: int
    run_id: str
    step_id: str
    step_index: int
    seq: int
    attempt: int
    status: str
    fingerprint: str | None = None
    base_commit: str | None = None
    snapshot: str | None = None
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    started_at: str = ""
    finished_at: str | None = None
    duration_ms: float | None = None
    usage: Usage = field(default_factory=Usage)
    superseded: bool = False
    log_path: str | None = None
    reused_from: int | None = None
    owner_pid: int | None = None
    #: How to find the attempt's processes, recorded before anything ran: {token, host}
    #: (a store written before tokens: {pgid, start, host}).
    process: dict[str, Any] | None = None


@dataclass
class CompensationRecord:
    id: int
    run_id: str
    attempt_id: int
    step_id: str
    reason: str
    status: str
    tries: int = 0
    error: dict[str, Any] | None = None
    started_at: str = ""
    finished_at: str | None = None


@dataclass
class RunSummary:
    id: str
    pipeline_name: str
    status: str
    created_at: str
    updated_at: str
    parent_run_id: str | None
    steps: int
    usage: Usage


@dataclass
class LLMCallRecord:
    id: int
    run_id: str
    attempt_id: int | None
    step_id: str
    provider: str
    model: str
    request_hash: str
    request: dict[str, Any]
    response: dict[str, Any] | None
    error: dict[str, Any] | None
    status: str  # ok | error | reused
    judged: bool
    http_attempt: int
    usage: Usage
    latency_ms: float | None
    created_at: str
    served_from: int | None = None


@dataclass
class GateDecisionRecord:
    """A decision on one visit of a human gate (the attempt recorded ``waiting``)."""

    id: int
    run_id: str
    attempt_id: int
    step_id: str
    decision: str  # approved | rejected | timed_out
    decided_by: str
    comment: str
    decided_at: str


@dataclass
class AgentTurnRecord:
    """One completed turn of an agent step: the model's reply, the message that answered
    it (tool results), and the snapshot of the files after it (None: nothing changed)."""

    id: int
    run_id: str
    attempt_id: int
    step_id: str
    turn: int
    reply: dict[str, Any]
    answer: dict[str, Any]
    snapshot: str | None
    created_at: str


@dataclass
class ToolCallRecord:
    """One tool call of an agent turn; ``result`` is None while it is in flight."""

    id: int
    run_id: str
    attempt_id: int
    step_id: str
    turn: int
    call_index: int
    call_id: str
    tool: str
    arguments: dict[str, Any]
    idempotency_key: str
    status: str  # started | done
    result: dict[str, Any] | None
    started_at: str
    finished_at: str | None
    duration_ms: float | None


@dataclass
class Lease:
    run_id: str
    owner_id: str
    host: str
    pid: int
    heartbeat_at: float
    expires_at: float


class Store(Protocol):
    """What the engine needs from a store. Every mutating method is one transaction."""

    location: str

    def close(self) -> None: ...

    # runs
    def create_run(self, run: RunRecord) -> None: ...
    def get_run(self, run_id: str) -> RunRecord: ...
    def resolve_run_id(self, prefix: str) -> str: ...
    def list_runs(
        self, status: str | None = None, limit: int | None = None
    ) -> list[RunSummary]: ...
    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        state: dict[str, Any] | None = None,
        workspace: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        clear_error: bool = False,
        finished: bool = False,
    ) -> None: ...

    # attempts
    def start_attempt(
        self,
        run_id: str,
        step_id: str,
        step_index: int,
        *,
        fingerprint: str | None,
        base_commit: str | None,
        snapshot: str | None,
        status: str = "running",
        process: dict[str, Any] | None = None,
    ) -> AttemptRecord: ...
    def finish_attempt(
        self,
        attempt_id: int,
        *,
        status: str,
        output: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        log_path: str | None = None,
        state: tuple[str, dict[str, Any]] | None = None,
        judge: bool = False,
    ) -> None: ...
    def set_pipeline(self, run_id: str, path: str, text: str, text_hash: str) -> None: ...
    def set_attempt_snapshot(
        self, attempt_id: int, base_commit: str | None, snapshot: str
    ) -> None: ...
    def get_attempt(self, attempt_id: int) -> AttemptRecord: ...
    def attempts(self, run_id: str, *, status: str | None = None) -> list[AttemptRecord]: ...
    def iter_attempts(self, run_id: str) -> Iterator[AttemptRecord]: ...
    def attempt_facts(self, run_id: str) -> list[AttemptFact]: ...
    def supersede(self, run_id: str, step_ids: list[str]) -> None: ...
    def copy_attempts(self, source_run: str, target_run: str, step_ids: list[str]) -> None: ...

    # compensations
    def start_compensation(
        self, run_id: str, attempt_id: int, step_id: str, reason: str
    ) -> int: ...
    def finish_compensation(
        self,
        comp_id: int,
        attempt_id: int,
        *,
        status: str,
        tries: int,
        error: dict[str, Any] | None = None,
    ) -> None: ...
    def record_skipped_compensation(
        self, run_id: str, attempt_id: int, step_id: str, reason: str
    ) -> None: ...
    def compensations(self, run_id: str) -> list[CompensationRecord]: ...

    # LLM calls
    def record_llm_call(
        self,
        *,
        run_id: str,
        attempt_id: int | None,
        step_id: str,
        provider: str,
        model: str,
        request_hash: str,
        request: dict[str, Any],
        response: dict[str, Any] | None,
        error: dict[str, Any] | None,
        status: str,
        http_attempt: int,
        usage: Usage,
        latency_ms: float | None,
        served_from: int | None = None,
    ) -> int: ...
    def find_unjudged_reply(
        self, request_hash: str, run_id: str | None
    ) -> LLMCallRecord | None: ...
    def judge_calls(self, attempt_id: int) -> None: ...
    def llm_calls(self, run_id: str) -> list[LLMCallRecord]: ...

    # the agent step's turns
    def start_tool_call(
        self,
        *,
        run_id: str,
        attempt_id: int,
        step_id: str,
        turn: int,
        call_index: int,
        call_id: str,
        tool: str,
        arguments: dict[str, Any],
        idempotency_key: str,
    ) -> int: ...
    def finish_tool_call(self, tool_call_id: int, result: dict[str, Any]) -> None: ...
    def record_agent_turn(
        self,
        *,
        run_id: str,
        attempt_id: int,
        step_id: str,
        turn: int,
        reply: dict[str, Any],
        answer: dict[str, Any],
        snapshot: str | None,
    ) -> None: ...
    def agent_turns(self, run_id: str, step_id: str) -> list[AgentTurnRecord]: ...
    def tool_calls(self, run_id: str, step_id: str) -> list[ToolCallRecord]: ...
    # human gates
    def record_gate_decision(
        self,
        run_id: str,
        attempt_id: int,
        step_id: str,
        decision: str,
        decided_by: str,
        comment: str,
    ) -> tuple[GateDecisionRecord, bool]:
        """Record a decision on a gate's visit unless one is recorded already (atomic).
        Returns the visit's decision and whether it is this one (False: another won)."""
        ...

    def gate_decisions(self, run_id: str) -> list[GateDecisionRecord]: ...

    # the lease
    def acquire_lease(self, run_id: str, owner_id: str, ttl_s: float) -> None: ...
    def renew_lease(self, run_id: str, owner_id: str, ttl_s: float) -> bool: ...
    def release_lease(self, run_id: str, owner_id: str) -> None: ...
    def get_lease(self, run_id: str) -> Lease | None: ...


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_store(location: str | None, repo_root: Path | None = None, create: bool = True) -> Store:
    """``postgresql://...`` opens PostgreSQL; anything else is a SQLite file path.

    The default is ``<repo>/.agentsaga/state.db``, beside the repository it describes, so
    ``resume`` and ``rollback`` work from the same repository as git commands do. With
    ``create=False`` (commands that only read) a SQLite file that does not exist is
    :class:`NoStore`, and nothing is created: reading never writes.
    """
    location = location or os.environ.get("AGENTSAGA_STORE") or None
    if location and location.startswith(("postgresql://", "postgres://")):
        from agentsaga.store.postgres import PostgresStore

        return PostgresStore(location)
    from agentsaga.store.sqlite import SqliteStore

    if location:
        path = Path(location)
    elif repo_root is None:
        if not create:
            raise NoStore(None)
        raise ConfigError("no store: run inside a git repository, or give --store PATH")
    else:
        path = repo_root / ".agentsaga" / "state.db"
    if not create and not path.is_file():
        raise NoStore(path)
    return SqliteStore(path)
