"""The worktree pool damaged by hand: the pool can only make a run faster, never fail it.

A person (or a script cleaning up) may put a file where one of the pool's folders
belongs, or point an entry at a folder of their own. A run must still get a worktree equal
to a fresh one, a rollback must still end rolled back with the repository as before, and
nothing outside agentsaga's own folders may be reset or cleaned.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from agentsaga import gitops
from agentsaga.gitops import pool, worktrees
from tests.conftest import wait_until
from tests.gitstate import capture, git, make_repo
from tests.test_worktree_pool import CLAIM_POINTS, _killed_in_child

FILES = {"src/calc.py": "def add(a, b):\n    return a + b\n", ".gitignore": "build/\n"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path, FILES)


def new_ws(repo: Path, run_id: str) -> gitops.Workspace:
    return gitops.create_workspace(repo, run_id, f"agentsaga/{run_id}")


def test_a_file_where_the_claims_folder_belongs_gives_a_fresh_worktree(repo: Path) -> None:
    gitops.delete_workspace(new_ws(repo, "r1"), "r1")
    assert len(pool.entries(repo)) == 1
    (pool.pool_dir(repo) / "claims").write_text("a person's file\n")

    ws = new_ws(repo, "r2")  # was: FileExistsError, the run left 'running'

    assert git(ws.path, "status", "--porcelain", "--ignored", "--untracked-files=all") == ""
    assert (ws.path / "src" / "calc.py").read_text() == FILES["src/calc.py"]
    assert (pool.pool_dir(repo) / "claims").read_text() == "a person's file\n"


@pytest.mark.parametrize("where", ["pool", "pool/.lock"])
def test_a_rollback_ends_as_without_a_pool_when_the_pool_is_damaged(repo: Path, where: str) -> None:
    before = capture(repo)
    ws = new_ws(repo, "r1")
    (ws.path / "build").mkdir()
    (ws.path / "build" / "out.o").write_text("left by the run\n")
    damaged = repo / ".agentsaga" / where
    damaged.parent.mkdir(parents=True, exist_ok=True)
    if where == "pool":
        damaged.write_text("a person's file\n")
    else:
        damaged.mkdir()  # a folder where the lock file belongs

    gitops.delete_workspace(ws, "r1")  # was: FileExistsError / IsADirectoryError

    assert not ws.path.exists()
    assert capture(repo) == before
    assert not any((e / "build").exists() for e in pool.entries(repo))
    ws2 = new_ws(repo, "r2")  # and the next run still gets its worktree
    assert git(ws2.path, "status", "--porcelain", "--ignored", "--untracked-files=all") == ""


def test_a_symlinked_entry_is_never_recycled_nor_its_target_cleaned(
    repo: Path, tmp_path: Path
) -> None:
    theirs = tmp_path / "theirs"
    (theirs / "src").mkdir(parents=True)
    (theirs / "src" / "calc.py").write_text("their own version\n")
    (theirs / "notes.txt").write_text("their notes\n")
    gitops.delete_workspace(new_ws(repo, "r1"), "r1")
    (entry,) = pool.entries(repo)
    os.rename(entry, tmp_path / "moved-away")
    os.symlink(theirs, entry)  # its index stays: a complete entry, but a link

    ws = new_ws(repo, "r2")

    assert not ws.path.is_symlink()
    assert git(ws.path, "status", "--porcelain", "--ignored", "--untracked-files=all") == ""
    assert (theirs / "notes.txt").read_text() == "their notes\n"
    assert (theirs / "src" / "calc.py").read_text() == "their own version\n"
    assert not (theirs / ".git").exists()


@pytest.mark.parametrize("point", CLAIM_POINTS)
def test_a_run_killed_while_claiming_then_rolled_back_leaves_no_claim_behind(
    repo: Path, point: str
) -> None:
    ws = new_ws(repo, "r1")
    (ws.path / "build").mkdir()
    (ws.path / "build" / "out.o").write_text("left by r1\n")
    gitops.delete_workspace(ws, "r1")
    before = capture(repo)
    _killed_in_child(point, lambda: new_ws(repo, "r2"))
    intended = gitops.intended_workspace(repo, "r2")
    assert intended is not None

    gitops.delete_workspace(intended, "r2")  # rollback of the killed run

    assert capture(repo) == before
    # was: claims/r2 stayed for ever, and a half-recycled folder went back to the pool
    assert list((pool.pool_dir(repo) / "claims").iterdir()) == []
    # The entry had left the pool for r2's path (in_move: r2's path registered, locked,
    # with no folder; the entry still pooled).
    moved = point in ("pool.claim_after_move", "pool.claim_before_done")
    assert len(pool.entries(repo)) == (0 if moved else 1)


def test_a_worktree_a_background_job_still_works_in_is_not_recycled(repo: Path) -> None:
    """A step's `cmd &` outlives the step: recycled, its folder would be the next run's
    worktree and the job would write into it (found by hand: a file of the earlier run
    appeared in the next run's worktree)."""
    ws = new_ws(repo, "r1")
    job = subprocess.Popen(["sleep", "60"], cwd=ws.path / "src")
    try:
        gitops.delete_workspace(ws, "r1")
    finally:
        job.kill()
        job.wait()
    assert pool.entries(repo) == []
    assert not ws.path.exists()
    gitops.delete_workspace(new_ws(repo, "r2"), "r2")  # without the job: pooled
    assert len(pool.entries(repo)) == 1


def test_a_worktree_added_while_another_is_being_added_waits_for_it(repo: Path) -> None:
    """Two runs starting at once: git, adding one worktree, reads the others' git dirs and
    fails on one that is half made ("failed to read .git/worktrees/X/commondir"), after
    creating the run branch. The run failed; it waits and adds the worktree on the branch
    it made. (Found by test_concurrent_runs_never_share_a_pooled_worktree failing about
    1 in 15.) The other add is played by a git dir whose commondir is still empty; it is
    finished once the first try has failed (the branch exists)."""
    sibling = repo / ".git" / "worktrees" / "sibling"
    sibling.mkdir(parents=True)
    (sibling / "commondir").write_text("")
    (sibling / "gitdir").write_text(str(repo / "elsewhere" / ".git") + "\n")
    branch = repo / ".git" / "refs" / "heads" / "agentsaga" / "r1"
    head = git(repo, "rev-parse", "HEAD").strip()
    path = repo / ".agentsaga" / "worktrees" / "r1"
    path.parent.mkdir(parents=True)
    ws = gitops.Workspace(repo, path, "agentsaga/r1", head, "worktree", "main", head)

    def finish_the_sibling() -> None:
        wait_until(branch.exists, what="the first try to create the branch")
        (sibling / "commondir").write_text("../..\n")

    helper = threading.Thread(target=finish_the_sibling)
    helper.start()
    try:
        worktrees._add_worktree(ws, create_branch=True)  # was: GitError at once
    finally:
        (sibling / "commondir").write_text("../..\n")
        helper.join()
    assert git(path, "status", "--porcelain", "--ignored", "--untracked-files=all") == ""
    assert git(path, "rev-parse", "--abbrev-ref", "HEAD").strip() == "agentsaga/r1"


def test_listing_worktrees_while_another_is_being_added_waits_for_it(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same race for `git worktree list` (every run's workspace creation and teardown
    read it). git's own trace file says when the listing is tried again: the half-made git
    dir is finished then, so a later try succeeds."""
    sibling = repo / ".git" / "worktrees" / "sibling"
    sibling.mkdir(parents=True)
    (sibling / "commondir").write_text("")
    (sibling / "gitdir").write_text(str(repo / "elsewhere" / ".git") + "\n")
    trace = tmp_path / "git-trace.log"
    monkeypatch.setenv("GIT_TRACE", str(trace))

    def tried_twice() -> bool:
        return trace.exists() and trace.read_text().count("worktree list") >= 2

    def finish_the_sibling() -> None:
        wait_until(tried_twice, what="a second try of git worktree list")
        (sibling / "commondir").write_text("../..\n")

    helper = threading.Thread(target=finish_the_sibling)
    helper.start()
    try:
        listed = worktrees._registered_worktrees(repo)  # was: GitError at once
    finally:
        (sibling / "commondir").write_text("../..\n")
        helper.join()
    assert repo.resolve() in listed
