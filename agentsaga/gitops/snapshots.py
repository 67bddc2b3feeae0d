"""Ghost commits and step commits: :func:`snapshot` pins the whole working tree under
``refs/agentsaga/<run-id>/...`` through a temporary index (the real index is never written),
:func:`commit_all` records a step's work on the run branch.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

from agentsaga import faults
from agentsaga.errors import GitError, GitUnsafe
from agentsaga.gitops.runner import (
    _AGENTSAGA_IDENT,
    _SNAPSHOT_INDEX,
    REF_ROOT,
    _commit,
    _dot_git_dir,
    _git,
    _git_status,
    _resolve,
)
from agentsaga.gitops.worktrees import Workspace, _on_branch


def _require_on_branch(ws: Workspace) -> None:
    # Writing to a checkout that is on someone else's branch would change their work.
    if not _on_branch(ws.path, ws.branch):
        raise GitUnsafe(
            f"{ws.path} is not on the run branch {ws.branch} (someone switched it); "
            f"switch back with 'git -C {ws.path} switch {ws.branch}' and retry"
        )


# --- snapshots and commits -------------------------------------------------------------------


def snapshot(ws: Workspace, ref: str) -> str:
    """Pin a ghost commit of the whole working tree at ``ref``; returns its sha.

    Its parent is the workspace's HEAD, so :func:`reset_to` knows which commit to return the
    branch to. If ``ref`` already exists its commit is returned unchanged: the first snapshot
    of an attempt wins, so a retry after a crash mid-step never records the half-done step's
    files as the state "before" it.
    """
    if not ref.startswith(REF_ROOT + "/"):
        raise GitUnsafe(f"snapshot ref {ref!r} must be under {REF_ROOT}/")
    # No lookup of ``ref`` first (one git process less per step): the create-only
    # update-ref below refuses when it exists, and the existing commit is returned then.
    parent = _git(ws.path, "rev-parse", "--verify", "HEAD^{commit}")
    git_dir = _dot_git_dir(ws.path)
    seed = git_dir / _SNAPSHOT_INDEX
    tmp_index = git_dir / f"{_SNAPSHOT_INDEX}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    env = {"GIT_INDEX_FILE": str(tmp_index), **_AGENTSAGA_IDENT}
    try:
        # Seeded with stat data, `add -A` rehashes only the files that changed: ~20 ms
        # instead of seconds on a large tree. The previous snapshot's index is the better
        # seed: the real one, written at checkout, has every file "racily clean" (mtime not
        # older than the index), which git re-reads in full each time.
        source = seed if seed.exists() else git_dir / "index"
        if source.exists():
            shutil.copyfile(source, tmp_index)
        _git(ws.path, "add", "-A", env=env)
        tree = _git(ws.path, "write-tree", env=env)
        message = f"agentsaga snapshot {ref}"
        # --no-gpg-sign: private bookkeeping must never wait on a signing prompt.
        sha = _git(
            ws.path, "commit-tree", "--no-gpg-sign", tree, "-p", parent, "-m", message, env=env
        )
        os.replace(tmp_index, seed)
    finally:
        tmp_index.unlink(missing_ok=True)
    # The empty old value makes this create-only: a concurrent snapshot of the same ref
    # loses cleanly instead of overwriting the first one.
    status, _ = _git_status(ws.path, "update-ref", ref, sha, "")
    if status != 0:
        existing = _resolve(ws.path, ref)
        if existing is None:
            raise GitError(f"could not create ref {ref} in {ws.repo_root}")
        return existing
    return sha


_STEP_SUBJECT = re.compile(
    r"agentsaga (?P<run>\S+): step (?P<step>\S+)(?: \(attempt (?P<attempt>\d+)\))?$"
)


def _staged(cwd: Path) -> str:
    """``diff --cached --numstat`` of the index: one line per staged path (a mode-only
    change is ``0 0 path``, a binary one ``- - path``), empty when nothing is staged."""
    return _git(cwd, "diff", "--cached", "--numstat", "--no-renames")


def _describe_commit(
    cwd: Path, subject: str, trailers: dict[str, str] | None = None, staged: str | None = None
) -> str:
    """A step commit's message: the subject names the step and what it changed, the body
    lists each file, and trailers (``git log --grep``, ``git interpret-trailers``) name
    the run and the step, so a commit found in ``git log`` leads back to its run."""
    files = []
    for line in (_staged(cwd) if staged is None else staged).splitlines():
        added, removed, path = line.split("\t", 2)
        files.append((path, added, removed))
    names = [path for path, _, _ in files]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    body = "\n".join(
        f"  {path} (+{added} -{removed})" if added != "-" else f"  {path} (binary)"
        for path, added, removed in files[:50]
    )
    if len(files) > 50:
        body += f"\n  ... and {len(files) - 50} more files"
    match = _STEP_SUBJECT.match(subject)
    lines = dict(trailers or {})
    if match:
        lines = {"Agentsaga-Run": match["run"], "Agentsaga-Step": match["step"]}
        if match["attempt"]:
            lines["Agentsaga-Attempt"] = match["attempt"]
    tail = "\n".join(f"{key}: {value}" for key, value in lines.items())
    return f"{subject}: {shown}\n\nChanged:\n{body}" + (f"\n\n{tail}" if tail else "") + "\n"


def commit_all(
    ws: Workspace,
    message: str,
    trailers: dict[str, str] | None = None,
    paths: list[str] | None = None,
) -> str | None:
    """Commit every change in the workspace on the run branch; ``None`` if nothing changed.

    Hooks are skipped (``--no-verify``): a user's pre-commit hook that reformats or rejects
    files would make a step fail, or change its output, for reasons outside the pipeline.
    ``trailers`` end the message of a commit that is not a step's; ``paths``: only these
    files' changes (names taken literally, never as patterns).
    """
    _require_on_branch(ws)
    if paths is None:
        _git(ws.path, "add", "-A")
    elif paths:
        literal = {"GIT_LITERAL_PATHSPECS": "1"}
        # A path that is neither on disk nor in the index (an untracked file deleted
        # since) has nothing to commit, and `git add` would refuse the whole call for it.
        known = set(_git(ws.path, "ls-files", "-z", "--", *paths, env=literal).split("\0"))
        present = [p for p in paths if p in known or os.path.lexists(ws.path / p)]
        if present:
            _git(ws.path, "add", "-A", "--", *present, env=literal)
    # One `diff --cached` answers both "anything to commit?" and "what?" (it was two
    # git processes per committing step).
    staged = _staged(ws.path)
    if not staged.strip():
        return None
    message = _describe_commit(ws.path, message, trailers, staged)
    faults.point("git.in_commit")
    return _commit(ws.path, message)


def is_step_commit(ws: Workspace, sha: str, run_id: str, step_id: str, parent: str | None) -> bool:
    """Whether ``sha`` is the commit a step of this run makes (its message names the run
    and the step) directly on ``parent``: what a step that died before its checkpoint
    leaves behind, as opposed to a person's commit."""
    message = _git(ws.path, "log", "-1", "--format=%s", sha)
    prefix = f"agentsaga {run_id}: step {step_id}"
    if message != prefix and not message.startswith((prefix + " ", prefix + ":")):
        return False
    return parent is None or _resolve(ws.path, f"{sha}^1") == parent


def snapshot_checkout(repo_root: Path, ref: str) -> str:
    """A ghost commit of the checkout's working tree (tracked changes and untracked files,
    not ignored ones) on top of its HEAD, pinned at ``ref``; the user's index, working
    tree and branch are not touched."""
    root = Path(repo_root)
    seed = _dot_git_dir(root) / _SNAPSHOT_INDEX
    existed = seed.exists()
    head_sha = _git(root, "rev-parse", "HEAD").strip()
    view = Workspace(root, root, "", head_sha, "branch", None, head_sha)
    try:
        return snapshot(view, ref)
    finally:
        if not existed:
            seed.unlink(missing_ok=True)


def changes_since(ws: Workspace, pinned_ref: str, save_prefix: str) -> tuple[str, list[str]] | None:
    """Whether the working tree changed since the ghost commit at ``pinned_ref``; if so,
    the change is pinned first, as a ghost commit at ``<save_prefix><n>`` (the newest such
    ref when it already holds the same tree, else the next number), and returned as (that
    ref, the files that differ). None when nothing changed.

    Without the pin (deleted by hand, or a gate reached before pins existed), the change
    is measured from HEAD: the run's own uncommitted files then count too, so a reset is
    refused where it might not have been, never done silently."""
    pinned = _resolve(ws.path, pinned_ref) or _resolve(ws.path, "HEAD")
    if pinned is None:
        return None
    taken = _git(ws.path, "for-each-ref", "--format=%(refname)", save_prefix + "*").split()
    numbers = sorted(
        int(r.removeprefix(save_prefix)) for r in taken if r[len(save_prefix) :].isdigit()
    )
    ref = f"{save_prefix}{(numbers[-1] if numbers else 0) + 1}"
    sha = snapshot(ws, ref)
    # -z: names as they are (no quoting), so they can be given back to `git add`.
    out = _git(ws.path, "diff", "--name-only", "-z", "--no-renames", pinned, sha)
    files = [name for name in out.split("\0") if name]
    newest = f"{save_prefix}{numbers[-1]}" if numbers else None
    same = newest is not None and _git(ws.path, "rev-parse", f"{newest}^{{tree}}") == _git(
        ws.path, "rev-parse", f"{sha}^{{tree}}"
    )
    if not files or same:
        _git(ws.path, "update-ref", "-d", ref, sha)
    if not files:
        return None
    return (newest if same and newest else ref), files
