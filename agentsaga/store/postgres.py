"""The team store: PostgreSQL, selected with ``--store postgresql://user:pw@host/db``.

It runs the same SQL as SQLite (``sql.py``); this module supplies the connection, the
parameter style and the transaction, and translates psycopg's errors into ``StoreError``.

Locking. Every transaction begins with ``SELECT pg_advisory_xact_lock(<agentsaga key>)``:
one writer at a time per database, released by COMMIT or ROLLBACK (or by the server when
the connection dies, so a killed process never leaves it held). That is exactly what
SQLite's ``BEGIN IMMEDIATE`` gives the shared SQL, so every read-then-write in ``sql.py``
(next attempt number, "is the lease free", "is this migration applied") is atomic on both
backends with no per-method code, including the case row locks cannot cover: two hosts
racing for a lease whose row does not exist yet (``SELECT ... FOR UPDATE`` locks nothing
then, and both would INSERT). Transactions here are a few milliseconds and run a handful
of times per step, so serialising them costs nothing a pipeline of LLM calls would notice;
a finer scheme (per-run keys) would need the run id in ``transaction()`` and buys nothing
at this rate. The lease query also says ``FOR UPDATE`` (``_lock_suffix``): redundant under
the advisory lock, and correct on its own should the lock ever become finer.

Isolation is READ COMMITTED on purpose: every statement takes a fresh snapshot, so the
statements after the lock see everything committed by the previous holder. (Under
REPEATABLE READ the snapshot would be the lock statement's own, taken *before* the wait.)
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from agentsaga import faults
from agentsaga.errors import StoreError
from agentsaga.store.sql import SqlStore

if TYPE_CHECKING:
    import psycopg

#: The advisory lock key agentsaga's transactions take: a constant of our own (the eight
#: bytes "agntsaga" read as a signed 64-bit int), so it does not collide with the keys
#: other applications sharing the database might use. Advisory locks are per database.
LOCK_KEY = int.from_bytes(b"agntsaga", "big", signed=True)

#: How long a transaction waits for the lock, and a connection for the server, before
#: failing with a clear error instead of hanging (SQLite's busy_timeout is 30 s as well).
LOCK_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 10
#: Our transactions never idle (no work between statements), so a session idle inside
#: one for this long is stuck; the server ends it and frees the lock.
IDLE_TIMEOUT_MS = 15_000


def redact_url(url: str) -> str:
    """The URL without its password (in the userinfo or as a ``password=`` parameter):
    what ``location``, messages and logs show."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hosts = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}@{hosts}" if user else hosts
        query = urlencode(
            [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"]
        )
        # Not urlunsplit: it drops an empty host, and postgresql:///db (the local
        # socket) must stay what the user wrote.
        shown = f"{parts.scheme}://{netloc}{parts.path}"
        if query:
            shown += f"?{query}"
        return shown + (f"#{parts.fragment}" if parts.fragment else "")
    except ValueError:
        return "postgresql://(unparsable URL)"


@functools.lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """``?`` placeholders -> psycopg's ``%s``; a literal ``%`` -> ``%%``. Text inside
    single-quoted SQL literals is left alone (a ``?`` there is a character, not a
    parameter); ``%`` is doubled everywhere, since psycopg scans the whole string."""
    out: list[str] = []
    for i, chunk in enumerate(sql.split("'")):
        chunk = chunk.replace("%", "%%")
        if i % 2 == 0:  # outside quotes ('' escapes split into an empty inside chunk)
            chunk = chunk.replace("?", "%s")
        out.append(chunk)
    return "'".join(out)


class PostgresStore(SqlStore):
    dialect = "postgres"

    def __init__(self, url: str) -> None:
        self.location = redact_url(url)
        self._url = url
        self._password = _password_of(url)
        # The lease heartbeat thread shares this connection; the lock serialises them.
        self._lock = threading.RLock()
        try:
            import psycopg  # noqa: F401  lazily: SQLite users need not install it
        except ImportError as exc:
            raise StoreError(
                "a postgresql:// store needs psycopg: pip install 'agentsaga[postgres]'"
            ) from exc
        self._conn = self._connect()
        # Two processes opening a fresh database at once: migrate() runs each step in a
        # transaction(), which holds the advisory lock, and re-checks `migrations` inside
        # it, so exactly one applies each migration and the other sees it applied.
        self.migrate()

    # --- the connection -----------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg

        try:
            params = psycopg.conninfo.conninfo_to_dict(self._url)
        except psycopg.Error as exc:
            raise StoreError(
                f"the store URL {self.location} is not a valid PostgreSQL URL: "
                f"{self._scrub(str(exc))}"
            ) from exc
        # Defaults the URL may override: a bounded wait for an unreachable host, and a
        # name in pg_stat_activity so an administrator can tell our sessions apart.
        params.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
        params.setdefault("application_name", "agentsaga")
        try:
            conninfo = psycopg.conninfo.make_conninfo("", **params)
            conn = psycopg.connect(conninfo, autocommit=False)
        except psycopg.Error as exc:
            raise StoreError(self._explain(exc, connecting=True)) from exc
        try:
            conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED  # see module doc
            with conn.cursor() as cur:
                # A waiter gives up (LockNotAvailable -> StoreError) instead of hanging
                # behind a stuck transaction; the server releases a dead session's locks.
                cur.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
                # A holder stuck mid-transaction (stopped, suspended) is evicted by the
                # server before the waiters' lock_timeout runs out.
                cur.execute(f"SET idle_in_transaction_session_timeout = {IDLE_TIMEOUT_MS}")
            conn.commit()
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(self._explain(exc)) from exc
        return conn

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[psycopg.Cursor[tuple[Any, ...]]]:
        """One write transaction; ``durable=False`` commits without waiting for the
        server's WAL flush (below)."""
        import psycopg

        with self._lock:
            if self._conn.closed or self._conn.broken:
                # The server restarted or the network dropped between two transactions:
                # nothing was in flight, so reconnecting is safe.
                self._conn = self._connect()
            conn = self._conn
            try:
                with conn.cursor() as cur:
                    # autocommit is off: this first statement opens the transaction.
                    # Not durable: committed to the server (a client crash keeps it),
                    # flushed to disk with the next durable commit, which flushes the WAL
                    # in order. Set in the same statement as the lock: one round trip.
                    cur.execute(
                        f"SELECT pg_advisory_xact_lock({LOCK_KEY})"
                        if durable
                        else f"SELECT pg_advisory_xact_lock({LOCK_KEY}), "
                        "set_config('synchronous_commit', 'off', true)"
                    )
                    yield cur
                    faults.point("store.in_write")
                conn.commit()
            except BaseException as exc:
                if not conn.closed and not conn.broken:
                    try:
                        conn.rollback()
                    except psycopg.Error:
                        pass  # the original error is the one worth reporting
                if isinstance(exc, psycopg.Error):
                    raise StoreError(self._explain(exc)) from exc
                raise

    def _param(self, sql: str) -> str:
        return to_pyformat(sql)

    def _lock_suffix(self) -> str:
        return " FOR UPDATE"

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- errors -------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        text = text.replace(self._url, self.location)
        if self._password:
            for form in {self._password, unquote(self._password)}:
                text = text.replace(form, "***")
        return text

    def _explain(self, exc: Exception, *, connecting: bool = False) -> str:
        from psycopg import OperationalError, errors

        where = self.location
        text = self._scrub(" ".join(str(exc).split()))  # libpq's messages span lines
        if isinstance(exc, errors.InvalidPassword | errors.InvalidAuthorizationSpecification):
            return (
                f"the PostgreSQL server refused the login for {where}: {text}; check the "
                "user and password in the URL (and the server's pg_hba.conf)"
            )
        if isinstance(exc, errors.InvalidCatalogName):
            return f"the database in {where} does not exist: {text}; create it (createdb NAME)"
        if isinstance(exc, errors.InsufficientPrivilege):
            return (
                f"the user in {where} may not do this: {text}; it needs to create tables "
                "in the database (GRANT CREATE) and read and write them"
            )
        if isinstance(exc, errors.LockNotAvailable):
            return (
                f"the store {where} is locked by another agentsaga process for too long "
                f"({LOCK_TIMEOUT_MS // 1000} s): {text}"
            )
        if isinstance(exc, errors.DiskFull):
            return f"the PostgreSQL server of {where} is out of disk: {text}; free space, resume"
        if connecting:
            # Connection failures carry no SQLSTATE: libpq's text is all there is.
            if "password authentication failed" in text or "no password supplied" in text:
                hint = "check the user and password in the URL"
            elif "does not exist" in text:
                hint = "check the user and database in the URL; create the database (createdb NAME)"
            else:
                hint = "check that the server is running and reachable at the URL's host and port"
            return f"cannot connect to the PostgreSQL store {where}: {text}; {hint}"
        conn = getattr(self, "_conn", None)
        if isinstance(exc, OperationalError) or (conn is not None and conn.broken):
            return (
                f"lost the connection to the PostgreSQL store {where}: {text}; the run can "
                "be resumed once the server is reachable"
            )
        return f"store error at {where}: {text}"


def _password_of(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        password = parts.password or dict(parse_qsl(parts.query)).get("password")
    except ValueError:
        return None
    return password or None
