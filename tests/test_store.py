"""The SQLite store: migrations, transactions, run ids, listings, the lease."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentsaga.errors import RunLocked, RunNotFound, StoreError
from agentsaga.store import RunRecord, new_run_id
from agentsaga.store.migrations import MIGRATIONS
from agentsaga.store.sqlite import SqliteStore


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(db: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(db)
    yield s
    s.close()


def _run(store: SqliteStore, run_id: str | None = None, status: str = "running") -> str:
    rid = run_id or new_run_id()
    store.create_run(
        RunRecord(
            id=rid,
            pipeline_name="t",
            pipeline_path="p.yml",
            pipeline_text="name: t\n",
            pipeline_hash="h",
            vars={"a": "1"},
            status=status,
            state={"k": [1]},
        )
    )
    return rid


def _raw(db: Path) -> sqlite3.Connection:
    """A second, independent connection: what another process would see."""
    return sqlite3.connect(str(db))


def test_migrations_are_recorded(store: SqliteStore, db: Path) -> None:
    with _raw(db) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM migrations ORDER BY name")]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert names == [name for name, _ in MIGRATIONS]
    assert mode == "wal"


def test_reopening_is_idempotent(db: Path) -> None:
    first = SqliteStore(db)
    rid = _run(first)
    first.close()
    for _ in range(2):
        again = SqliteStore(db)
        assert again.get_run(rid).vars == {"a": "1"}
        again.close()
    with _raw(db) as conn:
        count = conn.execute("SELECT COUNT(*) FROM migrations").fetchone()[0]
    assert count == len(MIGRATIONS)


def test_two_processes_opening_a_new_store_at_once(db: Path) -> None:
    """Two `agentsaga` commands may create the store at the same moment."""
    code = (
        "from pathlib import Path; from agentsaga.store.sqlite import SqliteStore; "
        f"SqliteStore(Path({str(db)!r})).close()"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    with _raw(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM migrations").fetchone()[0] == len(MIGRATIONS)


def test_a_run_round_trips(store: SqliteStore) -> None:
    rid = _run(store)
    run = store.get_run(rid)
    assert (run.id, run.pipeline_name, run.vars, run.state, run.status) == (
        rid,
        "t",
        {"a": "1"},
        {"k": [1]},
        "running",
    )
    store.update_run(rid, status="failed", error={"message": "x"}, finished=True)
    run = store.get_run(rid)
    assert run.status == "failed" and run.error == {"message": "x"} and run.finished_at


def test_the_status_column_refuses_unknown_statuses(store: SqliteStore, db: Path) -> None:
    rid = _run(store)
    with _raw(db) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE runs SET status = 'bogus' WHERE id = ?", (rid,))


def test_attempt_numbers_and_start_order(store: SqliteStore) -> None:
    rid = _run(store)
    a1 = store.start_attempt(rid, "a", 0, fingerprint="f", base_commit=None, snapshot=None)
    b1 = store.start_attempt(rid, "b", 1, fingerprint="f", base_commit=None, snapshot=None)
    a2 = store.start_attempt(rid, "a", 0, fingerprint="f", base_commit=None, snapshot=None)
    assert [(x.step_id, x.attempt, x.seq) for x in (a1, b1, a2)] == [
        ("a", 1, 1),
        ("b", 1, 2),
        ("a", 2, 3),
    ]
    assert [x.id for x in store.attempts(rid)] == [a1.id, b1.id, a2.id]


def test_a_running_record_skips_the_fsync_and_a_checkpoint_does_not(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One fsync per step: "running" commits without one (in the WAL, not yet on the
    platter); the checkpoint's is made before it returns; any other commit syncs too."""
    rid = _run(store)
    events: list[str] = []
    monkeypatch.setattr(store._wal_sync, "now", _counting(store, events))
    attempt = store.start_attempt(rid, "a", 0, fingerprint="f", base_commit=None, snapshot=None)
    assert events == []
    store.finish_attempt(attempt.id, status="completed", output={"x": 1})
    assert events == ["synced"]
    store.start_attempt(rid, "b", 1, fingerprint="f", base_commit=None, snapshot=None)
    assert events == ["synced"]
    store.start_attempt(
        rid, "c", 2, fingerprint="f", base_commit=None, snapshot=None, status="skipped"
    )
    assert events == ["synced", "synced"]
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_a_checkpoint_returns_only_once_it_is_on_disk(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow disk: the engine goes on to the next step only after the checkpoint's
    fsync."""
    rid = _run(store)
    events: list[str] = []
    monkeypatch.setattr(store._wal_sync, "now", _counting(store, events, delay_s=0.3))
    attempt = store.start_attempt(rid, "a", 0, fingerprint="f", base_commit=None, snapshot=None)
    store.finish_attempt(attempt.id, status="completed", output={"x": 1})
    events.append("checkpoint returned")
    assert events == ["synced", "checkpoint returned"]


def test_a_failed_fsync_fails_the_checkpoint(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk refuses the checkpoint's fsync (EIO): the checkpoint must not return as
    if it were safe; the error names the store."""
    from agentsaga.store import wal_sync

    rid = _run(store)
    attempt = store.start_attempt(rid, "a", 0, fingerprint="f", base_commit=None, snapshot=None)

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(wal_sync, "_datasync", failing)
    with pytest.raises(StoreError, match="cannot make the store's last commit durable"):
        store.finish_attempt(attempt.id, status="completed", output={"x": 1})


def _counting(store: SqliteStore, events: list[str], delay_s: float = 0.0) -> Any:
    """WalSync.now, recording each fsync (after ``delay_s``: a slow disk) and checking
    that it is the WAL file's."""
    sync = store._wal_sync
    assert sync is not None
    real = sync.now

    def fsync() -> None:
        time.sleep(delay_s)
        real()
        assert os.path.samestat(os.fstat(sync._fd), os.stat(f"{store.path}-wal"))
        events.append("synced")

    return fsync


def test_a_running_record_survives_a_killed_process(db: Path) -> None:
    """Without the fsync the record is still in the WAL file: a kill -9 right after the
    commit (before any other write) leaves it for the next process."""
    store = SqliteStore(db)
    rid = _run(store)
    store.close()
    code = (
        "import os, signal; from pathlib import Path; "
        "from agentsaga.store.sqlite import SqliteStore; "
        f"s = SqliteStore(Path({str(db)!r})); "
        f"s.start_attempt({rid!r}, 'a', 0, fingerprint='f', base_commit=None, snapshot=None); "
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -9
    with _raw(db) as conn:
        rows = conn.execute("SELECT step_id, status FROM step_attempts").fetchall()
    assert rows == [("a", "running")]


def test_finish_attempt_writes_output_and_status_in_one_transaction(
    store: SqliteStore, db: Path
) -> None:
    rid = _run(store)
    attempt = store.start_attempt(rid, "a", 0, fingerprint="f", base_commit=None, snapshot=None)

    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    try:
        store.finish_attempt(
            attempt.id,
            status="completed",
            output={"stdout": "hi"},
            state=(rid, {"rewind": {"count": 1}}),
        )
    finally:
        store._conn.set_trace_callback(None)

    writes = [s for s in statements if s.lstrip().upper().startswith(("UPDATE", "INSERT"))]
    begins = [i for i, s in enumerate(statements) if s.upper().startswith("BEGIN")]
    commits = [i for i, s in enumerate(statements) if s.upper().startswith("COMMIT")]
    # One transaction holds the status, the output and the run state.
    assert len(begins) == 1 and len(commits) == 1, statements
    inside = statements[begins[0] : commits[0]]
    assert all(w in inside for w in writes)
    assert any("output_json" in w and "status" in w for w in writes)
    assert any("UPDATE runs" in w and "state_json" in w for w in writes)

    with _raw(db) as conn:
        status, output = conn.execute(
            "SELECT status, output_json FROM step_attempts WHERE id = ?", (attempt.id,)
        ).fetchone()
        state = conn.execute("SELECT state_json FROM runs WHERE id = ?", (rid,)).fetchone()[0]
    assert (status, output) == ("completed", '{"stdout": "hi"}')
    assert state == '{"rewind": {"count": 1}}'


def test_a_failed_transaction_leaves_nothing_behind(store: SqliteStore, db: Path) -> None:
    rid = _run(store)
    with pytest.raises(RuntimeError), store.transaction() as cur:
        cur.execute("UPDATE runs SET status = 'failed' WHERE id = ?", (rid,))
        raise RuntimeError("crash between two writes of one checkpoint")
    assert store.get_run(rid).status == "running"


def test_resolve_run_id_prefixes(store: SqliteStore) -> None:
    one = _run(store, "2nabcdef0001")
    two = _run(store, "2nabcdef0002")
    other = _run(store, "2nzzzzzz0003")
    assert store.resolve_run_id("2nz") == other
    assert store.resolve_run_id("2nabcdef0001") == one
    assert store.resolve_run_id("2NABCDEF0002") == two
    with pytest.raises(RunNotFound) as ambiguous:
        store.resolve_run_id("2nabc")
    assert ambiguous.value.candidates == [one, two]
    assert ambiguous.value.exit_code == 2
    with pytest.raises(RunNotFound):
        store.resolve_run_id("9")
    with pytest.raises(RunNotFound):
        store.resolve_run_id("2n%")


def test_list_runs_newest_first_and_by_status(store: SqliteStore) -> None:
    old = _run(store, "2naaaaaa0001", status="failed")
    mid = _run(store, "2nbbbbbb0001", status="succeeded")
    new = _run(store, "2ncccccc0001", status="failed")
    assert [r.id for r in store.list_runs()] == [new, mid, old]
    assert [r.id for r in store.list_runs(limit=2)] == [new, mid]
    assert [r.id for r in store.list_runs("failed")] == [new, old]
    assert [r.id for r in store.list_runs("failed", limit=1)] == [new]
    assert store.list_runs("rolled_back") == []


def test_supersede_keeps_attempts_visible(store: SqliteStore) -> None:
    rid = _run(store)
    store.start_attempt(rid, "a", 0, fingerprint="f", base_commit=None, snapshot=None)
    store.start_attempt(rid, "b", 1, fingerprint="f", base_commit=None, snapshot=None)
    store.supersede(rid, ["b"])
    flags = {a.step_id: a.superseded for a in store.attempts(rid)}
    assert flags == {"a": False, "b": True}


def test_compensation_records_move_the_attempt_status(store: SqliteStore) -> None:
    rid = _run(store)
    attempt = store.start_attempt(rid, "a", 0, fingerprint="f", base_commit=None, snapshot=None)
    store.finish_attempt(attempt.id, status="completed", output={})
    comp = store.start_compensation(rid, attempt.id, "a", "rollback")
    assert store.attempts(rid)[0].status == "compensating"
    store.finish_compensation(comp, attempt.id, status="succeeded", tries=1)
    assert store.attempts(rid)[0].status == "compensated"
    assert [(c.step_id, c.status, c.tries) for c in store.compensations(rid)] == [
        ("a", "succeeded", 1)
    ]


def test_lease_is_exclusive_until_released(store: SqliteStore, db: Path) -> None:
    rid = _run(store)
    store.acquire_lease(rid, "owner-1", 30)
    other = SqliteStore(db)
    try:
        # Same pid (this process is alive): another owner is refused.
        with pytest.raises(RunLocked) as locked:
            other.acquire_lease(rid, "owner-2", 30)
        assert locked.value.exit_code == 4
        assert store.renew_lease(rid, "owner-1", 30)
        assert not other.renew_lease(rid, "owner-2", 30)
        store.release_lease(rid, "owner-1")
        other.acquire_lease(rid, "owner-2", 30)
        lease = other.get_lease(rid)
        assert lease is not None and lease.owner_id == "owner-2"
    finally:
        other.close()


def test_expired_lease_is_taken_over(store: SqliteStore) -> None:
    rid = _run(store)
    store.acquire_lease(rid, "owner-1", -1)  # already expired: its owner stopped beating
    store.acquire_lease(rid, "owner-2", 30)
    lease = store.get_lease(rid)
    assert lease is not None and lease.owner_id == "owner-2"


def test_lease_of_a_dead_process_on_this_host_is_taken_over(store: SqliteStore, db: Path) -> None:
    rid = _run(store)
    code = (
        "import sys; from pathlib import Path; from agentsaga.store.sqlite import SqliteStore; "
        f"s = SqliteStore(Path({str(db)!r})); s.acquire_lease({rid!r}, 'dead-owner', 3600)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    lease = store.get_lease(rid)
    assert lease is not None and lease.owner_id == "dead-owner"
    store.acquire_lease(rid, "me", 30)  # not RunLocked: its pid is gone
    lease = store.get_lease(rid)
    assert lease is not None and lease.owner_id == "me"


def test_new_run_ids(store: SqliteStore) -> None:
    ids = [new_run_id() for _ in range(200)]
    assert len(set(ids)) == 200
    assert all(len(i) == 12 and i.isalnum() and i == i.lower() for i in ids)
    # The 8-character time part never goes backwards; the 4 random characters come first,
    # so ids made a moment apart differ at once (a short prefix is unique in practice).
    stamps = [i[4:] for i in ids]
    assert stamps == sorted(stamps)
    assert len({i[:4] for i in ids}) >= 195
