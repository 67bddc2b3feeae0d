"""``agentsaga release RUN``: a finished run's worktree handed back, its branch kept.

A run that succeeds keeps its branch and its worktree (README, "Where a run works"). Once
the branch is merged or its patch applied, the worktree is only disk, and the
repository's next run pays a full checkout. Releasing moves the worktree into the
repository's pool (``gitops/pool.py``), where the next run recycles it and writes only
the files that differ, or deletes it when it cannot be recycled (a submodule, a process
still running in it, a full pool). The run's branch, commits, snapshot refs and records
stay: ``diff``, ``show`` and ``report`` work as before, and a later ``rollback`` re-adds
the worktree from the branch first and undoes the run as usual.

Refused before anything changes (exit 2): a run that has not succeeded (a failed,
interrupted or waiting run is resumed in its worktree; a running one is another
process's, whose lease also refuses), and a worktree holding changes that are not
committed on the run branch, unless ``force`` (they would be lost).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentsaga.errors import UserInputError
from agentsaga.lease import HeldLease
from agentsaga.states import RunStatus
from agentsaga.store import Store, utcnow

if TYPE_CHECKING:
    from agentsaga.gitops import Workspace

#: Files named when a worktree's uncommitted changes refuse the release.
_LISTED = 10


@dataclass
class Released:
    run_id: str
    #: pooled: kept for the next run; deleted: not recyclable; none: there was no worktree.
    outcome: str
    path: str
    branch: str


def check(store: Store, run_id: str, force: bool = False) -> Workspace | None:
    """Raise what refuses ``run_id``'s release; else its git workspace (None: nothing to
    release). Called for every run before any is released, and again under the lease."""
    from agentsaga import gitops
    from agentsaga.workspace import GitWorkspace
    from agentsaga.workspace import from_json as workspace_from_json

    run = store.get_run(run_id)
    if run.status != RunStatus.SUCCEEDED:
        why = (
            "its worktree is gone already"
            if run.status == RunStatus.ROLLED_BACK
            else f"resume needs its worktree; 'agentsaga rollback {run_id}' undoes it"
        )
        raise UserInputError(
            f"run {run_id} is {run.status}: release hands back a succeeded run's worktree ({why})"
        )
    ws = workspace_from_json(run.workspace, run_id) if run.workspace else None
    if not isinstance(ws, GitWorkspace):
        return None
    inner: Workspace = ws.ws
    if inner.isolation == "worktree" and (inner.path / ".git").exists() and not force:
        _refuse_uncommitted(run_id, gitops.dirty_files(inner.path))
    return inner


def release(store: Store, run_id: str, force: bool = False, lease_ttl_s: float = 30.0) -> Released:
    """Hand back ``run_id``'s worktree; see the module's docstring."""
    from agentsaga import gitops

    owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with HeldLease(store, run_id, owner, lease_ttl_s):
        inner = check(store, run_id, force)
        if inner is None:
            return Released(run_id, "none", "", "")
        outcome = gitops.release_worktree(inner)
        if outcome is not None:
            state = {**store.get_run(run_id).state, "released": {"at": utcnow(), "pooled": outcome}}
            store.update_run(run_id, state=state)
        kind = {None: "none", True: "pooled", False: "deleted"}[outcome]
        return Released(run_id, kind, str(inner.path), str(inner.branch))


def _refuse_uncommitted(run_id: str, dirty: list[str]) -> None:
    if not dirty:
        return
    listed = ", ".join(line[3:] for line in dirty[:_LISTED])
    more = f" and {len(dirty) - _LISTED} more" if len(dirty) > _LISTED else ""
    raise UserInputError(
        f"run {run_id}'s worktree has changes not committed on its branch ({listed}{more}); "
        "commit or copy them first, or release with --force to drop them"
    )
