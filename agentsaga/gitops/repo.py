"""Looking at a repository and its files: what :func:`inspect_repo` learns before a run
(is it a repository, what HEAD is, whether an operation is in progress), agentsaga's own
refs and ``info/exclude`` line, and read-only questions about files (dirty, ignored,
tracked), plus creating a fresh repository and its submodules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agentsaga.errors import GitError, GitUnsafe
from agentsaga.gitops.runner import (
    REF_ROOT,
    STATE_DIR,
    _common_dir,
    _execute,
    _git,
    _git_status,
    _resolve,
)

# Marker files in the git dir of a checkout stopped mid-operation.
_IN_PROGRESS = {
    "MERGE_HEAD": "merge",
    "rebase-merge": "rebase",
    "rebase-apply": "rebase (or am)",
    "CHERRY_PICK_HEAD": "cherry-pick",
    "REVERT_HEAD": "revert",
    "sequencer": "cherry-pick (or revert)",
}


# --- the repository --------------------------------------------------------------------------


@dataclass
class RepoInfo:
    root: Path
    head_commit: str
    head_branch: str | None  # None when HEAD is detached
    git_dir: Path


def inspect_repo(path: Path) -> RepoInfo:
    """Describe the repository at ``path``, refusing states where acting would be unsafe."""
    path = Path(path).resolve()
    if not path.is_dir():
        raise GitUnsafe(f"{path} is not a directory; run agentsaga inside a git repository")
    status, out = _git_status(
        path, "rev-parse", "--is-bare-repository", "--is-inside-work-tree", "--absolute-git-dir"
    )
    if status != 0:
        raise GitUnsafe(
            f"{path} is not inside a git repository; run 'git init' and commit first, "
            "or point workspace.repo at one"
        )
    bare, inside, git_dir_s = out.splitlines()[:3]
    if bare == "true":
        raise GitUnsafe(f"{path} is a bare repository; agentsaga needs a checkout with a work tree")
    if inside != "true":
        raise GitUnsafe(f"{path} is inside the .git directory; run agentsaga from the work tree")
    git_dir = Path(git_dir_s)
    root = Path(_git(path, "rev-parse", "--show-toplevel"))
    head = _resolve(root, "HEAD")
    if head is None:
        raise GitUnsafe(
            f"the repository at {root} has no commits yet; commit once "
            "(git commit --allow-empty -m init) so a run has a commit to start from"
        )
    for name, what in _IN_PROGRESS.items():
        if (git_dir / name).exists():
            raise GitUnsafe(
                f"the repository at {root} is in the middle of a {what}; finish it or abort "
                f"it ('git {what.split()[0]} --abort') before starting, resuming or rolling "
                "back a run"
            )
    status, symref = _git_status(root, "symbolic-ref", "-q", "HEAD")
    branch = symref.strip().removeprefix("refs/heads/") if status == 0 else None
    return RepoInfo(root=root, head_commit=head, head_branch=branch, git_dir=git_dir)


def ensure_excluded(repo_root: Path, pattern: str = f"{STATE_DIR}/") -> None:
    """Hide ``pattern`` from ``git status`` via ``info/exclude`` (shared by all worktrees)."""
    exclude = _common_dir(Path(repo_root)) / "info" / "exclude"
    existing = exclude.read_text() if exclude.exists() else ""
    if pattern in (line.strip() for line in existing.splitlines()):
        return
    exclude.parent.mkdir(parents=True, exist_ok=True)
    sep = "" if not existing or existing.endswith("\n") else "\n"
    with exclude.open("a") as fh:
        fh.write(f"{sep}{pattern}\n")


def ref_exists(repo_root: Path, ref: str) -> bool:
    status, _ = _git_status(Path(repo_root), "rev-parse", "--verify", "-q", ref)
    return status == 0


def delete_refs(repo_root: Path, prefix: str, keep: str | None = None) -> None:
    """Delete every ref under ``prefix``, which must lie inside ``refs/agentsaga/``, except
    those whose name contains ``keep``."""
    prefix = prefix.rstrip("/")
    if not prefix.startswith(REF_ROOT + "/") or ".." in prefix:
        # The one guard between a typo and deleting a user's branches.
        raise GitUnsafe(f"refusing to delete refs under {prefix!r}: not an agentsaga ref")
    root = Path(repo_root)
    refs = _git(root, "for-each-ref", "--format=%(refname) %(objectname)", prefix + "/")
    for line in refs.splitlines():
        name, sha = line.split()
        if keep is not None and keep in name:
            continue
        # With the old value, a ref re-pointed meanwhile fails instead of vanishing.
        _git(root, "update-ref", "-d", name, sha)


def list_files(root: Path) -> list[str]:
    """Files a step can see in ``root``: tracked or untracked, not ignored; sorted, posix."""
    out = _git(Path(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    # --cached still lists a tracked file deleted from the work tree, and a file that is
    # both staged and modified only once; keep what exists, once.
    base = str(root)
    return sorted({p for p in out.split("\0") if p and os.path.isfile(os.path.join(base, p))})


def init_repo(path: Path, message: str) -> str:
    """Make ``path`` a git repository with everything in it committed (the demo's
    throwaway project). Sets a local identity: a fresh machine may have none."""
    path = Path(path)
    _git(path, "init", "-q", "-b", "main")
    _git(path, "config", "user.name", "agentsaga demo")
    _git(path, "config", "user.email", "demo@agentsaga.invalid")
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "--no-verify", "--no-gpg-sign", "-m", message)
    return _git(path, "rev-parse", "HEAD").strip()


# --- the user's checkout, as a run starts from it -------------------------------------------


def dirty_files(repo_root: Path) -> list[str]:
    """``git status --porcelain`` lines of the checkout (untracked files included, ignored
    ones and agentsaga's own folder not): what a run that starts from HEAD will not see."""
    out = _git(Path(repo_root), "status", "--porcelain", "--untracked-files=all", "-z")
    entries, skip_next = [], False
    for item in out.split("\0"):
        if skip_next:  # the source path of a rename
            skip_next = False
            continue
        if not item:
            continue
        entries.append(item)
        skip_next = item[0] in "RC"
    return entries


def ignored_by_git(repo_root: Path, paths: list[str]) -> set[str]:
    """Which of ``paths`` (relative) .gitignore and info/exclude hide."""
    if not paths:
        return set()
    status, out, _ = _execute(
        Path(repo_root),
        ("-c", "core.quotePath=off", "check-ignore", "--no-index", "--", *paths),
        None,
        check=False,
    )
    return {line for line in out.splitlines() if line} if status in (0, 1) else set()


def tracked(repo_root: Path, paths: list[str]) -> set[str]:
    if not paths:
        return set()
    out = _git(Path(repo_root), "ls-files", "-z", "--", *paths)
    return {p for p in out.split("\0") if p}


def init_submodules(worktree: Path, repo_root: Path) -> str | None:
    """Check out the worktree's submodules; None when it has none, else what was done.

    A submodule the user's checkout already has is cloned from there (no network, and the
    commit the superproject names is there); the others from their configured URL. The
    URLs are given on the command line, so the repository's config is not written."""
    if not (worktree / ".gitmodules").is_file():
        return None
    status, listing = _git_status(
        worktree, "config", "-f", ".gitmodules", "--get-regexp", r"^submodule\..*\.path$"
    )
    overrides: list[str] = []
    names = []
    for line in listing.splitlines() if status == 0 else []:
        key, _, sub_path = line.partition(" ")
        name = key.removeprefix("submodule.").removesuffix(".path")
        names.append(sub_path)
        local = Path(repo_root) / sub_path
        if (local / ".git").exists():
            overrides += ["-c", f"submodule.{name}.url={local}"]
    if not names:
        return None
    args = ("-c", "protocol.file.allow=always", *overrides, "submodule", "update", "--init")
    code, out, err = _execute(worktree, (*args, "--recursive", "-q"), None, check=False)
    if code != 0:
        raise GitError(
            f"could not check out the submodules ({', '.join(names)}) in {worktree}: "
            f"{(err or out).strip()[-500:]}"
        )
    return f"initialised {', '.join(names)}"
