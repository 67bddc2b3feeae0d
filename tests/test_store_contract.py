"""The Store contract, run against both backends: SQLite (a file in tmp_path) and
PostgreSQL (a fresh database on the session's throwaway server, ``tests/pg_server.py``).

Each test gets an ``opener``: every call opens a *new* connection to the same store, which
is what another process or host would hold. The lease races use one connection per
contender, threads and processes alike.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agentsaga.errors import RunLocked, RunNotFound, StoreError
from agentsaga.store import RunRecord, Usage, new_run_id
from agentsaga.store.migrations import MIGRATIONS
from agentsaga.store.sql import SqlStore

Opener = Callable[[], SqlStore]


class Backend:
    """How to open (and, from a subprocess, re-open) one store."""

    def __init__(self, name: str, location: str) -> None:
        self.name, self.location = name, location
        self.opened: list[SqlStore] = []

    def open(self) -> SqlStore:
        store: SqlStore
        if self.name == "sqlite":
            from agentsaga.store.sqlite import SqliteStore

            store = SqliteStore(Path(self.location))
        else:
            from agentsaga.store.postgres import PostgresStore

            store = PostgresStore(self.location)
        self.opened.append(store)
        return store

    def open_code(self) -> str:
        """Python that binds ``s`` to a store on the same database, for subprocesses."""
        return f"from agentsaga.store import open_store; s = open_store({self.location!r})"

    def close_all(self) -> None:
        for store in self.opened:
            try:
                store.close()
            except Exception:  # a test may have closed it already
                pass


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        b = Backend("sqlite", str(tmp_path / "state.db"))
    else:
        fresh: Callable[[], str] = request.getfixturevalue("pg_fresh_url")
        b = Backend("postgres", fresh())
    yield b
    b.close_all()


@pytest.fixture
def store(backend: Backend) -> SqlStore:
    return backend.open()


def _run(store: SqlStore, run_id: str | None = None, status: str = "running", **extra: Any) -> str:
    rid = run_id or new_run_id()
    store.create_run(
        RunRecord(
            id=rid,
            pipeline_name="t",
            pipeline_path="p.yml",
            pipeline_text="name: t\n",
            pipeline_hash="h",
            vars={"a": "1", "ü": "ß%?"},
            status=status,
            state={"k": [1]},
            **extra,
        )
    )
    return rid


def _start(store: SqlStore, rid: str, step: str, index: int = 0, **kw: Any) -> Any:
    kw.setdefault("fingerprint", f"fp-{step}")
    kw.setdefault("base_commit", None)
    kw.setdefault("snapshot", None)
    return store.start_attempt(rid, step, index, **kw)


def _call(store: SqlStore, rid: str, attempt_id: int | None, **kw: Any) -> int:
    args: dict[str, Any] = dict(
        run_id=rid,
        attempt_id=attempt_id,
        step_id="a",
        provider="scripted",
        model="m",
        request_hash="h1",
        request={"prompt": "100% sure?"},
        response={"text": "ok"},
        error=None,
        status="ok",
        http_attempt=1,
        usage=Usage(10, 5, 2, 1, 0.5),
        latency_ms=12.5,
    )
    args.update(kw)
    return store.record_llm_call(**args)


# --- opening ---------------------------------------------------------------------------


def test_migrations_are_recorded_once(backend: Backend) -> None:
    first = backend.open()
    rid = _run(first)
    first.close()
    again = backend.open()
    assert again.get_run(rid).vars == {"a": "1", "ü": "ß%?"}
    rows = again._query("SELECT name FROM migrations ORDER BY name")
    assert [r[0] for r in rows] == [name for name, _ in MIGRATIONS]


def test_processes_opening_a_fresh_store_at_once(backend: Backend) -> None:
    code = backend.open_code() + "; s.close()"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
        for _ in range(5)
    ]
    results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]
    assert all(code == 0 for code, _ in results), results
    rows = backend.open()._query("SELECT COUNT(*) FROM migrations")
    assert int(rows[0][0]) == len(MIGRATIONS)


# --- runs ------------------------------------------------------------------------------


def test_a_run_round_trips_and_updates(store: SqlStore) -> None:
    rid = _run(store, workspace={"isolation": "none"})
    run = store.get_run(rid)
    assert (run.id, run.pipeline_name, run.vars, run.state, run.status, run.workspace) == (
        rid,
        "t",
        {"a": "1", "ü": "ß%?"},
        {"k": [1]},
        "running",
        {"isolation": "none"},
    )
    assert run.created_at.endswith("Z") and run.finished_at is None

    store.update_run(rid, status="failed", error={"message": "x"}, finished=True)
    run = store.get_run(rid)
    assert run.status == "failed" and run.error == {"message": "x"} and run.finished_at
    assert run.state == {"k": [1]}  # untouched

    store.update_run(
        rid, status="running", state={"rewind": 1}, workspace={"w": 2}, clear_error=True
    )
    run = store.get_run(rid)
    assert (run.status, run.state, run.workspace, run.error, run.finished_at) == (
        "running",
        {"rewind": 1},
        {"w": 2},
        None,
        None,
    )
    store.set_pipeline(rid, "q.yml", "name: q\n", "h2")
    run = store.get_run(rid)
    assert (run.pipeline_path, run.pipeline_text, run.pipeline_hash) == ("q.yml", "name: q\n", "h2")


def test_iter_attempts_reads_every_attempt_a_page_at_a_time(store: SqlStore) -> None:
    """The same attempts as ``attempts``, in start order, across page boundaries."""
    from agentsaga.store import sql

    rid = _run(store)
    other = _run(store)
    n = sql._PAGE * 2 + 3
    for i in range(n):
        a = store.start_attempt(rid, f"s{i}", i, fingerprint=None, base_commit=None, snapshot=None)
        store.finish_attempt(a.id, status="completed", output={"i": i})
        if i % 100 == 0:  # another run's attempts interleave
            store.start_attempt(other, "x", 0, fingerprint=None, base_commit=None, snapshot=None)
    streamed = list(store.iter_attempts(rid))
    assert [(a.id, a.seq, a.output) for a in streamed] == [
        (a.id, a.seq, a.output) for a in store.attempts(rid)
    ]
    assert len(streamed) == n and [a.output for a in streamed][-1] == {"i": n - 1}
    assert list(store.iter_attempts("no-such-run")) == []


def test_get_run_sends_the_pipeline_text_only_when_it_changed(backend: Backend) -> None:
    """get_run keeps the last run's text and asks for it only when the stored hash
    differs: a change made by another process (another store) still shows."""
    reader, writer = backend.open(), backend.open()
    one, two = _run(reader), _run(reader)
    writer.set_pipeline(one, "p.yml", "name: one\n", "h-one")
    assert reader.get_run(one).pipeline_text == "name: one\n"
    assert reader.get_run(one).pipeline_text == "name: one\n"  # from the kept copy
    assert reader.get_run(two).pipeline_text == "name: t\n"
    writer.set_pipeline(one, "p.yml", "name: changed\n", "h-changed")
    run = reader.get_run(one)
    assert (run.pipeline_text, run.pipeline_hash) == ("name: changed\n", "h-changed")
    assert reader.get_run(one).pipeline_text == "name: changed\n"


def test_an_unknown_run_is_run_not_found(store: SqlStore) -> None:
    with pytest.raises(RunNotFound):
        store.get_run("2nzzzzzzzzzz")


def test_the_status_check_refuses_unknown_statuses(store: SqlStore) -> None:
    rid = _run(store)
    with pytest.raises(StoreError):
        store.update_run(rid, status="bogus")
    assert store.get_run(rid).status == "running"


def test_resolve_run_id_prefixes(store: SqlStore) -> None:
    one = _run(store, "2nabcdef0001")
    two = _run(store, "2nabcdef0002")
    other = _run(store, "2nzzzzzz0003")
    assert store.resolve_run_id("2nz") == other
    assert store.resolve_run_id("2nabcdef0001") == one
    assert store.resolve_run_id("2NABCDEF0002") == two
    with pytest.raises(RunNotFound) as ambiguous:
        store.resolve_run_id("2nabc")
    assert ambiguous.value.candidates == [one, two]
    for bad in ("9", "2n%", "2n_", "", "2nabcdef00010"):
        with pytest.raises(RunNotFound):
            store.resolve_run_id(bad)


def test_list_runs_newest_first_with_status_filter_and_totals(store: SqlStore) -> None:
    old = _run(store, "2naaaaaa0001", status="failed")
    mid = _run(store, "2nbbbbbb0001", status="succeeded")
    new = _run(store, "2ncccccc0001", status="failed")
    assert [r.id for r in store.list_runs()] == [new, mid, old]
    assert [r.id for r in store.list_runs(limit=2)] == [new, mid]
    assert [r.id for r in store.list_runs("failed")] == [new, old]
    assert [r.id for r in store.list_runs("failed", limit=1)] == [new]
    assert store.list_runs("rolled_back") == []

    a = _start(store, old, "a")
    _start(store, old, "b", 1)
    _call(store, old, a.id)
    store.finish_attempt(a.id, status="completed", output={})
    summary = next(s for s in store.list_runs() if s.id == old)
    assert summary.steps == 2
    assert (
        summary.usage.input,
        summary.usage.output,
        summary.usage.cache_read,
        summary.usage.cache_write,
        summary.usage.cost_usd,
    ) == (10, 5, 2, 1, 0.5)


# --- attempts --------------------------------------------------------------------------


def test_attempt_numbers_per_step_and_seq_per_run(store: SqlStore) -> None:
    rid, other = _run(store), _run(store)
    a1 = _start(store, rid, "a")
    b1 = _start(store, rid, "b", 1)
    a2 = _start(store, rid, "a")
    o1 = _start(store, other, "a")
    assert [(x.step_id, x.attempt, x.seq) for x in (a1, b1, a2, o1)] == [
        ("a", 1, 1),
        ("b", 1, 2),
        ("a", 2, 3),
        ("a", 1, 1),
    ]
    assert [x.id for x in store.attempts(rid)] == [a1.id, b1.id, a2.id]
    assert a1.owner_pid == os.getpid() and a1.finished_at is None
    skipped = _start(store, rid, "c", 2, status="skipped")
    assert skipped.finished_at is not None
    assert store.attempts(rid)[-1].status == "skipped"


def test_finish_attempt_records_output_tokens_and_run_state_together(store: SqlStore) -> None:
    rid = _run(store)
    attempt = _start(store, rid, "a", snapshot="snap0")
    _call(store, rid, attempt.id)
    _call(store, rid, attempt.id, usage=Usage(1, 1, 0, 0, 0.25, estimated=True))
    _call(
        store,
        rid,
        attempt.id,
        status="error",
        response=None,
        error={"m": "boom"},
        usage=Usage(1000, 1000, 0, 0, 9.0),
    )  # failed calls are not the attempt's tokens
    store.finish_attempt(
        attempt.id,
        status="failed",
        output={"stdout": "50% done?"},
        error={"message": "x"},
        log_path="logs/a.log",
        state=(rid, {"rewind": {"count": 1}}),
    )
    (done,) = store.attempts(rid)
    assert (done.status, done.output, done.error, done.log_path) == (
        "failed",
        {"stdout": "50% done?"},
        {"message": "x"},
        "logs/a.log",
    )
    assert (
        done.usage.input,
        done.usage.output,
        done.usage.cache_read,
        done.usage.cache_write,
        done.usage.cost_usd,
        done.usage.estimated,
    ) == (11, 6, 2, 1, 0.75, True)
    assert done.finished_at and done.duration_ms is not None and done.duration_ms >= 0
    assert store.get_run(rid).state == {"rewind": {"count": 1}}
    # log_path is kept when a later write does not give one
    store.finish_attempt(attempt.id, status="completed")
    assert store.attempts(rid)[0].log_path == "logs/a.log"
    store.set_attempt_snapshot(attempt.id, "c0ffee", "snap1")
    latest = store.attempts(rid)[0]
    assert (latest.base_commit, latest.snapshot) == ("c0ffee", "snap1")


def test_an_attempts_duration_runs_from_its_own_start(store: SqlStore) -> None:
    """The store keeps the start time of the attempt it last started (its checkpoint then
    needs no read); an attempt finished after another one started is timed from its own
    recorded start, as is the one started last."""
    rid = _run(store)
    first = store.start_attempt(rid, "a", 0, fingerprint=None, base_commit=None, snapshot=None)
    second = store.start_attempt(rid, "b", 1, fingerprint=None, base_commit=None, snapshot=None)
    store.finish_attempt(first.id, status="failed")
    store.finish_attempt(second.id, status="completed")
    for done in store.attempts(rid):
        assert done.finished_at and done.duration_ms is not None
        recorded = (_epoch(done.finished_at) - _epoch(done.started_at)) * 1000
        assert done.duration_ms == pytest.approx(recorded, abs=0.01)


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def test_finish_attempt_of_an_unknown_attempt_is_a_store_error(store: SqlStore) -> None:
    with pytest.raises(StoreError, match="attempt 999999 is not in the store"):
        store.finish_attempt(999999, status="completed")


def test_a_failed_transaction_leaves_nothing_behind(store: SqlStore) -> None:
    rid = _run(store)
    with pytest.raises(RuntimeError), store.transaction() as cur:
        store._exec(cur, "UPDATE runs SET status = 'failed' WHERE id = ?", (rid,))
        raise RuntimeError("crash between two writes of one checkpoint")
    assert store.get_run(rid).status == "running"
    _start(store, rid, "a")  # the store is usable afterwards (no lock left held)


def test_a_process_killed_inside_a_transaction_commits_nothing(backend: Backend) -> None:
    """SIGKILL before COMMIT (the fault point): the attempt stays running, the run state
    unchanged, and the next writer is not blocked by a lock the dead process held."""
    store = backend.open()
    rid = _run(store)
    attempt = _start(store, rid, "a")
    code = backend.open_code() + (
        f"; s.finish_attempt({attempt.id}, status='completed', output={{'x': 1}}, "
        f"state=({rid!r}, {{'after': 1}}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "AGENTSAGA_FAULT": "store.in_write"},
        timeout=60,
        check=False,
    )
    assert proc.returncode == -9
    assert store.attempts(rid)[0].status == "running"
    assert store.get_run(rid).state == {"k": [1]}
    store.finish_attempt(attempt.id, status="completed")
    assert store.attempts(rid)[0].status == "completed"


def test_supersede_keeps_attempts_visible(store: SqlStore) -> None:
    rid = _run(store)
    _start(store, rid, "a")
    _start(store, rid, "b", 1)
    _start(store, rid, "c", 2)
    store.supersede(rid, [])
    store.supersede(rid, ["b", "c"])
    flags = {a.step_id: a.superseded for a in store.attempts(rid)}
    assert flags == {"a": False, "b": True, "c": True}


def test_copy_attempts_gives_a_fork_the_current_checkpoints(store: SqlStore) -> None:
    parent = _run(store)
    a1 = _start(store, parent, "a")
    store.finish_attempt(a1.id, status="failed")
    a2 = _start(store, parent, "a", snapshot="s-a")
    _call(store, parent, a2.id)
    store.finish_attempt(a2.id, status="completed", output={"o": "a2"})
    b1 = _start(store, parent, "b", 1)
    store.finish_attempt(b1.id, status="completed", output={"o": "b1"})
    c1 = _start(store, parent, "c", 2)
    store.supersede(parent, ["c"])
    del c1

    fork = _run(store, parent_run_id=parent, parent_step="b")
    store.copy_attempts(parent, fork, ["a", "b"])
    copied = store.attempts(fork)
    assert [(x.step_id, x.seq, x.attempt, x.status, x.output, x.reused_from) for x in copied] == [
        ("a", 1, 1, "completed", {"o": "a2"}, a2.id),
        ("b", 2, 1, "completed", {"o": "b1"}, b1.id),
    ]
    assert copied[0].snapshot == "s-a" and copied[0].usage.total == 0
    assert store.get_run(fork).parent_run_id == parent
    nxt = _start(store, fork, "c", 2)
    assert (nxt.seq, nxt.attempt) == (3, 1)


def test_attempt_facts_are_the_facts_of_the_records(store: SqlStore) -> None:
    """``attempt_facts`` reads only what a decision needs; it must say the same as
    ``AttemptFact.of`` each whole record, for every kind of attempt a run holds."""
    from agentsaga.saga.view import AttemptFact

    parent = _run(store)
    a1 = _start(store, parent, "a", base_commit="b0", snapshot="s-a")
    store.finish_attempt(a1.id, status="failed", error={"message": "boom"})
    a2 = _start(store, parent, "a")
    store.finish_attempt(a2.id, status="completed", output={"commit": "c2", "base": "b0"})
    b1 = _start(store, parent, "b", 1)
    # Output that mentions the keys without being them, and a non-string commit.
    store.finish_attempt(b1.id, status="completed", output={"stdout": '"commit"', "base": 7})
    c1 = _start(store, parent, "c", 2)
    store.finish_attempt(c1.id, status="completed", output={"json": None})
    store.supersede(parent, ["c"])
    _start(store, parent, "d", 3)  # running, no output
    fork = _run(store, parent_run_id=parent, parent_step="b")
    store.copy_attempts(parent, fork, ["a", "b"])

    for rid in (parent, fork):
        facts = store.attempt_facts(rid)
        assert facts == [AttemptFact.of(a) for a in store.attempts(rid)]
    facts = store.attempt_facts(parent)
    assert [(f.step_id, f.commit, f.commit_base, f.failed) for f in facts] == [
        ("a", None, None, True),
        ("a", "c2", "b0", False),
        ("b", None, "7", False),
        ("c", None, None, False),
        ("d", None, None, False),
    ]


# --- compensations ---------------------------------------------------------------------


def test_compensations_move_the_attempt_status(store: SqlStore) -> None:
    rid = _run(store)
    a = _start(store, rid, "a")
    b = _start(store, rid, "b", 1)
    c = _start(store, rid, "c", 2)
    for x in (a, b, c):
        store.finish_attempt(x.id, status="completed", output={})

    comp_c = store.start_compensation(rid, c.id, "c", "rollback")
    assert store.attempts(rid)[2].status == "compensating"
    store.finish_compensation(comp_c, c.id, status="succeeded", tries=1)
    comp_b = store.start_compensation(rid, b.id, "b", "rollback")
    store.finish_compensation(comp_b, b.id, status="failed", tries=3, error={"message": "no"})
    store.record_skipped_compensation(rid, a.id, "a", "rollback")

    assert [x.status for x in store.attempts(rid)] == [
        "completed",
        "compensation_failed",
        "compensated",
    ]
    comps = store.compensations(rid)
    assert [(x.step_id, x.status, x.tries, x.error, x.reason) for x in comps] == [
        ("c", "succeeded", 1, None, "rollback"),
        ("b", "failed", 3, {"message": "no"}, "rollback"),
        ("a", "skipped", 0, None, "rollback"),
    ]
    assert all(x.finished_at for x in comps) and comps[0].id < comps[1].id < comps[2].id


def test_a_store_of_the_previous_version_moves_interrupted_attempts_to_their_status(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """m006: a store made before it (m001..m005) wrote an interrupted attempt as
    ``failed`` with an ``Interrupted`` error. Opened by this version, those rows (and only
    those) become ``interrupted``, and the CHECK takes the new status."""
    import agentsaga.store.sql as sql_module

    before = [m for m in MIGRATIONS if m[0] != "m006_interrupted_attempts"]
    assert len(before) == len(MIGRATIONS) - 1
    monkeypatch.setattr(sql_module, "MIGRATIONS", before)
    old = backend.open()
    rid = _run(old)
    stopped = _start(old, rid, "a")
    old.finish_attempt(stopped.id, status="failed", error={"type": "Interrupted", "message": "^C"})
    failed = _start(old, rid, "b", 1)
    # The word in the message alone is no interrupt.
    failed.error = {"type": "StepFailed", "message": "Interrupted: 1 error during collection"}
    old.finish_attempt(failed.id, status="failed", error=failed.error)
    undone = _start(old, rid, "c", 2)
    old.finish_attempt(undone.id, status="failed", error={"type": "Interrupted", "message": "^C"})
    comp = old.start_compensation(rid, undone.id, "c", "recovery")
    old.finish_compensation(comp, undone.id, status="succeeded", tries=1)
    with pytest.raises(StoreError):
        old.finish_attempt(_start(old, rid, "d", 3).id, status="interrupted")
    old.close()

    monkeypatch.setattr(sql_module, "MIGRATIONS", MIGRATIONS)
    new = backend.open()
    assert [(x.step_id, x.status) for x in new.attempts(rid)] == [
        ("a", "interrupted"),
        ("b", "failed"),
        ("c", "compensated"),
        ("d", "running"),
    ]
    assert new.attempts(rid)[0].error == {"type": "Interrupted", "message": "^C"}
    fresh = _start(new, rid, "e", 4)
    new.finish_attempt(fresh.id, status="interrupted", error={"type": "Interrupted"})
    assert new.attempts(rid)[-1].status == "interrupted"
    with pytest.raises(StoreError):
        new.finish_attempt(fresh.id, status="bogus")
    rows = new._query("SELECT name FROM migrations ORDER BY name")
    assert [r[0] for r in rows] == [name for name, _ in MIGRATIONS]
    if backend.name == "sqlite":
        assert new._query("PRAGMA integrity_check") == [("ok",)]


# --- LLM calls -------------------------------------------------------------------------


def test_llm_calls_record_and_list(store: SqlStore) -> None:
    rid = _run(store)
    a = _start(store, rid, "a")
    first = _call(store, rid, a.id)
    second = _call(store, rid, None, status="reused", served_from=first, http_attempt=2)
    calls = store.llm_calls(rid)
    assert [c.id for c in calls] == [first, second]
    c0, c1 = calls
    assert (c0.request, c0.response, c0.status, c0.judged, c0.attempt_id) == (
        {"prompt": "100% sure?"},
        {"text": "ok"},
        "ok",
        False,
        a.id,
    )
    assert (c0.usage.total, c0.usage.cost_usd, c0.latency_ms) == (18, 0.5, 12.5)
    assert (c1.status, c1.served_from, c1.http_attempt, c1.attempt_id) == ("reused", first, 2, None)


def test_find_unjudged_reply_scoped_to_a_run_or_global(store: SqlStore) -> None:
    r1, r2 = _run(store), _run(store)
    a1 = _start(store, r1, "a")
    old = _call(store, r1, a1.id, response={"text": "old"})
    new = _call(store, r1, a1.id, response={"text": "new"})
    _call(store, r1, a1.id, status="error", response=None, error={"m": "x"})  # never served

    found = store.find_unjudged_reply("h1", r1)
    assert found is not None and found.id == new and found.response == {"text": "new"}
    assert store.find_unjudged_reply("h1", r2) is None  # scoped to run 2: nothing there
    found = store.find_unjudged_reply("h1", None)  # global: any run's reply
    assert found is not None and found.id == new
    assert store.find_unjudged_reply("other-hash", None) is None
    del old


def test_judge_calls_marks_own_and_served_replies(store: SqlStore) -> None:
    r1, r2 = _run(store), _run(store)
    a1 = _start(store, r1, "a")
    served = _call(store, r1, a1.id)
    keep = _call(store, r1, a1.id, request_hash="h2")
    a2 = _start(store, r2, "a")
    reuse = _call(store, r2, a2.id, status="reused", served_from=served)
    own = _call(store, r2, a2.id, request_hash="h3")

    store.judge_calls(a2.id)
    judged = {c.id: c.judged for r in (r1, r2) for c in store.llm_calls(r)}
    assert judged == {served: True, keep: False, reuse: True, own: True}
    assert store.find_unjudged_reply("h1", None) is None
    found = store.find_unjudged_reply("h2", r1)
    assert found is not None and found.id == keep


def test_finish_attempt_judges_its_replies_in_the_same_transaction(store: SqlStore) -> None:
    r1, r2 = _run(store), _run(store)
    a1 = _start(store, r1, "a")
    served = _call(store, r1, a1.id)
    a2 = _start(store, r2, "a")
    reuse = _call(store, r2, a2.id, status="reused", served_from=served)
    own = _call(store, r2, a2.id, request_hash="h3")

    store.finish_attempt(a2.id, status="completed", output={"x": 1})  # no judging
    assert not any(c.judged for r in (r1, r2) for c in store.llm_calls(r))
    store.finish_attempt(a2.id, status="completed", output={"x": 1}, judge=True)
    judged = {c.id: c.judged for r in (r1, r2) for c in store.llm_calls(r)}
    assert judged == {served: True, reuse: True, own: True}
    assert store.get_attempt(a2.id).status == "completed"


# --- the lease -------------------------------------------------------------------------


def test_lease_acquire_renew_release(backend: Backend) -> None:
    store, other = backend.open(), backend.open()
    rid = _run(store)
    assert store.get_lease(rid) is None
    store.acquire_lease(rid, "owner-1", 30)
    lease = store.get_lease(rid)
    assert lease is not None and (lease.owner_id, lease.pid) == ("owner-1", os.getpid())
    assert lease.expires_at > lease.heartbeat_at

    # A second owner is refused while the lease is valid (its pid, ours, is alive).
    with pytest.raises(RunLocked) as locked:
        other.acquire_lease(rid, "owner-2", 30)
    assert locked.value.exit_code == 4 and locked.value.owner == "owner-1"
    store.acquire_lease(rid, "owner-1", 30)  # re-acquiring one's own lease is fine

    before = lease.expires_at
    assert store.renew_lease(rid, "owner-1", 60)
    renewed = other.get_lease(rid)
    assert renewed is not None and renewed.expires_at > before
    assert not other.renew_lease(rid, "owner-2", 30)

    other.release_lease(rid, "owner-2")  # not the owner: nothing happens
    assert store.get_lease(rid) is not None
    store.release_lease(rid, "owner-1")
    assert store.get_lease(rid) is None
    other.acquire_lease(rid, "owner-2", 30)
    got = store.get_lease(rid)
    assert got is not None and got.owner_id == "owner-2"


def test_an_expired_lease_is_taken_over(backend: Backend) -> None:
    store, other = backend.open(), backend.open()
    rid = _run(store)
    store.acquire_lease(rid, "owner-1", -1)  # already expired: its owner stopped beating
    other.acquire_lease(rid, "owner-2", 30)
    lease = store.get_lease(rid)
    assert lease is not None and lease.owner_id == "owner-2"
    assert not store.renew_lease(rid, "owner-1", 30)  # the old owner learns it lost it


def test_a_dead_process_lease_on_this_host_is_taken_over(backend: Backend) -> None:
    store = backend.open()
    rid = _run(store)
    code = backend.open_code() + f"; s.acquire_lease({rid!r}, 'dead-owner', 3600)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    lease = store.get_lease(rid)
    assert lease is not None and lease.owner_id == "dead-owner"
    store.acquire_lease(rid, "me", 30)
    lease = store.get_lease(rid)
    assert lease is not None and lease.owner_id == "me"


@pytest.mark.parametrize("existing", ["none", "expired"])
def test_threads_racing_for_a_lease_exactly_one_wins(backend: Backend, existing: str) -> None:
    """Eight contenders, each on its own connection, released at once. With no row yet,
    `SELECT ... FOR UPDATE` locks nothing: only the transaction lock keeps two from
    both inserting."""
    n = 8
    setup = backend.open()
    rid = _run(setup)
    if existing == "expired":
        setup.acquire_lease(rid, "gone", -1)
    stores = [backend.open() for _ in range(n)]
    barrier = threading.Barrier(n)
    results: list[str] = ["?"] * n

    def contend(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            stores[i].acquire_lease(rid, f"owner-{i}", 30)
            results[i] = "won"
        except RunLocked:
            results[i] = "locked"
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[i] = f"error: {exc!r}"

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == ["locked"] * (n - 1) + ["won"], results
    winner = results.index("won")
    lease = setup.get_lease(rid)
    assert lease is not None and lease.owner_id == f"owner-{winner}"


def test_processes_racing_for_a_lease_exactly_one_wins(backend: Backend, tmp_path: Path) -> None:
    """The same race across processes (as across hosts). Each contender stays alive until
    all have tried, so the winner's pid is live and its lease valid throughout."""
    n = 6
    store = backend.open()
    rid = _run(store)
    go, done = tmp_path / "go", tmp_path / "done"
    code = backend.open_code() + textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from agentsaga.errors import RunLocked
        print("ready", flush=True)
        while not Path({str(go)!r}).exists():
            time.sleep(0.005)
        try:
            s.acquire_lease({rid!r}, f"owner-{{os.getpid()}}", 30)
            print("won", flush=True)
        except RunLocked:
            print("locked", flush=True)
        for _ in range(6000):
            if Path({str(done)!r}).exists():
                break
            time.sleep(0.01)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        go.touch()
        results = [p.stdout.readline().strip() if p.stdout else "" for p in procs]
    finally:
        done.touch()
        for p in procs:
            p.wait(timeout=60)
            if p.stdout:
                p.stdout.close()
    assert sorted(results) == ["locked"] * (n - 1) + ["won"], results
    winner = procs[results.index("won")].pid
    lease = store.get_lease(rid)
    assert lease is not None and lease.owner_id == f"owner-{winner}"


# --- the agent step's turns ------------------------------------------------------------


def test_agent_turns_and_tool_calls_round_trip(store: SqlStore) -> None:
    rid = _run(store)
    a1 = _start(store, rid, "fix")
    first = store.start_tool_call(
        run_id=rid,
        attempt_id=a1.id,
        step_id="fix",
        turn=1,
        call_index=0,
        call_id="toolu_1",
        tool="edit_file",
        arguments={"path": "ü.py", "old_text": "50% off", "new_text": "?"},
        idempotency_key=f"{rid}:fix:1:1.1",
    )
    in_flight = store.start_tool_call(
        run_id=rid,
        attempt_id=a1.id,
        step_id="fix",
        turn=2,
        call_index=0,
        call_id="toolu_2",
        tool="run_command",
        arguments={"argv": ["pytest"]},
        idempotency_key=f"{rid}:fix:1:2.1",
    )
    store.finish_tool_call(first, {"content": "edited ü.py", "is_error": False, "chars": 11})
    store.record_agent_turn(
        run_id=rid,
        attempt_id=a1.id,
        step_id="fix",
        turn=1,
        reply={"text": "", "tool_calls": [{"id": "toolu_1", "name": "edit_file"}]},
        answer={"role": "user", "content": "", "tool_results": [{"call_id": "toolu_1"}]},
        snapshot="abc123",
    )
    with pytest.raises(StoreError):
        store.finish_tool_call(in_flight + 1000, {"content": "x"})
    calls = store.tool_calls(rid, "fix")
    assert [(c.turn, c.tool, c.status) for c in calls] == [
        (1, "edit_file", "done"),
        (2, "run_command", "started"),
    ]
    assert calls[0].arguments["path"] == "ü.py" and calls[0].result == {
        "content": "edited ü.py",
        "is_error": False,
        "chars": 11,
    }
    assert calls[0].duration_ms is not None and calls[1].result is None
    turns = store.agent_turns(rid, "fix")
    assert [(t.turn, t.snapshot, t.attempt_id) for t in turns] == [(1, "abc123", a1.id)]
    assert turns[0].reply["tool_calls"][0]["id"] == "toolu_1"
    assert store.agent_turns(rid, "other") == [] and store.tool_calls(rid, "other") == []
