"""One owner per run (issue 6, part 3): processes racing to resume or roll back one run,
a lease left by a killed owner, and two runs on one repository at once.

Everything goes through the installed command in subprocesses started together; the lease
is the only thing that keeps them apart.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import (
    Env,
    Result,
    Spawned,
    agentsaga_argv,
    cli,
    kill_group_from_pidfile,
    run_agentsaga,
    wait_until,
)
from tests.gitstate import capture, git, make_repo
from tests.pipelines_util import block_until, pipeline, q, step

pytestmark = pytest.mark.slow

N = 6


def race(env: Env, release: Path, *args: str) -> list[tuple[Spawned, Result]]:
    """N processes at once. The winner's work waits for ``release``, created only once
    every other racer has answered: the race holds however slow the machine, with no
    assumption that the losers arrive within some sleep of the winner."""
    procs = [env.spawn(*args) for _ in range(N)]
    wait_until(
        lambda: sum(p.proc.poll() is not None for p in procs) >= N - 1,
        timeout=300,
        what="every racer but the owner to answer",
    )
    release.touch()
    return [(p, p.wait(timeout=300)) for p in procs]


def held(line: str) -> str:
    """Shell that waits for the file ``release`` (the race's signal), then runs ``line``."""
    return f"while [ ! -f release ]; do sleep 0.02; done; {line}"


def check_one_winner(results: list[tuple[Spawned, Result]]) -> Spawned:
    winners = [p for p, r in results if r.exit_code == 0]
    losers = [(p, r) for p, r in results if r.exit_code != 0]
    assert len(winners) == 1, [(r.exit_code, r.stderr) for _, r in results]
    owner = winners[0]
    for _, result in losers:
        assert result.exit_code == 4, result
        assert "Traceback" not in result.stderr, result
        # The message names the process that owns the run, so a user can find it.
        assert f"pid {owner.pid}" in result.stderr, result
    return owner


@pytest.mark.timeout(120)
def test_racing_resumes_one_owner_the_others_exit_4_naming_it(env: Env) -> None:
    path = env.write(
        "p.yml",
        pipeline(
            step("s1", "echo s1 >> ledger; test -f flag"),
            step("slow", held("echo slow >> ledger")),
        ),
    )
    first = cli("run", path, "--json")
    assert first.exit_code == 1, first
    rid = first.json()["run_id"]
    (env.path / "flag").touch()

    check_one_winner(race(env, env.path / "release", "resume", rid))
    assert env.ledger.lines() == ["s1", "undo-s1", "s1", "slow"]
    assert env.run_status(rid) == "succeeded"


@pytest.mark.timeout(120)
def test_racing_rollbacks_one_owner_the_others_exit_4_naming_it(env: Env) -> None:
    path = env.write(
        "p.yml",
        pipeline(
            step("s1"),
            step("s2", undo=held("echo undo-s2 >> ledger")),
        ),
    )
    rid = cli("run", path, "--json").json()["run_id"]

    check_one_winner(race(env, env.path / "release", "rollback", rid))
    assert env.ledger.lines() == ["s1", "s2", "undo-s2", "undo-s1"]  # each undone once
    assert env.run_status(rid) == "rolled_back"


@pytest.mark.timeout(120)
def test_a_lease_whose_owner_was_killed_is_taken_over_at_once(env: Env) -> None:
    flag, pidfile = env.path / "release", env.path / "cmd.pid"
    path = env.write(
        "p.yml",
        pipeline(
            step("s1"),
            step("hang", block_until(str(flag), str(pidfile)) + "; echo hang >> ledger"),
        ),
    )
    owner = env.spawn("run", path)
    wait_until(pidfile.exists, what="the hanging step")
    rid = env.newest_run_id()
    owner.kill()  # kill -9: its lease stays in the store, its heartbeat stops
    kill_group_from_pidfile(pidfile)  # the step command it left behind
    pidfile.unlink()
    flag.touch()
    # The dead owner's lease would hold for another hour: only seeing that its pid on
    # this host is gone lets the resume in (no clock involved).
    conn = sqlite3.connect(env.path / "state.db")
    with conn:
        conn.execute("UPDATE leases SET expires_at = ? WHERE run_id = ?", (time.time() + 3600, rid))
    conn.close()

    taken = run_agentsaga("resume", rid, timeout=120)
    assert taken.exit_code == 0, taken
    assert env.run_status(rid) == "succeeded"


def _plant_lease(db: Path, run_id: str, host: str, expires_in_s: float) -> None:
    """A lease held by a process on another machine (we cannot see its pid)."""
    now = time.time()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM leases WHERE run_id = ?", (run_id,))
        conn.execute(
            "INSERT INTO leases (run_id, owner_id, host, pid, heartbeat_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, "999999-remote", host, 999999, now, now + expires_in_s),
        )
    conn.close()


def test_another_hosts_lease_is_respected_until_it_expires(env: Env) -> None:
    path = env.write("p.yml", pipeline(step("s1", "echo s1 >> ledger; test -f flag")))
    rid = cli("run", path, "--json").json()["run_id"]
    (env.path / "flag").touch()

    _plant_lease(env.path / "state.db", rid, "build-box-7", expires_in_s=600)
    refused = cli("resume", rid)
    assert refused.exit_code == 4, refused
    assert "build-box-7" in refused.stderr and "pid 999999" in refused.stderr, refused

    _plant_lease(env.path / "state.db", rid, "build-box-7", expires_in_s=-1)
    taken = cli("resume", rid)
    assert taken.exit_code == 0, taken


# --- two runs on one repository ----------------------------------------------------------------


def _repo_pipeline(tag: str, ledger: Path) -> str:
    other = "b" if tag == "a" else "a"
    # A rendezvous, not a sleep: each run's edit waits until the other's has started, so the
    # two steps certainly overlap, each in its own worktree (the bound is a safety net).
    meet = ledger.parent
    body = (
        f"touch {meet}/{tag}.started; "
        f"for i in $(seq 3000); do [ -f {meet}/{other}.started ] && break; sleep 0.02; done; "
        f"echo {tag} > {tag}.txt; echo {tag} >> {ledger}"
    )
    return (
        f"name: {tag}\n"
        "steps:\n"
        f"  - id: edit\n    kind: shell\n    commit: true\n    run: {q(body)}\n"
        "    compensate: {git: reset}\n"
        f"  - id: check\n    kind: shell\n    run: {q(f'test ! -e {other}.txt')}\n"
    )


@pytest.mark.timeout(120)
def test_two_runs_on_one_repository_at_once_do_not_interfere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path, {"src/app.py": "x = 1\n"})
    monkeypatch.delenv("AGENTSAGA_STORE")  # the repository's own store, shared by both
    ledger = tmp_path / "ledger"
    for tag in ("a", "b"):
        (tmp_path / f"{tag}.yml").write_text(_repo_pipeline(tag, ledger))
    before = capture(repo)

    def start(*args: str | Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            agentsaga_argv(*args),
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    procs = [start("run", tmp_path / f"{tag}.yml") for tag in ("a", "b")]
    outs = [p.communicate(timeout=90) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    run_ids = [re.search(r"run (\w+)", out).group(1) for out, _ in outs]  # type: ignore[union-attr]

    # Each run's branch holds its own change and not the other's; the user's checkout and
    # branch are untouched.
    for tag, rid in zip(("a", "b"), run_ids, strict=True):
        files = git(repo, "ls-tree", "-r", "--name-only", f"agentsaga/{rid}").split()
        assert f"{tag}.txt" in files and ({"a.txt", "b.txt"} - {f"{tag}.txt"}).isdisjoint(files)
    now = capture(repo)
    assert now["files"] == before["files"] and now["head"] == before["head"]
    assert sorted(ledger.read_text().split()) == ["a", "b"]

    procs = [start("rollback", rid) for rid in run_ids]
    outs = [p.communicate(timeout=90) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert capture(repo) == before
