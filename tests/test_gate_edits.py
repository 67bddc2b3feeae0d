"""A person's edits in the worktree of a run waiting at a gate: saved, then refused or kept.

Real repositories, the run in its own worktree (the default), a person editing files
there with plain file writes while the run waits. What must hold: nothing a person wrote
is lost without a word — a reject, rollback or ``resume --from`` refuses (exit 2) naming
the files and the ref they are saved at, unless ``--discard-edits``; an approval commits
them as a commit of their own, at which a later rollback stops (exit 3); the run's own
leftovers (a step's uncommitted files) are not mistaken for a person's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agentsaga import gates
from agentsaga.errors import EditsInWorktree
from agentsaga.store import open_store
from tests.browser import Browser, browser  # noqa: F401 (the fixture)
from tests.conftest import cli, wait_until
from tests.gitstate import git, make_repo
from tests.test_ui import UIServer, request

FILES = {"app.txt": "v1\n", "README": "readme\n"}


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("AGENTSAGA_STORE", raising=False)
    root = make_repo(tmp_path, FILES)
    monkeypatch.chdir(root)
    return root


def gated(tmp_path: Path, on_reject: str = "{rewind_to: write, max_rejects: 3}") -> Path:
    """write (commits app.txt, with the rejection's comment) -> build (leaves an
    uncommitted build.log, the run's own) -> review (a gate) -> deploy (copies app.txt
    out of the repository)."""
    deployed = tmp_path / "deployed.txt"
    steps = [
        (
            "write",
            'echo "w:${{ rewind.error }}" >> app.txt',
            "    commit: true\n    compensate: {git: reset}\n",
        ),
        ("build", "echo built > build.log", ""),
        ("deploy", f"cp app.txt {deployed}", ""),
    ]
    text = "name: gated\nsteps:\n"
    for step_id, run, extra in steps:
        if step_id == "deploy":
            text += (
                "  - id: review\n    kind: approve\n    message: Ship it?\n"
                f"    on_reject: {on_reject}\n"
            )
        text += f"  - id: {step_id}\n    kind: shell\n    run: {json.dumps(run)}\n{extra}"
    path = tmp_path / "gated.yml"
    path.write_text(text)
    return path


def start(tmp_path: Path) -> tuple[str, Path]:
    result = cli("run", gated(tmp_path), "--json")
    assert result.exit_code == 5, result
    rid = str(result.json()["run_id"])
    work = Path.cwd() / ".agentsaga" / "worktrees" / rid
    assert (work / "build.log").exists()  # the run's own leftover
    return rid, work


def edit(work: Path) -> None:
    """What a reviewer does: change a file the run wrote, add one."""
    (work / "app.txt").write_text("v1\nw:\nfixed by hand\n")
    (work / "notes.md").write_text("my review notes\n")


def saved_refs(repo: Path, rid: str) -> list[str]:
    out = git(repo, "for-each-ref", "--format=%(refname)", f"refs/agentsaga/{rid}/")
    return [r for r in out.split() if "/reviewer-edits-" in r]


def named_ref(text: str) -> str:
    match = re.search(r"refs/agentsaga/\S+/reviewer-edits-\d+-\d+", text)
    assert match, text
    return match.group(0)


# --- nothing changed: nothing is in the way ------------------------------------------------


def test_the_runs_own_leftovers_are_not_a_persons_edits(repo: Path, tmp_path: Path) -> None:
    rid, work = start(tmp_path)

    rejected = cli("reject", rid, "--comment", "again")

    assert rejected.exit_code == 5, rejected  # rewound, waiting at the second visit
    assert (work / "app.txt").read_text() == "v1\nw:again\n"
    assert saved_refs(repo, rid) == []


# --- reject, rollback, resume --from refuse ---------------------------------------------------


def test_reject_refuses_naming_the_files_and_the_ref_that_saved_them(
    repo: Path, tmp_path: Path
) -> None:
    rid, work = start(tmp_path)
    edit(work)

    refused = cli("reject", rid, "--comment", "redo it")

    assert refused.exit_code == 2, refused
    assert "app.txt" in refused.stderr and "notes.md" in refused.stderr
    assert "build.log" not in refused.stderr  # the run's, not the person's
    assert "--discard-edits" in refused.stderr
    ref = named_ref(refused.stderr)
    assert git(repo, "show", f"{ref}:notes.md") == "my review notes\n"
    # Nothing was decided and nothing moved: the edits are still where the person left them.
    assert cli("show", rid, "--json").json()["decisions"] == []
    assert (work / "notes.md").read_text() == "my review notes\n"
    again = cli("reject", rid, "--comment", "redo it")
    assert again.exit_code == 2 and named_ref(again.stderr) == ref  # the same, not a second

    discarded = cli("reject", rid, "--comment", "redo it", "--discard-edits")

    assert discarded.exit_code == 5, discarded
    assert not (work / "notes.md").exists()
    assert (work / "app.txt").read_text() == "v1\nw:redo it\n"
    assert git(repo, "show", f"{ref}:app.txt") == "v1\nw:\nfixed by hand\n"  # kept


def test_with_the_gates_pin_deleted_by_hand_edits_are_still_refused_and_saved(
    repo: Path, tmp_path: Path
) -> None:
    """Without the pin the change is measured from the branch's commit: the run's own
    leftover counts too (a refusal more, never a silent reset)."""
    rid, work = start(tmp_path)
    pins = git(repo, "for-each-ref", "--format=%(refname)", f"refs/agentsaga/{rid}/")
    pin = [r for r in pins.split() if "/review-" in r]
    assert len(pin) == 1, pins
    git(repo, "update-ref", "-d", pin[0])
    edit(work)

    refused = cli("reject", rid, "--comment", "redo it")

    assert refused.exit_code == 2, refused
    assert "app.txt" in refused.stderr and "notes.md" in refused.stderr
    ref = named_ref(refused.stderr)
    assert git(repo, "show", f"{ref}:notes.md") == "my review notes\n"
    assert (work / "notes.md").read_text() == "my review notes\n"
    assert cli("reject", rid, "--comment", "redo it", "--discard-edits").exit_code == 5
    assert git(repo, "show", f"{ref}:app.txt") == "v1\nw:\nfixed by hand\n"


def test_rollback_refuses_then_discard_edits_rolls_back_and_keeps_the_saved_ref(
    repo: Path, tmp_path: Path
) -> None:
    rid, work = start(tmp_path)
    edit(work)

    refused = cli("rollback", rid)

    assert refused.exit_code == 2, refused
    said = " ".join(refused.stderr.split())
    assert "notes.md" in said and "rollback would discard them" in said
    assert cli("show", rid, "--json").json()["status"] == "waiting"
    assert (work / "notes.md").exists()

    rolled = cli("rollback", rid, "--discard-edits")

    assert rolled.exit_code == 0, rolled
    assert named_ref(rolled.stderr) == named_ref(refused.stderr)  # said again, not a new one
    assert cli("show", rid, "--json").json()["status"] == "rolled_back"
    assert not work.exists()
    # The run's refs are gone, except the person's edits.
    out = git(repo, "for-each-ref", "--format=%(refname)", f"refs/agentsaga/{rid}/")
    assert out.split() == saved_refs(repo, rid) != []
    assert git(repo, "show", f"{saved_refs(repo, rid)[0]}:notes.md") == "my review notes\n"


def test_resume_from_an_earlier_step_refuses_the_same_way(repo: Path, tmp_path: Path) -> None:
    rid, work = start(tmp_path)
    edit(work)

    refused = cli("resume", rid, "--from", "write")

    assert refused.exit_code == 2, refused
    said = " ".join(refused.stderr.split())
    assert "notes.md" in said and "resume would discard them" in said
    assert (work / "notes.md").exists()
    assert cli("resume", rid, "--from", "write", "--discard-edits").exit_code == 5
    assert not (work / "notes.md").exists()


def test_a_plain_resume_of_a_waiting_run_changes_nothing(repo: Path, tmp_path: Path) -> None:
    rid, work = start(tmp_path)
    edit(work)

    assert cli("resume", rid).exit_code == 5
    assert (work / "notes.md").exists() and saved_refs(repo, rid) == []


# --- approve keeps them -------------------------------------------------------------------------


def test_approve_with_the_runs_own_leftover_deleted_commits_the_rest(
    repo: Path, tmp_path: Path
) -> None:
    rid, work = start(tmp_path)
    (work / "build.log").unlink()  # the run's untracked leftover: nothing to commit
    (work / "app.txt").write_text("by hand\n")

    approved = cli("approve", rid)

    assert approved.exit_code == 0, approved
    tip = git(repo, "rev-parse", f"agentsaga/{rid}").strip()
    assert git(repo, "show", "--name-only", "--format=", tip).split() == ["app.txt"]
    assert (tmp_path / "deployed.txt").read_text() == "by hand\n"


def test_approve_commits_the_edits_as_a_persons_commit_where_rollback_stops(
    repo: Path, tmp_path: Path
) -> None:
    rid, work = start(tmp_path)
    write_commit = git(work, "rev-parse", "HEAD").strip()
    edit(work)

    approved = cli("approve", rid, "--comment", "with my fix")

    assert approved.exit_code == 0, approved
    assert (tmp_path / "deployed.txt").read_text() == "v1\nw:\nfixed by hand\n"
    tip = git(repo, "rev-parse", f"agentsaga/{rid}").strip()
    assert git(repo, "rev-parse", f"{tip}^").strip() == write_commit  # a commit of its own
    message = git(repo, "log", "-1", "--format=%B", tip)
    assert message.startswith(f"agentsaga {rid}: edits made at gate review before approval")
    assert "Agentsaga-Reviewer-Edits: review (visit 1)" in message
    assert "Agentsaga-Approved-By: Test User" in message
    changed = git(repo, "show", "--name-only", "--format=", tip).split()
    assert sorted(changed) == ["app.txt", "notes.md"]  # not the run's build.log
    assert "kept the files changed while the run waited" in " ".join(approved.stderr.split())
    output = cli("show", rid, "review", "--json").json()["attempts"][-1]["output"]
    assert output["edits"]["commit"] == tip and output["edits"]["files"] == changed

    stopped = cli("rollback", rid)

    assert stopped.exit_code == 3, stopped
    assert "edits made at gate review" in stopped.output  # the person's commit, named
    assert git(repo, "rev-parse", f"agentsaga/{rid}").strip() == tip
    forced = cli("rollback", rid, "--force")
    assert forced.exit_code == 0, forced
    assert git(repo, "show", f"{saved_refs(repo, rid)[0]}:notes.md") == "my review notes\n"


# --- a decision recorded before the edits --------------------------------------------------------


def test_edits_after_a_detached_reject_are_saved_and_named_when_it_applies(
    repo: Path, tmp_path: Path
) -> None:
    rid, work = start(tmp_path)
    assert cli("reject", rid, "--comment", "redo", "--detach").exit_code == 0
    edit(work)  # after the decision: nothing could refuse it any more

    resumed = cli("resume", rid)

    assert resumed.exit_code == 5, resumed
    ref = named_ref(resumed.stderr)
    assert "the rejected verdict applies" in " ".join(resumed.stderr.split())
    assert git(repo, "show", f"{ref}:notes.md") == "my review notes\n"
    assert not (work / "notes.md").exists()


# --- the library, and the web view ---------------------------------------------------------------


def test_the_library_refuses_a_rejection_too(repo: Path, tmp_path: Path) -> None:
    """``gates.reject`` itself, whoever calls it (the web view, a Temporal worker)."""
    rid, work = start(tmp_path)
    edit(work)
    store = open_store(str(repo / ".agentsaga" / "state.db"))
    try:
        with pytest.raises(EditsInWorktree) as caught:
            gates.reject(store, rid, "lib", "no")
        assert caught.value.files == ["app.txt", "notes.md"]
        assert store.gate_decisions(rid) == []
        record = gates.reject(store, rid, "lib", "no", discard_edits=True)
        assert record.decision == "rejected"
    finally:
        store.close()


@pytest.mark.slow
def test_the_web_views_reject_is_refused_then_goes_on_when_told(
    repo: Path,
    tmp_path: Path,
    browser: Browser,  # noqa: F811
) -> None:
    """The API answers 409 with the files and the ref; the page shows the refusal and a
    button that rejects anyway."""
    rid, work = start(tmp_path)
    edit(work)
    ui = UIServer(str(repo / ".agentsaga" / "state.db"), repo)
    try:
        _, _, page = request(ui.port, "GET", "/")
        token = re.search(r'name="agentsaga-token" content="([^"]+)"', page)
        assert token is not None
        headers = {"X-Agentsaga-Token": token.group(1)}
        status, _, data = request(
            ui.port, "POST", f"/api/runs/{rid}/reject", headers, {"comment": "redo"}
        )
        assert status == 409, data
        assert data["files"] == ["app.txt", "notes.md"]
        assert data["saved"] in saved_refs(repo, rid)
        assert "--discard-edits" in data["error"]
        assert (work / "notes.md").exists()

        browser.get(f"{ui.url}#/runs/{rid}")
        browser.wait_for("return document.getElementById('decision-comment')")
        browser.js("document.getElementById('decision-comment').value = 'redo'")
        browser.js("document.getElementById('reject').click()")
        browser.wait_for("return document.getElementById('reject-discarding')")
        said = browser.js("return document.getElementById('decision-result').innerText")
        assert "notes.md" in said and data["saved"] in said
        assert cli("show", rid, "--json").json()["decisions"] == []
        browser.js("document.getElementById('reject-discarding').click()")
        assert (
            browser.wait_for("return document.getElementById('decision-result')?.dataset.decision")
            == "rejected"
        )
        # The run goes on in a process of its own: rewound, waiting at the second visit.
        wait_until(lambda: gate_visit(rid) == 2, what="the rewound run waiting again")
        assert (work / "app.txt").read_text() == "v1\nw:redo\n"
        assert not (work / "notes.md").exists()
    finally:
        browser.get("about:blank")
        ui.stop()


def gate_visit(rid: str) -> int:
    gate = cli("show", rid, "--json").json().get("gate") or {}
    return int(gate.get("visit") or 0)


def test_a_rewind_back_past_the_gate_stops_at_the_persons_commit(
    repo: Path, tmp_path: Path
) -> None:
    path = gated(tmp_path)
    path.write_text(
        path.read_text()
        + "  - id: check\n    kind: shell\n    run: test -f never\n"
        + "    on_failure: {rewind_to: write, max_rewinds: 1}\n"
    )
    started = cli("run", path, "--json")
    assert started.exit_code == 5, started
    rid = str(started.json()["run_id"])
    work = repo / ".agentsaga" / "worktrees" / rid
    edit(work)

    approved = cli("approve", rid)

    # check fails, the rewind undoes write: its reset finds the person's commit on top.
    assert approved.exit_code == 1, approved
    assert "edits made at gate review" in " ".join(approved.output.split())
    assert (work / "notes.md").read_text() == "my review notes\n"
    assert git(repo, "log", "-1", "--format=%s", f"agentsaga/{rid}").startswith(
        f"agentsaga {rid}: edits made at gate review"
    )


def test_a_timeout_that_rolls_back_saves_the_edits_first(repo: Path, tmp_path: Path) -> None:
    path = gated(tmp_path, on_reject="rollback")
    path.write_text(
        path.read_text().replace(
            "    on_reject: rollback\n",
            "    on_reject: rollback\n    timeout: 0s\n    on_timeout: rollback\n",
        )
    )
    started = cli("run", path, "--json")
    assert started.exit_code == 5, started
    rid = str(started.json()["run_id"])
    edit(repo / ".agentsaga" / "worktrees" / rid)

    resumed = cli("resume", rid)

    assert cli("show", rid, "--json").json()["status"] == "rolled_back", resumed
    ref = named_ref(" ".join(resumed.stderr.split()))
    assert git(repo, "show", f"{ref}:notes.md") == "my review notes\n"
