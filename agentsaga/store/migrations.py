"""The schema, as an ordered list of named migrations.

The schema lives only here. Each migration is applied in one transaction together with
its row in ``migrations``; a shipped migration is never edited, a change is a new one.
The SQL is written once for both dialects: ``{pk}`` and ``{real}`` are filled in per
dialect, and the status CHECKs come from the enums in ``states.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from agentsaga.states import CompensationStatus, check_constraint

DIALECTS = {
    "sqlite": {"pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL"},
    "postgres": {"pk": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION"},
}


#: The statuses as m001 shipped them: a shipped migration never changes, so the enums'
#: later members reach the CHECKs through migrations of their own (m005_gates).
M001_RUN_STATUSES = (
    "running",
    "succeeded",
    "failed",
    "interrupted",
    "rolling_back",
    "rolled_back",
    "rollback_failed",
)
M001_STEP_STATUSES = (
    "pending",
    "running",
    "completed",
    "failed",
    "skipped",
    "compensating",
    "compensated",
    "compensation_failed",
)
M005_RUN_STATUSES = (*M001_RUN_STATUSES, "waiting")
M005_STEP_STATUSES = (*M001_STEP_STATUSES, "waiting")
M006_STEP_STATUSES = (*M005_STEP_STATUSES, "interrupted")
#: A statement that the SQLite store carries out itself: the schema version is read
#: and incremented, which plain SQL cannot do (see _gates).
BUMP_SCHEMA_VERSION = "-- bump schema_version"


def _initial() -> list[str]:
    return [
        f"""
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            parent_run_id TEXT REFERENCES runs(id),
            parent_step TEXT,
            pipeline_name TEXT NOT NULL,
            pipeline_path TEXT NOT NULL,
            pipeline_text TEXT NOT NULL,
            pipeline_hash TEXT NOT NULL,
            vars_json TEXT NOT NULL,
            status TEXT NOT NULL {check_constraint("status", M001_RUN_STATUSES)},
            workspace_json TEXT,
            state_json TEXT NOT NULL DEFAULT '{{{{}}}}',
            error_json TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            finished_at TEXT
        )
        """,
        "CREATE INDEX runs_by_created ON runs(created_at)",
        "CREATE INDEX runs_by_status ON runs(status, created_at)",
        f"""
        CREATE TABLE step_attempts (
            id {{pk}},
            run_id TEXT NOT NULL REFERENCES runs(id),
            step_id TEXT NOT NULL,
            step_index INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            attempt INTEGER NOT NULL CHECK (attempt >= 1),
            status TEXT NOT NULL {check_constraint("status", M001_STEP_STATUSES)},
            superseded INTEGER NOT NULL DEFAULT 0,
            fingerprint TEXT,
            base_commit TEXT,
            snapshot TEXT,
            output_json TEXT,
            error_json TEXT,
            log_path TEXT,
            reused_from INTEGER,
            owner_pid INTEGER,
            tokens_input INTEGER NOT NULL DEFAULT 0,
            tokens_output INTEGER NOT NULL DEFAULT 0,
            tokens_cache_read INTEGER NOT NULL DEFAULT 0,
            tokens_cache_write INTEGER NOT NULL DEFAULT 0,
            tokens_estimated INTEGER NOT NULL DEFAULT 0,
            cost_usd {{real}},
            started_at TEXT NOT NULL,
            finished_at TEXT,
            duration_ms {{real}},
            UNIQUE (run_id, seq),
            UNIQUE (run_id, step_id, attempt)
        )
        """,
        f"""
        CREATE TABLE compensations (
            id {{pk}},
            run_id TEXT NOT NULL REFERENCES runs(id),
            attempt_id INTEGER NOT NULL REFERENCES step_attempts(id),
            step_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            status TEXT NOT NULL {check_constraint("status", CompensationStatus)},
            tries INTEGER NOT NULL DEFAULT 0,
            error_json TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT
        )
        """,
        "CREATE INDEX compensations_by_run ON compensations(run_id, id)",
        """
        CREATE TABLE llm_calls (
            id {pk},
            run_id TEXT NOT NULL REFERENCES runs(id),
            attempt_id INTEGER REFERENCES step_attempts(id),
            step_id TEXT NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            request_json TEXT NOT NULL,
            response_json TEXT,
            error_json TEXT,
            status TEXT NOT NULL CHECK (status IN ('ok', 'error', 'reused')),
            judged INTEGER NOT NULL DEFAULT 0,
            http_attempt INTEGER NOT NULL DEFAULT 1,
            served_from INTEGER,
            tokens_input INTEGER NOT NULL DEFAULT 0,
            tokens_output INTEGER NOT NULL DEFAULT 0,
            tokens_cache_read INTEGER NOT NULL DEFAULT 0,
            tokens_cache_write INTEGER NOT NULL DEFAULT 0,
            tokens_estimated INTEGER NOT NULL DEFAULT 0,
            cost_usd {real},
            latency_ms {real},
            created_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX llm_calls_by_hash ON llm_calls(request_hash, judged)",
        "CREATE INDEX llm_calls_by_run ON llm_calls(run_id, id)",
        """
        CREATE TABLE leases (
            run_id TEXT PRIMARY KEY REFERENCES runs(id),
            owner_id TEXT NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            heartbeat_at {real} NOT NULL,
            expires_at {real} NOT NULL
        )
        """,
    ]


def _call_index() -> list[str]:
    # finish_attempt sums an attempt's calls: without this it scans the whole call log.
    return ["CREATE INDEX llm_calls_by_attempt ON llm_calls(attempt_id)"]


def _agent_turns() -> list[str]:
    # The agent step's record, turn by turn: a turn is complete when its row in agent_turns
    # exists (the reply, the message that answered it, the snapshot of the files after it);
    # agent_tool_calls holds each call as it starts and ends, so a resume knows which call
    # was in flight. Turn numbers run on across the attempts that continue one another.
    return [
        """
        CREATE TABLE agent_turns (
            id {pk},
            run_id TEXT NOT NULL REFERENCES runs(id),
            attempt_id INTEGER NOT NULL REFERENCES step_attempts(id),
            step_id TEXT NOT NULL,
            turn INTEGER NOT NULL CHECK (turn >= 1),
            reply_json TEXT NOT NULL,
            answer_json TEXT NOT NULL,
            snapshot TEXT,
            created_at TEXT NOT NULL,
            UNIQUE (attempt_id, turn)
        )
        """,
        "CREATE INDEX agent_turns_by_step ON agent_turns(run_id, step_id, turn)",
        """
        CREATE TABLE agent_tool_calls (
            id {pk},
            run_id TEXT NOT NULL REFERENCES runs(id),
            attempt_id INTEGER NOT NULL REFERENCES step_attempts(id),
            step_id TEXT NOT NULL,
            turn INTEGER NOT NULL CHECK (turn >= 1),
            call_index INTEGER NOT NULL CHECK (call_index >= 0),
            call_id TEXT NOT NULL,
            tool TEXT NOT NULL,
            arguments_json TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('started', 'done')),
            result_json TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            duration_ms {real}
        )
        """,
        "CREATE INDEX agent_tool_calls_by_step ON agent_tool_calls(run_id, step_id, turn)",
    ]


def _attempt_process() -> list[str]:
    # The process group a step's command runs in, recorded before the command may start:
    # whoever takes a killed run over stops it before compensating or re-running.
    return ["ALTER TABLE step_attempts ADD COLUMN process_json TEXT"]


def _gate_decisions() -> list[str]:
    # One decision per visit of a gate (the attempt recorded ``waiting``): the unique key
    # is the compare-and-swap that lets exactly one of two deciders win.
    return [
        """
        CREATE TABLE gate_decisions (
            id {pk},
            run_id TEXT NOT NULL REFERENCES runs(id),
            attempt_id INTEGER NOT NULL UNIQUE REFERENCES step_attempts(id),
            step_id TEXT NOT NULL,
            decision TEXT NOT NULL CHECK (decision IN ('approved', 'rejected', 'timed_out')),
            decided_by TEXT NOT NULL,
            comment TEXT NOT NULL DEFAULT '',
            decided_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX gate_decisions_by_run ON gate_decisions(run_id, id)",
    ]


def _widen_checks(dialect: str) -> list[str]:
    """Add ``waiting`` to the run and attempt status CHECKs. PostgreSQL replaces the
    constraints. SQLite cannot alter a CHECK; its documented way to relax one (ALTER
    TABLE, "making other kinds of table schema changes") edits the stored CREATE TABLE
    text under writable_schema and increments the schema version, in this transaction.
    Widening a CHECK keeps every existing row valid."""
    changes = [
        ("runs", M001_RUN_STATUSES, M005_RUN_STATUSES),
        ("step_attempts", M001_STEP_STATUSES, M005_STEP_STATUSES),
    ]
    if dialect == "postgres":
        return [
            f"ALTER TABLE {table} DROP CONSTRAINT {table}_status_check, "
            f"ADD CONSTRAINT {table}_status_check {check_constraint('status', new)}"
            for table, _old, new in changes
        ]
    updates = [
        f"UPDATE sqlite_schema SET sql = replace(sql, "
        f"{_quote(check_constraint('status', old))}, {_quote(check_constraint('status', new))}) "
        f"WHERE type = 'table' AND name = '{table}'"
        for table, old, new in changes
    ]
    return [
        "PRAGMA writable_schema = ON",
        *updates,
        BUMP_SCHEMA_VERSION,
        "PRAGMA writable_schema = OFF",
    ]


def _interrupted_attempts(dialect: str) -> list[str]:
    """Give an attempt stopped by Ctrl-C (or SIGTERM) a status of its own, ``interrupted``:
    until now it was stored ``failed`` with an error of type ``Interrupted``. The CHECK is
    widened as m005 did it; then the rows written the old way are moved over. (The error's
    type is read with each dialect's JSON function; the LIKE spares the others a parse.)"""
    old, new = (
        check_constraint("status", M005_STEP_STATUSES),
        check_constraint("status", M006_STEP_STATUSES),
    )
    if dialect == "postgres":
        widen = [
            "ALTER TABLE step_attempts DROP CONSTRAINT step_attempts_status_check, "
            f"ADD CONSTRAINT step_attempts_status_check {new}"
        ]
        error_type = "(error_json::json ->> 'type')"
    else:
        widen = [
            "PRAGMA writable_schema = ON",
            f"UPDATE sqlite_schema SET sql = replace(sql, {_quote(old)}, {_quote(new)}) "
            "WHERE type = 'table' AND name = 'step_attempts'",
            BUMP_SCHEMA_VERSION,
            "PRAGMA writable_schema = OFF",
        ]
        error_type = "json_extract(error_json, '$.type')"
    move = (
        "UPDATE step_attempts SET status = 'interrupted' WHERE status = 'failed' "
        f"AND error_json LIKE '%Interrupted%' AND {error_type} = 'Interrupted'"
    )
    return [*widen, move]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


MIGRATIONS: list[tuple[str, Callable[[], list[str]]]] = [
    ("m001_initial", _initial),
    ("m002_call_index", _call_index),
    ("m003_agent_turns", _agent_turns),
    ("m004_attempt_process", _attempt_process),
    ("m005_gates", _gate_decisions),
    ("m006_interrupted_attempts", list),
]

#: Statements that differ by dialect, run before the migration's own.
BY_DIALECT: dict[str, Callable[[str], list[str]]] = {
    "m005_gates": _widen_checks,
    "m006_interrupted_attempts": _interrupted_attempts,
}


def statements(name: str, dialect: str) -> list[str]:
    for migration_name, build in MIGRATIONS:
        if migration_name == name:
            first = BY_DIALECT[name](dialect) if name in BY_DIALECT else []
            return first + [sql.format(**DIALECTS[dialect]) for sql in build()]
    raise KeyError(name)
