"""Capture everything a user could notice about a git repository, to compare before/after.

``capture`` records all refs, HEAD, the index and working tree as ``git status`` sees them,
the stash list, the worktree list, and a hash of every file and directory in the work tree
(ignored files included), so "rolled back" can be asserted as plain equality.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

SKIP_DIRS = {".git", ".agentsaga"}


def git(repo: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def tree_files(root: Path) -> dict[str, str]:
    """``relative path -> "mode:sha256"`` for files and symlinks, ``"dir"`` for directories."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel_here = here.relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if not (here == root and d in SKIP_DIRS))
        for d in dirnames:
            found[str(rel_here / d)] = "dir"
        for name in sorted(filenames):
            path = here / name
            if here == root and name == ".git":  # a linked worktree's .git file
                continue
            if path.is_symlink():
                found[str(rel_here / name)] = "link:" + os.readlink(path)
                continue
            mode = oct(path.stat().st_mode & 0o777)
            found[str(rel_here / name)] = f"{mode}:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def capture(repo: Path) -> dict[str, Any]:
    head_ref = git(repo, "symbolic-ref", "-q", "HEAD", check=False).strip()
    return {
        "refs": git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines(),
        "head": head_ref or git(repo, "rev-parse", "HEAD").strip(),
        "status": git(
            repo, "status", "--porcelain=v2", "--branch", "--untracked-files=all"
        ).splitlines(),
        "stash": git(repo, "stash", "list", "--format=%gd %H %gs").splitlines(),
        "worktrees": git(repo, "worktree", "list", "--porcelain").splitlines(),
        "files": tree_files(repo),
    }


def make_repo(tmp_path: Path, files: dict[str, str], name: str = "repo") -> Path:
    """A repository in ``tmp_path/name`` with ``files`` in one commit on ``main``."""
    repo = tmp_path / name
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Test User")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "commit.gpgsign", "false")
    for rel, text in files.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", "initial")
    return repo


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
