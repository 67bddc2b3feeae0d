"""The command line: exit codes of docs/design.md (0 done, 1 run failed, 2 bad input,
3 rollback failed, 4 owned elsewhere, 130 interrupted), run ids, listings, and a few true
end-to-end runs of the installed command."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import Env, cli, run_agentsaga
from tests.pipelines_util import chain, pipeline, step


def _run_ids(env: Env, n: int) -> list[str]:
    path = env.write("p.yml", chain(1))
    return [cli("run", path, "--json").json()["run_id"] for _ in range(n)]


# --- exit codes, in process --------------------------------------------------------------


def test_exit_0_when_the_run_succeeds(env: Env) -> None:
    result = cli("run", env.write("p.yml", chain(2)))
    assert result.exit_code == 0, result
    rid = env.newest_run_id()
    assert rid in result.stdout  # run prints its run id


def test_exit_1_when_the_run_fails(env: Env) -> None:
    result = cli("run", env.write("p.yml", chain(2, fail_at=2)))
    assert result.exit_code == 1, result
    rid = env.newest_run_id()
    assert f"agentsaga resume {rid}" in result.output
    assert "Traceback" not in result.output


def test_exit_3_when_the_rollback_fails(env: Env) -> None:
    text = pipeline(step("a", undo="exit 1"))
    rid = cli("run", env.write("p.yml", text), "--json").json()["run_id"]
    result = cli("rollback", rid)
    assert result.exit_code == 3, result
    assert f"agentsaga rollback {rid}" in result.output  # what to do next


def test_exit_2_for_bad_flags_and_unknown_commands(env: Env) -> None:
    path = env.write("p.yml", chain(1))
    assert cli("run", path, "--no-such-flag").exit_code == 2
    assert cli("frobnicate").exit_code == 2
    assert cli("run", path, "--var", "undeclared=1").exit_code == 2
    assert cli("runs", "--status", "bogus").exit_code == 2
    assert cli("run", path, "--budget", "max_tokens=lots").exit_code == 2
    assert not env.ledger.path.exists()


def test_help_exits_0() -> None:
    result = cli("--help")
    assert result.exit_code == 0, result
    for command in ("run", "resume", "rollback", "fork", "runs", "show", "logs", "validate"):
        assert command in result.stdout


# --- run ids -----------------------------------------------------------------------------


def test_run_ids_are_unique_and_listed_newest_first(env: Env) -> None:
    ids = _run_ids(env, 3)
    assert len(set(ids)) == 3
    listed = [r["run_id"] for r in cli("runs", "--json").json()["runs"]]
    assert listed == list(reversed(ids))  # newest first


def test_unique_prefix_of_a_run_id_is_accepted(env: Env) -> None:
    first, second = _run_ids(env, 2)
    # The shortest prefix of `first` that `second` does not share.
    common = len(os.path.commonprefix([first, second]))
    prefix = first[: common + 1]
    result = cli("show", prefix, "--json")
    assert result.exit_code == 0, result
    assert result.json()["run_id"] == first
    assert cli("show", first.upper(), "--json").exit_code == 0


def test_ambiguous_prefix_exits_2_and_lists_candidates(env: Env) -> None:
    from agentsaga.store import RunRecord

    _run_ids(env, 1)
    # Ids are random first, so two real ones rarely share a prefix: make two that do.
    first, second = "zzzz00000001", "zzzz00000002"
    store = env.store()
    try:
        for rid in (first, second):
            store.create_run(RunRecord(rid, "t", "p.yml", "name: t\n", "h", {}, "failed", state={}))
    finally:
        store.close()
    common = os.path.commonprefix([first, second])
    result = cli("rollback", common)
    assert result.exit_code == 2, result
    assert first in result.stderr and second in result.stderr
    assert "ambiguous" in result.stderr
    assert env.ledger.lines() == ["s1"]  # nothing was rolled back


@pytest.mark.parametrize("command", ["resume", "rollback", "show", "logs"])
def test_unknown_run_id_exits_2(env: Env, command: str) -> None:
    _run_ids(env, 1)
    result = cli(command, "zzzzzz")
    assert result.exit_code == 2, result
    assert "zzzzzz" in result.stderr
    assert "Traceback" not in result.output


# --- runs, show, logs --------------------------------------------------------------------


def test_runs_filters_by_status(env: Env) -> None:
    good = cli("run", env.write("good.yml", chain(1)), "--json").json()["run_id"]
    bad = cli("run", env.write("bad.yml", chain(1, fail_at=1)), "--json").json()["run_id"]
    failed = cli("runs", "--status", "failed", "--json")
    assert failed.exit_code == 0, failed
    assert [r["run_id"] for r in failed.json()["runs"]] == [bad]
    succeeded = cli("runs", "--status", "succeeded", "--json").json()["runs"]
    assert [r["run_id"] for r in succeeded] == [good]
    assert {r["run_id"] for r in cli("runs", "--json").json()["runs"]} == {good, bad}
    text = cli("runs", "--status", "failed")
    assert bad in text.stdout and good not in text.stdout


def test_show_lists_each_attempt(env: Env) -> None:
    rid = cli("run", env.write("p.yml", chain(2, fail_at=2)), "--json").json()["run_id"]
    detail = cli("show", rid, "--json")
    assert detail.exit_code == 0, detail
    data = detail.json()
    assert data["status"] == "failed"
    rows = [(s["step_id"], a["attempt"], a["status"]) for s in data["steps"] for a in s["attempts"]]
    assert rows == [("s1", 1, "completed"), ("s2", 1, "compensated")]
    text = cli("show", rid)
    assert text.exit_code == 0, text
    assert "s1" in text.stdout and "s2" in text.stdout


def test_logs_print_the_whole_captured_output(env: Env) -> None:
    many = "for i in $(seq 3000); do echo line-$i; done; echo to-stderr >&2"
    rid = cli("run", env.write("p.yml", pipeline(step("loud", many, undo=False))), "--json")
    rid = rid.json()["run_id"]
    result = cli("logs", rid, "loud")
    assert result.exit_code == 0, result
    # The store keeps a tail; the log files keep everything.
    assert "line-1\n" in result.stdout and "line-3000" in result.stdout
    assert "to-stderr" in result.stdout


# --- end to end: the installed command ---------------------------------------------------


@pytest.mark.slow
def test_end_to_end_exit_codes_of_the_installed_command(env: Env) -> None:
    path = env.write("p.yml", chain(3, fail_at=2))
    first = run_agentsaga("run", path)
    assert first.exit_code == 1, first
    rid = env.newest_run_id()
    assert rid in first.output

    (env.path / "flag").touch()
    resumed = run_agentsaga("resume", rid[:8])  # a unique prefix
    assert resumed.exit_code == 0, resumed
    assert env.ledger.lines() == ["s1", "s2", "undo-s2", "s2", "s3"]

    rolled = run_agentsaga("rollback", rid, "--json")
    assert rolled.exit_code == 0, rolled
    assert rolled.json()["status"] == "rolled_back"
    assert env.ledger.lines()[5:] == ["undo-s3", "undo-s2", "undo-s1"]

    bad = run_agentsaga("validate", env.write("bad.yml", "name: t\nstepz: []\n"))
    assert bad.exit_code == 2, bad
    assert "bad.yml:2:1: unknown key 'stepz'" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_end_to_end_rollback_failure_exits_3(env: Env) -> None:
    text = pipeline(step("a", undo="exit 1"))
    rid = cli("run", env.write("p.yml", text), "--json").json()["run_id"]
    result = run_agentsaga("rollback", rid)
    assert result.exit_code == 3, result


@pytest.mark.slow
def test_console_script_is_installed(env: Env) -> None:
    exe = shutil.which("agentsaga")
    assert exe is not None
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "rollback" in proc.stdout


def test_the_readme_commands_table_names_every_option_of_every_command() -> None:
    """The README's command table is the user's reference: each command's row names each
    of its options (found in review: run --from-worktree, demo --agent, init --force,
    validate --var, worker --concurrency were missing)."""
    import re
    from pathlib import Path

    import typer.main

    from agentsaga.cli import app

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"^\| `agentsaga ([a-z]+)[^\n]*", readme, flags=re.MULTILINE)
    }
    # Said once under the table: "`run`, `resume`, `rollback` and `fork` take `--temporal
    # HOST:PORT` ... and `--detach`".
    shared = {"--temporal", "--detach"}
    assert "`run`, `resume`, `rollback` and `fork` take `--temporal" in readme
    group = typer.main.get_group(app)
    missing = []
    for name, command in group.commands.items():
        row = rows.get(name)
        if row is None:
            missing.append(f"{name}: no row")
            continue
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and opt != "--help" and opt not in row:
                    if opt in shared and name in ("run", "resume", "rollback", "fork"):
                        continue
                    missing.append(f"{name} {opt}")
    assert missing == []


def test_show_never_prints_a_models_terminal_escape_sequences(env: Env) -> None:
    """A reply can hold escape sequences (set the terminal's title, clear the screen,
    plant a hyperlink): `show RUN STEP` prints them as visible text (found in review)."""
    path = env.write(
        "p.yml",
        r"""
        name: esc
        workspace: {isolation: none}
        steps:
          - id: fix
            kind: agent
            provider: scripted
            prompt: p
            replies:
              - text: "\e]0;TITLE\a\e[31mRED\x9b2J"
                tool: finish
                args: {summary: "\e[2J\e]8;;http://evil\e\\click\e]8;;\e\\ done"}
        """,
    )
    ran = cli("run", path, "--json")
    assert ran.exit_code == 0, ran
    shown = cli("show", ran.json()["run_id"], "fix")
    assert shown.exit_code == 0, shown
    assert "TITLE" in shown.stdout and "click" in shown.stdout
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout
    assert "\x9b" not in shown.stdout
    assert "\\x1b]0;TITLE" in shown.stdout


def test_runs_with_a_status_that_no_run_has_does_not_say_there_are_no_runs(env: Env) -> None:
    """`runs --status waiting` with runs in the store, none waiting: "no runs yet; start
    one" was wrong (found in review)."""
    path = env.write(
        "p.yml",
        """
        name: one
        workspace: {isolation: none}
        steps:
          - {id: a, kind: shell, run: "true"}
        """,
    )
    assert cli("run", path).exit_code == 0
    listed = cli("runs", "--status", "waiting")
    assert listed.exit_code == 0, listed
    assert "no runs yet" not in listed.stdout
    assert "no run is waiting" in listed.stdout
    assert cli("runs", "--status", "waiting", "--json").json() == {"runs": []}
