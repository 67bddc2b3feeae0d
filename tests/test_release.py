"""``agentsaga release``: a succeeded run's worktree handed back to the repository's pool,
its branch, commits and records kept; the next run recycles the worktree; a later
rollback still restores the repository exactly. Real git, real runs through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import cli
from tests.gitstate import capture, git, make_repo
from tests.test_git_workspace import run_id_of, shell, worktree_of, write_pipeline
from tests.test_newcomer import _valid

pytestmark = pytest.mark.slow


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("AGENTSAGA_STORE", raising=False)
    root = make_repo(tmp_path, {"a.txt": "a\n", "src/m.py": "x = 1\n"})
    monkeypatch.chdir(root)
    return root


def _succeeded(repo: Path, tmp_path: Path, name: str = "rel") -> str:
    path = write_pipeline(
        tmp_path, shell("w", "echo more >> a.txt", commit=True, reset=True), name=name
    )
    done = cli("run", path, "--json")
    assert done.exit_code == 0, done
    return run_id_of(done)


def _pool(repo: Path) -> list[str]:
    folder = repo / ".agentsaga" / "pool"
    return sorted(p.name for p in folder.glob("e-*") if p.is_dir()) if folder.is_dir() else []


def test_a_released_worktree_goes_to_the_pool_and_the_branch_stays(
    repo: Path, tmp_path: Path
) -> None:
    rid = _succeeded(repo, tmp_path)
    tip = git(repo, "rev-parse", f"agentsaga/{rid}").strip()
    released = cli("release", rid, "--json")
    assert released.exit_code == 0, released
    assert _valid(released, "release")["released"] == [
        {
            "run_id": rid,
            "outcome": "pooled",
            "path": str(worktree_of(repo, rid)),
            "branch": f"agentsaga/{rid}",
        }
    ]
    assert not worktree_of(repo, rid).exists()
    assert str(worktree_of(repo, rid)) not in git(repo, "worktree", "list")
    assert git(repo, "rev-parse", f"agentsaga/{rid}").strip() == tip
    assert git(repo, "show", f"agentsaga/{rid}:a.txt") == "a\nmore\n"
    assert len(_pool(repo)) == 1
    assert "+more" in cli("diff", rid).stdout
    # The repository's next run recycles it.
    second = _succeeded(repo, tmp_path, name="rel2")
    assert _pool(repo) == []
    assert (worktree_of(repo, second) / "a.txt").read_text() == "a\nmore\n"


def test_a_released_run_still_rolls_back_exactly(repo: Path, tmp_path: Path) -> None:
    before = capture(repo)
    rid = _succeeded(repo, tmp_path)
    assert cli("release", rid).exit_code == 0
    undone = cli("rollback", rid)
    assert undone.exit_code == 0, undone
    assert "was released; re-added it" in undone.output, undone
    # The re-added worktree went to the pool again; the rest is as before the run.
    after = capture(repo)
    assert after == before
    assert len(_pool(repo)) == 1


def test_uncommitted_changes_refuse_the_release_unless_forced(repo: Path, tmp_path: Path) -> None:
    rid = _succeeded(repo, tmp_path)
    (worktree_of(repo, rid) / "notes.txt").write_text("mine\n")
    refused = cli("release", rid)
    assert refused.exit_code == 2, refused
    assert "notes.txt" in refused.output and "--force" in refused.output
    assert (worktree_of(repo, rid) / "notes.txt").exists()  # nothing changed
    assert cli("release", rid, "--force").exit_code == 0
    assert not worktree_of(repo, rid).exists()
    again = cli("release", rid)
    assert again.exit_code == 0 and "no worktree to release" in again.output, again


def test_only_a_succeeded_run_is_released(repo: Path, tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, shell("f", "exit 3"), name="fails")
    failed = cli("run", path, "--json")
    assert failed.exit_code == 1, failed
    rid = run_id_of(failed)
    refused = cli("release", rid)
    assert refused.exit_code == 2, refused
    assert "is failed" in refused.output and "resume" in refused.output
    assert (worktree_of(repo, rid) / ".git").exists()  # resume still has it
    assert cli("release", "nosuch").exit_code == 2


def test_one_refused_run_releases_none(repo: Path, tmp_path: Path) -> None:
    good = _succeeded(repo, tmp_path)
    path = write_pipeline(tmp_path, shell("f", "exit 3"), name="fails")
    failed = run_id_of(cli("run", path, "--json"))
    refused = cli("release", good, failed)
    assert refused.exit_code == 2, refused
    assert (worktree_of(repo, good) / ".git").exists()
    assert _pool(repo) == []
