"""The semantics of docs/design.md, each pinned by a test that fails when the rule breaks.

Runs go through the real CLI entry point with real subprocesses and a real SQLite store;
what ran is read from the ledger the commands append to.
"""

from __future__ import annotations

import json
import signal
import sys

import pytest

from tests.conftest import (
    Env,
    cli,
    kill_group_from_pidfile,
    process_running,
    wait_until,
)
from tests.pipelines_util import block_until, chain, counter, pipeline, q, step

# --- run and resume ----------------------------------------------------------------------


def test_resume_reuses_completed_steps_and_finishes(env: Env) -> None:
    path = env.write("p.yml", chain(4, fail_at=3))

    first = cli("run", path, "--json")
    assert first.exit_code == 1, first
    rid = first.json()["run_id"]
    assert first.json()["status"] == "failed"
    assert env.ledger.lines() == ["s1", "s2", "s3", "undo-s3"]

    (env.path / "flag").touch()
    second = cli("resume", rid)
    assert second.exit_code == 0, second
    assert "reusing s1, s2" in second.output  # resume says what it reuses
    # s1 and s2 ran once, in the first run; the resume began at s3.
    assert env.ledger.lines() == ["s1", "s2", "s3", "undo-s3", "s3", "s4"]
    assert env.run_status(rid) == "succeeded"


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_fail_at_step_k_then_resume_runs_earlier_steps_once(env: Env, k: int) -> None:
    path = env.write("p.yml", chain(5, fail_at=k))
    first = cli("run", path, "--json")
    assert first.exit_code == 1, first
    (env.path / "flag").touch()
    second = cli("resume", first.json()["run_id"], "--json")
    assert second.exit_code == 0, second

    counts = {f"s{i}": env.ledger.count(f"s{i}") for i in range(1, 6)}
    assert counts == {f"s{i}": (2 if i == k else 1) for i in range(1, 6)}
    # Only the failed attempt of step k was compensated.
    assert [line for line in env.ledger.lines() if line.startswith("undo-")] == [f"undo-s{k}"]
    attempts = {s["step_id"]: len(s["attempts"]) for s in second.json()["steps"]}
    assert attempts == {f"s{i}": (2 if i == k else 1) for i in range(1, 6)}


def test_resume_of_a_succeeded_run_runs_nothing(env: Env) -> None:
    rid = cli("run", env.write("p.yml", chain(2)), "--json").json()["run_id"]
    result = cli("resume", rid, "--json")
    assert result.exit_code == 0, result
    assert env.ledger.lines() == ["s1", "s2"]


# --- rollback ----------------------------------------------------------------------------


def test_rollback_runs_compensations_in_reverse_start_order(env: Env) -> None:
    path = env.write(
        "p.yml",
        pipeline(step("a"), step("b", undo=False), step("c"), step("d")),
    )
    rid = cli("run", path, "--json").json()["run_id"]
    assert env.ledger.lines() == ["a", "b", "c", "d"]

    result = cli("rollback", rid)
    assert result.exit_code == 0, result
    assert env.ledger.lines()[4:] == ["undo-d", "undo-c", "undo-a"]
    assert env.run_status(rid) == "rolled_back"
    # A step without a compensation is skipped, and said so.
    assert "b" in result.output and "no compensation" in result.output


def test_rollback_order_is_start_order_across_retries(env: Env) -> None:
    """Reverse *start* order: the retried step's attempts are undone newest first too."""
    flaky = counter("count") + "; echo b$n >> ledger; [ $n -ge 2 ]"
    path = env.write(
        "p.yml",
        pipeline(
            step("a"),
            step(
                "b",
                flaky,
                undo="echo undo-b:${AGENTSAGA_IDEMPOTENCY_KEY##*:} >> ledger",
                extra="retry: {attempts: 2, backoff: 0.01s}",
            ),
            step("c"),
        ),
    )
    rid = cli("run", path, "--json").json()["run_id"]
    assert env.ledger.lines() == ["a", "b1", "undo-b:1", "b2", "c"]
    result = cli("rollback", rid)
    assert result.exit_code == 0, result
    # The failed first attempt of b was compensated before its retry: not again.
    assert env.ledger.lines()[5:] == ["undo-c", "undo-b:2", "undo-a"]


def test_second_rollback_does_nothing(env: Env) -> None:
    rid = cli("run", env.write("p.yml", pipeline(step("a"), step("b"))), "--json").json()["run_id"]
    assert cli("rollback", rid).exit_code == 0
    before = env.ledger.lines()
    again = cli("rollback", rid, "--json")
    assert again.exit_code == 0, again
    assert again.json()["status"] == "rolled_back"
    assert env.ledger.lines() == before == ["a", "b", "undo-b", "undo-a"]


@pytest.mark.slow
def test_rollback_killed_mid_way_continues_without_repeating(env: Env) -> None:
    slow_undo = "echo undo-b-start >> ledger; " + block_until("release", "undo-b.pid")
    slow_undo += "; echo undo-b >> ledger"
    path = env.write("p.yml", pipeline(step("a"), step("b", undo=slow_undo), step("c")))
    rid = cli("run", path, "--json").json()["run_id"]

    proc = env.spawn("rollback", rid)
    wait_until(lambda: env.ledger.has("undo-b-start"), what="the second compensation")
    proc.kill()
    kill_group_from_pidfile(env.path / "undo-b.pid")
    assert env.ledger.lines()[3:] == ["undo-c", "undo-b-start"]

    (env.path / "release").touch()
    result = cli("rollback", rid)
    assert result.exit_code == 0, result
    # undo-c completed before the kill: it does not run again. undo-b was in flight: it
    # runs again (compensations are idempotent by contract), then undo-a.
    assert env.ledger.lines()[3:] == ["undo-c", "undo-b-start", "undo-b-start", "undo-b", "undo-a"]
    assert env.run_status(rid) == "rolled_back"


def test_rollback_refused_by_resume_afterwards(env: Env) -> None:
    rid = cli("run", env.write("p.yml", chain(2)), "--json").json()["run_id"]
    assert cli("rollback", rid).exit_code == 0
    result = cli("resume", rid)
    assert result.exit_code == 2, result
    assert "rolled_back" in result.stderr


# --- crash recovery ----------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_mid_step_then_resume_compensates_with_null_output(env: Env) -> None:
    body = "echo b-start >> ledger; " + block_until("go", "b.pid") + "; echo b-done >> ledger"
    undo = "echo undo-b:${{ steps.b.output.exit_code }}: >> ledger"
    path = env.write("p.yml", pipeline(step("a"), step("b", body, undo=undo), step("c")))

    proc = env.spawn("run", path)
    wait_until(lambda: (env.path / "b.pid").exists(), what="step b to start")
    proc.kill()
    kill_group_from_pidfile(env.path / "b.pid")
    rid = env.newest_run_id()
    assert env.ledger.lines() == ["a", "b-start"]

    (env.path / "go").touch()
    result = cli("resume", rid, "--json")
    assert result.exit_code == 0, result
    assert result.json()["status"] == "succeeded"
    # The in-flight attempt is compensated with a null output (exit_code renders empty),
    # then b runs again; a is not repeated.
    assert env.ledger.lines() == ["a", "b-start", "undo-b::", "b-start", "b-done", "c"]


@pytest.mark.slow
def test_sigkill_mid_step_then_rollback_compensates_in_flight_step(env: Env) -> None:
    body = "echo b-start >> ledger; " + block_until("go", "b.pid")
    undo = "echo undo-b:${{ steps.b.output.exit_code }}: >> ledger"
    path = env.write("p.yml", pipeline(step("a"), step("b", body, undo=undo), step("c")))
    proc = env.spawn("run", path)
    wait_until(lambda: (env.path / "b.pid").exists(), what="step b to start")
    proc.kill()
    kill_group_from_pidfile(env.path / "b.pid")
    rid = env.newest_run_id()

    result = cli("rollback", rid)
    assert result.exit_code == 0, result
    assert env.ledger.lines() == ["a", "b-start", "undo-b::", "undo-a"]


# --- one owner ---------------------------------------------------------------------------


def _blocking_resume_pipeline(env: Env) -> str:
    """A run whose step b fails at first, then (once ``armed``) blocks until ``go``."""
    body = "echo b >> ledger; test -f armed || exit 1; " + block_until("go", "b.pid")
    path = env.write("p.yml", pipeline(step("a"), step("b", body, undo=False)))
    first = cli("run", path, "--json")
    assert first.exit_code == 1, first
    (env.path / "armed").touch()
    return str(first.json()["run_id"])


@pytest.mark.slow
def test_second_resume_while_owner_lives_exits_4_naming_it(env: Env) -> None:
    rid = _blocking_resume_pipeline(env)
    owner = env.spawn("resume", rid)
    try:
        wait_until(lambda: (env.path / "b.pid").exists(), what="the owner to reach step b")
        second = cli("resume", rid)
        assert second.exit_code == 4, second
        assert str(owner.pid) in second.stderr
        assert "Traceback" not in second.output
        rollback = cli("rollback", rid)
        assert rollback.exit_code == 4, rollback
    finally:
        (env.path / "go").touch()
    assert owner.wait().exit_code == 0
    assert env.ledger.lines() == ["a", "b", "b"]
    assert env.run_status(rid) == "succeeded"


@pytest.mark.slow
def test_two_concurrent_resumes_exactly_one_proceeds(env: Env) -> None:
    rid = _blocking_resume_pipeline(env)
    procs = [env.spawn("resume", rid), env.spawn("resume", rid)]
    try:
        wait_until(
            lambda: any(p.proc.poll() is not None for p in procs), what="one resume to refuse"
        )
        wait_until(lambda: (env.path / "b.pid").exists(), what="the other to reach step b")
    finally:
        (env.path / "go").touch()
    codes = sorted(p.wait().exit_code for p in procs)
    assert codes == [0, 4]
    assert env.ledger.count("b") == 2  # the first run's try and exactly one resume's


@pytest.mark.slow
def test_stale_lease_of_a_killed_process_is_taken_over_at_once(env: Env) -> None:
    rid = _blocking_resume_pipeline(env)
    owner = env.spawn("resume", rid)
    wait_until(lambda: (env.path / "b.pid").exists(), what="the owner to reach step b")
    owner.kill()
    kill_group_from_pidfile(env.path / "b.pid")
    (env.path / "go").touch()
    # The lease's ttl is 30 s; its owner is dead on this host, so no waiting it out.
    result = cli("resume", rid, "--json")
    assert result.exit_code == 0, result
    assert env.ledger.lines() == ["a", "b", "b", "b"]


# --- a changed pipeline, --plan, --from --------------------------------------------------


def test_resume_with_changed_pipeline_reruns_changed_step_and_later_only(env: Env) -> None:
    original = env.write("p.yml", chain(4, fail_at=4))
    first = cli("run", original, "--json")
    assert first.exit_code == 1, first
    rid = first.json()["run_id"]
    assert env.ledger.lines() == ["s1", "s2", "s3", "s4", "undo-s4"]

    changed = chain(4, fail_at=4).replace("echo s2 >> ledger", "echo s2-v2 >> ledger")
    new = env.write("p2.yml", changed)
    (env.path / "flag").touch()
    result = cli("resume", rid, "--pipeline", new, "--json")
    assert result.exit_code == 0, result
    # s2 changed: s3 and s2 are undone newest first, then s2 (new), s3 and s4 run; s1 is
    # reused untouched.
    assert env.ledger.lines()[5:] == ["undo-s3", "undo-s2", "s2-v2", "s3", "s4"]
    assert env.ledger.count("s1") == 1


def test_resume_plan_prints_and_changes_nothing(env: Env) -> None:
    first = cli("run", env.write("p.yml", chain(4, fail_at=4)), "--json")
    rid = first.json()["run_id"]
    changed = chain(4, fail_at=4).replace("echo s2 >> ledger", "echo s2-v2 >> ledger")
    new = env.write("p2.yml", changed)
    ledger_before = env.ledger.lines()
    attempts_before = [(a.step_id, a.attempt, a.status, a.superseded) for a in env.attempts(rid)]

    plan = cli("resume", rid, "--pipeline", new, "--plan", "--json")
    assert plan.exit_code == 0, plan
    actions = {item["step_id"]: item["action"] for item in plan.json()["plan"]}
    assert actions == {"s1": "reuse", "s2": "rerun", "s3": "rerun", "s4": "rerun"}
    text = cli("resume", rid, "--pipeline", new, "--plan")
    assert text.exit_code == 0, text
    assert "s2" in text.stdout and "fingerprint" in text.stdout

    assert env.ledger.lines() == ledger_before
    after = [(a.step_id, a.attempt, a.status, a.superseded) for a in env.attempts(rid)]
    assert after == attempts_before
    assert env.run_status(rid) == "failed"
    # The stored pipeline is still the original: a plain resume re-runs only s4.
    (env.path / "flag").touch()
    assert cli("resume", rid).exit_code == 0
    assert env.ledger.lines()[len(ledger_before) :] == ["s4"]


def test_resume_from_step_rewinds_by_hand(env: Env) -> None:
    rid = cli("run", env.write("p.yml", chain(3)), "--json").json()["run_id"]
    result = cli("resume", rid, "--from", "s2", "--json")
    assert result.exit_code == 0, result
    assert env.ledger.lines() == ["s1", "s2", "s3", "undo-s3", "undo-s2", "s2", "s3"]


def test_resume_from_unknown_step_exits_2(env: Env) -> None:
    rid = cli("run", env.write("p.yml", chain(3)), "--json").json()["run_id"]
    result = cli("resume", rid, "--from", "s9")
    assert result.exit_code == 2, result
    assert "s9" in result.stderr
    assert env.ledger.lines() == ["s1", "s2", "s3"]


# --- fork --------------------------------------------------------------------------------


def _fork_pipeline(env: Env) -> str:
    text = pipeline(
        step("s1"),
        step("s2"),
        step("s3", "echo s3:${{ vars.greeting }} >> ledger"),
        top="vars: {greeting: hi}",
    )
    return str(env.write("p.yml", text))


def test_fork_reuses_parent_checkpoints_and_leaves_parent_untouched(env: Env) -> None:
    parent = cli("run", _fork_pipeline(env), "--json").json()["run_id"]
    before = [(a.step_id, a.attempt, a.status, a.superseded) for a in env.attempts(parent)]

    forked = cli("fork", parent, "--from", "s3", "--var", "greeting=bye", "--json")
    assert forked.exit_code == 0, forked
    child = forked.json()["run_id"]
    assert child != parent
    assert forked.json()["status"] == "succeeded"
    assert env.ledger.lines() == ["s1", "s2", "s3:hi", "s3:bye"]

    assert env.run_status(parent) == "succeeded"
    after = [(a.step_id, a.attempt, a.status, a.superseded) for a in env.attempts(parent)]
    assert after == before
    store = env.store()
    try:
        assert store.get_run(child).parent_run_id == parent
    finally:
        store.close()


def test_rolling_back_a_fork_leaves_the_parents_steps_to_the_parent(env: Env) -> None:
    """The fork reused s1 and s2: their side effects are the parent's. Undoing them from
    the fork would touch the parent, and the parent's own rollback would undo them a
    second time."""
    parent = cli("run", _fork_pipeline(env), "--json").json()["run_id"]
    child = cli("fork", parent, "--from", "s3", "--var", "greeting=bye", "--json").json()["run_id"]
    assert cli("rollback", child).exit_code == 0
    assert env.ledger.lines()[4:] == ["undo-s3"]
    assert env.run_status(parent) == "succeeded"
    assert cli("rollback", parent).exit_code == 0
    assert env.ledger.lines()[4:] == ["undo-s3", "undo-s3", "undo-s2", "undo-s1"]


def test_fork_of_a_failed_run_from_the_failed_step(env: Env) -> None:
    first = cli("run", env.write("p.yml", chain(3, fail_at=3)), "--json")
    parent = first.json()["run_id"]
    (env.path / "flag").touch()
    forked = cli("fork", parent, "--from", "s2", "--json")
    assert forked.exit_code == 0, forked
    assert env.ledger.lines() == ["s1", "s2", "s3", "undo-s3", "s2", "s3"]
    assert env.run_status(parent) == "failed"


def test_a_long_plan_prints_as_plain_columns(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above PLAIN_ROWS rows a table is plain text (rich took 2.5 s for a 10,000-step
    plan): the same cells, aligned in columns one space apart, in the same order."""
    from agentsaga import cli_render

    first = cli("run", env.write("p.yml", chain(4, fail_at=3)), "--json")
    rid = first.json()["run_id"]
    items = cli("resume", rid, "--plan", "--json").json()["plan"]
    monkeypatch.setattr(cli_render, "PLAIN_ROWS", 2)
    text = cli("resume", rid, "--plan")
    assert text.exit_code == 0, text
    rows = [("step", "attempt", "action", "why")] + [
        (i["step_id"], "" if i["attempt"] is None else str(i["attempt"]), i["action"], i["reason"])
        for i in items
    ]
    widths = [max(len(row[k]) for row in rows) for k in range(4)]
    expected = [f"resume --plan for run {rid} (nothing changed)"] + [
        " ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    assert text.stdout.splitlines() == expected


def test_fork_plan_changes_nothing(env: Env) -> None:
    parent = cli("run", _fork_pipeline(env), "--json").json()["run_id"]
    plan = cli("fork", parent, "--from", "s2", "--plan", "--json")
    assert plan.exit_code == 0, plan
    actions = {item["step_id"]: item["action"] for item in plan.json()["plan"]}
    assert actions == {"s1": "reuse", "s2": "run", "s3": "run"}
    store = env.store()
    try:
        assert len(store.list_runs()) == 1
    finally:
        store.close()


# --- retry -------------------------------------------------------------------------------


def test_retry_compensates_each_failed_attempt_with_its_own_key(env: Env) -> None:
    flaky = counter("count") + '; echo "try:$n:$AGENTSAGA_IDEMPOTENCY_KEY" >> ledger; [ $n -ge 3 ]'
    undo = "echo undo:$AGENTSAGA_IDEMPOTENCY_KEY:${{ steps.flaky.output.exit_code }} >> ledger"
    path = env.write(
        "p.yml",
        pipeline(step("flaky", flaky, undo=undo, extra="retry: {attempts: 3, backoff: 0.01s}")),
    )
    result = cli("run", path, "--json")
    assert result.exit_code == 0, result
    rid = result.json()["run_id"]
    steps = result.json()["steps"]
    assert [(s["step_id"], s["status"], len(s["attempts"])) for s in steps] == [
        ("flaky", "completed", 3)
    ]
    assert env.ledger.lines() == [
        f"try:1:{rid}:flaky:1",
        f"undo:{rid}:flaky:1:",
        f"try:2:{rid}:flaky:2",
        f"undo:{rid}:flaky:2:",
        f"try:3:{rid}:flaky:3",
    ]
    assert [a.attempt for a in env.attempts(rid)] == [1, 2, 3]


def test_retry_exhausted_fails_the_run(env: Env) -> None:
    always = "echo try >> ledger; exit 1"
    path = env.write(
        "p.yml", pipeline(step("x", always, extra="retry: {attempts: 2, backoff: 0.01s}"))
    )
    result = cli("run", path, "--json")
    assert result.exit_code == 1, result
    assert env.ledger.lines() == ["try", "undo-x", "try", "undo-x"]


# --- rewind ------------------------------------------------------------------------------


def _rewind_pipeline(test_command: str, max_rewinds: int = 2) -> str:
    write = (
        "echo write:${{ rewind.count }} >> ledger; "
        "printf '%s' ${{ rewind.error }} > rewind-error-${{ rewind.count }}.txt"
    )
    return pipeline(
        step("plan", undo=False),
        step("write", write),
        step(
            "test",
            test_command,
            kind="test",
            undo=False,
            extra=f"on_failure: {{rewind_to: write, max_rewinds: {max_rewinds}}}",
        ),
    )


def test_rewind_feeds_the_failure_to_the_rewound_step(env: Env) -> None:
    test = counter("tests") + "; echo test:$n >> ledger; "
    test += '[ $n -ge 2 ] || { echo "boom-$n"; exit 1; }'
    result = cli("run", env.write("p.yml", _rewind_pipeline(test)), "--json")
    assert result.exit_code == 0, result
    assert env.ledger.lines() == ["plan", "write:0", "test:1", "undo-write", "write:1", "test:2"]
    assert (env.path / "rewind-error-0.txt").read_text() == ""
    assert "boom-1" in (env.path / "rewind-error-1.txt").read_text()
    steps = {s["step_id"]: len(s["attempts"]) for s in result.json()["steps"]}
    assert steps == {"plan": 1, "write": 2, "test": 2}


def test_rewind_stops_after_max_rewinds(env: Env) -> None:
    # A different failure each time (letters: digits are ignored when comparing).
    test = counter("tests") + (
        "; echo test >> ledger; "
        "case $n in 1) echo alpha;; 2) echo beta;; *) echo gamma;; esac; exit 1"
    )
    result = cli("run", env.write("p.yml", _rewind_pipeline(test, max_rewinds=2)), "--json")
    assert result.exit_code == 1, result
    assert env.ledger.count("test") == 3
    assert env.ledger.count("plan") == 1
    assert env.ledger.count("undo-write") == 2


def test_rewind_stuck_loop_stops_after_one_rewind(env: Env) -> None:
    test = "echo test >> ledger; echo 'same failure'; exit 1"
    result = cli("run", env.write("p.yml", _rewind_pipeline(test, max_rewinds=3)), "--json")
    assert result.exit_code == 1, result
    assert env.ledger.lines() == ["plan", "write:0", "test", "undo-write", "write:1", "test"]


# --- terminal failure and rollback on failure --------------------------------------------


def _failing_b(env: Env, top: str = "") -> str:
    text = pipeline(step("a"), step("b", "echo b >> ledger; exit 3"), step("c"), top=top)
    return str(env.write("p.yml", text))


def test_terminal_failure_compensates_only_the_failed_step(env: Env) -> None:
    result = cli("run", _failing_b(env), "--json")
    assert result.exit_code == 1, result
    data = result.json()
    assert data["status"] == "failed"
    assert env.ledger.lines() == ["a", "b", "undo-b"]
    statuses = {s["step_id"]: s["status"] for s in data["steps"]}
    assert statuses["a"] == "completed"
    assert statuses["c"] == "pending"
    assert env.run_status(data["run_id"]) == "failed"


def test_run_rollback_on_failure_rolls_everything_back(env: Env) -> None:
    result = cli("run", _failing_b(env), "--rollback-on-failure", "--json")
    assert result.exit_code == 1, result
    assert result.json()["status"] == "rolled_back"
    assert env.ledger.lines() == ["a", "b", "undo-b", "undo-a"]


def test_top_level_on_failure_rollback(env: Env) -> None:
    result = cli("run", _failing_b(env, top="on_failure: rollback"), "--json")
    assert result.exit_code == 1, result
    assert result.json()["status"] == "rolled_back"
    assert env.ledger.lines() == ["a", "b", "undo-b", "undo-a"]


# --- irreversible and compensation failures ----------------------------------------------


def test_rollback_stops_before_irreversible_step(env: Env) -> None:
    path = env.write(
        "p.yml",
        pipeline(step("a"), step("deploy", extra="irreversible: true"), step("c")),
    )
    rid = cli("run", path, "--json").json()["run_id"]

    stopped = cli("rollback", rid)
    assert stopped.exit_code == 3, stopped
    assert env.ledger.lines()[3:] == ["undo-c"]
    assert "deploy" in stopped.stderr + stopped.stdout
    assert "a#1" in stopped.output  # what remains to undo by hand
    assert env.run_status(rid) == "rollback_failed"

    forced = cli("rollback", rid, "--force")
    assert forced.exit_code == 0, forced
    assert env.ledger.lines()[3:] == ["undo-c", "undo-deploy", "undo-a"]


@pytest.mark.parametrize("policy", ["halt", "continue", None])
def test_on_compensation_failure(env: Env, policy: str | None) -> None:
    top = f"on_compensation_failure: {policy}" if policy else ""
    text = pipeline(
        step("a"), step("b", undo="echo undo-b-fails >> ledger; exit 1"), step("c"), top=top
    )
    rid = cli("run", env.write("p.yml", text), "--json").json()["run_id"]
    result = cli("rollback", rid)
    assert result.exit_code == 3, result
    assert "b" in result.stderr + result.stdout
    assert env.run_status(rid) == "rollback_failed"
    undone = env.ledger.lines()[3:]
    if policy == "continue":
        assert undone == ["undo-c", "undo-b-fails", "undo-a"]
    else:  # halt, the default: the rest is kept for the next rollback
        assert undone == ["undo-c", "undo-b-fails"]


def test_halted_rollback_continues_where_it_stopped(env: Env) -> None:
    text = pipeline(step("a"), step("b", undo="echo undo-b >> ledger; test -f fixed"), step("c"))
    rid = cli("run", env.write("p.yml", text), "--json").json()["run_id"]
    assert cli("rollback", rid).exit_code == 3
    (env.path / "fixed").touch()
    result = cli("rollback", rid)
    assert result.exit_code == 0, result
    assert env.ledger.lines()[3:] == ["undo-c", "undo-b", "undo-b", "undo-a"]


# --- if: and quoting ---------------------------------------------------------------------


def test_if_false_skips_the_step(env: Env) -> None:
    text = pipeline(
        step("wanted", extra="if: ${{ vars.mode == 'yes' }}"),
        step("unwanted", extra="if: ${{ vars.mode == 'no' }}"),
        step("literal", extra="if: vars.mode != 'yes'"),
        top="vars: {mode: 'yes'}",
    )
    result = cli("run", env.write("p.yml", text), "--json")
    assert result.exit_code == 0, result
    assert env.ledger.lines() == ["wanted"]
    statuses = {s["step_id"]: s["status"] for s in result.json()["steps"]}
    assert statuses == {"wanted": "completed", "unwanted": "skipped", "literal": "skipped"}
    # A skipped step did nothing: rollback has nothing of it to undo.
    assert cli("rollback", result.json()["run_id"]).exit_code == 0
    assert env.ledger.lines() == ["wanted", "undo-wanted"]


EVIL = "$(touch pwned); echo x `touch pwned2` 'q' \"d\" ; touch pwned3"


def test_values_in_string_commands_are_shell_quoted(env: Env) -> None:
    text = pipeline(
        step("s", "echo ${{ vars.evil }} >> ledger", undo=False),
        top=f"vars: {{evil: {q(EVIL)}}}",
    )
    result = cli("run", env.write("p.yml", text))
    assert result.exit_code == 0, result
    assert not any((env.path / name).exists() for name in ("pwned", "pwned2", "pwned3"))
    assert env.ledger.lines() == [EVIL]


def test_values_in_list_commands_are_one_argument_each(env: Env) -> None:
    script = "import json, sys; open('argv.json', 'w').write(json.dumps(sys.argv[1:]))"
    text = (
        pipeline(top=f"vars: {{evil: {q(EVIL)}, spaced: {q('a  b c')}}}")
        + "  - id: s\n    kind: shell\n"
        + f"    run: [{q(sys.executable)}, '-c', {q(script)}, '${{{{ vars.evil }}}}', "
        + "'${{ vars.spaced }}', 'x-${{ vars.spaced }}']\n"
    )
    result = cli("run", env.write("p.yml", text))
    assert result.exit_code == 0, result
    assert json.loads((env.path / "argv.json").read_text()) == [EVIL, "a  b c", "x-a  b c"]
    assert not (env.path / "pwned").exists()


def test_step_env_and_idempotency_key_reach_the_command(env: Env) -> None:
    text = pipeline(
        step(
            "s",
            'echo "$GREETING:$AGENTSAGA_IDEMPOTENCY_KEY" >> ledger',
            undo=False,
            extra="env: {GREETING: '${{ vars.greeting }}'}",
        ),
        top="vars: {greeting: $(touch pwned)}",
    )
    result = cli("run", env.write("p.yml", text), "--json")
    assert result.exit_code == 0, result
    rid = result.json()["run_id"]
    assert env.ledger.lines() == [f"$(touch pwned):{rid}:s:1"]
    assert not (env.path / "pwned").exists()


# --- Ctrl-C and timeouts -----------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_interrupts_with_130_and_the_run_resumes(env: Env) -> None:
    body = "echo b-start >> ledger; " + block_until("go", "b.pid") + "; echo b-done >> ledger"
    path = env.write("p.yml", pipeline(step("a"), step("b", body), step("c")))
    proc = env.spawn("run", path)
    wait_until(lambda: (env.path / "b.pid").exists(), what="step b to start")
    proc.signal(signal.SIGINT)
    result = proc.wait()
    assert result.exit_code == 130, result
    assert "Traceback" not in result.stderr
    rid = env.newest_run_id()
    assert env.run_status(rid) == "interrupted"
    # The step's command was stopped with agentsaga: nothing of it is left running.
    pid = int((env.path / "b.pid").read_text())
    wait_until(lambda: not process_running(pid), what="the step's command to stop")
    assert not env.ledger.has("b-done")

    (env.path / "go").touch()
    resumed = cli("resume", rid, "--json")
    assert resumed.exit_code == 0, resumed
    assert env.ledger.count("a") == 1
    assert env.ledger.lines()[-2:] == ["b-done", "c"]


@pytest.mark.slow
def test_timeout_kills_the_command_and_its_process_group(env: Env) -> None:
    body = "sleep 30 & echo $! > child.pid; echo started >> ledger; wait"
    # 3 s, not less: bash must have written child.pid before the timeout fires, even on
    # a loaded machine.
    path = env.write("p.yml", pipeline(step("slow", body, undo=False, extra="timeout: 3s")))
    result = cli("run", path, "--json")
    assert result.exit_code == 1, result
    assert result.json()["status"] == "failed"
    assert "timed out" in json.dumps(result.json())
    child = int((env.path / "child.pid").read_text())
    wait_until(lambda: not process_running(child), timeout=60, what="the child to be killed")


# --- --json ------------------------------------------------------------------------------


def test_json_documents_of_run_resume_rollback(env: Env) -> None:
    def check(data: dict[str, object], status: str) -> None:
        assert {"run_id", "status", "steps"} <= set(data)
        assert data["status"] == status
        steps = data["steps"]
        assert isinstance(steps, list)
        for item in steps:
            assert {"step_id", "status", "attempts"} <= set(item)
            assert isinstance(item["attempts"], list)

    path = env.write("p.yml", chain(2, fail_at=2))
    run = cli("run", path, "--json")
    check(run.json(), "failed")
    assert [(s["step_id"], s["status"], len(s["attempts"])) for s in run.json()["steps"]] == [
        ("s1", "completed", 1),
        ("s2", "compensated", 1),
    ]
    (env.path / "flag").touch()
    resumed = cli("resume", run.json()["run_id"], "--json")
    check(resumed.json(), "succeeded")
    rolled = cli("rollback", run.json()["run_id"], "--json")
    check(rolled.json(), "rolled_back")
    assert {s["step_id"]: s["status"] for s in rolled.json()["steps"]} == {
        "s1": "compensated",
        "s2": "compensated",
    }


# --- more rules: no compensation twice, outputs reach compensations ----------------------


def test_rollback_after_terminal_failure_does_not_undo_the_failed_step_twice(env: Env) -> None:
    rid = cli("run", _failing_b(env), "--json").json()["run_id"]
    assert env.ledger.lines() == ["a", "b", "undo-b"]
    result = cli("rollback", rid)
    assert result.exit_code == 0, result
    assert env.ledger.lines() == ["a", "b", "undo-b", "undo-a"]


def test_rollback_after_a_rewind_undoes_each_attempt_once(env: Env) -> None:
    test = counter("tests") + '; echo test:$n >> ledger; [ $n -ge 2 ] || { echo "boom"; exit 1; }'
    rid = cli("run", env.write("p.yml", _rewind_pipeline(test)), "--json").json()["run_id"]
    assert env.ledger.lines() == ["plan", "write:0", "test:1", "undo-write", "write:1", "test:2"]
    result = cli("rollback", rid)
    assert result.exit_code == 0, result
    # The first write attempt was undone by the rewind; only the second is left.
    assert env.ledger.lines()[6:] == ["undo-write"]


def test_rollback_plan_changes_nothing(env: Env) -> None:
    path = env.write("p.yml", pipeline(step("a"), step("b", undo=False), step("c")))
    rid = cli("run", path, "--json").json()["run_id"]
    plan = cli("rollback", rid, "--plan", "--json")
    assert plan.exit_code == 0, plan
    actions = [(i["step_id"], i["attempt"], i["action"]) for i in plan.json()["plan"]]
    assert actions == [
        ("c", 1, "compensate"),
        ("b", 1, "skip"),
        ("a", 1, "compensate"),
        (None, None, "compensate"),  # the run's workspace
    ]
    assert env.ledger.lines() == ["a", "b", "c"]
    assert env.run_status(rid) == "succeeded"


def test_compensation_receives_the_step_output(env: Env) -> None:
    """The README's deploy example: the revert reads the deploy's JSON answer."""
    text = (
        pipeline()
        + "  - id: deploy\n    kind: deploy\n"
        + '    run: \'echo "{\\"version\\": \\"v7\\"}"\'\n'
        + "    compensate:\n"
        + '      run: echo "revert $DEPLOYED_VERSION" >> ledger\n'
        + '      env: {DEPLOYED_VERSION: "${{ steps.deploy.output.json.version }}"}\n'
    )
    rid = cli("run", env.write("p.yml", text), "--json").json()["run_id"]
    assert cli("rollback", rid).exit_code == 0
    assert env.ledger.lines() == ["revert v7"]


def test_top_level_env_expressions_are_rendered(env: Env) -> None:
    text = pipeline(
        step("s", 'echo "X=$X Y=$Y" >> ledger', undo=False),
        top="vars: {a: hello}\nenv: {X: '${{ vars.a }}', Y: plain}",
    )
    result = cli("run", env.write("p.yml", text))
    assert result.exit_code == 0, result
    assert env.ledger.lines() == ["X=hello Y=plain"]


def test_failed_compensation_of_a_failed_step_leaves_a_resumable_failed_run(env: Env) -> None:
    """The failed step's own compensation fails: the run must not be left 'running'
    with no owner; it is failed (or rollback_failed) and a later resume finishes it."""
    text = pipeline(
        step("a"),
        step("b", "echo b >> ledger; test -f flag", undo="echo undo-b >> ledger; test -f fixed"),
    )
    result = cli("run", env.write("p.yml", text), "--json")
    assert result.exit_code in (1, 3), result
    rid = env.newest_run_id()
    assert env.run_status(rid) in ("failed", "rollback_failed")
    (env.path / "fixed").touch()
    (env.path / "flag").touch()
    resumed = cli("resume", rid)
    assert resumed.exit_code == 0, resumed
    assert env.ledger.lines() == ["a", "b", "undo-b", "undo-b", "b"]


def test_fork_with_an_undeclared_var_exits_2(env: Env) -> None:
    parent = cli("run", _fork_pipeline(env), "--json").json()["run_id"]
    result = cli("fork", parent, "--from", "s3", "--var", "greting=bye")
    assert result.exit_code == 2, result
    assert "greting" in result.stderr
    assert env.ledger.lines() == ["s1", "s2", "s3:hi"]


@pytest.mark.slow
def test_ctrl_c_during_rollback_then_rollback_finishes(env: Env) -> None:
    slow_undo = "echo undo-b-start >> ledger; " + block_until("release", "undo-b.pid")
    slow_undo += "; echo undo-b >> ledger"
    path = env.write("p.yml", pipeline(step("a"), step("b", undo=slow_undo), step("c")))
    rid = cli("run", path, "--json").json()["run_id"]
    proc = env.spawn("rollback", rid)
    wait_until(lambda: (env.path / "undo-b.pid").exists(), what="the slow compensation")
    proc.signal(signal.SIGINT)
    assert proc.wait().exit_code == 130
    assert env.run_status(rid) != "rolled_back"
    (env.path / "release").touch()
    result = cli("rollback", rid)
    assert result.exit_code == 0, result
    assert env.ledger.lines()[3:] == ["undo-c", "undo-b-start", "undo-b-start", "undo-b", "undo-a"]


@pytest.mark.slow
def test_sigterm_is_handled_like_ctrl_c(env: Env) -> None:
    body = "echo b-start >> ledger; " + block_until("go", "b.pid") + "; echo b-done >> ledger"
    path = env.write("p.yml", pipeline(step("a"), step("b", body)))
    proc = env.spawn("run", path)
    wait_until(lambda: (env.path / "b.pid").exists(), what="step b to start")
    proc.signal(signal.SIGTERM)
    assert proc.wait().exit_code == 130
    rid = env.newest_run_id()
    assert env.run_status(rid) == "interrupted"
    (env.path / "go").touch()
    assert cli("resume", rid).exit_code == 0
    assert env.ledger.count("a") == 1 and env.ledger.has("b-done")
