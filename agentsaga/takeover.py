"""What a process does when it takes over a run that another process was driving and
that died: the lease says there is no live owner now, so whatever the dead owner left
running or locked is left over, not in use.

* Stale git lock files under agentsaga's own refs and worktree (``gitops.stale_locks``)
  would make every later git command fail after its retries: they are removed, and the
  run's events say which.
"""

from __future__ import annotations

from agentsaga.runtime import Event, Runtime
from agentsaga.workspace import GitWorkspace


def take_over(rt: Runtime, run_id: str) -> None:
    """Clear what a dead owner left behind; called with the run's lease held."""
    run = rt.store.get_run(run_id)
    ws = rt.workspace(run)
    if isinstance(ws, GitWorkspace):
        _remove_stale_locks(rt, run_id, ws)


def _remove_stale_locks(rt: Runtime, run_id: str, ws: GitWorkspace) -> None:
    from agentsaga import gitops

    for lock in gitops.stale_locks(ws.ws, run_id):
        lock.unlink(missing_ok=True)
        rt.emit(
            Event(
                "note",
                run_id,
                message=f"removed a stale git lock left by a killed process: {lock}",
            )
        )
