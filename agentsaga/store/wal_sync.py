"""Making SQLite's write-ahead log durable after a commit that must survive a power cut.

The store's connection commits with ``synchronous=NORMAL``: a commit is in the WAL file
(a killed process loses nothing) but not yet on the disk. A durable commit is then made
durable by one fdatasync of the WAL file, which is what ``synchronous=FULL`` does after
each commit; a commit that only has to survive a killed process (a step's running record)
skips it. One fsync covers every commit before it (the WAL is one file, synced whole).

The fsync is made in the committing thread, before the commit returns. Decision: a
thread that synced a step's checkpoint while the next step was prepared saved nothing
measurable on an idle machine and cost 0.3-0.5 ms a step under CPU contention, its
hand-offs of the GIL waking the engine's thread more often (docs/design.md,
"Performance").
"""

from __future__ import annotations

import os
from pathlib import Path


class WalSync:
    def __init__(self, db_path: Path) -> None:
        self._wal_path = Path(f"{db_path}-wal")
        self._fd = -1

    def now(self) -> None:
        """fsync the WAL: every commit so far is durable on return. A failed fsync is
        raised, never retried as if it could clear the failure (the kernel may have
        dropped the pages it could not write)."""
        # The WAL is created with the connection and kept while it is open; a descriptor
        # whose file was unlinked (nlink 0) is reopened, not synced in vain.
        if self._fd < 0 or os.fstat(self._fd).st_nlink == 0:
            self.close()
            self._fd = os.open(self._wal_path, os.O_RDONLY | os.O_CLOEXEC)
        _datasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


#: What SQLite itself syncs the WAL with where it can: the data (and the size, when it
#: grew), not the modification time, whose journal commit made each sync dearer.
_datasync = getattr(os, "fdatasync", os.fsync)
