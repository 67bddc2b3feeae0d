"""What is particular to the PostgreSQL store: the SQL translation, the password kept out
of every message, reconnecting, and the installed command run end to end against a real
server (``tests/pg_server.py``). The shared behaviour is in ``test_store_contract.py``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agentsaga.errors import StoreError
from agentsaga.store import open_store
from agentsaga.store.postgres import PostgresStore, redact_url, to_pyformat
from tests.conftest import Env, run_agentsaga
from tests.pg_server import PASSWORD
from tests.pipelines_util import chain

# --- no server needed ------------------------------------------------------------------


def test_placeholders_become_pyformat_outside_literals_only() -> None:
    assert to_pyformat("SELECT a FROM t WHERE b = ? AND c = ?") == (
        "SELECT a FROM t WHERE b = %s AND c = %s"
    )
    assert to_pyformat("SELECT '?', x LIKE 'a%' FROM t WHERE y = ?") == (
        "SELECT '?', x LIKE 'a%%' FROM t WHERE y = %s"
    )
    assert to_pyformat("SELECT 'it''s ?' WHERE z = ? AND w % 2 = 0") == (
        "SELECT 'it''s ?' WHERE z = %s AND w %% 2 = 0"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u@h:5432/db"),
        ("postgresql://u:p%40ss@h/db?sslmode=require", "postgresql://u@h/db?sslmode=require"),
        ("postgres://h/db?user=u&password=pw&sslmode=off", "postgres://h/db?user=u&sslmode=off"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql:///db", "postgresql:///db"),
    ],
)
def test_the_location_never_shows_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# --- against the session's server ------------------------------------------------------


@pytest.mark.postgres
def test_open_store_routes_urls_and_hides_the_password(pg_url: str) -> None:
    store = open_store(pg_url)
    try:
        assert isinstance(store, PostgresStore)
        assert PASSWORD not in store.location and "agentsaga@127.0.0.1" in store.location
    finally:
        store.close()


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda u: u.replace(PASSWORD, "wrong-" + PASSWORD), "password"),
        (lambda u: u.rsplit("/", 1)[0] + "/no_such_db", "does not exist"),
        (lambda u: u.replace("127.0.0.1:", "127.0.0.1:1").rsplit(":", 1)[0] + ":1/x", "running"),
    ],
    ids=["bad-password", "no-database", "refused"],
)
def test_connection_errors_say_what_to_do_without_the_password(
    pg_url: str, change: Callable[[str], str], says: str
) -> None:
    with pytest.raises(StoreError) as caught:
        PostgresStore(change(pg_url))
    message = caught.value.message
    assert says in message and "cannot connect to the PostgreSQL store postgresql://" in message
    assert PASSWORD not in message
    assert "Traceback" not in message and "\n" not in message


@pytest.mark.postgres
def test_a_dropped_connection_is_reopened_between_transactions(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    admin = PostgresStore(pg_url)
    try:
        pid = store._query("SELECT pg_backend_pid()")[0][0]
        admin._query("SELECT pg_terminate_backend(?)", (pid,))
        with pytest.raises(StoreError, match="lost the connection"):
            store._query("SELECT 1")
        # The next transaction reconnects: nothing was in flight.
        assert store._query("SELECT 1") == [(1,)]
    finally:
        store.close()
        admin.close()


@pytest.mark.postgres
def test_only_a_running_record_commits_without_waiting_for_the_disk(pg_url: str) -> None:
    """A step's running record is committed with synchronous_commit off; every other
    commit waits for the server's WAL flush (the session's server default is off: the
    store's session is turned on first, so both settings are seen)."""
    store = PostgresStore(pg_url)
    try:
        store._conn.execute("SET synchronous_commit TO on")
        store._conn.commit()
        with store.transaction(durable=False) as cur:
            assert cur.execute("SHOW synchronous_commit").fetchone() == ("off",)
        with store.transaction() as cur:
            assert cur.execute("SHOW synchronous_commit").fetchone() == ("on",)
    finally:
        store.close()


@pytest.mark.postgres
@pytest.mark.slow
def test_run_resume_rollback_through_the_command_against_postgres(
    env: Env, pg_fresh_url: Callable[[], str]
) -> None:
    """The installed command, in subprocesses, with ``--store postgresql://...``."""
    url = pg_fresh_url()
    path = env.write("p.yml", chain(3, fail_at=2))

    first = run_agentsaga("--store", url, "run", path, "--json")
    assert first.exit_code == 1, first
    rid = first.json()["run_id"]
    assert env.ledger.lines() == ["s1", "s2", "undo-s2"]

    (env.path / "flag").touch()
    second = run_agentsaga("--store", url, "resume", rid[:6])
    assert second.exit_code == 0, second
    assert env.ledger.lines() == ["s1", "s2", "undo-s2", "s2", "s3"]

    listed = run_agentsaga("--store", url, "runs", "--json")
    assert listed.exit_code == 0, listed
    assert rid in listed.stdout and "succeeded" in listed.stdout

    back = run_agentsaga("--store", url, "rollback", rid)
    assert back.exit_code == 0, back
    assert env.ledger.lines()[5:] == ["undo-s3", "undo-s2", "undo-s1"]

    store = PostgresStore(url)
    try:
        assert store.get_run(rid).status == "rolled_back"
        assert store.get_lease(rid) is None  # every command released its lease
    finally:
        store.close()
    # Everything went to PostgreSQL: no SQLite file appeared (AGENTSAGA_STORE names one).
    assert not Path(env.path / "state.db").exists()
    for result in (first, second, listed, back):
        assert PASSWORD not in result.output
