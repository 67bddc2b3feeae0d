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
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import git
from git.exc import GitCommandError, GitCommandNotFound

from agentsaga import faults
from agentsaga import trash as trash_mod
from agentsaga.errors import GitError, GitUnsafe

STATE_DIR = ".agentsaga"
REF_ROOT = "refs/agentsaga"
# Ghost commits are private bookkeeping: a fixed identity means they work in a repository
# with no user.email configured, and never carry the user's name into refs they did not make.
_AGENTSAGA_IDENT = {
    f"GIT_{who}_{what}": value
    for who in ("AUTHOR", "COMMITTER")
    for what, value in (("NAME", "agentsaga"), ("EMAIL", "agentsaga@localhost"))
}
# Run ids become path components and ref components: keep them to a safe alphabet.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_REVERT_TRAILER = "Agentsaga-Reverts:"
# Kept in the workspace's git dir between snapshots; never the real index.
_SNAPSHOT_INDEX = "agentsaga-snapshot.index"
# Marker files in the git dir of a checkout stopped mid-operation.
_IN_PROGRESS = {
    "MERGE_HEAD": "merge",
    "rebase-merge": "rebase",
    "rebase-apply": "rebase (or am)",
    "CHERRY_PICK_HEAD": "cherry-pick",
    "REVERT_HEAD": "revert",
    "sequencer": "cherry-pick (or revert)",
}
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


def delete_refs(repo_root: Path, prefix: str) -> None:
    """Delete every ref under ``prefix``, which must lie inside ``refs/agentsaga/``."""
    prefix = prefix.rstrip("/")
    if not prefix.startswith(REF_ROOT + "/") or ".." in prefix:
        # The one guard between a typo and deleting a user's branches.
        raise GitUnsafe(f"refusing to delete refs under {prefix!r}: not an agentsaga ref")
    root = Path(repo_root)
    refs = _git(root, "for-each-ref", "--format=%(refname) %(objectname)", prefix + "/")
    for line in refs.splitlines():
        name, sha = line.split()
        # With the old value, a ref re-pointed meanwhile fails instead of vanishing.
        _git(root, "update-ref", "-d", name, sha)


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
    for line in _git(cwd, "worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            current = Path(line.removeprefix("worktree ")).resolve()
            found[current] = None
        elif line.startswith("branch ") and current is not None:
            found[current] = line.removeprefix("branch ")
    return found


def _on_branch(cwd: Path, branch: str) -> bool:
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
    if create_branch:
        _git(ws.repo_root, "worktree", "add", "-q", "-b", ws.branch, str(ws.path), ws.base_commit)
    else:
        _git(ws.repo_root, "worktree", "add", "-q", str(ws.path), ws.branch)


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


def _require_on_branch(ws: Workspace) -> None:
    # Writing to a checkout that is on someone else's branch would change their work.
    if not _on_branch(ws.path, ws.branch):
        raise GitUnsafe(
            f"{ws.path} is not on the run branch {ws.branch} (someone switched it); "
            f"switch back with 'git -C {ws.path} switch {ws.branch}' and retry"
        )


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


def _describe_commit(cwd: Path, subject: str) -> str:
    """A step commit's message: the subject names the step and what it changed, the body
    lists each file, and trailers (``git log --grep``, ``git interpret-trailers``) name
    the run and the step, so a commit found in ``git log`` leads back to its run."""
    files = []
    for line in _git(cwd, "diff", "--cached", "--numstat", "--no-renames").splitlines():
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
    trailers = ""
    if match:
        trailers = f"\n\nAgentsaga-Run: {match['run']}\nAgentsaga-Step: {match['step']}"
        if match["attempt"]:
            trailers += f"\nAgentsaga-Attempt: {match['attempt']}"
    return f"{subject}: {shown}\n\nChanged:\n{body}{trailers}\n"


def commit_all(ws: Workspace, message: str) -> str | None:
    """Commit every change in the workspace on the run branch; ``None`` if nothing changed.

    Hooks are skipped (``--no-verify``): a user's pre-commit hook that reformats or rejects
    files would make a step fail, or change its output, for reasons outside the pipeline.
    """
    _require_on_branch(ws)
    _git(ws.path, "add", "-A")
    if _git_status(ws.path, "diff", "--cached", "--quiet")[0] == 0:
        return None
    message = _describe_commit(ws.path, message)
    faults.point("git.in_commit")
    return _commit(ws.path, message)


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
        delete_refs(root, f"{REF_ROOT}/{run_id}")
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


def _remove_worktree(ws: Workspace, worktrees: dict[Path, str | None]) -> None:
    root = ws.repo_root
    registered = ws.path.resolve() in worktrees
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


def _locked(worktree: Path) -> bool:
    """``git worktree lock``: prune keeps a locked worktree's registration."""
    try:
        text = (worktree / ".git").read_text(encoding="utf-8")
    except OSError:
        return False
    admin = Path(text.partition("gitdir:")[2].strip())
    return (admin / "locked").exists()


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


def is_step_commit(ws: Workspace, sha: str, run_id: str, step_id: str, parent: str | None) -> bool:
    """Whether ``sha`` is the commit a step of this run makes (its message names the run
    and the step) directly on ``parent``: what a step that died before its checkpoint
    leaves behind, as opposed to a person's commit."""
    message = _git(ws.path, "log", "-1", "--format=%s", sha)
    prefix = f"agentsaga {run_id}: step {step_id}"
    if message != prefix and not message.startswith((prefix + " ", prefix + ":")):
        return False
    return parent is None or _resolve(ws.path, f"{sha}^1") == parent


def diff_worktree(path: Path, a: str, stat: bool = False) -> str:
    """``a`` against the working tree at ``path`` as it is now (tracked files)."""
    args = ["diff", "--no-color", "--no-ext-diff", *(["--stat"] if stat else [])]
    return _as_patch(_git(Path(path), *args, a, "--"))


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
