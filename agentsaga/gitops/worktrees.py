"""Isolating a run: the :class:`Workspace` a run works in (a linked worktree, or the run
branch checked out in the user's own checkout with their changes stashed), how it is created
and reopened, the per-checkout claim that keeps two branch-isolated runs apart, and the lock
files a killed git leaves in it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agentsaga import faults
from agentsaga.errors import GitError, GitUnsafe
from agentsaga.gitops import pool as worktree_pool
from agentsaga.gitops.repo import ensure_excluded, inspect_repo
from agentsaga.gitops.runner import (
    _SNAPSHOT_INDEX,
    REF_ROOT,
    STATE_DIR,
    _common_dir,
    _describe,
    _dot_git_dir,
    _git,
    _git_status,
    _resolve,
    add_worktree,
    worktree_list,
)

# Run ids become path components and ref components: keep them to a safe alphabet.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


# --- workspaces ------------------------------------------------------------------------------


@dataclass
class Workspace:
    repo_root: Path
    path: Path  # where steps run: the worktree, or repo_root in branch isolation
    branch: str
    base_commit: str
    isolation: str  # 'worktree' | 'branch'
    user_branch: str | None
    user_head: str
    stash_commit: str | None = None
    #: Whether the worktree may come from, and go back to, the repository's pool
    #: (``workspace.pool``; records made before the pool existed read as False).
    pool: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["repo_root"], data["path"] = str(self.repo_root), str(self.path)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Workspace:
        # A run record also keeps what others learnt about the workspace (its Python
        # environment, a host): only this class's own fields rebuild it.
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["repo_root"], fields["path"] = Path(data["repo_root"]), Path(data["path"])
        return cls(**fields)


def _check_run_id(run_id: str) -> None:
    if not _RUN_ID.fullmatch(run_id) or run_id.endswith(".lock") or ".." in run_id:
        raise GitError(f"run id {run_id!r} cannot name a git ref and a folder")


def _intent_file(repo_root: Path, run_id: str) -> Path:
    return repo_root / STATE_DIR / "workspaces" / f"{run_id}.json"


def _write_intent(ws: Workspace, run_id: str) -> None:
    # Written before anything changes, so a crash halfway through create_workspace leaves a
    # record of what to finish (and the proof that a half-made branch is ours).
    target = _intent_file(ws.repo_root, run_id)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(ws.to_json(), indent=2))
    os.replace(tmp, target)


def _checkout_claim(repo_root: Path) -> Path:
    return repo_root / STATE_DIR / "workspaces" / "checkout.owner"


def _claim_checkout(root: Path, run_id: str) -> None:
    """One ``isolation: branch`` run at a time in a checkout: a second one would stash
    the first one's work as "the user's changes" and restore the wrong branch on
    rollback. The claim is a file created exclusively; it is stale when its run has no
    workspace record (it died before recording one, or was torn down)."""
    claim = _checkout_claim(root)
    claim.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for _ in range(3):
        try:
            fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            try:
                owner = claim.read_text().strip()
            except FileNotFoundError:
                continue
            if owner == run_id:
                return
            if owner and _intent_file(root, owner).exists():
                raise GitUnsafe(
                    f"the checkout {root} is in use by run {owner} (isolation: branch); "
                    f"roll it back (agentsaga rollback {owner}) or let it finish first, or "
                    "use isolation: worktree, which lets runs work side by side"
                ) from None
            claim.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(run_id)
        return
    raise GitUnsafe(f"could not claim the checkout {root} for run {run_id}; try again")


def _release_checkout(root: Path, run_id: str) -> None:
    claim = _checkout_claim(root)
    try:
        if claim.read_text().strip() == run_id:
            claim.unlink()
    except FileNotFoundError:
        pass


def _stash_message(run_id: str) -> str:
    return f"agentsaga {run_id}: your changes from before the run"


def _stash_list(cwd: Path) -> list[tuple[str, str]]:
    """``(sha, subject)`` of each stash entry, ``stash@{0}`` first."""
    out = _git(cwd, "stash", "list", "--format=%H %gs")
    return [(line[:40], line[41:]) for line in out.splitlines() if line]


def _registered_worktrees(cwd: Path) -> dict[Path, str | None]:
    """Each registered worktree's path and the branch ref checked out there."""
    found: dict[Path, str | None] = {}
    current: Path | None = None
    for line in worktree_list(cwd).splitlines():
        if line.startswith("worktree "):
            current = Path(line.removeprefix("worktree ")).resolve()
            found[current] = None
        elif line.startswith("branch ") and current is not None:
            found[current] = line.removeprefix("branch ")
    return found


def _on_branch(cwd: Path, branch: str) -> bool:
    # Asked before every step's commit: HEAD is read from its file (git writes a branch
    # checkout there as ``ref: refs/heads/<branch>``, a detached one as a sha), not by a
    # `git symbolic-ref` process; the command answers when there is no .git at ``cwd``.
    if (cwd / ".git").exists():
        try:
            return (_dot_git_dir(cwd) / "HEAD").read_text().strip() == f"ref: refs/heads/{branch}"
        except OSError:
            pass
    status, out = _git_status(cwd, "symbolic-ref", "-q", "HEAD")
    return status == 0 and out.strip() == f"refs/heads/{branch}"


def _is_dirty(cwd: Path) -> bool:
    return bool(_git(cwd, "status", "--porcelain", "--untracked-files=all").strip())


def create_workspace(
    repo_root: Path,
    run_id: str,
    branch: str,
    isolation: str = "worktree",
    allow_dirty: bool = False,
    start_point: str | None = None,
    pool: bool = True,
) -> Workspace:
    """Create the run branch at the user's HEAD (or ``start_point``: a fork starts where
    its parent's reused steps left the branch) and the place where the run's steps work.

    Calling it again for the same run (after a crash halfway through) finishes the job and
    returns the same workspace. A branch of that name that is not this run's is refused.
    """
    _check_run_id(run_id)
    if isolation not in ("worktree", "branch"):
        raise GitError(f"unknown isolation {isolation!r}; use 'worktree' or 'branch'")
    if _git_status(Path(repo_root), "check-ref-format", "--branch", branch)[0] != 0:
        raise GitError(f"{branch!r} is not a valid branch name; change workspace.branch")
    info = inspect_repo(Path(repo_root))
    root = info.root
    ensure_excluded(root)
    intent = _intent_file(root, run_id)
    if intent.exists():
        ws = Workspace.from_json(json.loads(intent.read_text()))
        if ws.branch != branch or ws.isolation != isolation:
            raise GitUnsafe(
                f"run {run_id} already has a workspace on branch {ws.branch} "
                f"({ws.isolation} isolation); resume the run instead of creating it again"
            )
    else:
        tip = _resolve(root, f"refs/heads/{branch}")
        if tip is not None:
            raise GitUnsafe(
                f"branch {branch} already exists (at {_describe(root, tip)}) and is not this "
                "run's; choose another workspace.branch, or delete that branch yourself"
            )
        path = root / STATE_DIR / "worktrees" / run_id if isolation == "worktree" else root
        ws = Workspace(
            repo_root=root,
            path=path,
            branch=branch,
            base_commit=_resolve(root, start_point) or info.head_commit
            if start_point
            else info.head_commit,
            isolation=isolation,
            user_branch=info.head_branch,
            user_head=info.head_commit,
            pool=pool and isolation == "worktree",
        )
        if isolation == "branch" and _is_dirty(root) and not allow_dirty:
            raise GitUnsafe(
                f"the working tree at {root} has uncommitted changes or untracked files; "
                "commit or stash them, use isolation: worktree, or pass --allow-dirty to "
                "have agentsaga stash them and restore them when the run is rolled back"
            )
        if isolation == "branch":
            _claim_checkout(root, run_id)
        _write_intent(ws, run_id)
        faults.point("workspace.after_intent")
    tip = _resolve(root, f"refs/heads/{branch}")
    if tip is not None and tip != ws.base_commit:
        raise GitUnsafe(
            f"branch {branch} of run {run_id} has moved on to {_describe(root, tip)}; "
            "resume the run instead of creating its workspace again"
        )
    if isolation == "worktree":
        _ensure_worktree(ws, create_branch=tip is None)
    else:
        _enter_branch(ws, run_id, allow_dirty, create_branch=tip is None)
    return ws


def _is_run_folder(ws: Workspace) -> bool:
    # A guard on rmtree: a tampered run record must not make us delete anything else.
    return ws.path.resolve().parent == (ws.repo_root / STATE_DIR / "worktrees").resolve()


def _ensure_worktree(ws: Workspace, create_branch: bool) -> None:
    # A pooled worktree whose recycling a crash cut short is never used: it goes first.
    worktree_pool.abandon_claim(ws.repo_root, ws.path, ws.path.name)
    registered = _registered_worktrees(ws.repo_root)
    if ws.path.resolve() in registered and (ws.path / ".git").exists():
        if not _add_interrupted(ws):
            return
        # `git worktree add` was killed midway: its checkout may be partial. Start over.
        _git(ws.repo_root, "worktree", "remove", "--force", "--force", str(ws.path))
    # A registration whose folder is gone (deleted by hand, or a crash) blocks a new add.
    _git(ws.repo_root, "worktree", "prune")
    if ws.path.exists() and _is_run_folder(ws):
        shutil.rmtree(ws.path)  # our own half-made folder under .agentsaga/worktrees
    ws.path.parent.mkdir(parents=True, exist_ok=True)
    if ws.pool and worktree_pool.claim(
        ws.repo_root, ws.path, ws.branch, ws.base_commit, create_branch
    ):
        return
    _add_worktree(ws, create_branch)


def _add_worktree(ws: Workspace, create_branch: bool) -> None:
    add_worktree(ws.repo_root, ws.path, ws.branch, ws.base_commit, create_branch)


def _add_interrupted(ws: Workspace) -> bool:
    """``git worktree add`` locks the new worktree "initializing" until its checkout is
    complete: still locked so, it never finished."""
    try:
        locked = _dot_git_dir(ws.path) / "locked"
        return locked.read_text().strip() == "initializing"
    except OSError:
        return False


def _enter_branch(ws: Workspace, run_id: str, allow_dirty: bool, create_branch: bool) -> None:
    root = ws.repo_root
    message = _stash_message(run_id)
    if ws.stash_commit is None:
        # A crash between `stash push` and recording it: find the entry by its message.
        ours = [sha for sha, subject in _stash_list(root) if subject.endswith(message)]
        if ours:
            ws.stash_commit = ours[0]
            _write_intent(ws, run_id)
    if _on_branch(root, ws.branch):
        return
    if not _at_user_position(ws):
        raise GitUnsafe(
            f"{root} is no longer on {ws.user_branch or ws.user_head[:12]}, where run "
            f"{run_id} started; switch back there before creating the run's workspace"
        )
    if _is_dirty(root):
        if not allow_dirty:
            raise GitUnsafe(
                f"the working tree at {root} has uncommitted changes or untracked files; "
                "commit or stash them, or pass --allow-dirty"
            )
        _git(root, "stash", "push", "-q", "--include-untracked", "-m", message)
        faults.point("workspace.after_stash")
        ws.stash_commit = _git(root, "rev-parse", "refs/stash")
        _write_intent(ws, run_id)
    if create_branch:
        _git(root, "checkout", "-q", "-b", ws.branch, ws.base_commit)
    else:
        _git(root, "checkout", "-q", ws.branch)


def _at_user_position(ws: Workspace) -> bool:
    if ws.user_branch is not None:
        return _on_branch(ws.repo_root, ws.user_branch)
    status, _ = _git_status(ws.repo_root, "symbolic-ref", "-q", "HEAD")
    return status != 0 and _resolve(ws.repo_root, "HEAD") == ws.user_head


def reopen_workspace(ws: Workspace) -> Workspace:
    """Make a recorded workspace usable again on resume (re-adding a removed worktree)."""
    if _resolve(ws.repo_root, f"refs/heads/{ws.branch}") is None:
        raise GitUnsafe(
            f"the run branch {ws.branch} no longer exists in {ws.repo_root}; the run cannot "
            "continue there: fork it to start again from its checkpoints"
        )
    if ws.isolation == "worktree":
        _ensure_worktree(ws, create_branch=False)
    elif not _on_branch(ws.repo_root, ws.branch):
        raise GitUnsafe(
            f"{ws.repo_root} is not on the run branch {ws.branch}; switch to it "
            f"(git switch {ws.branch}) to resume the run"
        )
    return ws


def worktree_link_broken(ws: Workspace) -> bool:
    """A worktree folder whose ``.git`` file no longer leads to its git dir (edited by
    hand, or the git dir under ``.git/worktrees`` deleted): every git command in it fails.
    Read without spawning git."""
    dot_git = ws.path / ".git"
    if ws.isolation != "worktree" or not dot_git.is_file():
        return False
    text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
    if not text.startswith("gitdir:"):
        return True
    return not (ws.path / text.removeprefix("gitdir:").strip() / "HEAD").is_file()


def repair_worktree(ws: Workspace) -> bool:
    """Point a broken worktree folder at its git dir again (``git worktree repair``); its
    git dir gone, re-add the worktree from the run branch (what was not committed there is
    lost). True when it had to be re-added."""
    _git_status(ws.repo_root, "worktree", "repair", str(ws.path))  # exit 1 even when fixed
    if not worktree_link_broken(ws):
        return False
    _git(ws.repo_root, "worktree", "prune")
    reopen_workspace(ws)  # not registered any more: the folder goes, the branch is re-added
    return True


def workspace_exists(ws: Workspace) -> bool:
    if not ws.repo_root.is_dir() or _resolve(ws.repo_root, f"refs/heads/{ws.branch}") is None:
        return False
    return ws.isolation == "branch" or (ws.path / ".git").exists()


def head(ws: Workspace) -> str:
    """The commit the run branch points at."""
    tip = _resolve(ws.repo_root, f"refs/heads/{ws.branch}")
    if tip is None:
        raise GitUnsafe(f"the run branch {ws.branch} no longer exists in {ws.repo_root}")
    return tip


def stale_locks(ws: Workspace, run_id: str) -> list[Path]:
    """Lock files under agentsaga's own refs and its own worktree: what a process killed
    mid-git leaves behind (``refs/agentsaga/<run>/...lock``, the run branch's lock, the
    worktree's ``HEAD.lock`` / ``index.lock``, the snapshot index's lock). Only the
    caller knows whether they are stale: one holding the run's lease with no live owner
    before it. Locks of the user's own checkout and shared ones (packed-refs) are never
    listed: a person's git may hold them."""
    _check_run_id(run_id)
    root = ws.repo_root
    if not root.is_dir():
        return []
    common = _common_dir(root)
    found = list((common / REF_ROOT / run_id).rglob("*.lock"))
    found.append(common / "refs" / "heads" / f"{ws.branch}.lock")
    if ws.isolation == "worktree" and _is_run_folder(ws):
        admin = common / "worktrees" / ws.path.name
        if (ws.path / ".git").is_file():
            admin = _dot_git_dir(ws.path)
        found += [admin / name for name in ("HEAD.lock", "index.lock")]
        found.append(admin / f"{_SNAPSHOT_INDEX}.lock")
    else:
        found.append(_dot_git_dir(root) / f"{_SNAPSHOT_INDEX}.lock")
    return [path for path in found if path.is_file()]


def intended_workspace(repo_root: Path, run_id: str) -> Workspace | None:
    """The workspace ``create_workspace`` recorded for a run before it changed anything,
    if a crash stopped it before the run record learned of it."""
    intent = _intent_file(Path(repo_root), run_id)
    if not intent.is_file():
        return None
    return Workspace.from_json(json.loads(intent.read_text()))
