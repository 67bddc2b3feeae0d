"""A per-repository pool of worktrees: a rolled-back run's worktree is kept and handed to
the next run of the same repository instead of checking out every file again.

``git worktree add`` writes every file of the commit (1.4-1.7 s for 5,000 files here);
recycling a worktree that already holds the repository costs a rename and the files that
differ. Layout, all under ``<repo>/.agentsaga/pool/``:

* ``<entry>/`` and ``<entry>.index``: the files of a released worktree, in whatever state
  its last run left them, and its git index (stat data that lets git tell, without
  reading them, which files are unchanged). An entry is not a registered worktree: ``git
  worktree list`` and the repository look exactly as after deleting it. Leftovers are
  removed when an entry is claimed, not when it is released, so rollback stays a rename.
* ``.lock``: ``flock``-ed around every move into or out of the pool, so two runs never
  take the same entry. The kernel drops the lock of a killed process.
* ``claims/<run>``: written before an entry moves to a run's path and removed once the
  entry is proven clean there. A claim file left by a crash means the folder at the run's
  path may be half-recycled: :func:`abandon_claim` discards it and the run gets a fresh
  worktree (or another entry). A run never works in a half-recycled worktree.

Claiming makes an entry indistinguishable from a fresh ``git worktree add``: ``git
worktree add --no-checkout --lock`` registers ``.agentsaga/worktrees/<run>`` on the run
branch (a new per-worktree git dir: no old reflog, operation in progress or snapshot
index), the entry's folder takes the place of the empty one (the same path, so venv
detection and the run's records are the same) and its index the place of the missing
one, and the lock goes (it kept another process's ``git worktree prune`` off the
registration while the path had no ``.git``); then ``reset --hard`` (only the files that
differ are written), ``clean -ffdx`` (untracked and ignored files, nested repositories),
and ``status --ignored`` must be empty and no index entry may carry a skip-worktree or
assume-unchanged bit. Anything unexpected (a failing git command, an incomplete entry)
discards the entry into the trash and falls back to ``git worktree add``: the pool can
only make a run faster, never different. One difference remains: git runs no
``post-checkout`` hook for a recycled worktree (a reset, not a checkout).

Not pooled: worktrees with submodules (their checkout is the furnishing step's job; a
base commit with a ``.gitmodules`` never claims either), locked worktrees (``git worktree
lock``: a person's), worktrees a live process works in (a background job a step left
running would write into the next run's worktree), and anything beyond
:data:`MAX_ENTRIES` per repository (deleted in the background as before).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentsaga import faults
from agentsaga import trash as trash_mod
from agentsaga.errors import GitError
from agentsaga.gitops.runner import STATE_DIR, _dot_git_dir, _git, _git_status, add_worktree

#: Entries kept per repository: each is a full checkout on disk.
MAX_ENTRIES = 2
_CLAIMS = "claims"
#: The reason of the ``git worktree lock`` a claim holds while the run's path has no
#: ``.git``: any ``git worktree prune`` (another run starting, a rollback) would otherwise
#: drop the registration under it.
_CLAIMING = "agentsaga: recycling a pooled worktree"


def pool_dir(repo_root: Path) -> Path:
    return repo_root / STATE_DIR / "pool"


@contextmanager
def _locked(pool: Path) -> Iterator[None]:
    pool.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(pool / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def entries(repo_root: Path) -> list[Path]:
    """The pooled worktrees of a repository, oldest name first."""
    pool = pool_dir(repo_root)
    if not pool.is_dir():
        return []
    # A symlink is never an entry: recycling it would reset and clean the folder it
    # points to.
    return sorted(
        p for p in pool.iterdir() if p.is_dir() and not p.is_symlink() and p.name != _CLAIMS
    )


def _claim_file(repo_root: Path, run_id: str) -> Path:
    return pool_dir(repo_root) / _CLAIMS / run_id


def _discard(repo_root: Path, folder: Path) -> None:
    """Throw a worktree folder away off the critical path: renamed into the trash, deleted
    by a background process; a registration left without its folder is pruned."""
    trash = repo_root / STATE_DIR / "trash"
    if folder.exists():
        if trash_mod.move_aside(folder, trash) is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            trash_mod.empty_in_background(trash)
    _git(repo_root, "worktree", "prune")


def _discard_claimed(repo_root: Path, path: Path) -> None:
    """Discard the folder a claim was recycling at a run's path, and its registration:
    unlocked first (it may still hold the claim's lock), or the prune would keep it."""
    _git_status(repo_root, "worktree", "unlock", str(path))
    _discard(repo_root, path)


def _index_of(entry: Path) -> Path:
    return entry.with_name(entry.name + ".index")


def release(repo_root: Path, path: Path) -> bool:
    """Put a run's worktree into the pool instead of deleting it; False when it is not
    poolable (the caller deletes it). The folder keeps its files and its index (moved,
    not copied: a rename keeps the index's mtime, which git's racy-clean check relies
    on); its registration goes (the caller prunes it), so ``git worktree list`` and the
    run branch are as if it had been deleted.

    A pool damaged by hand (a file where one of its folders belongs, no permission)
    never fails the rollback: the worktree is deleted as without a pool."""
    try:
        return _release(repo_root, path)
    except OSError:
        # True once the folder has left the run's path (the caller only prunes then); an
        # entry left without its index is discarded by the next claim.
        return not path.exists()


def _release(repo_root: Path, path: Path) -> bool:
    pool = pool_dir(repo_root)
    if not (path / ".git").is_file():
        # Without its own .git file, git run in the folder would act on the checkout
        # that contains it (the user's).
        return False
    admin = _dot_git_dir(path)
    if (path / ".gitmodules").exists() or (admin / "modules").exists():
        return False
    if _in_use(path):
        # A background job a step left running (`cmd &`) would go on writing into
        # whichever run gets the folder next; deleted, it writes into the trash.
        return False
    with _locked(pool):
        if len(entries(repo_root)) >= MAX_ENTRIES or not (admin / "index").is_file():
            return False
        entry = pool / f"e-{uuid.uuid4().hex[:12]}"
        try:
            os.rename(path, entry)
        except OSError:
            return False  # nothing moved (another filesystem?): deleted the usual way
        faults.point("pool.release_after_move")
        try:
            (entry / ".git").unlink()
            os.rename(admin / "index", _index_of(entry))
        except OSError:
            pass  # an entry without its index: the next claim discards it
    return True


def claim_pending(repo_root: Path, run_id: str) -> bool:
    """Whether a claim for ``run_id`` was cut short: its folder may be half-recycled."""
    return _claim_file(repo_root, run_id).exists()


def forget_claim(repo_root: Path, run_id: str) -> None:
    """Drop the claim file of a run whose worktree is gone (rolled back): nothing would
    ever read it again."""
    try:
        _claim_file(repo_root, run_id).unlink(missing_ok=True)
    except OSError:
        pass  # a pool damaged by hand (claims is a file): nothing of ours to remove


def _in_use(folder: Path) -> bool:
    """Whether a live process works in ``folder`` (its current directory is in it). Read
    from ``/proc``; where there is none, no process is seen."""
    proc = Path("/proc")
    if not proc.is_dir():
        return False
    target = str(folder.resolve())
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue  # gone, or not ours to read
        if cwd == target or cwd.startswith(target + os.sep):
            return True
    return False


def abandon_claim(repo_root: Path, path: Path, run_id: str) -> None:
    """A claim that a crash cut short: the folder at the run's path may be half-recycled,
    so it goes (to the trash), and the run starts over with a fresh worktree or entry."""
    claim = _claim_file(repo_root, run_id)
    if not claim.exists():
        return
    _discard_claimed(repo_root, path)
    claim.unlink(missing_ok=True)


def claim(repo_root: Path, path: Path, branch: str, base: str, create_branch: bool) -> bool:
    """Make a pooled worktree the run's worktree at ``path``, on ``branch`` (created at
    ``base`` when ``create_branch``); False when none is available or usable (the caller
    runs ``git worktree add``), a pool damaged by hand included."""
    try:
        return _claim(repo_root, path, branch, base, create_branch)
    except OSError:
        if path.exists():
            _discard_claimed(repo_root, path)
        return False


def _claim(repo_root: Path, path: Path, branch: str, base: str, create_branch: bool) -> bool:
    if not entries(repo_root):
        return False
    if _git_status(repo_root, "cat-file", "-e", f"{base}:.gitmodules")[0] == 0:
        return False  # submodules: the fresh checkout and its furnishing handle them
    claim_file = _claim_file(repo_root, path.name)
    with _locked(pool_dir(repo_root)):
        entry = _take_entry(repo_root)
        if entry is None:
            return False
        claim_file.parent.mkdir(exist_ok=True, mode=0o700)
        claim_file.write_text(entry.name)
        faults.point("pool.claim_after_intent")
        try:
            _move_in(repo_root, entry, path, branch, base, create_branch)
        except (GitError, OSError):
            _discard_claimed(repo_root, path)
            claim_file.unlink(missing_ok=True)
            return False
    try:
        _recycle(path)
    except (GitError, OSError):
        _discard_claimed(repo_root, path)
        claim_file.unlink(missing_ok=True)
        return False
    faults.point("pool.claim_before_done")
    claim_file.unlink(missing_ok=True)
    return True


def _move_in(
    repo_root: Path, entry: Path, path: Path, branch: str, base: str, create_branch: bool
) -> None:
    """Register ``path`` as a worktree on the run branch with no files (``--no-checkout``),
    then put the entry's folder in place of the empty one and its index in place of the
    missing one. Called with the pool locked.

    The registration is locked until then: between the moves the path has no ``.git``,
    and a ``git worktree prune`` run meanwhile by another process (every run's
    ``_ensure_worktree`` prunes, unlocked by the pool) deleted the run's git dir; the
    claim then failed and threw the entry away (test_worktree_pool's concurrent claims,
    about 1 in 15)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = ("--lock", "--reason", _CLAIMING)
    add_worktree(repo_root, path, branch, base, create_branch, "--no-checkout", *lock)
    admin = _dot_git_dir(path)
    os.rename(path / ".git", entry / ".git")
    path.rmdir()
    faults.point("pool.claim_in_move")
    os.rename(entry, path)
    faults.point("pool.claim_after_move")
    os.rename(_index_of(entry), admin / "index")
    (admin / "locked").unlink()


def _take_entry(repo_root: Path) -> Path | None:
    """The first complete entry (folder and index); incomplete ones (a release cut short)
    are discarded. Called with the pool locked."""
    for entry in entries(repo_root):
        if _index_of(entry).is_file():
            return entry
        _discard(repo_root, entry)
    for orphan in pool_dir(repo_root).glob("*.index"):
        if not orphan.with_suffix("").is_dir():
            orphan.unlink()
    return None


def _recycle(path: Path) -> None:
    """Turn a claimed entry into what ``git worktree add`` would have made, or raise."""
    if path.is_symlink() or not (path / ".git").is_file():
        # Without its own .git file, git would reset and clean the checkout that contains
        # the folder: the user's.
        raise GitError(f"the pooled worktree {path} has no .git file of its own")
    # Every file the previous run left goes: tracked changes (reset), untracked and
    # ignored files (-x: a venv, builds), nested repositories (twice -f).
    _git(path, "reset", "-q", "--hard")
    _git(path, "clean", "-ffdxq")
    flagged = [
        line for line in _git(path, "ls-files", "-v").splitlines() if not line.startswith("H ")
    ]
    left = _git(path, "status", "--porcelain", "--ignored", "--untracked-files=all")
    if flagged or left.strip():
        raise GitError(f"the pooled worktree {path} is not clean after recycling")
