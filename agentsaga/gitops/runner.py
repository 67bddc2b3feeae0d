"""Running git: the one place agentsaga calls the git binary (through gitpython), with
the environment checks that keep a command on the intended repository and the short retries
that ride out another process's lock files; plus the small helpers every other part of
:mod:`agentsaga.gitops` builds on (resolving revisions, committing, finding git dirs).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import git
from git.exc import GitCommandError, GitCommandNotFound

from agentsaga.errors import GitError, GitUnsafe

STATE_DIR = ".agentsaga"


REF_ROOT = "refs/agentsaga"
#: In the name of a ref that holds a person's edits saved from a run's worktree
#: (``review_edits.py``): deleting the run's refs keeps them.
SAVED_EDITS = "/reviewer-edits-"


# Ghost commits are private bookkeeping: a fixed identity means they work in a repository
# with no user.email configured, and never carry the user's name into refs they did not make.
_AGENTSAGA_IDENT = {
    f"GIT_{who}_{what}": value
    for who in ("AUTHOR", "COMMITTER")
    for what, value in (("NAME", "agentsaga"), ("EMAIL", "agentsaga@localhost"))
}


# Kept in the workspace's git dir between snapshots; never the real index.
_SNAPSHOT_INDEX = "agentsaga-snapshot.index"


_REDIRECTS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
)


#: Two runs in one repository may touch the same lock files (packed-refs.lock on branch
#: deletion, config.lock on worktree add): a few short waits ride that out.
_LOCK_RETRIES = 20


# --- running git ---------------------------------------------------------------------------


def _execute(
    cwd: Path, args: tuple[str, ...], env: dict[str, str] | None, check: bool
) -> tuple[int, str, str]:
    # gitpython silently falls back to the process's own cwd when `cwd` does not exist,
    # which would point a reset or a clean at the wrong repository: refuse first.
    if not cwd.is_dir():
        raise GitError(f"{cwd} does not exist or is not a directory")
    # These would silently point every command at another repository or index (git sets
    # GIT_INDEX_FILE for its hooks), and gitpython can only add variables, not remove them.
    leaked = [name for name in _REDIRECTS if name in os.environ and name not in (env or {})]
    if leaked:
        raise GitUnsafe(
            f"{', '.join(leaked)} is set in the environment (as inside a git hook), so git "
            "would act on another repository or index; unset it and run agentsaga again"
        )
    for attempt in range(_LOCK_RETRIES + 1):
        try:
            status, out, err = git.Git(str(cwd)).execute(
                ["git", *args], with_extended_output=True, with_exceptions=check, env=env
            )
        except GitCommandNotFound as exc:
            raise GitError("the git command was not found; install git and put it on PATH") from exc
        except GitCommandError as exc:
            stderr = str(exc.stderr or "").strip().removeprefix("stderr:").strip(" '\n")
            if ".lock" in stderr and "exists" in stderr and attempt < _LOCK_RETRIES:
                # Another run (or the user's git) holds a lock on shared repository state
                # (packed-refs, config, a worktree's index) for a moment: wait, try again.
                time.sleep(0.05 * (attempt + 1))
                continue
            raise GitError(f"git {' '.join(args[:2])} failed in {cwd}: {stderr}") from exc
        return int(status or 0), str(out), str(err)
    raise AssertionError("unreachable")  # pragma: no cover


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run git in ``cwd``; its stdout, or :class:`GitError` naming the command and stderr."""
    return _execute(cwd, args, env, check=True)[1]


def _git_status(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a git command whose non-zero exit is an answer, not a failure."""
    status, out, _ = _execute(cwd, args, env, check=False)
    return status, out


#: Tries of ``git worktree add`` while another run's worktree is being added.
_ADD_TRIES = 20


def add_worktree(
    repo_root: Path, path: Path, branch: str, base: str, create_branch: bool, *options: str
) -> None:
    """``git worktree add`` of ``path`` on ``branch`` (created at ``base`` when
    ``create_branch`` and it does not exist yet), waiting out another run's add.

    Two runs starting at once: git, adding one worktree, reads the others' git dirs under
    ``.git/worktrees`` and fails on one that is half made ("failed to read
    .git/worktrees/X/commondir"), after creating the branch: wait, and add the worktree
    on the branch it made."""
    for attempt in range(_ADD_TRIES):
        new = create_branch and _resolve(repo_root, f"refs/heads/{branch}") is None
        where = ("-b", branch, str(path), base) if new else (str(path), branch)
        try:
            _git(repo_root, "worktree", "add", "-q", *options, *where)
            return
        except GitError as exc:
            if not _sibling_half_made(exc) or attempt == _ADD_TRIES - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _sibling_half_made(exc: GitError) -> bool:
    """Git failed reading another worktree's git dir that ``git worktree add`` is making."""
    text = str(exc)
    return "failed to read" in text and "worktrees/" in text


def worktree_list(cwd: Path) -> str:
    """``git worktree list --porcelain``, waiting out another run's ``git worktree add``
    (git reads every worktree's git dir, and fails on one half made)."""
    for attempt in range(_ADD_TRIES):
        try:
            return _git(cwd, "worktree", "list", "--porcelain")
        except GitError as exc:
            if not _sibling_half_made(exc) or attempt == _ADD_TRIES - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _resolve(cwd: Path, rev: str) -> str | None:
    status, out = _git_status(cwd, "rev-parse", "--verify", "-q", f"{rev}^{{commit}}")
    return out.strip() if status == 0 else None


def _describe(cwd: Path, sha: str) -> str:
    return _git(cwd, "log", "-1", "--format=%h %s (by %an <%ae>, %cr)", sha)


def user_name(cwd: Path) -> str | None:
    """The ``user.name`` git would sign commits with in ``cwd``, if it has one."""
    status, out = _git_status(cwd, "config", "user.name")
    return out.strip() or None if status == 0 else None


_KNOWN_IDENT: dict[Path, bool] = {}


def _commit_env(cwd: Path) -> dict[str, str] | None:
    # Commits on the run branch carry the user's identity when git knows it; without one
    # (a fresh CI box) the commit must still succeed, so fall back to agentsaga's. Asked
    # once per folder and process: it was one git process per committing step.
    if cwd not in _KNOWN_IDENT:
        _KNOWN_IDENT[cwd] = _git_status(cwd, "var", "GIT_COMMITTER_IDENT")[0] == 0
    return None if _KNOWN_IDENT[cwd] else dict(_AGENTSAGA_IDENT)


def _commit(cwd: Path, message: str) -> str:
    """Commit the index on the checked-out branch; the new commit's sha.

    ``--no-gpg-sign``: run commits are the tool's own, and a user's ``commit.gpgsign=true``
    must not make them wait on (or fail for want of) their signing key. ``--no-verify``:
    a user's pre-commit hook that reformats or rejects files would change a step's output
    for reasons outside the pipeline."""
    _git(cwd, "commit", "-q", "--no-verify", "--no-gpg-sign", "-m", message, env=_commit_env(cwd))
    return _git(cwd, "rev-parse", "HEAD")


def _dot_git_dir(worktree: Path) -> Path:
    """The per-worktree git dir (where ``index`` lives), without spawning git."""
    dot_git = worktree / ".git"
    if dot_git.is_file():
        line = dot_git.read_text().strip()
        if line.startswith("gitdir:"):
            return (worktree / line.removeprefix("gitdir:").strip()).resolve()
    if dot_git.is_dir():
        return dot_git
    return Path(_git(worktree, "rev-parse", "--absolute-git-dir"))


def _common_dir(cwd: Path) -> Path:
    return Path(_git(cwd, "rev-parse", "--path-format=absolute", "--git-common-dir"))
