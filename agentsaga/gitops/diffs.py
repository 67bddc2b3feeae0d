"""Read-only comparisons between commits of a workspace or repository: patches, stats,
changed files and the branches that contain a commit.
"""

from __future__ import annotations

from pathlib import Path

from agentsaga.gitops.runner import _git, _resolve
from agentsaga.gitops.worktrees import Workspace

# --- looking at changes ----------------------------------------------------------------------


def _cwd_of(ws_or_repo_root: Workspace | Path) -> Path:
    return ws_or_repo_root.path if isinstance(ws_or_repo_root, Workspace) else Path(ws_or_repo_root)


def diff(ws_or_repo_root: Workspace | Path, a: str, b: str, stat: bool = False) -> str:
    """The patch (or ``--stat`` summary) from commit ``a`` to commit ``b``."""
    args = ["diff", "--no-color", "--no-ext-diff", *(["--stat"] if stat else []), a, b, "--"]
    return _as_patch(_git(_cwd_of(ws_or_repo_root), *args))


def _as_patch(text: str) -> str:
    """gitpython strips the final newline of git's output; a patch without it is corrupt
    for ``git apply``, so put it back."""
    return text + "\n" if text and not text.endswith("\n") else text


def branches_containing(repo_root: Path, sha: str) -> list[str]:
    """Local branches whose history holds ``sha`` (a commit merged into the user's
    branch); empty when the commit is unknown (garbage-collected, or never here)."""
    if _resolve(Path(repo_root), sha) is None:
        return []
    out = _git(Path(repo_root), "branch", "--format=%(refname:short)", "--contains", sha)
    return [line.strip() for line in out.splitlines() if line.strip()]


def diffstat(ws: Workspace | Path, a: str, b: str) -> dict[str, int]:
    out = _git(_cwd_of(ws), "diff", "--numstat", "--no-color", a, b, "--")
    files = insertions = deletions = 0
    for line in out.splitlines():
        added, removed, _ = line.split("\t", 2)
        files += 1
        # Binary files show "-": they count as changed files with no line counts.
        insertions += int(added) if added.isdigit() else 0
        deletions += int(removed) if removed.isdigit() else 0
    return {"files": files, "insertions": insertions, "deletions": deletions}


def changed_files(ws: Workspace | Path, a: str, b: str) -> list[str]:
    """Paths that differ between ``a`` and ``b`` (a rename lists both of its paths)."""
    out = _git(_cwd_of(ws), "diff", "--name-only", "--no-renames", "-z", a, b, "--")
    return [p for p in out.split("\0") if p]


def diff_worktree(path: Path, a: str, stat: bool = False) -> str:
    """``a`` against the working tree at ``path`` as it is now (tracked files)."""
    args = ["diff", "--no-color", "--no-ext-diff", *(["--stat"] if stat else [])]
    return _as_patch(_git(Path(path), *args, a, "--"))
