"""The per-repository worktree pool (agentsaga/gitops/pool.py) against real repositories.

A rolled-back run's worktree is recycled for the next run: these tests prove that the
recycled worktree is the same as a fresh one (leftovers of every kind gone), that the
repository looks as after a plain rollback, that a kill -9 at each of the pool's crash
points leaves either a usable entry or none (never a half-recycled worktree a run uses),
and that concurrent claims never share an entry.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from agentsaga import faults, gitops
from agentsaga.gitops import pool
from agentsaga.gitops.runner import _dot_git_dir
from tests.conftest import cli, wait_until
from tests.gitstate import capture, git, make_repo, tree_files

FILES = {
    "README.md": "# demo\n",
    "src/calc.py": "def add(a, b):\n    return a + b\n",
    "src/util.py": "X = 1\n",
    "tests/test_calc.py": "from src.calc import add\n",
    ".gitignore": "*.log\nbuild/\n.venv/\n",
}


#: Every fault point of a pool claim, in the order a claim reaches them (the kill tests
#: here and in test_pool_damage.py go through each).
CLAIM_POINTS = [
    "pool.claim_after_intent",
    "pool.claim_in_move",
    "pool.claim_after_move",
    "pool.claim_before_done",
]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path, FILES)


def new_ws(repo: Path, run_id: str, **kw: Any) -> gitops.Workspace:
    return gitops.create_workspace(repo, run_id, f"agentsaga/{run_id}", **kw)


def litter(ws: gitops.Workspace) -> None:
    """Everything a run may leave in its worktree, tracked, untracked, ignored and git's."""
    w = ws.path
    (w / "src" / "calc.py").write_text("broken\n")  # modified
    (w / "src" / "util.py").unlink()  # deleted
    os.chmod(w / "README.md", 0o755)  # mode change
    (w / "notes.txt").write_text("untracked\n")
    (w / "debug.log").write_text("ignored\n")
    (w / "build" / "obj").mkdir(parents=True)
    (w / "build" / "obj" / "m.o").write_bytes(b"\0" * 10)
    (w / ".venv" / "bin").mkdir(parents=True)
    (w / ".venv" / "bin" / "python").write_text("#!/bin/sh\n")
    (w / ".agentsaga").mkdir()
    (w / ".agentsaga" / "state.db").write_text("not the user's store\n")
    nested = w / "vendor" / "lib"
    nested.mkdir(parents=True)
    git(nested, "init", "-q")
    (nested / "x.c").write_text("int x;\n")
    git(nested, "add", "x.c")
    git(nested, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "v")
    git(w, "add", "notes.txt")  # staged
    gitops.snapshot(ws, f"refs/agentsaga/{w.name}/s/1")  # the snapshot index
    (_dot_git_dir(w) / "REVERT_HEAD").write_text("0" * 40 + "\n")


def state(path: Path) -> dict[str, Any]:
    """What a step could notice about its worktree."""
    admin = _dot_git_dir(path)
    return {
        "files": tree_files(path),
        "extra": sorted(p.name for p in path.iterdir() if p.name in (".agentsaga", ".git")),
        "status": git(path, "status", "--porcelain", "--ignored", "--untracked-files=all"),
        "index": git(path, "ls-files", "-s", "-v"),
        "head": git(path, "symbolic-ref", "HEAD").strip().rsplit("/", 1)[0],
        "commit": git(path, "rev-parse", "HEAD").strip(),
        "admin": sorted(p.name for p in admin.iterdir() if p.name != "logs"),
        "stash": git(path, "stash", "list"),
    }


def advance_main(repo: Path) -> None:
    """The next run starts from another commit: files changed, added and deleted."""
    (repo / "src" / "calc.py").write_text("def add(a, b):\n    return b + a\n")
    (repo / "docs").mkdir()
    (repo / "docs" / "new.md").write_text("new\n")
    git(repo, "rm", "-q", "tests/test_calc.py")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "main moves on")


def listed_worktrees(repo: Path) -> list[str]:
    return [
        line.removeprefix("worktree ")
        for line in git(repo, "worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ")
    ]


# --- a recycled worktree is a fresh one ---------------------------------------------------


def test_a_recycled_worktree_equals_a_fresh_one_and_keeps_nothing_of_its_last_run(
    repo: Path,
) -> None:
    ws = new_ws(repo, "r1")
    folder_inode = ws.path.stat().st_ino
    litter(ws)
    gitops.delete_workspace(ws, "r1")
    assert len(pool.entries(repo)) == 1
    advance_main(repo)

    recycled = new_ws(repo, "r2")
    fresh = new_ws(repo, "r3", pool=False)
    assert recycled.path.stat().st_ino == folder_inode  # the same folder, recycled
    assert fresh.path.stat().st_ino != folder_inode
    assert pool.entries(repo) == []
    got, want = state(recycled.path), state(fresh.path)
    assert got["head"] == want["head"] == "refs/heads/agentsaga"
    assert got == want
    assert got["status"] == ""
    assert "vendor" not in got["files"] and "notes.txt" not in got["files"]
    assert (recycled.path / "docs" / "new.md").read_text() == "new\n"
    assert git(repo, "rev-parse", "agentsaga/r2").strip() == recycled.base_commit
    # The run works in it as in any worktree: a snapshot, a commit, a reset.
    snap = gitops.snapshot(recycled, "refs/agentsaga/r2/w/1")
    (recycled.path / "docs" / "new.md").write_text("edited\n")
    assert gitops.commit_all(recycled, "agentsaga r2: step w") is not None
    gitops.reset_to(recycled, snap, gitops.head(recycled))
    assert state(recycled.path)["status"] == ""


def test_a_rollback_that_pools_the_worktree_leaves_the_repository_as_before(repo: Path) -> None:
    before = capture(repo)
    ws = new_ws(repo, "r1")
    litter(ws)
    gitops.delete_workspace(ws, "r1")
    assert len(pool.entries(repo)) == 1
    assert capture(repo) == before  # no registered worktree, branch or ref is left
    assert listed_worktrees(repo) == [str(repo)]


def test_pool_false_deletes_the_worktree_and_never_claims(repo: Path) -> None:
    ws = new_ws(repo, "r1", pool=False)
    gitops.delete_workspace(ws, "r1")
    assert pool.entries(repo) == []
    pooled = new_ws(repo, "r2")
    gitops.delete_workspace(pooled, "r2")
    assert len(pool.entries(repo)) == 1
    new_ws(repo, "r3", pool=False)
    assert len(pool.entries(repo)) == 1


def test_the_pool_keeps_at_most_max_entries(repo: Path) -> None:
    spaces = [new_ws(repo, f"r{i}") for i in range(pool.MAX_ENTRIES + 1)]
    for i, ws in enumerate(spaces):
        gitops.delete_workspace(ws, f"r{i}")
    assert len(pool.entries(repo)) == pool.MAX_ENTRIES
    assert listed_worktrees(repo) == [str(repo)]


def test_an_entry_with_flagged_index_entries_is_discarded_for_a_fresh_worktree(
    repo: Path,
) -> None:
    ws = new_ws(repo, "r1")
    inode = ws.path.stat().st_ino
    # Held open, the discarded folder's inode cannot be reused by the fresh worktree once
    # the trash is emptied: an equal inode below can only mean the entry was recycled.
    held = os.open(ws.path, os.O_RDONLY)
    git(ws.path, "update-index", "--skip-worktree", "src/util.py")
    git(ws.path, "update-index", "--assume-unchanged", "src/calc.py")
    (ws.path / "src" / "calc.py").write_text("hidden change\n")
    gitops.delete_workspace(ws, "r1")
    try:
        again = new_ws(repo, "r2")
        assert again.path.stat().st_ino != inode
    finally:
        os.close(held)
    assert state(again.path) == state(new_ws(repo, "r3", pool=False).path)
    assert (again.path / "src" / "calc.py").read_text() == FILES["src/calc.py"]


def test_a_base_with_submodules_takes_a_fresh_worktree(repo: Path) -> None:
    gitops.delete_workspace(new_ws(repo, "r1"), "r1")
    (repo / ".gitmodules").write_text('[submodule "x"]\n\tpath = x\n\turl = ./x\n')
    git(repo, "add", ".gitmodules")
    git(repo, "commit", "-q", "-m", "submodules")
    new_ws(repo, "r2")
    assert len(pool.entries(repo)) == 1  # not claimed


# --- kill -9 at each crash point ----------------------------------------------------------


def _killed_in_child(point: str, action: Any) -> None:
    """Run ``action`` in a forked child armed to SIGKILL itself at ``point``."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            faults.configure(point)
            action()
            code = 3  # the point was never reached
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (point, status)


@pytest.mark.parametrize("point", ["pool.release_after_move"])
def test_a_kill_while_releasing_then_rollback_again_and_the_next_run_is_clean(
    repo: Path, point: str
) -> None:
    before = capture(repo)
    ws = new_ws(repo, "r1")
    litter(ws)
    _killed_in_child(point, lambda: gitops.delete_workspace(ws, "r1"))
    gitops.delete_workspace(ws, "r1")  # the rollback, run again
    assert capture(repo) == before
    advance_main(repo)
    after = new_ws(repo, "r2")
    assert state(after.path) == state(new_ws(repo, "r3", pool=False).path)


@pytest.mark.parametrize("point", CLAIM_POINTS)
def test_a_kill_while_claiming_never_leaves_a_half_recycled_worktree_in_use(
    repo: Path, point: str
) -> None:
    ws = new_ws(repo, "r1")
    litter(ws)
    gitops.delete_workspace(ws, "r1")
    advance_main(repo)
    _killed_in_child(point, lambda: new_ws(repo, "r2"))
    again = new_ws(repo, "r2")  # what resume does: create_workspace again
    assert state(again.path) == state(new_ws(repo, "r3", pool=False).path)
    assert not list((pool.pool_dir(repo) / "claims").iterdir())
    assert sorted(listed_worktrees(repo)) == sorted(
        [str(repo), str(again.path), str(repo / ".agentsaga" / "worktrees" / "r3")]
    )


# --- concurrent claims --------------------------------------------------------------------


def _claim_in_child(repo: Path, run_id: str, go: Any, out: Any) -> None:  # pragma: no cover
    go.wait()
    ws = new_ws(repo, run_id)
    out.put((run_id, ws.path.stat().st_ino, str(_dot_git_dir(ws.path))))


def test_concurrent_runs_never_share_a_pooled_worktree(repo: Path) -> None:
    # Both worktrees exist before either is released: released one after the other, the
    # second run would recycle the first one's entry, and only one entry would be pooled.
    spaces = [new_ws(repo, f"old{i}") for i in range(pool.MAX_ENTRIES)]
    released = [ws.path.stat().st_ino for ws in spaces]
    for i, ws in enumerate(spaces):
        litter(ws)
        gitops.delete_workspace(ws, f"old{i}")
    assert len(set(released)) == len(pool.entries(repo)) == pool.MAX_ENTRIES
    # Held open, an entry's inode cannot go to a fresh worktree if the entry were thrown
    # away: a released inode below can only mean the entry was recycled.
    held = [os.open(entry, os.O_RDONLY) for entry in pool.entries(repo)]
    ctx = multiprocessing.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    children = [
        ctx.Process(target=_claim_in_child, args=(repo, f"c{i}", go, out)) for i in range(4)
    ]
    try:
        for child in children:
            child.start()
        go.set()
        got = [out.get(timeout=120) for _ in children]
        for child in children:
            child.join(timeout=60)
            assert child.exitcode == 0
    finally:
        for fd in held:
            os.close(fd)
    inodes = [inode for _, inode, _ in got]
    admins = [admin for _, _, admin in got]
    assert len(set(inodes)) == len(set(admins)) == 4  # no entry or git dir shared
    # More runs than entries: every entry is recycled, each by exactly one run (the
    # inodes are distinct). A run's prune never costs another run its entry.
    assert set(released) <= set(inodes)
    assert pool.entries(repo) == []
    fresh = state(new_ws(repo, "ref", pool=False).path)
    for run_id, _, _ in got:
        assert state(repo / ".agentsaga" / "worktrees" / run_id) == fresh


def test_a_prune_by_another_run_while_an_entry_moves_in_keeps_the_claim(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every run starting prunes worktrees, without the pool's lock. While a claim moves
    its entry in, the run's path has no .git: a prune then deleted the run's git dir, the
    claim failed and threw the entry away (test_concurrent_runs_never_share_a_pooled_worktree
    failed about 1 in 15). Here the prune runs at that very moment."""
    ws = new_ws(repo, "r1")
    inode = ws.path.stat().st_ino
    gitops.delete_workspace(ws, "r1")
    rename, pruned = os.rename, []

    def prune_first(src: Any, dst: Any) -> None:
        if Path(src).name.startswith("e-") and Path(dst).name == "r2":  # entry -> r2's path
            git(repo, "worktree", "prune")
            pruned.append(Path(dst).name)
        rename(src, dst)

    monkeypatch.setattr(os, "rename", prune_first)
    again = new_ws(repo, "r2")
    monkeypatch.undo()
    assert pruned == ["r2"]
    assert again.path.stat().st_ino == inode  # the entry was recycled, not thrown away
    assert state(again.path) == state(new_ws(repo, "r3", pool=False).path)
    assert "locked" not in git(repo, "worktree", "list", "--porcelain")
    gitops.delete_workspace(again, "r2")  # not left locked: pooled again
    assert len(pool.entries(repo)) == 1


# --- through the engine and the CLI -------------------------------------------------------


def test_a_run_after_a_rollback_recycles_the_worktree_and_sees_no_leftovers(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo)
    monkeypatch.delenv("AGENTSAGA_STORE", raising=False)
    probe = tmp_path / "probe.txt"
    pipeline = tmp_path / "p.yml"
    look = f"git status --porcelain --ignored >> {probe}; echo --- >> {probe}"
    mess = "mkdir -p build .venv && touch build/a.o .venv/x new.txt && echo x >> README.md"
    pipeline.write_text(
        "name: pooled\nsteps:\n"
        "  - id: look\n    kind: shell\n"
        f"    run: {json.dumps(look)}\n"
        "  - id: mess\n    kind: shell\n"
        f"    run: {json.dumps(mess)}\n"
        "    commit: true\n    compensate: {git: reset}\n"
    )
    first = cli("run", pipeline, "--json")
    assert first.exit_code == 0, first
    run_id = first.json()["run_id"]
    inode = (repo / ".agentsaga" / "worktrees" / run_id).stat().st_ino
    assert cli("rollback", run_id).exit_code == 0
    assert len(pool.entries(repo)) == 1
    second = cli("run", pipeline, "--json")
    assert second.exit_code == 0, second
    assert (repo / ".agentsaga" / "worktrees" / second.json()["run_id"]).stat().st_ino == inode
    assert probe.read_text() == "---\n---\n"  # both runs started from a clean tree
    off = tmp_path / "off.yml"
    off.write_text(pipeline.read_text().replace("steps:", "workspace: {pool: false}\nsteps:", 1))
    assert cli("validate", off).exit_code == 0


def _blocked_on_flock(pid: int) -> bool:
    """Whether ``pid`` waits for a flock (a ``->`` line of /proc/locks names it)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and "FLOCK" in fields and str(pid) in fields:
            return True
    return False


def test_a_claim_waits_while_another_process_holds_the_pool(repo: Path) -> None:
    """Deterministic half of the race above: while the pool is locked (another run is
    taking an entry), a second claim neither takes the entry nor records a claim."""
    gitops.delete_workspace(new_ws(repo, "old"), "old")
    ctx = multiprocessing.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    # Forked before the lock is taken: a child would otherwise inherit the locked fd.
    child = ctx.Process(target=_claim_in_child, args=(repo, "c1", go, out))
    child.start()
    with pool._locked(pool.pool_dir(repo)):
        go.set()
        wait_until(lambda: _blocked_on_flock(child.pid or 0), what="the claim to wait")
        assert len(pool.entries(repo)) == 1
        assert not (pool.pool_dir(repo) / "claims" / "c1").exists()
    out.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert pool.entries(repo) == []


def test_pool_false_in_the_config_keeps_rollback_deleting_worktrees(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo)
    monkeypatch.delenv("AGENTSAGA_STORE", raising=False)
    (repo / ".agentsaga.yml").write_text("pool: false\n")
    git(repo, "add", ".agentsaga.yml")
    git(repo, "commit", "-q", "-m", "config")
    pipeline = tmp_path / "p.yml"
    pipeline.write_text('name: unpooled\nsteps:\n  - id: s\n    kind: shell\n    run: ["true"]\n')
    first = cli("run", pipeline, "--json")
    assert first.exit_code == 0, first
    assert cli("rollback", first.json()["run_id"]).exit_code == 0
    assert pool.entries(repo) == []
    (repo / ".agentsaga.yml").write_text("pool: maybe\n")
    refused = cli("run", pipeline)
    assert refused.exit_code == 2 and ".agentsaga.yml:1:7" in refused.output, refused
