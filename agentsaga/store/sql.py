"""The Store, written once in SQL both SQLite and PostgreSQL accept.

Subclasses supply a connection, the parameter style and a ``transaction()`` context that
takes the write lock at its start (SQLite ``BEGIN IMMEDIATE``; PostgreSQL row locks), so a
read-then-write such as "next attempt number" or "is the lease free" is atomic.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from agentsaga.errors import RunNotFound, StoreError
from agentsaga.saga.view import AttemptFact
from agentsaga.states import CompensationStatus, StepStatus
from agentsaga.store import (
    AttemptRecord,
    CompensationRecord,
    RunRecord,
    RunSummary,
    Usage,
    utcnow,
)
from agentsaga.store.agent_sql import AgentTurnsSql
from agentsaga.store.gate_sql import GateDecisionsSql
from agentsaga.store.lease_sql import LeaseSql
from agentsaga.store.llm_sql import LLMCallsSql
from agentsaga.store.migrations import BUMP_SCHEMA_VERSION, MIGRATIONS, statements
from agentsaga.store.sql_base import _dumps, _loads, _masked

_RUN_COLUMNS = (
    "id, parent_run_id, parent_step, pipeline_name, pipeline_path, pipeline_text, "
    "pipeline_hash, vars_json, status, workspace_json, state_json, error_json, created_at, "
    "updated_at, finished_at"
)
_ATTEMPT_COLUMNS = (
    "id, run_id, step_id, step_index, seq, attempt, status, superseded, fingerprint, "
    "base_commit, snapshot, output_json, error_json, log_path, reused_from, owner_pid, "
    "tokens_input, tokens_output, tokens_cache_read, tokens_cache_write, tokens_estimated, "
    "cost_usd, started_at, finished_at, duration_ms, process_json"
)
#: Attempts per page of ``iter_attempts``.
_PAGE = 500
#: What a decision reads of an attempt (``AttemptFact``): no usage, times or process, and
#: the output only for the commit it may name.
_FACT_COLUMNS = (
    "id, step_id, attempt, status, superseded, reused_from, fingerprint, snapshot, "
    "base_commit, output_json, error_json IS NOT NULL, started_at"
)


def _iso_to_epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class SqlStore(AgentTurnsSql, GateDecisionsSql, LLMCallsSql, LeaseSql):
    dialect = "sqlite"
    location = ""

    # --- provided by the dialect --------------------------------------------------------

    def transaction(self, durable: bool = True) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _param(self, sql: str) -> str:
        return sql

    def close(self) -> None:
        raise NotImplementedError

    # --- helpers ------------------------------------------------------------------------

    def _exec(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._param(sql), tuple(params))
        return cur

    def reading(self) -> AbstractContextManager[Any]:
        """A cursor for one read. Dialects may make it cheaper than a write transaction."""
        return self.transaction()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.reading() as cur:
            rows: list[tuple[Any, ...]] = self._exec(cur, sql, params).fetchall()
            return rows

    def migrate(self) -> None:
        with self.transaction() as cur:
            self._exec(
                cur,
                "CREATE TABLE IF NOT EXISTS migrations "
                "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)",
            )
            done = {row[0] for row in self._exec(cur, "SELECT name FROM migrations").fetchall()}
        for name, _build in MIGRATIONS:
            if name in done:
                continue
            with self.transaction() as cur:
                # Re-check inside the write transaction: two processes may open a new
                # store at the same moment.
                if self._exec(cur, "SELECT 1 FROM migrations WHERE name = ?", (name,)).fetchone():
                    continue
                for sql in statements(name, self.dialect):
                    if sql == BUMP_SCHEMA_VERSION:
                        (version,) = self._exec(cur, "PRAGMA schema_version").fetchone()
                        sql = f"PRAGMA schema_version = {int(version) + 1}"
                    self._exec(cur, sql)
                self._exec(
                    cur, "INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (name, utcnow())
                )

    # --- runs ---------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        now = utcnow()
        run.created_at = run.created_at or now
        run.updated_at = now
        with self.transaction() as cur:
            self._exec(
                cur,
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({', '.join('?' * 15)})",
                (
                    run.id,
                    run.parent_run_id,
                    run.parent_step,
                    run.pipeline_name,
                    run.pipeline_path,
                    run.pipeline_text,
                    run.pipeline_hash,
                    _dumps(run.vars),
                    run.status,
                    _dumps(run.workspace),
                    _dumps(run.state),
                    _masked(run.error),
                    run.created_at,
                    run.updated_at,
                    run.finished_at,
                ),
            )

    #: (run id, pipeline hash, text) of the last run read: a run's pipeline text is as
    #: long as its pipeline (0.5 MB at 10,000 steps) and is read on every step; the
    #: database sends it only when its hash differs from the one already in hand.
    _last_text: tuple[str, str, str] | None = None
    #: The attempt this store last started and its start time: its checkpoint needs no read.
    _last_started: tuple[int, str] | None = None

    def get_run(self, run_id: str) -> RunRecord:
        known = self._last_text if self._last_text and self._last_text[0] == run_id else None
        rows = self._query(
            f"SELECT {_RUN_COLUMNS.replace('pipeline_text,', '')}, "
            "CASE WHEN pipeline_hash = ? THEN NULL ELSE pipeline_text END "
            "FROM runs WHERE id = ?",
            (known[1] if known else "", run_id),
        )
        if not rows:
            raise RunNotFound(run_id)
        r = list(rows[0])
        text = r.pop()
        if text is None and known is not None:
            text = known[2]
        else:
            self._last_text = (run_id, r[5], text)
        r.insert(5, text)
        return RunRecord(
            id=r[0],
            parent_run_id=r[1],
            parent_step=r[2],
            pipeline_name=r[3],
            pipeline_path=r[4],
            pipeline_text=r[5],
            pipeline_hash=r[6],
            vars=_loads(r[7]),
            status=r[8],
            workspace=_loads(r[9]),
            state=_loads(r[10]) or {},
            error=_loads(r[11]),
            created_at=r[12],
            updated_at=r[13],
            finished_at=r[14],
        )

    def resolve_run_id(self, prefix: str) -> str:
        prefix = prefix.strip().lower()
        if not prefix or not all(c.isalnum() for c in prefix):
            raise RunNotFound(prefix)
        # substr, not a range `id >= p AND id < p || '~'`: that range is right only under
        # byte-order collation; PostgreSQL databases created with a locale (en_US.UTF-8,
        # ICU) sort '~' before letters and digits, and the range would match nothing.
        rows = self._query(
            "SELECT id FROM runs WHERE substr(id, 1, ?) = ? ORDER BY id LIMIT 6",
            (len(prefix), prefix),
        )
        ids = [row[0] for row in rows]
        if len(ids) == 1 or prefix in ids:
            return prefix if prefix in ids else ids[0]
        raise RunNotFound(prefix, ids)

    def list_runs(self, status: str | None = None, limit: int | None = None) -> list[RunSummary]:
        where = "WHERE status = ?" if status else ""
        params: list[Any] = [status] if status else []
        lim = f"LIMIT {int(limit)}" if limit else ""
        rows = self._query(
            f"""
            SELECT r.id, r.pipeline_name, r.status, r.created_at, r.updated_at,
                   r.parent_run_id, COUNT(DISTINCT a.step_id),
                   COALESCE(SUM(a.tokens_input), 0), COALESCE(SUM(a.tokens_output), 0),
                   COALESCE(SUM(a.tokens_cache_read), 0), COALESCE(SUM(a.tokens_cache_write), 0),
                   SUM(a.cost_usd)
            FROM (SELECT * FROM runs {where} ORDER BY created_at DESC, id DESC {lim}) r
            LEFT JOIN step_attempts a ON a.run_id = r.id
            GROUP BY r.id, r.pipeline_name, r.status, r.created_at, r.updated_at, r.parent_run_id
            ORDER BY r.created_at DESC, r.id DESC
            """,
            params,
        )
        return [
            RunSummary(
                id=r[0],
                pipeline_name=r[1],
                status=r[2],
                created_at=r[3],
                updated_at=r[4],
                parent_run_id=r[5],
                steps=int(r[6]),
                usage=Usage(int(r[7]), int(r[8]), int(r[9]), int(r[10]), r[11]),
            )
            for r in rows
        ]

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
    ) -> None:
        sets, params = ["updated_at = ?"], [utcnow()]
        for column, value in (
            ("status", status),
            ("state_json", _masked(state)),
            ("workspace_json", _dumps(workspace)),
            ("error_json", _masked(error)),
        ):
            if value is not None:
                sets.append(f"{column} = ?")
                params.append(value)
        if clear_error:
            sets.append("error_json = NULL")
        sets.append("finished_at = ?" if finished else "finished_at = NULL")
        if finished:
            params.append(utcnow())
        with self.transaction() as cur:
            self._exec(cur, f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", (*params, run_id))

    # --- attempts -----------------------------------------------------------------------

    def start_attempt(
        self,
        run_id: str,
        step_id: str,
        step_index: int,
        *,
        fingerprint: str | None,
        base_commit: str | None,
        snapshot: str | None,
        status: str = StepStatus.RUNNING,
        process: dict[str, Any] | None = None,
    ) -> AttemptRecord:
        """Record an attempt; ``process`` says how to find what it runs (``{token,
        host}``): it is in the record before anything can run."""
        now = utcnow()
        finished = now if status != StepStatus.RUNNING else None
        # A "running" record is committed without waiting for the disk: it survives a
        # killed process (the usual crash) at once, and a power loss once the step's
        # checkpoint, which is durable, is committed. One fsync per step, not two: on a
        # loaded machine each costs milliseconds (docs/design.md, "Performance").
        running = status == StepStatus.RUNNING
        with self.transaction(durable=not running) as cur:
            # One statement: the next seq and attempt number are found by two subqueries,
            # each answered by a unique index, (run_id, seq) and (run_id, step_id,
            # attempt), in O(log n) (one MAX over every attempt of the run made each step
            # cost more than the one before it); a statement each cost a round trip more.
            row = self._exec(
                cur,
                "INSERT INTO step_attempts (run_id, step_id, step_index, seq, attempt, status, "
                "fingerprint, base_commit, snapshot, owner_pid, started_at, finished_at, "
                "process_json) VALUES (?, ?, ?, "
                "(SELECT COALESCE(MAX(seq), 0) + 1 FROM step_attempts WHERE run_id = ?), "
                "(SELECT COALESCE(MAX(attempt), 0) + 1 FROM step_attempts "
                "WHERE run_id = ? AND step_id = ?), "
                "?, ?, ?, ?, ?, ?, ?, ?) RETURNING id, seq, attempt",
                (
                    run_id,
                    step_id,
                    step_index,
                    run_id,
                    run_id,
                    step_id,
                    status,
                    fingerprint,
                    base_commit,
                    snapshot,
                    os.getpid(),
                    now,
                    finished,
                    _dumps(process) if process else None,
                ),
            ).fetchone()
        seq, attempt = row[1], row[2]
        self._last_started = (int(row[0]), now)
        record = AttemptRecord(
            id=int(row[0]),
            run_id=run_id,
            step_id=step_id,
            step_index=step_index,
            seq=int(seq),
            attempt=int(attempt),
            status=status,
            fingerprint=fingerprint,
            base_commit=base_commit,
            snapshot=snapshot,
            started_at=now,
            finished_at=finished,
            owner_pid=os.getpid(),
            process=process,
        )
        return record

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
    ) -> None:
        """Record an attempt's end, its output and its token totals in one transaction.

        ``state`` (run id, run state) is written in the same transaction, so a failure and
        the rewind it triggers are recorded together or not at all. ``judge``: the
        attempt's replies are judged (``judge_calls``) in it too: a completed step's
        replies can never be left servable by a crash between two commits, and a step
        costs one transaction less.
        """
        now = utcnow()
        # The start time this store just wrote needs no read (one statement less a step).
        known = self._last_started
        with self.transaction() as cur:
            if known is not None and known[0] == attempt_id:
                started_at = known[1]
            else:
                started = self._exec(
                    cur, "SELECT started_at FROM step_attempts WHERE id = ?", (attempt_id,)
                ).fetchone()
                if started is None:
                    raise StoreError(f"attempt {attempt_id} is not in the store")
                started_at = started[0]
            duration_ms = (_iso_to_epoch(now) - _iso_to_epoch(started_at)) * 1000
            # The totals of its answered calls, and how many calls it made at all: with
            # none (a command step), there is nothing to judge.
            *tokens, calls = self._exec(
                cur,
                "SELECT COALESCE(SUM(CASE WHEN status = 'ok' THEN tokens_input END), 0), "
                "COALESCE(SUM(CASE WHEN status = 'ok' THEN tokens_output END), 0), "
                "COALESCE(SUM(CASE WHEN status = 'ok' THEN tokens_cache_read END), 0), "
                "COALESCE(SUM(CASE WHEN status = 'ok' THEN tokens_cache_write END), 0), "
                "COALESCE(MAX(CASE WHEN status = 'ok' THEN tokens_estimated END), 0), "
                "SUM(CASE WHEN status = 'ok' THEN cost_usd END), COUNT(*) "
                "FROM llm_calls WHERE attempt_id = ?",
                (attempt_id,),
            ).fetchone()
            updated = self._exec(
                cur,
                "UPDATE step_attempts SET status = ?, output_json = ?, error_json = ?, "
                "log_path = COALESCE(?, log_path), finished_at = ?, duration_ms = ?, "
                "tokens_input = ?, tokens_output = ?, tokens_cache_read = ?, "
                "tokens_cache_write = ?, tokens_estimated = ?, cost_usd = ? WHERE id = ?",
                (
                    status,
                    _masked(output),
                    _masked(error),
                    log_path,
                    now,
                    duration_ms,
                    *tokens,
                    attempt_id,
                ),
            ).rowcount
            if not updated:
                raise StoreError(f"attempt {attempt_id} is not in the store")
            if state is not None:
                self._exec(
                    cur,
                    "UPDATE runs SET state_json = ?, updated_at = ? WHERE id = ?",
                    (_masked(state[1]), now, state[0]),
                )
            if judge and calls:
                self._judge(cur, attempt_id)

    def set_pipeline(self, run_id: str, path: str, text: str, text_hash: str) -> None:
        self._last_text = None
        with self.transaction() as cur:
            self._exec(
                cur,
                "UPDATE runs SET pipeline_path = ?, pipeline_text = ?, pipeline_hash = ?, "
                "updated_at = ? WHERE id = ?",
                (path, text, text_hash, utcnow(), run_id),
            )

    def set_attempt_snapshot(self, attempt_id: int, base_commit: str | None, snapshot: str) -> None:
        with self.transaction() as cur:
            self._exec(
                cur,
                "UPDATE step_attempts SET base_commit = ?, snapshot = ? WHERE id = ?",
                (base_commit, snapshot, attempt_id),
            )

    def get_attempt(self, attempt_id: int) -> AttemptRecord:
        rows = self._query(
            f"SELECT {_ATTEMPT_COLUMNS} FROM step_attempts WHERE id = ?", (attempt_id,)
        )
        if not rows:
            raise StoreError(f"attempt {attempt_id} is not in the store")
        return _attempt(rows[0])

    def attempts(self, run_id: str, *, status: str | None = None) -> list[AttemptRecord]:
        """The run's attempts in the order they started; with ``status``, only those in
        that state (a take-over asks for the ``running`` ones of a 10,000-step run)."""
        if status is None:
            rows = self._query(
                f"SELECT {_ATTEMPT_COLUMNS} FROM step_attempts WHERE run_id = ? ORDER BY seq",
                (run_id,),
            )
        else:
            rows = self._query(
                f"SELECT {_ATTEMPT_COLUMNS} FROM step_attempts "
                "WHERE run_id = ? AND status = ? ORDER BY seq",
                (run_id, status),
            )
        return [_attempt(r) for r in rows]

    def iter_attempts(self, run_id: str) -> Iterator[AttemptRecord]:
        """``attempts``, read a page at a time (each page its own short read: no lock or
        cursor is held between pages): a long run's records need not all be in memory."""
        after = -1
        while True:
            rows = self._query(
                f"SELECT {_ATTEMPT_COLUMNS} FROM step_attempts WHERE run_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (run_id, after, _PAGE),
            )
            yield from (_attempt(r) for r in rows)
            if len(rows) < _PAGE:
                return
            after = int(rows[-1][4])  # seq

    def attempt_facts(self, run_id: str) -> list[AttemptFact]:
        """The run's attempts as the decisions read them, in the order they started:
        ``AttemptFact.of`` each record, without reading or decoding the rest of it (a
        resume of a 10,000-step run reads these before its first step)."""
        rows = self._query(
            f"SELECT {_FACT_COLUMNS} FROM step_attempts WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )
        return [_fact(r) for r in rows]

    def supersede(self, run_id: str, step_ids: list[str]) -> None:
        if not step_ids:
            return
        marks = ", ".join("?" * len(step_ids))
        with self.transaction() as cur:
            self._exec(
                cur,
                "UPDATE step_attempts SET superseded = 1 "
                f"WHERE run_id = ? AND step_id IN ({marks})",
                (run_id, *step_ids),
            )

    def copy_attempts(self, source_run: str, target_run: str, step_ids: list[str]) -> None:
        """Give a fork the parent's current checkpoints of ``step_ids``, tokens excluded
        (the fork reused them; it did not pay for them)."""
        source = [a for a in self.attempts(source_run) if not a.superseded]
        latest: dict[str, AttemptRecord] = {}
        for a in source:
            latest[a.step_id] = a
        with self.transaction() as cur:
            for seq, step_id in enumerate(step_ids, start=1):
                a = latest[step_id]
                self._exec(
                    cur,
                    "INSERT INTO step_attempts (run_id, step_id, step_index, seq, attempt, status, "
                    "fingerprint, base_commit, snapshot, output_json, error_json, reused_from, "
                    "started_at, finished_at, duration_ms) "
                    "VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                    (
                        target_run,
                        step_id,
                        a.step_index,
                        seq,
                        a.status,
                        a.fingerprint,
                        a.base_commit,
                        a.snapshot,
                        _dumps(a.output),
                        _dumps(a.error),
                        a.id,
                        a.started_at,
                        a.finished_at,
                    ),
                )

    # --- compensations ------------------------------------------------------------------

    def start_compensation(self, run_id: str, attempt_id: int, step_id: str, reason: str) -> int:
        with self.transaction() as cur:
            self._exec(
                cur,
                "UPDATE step_attempts SET status = ? WHERE id = ?",
                (StepStatus.COMPENSATING, attempt_id),
            )
            row = self._exec(
                cur,
                "INSERT INTO compensations (run_id, attempt_id, step_id, reason, status, tries, "
                "started_at) VALUES (?, ?, ?, ?, ?, 0, ?) RETURNING id",
                (run_id, attempt_id, step_id, reason, CompensationStatus.RUNNING, utcnow()),
            ).fetchone()
        return int(row[0])

    def finish_compensation(
        self,
        comp_id: int,
        attempt_id: int,
        *,
        status: str,
        tries: int,
        error: dict[str, Any] | None = None,
    ) -> None:
        attempt_status = (
            StepStatus.COMPENSATED
            if status == CompensationStatus.SUCCEEDED
            else StepStatus.COMPENSATION_FAILED
        )
        with self.transaction() as cur:
            self._exec(
                cur,
                "UPDATE compensations SET status = ?, tries = ?, error_json = ?, finished_at = ? "
                "WHERE id = ?",
                (status, tries, _masked(error), utcnow(), comp_id),
            )
            self._exec(
                cur,
                "UPDATE step_attempts SET status = ? WHERE id = ?",
                (attempt_status, attempt_id),
            )

    def record_skipped_compensation(
        self, run_id: str, attempt_id: int, step_id: str, reason: str
    ) -> None:
        now = utcnow()
        with self.transaction() as cur:
            self._exec(
                cur,
                "INSERT INTO compensations (run_id, attempt_id, step_id, reason, status, tries, "
                "started_at, finished_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
                (run_id, attempt_id, step_id, reason, CompensationStatus.SKIPPED, now, now),
            )

    def compensations(self, run_id: str) -> list[CompensationRecord]:
        rows = self._query(
            "SELECT id, run_id, attempt_id, step_id, reason, status, tries, error_json, "
            "started_at, finished_at FROM compensations WHERE run_id = ? ORDER BY id",
            (run_id,),
        )
        return [
            CompensationRecord(
                id=int(r[0]),
                run_id=r[1],
                attempt_id=int(r[2]),
                step_id=r[3],
                reason=r[4],
                status=r[5],
                tries=int(r[6]),
                error=_loads(r[7]),
                started_at=r[8],
                finished_at=r[9],
            )
            for r in rows
        ]


def _attempt(r: Sequence[Any]) -> AttemptRecord:
    return AttemptRecord(
        id=int(r[0]),
        run_id=r[1],
        step_id=r[2],
        step_index=int(r[3]),
        seq=int(r[4]),
        attempt=int(r[5]),
        status=r[6],
        superseded=bool(r[7]),
        fingerprint=r[8],
        base_commit=r[9],
        snapshot=r[10],
        output=_loads(r[11]),
        error=_loads(r[12]),
        log_path=r[13],
        reused_from=r[14],
        owner_pid=r[15],
        usage=Usage(int(r[16]), int(r[17]), int(r[18]), int(r[19]), r[21], bool(r[20])),
        started_at=r[22],
        finished_at=r[23],
        duration_ms=r[24],
        process=_loads(r[25]),
    )


def _fact(r: Sequence[Any]) -> AttemptFact:
    commit = base = None
    text = r[9]
    # Parsed only when it may name a commit (a command's output seldom does; a write
    # step's always): decoding 10,000 outputs was most of reading a long run back.
    if text and ('"commit"' in text or '"base"' in text):
        output = json.loads(text)
        if isinstance(output, dict):
            commit, base = output.get("commit"), output.get("base")
    return AttemptFact(
        id=int(r[0]),
        step_id=r[1],
        attempt=int(r[2]),
        status=r[3],
        superseded=bool(r[4]),
        reused_from=r[5],
        fingerprint=r[6],
        snapshot=r[7],
        base_commit=r[8],
        commit=str(commit) if commit else None,
        commit_base=str(base) if base else None,
        failed=bool(r[10]),
        started_at=r[11],
    )
