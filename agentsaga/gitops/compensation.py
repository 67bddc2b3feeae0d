"""The compensations: :func:`reset_to`, :func:`revert_commits` and
:func:`delete_workspace` undo a run's git effects. Each is idempotent (a rollback may be
interrupted and re-run) and compare-and-swap: it takes the commit where the run left its
branch and refuses, saying what it found, if a person moved it since, unless ``force``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from agentsaga import faults
from agentsaga import trash as trash_mod
from agentsaga.errors import GitError, GitUnsafe
from agentsaga.gitops import pool as worktree_pool
from agentsaga.gitops.repo import delete_refs
from agentsaga.gitops.runner import (
    _SNAPSHOT_INDEX,
    REF_ROOT,
    SAVED_EDITS,
    STATE_DIR,
    _commit,
    _describe,
    _dot_git_dir,
    _execute,
    _git,
    _git_status,
    _resolve,
)
from agentsaga.gitops.snapshots import _require_on_branch
from agentsaga.gitops.worktrees import (
    Workspace,
    _at_user_position,
    _check_run_id,
    _intent_file,
    _is_run_folder,
    _on_branch,
    _registered_worktrees,
    _release_checkout,
    _stash_list,
    _stash_message,
    head,
)

_REVERT_TRAILER = "Agentsaga-Reverts:"


def _below_own_reverts(cwd: Path, tip: str) -> str:
    """The commit ``tip`` stands for once the run's own revert commits are seen through: a
    revert of ``base..commit`` made on (the equivalent of) ``commit`` leaves the tree of
    ``base``. A ``git: revert`` compensation moves the branch forward; the compensations
    after it, and the final branch deletion, must still recognise the branch as the run's
    and not mistake the revert for a person's work."""
    chain: list[tuple[str, str, str]] = []
    for _ in range(100):  # bounded: a rollback makes one revert per step at most
        body = _git(cwd, "log", "-1", "--format=%B", tip)
        ranges = [
            line.removeprefix(_REVERT_TRAILER).strip()
            for line in body.splitlines()
            if line.startswith(_REVERT_TRAILER)
        ]
        base, _, commit = (ranges[-1] if ranges else "").partition("..")
        parent = _resolve(cwd, f"{tip}^1")
        if not base or not commit or parent is None:
            break
        chain.append((tip, base, commit))
        tip = parent
    logical = tip
    for revert, base, commit in reversed(chain):
        logical = base if logical == commit else revert
    return logical


def _check_cas(ws: Workspace, tip: str, accepted: tuple[str, ...], force: bool) -> None:
    if force or tip in accepted or _below_own_reverts(ws.repo_root, tip) in accepted:
        return
    raise GitUnsafe(
        f"the run branch {ws.branch} is at {_describe(ws.repo_root, tip)}, not at "
        f"{accepted[0][:12]} where the run left it: a person (or another tool) committed on "
        f"it or moved it. Look with 'git log {ws.branch}'; to discard that work and undo "
        "anyway, rerun with --force"
    )


def reset_to(
    ws: Workspace, snapshot_sha: str, expected_head: str | None, force: bool = False
) -> None:
    """``git: reset``: the run branch, index and working tree exactly as at the snapshot.

    The branch and the index go to the snapshot's parent (the commit the step started
    from); the working tree becomes exactly the snapshot's tree: files the step modified or
    deleted come back, files it created (committed, or left half-written and untracked) go,
    and untracked files that existed before the step return. Ignored files are left alone.
    """
    if _resolve(ws.repo_root, f"refs/heads/{ws.branch}") is None:
        # The branch is gone (a `git: delete-branch` compensation ran first, or a person
        # deleted it): there is nothing of the run's left to reset, which is success.
        return
    parent = _resolve(ws.path, f"{snapshot_sha}^1")
    if parent is None:
        raise GitError(f"{snapshot_sha} is not an agentsaga snapshot (it has no parent commit)")
    tip = head(ws)
    _require_on_branch(ws)
    if expected_head is not None:
        # Already at the parent means an earlier reset got this far: carry on, idempotently.
        _check_cas(ws, tip, (expected_head, parent), force)
    # `--reset -u` overwrites changed and in-the-way untracked files with the snapshot's.
    _git(ws.path, "read-tree", "-u", "--reset", snapshot_sha)
    # What is still untracked now was not in the snapshot: the step made it. `.agentsaga/`
    # is excluded already; the extra -e guards the store if the exclude line was removed.
    _git(ws.path, "clean", "-f", "-d", "-q", "-e", f"/{STATE_DIR}/")
    faults.point("git.in_reset")
    if tip != parent:
        _git(
            ws.path, "update-ref", "-m", "agentsaga: reset", f"refs/heads/{ws.branch}", parent, tip
        )
    # Mixed reset: index = parent, working tree untouched (it already holds the snapshot).
    _git(ws.path, "reset", "-q")


def revert_commits(
    ws: Workspace, base: str, commit: str, expected_head: str | None, force: bool = False
) -> str | None:
    """``git: revert``: one commit on the run branch undoing ``base..commit``.

    For a branch others may have fetched, history is added to, not rewritten. Returns the
    revert commit, or ``None`` when there is nothing to revert or it was reverted already
    (recognised by the trailer this function writes).
    """
    if _resolve(ws.repo_root, f"refs/heads/{ws.branch}") is None:
        return None  # the branch is gone, and with it the commits to revert
    tip = head(ws)
    trailer = f"{_REVERT_TRAILER} {base}..{commit}"
    if trailer in _git(ws.path, "log", "-1", "--format=%B", tip).splitlines():
        return None
    if _git(ws.path, "rev-list", "--count", f"{base}..{commit}") == "0":
        return None
    if expected_head is not None:
        _check_cas(ws, tip, (expected_head,), force)
    _require_on_branch(ws)
    git_dir = _dot_git_dir(ws.path)
    if (git_dir / "REVERT_HEAD").exists() or (git_dir / "sequencer").exists():
        _git_status(ws.path, "revert", "--abort")  # our own, cut short by a crash
    status, out, err = _execute(
        ws.path, ("revert", "--no-commit", "--no-edit", f"{base}..{commit}"), None, check=False
    )
    if status != 0 or _git_status(ws.path, "diff", "--cached", "--quiet")[0] == 0:
        _git_status(ws.path, "revert", "--abort")
        if status == 0:
            return None  # the changes were already undone by later commits
        raise GitError(
            f"reverting {base[:12]}..{commit[:12]} on {ws.branch} conflicts with later "
            f"commits: {(err or out).strip()}; revert by hand in {ws.path}, or use git: reset"
        )
    subjects = _git(ws.path, "log", "--format=%h %s", f"{base}..{commit}")
    message = f"Revert {base[:12]}..{commit[:12]}\n\nThis reverts:\n{subjects}\n\n{trailer}\n"
    return _commit(ws.path, message)


# --- deleting a workspace --------------------------------------------------------------------


def delete_workspace(
    ws: Workspace,
    run_id: str,
    keep_refs: bool = False,
    expected_head: str | None = None,
    force: bool = False,
) -> None:
    """``git: delete-branch``: remove the run's branch, worktree and refs; restore the user.

    In branch isolation the user's checkout goes back to the branch (or detached commit)
    they started from, and their stashed changes are popped with ``--index``, so the index,
    working tree and stash list are as before the run. What the run left uncommitted in its
    workspace is discarded, as ``git worktree remove --force`` does for a worktree.
    Succeeds when called again, or when the branch is already gone.
    """
    _check_run_id(run_id)
    root = ws.repo_root
    tip = _resolve(root, f"refs/heads/{ws.branch}")
    # Every refusal comes before the first change, so a refused call changes nothing.
    if tip is not None and expected_head is not None:
        _check_cas(ws, tip, (expected_head,), force)
    worktrees = _registered_worktrees(root)
    on_run_branch = False
    own_path = ws.path.resolve() if ws.isolation == "worktree" else None
    elsewhere = [
        p for p, b in worktrees.items() if b == f"refs/heads/{ws.branch}" and p != own_path
    ]
    if ws.isolation == "branch":
        on_run_branch = _on_branch(root, ws.branch)
        if on_run_branch:
            elsewhere = [p for p in elsewhere if p != root.resolve()]
        elif not _at_user_position(ws):
            raise GitUnsafe(
                f"{root} is on neither the run branch {ws.branch} nor where the run started "
                f"({ws.user_branch or ws.user_head[:12]}); switch back to "
                f"{ws.user_branch or ws.user_head[:12]} and roll back again, so your "
                "stashed changes return to the right place"
            )
    if elsewhere and not force:
        raise GitUnsafe(
            f"the run branch {ws.branch} is checked out in {elsewhere[0]}; switch that "
            "worktree to another branch first, or rerun with --force"
        )

    if ws.isolation == "branch":
        _restore_user(ws, on_run_branch, run_id)
    else:
        _remove_worktree(ws, worktrees)
    if tip is not None:
        # The old value makes git itself refuse if the branch moved since we looked.
        _git(root, "update-ref", "-m", "agentsaga: delete", "-d", f"refs/heads/{ws.branch}", tip)
    if not keep_refs:
        # A person's edits saved from a waiting run's worktree outlive the run.
        delete_refs(root, f"{REF_ROOT}/{run_id}", keep=SAVED_EDITS)
    _intent_file(root, run_id).unlink(missing_ok=True)
    if ws.isolation == "branch":
        _release_checkout(root, run_id)


def _restore_user(ws: Workspace, on_run_branch: bool, run_id: str) -> None:
    root = ws.repo_root
    if ws.stash_commit is None:
        # Killed between `stash push` and recording it: the entry is found by its message,
        # so the user's changes never stay behind in the stash.
        message = _stash_message(run_id)
        ours = [sha for sha, subject in _stash_list(root) if subject.endswith(message)]
        ws.stash_commit = ours[0] if ours else None
    stash_index = None
    if ws.stash_commit is not None:
        shas = [sha for sha, _ in _stash_list(root)]
        # Gone from the list means a previous call popped it already.
        stash_index = shas.index(ws.stash_commit) if ws.stash_commit in shas else None
    if on_run_branch or stash_index is not None:
        # Anything in the tree now is the run's: the user's own changes are in the stash
        # (or there were none, since a dirty tree is refused without --allow-dirty).
        if on_run_branch:
            user_branch_exists = ws.user_branch is not None and (
                _resolve(root, f"refs/heads/{ws.user_branch}") is not None
            )
            if user_branch_exists:
                _git(root, "checkout", "-q", "-f", str(ws.user_branch))
            else:
                _git(root, "checkout", "-q", "-f", "--detach", ws.user_head)
        else:
            _git(root, "reset", "-q", "--hard")
        _git(root, "clean", "-f", "-d", "-q", "-e", f"/{STATE_DIR}/")
    (_dot_git_dir(root) / _SNAPSHOT_INDEX).unlink(missing_ok=True)
    if stash_index is not None:
        status, out, err = _execute(
            root, ("stash", "pop", "-q", "--index", f"stash@{{{stash_index}}}"), None, False
        )
        if status != 0:
            raise GitError(
                f"could not restore your stashed changes ({ws.stash_commit}) in {root}: "
                f"{(err or out).strip()}; they are safe in 'git stash list': apply them by "
                f"hand with 'git stash pop --index stash@{{{stash_index}}}'"
            )


def release_worktree(ws: Workspace) -> bool | None:
    """A finished run's worktree handed back, its branch, commits and refs kept: into the
    repository's pool (True) when it can be recycled, else deleted (False); None when
    there is none (branch isolation, or already gone). Uncommitted files go with it."""
    if ws.isolation != "worktree" or not (ws.path / ".git").exists():
        return None
    return _remove_worktree(ws, _registered_worktrees(ws.repo_root))


def _remove_worktree(ws: Workspace, worktrees: dict[Path, str | None]) -> bool:
    """Remove the run's worktree: into the pool (True) or deleted (False)."""
    root = ws.repo_root
    registered = ws.path.resolve() in worktrees
    pending = _is_run_folder(ws) and worktree_pool.claim_pending(root, ws.path.name)
    if pending:
        # A claim cut short by a crash left a folder that may be half-recycled: not pooled
        # (the next claim would clean it, but a plain deletion needs no proof); trashed
        # with its registration, which the claim may have left locked.
        worktree_pool.abandon_claim(root, ws.path, ws.path.name)
    poolable = (
        ws.pool and registered and not pending and _is_run_folder(ws) and not _locked(ws.path)
    )
    pooled = bool(poolable and worktree_pool.release(root, ws.path))
    if pooled:
        # Kept for the repository's next run, which recycles it (gitops/pool.py).
        registered = False
    if ws.path.exists() and _is_run_folder(ws) and not (registered and _locked(ws.path)):
        # Deleting thousands of files took most of a rollback: the folder is moved into
        # the trash (instant) and deleted by a background process; the registration,
        # whose folder is now gone, is pruned below. Uncommitted files go with it, as
        # with `worktree remove --force`.
        trash = root / STATE_DIR / "trash"
        if trash_mod.move_aside(ws.path, trash) is not None:
            trash_mod.empty_in_background(trash)
    if ws.path.exists() and registered:
        # Twice --force: also removes a locked worktree and one with uncommitted files,
        # which here are the run's own leftovers.
        _git(root, "worktree", "remove", "--force", "--force", str(ws.path))
    elif ws.path.exists() and _is_run_folder(ws):
        shutil.rmtree(ws.path)
    _git(root, "worktree", "prune")
    worktree_pool.forget_claim(root, ws.path.name)
    return pooled


def _locked(worktree: Path) -> bool:
    """``git worktree lock``: prune keeps a locked worktree's registration."""
    try:
        text = (worktree / ".git").read_text(encoding="utf-8")
    except OSError:
        return False
    admin = Path(text.partition("gitdir:")[2].strip())
    return (admin / "locked").exists()
