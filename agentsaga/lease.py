"""Holding a run's lease: one process drives a run at a time.

The store decides who gets the lease (atomically, across hosts); this keeps it while the
owner works — a heartbeat thread renews it every third of its time to live — and notices
when it was lost (another process took it over after this one stalled past the expiry),
so the owner stops before it writes over the new owner's work.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from types import TracebackType

from agentsaga.errors import AgentsagaError, RunLocked
from agentsaga.store import Store


class HeldLease:
    def __init__(self, store: Store, run_id: str, owner_id: str, ttl_s: float) -> None:
        self.store, self.run_id, self.owner_id, self.ttl_s = store, run_id, owner_id, ttl_s
        self._stop = threading.Event()
        self._lost = False
        self._thread: threading.Thread | None = None

    def __enter__(self) -> HeldLease:
        self.store.acquire_lease(self.run_id, self.owner_id, self.ttl_s)
        self._thread = threading.Thread(target=self._beat, name="agentsaga-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.store.release_lease(self.run_id, self.owner_id)
        except AgentsagaError:
            pass  # it expires on its own

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.store.renew_lease(self.run_id, self.owner_id, self.ttl_s):
                    self._lost = True
                    return
            except AgentsagaError:
                continue  # a busy store: try again at the next beat

    def check(self) -> None:
        """Raise ``RunLocked`` naming the new owner if the lease was taken over."""
        if not self._lost:
            return
        lease = self.store.get_lease(self.run_id)
        if lease is not None:
            until = datetime.fromtimestamp(lease.expires_at, UTC).isoformat(timespec="seconds")
            raise RunLocked(self.run_id, lease.owner_id, lease.host, lease.pid, until)
