"""Everything agentsaga does to a git repository, and how each thing is undone exactly.

A run works on its own branch, in one of two workspaces:

* ``worktree`` (default): a linked worktree at ``<repo>/.agentsaga/worktrees/<run-id>``. The
  user's checkout, index and branch are never touched; they can keep working during a run.
* ``branch``: the run branch is checked out in the user's own checkout. A dirty tree is
  refused unless ``allow_dirty``; then it is stashed (untracked files included) and popped
  back with ``--index`` when the workspace is deleted.

Before a step may change files, :func:`snapshot` pins a *ghost commit* of the whole working
tree (tracked, modified and untracked-not-ignored files) under
``refs/agentsaga/<run-id>/<step-id>/<attempt>``, the way the Codex CLI does: a temporary
index (``GIT_INDEX_FILE``) seeded from the real one so ``add -A`` only rehashes what changed,
then ``write-tree``, ``commit-tree`` and ``update-ref``. The real index is never written, and
the ref keeps the commit safe from ``git gc``.

The compensations (:func:`reset_to`, :func:`revert_commits`, :func:`delete_workspace`) are
idempotent, since a rollback may be interrupted and re-run, and compare-and-swap: they take
the commit where the run left its branch and refuse, saying what they found, if a person
moved it since, unless ``force``. agentsaga only ever moves or deletes the run branch and
refs under ``refs/agentsaga/<run-id>/``; nothing else in the repository is written, except
one line in ``info/exclude`` that hides ``.agentsaga/``.

Every git command goes through gitpython's ``Git.execute`` (the git binary): gitpython's
object layer is much slower for index work, and git's own plumbing already does each of
these operations atomically.

The package is split by job: :mod:`~agentsaga.gitops.runner` (running git, lock retries),
:mod:`~agentsaga.gitops.repo` (inspecting a repository and its files),
:mod:`~agentsaga.gitops.worktrees` (the workspace: worktree or branch isolation, stash),
:mod:`~agentsaga.gitops.diffs` (comparing commits), :mod:`~agentsaga.gitops.snapshots`
(ghost commits, step commits) and :mod:`~agentsaga.gitops.compensation` (the undo
operations). It is the only package that imports ``git``; everything public is re-exported
here, so callers write ``from agentsaga import gitops`` and ``gitops.snapshot(...)``.
"""

from __future__ import annotations

from agentsaga.gitops.compensation import (
    delete_workspace,
    release_worktree,
    reset_to,
    revert_commits,
)
from agentsaga.gitops.diffs import branches_containing, changed_files, diff, diff_worktree, diffstat
from agentsaga.gitops.repo import (
    RepoInfo,
    delete_refs,
    dirty_files,
    ensure_excluded,
    ignored_by_git,
    init_repo,
    init_submodules,
    inspect_repo,
    list_files,
    ref_exists,
    tracked,
)
from agentsaga.gitops.runner import REF_ROOT, SAVED_EDITS, STATE_DIR, user_name
from agentsaga.gitops.snapshots import (
    changes_since,
    commit_all,
    is_step_commit,
    snapshot,
    snapshot_checkout,
)
from agentsaga.gitops.worktrees import (
    Workspace,
    create_workspace,
    head,
    intended_workspace,
    reopen_workspace,
    repair_worktree,
    stale_locks,
    workspace_exists,
    worktree_link_broken,
)

__all__ = [
    "REF_ROOT",
    "RepoInfo",
    "SAVED_EDITS",
    "STATE_DIR",
    "Workspace",
    "branches_containing",
    "changed_files",
    "changes_since",
    "commit_all",
    "create_workspace",
    "delete_refs",
    "delete_workspace",
    "release_worktree",
    "diff",
    "diff_worktree",
    "diffstat",
    "dirty_files",
    "ensure_excluded",
    "head",
    "ignored_by_git",
    "init_repo",
    "init_submodules",
    "inspect_repo",
    "intended_workspace",
    "is_step_commit",
    "list_files",
    "ref_exists",
    "reopen_workspace",
    "repair_worktree",
    "reset_to",
    "revert_commits",
    "snapshot",
    "snapshot_checkout",
    "stale_locks",
    "worktree_link_broken",
    "tracked",
    "user_name",
    "workspace_exists",
]
