"""Issue 3 end to end: what runs, resumes and rollbacks do to a real repository.

Every case drives the real CLI (in this process through ``main()``, or as a subprocess
when it must be killed or run concurrently) against a throwaway repository, captures the
whole repository with ``gitstate.capture`` before the run, and asserts that after the
rollback it is *equal*: HEAD, every ref, the index and working tree, the stash list, the
worktree list and a hash of every file.

The store is left at its default, ``<repo>/.agentsaga/state.db`` (``AGENTSAGA_STORE`` is
unset), so these tests also prove that ``resume`` and ``rollback`` find a run from inside
the repository alone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, agentsaga_argv, cli, kill_group_from_pidfile, wait_until
from tests.gitstate import capture, git, make_repo, tree_files

pytestmark = pytest.mark.slow

FILES = {
    "a.txt": "a\n",
    "b.txt": "b\n",
    "src/m.py": "x = 1\n",
    ".gitignore": "*.log\n",
}

# The state of a checkout as a step sees it: status, index and the hash of every file
# (ignored ones included). Printed by steps into a file outside the repository, so two
# passes of a step can prove they started from the same state.
PROBE = (
    "{ git status --porcelain=v2 --untracked-files=all; git ls-files -s; "
    "find . \\( -path ./.git -o -path ./.agentsaga \\) -prune -o -type f -print "
    "| LC_ALL=C sort | xargs -r sha256sum; }"
)


# --- helpers -------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository with FILES committed on ``main``; the test runs inside it."""
    monkeypatch.delenv("AGENTSAGA_STORE", raising=False)
    root = make_repo(tmp_path, FILES)
    monkeypatch.chdir(root)
    return root


def q(text: str) -> str:
    return json.dumps(text)


def shell(
    step_id: str, run: str, *, commit: bool = False, reset: bool = False, extra: str = ""
) -> str:
    text = f"  - id: {step_id}\n    kind: shell\n    run: {q(run)}\n"
    if commit:
        text += "    commit: true\n"
    if reset:
        text += "    compensate: {git: reset}\n"
    for line in textwrap.dedent(extra).strip("\n").splitlines():
        text += f"    {line}\n"
    return text


def write_pipeline(
    where: Path, *steps: str, isolation: str = "worktree", name: str = "git-e2e"
) -> Path:
    """A pipeline file outside the repository (so it never dirties the tree)."""
    path = where / f"{name}.yml"
    path.write_text(
        f"name: {name}\nworkspace: {{isolation: {isolation}}}\nsteps:\n" + "".join(steps)
    )
    return path


def run_id_of(result: Result) -> str:
    assert result.stdout.strip(), result
    return str(result.json()["run_id"])


def newest_run_id(name: str | None = None) -> str:
    runs = cli("runs", "--json").json()["runs"]
    ids = [r["run_id"] for r in runs if name is None or r["pipeline"] == name]
    assert ids, runs
    return str(ids[0])


def worktree_of(repo: Path, rid: str) -> Path:
    return repo / ".agentsaga" / "worktrees" / rid


def agentsaga_refs(repo: Path, rid: str | None = None) -> list[str]:
    prefix = "refs/agentsaga/" + (f"{rid}/" if rid else "")
    return git(repo, "for-each-ref", "--format=%(refname)", prefix).split()


def probe(cwd: Path) -> str:
    return subprocess.run(
        ["bash", "-c", PROBE], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


def without_state(files: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in files.items() if not k.startswith(".agentsaga")}


def ag(cwd: Path, *args: str | Path, fault: str | None = None, timeout: float = 60) -> Result:
    """``agentsaga ARGS`` as a subprocess in ``cwd``; ``fault`` sets AGENTSAGA_FAULT."""
    env = dict(os.environ)
    env.pop("AGENTSAGA_FAULT", None)
    if fault:
        env["AGENTSAGA_FAULT"] = fault
    proc = subprocess.run(
        agentsaga_argv(*args),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


class Background:
    """``agentsaga ARGS`` in its own process group, output to files, so the test can
    SIGKILL the whole group without touching pytest."""

    def __init__(self, cwd: Path, out: Path, *args: str | Path) -> None:
        self.out, self.err = out.with_suffix(".out"), out.with_suffix(".err")
        with self.out.open("wb") as fo, self.err.open("wb") as fe:
            self.proc = subprocess.Popen(
                agentsaga_argv(*args), cwd=cwd, stdout=fo, stderr=fe, start_new_session=True
            )

    def kill_group(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def wait(self, timeout: float = 60) -> Result:
        code = self.proc.wait(timeout=timeout)
        return Result(code, self.out.read_text(), self.err.read_text())


# --- commits, resets, resume ---------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["worktree", "branch"])
def test_commit_and_edit_steps_are_undone_and_resume_keeps_the_workspace(
    repo: Path, tmp_path: Path, isolation: str
) -> None:
    t = tmp_path
    path = write_pipeline(
        t,
        shell("c1", "echo c1 >> a.txt && echo created > c.txt", commit=True),
        shell(
            "e1",
            f"{PROBE} > {t}/probe-e1-$AGENTSAGA_ATTEMPT; echo e1 >> b.txt && rm src/m.py "
            "&& mkdir -p new/deep && echo n > new/deep/f.txt && echo half > c.txt",
            reset=True,
        ),
        shell("f", f"pwd >> {t}/where; test -f {t}/flag"),
        isolation=isolation,
    )
    before = capture(repo)

    first = cli("run", path, "--json")
    assert first.exit_code == 1, first
    rid = run_id_of(first)
    assert first.json()["status"] == "failed"
    work = worktree_of(repo, rid) if isolation == "worktree" else repo
    branch = f"agentsaga/{rid}"
    # c1 committed on the run branch, with a message naming the run and the step.
    subject = git(work, "log", "-1", "--format=%s", branch).strip()
    assert subject == f"agentsaga {rid}: step c1: a.txt, c.txt"
    assert git(repo, "show", f"{branch}:c.txt") == "created\n"
    # e1 completed, so its uncommitted changes stay: the workspace is as e1 left it.
    assert (work / "b.txt").read_text() == "b\ne1\n"
    assert (work / "new/deep/f.txt").exists() and not (work / "src/m.py").exists()
    if isolation == "worktree":
        # The user's checkout is never touched by a worktree run.
        assert capture(repo)["status"] == before["status"]
        assert without_state(tree_files(repo)) == without_state(before["files"])

    (t / "flag").touch()
    second = cli("resume", rid, "--json")
    assert second.exit_code == 0, second
    # The resumed step ran in the same workspace, and found e1's changes there.
    assert (t / "where").read_text().splitlines() == [str(work), str(work)]
    assert (work / "b.txt").read_text() == "b\ne1\n"

    # Rewinding to e1 resets it to its snapshot before it runs again: the second pass
    # starts from exactly the state the first one did.
    third = cli("resume", rid, "--from", "e1", "--json")
    assert third.exit_code == 0, third
    assert (t / "probe-e1-2").read_text() == (t / "probe-e1-1").read_text()

    undone = cli("rollback", rid)
    assert undone.exit_code == 0, undone
    assert capture(repo) == before
    assert not work.exists() or isolation == "branch"
    assert agentsaga_refs(repo) == []


def test_a_failing_step_that_edited_files_is_reset_to_its_snapshot(
    repo: Path, tmp_path: Path
) -> None:
    t = tmp_path
    path = write_pipeline(
        t,
        shell("c1", "echo c1 >> a.txt", commit=True),
        shell("u", "echo untracked > notes.txt && echo dirty >> b.txt"),
        shell(
            "bad",
            f"{PROBE} > {t}/before-bad; echo more >> notes.txt; rm b.txt; echo n > n.txt; "
            "git add n.txt; printf partial > a.txt; exit 1",
            reset=True,
        ),
    )
    before = capture(repo)
    result = cli("run", path, "--json")
    assert result.exit_code == 1, result
    rid = run_id_of(result)
    # The failed step's own compensation put back everything it did, staged file included.
    assert probe(worktree_of(repo, rid)) == (t / "before-bad").read_text()
    assert cli("rollback", rid).exit_code == 0
    assert capture(repo) == before


# --- crashes -------------------------------------------------------------------------------


def crash_pipeline(t: Path) -> Path:
    """prep commits; ``mid`` half-writes files, then (until ``release`` exists) sleeps
    before finishing them and committing; ``after`` runs last. Every effect of ``mid`` is
    cumulative (appends), so a re-run that did not start from the snapshot shows."""
    mid = (
        "printf 'partial' > out.txt; echo mid >> a.txt; echo more >> notes.txt; rm b.txt; "
        f"echo $$ > {t}/mid.pid; "
        f"if [ ! -f {t}/release ]; then sleep 30; fi; "
        "printf 'complete\\n' > out.txt"
    )
    return write_pipeline(
        t,
        shell("prep", "echo prep > prep.txt", commit=True),
        shell("notes", "echo n > notes.txt"),
        shell("mid", mid, commit=True, reset=True),
        shell("after", "echo after >> a.txt", commit=True, reset=True),
    )


def clean_result(tmp_path: Path, pipeline: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The run branch's tree and the workspace's files after an uninterrupted run."""
    (tmp_path / "release").touch()
    clean = make_repo(tmp_path, FILES, name="clean")
    monkeypatch.chdir(clean)
    result = cli("run", pipeline, "--json")
    assert result.exit_code == 0, result
    rid = run_id_of(result)
    tree = git(clean, "rev-parse", f"agentsaga/{rid}^{{tree}}").strip()
    files = tree_files(worktree_of(clean, rid))
    return tree, files


def assert_like_clean_run(repo: Path, rid: str, clean: Any) -> None:
    tree, files = clean
    assert git(repo, "rev-parse", f"agentsaga/{rid}^{{tree}}").strip() == tree
    assert tree_files(worktree_of(repo, rid)) == files
    assert git(worktree_of(repo, rid), "status", "--porcelain", "--untracked-files=all") == ""


@pytest.mark.parametrize("then", ["resume", "rollback"])
def test_sigkill_while_a_step_has_half_written_files(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, then: str
) -> None:
    t = tmp_path
    path = crash_pipeline(t)
    before = capture(repo)
    proc = Background(repo, t / "run", "run", path)
    wait_until(
        lambda: (t / "mid.pid").exists() and (t / "mid.pid").read_text().strip() != "",
        what="the mid step to start sleeping",
    )
    proc.kill_group()
    kill_group_from_pidfile(t / "mid.pid")  # steps run in their own session
    rid = newest_run_id()
    work = worktree_of(repo, rid)
    assert (work / "out.txt").read_text() == "partial"  # the crash left it half-written

    if then == "resume":
        (t / "release").touch()
        resumed = ag(repo, "resume", rid)
        assert resumed.exit_code == 0, resumed
        clean = clean_result(t, path, monkeypatch)
        monkeypatch.chdir(repo)
        assert_like_clean_run(repo, rid, clean)
    rolled = ag(repo, "rollback", rid)
    assert rolled.exit_code == 0, rolled
    assert capture(repo) == before
    assert agentsaga_refs(repo) == []


@pytest.mark.parametrize("then", ["resume", "rollback"])
def test_crash_inside_the_commit_of_a_step(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, then: str
) -> None:
    t = tmp_path
    (t / "release").touch()
    path = crash_pipeline(t)
    before = capture(repo)
    # The 2nd commit is mid's: its files are staged, the commit not made.
    crashed = ag(repo, "run", path, fault="git.in_commit:2")
    assert crashed.exit_code == -signal.SIGKILL, crashed
    rid = newest_run_id()
    assert "out.txt" in git(worktree_of(repo, rid), "diff", "--cached", "--name-only")

    if then == "resume":
        resumed = ag(repo, "resume", rid)
        assert resumed.exit_code == 0, resumed
        clean = clean_result(t, path, monkeypatch)
        monkeypatch.chdir(repo)
        assert_like_clean_run(repo, rid, clean)
    rolled = ag(repo, "rollback", rid)
    assert rolled.exit_code == 0, rolled
    assert capture(repo) == before


def test_crash_inside_a_reset_during_resume_recovery(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = tmp_path
    (t / "release").touch()
    path = crash_pipeline(t)
    before = capture(repo)
    assert ag(repo, "run", path, fault="git.in_commit:2").exit_code == -signal.SIGKILL
    rid = newest_run_id()
    # resume first compensates the crashed mid (a reset), and dies halfway through it.
    crashed = ag(repo, "resume", rid, fault="git.in_reset")
    assert crashed.exit_code == -signal.SIGKILL, crashed
    resumed = ag(repo, "resume", rid)
    assert resumed.exit_code == 0, resumed
    clean = clean_result(t, path, monkeypatch)
    monkeypatch.chdir(repo)
    assert_like_clean_run(repo, rid, clean)
    assert ag(repo, "rollback", rid).exit_code == 0
    assert capture(repo) == before


def test_crash_inside_a_reset_during_rollback(repo: Path, tmp_path: Path) -> None:
    t = tmp_path
    (t / "release").touch()
    path = crash_pipeline(t)
    before = capture(repo)
    done = ag(repo, "run", path)
    assert done.exit_code == 0, done
    rid = newest_run_id()
    crashed = ag(repo, "rollback", rid, fault="git.in_reset")
    assert crashed.exit_code == -signal.SIGKILL, crashed
    again = ag(repo, "rollback", rid)
    assert again.exit_code == 0, again
    assert capture(repo) == before
    assert agentsaga_refs(repo) == []


# --- a person's work on the run branch -----------------------------------------------------


@pytest.mark.parametrize("where", ["worktree", "branch-ref"])
def test_a_persons_commit_on_the_run_branch_makes_rollback_refuse(
    repo: Path, tmp_path: Path, where: str
) -> None:
    path = write_pipeline(
        tmp_path,
        shell("c1", "echo c1 >> a.txt", commit=True, reset=True),
        shell("e1", "echo e1 >> b.txt", reset=True),
    )
    before = capture(repo)
    result = cli("run", path, "--json")
    assert result.exit_code == 0, result
    rid = run_id_of(result)
    work = worktree_of(repo, rid)
    if where == "worktree":
        (work / "mine.txt").write_text("my work\n")
        git(work, "add", "mine.txt")
        git(work, "commit", "-q", "-m", "my precious work")
    else:  # a commit made elsewhere and put on the branch, as a push or a script would
        tree = git(repo, "rev-parse", f"agentsaga/{rid}^{{tree}}").strip()
        sha = git(repo, "commit-tree", tree, "-p", f"agentsaga/{rid}", "-m", "my precious work")
        git(repo, "update-ref", f"refs/heads/agentsaga/{rid}", sha.strip())
    tip = git(repo, "rev-parse", f"agentsaga/{rid}").strip()
    mid = capture(repo)

    refused = cli("rollback", rid)
    assert refused.exit_code == 3, refused
    assert "my precious work" in refused.output
    assert "--force" in refused.output
    assert git(repo, "rev-parse", f"agentsaga/{rid}").strip() == tip  # the work is kept
    assert capture(repo) == mid
    if where == "worktree":
        assert (work / "mine.txt").exists()

    forced = cli("rollback", rid, "--force")
    assert forced.exit_code == 0, forced
    assert capture(repo) == before
    # The summary counts the latest try: c1's undo failed once, then succeeded.
    assert "undone: c1 #1" in forced.stdout and "not undone" not in forced.stdout, forced


@pytest.mark.parametrize("broken", ["garbage .git file", "git dir deleted"])
def test_a_worktree_whose_git_link_was_broken_by_hand_is_repaired_by_rollback(
    repo: Path, tmp_path: Path, broken: str
) -> None:
    """Every git command in such a worktree failed: the rollback stopped with exit 1 and
    the run untouched (a garbage .git file), or on 'X is not an agentsaga snapshot' (its
    git dir under .git/worktrees deleted)."""
    path = write_pipeline(tmp_path, shell("c1", "echo c1 >> a.txt", commit=True, reset=True))
    before = capture(repo)
    result = cli("run", path, "--json")
    rid = run_id_of(result)
    work = worktree_of(repo, rid)
    if broken == "garbage .git file":
        (work / ".git").write_text("garbage\n")
    else:
        shutil.rmtree(repo / ".git" / "worktrees" / rid)

    rolled = cli("rollback", rid)

    assert rolled.exit_code == 0, rolled
    assert "had lost its link to the repository" in rolled.output, rolled
    assert capture(repo) == before


def test_a_persons_commit_between_two_steps_makes_rollback_refuse_and_stays_reachable(
    repo: Path, tmp_path: Path
) -> None:
    """Issue 10, item 4: a person commits on the run branch between two steps (the run
    failed, they fixed something, the run resumed). The later step's base includes their
    commit; undoing the earlier step must compare the branch with where the run itself
    left it (the earlier step's own commit), refuse with exit 3 naming their commit, and
    never make it unreachable."""
    path = write_pipeline(
        tmp_path,
        shell("c1", "echo c1 >> a.txt", commit=True, reset=True),
        shell("c2", "echo c2 >> b.txt; test -f ../flag", commit=True, reset=True),
    )
    failed = cli("run", path, "--json")
    assert failed.exit_code == 1, failed
    rid = run_id_of(failed)
    work = worktree_of(repo, rid)
    (work / "mine.txt").write_text("my work\n")
    git(work, "add", "mine.txt")
    git(work, "commit", "-q", "-m", "my precious work")
    mine = git(work, "rev-parse", "HEAD").strip()
    (work.parent / "flag").touch()
    resumed = cli("resume", rid)
    assert resumed.exit_code == 0, resumed

    refused = cli("rollback", rid)
    assert refused.exit_code == 3, refused
    assert "my precious work" in refused.output, refused
    status, _ = subprocess.getstatusoutput(
        f"git -C {repo} merge-base --is-ancestor {mine} agentsaga/{rid}"
    )
    assert status == 0, "the person's commit is no longer on the run branch"


def test_a_shell_step_that_commits_by_itself_rolls_back(repo: Path, tmp_path: Path) -> None:
    """Issue 10, item 5: ``git add && git commit`` in the step's own command, with
    ``git: reset``: the commit made during the step's attempt is the step's, not a
    person's, so the rollback undoes it."""
    path = write_pipeline(
        tmp_path,
        shell("c1", "echo c1 >> a.txt && git add -A && git commit -qm 'by the step'", reset=True),
        shell("e1", "echo e1 >> b.txt", reset=True),
    )
    before = capture(repo)
    result = cli("run", path, "--json")
    assert result.exit_code == 0, result
    undone = cli("rollback", cli("runs", "--json").json()["runs"][0]["run_id"])
    assert undone.exit_code == 0, undone
    assert capture(repo) == before


@pytest.mark.parametrize("then", ["rollback", "resume"])
def test_a_deleted_worktree_folder_is_recreated_and_said(
    repo: Path, tmp_path: Path, then: str
) -> None:
    """Issue 10, item 7: the run's worktree folder deleted by hand made every rollback
    fail (--force too). Taking the run over recreates it from the run branch and says so;
    the rollback then restores the repository exactly."""
    path = write_pipeline(
        tmp_path,
        shell("c1", "echo c1 >> a.txt", commit=True, reset=True),
        shell("e1", "echo e1 >> b.txt", reset=True),
        shell("f", "test -f ../flag"),
    )
    before = capture(repo)
    failed = cli("run", path, "--json")
    assert failed.exit_code == 1, failed
    rid = run_id_of(failed)
    work = worktree_of(repo, rid)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    if then == "resume":
        (work.parent / "flag").touch()
        resumed = cli("resume", rid)
        assert resumed.exit_code == 0, resumed
        assert "was deleted; recreated it" in resumed.output, resumed
        assert (work / "a.txt").read_text() == "a\nc1\n"
    undone = cli("rollback", rid)
    assert undone.exit_code == 0, undone
    if then == "rollback":
        assert "was deleted; recreated it" in undone.output, undone
    (work.parent / "flag").unlink(missing_ok=True)
    assert capture(repo) == before


def _killed(repo: Path, fault: str, *args: str | Path) -> None:
    proc = subprocess.run(
        agentsaga_argv(*args),
        cwd=repo,
        env={**os.environ, "AGENTSAGA_FAULT": fault},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)


@pytest.mark.parametrize("isolation", ["worktree", "branch"])
def test_a_kill_while_the_workspace_is_created_never_runs_in_the_users_checkout(
    repo: Path, tmp_path: Path, isolation: str
) -> None:
    """Issue 10, item 2: killed after the workspace intent and before anything exists,
    resume finishes creating the workspace (never runs in the user's checkout) and the
    run's steps work on the run branch; rollback then restores everything."""
    path = write_pipeline(
        tmp_path, shell("c1", "echo c1 >> a.txt", commit=True, reset=True), isolation=isolation
    )
    before = capture(repo)
    _killed(repo, "workspace.after_intent", "run", path)
    rid = newest_run_id()
    resumed = cli("resume", rid)
    assert resumed.exit_code == 0, resumed
    assert "finishing it first" in resumed.output, resumed
    assert git(repo, "show", "main:a.txt") == "a\n", "a step ran on the user's branch"
    assert git(repo, "show", f"agentsaga/{rid}:a.txt") == "a\nc1\n"
    assert cli("rollback", rid).exit_code == 0
    assert capture(repo) == before


def test_a_resume_of_a_run_rolled_back_before_its_workspace_existed_creates_nothing(
    repo: Path, tmp_path: Path
) -> None:
    """Killed before its workspace intent (the intent file removed below stands for the
    moment just before it was written), rolled back (nothing to undo), then resumed:
    resume refuses the rolled-back run, and creates no branch or worktree first (found by
    benchmarks/chaos.py: they stayed, and no rollback removed them any more)."""
    path = write_pipeline(tmp_path, shell("c1", "echo c1 >> a.txt", commit=True, reset=True))
    before = capture(repo)
    _killed(repo, "workspace.after_intent", "run", path)
    rid = newest_run_id()
    (repo / ".agentsaga" / "workspaces" / f"{rid}.json").unlink()
    assert cli("rollback", rid).exit_code == 0
    resumed = cli("resume", rid)
    assert resumed.exit_code == 2, resumed
    assert "finishing it first" not in resumed.output
    assert capture(repo) == before


def test_a_kill_in_worktree_add_left_locked_initializing_is_finished(
    repo: Path, tmp_path: Path
) -> None:
    """``git worktree add`` killed midway leaves the worktree locked "initializing" and
    its checkout partial: resume starts the worktree over; rollback removes it."""
    path = write_pipeline(tmp_path, shell("c1", "cat b.txt >> a.txt", commit=True, reset=True))
    before = capture(repo)
    _killed(repo, "workspace.after_intent", "run", path)
    rid = newest_run_id()
    work = repo / ".agentsaga" / "worktrees" / rid
    base = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "worktree", "add", "-q", "-b", f"agentsaga/{rid}", str(work), base)
    (repo / ".git" / "worktrees" / rid / "locked").write_text("initializing")
    (work / "b.txt").unlink()  # the checkout did not finish
    resumed = cli("resume", rid)
    assert resumed.exit_code == 0, resumed
    assert git(repo, "show", f"agentsaga/{rid}:a.txt") == "a\nb\n"
    assert cli("rollback", rid).exit_code == 0
    assert capture(repo) == before


def test_branch_isolation_killed_after_the_stash_push_gives_the_changes_back(
    repo: Path, tmp_path: Path
) -> None:
    """``--allow-dirty`` killed right after ``git stash push`` (the stash not recorded):
    rollback must pop the user's changes back, not leave them only in the stash."""
    path = write_pipeline(
        tmp_path, shell("c1", "echo c1 >> a.txt", commit=True), isolation="branch"
    )
    make_dirty(repo)
    before = capture(repo)
    _killed(repo, "workspace.after_stash", "run", path, "--allow-dirty")
    rid = newest_run_id()
    undone = cli("rollback", rid)
    assert undone.exit_code == 0, undone
    assert capture(repo) == before


def test_a_persons_commit_refuses_the_branch_deletion_too(repo: Path, tmp_path: Path) -> None:
    """With no reset to refuse first, the teardown's own compare-and-swap must."""
    path = write_pipeline(tmp_path, shell("c1", "echo c1 >> a.txt", commit=True))
    before = capture(repo)
    rid = run_id_of(cli("run", path, "--json"))
    work = worktree_of(repo, rid)
    (work / "mine.txt").write_text("my work\n")
    git(work, "add", "mine.txt")
    git(work, "commit", "-q", "-m", "my precious work")
    mid = capture(repo)

    refused = cli("rollback", rid)
    assert refused.exit_code == 3, refused
    assert "my precious work" in refused.output
    assert capture(repo) == mid
    assert cli("show", rid, "--json").json()["status"] == "rollback_failed"
    assert cli("rollback", rid, "--force").exit_code == 0
    assert capture(repo) == before


# --- two runs at once ----------------------------------------------------------------------


def test_two_runs_on_one_repository_at_once(repo: Path, tmp_path: Path) -> None:
    t = tmp_path
    pipes = []
    for n in ("one", "two"):
        wait = (
            f"echo $$ > {t}/{n}.pid; for i in $(seq 600); do [ -f {t}/go ] && break; "
            "sleep 0.05; done"
        )
        pipes.append(
            write_pipeline(
                t,
                shell(
                    "w", f"echo {n} > mine.txt; echo {n} >> a.txt; {wait}", commit=True, reset=True
                ),
                shell("e", f"echo {n} >> b.txt; echo {n} > untracked-{n}.txt", reset=True),
                name=n,
            )
        )
    before = capture(repo)
    procs = [Background(repo, t / f"bg-{i}", "run", p) for i, p in enumerate(pipes)]
    # Both are inside their first step at the same time before either may go on.
    wait_until(
        lambda: (t / "one.pid").exists() and (t / "two.pid").exists(),
        what="both runs to be in their first step",
    )
    (t / "go").touch()
    for proc in procs:
        result = proc.wait()
        assert result.exit_code == 0, result
    rids = {n: newest_run_id(n) for n in ("one", "two")}
    assert rids["one"] != rids["two"]
    for n, rid in rids.items():
        work = worktree_of(repo, rid)
        assert git(repo, "show", f"agentsaga/{rid}:mine.txt") == f"{n}\n"
        assert git(repo, "show", f"agentsaga/{rid}:a.txt") == f"a\n{n}\n"
        assert (work / "b.txt").read_text() == f"b\n{n}\n"
        assert sorted(p.name for p in work.glob("untracked-*")) == [f"untracked-{n}.txt"]
    # The user's own checkout saw nothing of either.
    assert capture(repo)["status"] == before["status"]

    rollbacks = [Background(repo, t / f"rb-{n}", "rollback", rid) for n, rid in rids.items()]
    for proc in rollbacks:
        result = proc.wait()
        assert result.exit_code == 0, result
    assert capture(repo) == before


# --- branch isolation ----------------------------------------------------------------------


def make_dirty(repo: Path) -> None:
    """A stash already there, a staged change, a partly staged file, an unstaged change,
    untracked files (one in a new folder) and an ignored file."""
    (repo / "a.txt").write_text("stashed earlier\n")
    git(repo, "stash", "push", "-q", "-m", "my older stash")
    (repo / "a.txt").write_text("a\nstaged\n")
    git(repo, "add", "a.txt")
    (repo / "src/m.py").write_text("x = 2\n")
    git(repo, "add", "src/m.py")
    (repo / "src/m.py").write_text("x = 3\n")
    (repo / "b.txt").write_text("b\nunstaged\n")
    (repo / "u.txt").write_text("untracked\n")
    (repo / "newdir").mkdir()
    (repo / "newdir/v.txt").write_text("untracked too\n")
    (repo / "debug.log").write_text("ignored\n")


def test_branch_isolation_refuses_a_dirty_tree_without_allow_dirty(
    repo: Path, tmp_path: Path
) -> None:
    path = write_pipeline(
        tmp_path, shell("c1", "echo c1 >> a.txt", commit=True), isolation="branch"
    )
    make_dirty(repo)
    before = capture(repo)
    refused = cli("run", path)
    assert refused.exit_code != 0, refused
    assert "--allow-dirty" in refused.output
    assert capture(repo) == before


def test_branch_isolation_with_allow_dirty_restores_everything(repo: Path, tmp_path: Path) -> None:
    path = write_pipeline(
        tmp_path,
        shell("c1", f"{PROBE} > {tmp_path}/seen; echo c1 >> a.txt; echo c > c.txt", commit=True),
        shell("e1", "echo e1 >> b.txt; echo w > w.txt; rm src/m.py", reset=True),
        isolation="branch",
    )
    make_dirty(repo)
    before = capture(repo)
    result = cli("run", path, "--allow-dirty", "--json")
    assert result.exit_code == 0, result
    rid = run_id_of(result)
    # The run worked on its branch, in the user's checkout, without their changes.
    assert git(repo, "symbolic-ref", "HEAD").strip() == f"refs/heads/agentsaga/{rid}"
    seen = (tmp_path / "seen").read_text()
    assert "u.txt" not in seen and "unstaged" not in seen
    assert (repo / "a.txt").read_text() == "a\nc1\n"

    undone = cli("rollback", rid)
    assert undone.exit_code == 0, undone
    assert capture(repo) == before
    assert git(repo, "stash", "list", "--format=%gs").splitlines() == ["On main: my older stash"]


def test_a_second_branch_isolation_run_in_one_checkout_is_refused_naming_the_first(
    repo: Path, tmp_path: Path
) -> None:
    """Issue 10, item 11: the second would stash the first one's work as "your changes"
    and, rolled back, restore the first run's branch as the user's."""
    path = write_pipeline(
        tmp_path, shell("c1", "echo c1 >> a.txt", commit=True), isolation="branch"
    )
    before = capture(repo)
    first = cli("run", path, "--json")
    assert first.exit_code == 0, first
    owner = run_id_of(first)
    during = capture(repo)
    for flags in ((), ("--allow-dirty",)):
        second = cli("run", path, *flags)
        assert second.exit_code != 0, second
        assert f"in use by run {owner}" in second.output, second
        assert "Traceback" not in second.output
        assert capture(repo) == during
    assert cli("rollback", owner).exit_code == 0
    assert capture(repo) == before
    again = cli("run", path, "--json")
    assert again.exit_code == 0, again
    assert cli("rollback", run_id_of(again)).exit_code == 0
    assert capture(repo) == before


def test_stale_lock_files_left_by_a_killed_process_are_removed_by_rollback(
    repo: Path, tmp_path: Path
) -> None:
    """Issue 10, item 6: a rollback killed mid-git leaves lock files under agentsaga's
    refs and its worktree; with no live owner (the lease), the next rollback removes them,
    says so, and finishes instead of failing after its retries."""
    path = write_pipeline(
        tmp_path,
        shell("c1", "echo c1 >> a.txt", commit=True, reset=True),
        shell("e1", "echo e1 >> b.txt", reset=True),
    )
    before = capture(repo)
    result = cli("run", path, "--json")
    assert result.exit_code == 0, result
    rid = run_id_of(result)
    common = repo / ".git"
    admin = common / "worktrees" / rid
    locks = [
        common / "refs" / "heads" / "agentsaga" / f"{rid}.lock",
        admin / "HEAD.lock",
        admin / "index.lock",
    ]
    locks += [
        ref.with_name(ref.name + ".lock")
        for ref in (common / "refs/agentsaga" / rid).rglob("*")
        if ref.is_file()
    ]
    assert len(locks) >= 4, locks
    for lock in locks:
        lock.write_text("")
    user_lock = common / "index.lock"  # the user's own checkout: never ours to remove
    user_lock.write_text("")
    undone = cli("rollback", rid)
    assert undone.exit_code == 0, undone
    assert "removed a stale git lock" in undone.output, undone
    assert not any(lock.exists() for lock in locks)
    assert user_lock.exists()
    user_lock.unlink()
    assert capture(repo) == before


# --- detached HEAD -------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["worktree", "branch"])
def test_detached_head(repo: Path, tmp_path: Path, isolation: str) -> None:
    (repo / "a.txt").write_text("a\nsecond\n")
    git(repo, "commit", "-q", "-am", "second")
    git(repo, "checkout", "-q", "--detach", "HEAD~1")
    start = git(repo, "rev-parse", "HEAD").strip()
    path = write_pipeline(
        tmp_path,
        shell("c1", "echo c1 >> a.txt", commit=True),
        shell("e1", "echo e1 >> b.txt; echo new > new.txt", reset=True),
        isolation=isolation,
    )
    before = capture(repo)
    result = cli("run", path, "--json")
    assert result.exit_code == 0, result
    rid = run_id_of(result)
    # The run branch starts at the detached commit.
    assert git(repo, "rev-parse", f"agentsaga/{rid}~1").strip() == start
    undone = cli("rollback", rid)
    assert undone.exit_code == 0, undone
    assert capture(repo) == before
    assert git(repo, "symbolic-ref", "-q", "HEAD", check=False) == ""
    assert git(repo, "rev-parse", "HEAD").strip() == start


# --- refusals ------------------------------------------------------------------------------


def _mid_merge(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "other")
    (repo / "a.txt").write_text("other\n")
    git(repo, "commit", "-q", "-am", "other")
    git(repo, "checkout", "-q", "main")
    (repo / "a.txt").write_text("main\n")
    git(repo, "commit", "-q", "-am", "main")
    git(repo, "merge", "-q", "other", check=False)
    assert (repo / ".git" / "MERGE_HEAD").exists()


def _mid_rebase(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "other")
    (repo / "a.txt").write_text("other\n")
    git(repo, "commit", "-q", "-am", "other")
    git(repo, "checkout", "-q", "main")
    (repo / "a.txt").write_text("main\n")
    git(repo, "commit", "-q", "-am", "main")
    git(repo, "rebase", "-q", "other", check=False)
    assert (repo / ".git" / "rebase-merge").exists() or (repo / ".git" / "rebase-apply").exists()


@pytest.mark.parametrize(
    ("state", "message"), [(_mid_merge, "middle of a merge"), (_mid_rebase, "middle of a rebase")]
)
@pytest.mark.parametrize("isolation", ["worktree", "branch"])
def test_refuses_a_repository_mid_operation(
    repo: Path, tmp_path: Path, state: Any, message: str, isolation: str
) -> None:
    state(repo)
    path = write_pipeline(
        tmp_path, shell("c1", f"touch {tmp_path}/ran", commit=True), isolation=isolation
    )
    before = capture(repo)
    refused = cli("run", path)
    assert refused.exit_code != 0, refused
    assert message in refused.output and "--abort" in refused.output
    assert not (tmp_path / "ran").exists()
    assert ignoring_store(capture(repo)) == ignoring_store(before)


def ignoring_store(state: dict[str, Any]) -> dict[str, Any]:
    """The state without agentsaga's own ``.agentsaga/`` in ``git status`` (whether it
    shows there is its own test)."""
    status = [line for line in state["status"] if ".agentsaga/" not in line]
    return {**state, "status": status}


def test_a_refused_run_leaves_nothing_in_git_status(repo: Path, tmp_path: Path) -> None:
    """Refused before the workspace exists, agentsaga must still not leave its store
    showing as untracked files in the user's ``git status``."""
    _mid_merge(repo)
    path = write_pipeline(tmp_path, shell("c1", "true", commit=True))
    before = capture(repo)
    assert cli("run", path).exit_code != 0
    assert capture(repo) == before


@pytest.mark.parametrize("state", ["no-commits", "dirty"])
def test_a_refused_run_is_not_left_running(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: str
) -> None:
    """A run refused before its first step must not stay ``running`` forever in
    ``agentsaga runs`` (nothing will ever drive it)."""
    if state == "dirty":
        (repo / "a.txt").write_text("dirty\n")
        isolation = "branch"
    else:
        monkeypatch.chdir(tmp_path)
        root = tmp_path / "empty"
        root.mkdir()
        git(root, "init", "-q", "-b", "main")
        monkeypatch.chdir(root)
        isolation = "worktree"
    path = write_pipeline(tmp_path, shell("c1", "true"), isolation=isolation)
    assert cli("run", path).exit_code != 0
    runs = cli("runs", "--json").json()["runs"]
    assert [r["status"] for r in runs if r["status"] == "running"] == [], runs


def _listing(root: Path) -> dict[str, str]:
    return without_state(tree_files(root))


def test_refuses_a_repository_with_no_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTSAGA_STORE", raising=False)
    root = tmp_path / "empty"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "f.txt").write_text("f\n")
    monkeypatch.chdir(root)
    path = write_pipeline(tmp_path, shell("c1", f"touch {tmp_path}/ran; echo x >> f.txt"))

    def state() -> tuple[dict[str, str], list[str]]:
        status = git(root, "status", "--porcelain=v2", "--untracked-files=all").splitlines()
        return _listing(root), [line for line in status if ".agentsaga/" not in line]

    before = state()
    refused = cli("run", path)
    assert refused.exit_code != 0, refused
    assert "no commits" in refused.output
    assert not (tmp_path / "ran").exists()
    assert state() == before


@pytest.mark.parametrize("kind", ["not-a-repository", "bare"])
def test_refuses_a_folder_that_is_no_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.delenv("AGENTSAGA_STORE", raising=False)
    root = tmp_path / "place"
    root.mkdir()
    if kind == "bare":
        git(root, "init", "-q", "--bare")
    else:
        (root / "f.txt").write_text("f\n")
    monkeypatch.chdir(root)
    path = write_pipeline(tmp_path, shell("c1", f"touch {tmp_path}/ran; echo x >> f.txt"))
    before = _listing(root)
    refused = cli("run", path)
    assert refused.exit_code != 0, refused
    assert ("bare" if kind == "bare" else "not inside a git repository") in refused.output
    assert not (tmp_path / "ran").exists()
    assert _listing(root) == before


# --- seeing it -----------------------------------------------------------------------------


def test_show_diff_and_a_succeeded_run_keeps_its_branch(repo: Path, tmp_path: Path) -> None:
    path = write_pipeline(
        tmp_path,
        shell("c1", "echo c1 >> a.txt && echo created > c.txt", commit=True),
        shell("c2", "echo c2 >> b.txt", commit=True),
        shell("e1", "echo e1 >> src/m.py", reset=True),
    )
    before = capture(repo)
    result = cli("run", path, "--json")
    assert result.exit_code == 0, result
    rid = run_id_of(result)
    shown = cli("show", rid, "--json").json()
    assert shown["status"] == "succeeded"
    commits = {s["step_id"]: a["commit"] for s in shown["steps"] for a in s["attempts"]}
    assert commits["c2"] == git(repo, "rev-parse", f"agentsaga/{rid}").strip()
    assert commits["c1"] == git(repo, "rev-parse", f"agentsaga/{rid}~1").strip()
    shown = cli("show", rid)
    assert shown.exit_code == 0, shown
    assert commits["c1"][:10] in shown.stdout and commits["c2"][:10] in shown.stdout

    one = cli("diff", rid, "c1")
    assert one.exit_code == 0, one
    assert "+c1" in one.stdout and "c.txt" in one.stdout and "b.txt" not in one.stdout
    whole = cli("diff", rid)
    assert "+c1" in whole.stdout and "+c2" in whole.stdout
    assert "a.txt" in cli("diff", rid, "--stat").stdout

    # Succeeded: the branch stays for the user to merge.
    assert f"agentsaga/{rid}" in git(repo, "branch", "--list", f"agentsaga/{rid}")
    assert agentsaga_refs(repo, rid)
    undone = cli("rollback", rid)
    assert undone.exit_code == 0, undone
    assert capture(repo) == before


def test_a_step_without_a_commit_shows_its_changes_in_diff(repo: Path, tmp_path: Path) -> None:
    """``diff RID STEP`` shows what the step changed, committed or not (issue 3 §5)."""
    path = write_pipeline(tmp_path, shell("e1", "echo e1 >> b.txt", reset=True))
    rid = run_id_of(cli("run", path, "--json"))
    shown = cli("diff", rid, "e1")
    assert "+e1" in shown.stdout, shown


def test_keep_refs_keeps_the_snapshot_refs(repo: Path, tmp_path: Path) -> None:
    path = write_pipeline(
        tmp_path,
        shell("c1", "echo c1 >> a.txt", commit=True),
        shell("e1", "echo e1 >> b.txt", reset=True),
    )
    before = capture(repo)
    rid = run_id_of(cli("run", path, "--json"))
    refs = agentsaga_refs(repo, rid)
    assert refs == [f"refs/agentsaga/{rid}/c1/1", f"refs/agentsaga/{rid}/e1/1"]
    undone = cli("rollback", rid, "--keep-refs")
    assert undone.exit_code == 0, undone
    assert agentsaga_refs(repo) == refs
    after = capture(repo)
    kept = [line for line in after["refs"] if line.startswith("refs/agentsaga/")]
    assert [line.split()[0] for line in kept] == refs
    assert {**after, "refs": [r for r in after["refs"] if r not in kept]} == before


# --- the three git compensations together --------------------------------------------------


def test_revert_and_delete_branch_compensations_roll_back_exactly(
    repo: Path, tmp_path: Path
) -> None:
    path = write_pipeline(
        tmp_path,
        shell("c1", "echo c1 >> a.txt", commit=True, reset=True),
        shell("r1", "echo r1 >> a.txt", commit=True, extra="compensate: {git: revert}"),
        shell("r2", "echo r2 > r2.txt", commit=True, extra="compensate: {git: revert}"),
        shell("d", "echo d > d.txt", commit=True, extra="compensate: {git: delete-branch}"),
    )
    before = capture(repo)
    rid = run_id_of(cli("run", path, "--json"))
    undone = cli("rollback", rid)
    assert undone.exit_code == 0, undone
    assert capture(repo) == before


def test_revert_compensations_then_reset(repo: Path, tmp_path: Path) -> None:
    """A revert moves the branch forward: the older steps' reset and the branch deletion
    must recognise the revert commits as the run's own."""
    path = write_pipeline(
        tmp_path,
        shell("c1", "echo c1 >> a.txt", commit=True, reset=True),
        shell("r1", "echo r1 >> a.txt", commit=True, extra="compensate: {git: revert}"),
        shell("r2", "echo r2 > r2.txt", commit=True, extra="compensate: {git: revert}"),
    )
    before = capture(repo)
    rid = run_id_of(cli("run", path, "--json"))
    undone = cli("rollback", rid)
    assert undone.exit_code == 0, undone
    assert capture(repo) == before


def test_a_persons_commit_makes_delete_branch_refuse(repo: Path, tmp_path: Path) -> None:
    path = write_pipeline(
        tmp_path,
        shell("d", "echo d > d.txt", commit=True, extra="compensate: {git: delete-branch}"),
    )
    before = capture(repo)
    rid = run_id_of(cli("run", path, "--json"))
    work = worktree_of(repo, rid)
    (work / "mine.txt").write_text("my work\n")
    git(work, "add", "mine.txt")
    git(work, "commit", "-q", "-m", "my precious work")
    mid = capture(repo)
    refused = cli("rollback", rid)
    assert refused.exit_code == 3, refused
    assert "my precious work" in refused.output
    assert capture(repo) == mid
    assert cli("rollback", rid, "--force").exit_code == 0
    assert capture(repo) == before


def test_a_later_commit_without_compensation_does_not_block_an_earlier_reset(
    repo: Path, tmp_path: Path
) -> None:
    """The run's own later commit is not a person's: rollback undoes everything."""
    path = write_pipeline(
        tmp_path,
        shell("c1", "echo c1 >> a.txt", commit=True, reset=True),
        shell("c2", "echo c2 >> b.txt", commit=True),
    )
    before = capture(repo)
    rid = run_id_of(cli("run", path, "--json"))
    undone = cli("rollback", rid)
    assert undone.exit_code == 0, undone
    assert capture(repo) == before


def test_sigkill_mid_step_in_branch_isolation_with_a_dirty_tree(repo: Path, tmp_path: Path) -> None:
    t = tmp_path
    path = write_pipeline(
        t,
        shell("c1", "echo c1 >> a.txt", commit=True, reset=True),
        shell(
            "mid",
            f"printf partial > out.txt; echo mid >> b.txt; echo $$ > {t}/mid.pid; sleep 30",
            commit=True,
            reset=True,
        ),
        isolation="branch",
    )
    make_dirty(repo)
    before = capture(repo)
    proc = Background(repo, t / "run", "run", path, "--allow-dirty")
    wait_until(
        lambda: (t / "mid.pid").exists() and (t / "mid.pid").read_text().strip() != "",
        what="the mid step to start sleeping",
    )
    proc.kill_group()
    kill_group_from_pidfile(t / "mid.pid")
    assert (repo / "out.txt").read_text() == "partial"
    rid = newest_run_id()
    rolled = ag(repo, "rollback", rid)
    assert rolled.exit_code == 0, rolled
    assert capture(repo) == before
