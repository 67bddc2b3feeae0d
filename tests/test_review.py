"""Review findings: each test pins a place where agentsaga departs from docs/design.md
(Semantics) or the README, or surprises a user. They fail until the bug they name is fixed.

Command-only pipelines (``workspace: {isolation: none}``) and the ledger their commands
write, as in test_engine.py; the LLM tests use the loopback server and the real SDK.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import Env, cli, wait_until
from tests.llm_project import make_project
from tests.llm_server import FakeLLMServer, llm_server  # noqa: F401 (the fixture)
from tests.pipelines_util import block_until, chain, pipeline, step


def _ledger_after(env: Env, before: list[str]) -> list[str]:
    return env.ledger.lines()[len(before) :]


# --- resume --pipeline: what the plan promises is what runs --------------------------------------


def test_resume_pipeline_reruns_a_skipped_step_whose_if_changed(env: Env) -> None:
    """A skipped step is reused whatever its definition: changing its ``if:`` in
    ``resume --pipeline`` never makes it run (docs/design.md, Semantics, Resume: a changed
    step re-runs)."""
    gate = "echo c >> ledger; test -f flag"
    first = pipeline(
        step("a"),
        step("b", extra="if: ${{ vars.mode == 'on' }}"),
        step("c", gate),
        top="vars: {mode: 'off'}",
    )
    run = cli("run", env.write("p.yml", first), "--json")
    assert run.exit_code == 1, run
    rid = run.json()["run_id"]
    assert env.ledger.lines() == ["a", "c", "undo-c"]

    changed = first.replace("vars.mode == 'on'", "vars.mode == 'off'")
    (env.path / "flag").touch()
    plan = cli("resume", rid, "--pipeline", env.write("p2.yml", changed), "--plan", "--json")
    actions = {i["step_id"]: i["action"] for i in plan.json()["plan"]}
    assert actions["b"] == "rerun", plan  # its definition changed

    before = env.ledger.lines()
    resumed = cli("resume", rid, "--pipeline", env.path / "p2.yml", "--json")
    assert resumed.exit_code == 0, resumed
    assert "b" in _ledger_after(env, before), resumed


def test_resume_pipeline_with_an_inserted_step_reruns_what_the_plan_says(env: Env) -> None:
    """``resume --plan`` says the steps after an inserted step re-run; ``resume`` then
    runs the new step alone and reuses the rest (the restart is recorded only when the
    first step to run already had an attempt: engine.py resume, ``action == 'rerun'``)."""
    rid = cli("run", env.write("p.yml", chain(3)), "--json").json()["run_id"]
    assert env.ledger.lines() == ["s1", "s2", "s3"]
    inserted = chain(3).replace(
        "  - id: s2\n", '  - id: x\n    kind: shell\n    run: "echo x >> ledger"\n  - id: s2\n'
    )
    new = env.write("p2.yml", inserted)

    plan = cli("resume", rid, "--pipeline", new, "--plan", "--json")
    actions = {i["step_id"]: i["action"] for i in plan.json()["plan"]}
    assert actions == {"s1": "reuse", "x": "run", "s2": "rerun", "s3": "rerun"}, plan

    resumed = cli("resume", rid, "--pipeline", new, "--json")
    assert resumed.exit_code == 0, resumed
    # What the plan promised: s3 and s2 undone newest first, then x, s2, s3.
    assert env.ledger.lines()[3:] == ["undo-s3", "undo-s2", "x", "s2", "s3"], resumed


def test_rollback_after_resume_pipeline_dropped_a_step_still_undoes_it(env: Env) -> None:
    """A step that ran, then was dropped by ``resume --pipeline`` when nothing had to
    re-run, is never undone: rollback looks its compensation up in the *new* pipeline,
    finds no step, and records "no compensation"."""
    rid = cli("run", env.write("p.yml", pipeline(step("a"), step("b"), step("c"))), "--json")
    rid = rid.json()["run_id"]
    dropped = env.write("p2.yml", pipeline(step("a"), step("c")))
    resumed = cli("resume", rid, "--pipeline", dropped, "--json")
    assert resumed.exit_code == 0, resumed

    rolled = cli("rollback", rid, "--json")
    assert rolled.exit_code == 0, rolled
    assert "undo-b" in env.ledger.lines(), env.ledger.lines()


def test_resume_pipeline_that_drops_a_var_is_not_refused(env: Env) -> None:
    """``resume --pipeline`` passes every stored var as an override, so a new pipeline
    that no longer declares one is refused with '--var X: the pipeline declares no var'
    (a flag the user never gave). ``fork`` filters the inherited vars; resume does not."""
    old = pipeline(step("a"), step("b", "echo b >> ledger; test -f flag"), top="vars: {old: x}")
    rid = cli("run", env.write("p.yml", old), "--json").json()["run_id"]
    (env.path / "flag").touch()
    new = env.write("p2.yml", pipeline(step("a"), step("b", "echo b >> ledger; test -f flag")))
    resumed = cli("resume", rid, "--pipeline", new, "--json")
    assert resumed.exit_code == 0, resumed


def test_resume_pipeline_reruns_a_step_whose_top_level_env_changed(env: Env) -> None:
    """The fingerprint is the step's own fields and ``env:`` only: the pipeline's top-level
    ``env:`` (which every command reads) is not part of it, so changing it reuses steps
    that ran with the old value."""

    def text(mode: str) -> str:
        return pipeline(
            step("s1", "echo s1:$MODE >> ledger"),
            step("s2", "echo s2 >> ledger; test -f flag"),
            top=f"env: {{MODE: {mode}}}",
        )

    rid = cli("run", env.write("p.yml", text("one")), "--json").json()["run_id"]
    (env.path / "flag").touch()
    plan = cli("resume", rid, "--pipeline", env.write("p2.yml", text("two")), "--plan", "--json")
    actions = {i["step_id"]: i["action"] for i in plan.json()["plan"]}
    assert actions["s1"] == "rerun", plan


def test_resume_pipeline_reruns_an_llm_step_whose_default_model_changed(env: Env) -> None:
    """``defaults: {model}`` decides which model a plan step asks, but is not in its
    fingerprint: switching model and resuming reuses the old model's answer."""

    def text(model: str) -> str:
        return (
            "name: m\nworkspace: {isolation: none}\n"
            f"defaults: {{provider: scripted, model: {model}}}\n"
            "steps:\n"
            "  - id: plan\n    kind: plan\n    prompt: hello\n    replies: [ok, ok]\n"
            + step("gate", "echo gate >> ledger; test -f flag")
        )

    rid = cli("run", env.write("p.yml", text("model-one")), "--json").json()["run_id"]
    plan = cli(
        "resume", rid, "--pipeline", env.write("p2.yml", text("model-two")), "--plan", "--json"
    )
    actions = {i["step_id"]: i["action"] for i in plan.json()["plan"]}
    assert actions["plan"] == "rerun", plan


# --- rewind --------------------------------------------------------------------------------------


def test_rewind_namespace_is_empty_for_a_step_that_was_never_rewound(env: Env) -> None:
    """``rewind`` is "why the run came back to this step; empty on the first pass". The
    run state keeps the last rewind for ever, so a later step on its first pass (say a
    second write/test loop) sees the first loop's count, origin and error."""
    test = "n=$(cat tries 2>/dev/null || echo 0); n=$((n+1)); echo $n > tries; "
    test += '[ $n -ge 2 ] || { echo "first-loop-failure"; exit 1; }'
    text = pipeline(
        step("write"),
        step(
            "test",
            test,
            kind="test",
            undo=False,
            extra="on_failure: {rewind_to: write, max_rewinds: 2}",
        ),
        step("later", "echo later:${{ rewind.count }}:${{ rewind.from }} >> ledger"),
    )
    result = cli("run", env.write("p.yml", text), "--json")
    assert result.exit_code == 0, result
    assert env.ledger.lines()[-1] == "later:0:", env.ledger.lines()


# --- --plan changes nothing ----------------------------------------------------------------------


def test_resume_plan_with_budget_changes_nothing(env: Env) -> None:
    """``resume --plan`` must change nothing, but ``--budget`` is written to the run's
    state before ``--plan`` is looked at (cli.py resume)."""
    rid = cli("run", env.write("p.yml", chain(2, fail_at=2)), "--json").json()["run_id"]
    store = env.store()
    try:
        before = store.get_run(rid).state.get("budget")
    finally:
        store.close()
    plan = cli("resume", rid, "--plan", "--budget", "max_tokens=5", "--json")
    assert plan.exit_code == 0, plan
    store = env.store()
    try:
        assert store.get_run(rid).state.get("budget") == before
    finally:
        store.close()


# --- fork ----------------------------------------------------------------------------------------


def test_fork_with_a_new_pipeline_keeps_the_parents_vars(env: Env) -> None:
    """``fork --pipeline`` drops the parent's ``--var`` values (engine._fork_pipeline,
    ``keep_parent_vars=False``): the steps before --from no longer match, so the fork pays
    for them again, and with the default value instead of the one the parent ran with."""

    def text(last: str) -> str:
        return pipeline(
            step("s1", "echo s1:${{ vars.task }} >> ledger"),
            step("s2"),
            step("s3", last),
            top="vars: {task: default}",
        )

    parent = cli("run", env.write("p.yml", text("echo s3 >> ledger")), "--var", "task=X", "--json")
    assert parent.exit_code == 0, parent
    new = env.write("p2.yml", text("echo s3-v2:${{ vars.task }} >> ledger"))
    forked = cli("fork", parent.json()["run_id"], "--from", "s3", "--pipeline", new, "--json")
    assert forked.exit_code == 0, forked
    assert env.ledger.lines() == ["s1:X", "s2", "s3", "s3-v2:X"]


# --- exit codes and --json when things go wrong --------------------------------------------------


def test_resume_from_whose_compensation_fails_is_a_failed_run_with_json(env: Env) -> None:
    """A compensation that fails while ``resume --from`` undoes the steps to re-run
    escapes ``_drive`` (engine.resume calls ``_finish_restart`` before it): exit 3
    ("rollback failed") and nothing on stdout under --json, where the same failure
    inside a run is ``failed``, exit 1, with the JSON document."""
    text = pipeline(
        step("a", undo="echo undo-a >> ledger; test -f undo-ok"),
        step("b", "echo b >> ledger; test -f flag", undo=False),
    )
    rid = cli("run", env.write("p.yml", text), "--json").json()["run_id"]
    resumed = cli("resume", rid, "--from", "a", "--json")
    assert resumed.exit_code == 1, resumed
    data = json.loads(resumed.stdout)
    assert data["run_id"] == rid and data["status"] == "failed"


def test_resume_of_a_fork_does_not_rerun_the_parents_checkpoints(env: Env) -> None:
    """``plan_fork`` fingerprints the reused steps under the *parent's* ``run`` namespace
    (the probe record keeps the parent's id and workspace), ``plan_resume`` of the fork
    under the fork's: a step that reads ``run.*`` is reused by the fork, then run again by
    the fork's first resume (the parent's checkpoint paid twice, and its effect doubled)."""
    text = pipeline(
        step("s1", "echo s1:${{ run.id }} >> ledger"),
        step("s2"),
        step("s3", "echo s3 >> ledger; test -f flag"),
    )
    (env.path / "flag").touch()
    parent = cli("run", env.write("p.yml", text), "--json").json()["run_id"]
    (env.path / "flag").unlink()
    forked = cli("fork", parent, "--from", "s3", "--json")
    assert forked.exit_code == 1, forked  # s3 fails in the fork: resumable
    child = forked.json()["run_id"]
    assert env.ledger.count("s2") == 1  # reused from the parent

    (env.path / "flag").touch()
    resumed = cli("resume", child, "--json")
    assert resumed.exit_code == 0, resumed
    assert env.ledger.count("s2") == 1, env.ledger.lines()
    assert [line for line in env.ledger.lines() if line.startswith("s1:")] == [f"s1:{parent}"]


# --- Ctrl-C during an LLM call -------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_during_an_llm_call_sends_no_further_request(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    llm_server: FakeLLMServer,  # noqa: F811
) -> None:
    """The SIGINT handler raises ``Interrupted`` inside the SDK's HTTP call (nothing polls
    the cancel event there). The SDK wraps any exception as ``APIConnectionError``, which
    agentsaga classes as a retryable connection error: ``call_with_retries`` sends the
    request again after the user pressed Ctrl-C, and if that reply arrives the step
    completes and the run goes on (here: it succeeds, exit 0) instead of stopping 130."""
    make_project(tmp_path, monkeypatch, llm_server)
    # The first reply never comes while the test runs (it is dropped when the server stops):
    # the Ctrl-C lands in the call however slow the machine.
    llm_server.slow(600, "late reply").reply("second request, after Ctrl-C")
    Path("p.yml").write_text(
        "name: cc\nworkspace: {isolation: none}\n"
        "defaults: {provider: anthropic, model: claude-sonnet-4-6}\n"
        "steps:\n  - id: plan\n    kind: plan\n    prompt: think slowly\n"
    )

    def interrupt() -> None:
        wait_until(lambda: llm_server.count >= 1, what="the LLM request")
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    killer = threading.Thread(target=interrupt, daemon=True)
    killer.start()
    result = cli("run", "p.yml", "--json")
    killer.join(timeout=10)
    assert result.exit_code == 130, result
    assert llm_server.count == 1, f"{llm_server.count} requests: one was sent after Ctrl-C"


# --- tokens: runs / show against the call log ----------------------------------------------------


@pytest.mark.slow
def test_runs_and_show_count_the_tokens_of_an_attempt_that_crashed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    llm_server: FakeLLMServer,  # noqa: F811
) -> None:
    """An attempt's tokens are summed from the call log only by ``finish_attempt``. One
    killed after its reply was logged is later compensated by recovery and never
    finished, so it keeps 0 tokens: ``runs`` and ``show`` say the run cost nothing while
    the API was paid (``report`` counts it from the call log). The usage the API reported
    is the truth (docs/design.md, token accounting)."""
    project = make_project(tmp_path, monkeypatch, llm_server)
    llm_server.reply("the plan", usage={"input": 100, "output": 20})
    project.write(
        "p.yml",
        "name: crash\nworkspace: {isolation: none}\n"
        "defaults: {provider: anthropic, model: claude-sonnet-4-6}\n"
        "steps:\n  - id: plan\n    kind: plan\n    prompt: plan it\n",
    )
    crashed = project.subprocess("run", "p.yml", fault="llm.after_reply")
    assert crashed.exit_code == -signal.SIGKILL, crashed
    rid = project.newest_run_id()
    resumed = project.run("resume", rid, "--json")
    assert resumed.exit_code == 0, resumed
    assert llm_server.count == 1  # the reply was served from the log, not paid again

    assert project.report(rid)["spent_tokens"] == 120
    listed = project.run_json("runs")["runs"]
    assert [r["usage"] for r in listed if r["run_id"] == rid][0]["input"] == 100, listed
    shown = project.run_json("show", rid)
    assert sum(a["usage"]["total"] for s in shown["steps"] for a in s["attempts"]) == 120


# --- --json when a run is interrupted ------------------------------------------------------------


@pytest.mark.slow
def test_run_json_interrupted_still_prints_the_run_document(env: Env) -> None:
    """``run --json`` interrupted by Ctrl-C exits 130 with nothing on stdout and, the
    renderer being quiet, the run id nowhere: the user cannot resume what they cannot
    name. README: --json prints one document ``{run_id, status, steps}`` for run."""
    body = block_until("go", "b.pid")
    path = env.write("p.yml", pipeline(step("a"), step("b", body)))
    proc = env.spawn("run", path, "--json")
    wait_until(lambda: (env.path / "b.pid").exists(), what="step b to start")
    proc.signal(signal.SIGINT)
    result = proc.wait()
    (env.path / "go").touch()
    assert result.exit_code == 130, result
    rid = env.newest_run_id()
    assert rid in result.output, result
    data = json.loads(result.stdout)
    assert data["run_id"] == rid and data["status"] == "interrupted"


# --- report --------------------------------------------------------------------------------------


def test_report_restart_counterfactual_counts_a_step_paid_twice_by_resume_from(
    env: Env,
) -> None:
    """``resume --from plan`` pays for plan again. The saga tax counts it (spent 200 over
    a clean pass of 100), but the restart counterfactual only adds tokens at *failed*
    attempts, so it claims a restart from scratch would have cost nothing extra: the
    report says the saga was the more expensive policy. A restart would also have paid
    plan twice (report.py token_report, ``if failed:``)."""
    text = (
        "name: r\nworkspace: {isolation: none}\n"
        "defaults: {provider: scripted, model: claude-sonnet-4-5}\n"
        "steps:\n  - id: plan\n    kind: plan\n    prompt: hello\n    replies:\n"
        "      - {text: one, usage: {input: 80, output: 20}}\n"
        "      - {text: two, usage: {input: 80, output: 20}}\n"
    )
    rid = cli("run", env.write("p.yml", text), "--json").json()["run_id"]
    assert cli("resume", rid, "--from", "plan", "--json").exit_code == 0
    data = cli("report", rid, "--json").json()
    assert data["spent_tokens"] == 200 and data["clean_pass_tokens"] == 100, data
    assert data["tax_restart"] >= data["tax_saga"], data


def test_resume_from_does_not_feed_a_stale_rewind_error(env: Env) -> None:
    """After the loop gave up (max_rewinds reached on failure B), ``resume --from write``
    hands the write the error of the *first* loop (A), the state never having been
    updated for the terminal failure; and ``rewinds`` counts are not reset, so the manual
    pass gets no automatic rewind either. The rewound write should see B (or nothing)."""
    test = "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; "
    test += "case $n in 1) echo failure-A;; 2) echo failure-B;; *) echo failure-C;; esac; exit 1"
    text = pipeline(
        step("write", "echo write:${{ rewind.count }}:${{ rewind.error }} >> ledger", undo=False),
        step(
            "test",
            test,
            kind="test",
            undo=False,
            extra="on_failure: {rewind_to: write, max_rewinds: 1}",
        ),
    )
    rid = cli("run", env.write("p.yml", text), "--json").json()["run_id"]
    assert env.ledger.count("write:0:") == 1
    resumed = cli("resume", rid, "--from", "write", "--json")
    assert resumed.exit_code == 1, resumed
    # rewind.error holds the test's output tail over several lines: the last write's.
    last_write = env.ledger.path.read_text().rsplit("write:", 1)[1]
    assert "failure-A" not in last_write, env.ledger.lines()
