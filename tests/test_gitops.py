"""gitops against real throwaway repositories: every compensation restores state exactly."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from agentsaga import gitops
from agentsaga.errors import GitError, GitUnsafe
from tests.gitstate import capture, git, make_repo, tree_files, write

FILES = {
    "README.md": "# demo\n",
    "src/calc.py": "def add(a, b):\n    return a - b\n",
    "tests/test_calc.py": "from src.calc import add\n",
    ".gitignore": "*.log\nbuild/\n",
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path, FILES)


def new_ws(repo: Path, run_id: str = "r1", **kw: object) -> gitops.Workspace:
    return gitops.create_workspace(repo, run_id, f"agentsaga/{run_id}", **kw)  # type: ignore[arg-type]


def ref(run_id: str, step: str, attempt: int = 1) -> str:
    return f"refs/agentsaga/{run_id}/{step}/{attempt}"


def agentsaga_refs(repo: Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname)", "refs/agentsaga/").split()


# --- worktree isolation ----------------------------------------------------------------------


def test_worktree_write_step_reset_then_delete_restores_everything(repo: Path) -> None:
    before = capture(repo)
    ws = new_ws(repo)
    assert ws.path == repo / ".agentsaga" / "worktrees" / "r1"
    assert git(ws.path, "rev-parse", "--abbrev-ref", "HEAD").strip() == "agentsaga/r1"
    assert capture(repo)["files"] == before["files"]  # the user's checkout is untouched
    assert capture(repo)["status"] == before["status"]  # .agentsaga/ is excluded

    # An earlier step left an untracked file: it belongs to the state before the next step.
    write(ws.path, {"notes.txt": "from an earlier step\n"})
    in_before_step = tree_files(ws.path)
    snap = gitops.snapshot(ws, ref("r1", "write"))
    write(ws.path, {"src/calc.py": "def add(a, b):\n    return a + b\n", "src/new.py": "x = 1\n"})
    (ws.path / "notes.txt").unlink()
    (ws.path / "README.md").unlink()
    commit = gitops.commit_all(ws, "agentsaga r1: write")
    assert commit is not None and gitops.head(ws) == commit

    gitops.reset_to(ws, snap, expected_head=commit)
    assert tree_files(ws.path) == in_before_step
    assert gitops.head(ws) == ws.base_commit
    status = git(ws.path, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert status == ["?? notes.txt"]  # index = base commit, the file untracked as before

    gitops.delete_workspace(ws, "r1", expected_head=ws.base_commit)
    assert capture(repo) == before
    assert agentsaga_refs(repo) == []


def test_crash_mid_write_reset_restores_exactly(repo: Path) -> None:
    before = capture(repo)
    ws = new_ws(repo)
    in_before_step = tree_files(ws.path)
    snap = gitops.snapshot(ws, ref("r1", "write"))
    # The process died mid-step: a half-written new file, a modified and a deleted file,
    # a new directory, nothing committed, the index half-staged.
    write(ws.path, {"src/calc.py": "def add(a, b):\n    ret", "src/half.py": "def f(:\n"})
    write(ws.path, {"pkg/deep/mod.py": "partial"})
    (ws.path / "tests" / "test_calc.py").unlink()
    git(ws.path, "add", "src/half.py")

    gitops.reset_to(ws, snap, expected_head=ws.base_commit)
    assert tree_files(ws.path) == in_before_step
    assert git(ws.path, "status", "--porcelain", "--untracked-files=all") == ""
    gitops.delete_workspace(ws, "r1", expected_head=ws.base_commit)
    assert capture(repo) == before


def test_reset_leaves_ignored_files_alone(repo: Path) -> None:
    ws = new_ws(repo)
    snap = gitops.snapshot(ws, ref("r1", "shell"))
    write(ws.path, {"run.log": "log\n", "build/out.bin": "bin", "made.txt": "new"})
    gitops.reset_to(ws, snap, expected_head=ws.base_commit)
    assert (ws.path / "run.log").exists() and (ws.path / "build" / "out.bin").exists()
    assert not (ws.path / "made.txt").exists()


def test_reset_restores_file_replaced_by_directory(repo: Path) -> None:
    ws = new_ws(repo)
    in_before_step = tree_files(ws.path)
    snap = gitops.snapshot(ws, ref("r1", "shell"))
    (ws.path / "README.md").unlink()
    write(ws.path, {"README.md/inner.txt": "now a dir"})
    commit = gitops.commit_all(ws, "weird")
    gitops.reset_to(ws, snap, expected_head=commit)
    assert tree_files(ws.path) == in_before_step


def test_reset_twice_is_a_noop_success(repo: Path) -> None:
    ws = new_ws(repo)
    snap = gitops.snapshot(ws, ref("r1", "write"))
    write(ws.path, {"src/calc.py": "changed\n"})
    commit = gitops.commit_all(ws, "write")
    gitops.reset_to(ws, snap, expected_head=commit)
    state = capture(ws.path)
    gitops.reset_to(ws, snap, expected_head=commit)
    assert capture(ws.path) == state


def test_person_commit_makes_reset_refuse_and_force_overrides(repo: Path) -> None:
    ws = new_ws(repo)
    snap = gitops.snapshot(ws, ref("r1", "write"))
    write(ws.path, {"src/calc.py": "by the agent\n"})
    commit = gitops.commit_all(ws, "write")
    write(ws.path, {"human.txt": "mine\n"})
    git(ws.path, "add", "human.txt")
    git(ws.path, "commit", "-q", "-m", "a person's fix")
    person = gitops.head(ws)
    state = capture(ws.path)

    with pytest.raises(GitUnsafe) as info:
        gitops.reset_to(ws, snap, expected_head=commit)
    assert "a person's fix" in str(info.value) and "--force" in str(info.value)
    assert capture(ws.path) == state and gitops.head(ws) == person

    with pytest.raises(GitUnsafe):
        gitops.delete_workspace(ws, "r1", expected_head=commit)
    assert capture(ws.path) == state

    gitops.reset_to(ws, snap, expected_head=commit, force=True)
    assert gitops.head(ws) == ws.base_commit
    assert not (ws.path / "human.txt").exists()


def test_snapshot_is_idempotent_and_never_touches_the_real_index(repo: Path) -> None:
    ws = new_ws(repo)
    write(ws.path, {"src/calc.py": "staged\n"})
    git(ws.path, "add", "src/calc.py")
    write(ws.path, {"src/calc.py": "unstaged on top\n", "new.txt": "untracked\n"})
    index = gitops.runner._dot_git_dir(ws.path) / "index"
    index_bytes, status = index.read_bytes(), capture(ws.path)["status"]

    snap = gitops.snapshot(ws, ref("r1", "s"))
    assert index.read_bytes() == index_bytes
    assert capture(ws.path)["status"] == status
    assert git(ws.path, "rev-parse", f"{snap}^").strip() == ws.base_commit
    assert git(ws.path, "show", f"{snap}:src/calc.py") == "unstaged on top\n"
    assert git(ws.path, "show", f"{snap}:new.txt") == "untracked\n"
    write(ws.path, {"new.txt": "changed later\n"})
    assert gitops.snapshot(ws, ref("r1", "s")) == snap  # the first snapshot wins
    assert [p.name for p in index.parent.glob("agentsaga-snapshot.index.*")] == []
    with pytest.raises(GitUnsafe):
        gitops.snapshot(ws, "refs/heads/main")


def test_commit_all_with_nothing_changed_returns_none(repo: Path) -> None:
    ws = new_ws(repo)
    assert gitops.commit_all(ws, "nothing") is None
    write(ws.path, {"ignored.log": "x"})
    assert gitops.commit_all(ws, "still nothing") is None


def test_delete_twice_and_branch_already_gone_succeed(repo: Path) -> None:
    before = capture(repo)
    ws = new_ws(repo)
    gitops.snapshot(ws, ref("r1", "a"))
    write(ws.path, {"left/over.txt": "uncommitted"})
    gitops.delete_workspace(ws, "r1", expected_head=ws.base_commit)
    gitops.delete_workspace(ws, "r1", expected_head=ws.base_commit)
    assert capture(repo) == before

    ws2 = new_ws(repo, "r2")
    git(repo, "worktree", "remove", "--force", str(ws2.path))
    git(repo, "branch", "-D", "agentsaga/r2")
    gitops.delete_workspace(ws2, "r2", expected_head=ws2.base_commit)
    assert capture(repo) == before


def _wait_gone(path: Path) -> bool:
    """The background delete has no deadline of its own: wait for it, bounded (2 min: only
    a safety net, a loaded machine may be slow)."""
    for _ in range(2400):
        if not path.exists():
            return True
        time.sleep(0.05)
    return False


def test_a_deleted_worktree_goes_to_the_trash_and_is_emptied_in_the_background(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = capture(repo)
    ws = new_ws(repo)
    write(ws.path, {"left/over.txt": "uncommitted", "many/a.txt": "a", "many/b.txt": "b"})
    removed: list[tuple[str, ...]] = []
    real = gitops.compensation._git

    def spy(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
        removed.append(args)
        return real(cwd, *args, env=env)

    monkeypatch.setattr(gitops.compensation, "_git", spy)
    gitops.delete_workspace(ws, "r1", expected_head=ws.base_commit)
    # Gone from its place and from git's list at once, without `worktree remove`
    # (which deletes every file before it returns); the trash empties by itself.
    assert not ws.path.exists()
    assert not any(args[:2] == ("worktree", "remove") for args in removed)
    assert _wait_gone(repo / ".agentsaga" / "trash")
    assert capture(repo) == before


def test_a_locked_worktree_is_removed_by_git_itself(repo: Path) -> None:
    before = capture(repo)
    ws = new_ws(repo)
    git(repo, "worktree", "lock", str(ws.path))
    gitops.delete_workspace(ws, "r1", expected_head=ws.base_commit)
    assert not ws.path.exists() and not (repo / ".agentsaga" / "trash").exists()
    assert capture(repo) == before


def test_keep_refs_keeps_snapshots(repo: Path) -> None:
    ws = new_ws(repo)
    gitops.snapshot(ws, ref("r1", "a"))
    gitops.delete_workspace(ws, "r1", keep_refs=True)
    assert agentsaga_refs(repo) == [ref("r1", "a")]
    gitops.delete_refs(repo, "refs/agentsaga/r1/")
    assert agentsaga_refs(repo) == []


def test_two_runs_at_once_do_not_interfere(repo: Path) -> None:
    before = capture(repo)
    a, b = new_ws(repo, "ra"), new_ws(repo, "rb")
    snap_a = gitops.snapshot(a, ref("ra", "write"))
    snap_b = gitops.snapshot(b, ref("rb", "write"))
    write(a.path, {"src/calc.py": "A\n", "a.txt": "a"})
    write(b.path, {"src/calc.py": "B\n", "b.txt": "b"})
    commit_a = gitops.commit_all(a, "ra")
    commit_b = gitops.commit_all(b, "rb")

    def b_state() -> tuple[object, ...]:
        # Refs and the worktree list are shared by design; b's own view must not change.
        state = capture(b.path)
        refs = [r for r in state["refs"] if "/rb" in r]
        return state["head"], state["status"], state["files"], refs

    seen_by_b = b_state()
    gitops.reset_to(a, snap_a, expected_head=commit_a)
    assert b_state() == seen_by_b
    assert gitops.head(b) == commit_b
    gitops.delete_workspace(a, "ra", expected_head=a.base_commit)
    assert b_state() == seen_by_b
    assert agentsaga_refs(repo) == [ref("rb", "write")]

    gitops.reset_to(b, snap_b, expected_head=commit_b)
    gitops.delete_workspace(b, "rb", expected_head=b.base_commit)
    assert capture(repo) == before


def test_user_keeps_working_during_a_worktree_run(repo: Path) -> None:
    ws = new_ws(repo)
    write(repo, {"src/calc.py": "user edit\n", "user.txt": "u"})
    git(repo, "add", "user.txt")
    user_files, user_status = tree_files(repo), capture(repo)["status"]
    snap = gitops.snapshot(ws, ref("r1", "write"))
    write(ws.path, {"agent.txt": "x"})
    commit = gitops.commit_all(ws, "agent")
    gitops.reset_to(ws, snap, expected_head=commit)
    gitops.delete_workspace(ws, "r1")
    assert tree_files(repo) == user_files and capture(repo)["status"] == user_status


def test_recreate_is_idempotent_but_a_foreign_branch_is_refused(repo: Path) -> None:
    ws = new_ws(repo)
    assert new_ws(repo) == ws  # e.g. a crash before the engine recorded it
    git(repo, "branch", "agentsaga/mine")
    before = capture(repo)
    with pytest.raises(GitUnsafe, match="already exists"):
        gitops.create_workspace(repo, "r9", "agentsaga/mine")
    assert capture(repo) == before
    with pytest.raises(GitError):
        gitops.create_workspace(repo, "../evil", "agentsaga/x")


def test_reopen_readds_a_removed_worktree(repo: Path) -> None:
    ws = new_ws(repo)
    write(ws.path, {"a.txt": "a"})
    commit = gitops.commit_all(ws, "a")
    git(repo, "worktree", "remove", "--force", str(ws.path))
    assert not gitops.workspace_exists(ws)
    gitops.reopen_workspace(ws)
    assert gitops.workspace_exists(ws) and gitops.head(ws) == commit
    assert (ws.path / "a.txt").read_text() == "a"
    gitops.delete_workspace(ws, "r1", expected_head=commit)
    with pytest.raises(GitUnsafe, match="no longer exists"):
        gitops.reopen_workspace(ws)


def test_workspace_json_round_trip(repo: Path) -> None:
    ws = new_ws(repo)
    assert gitops.Workspace.from_json(ws.to_json()) == ws


# --- branch isolation ------------------------------------------------------------------------


def make_dirty(repo: Path) -> None:
    write(repo, {"src/calc.py": "staged version\n"})
    git(repo, "add", "src/calc.py")
    write(repo, {"src/calc.py": "unstaged on top of staged\n", "README.md": "edited\n"})
    write(repo, {"untracked.txt": "mine\n", "newdir/deep.txt": "also mine\n", "keep.log": "i"})


def test_branch_isolation_refuses_a_dirty_tree(repo: Path) -> None:
    make_dirty(repo)
    before = capture(repo)
    with pytest.raises(GitUnsafe, match="--allow-dirty"):
        new_ws(repo, isolation="branch")
    assert capture(repo) == before
    assert not gitops.ref_exists(repo, "refs/heads/agentsaga/r1")


def test_branch_isolation_with_allow_dirty_restores_everything(repo: Path) -> None:
    git(repo, "stash", "push", "-q", "-m", "an older stash of the user")
    make_dirty(repo)
    before = capture(repo)
    ws = new_ws(repo, isolation="branch", allow_dirty=True)
    assert ws.path == repo and ws.stash_commit is not None
    assert new_ws(repo, isolation="branch", allow_dirty=True) == ws  # re-create: no-op
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert (repo / "keep.log").exists()  # ignored files are not stashed
    assert git(repo, "symbolic-ref", "HEAD").strip() == "refs/heads/agentsaga/r1"

    snap = gitops.snapshot(ws, ref("r1", "write"))
    write(repo, {"src/calc.py": "agent\n", "agent.txt": "new"})
    commit = gitops.commit_all(ws, "write")
    write(repo, {"half.txt": "crash lef"})  # a later step died mid-write
    gitops.reset_to(ws, snap, expected_head=commit)
    gitops.delete_workspace(ws, "r1", expected_head=ws.base_commit)
    assert capture(repo) == before
    gitops.delete_workspace(ws, "r1", expected_head=ws.base_commit)
    assert capture(repo) == before


def test_branch_isolation_clean_tree_delete_with_leftovers(repo: Path) -> None:
    before = capture(repo)
    ws = new_ws(repo, isolation="branch")
    assert ws.stash_commit is None
    write(repo, {"src/calc.py": "agent\n"})
    commit = gitops.commit_all(ws, "write")
    write(repo, {"uncommitted.txt": "x", "README.md": "dirty\n"})
    gitops.delete_workspace(ws, "r1", expected_head=commit)
    assert capture(repo) == before


def test_branch_isolation_refuses_when_user_switched_elsewhere(repo: Path) -> None:
    git(repo, "branch", "feature")
    ws = new_ws(repo, isolation="branch")
    git(repo, "checkout", "-q", "feature")
    with pytest.raises(GitUnsafe, match="switch back"):
        gitops.delete_workspace(ws, "r1")
    with pytest.raises(GitUnsafe):
        gitops.commit_all(ws, "x")
    git(repo, "checkout", "-q", "main")
    gitops.delete_workspace(ws, "r1")
    assert not gitops.ref_exists(repo, "refs/heads/agentsaga/r1")


@pytest.mark.parametrize("isolation", ["worktree", "branch"])
def test_detached_head_user(repo: Path, isolation: str) -> None:
    write(repo, {"second.txt": "2"})
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "second")
    git(repo, "checkout", "-q", "--detach", "HEAD~1")
    info = gitops.inspect_repo(repo)
    assert info.head_branch is None
    write(repo, {"untracked.txt": "u"})
    before = capture(repo)
    ws = new_ws(repo, isolation=isolation, allow_dirty=True)
    assert ws.user_branch is None and ws.base_commit == info.head_commit
    snap = gitops.snapshot(ws, ref("r1", "write"))
    write(ws.path, {"agent.txt": "a"})
    commit = gitops.commit_all(ws, "write")
    gitops.reset_to(ws, snap, expected_head=commit)
    gitops.delete_workspace(ws, "r1", expected_head=ws.base_commit)
    assert capture(repo) == before


# --- revert ----------------------------------------------------------------------------------


def test_revert_commits_adds_a_revert_and_is_idempotent(repo: Path) -> None:
    ws = new_ws(repo)
    base = gitops.head(ws)
    write(ws.path, {"src/calc.py": "one\n", "a.txt": "a"})
    gitops.commit_all(ws, "one")
    write(ws.path, {"src/calc.py": "two\n"})
    commit = gitops.commit_all(ws, "two")
    assert commit is not None
    revert = gitops.revert_commits(ws, base, commit, expected_head=commit)
    assert revert is not None and gitops.head(ws) == revert
    assert git(ws.path, "rev-parse", f"{revert}^").strip() == commit  # history kept
    assert gitops.changed_files(ws, base, revert) == []
    assert git(ws.path, "status", "--porcelain") == ""
    assert gitops.revert_commits(ws, base, commit, expected_head=commit) is None
    assert gitops.head(ws) == revert
    assert gitops.revert_commits(ws, base, base, expected_head=None) is None


def test_revert_finishes_after_a_crash_mid_revert(repo: Path) -> None:
    ws = new_ws(repo)
    base = gitops.head(ws)
    write(ws.path, {"a.txt": "a"})
    commit = gitops.commit_all(ws, "one")
    assert commit is not None
    git(ws.path, "revert", "--no-commit", f"{base}..{commit}")  # died before committing
    revert = gitops.revert_commits(ws, base, commit, expected_head=commit)
    assert revert is not None and gitops.changed_files(ws, base, revert) == []
    assert git(ws.path, "status", "--porcelain") == ""
    gitops.inspect_repo(ws.path)  # no revert left in progress


def test_revert_refuses_a_moved_branch(repo: Path) -> None:
    ws = new_ws(repo)
    base = gitops.head(ws)
    write(ws.path, {"a.txt": "a"})
    commit = gitops.commit_all(ws, "one")
    assert commit is not None
    write(ws.path, {"b.txt": "b"})
    git(ws.path, "add", "b.txt")
    git(ws.path, "commit", "-q", "-m", "person")
    with pytest.raises(GitUnsafe, match="person"):
        gitops.revert_commits(ws, base, commit, expected_head=commit)
    revert = gitops.revert_commits(ws, base, commit, expected_head=commit, force=True)
    assert revert is not None
    assert not (ws.path / "a.txt").exists() and (ws.path / "b.txt").exists()


# --- inspect_repo and helpers ----------------------------------------------------------------


def test_inspect_repo_describes_a_normal_repo(repo: Path) -> None:
    info = gitops.inspect_repo(repo / "src")
    assert info.root == repo.resolve() and info.head_branch == "main"
    assert info.head_commit == git(repo, "rev-parse", "HEAD").strip()


def test_inspect_repo_refuses_unsafe_states(tmp_path: Path, repo: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(GitUnsafe, match="not inside a git repository"):
        gitops.inspect_repo(plain)
    with pytest.raises(GitUnsafe, match="not a directory"):
        gitops.inspect_repo(tmp_path / "missing")
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    with pytest.raises(GitUnsafe, match="bare"):
        gitops.inspect_repo(bare)
    empty = tmp_path / "empty"
    git(tmp_path, "init", "-q", str(empty))
    with pytest.raises(GitUnsafe, match="no commits"):
        gitops.inspect_repo(empty)


def conflicting_branches(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "other")
    write(repo, {"README.md": "other\n"})
    git(repo, "commit", "-q", "-am", "other")
    git(repo, "checkout", "-q", "main")
    write(repo, {"README.md": "main\n"})
    git(repo, "commit", "-q", "-am", "main")


@pytest.mark.parametrize(
    ("command", "match"),
    [
        (["merge", "other"], "merge"),
        (["rebase", "other"], "rebase"),
        (["cherry-pick", "other"], "cherry-pick"),
        (["revert", "--no-edit", "HEAD"], "revert"),
    ],
)
def test_inspect_repo_refuses_operations_in_progress(
    repo: Path, command: list[str], match: str
) -> None:
    conflicting_branches(repo)
    if command[0] == "revert":
        write(repo, {"README.md": "later\n"})
        git(repo, "commit", "-q", "-am", "later")
        command = ["revert", "--no-edit", "HEAD~1"]
    result = subprocess.run(["git", *command], cwd=repo, capture_output=True, check=False)
    assert result.returncode != 0  # stopped on the conflict
    before = capture(repo)
    with pytest.raises(GitUnsafe, match=match):
        gitops.inspect_repo(repo)
    with pytest.raises(GitUnsafe):
        new_ws(repo)
    assert capture(repo) == before


def test_ensure_excluded_appends_once(repo: Path) -> None:
    exclude = repo / ".git" / "info" / "exclude"
    exclude.write_text("# no newline at end")
    gitops.ensure_excluded(repo)
    gitops.ensure_excluded(repo)
    assert exclude.read_text() == "# no newline at end\n.agentsaga/\n"


def test_diff_helpers(repo: Path) -> None:
    ws = new_ws(repo)
    base = gitops.head(ws)
    write(ws.path, {"src/calc.py": "def add(a, b):\n    return a + b\n", "n.txt": "1\n2\n"})
    (ws.path / "README.md").unlink()
    commit = gitops.commit_all(ws, "w")
    assert commit is not None
    assert gitops.changed_files(ws, base, commit) == ["README.md", "n.txt", "src/calc.py"]
    assert gitops.diffstat(ws, base, commit) == {"files": 3, "insertions": 3, "deletions": 2}
    assert "+    return a + b" in gitops.diff(ws, base, commit)
    assert "3 files changed" in gitops.diff(repo, base, commit, stat=True)


def test_delete_refs_refuses_foreign_prefixes(repo: Path) -> None:
    with pytest.raises(GitUnsafe):
        gitops.delete_refs(repo, "refs/heads")
    with pytest.raises(GitUnsafe):
        gitops.delete_refs(repo, "refs/agentsaga/../heads")
    assert gitops.ref_exists(repo, "refs/heads/main")
    assert not gitops.ref_exists(repo, "refs/heads/nope")


def test_git_environment_redirects_are_refused(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_INDEX_FILE", str(repo / ".git" / "other-index"))
    with pytest.raises(GitUnsafe, match="GIT_INDEX_FILE"):
        gitops.inspect_repo(repo)


def test_branch_isolation_recreate_after_crash_finds_the_stash(repo: Path) -> None:
    make_dirty(repo)
    before = capture(repo)
    ws = new_ws(repo, isolation="branch", allow_dirty=True)
    # Simulate a crash right after `git stash push`, before the stash sha was recorded.
    intent = repo / ".agentsaga" / "workspaces" / "r1.json"
    intent.write_text(json.dumps({**ws.to_json(), "stash_commit": None}))
    again = new_ws(repo, isolation="branch", allow_dirty=True)
    assert again == ws
    gitops.delete_workspace(again, "r1", expected_head=ws.base_commit)
    assert capture(repo) == before
    assert not intent.exists()


def test_list_files_sees_tracked_and_untracked_but_not_ignored(repo: Path) -> None:
    ws = new_ws(repo)
    write(ws.path, {"new dir/ü.py": "x", "debug.log": "ignored", "build/x.o": "ignored"})
    (ws.path / "README.md").unlink()
    assert gitops.list_files(ws.path) == [
        ".gitignore",
        "new dir/ü.py",
        "src/calc.py",
        "tests/test_calc.py",
    ]


def test_a_step_commit_refuses_a_worktree_switched_off_the_run_branch(repo: Path) -> None:
    ws = new_ws(repo)
    (ws.path / "README.md").write_text("changed\n")
    git(ws.path, "switch", "-q", "-c", "elsewhere")
    with pytest.raises(GitUnsafe, match="not on the run branch"):
        gitops.commit_all(ws, "agentsaga r1: step s")
    git(ws.path, "switch", "-q", "--detach")
    with pytest.raises(GitUnsafe, match="not on the run branch"):
        gitops.commit_all(ws, "agentsaga r1: step s")
    git(ws.path, "switch", "-q", "agentsaga/r1")
    assert gitops.commit_all(ws, "agentsaga r1: step s") is not None


def test_a_mode_only_change_is_committed_and_nothing_staged_is_no_commit(repo: Path) -> None:
    ws = new_ws(repo)
    assert gitops.commit_all(ws, "agentsaga r1: step s") is None
    (ws.path / "src" / "calc.py").chmod(0o755)
    sha = gitops.commit_all(ws, "agentsaga r1: step s")
    assert sha is not None
    assert "src/calc.py (+0 -0)" in git(ws.path, "log", "-1", "--format=%B", sha)
