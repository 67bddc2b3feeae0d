"""The default store: one SQLite file per repository, ``<repo>/.agentsaga/state.db``."""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentsaga import faults
from agentsaga.errors import StoreError
from agentsaga.store.sql import SqlStore
from agentsaga.store.wal_sync import WalSync

_OPEN_PATIENCE_S = 30.0


class SqliteStore(SqlStore):
    dialect = "sqlite"

    def __init__(self, path: Path, *, creating: bool = False) -> None:
        self.path = path
        self.location = str(path)
        # The lease heartbeat thread shares this connection; the lock serialises them.
        self._lock = threading.RLock()
        #: Makes commits durable (the WAL's fsync); None when the file is not in WAL mode
        #: and SQLite syncs each commit itself (synchronous=FULL).
        self._wal_sync: WalSync | None = None
        try:
            if not creating:
                _make_private_dir(path.parent)
                if not path.exists():
                    _create(path)
                elif path.stat().st_size == 0:
                    raise StoreError(_damaged(path))
            self._conn = _connect(str(path))
            try:
                self._open_with_retries()
            except sqlite3.OperationalError:
                if not _read_only_filesystem(path.parent):
                    raise
                # A read-only filesystem: WAL cannot create its shared-memory file, so
                # open the file as immutable. `runs`, `show` and `logs` work; the first
                # write fails with "read-only" (nothing can write there anyway).
                self._conn.close()
                self._conn = _connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        except sqlite3.Error as exc:
            raise StoreError(_explain(exc, path)) from exc
        except OSError as exc:
            raise StoreError(f"cannot open the store at {path}: {exc.strerror}") from exc

    def _open_with_retries(self) -> None:
        """Configure and migrate. Two processes opening a new store at once (two runs
        started together in a fresh repository) can meet SQLite's lock while one switches
        the file to WAL, which the busy timeout does not cover: wait and try again."""
        deadline = time.monotonic() + _OPEN_PATIENCE_S
        delay = 0.01
        while True:
            try:
                self._configure()
                self.migrate()
                return
            except (sqlite3.OperationalError, StoreError) as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    def _configure(self) -> None:
        conn = self._conn
        # WAL lets `agentsaga runs` read while a run writes, and makes a commit one append.
        (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if str(mode).lower() == "wal":
            # Commits go to the WAL without an fsync; a durable one is then synced by
            # WalSync: what FULL gives, and a step's running record can skip it.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._wal_sync = WalSync(self.path)
        else:
            # FULL syncs at every commit: a checkpoint survives power loss, not only a
            # killed process.
            conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # A generous busy timeout rides out another process's short write transactions
        # (a second run in the same repository, `runs` while a run checkpoints).
        conn.execute("PRAGMA busy_timeout=30000")

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[sqlite3.Cursor]:
        """One write transaction. ``durable=False`` commits without the fsync: the commit
        is in the WAL file (another process, or this one restarted after a kill -9, sees
        it) but a power loss may take it back; the next durable commit's fsync covers it
        (the WAL is one file, synced whole)."""
        with self._lock:
            cur = self._conn.cursor()
            try:
                # IMMEDIATE takes the write lock now, so read-then-write is atomic.
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                faults.point("store.in_write")
                cur.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(_explain(exc, self.path)) from exc
                raise
            finally:
                cur.close()
            if self._wal_sync is not None and durable:
                try:
                    self._wal_sync.now()
                except OSError as exc:
                    raise StoreError(_cannot_sync(exc, self.path)) from exc

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Cursor]:
        """One SELECT in autocommit mode is its own consistent read transaction: no write
        lock, no commit, so reads never wait behind or delay another process's writes."""
        with self._lock:
            cur = self._conn.cursor()
            try:
                yield cur
            except sqlite3.Error as exc:
                raise StoreError(_explain(exc, self.path)) from exc
            finally:
                cur.close()

    def close(self) -> None:
        with self._lock:
            if self._wal_sync is not None:
                self._wal_sync.close()
            self._conn.close()


def _connect(target: str, uri: bool = False) -> sqlite3.Connection:
    return sqlite3.connect(
        target,
        # Autocommit mode: transactions are ours, opened with BEGIN IMMEDIATE.
        isolation_level=None,
        check_same_thread=False,
        timeout=30,
        uri=uri,
    )


def _create(path: Path) -> None:
    """Create a new store beside ``path`` and link it into place whole. A store file
    therefore never exists empty, and an empty ``state.db`` is a damaged one (truncated,
    or overwritten), not a new store to create silently over the runs it recorded."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.new")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        store = SqliteStore(tmp, creating=True)
        # Closing the last connection checkpoints the WAL into the file and removes it.
        store.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first: use theirs
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _damaged(path: Path) -> str:
    return (
        f"the store {path} is damaged: the file is empty (truncated?). The runs it recorded "
        "are lost to agentsaga; their branches (agentsaga/...) and worktrees "
        "(.agentsaga/worktrees) are still in the repository. Move the file aside "
        f"(mv {path} {path}.damaged) to start a new store, or restore it from a backup"
    )


def _read_only_filesystem(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _make_private_dir(path: Path) -> None:
    """Create the store's folder readable by its owner only (it holds prompts and logs).
    Inside a repository it ignores itself, so it never shows in ``git status`` even
    before a run has added it to ``.git/info/exclude``."""
    if path.is_dir() and _read_only_filesystem(path):
        return  # nothing to create, and nothing could be
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    ignore = path / ".gitignore"
    if path.name == ".agentsaga" and not ignore.exists():
        ignore.write_text("# agentsaga's state, logs and worktrees\n*\n", encoding="utf-8")


def _read_only(path: Path) -> bool:
    folder = path if path.is_dir() else path.parent
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY) or not os.access(folder, os.W_OK)
    except OSError:
        return False


def _explain(exc: sqlite3.Error, path: Path) -> str:
    text = str(exc)
    if "readonly" in text or "read-only" in text or ("unable to open" in text and _read_only(path)):
        return f"the store {path} is read-only: {text}; fix its permissions, then resume the run"
    if "disk is full" in text or "database or disk is full" in text:
        return f"the disk holding {path} is full: {text}; free space, then resume the run"
    if "locked" in text or "busy" in text:
        return f"the store {path} is locked by another process for too long: {text}"
    if "malformed" in text or "not a database" in text:
        return f"the store {path} is damaged: {text}"
    return f"store error at {path}: {text}"


def _cannot_sync(exc: OSError, path: Path) -> str:
    return (
        f"cannot make the store's last commit durable ({path}-wal): {exc.strerror or exc}; "
        "the disk may be failing or full"
    )
