"""Making SQLite's write-ahead log durable, now or while the engine prepares the next step.

The store's connection commits with ``synchronous=NORMAL``: a commit is in the WAL file
(a killed process loses nothing) but not yet on the disk. A durable commit is then made
durable by one fsync of the WAL file, which is what ``synchronous=FULL`` does after each
commit. A step's checkpoint asks for that fsync *deferred*: a thread makes it while the
engine renders and records the next step, and the next step's running record waits for it
(``settle``) before anything of that step runs. The guarantee is FULL's: a finished step
is on disk before the next step starts; the fsync's wait is off the critical path.

One fsync covers every commit before it (the WAL is one file, synced whole), so a
durable commit also settles every deferred one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class WalSync:
    def __init__(self, db_path: Path) -> None:
        self._wal_path = Path(f"{db_path}-wal")
        self._fd = -1
        self._cond = threading.Condition()
        #: Deferred syncs asked for, and the number covered by a finished fsync.
        self._asked = 0
        self._covered = 0
        self._error: OSError | None = None
        #: The thread is in an fsync (settle waits for it rather than making its own).
        self._syncing = False
        self._thread: threading.Thread | None = None
        #: One fsync at a time: the descriptor may be replaced (below).
        self._fd_lock = threading.Lock()

    def now(self) -> None:
        """fsync the WAL in this thread: every commit so far is durable on return."""
        with self._cond:
            while self._syncing:  # an fsync begun earlier may miss the latest commit
                self._cond.wait()
            self._syncing = True
            asked = self._asked
        self._sync_claimed(asked, raise_error=True)

    def defer(self) -> None:
        """Ask the background thread to fsync the WAL; ``settle`` waits for it."""
        with self._cond:
            self._asked += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="agentsaga-wal-sync", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def settle(self) -> None:
        """Wait until every deferred sync is done; raise what the fsync raised. A sync the
        thread has not begun yet is made here: on a loaded machine the thread may wait
        for a core longer than the fsync takes."""
        with self._cond:
            claimed = self._covered < self._asked and not self._syncing
            if claimed:
                self._syncing = True
            asked = self._asked
        if claimed:
            self._sync_claimed(asked, raise_error=True)
        with self._cond:
            while self._covered < self._asked and self._error is None:
                self._cond.wait()
            error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        self.settle()
        with self._fd_lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._covered >= self._asked or self._syncing:
                    self._cond.wait()
                self._syncing = True
                asked = self._asked
            self._sync_claimed(asked, raise_error=False)

    def _sync_claimed(self, asked: int, raise_error: bool) -> None:
        """One fsync, by whoever set ``_syncing``; it covers the first ``asked`` requests.
        An error goes to this caller, or (the thread's) to the next ``settle``: never
        both, and a failed fsync is never retried as if it could clear the failure (the
        kernel may have dropped the pages it could not write)."""
        error: OSError | None = None
        try:
            self._fsync()
        except OSError as exc:
            error = exc
        with self._cond:
            self._syncing = False
            self._covered = max(self._covered, asked)
            if error is not None and not raise_error:
                self._error = error
            self._cond.notify_all()
        if error is not None and raise_error:
            raise error

    def _fsync(self) -> None:
        with self._fd_lock:
            # The WAL is created with the connection and kept while it is open; a
            # descriptor whose file was unlinked (nlink 0) is reopened, not synced in vain.
            if self._fd < 0 or os.fstat(self._fd).st_nlink == 0:
                if self._fd >= 0:
                    os.close(self._fd)
                self._fd = os.open(self._wal_path, os.O_RDONLY | os.O_CLOEXEC)
            _datasync(self._fd)


#: What SQLite itself syncs the WAL with where it can: the data (and the size, when it
#: grew), not the modification time, whose journal commit made each sync dearer.
_datasync = getattr(os, "fdatasync", os.fsync)
