"""The run's lease: one process drives a run at a time, in SQL both dialects accept.

A mixin of ``SqlStore`` (``sql_base.SqlMixin`` declares what it calls); PostgreSQL adds
``FOR UPDATE`` through ``_lock_suffix``.
"""

from __future__ import annotations

import os
import socket
import time

from agentsaga.errors import RunLocked
from agentsaga.store import Lease, pid_alive
from agentsaga.store.sql_base import SqlMixin


class LeaseSql(SqlMixin):
    def acquire_lease(self, run_id: str, owner_id: str, ttl_s: float) -> None:
        """Take the run's lease, or raise RunLocked naming the live owner.

        A lease is free when it expired (the owner stopped heartbeating: any host), or when
        its owner was on this host and its pid is gone (kill -9: no need to wait out the
        expiry on the machine that can see the process is dead).
        """
        host, pid, now = socket.gethostname(), os.getpid(), time.time()
        with self.transaction() as cur:
            row = self._exec(
                cur,
                "SELECT owner_id, host, pid, expires_at FROM leases WHERE run_id = ?"
                + self._lock_suffix(),
                (run_id,),
            ).fetchone()
            if row is not None:
                owner, owner_host, owner_pid, expires = row
                free = (
                    owner == owner_id
                    or expires < now
                    or (owner_host == host and not pid_alive(int(owner_pid)))
                )
                if not free:
                    from datetime import UTC, datetime

                    until = datetime.fromtimestamp(expires, UTC).isoformat(timespec="seconds")
                    raise RunLocked(run_id, owner, owner_host, int(owner_pid), until)
                self._exec(cur, "DELETE FROM leases WHERE run_id = ?", (run_id,))
            self._exec(
                cur,
                "INSERT INTO leases (run_id, owner_id, host, pid, heartbeat_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, owner_id, host, pid, now, now + ttl_s),
            )

    def _lock_suffix(self) -> str:
        return ""

    def renew_lease(self, run_id: str, owner_id: str, ttl_s: float) -> bool:
        now = time.time()
        with self.transaction() as cur:
            cur = self._exec(
                cur,
                "UPDATE leases SET heartbeat_at = ?, expires_at = ? "
                "WHERE run_id = ? AND owner_id = ?",
                (now, now + ttl_s, run_id, owner_id),
            )
            return bool(cur.rowcount)

    def release_lease(self, run_id: str, owner_id: str) -> None:
        with self.transaction() as cur:
            self._exec(
                cur, "DELETE FROM leases WHERE run_id = ? AND owner_id = ?", (run_id, owner_id)
            )

    def get_lease(self, run_id: str) -> Lease | None:
        rows = self._query(
            "SELECT run_id, owner_id, host, pid, heartbeat_at, expires_at "
            "FROM leases WHERE run_id = ?",
            (run_id,),
        )
        if not rows:
            return None
        r = rows[0]
        return Lease(r[0], r[1], r[2], int(r[3]), float(r[4]), float(r[5]))
