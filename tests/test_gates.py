"""Human gates (``kind: approve``): a run waits, a person approves or rejects with a
comment that rewinds the agent, and every decision is recorded.

The LLM tests drive the real anthropic client against the loopback server and read its
request log; the others use command steps that leave a ledger. Races and crashes use real
processes (``AGENTSAGA_FAULT`` SIGKILLs the deciding process after its record).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentsaga.saga import gate as rules
from agentsaga.store import open_store
from agentsaga.store.migrations import statements
from tests import gitstate
from tests.conftest import Env, agentsaga_argv, cli, run_agentsaga
from tests.llm_project import MODELS, make_project
from tests.llm_server import FakeLLMServer
from tests.pipelines_util import pipeline, q, step
from tests.test_store_contract import Backend, backend  # noqa: F401 (the fixture)


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as s:
        yield s


def gate(
    *,
    on_reject: str = "{rewind_to: write, max_rejects: 2}",
    extra: str = "",
    step_id: str = "review",
) -> str:
    text = (
        f"  - id: {step_id}\n    kind: approve\n    message: {q('Ship it?')}\n"
        f"    on_reject: {on_reject}\n"
    )
    for line in extra.strip("\n").splitlines():
        text += f"    {line}\n"
    return text


def gated(env: Env, on_reject: str = "{rewind_to: write, max_rejects: 2}", extra: str = "") -> Path:
    """write (records rewind.error and rewind.from) -> review (a gate) -> deploy."""
    write_cmd = 'echo "write:${{ rewind.from }}:${{ rewind.error }}" >> ledger'
    return env.write(
        "p.yml",
        pipeline(
            step("write", write_cmd),
            gate(on_reject=on_reject, extra=extra),
            step("deploy"),
        ),
    )


def start(env: Env, path: Path) -> str:
    result = cli("run", path, "--json")
    assert result.exit_code == 5, result
    data = result.json()
    assert data["status"] == "waiting"
    assert data["gate"]["step_id"] == "review" and data["gate"]["message"] == "Ship it?"
    return str(data["run_id"])


def decisions(run_id: str) -> list[dict[str, Any]]:
    shown = cli("show", run_id, "--json")
    assert shown.exit_code == 0, shown
    return list(shown.json()["decisions"])


# --- waiting, approving --------------------------------------------------------------------


def test_run_waits_holding_no_lease_and_approve_continues_to_deploy(env: Env) -> None:
    rid = start(env, gated(env))
    assert env.ledger.lines() == ["write::"]
    assert env.store().get_lease(rid) is None  # no process, no lease
    listed = cli("runs", "--status", "waiting", "--json").json()["runs"]
    assert [r["run_id"] for r in listed] == [rid]
    shown = cli("show", rid)
    assert "waiting at gate review: Ship it?" in shown.stdout, shown
    assert f"agentsaga reject {rid} --comment TEXT" in shown.stdout
    assert "nothing to diff" in cli("show", rid, "--json").json()["gate"]["show"]

    # Resume does not skip the gate: it says what the run waits for.
    resumed = cli("resume", rid)
    assert resumed.exit_code == 5, resumed
    assert f"agentsaga approve {rid}" in resumed.output
    assert env.ledger.lines() == ["write::"]

    approved = cli("approve", rid, "--comment", "lgtm", "--json")

    assert approved.exit_code == 0, approved
    assert approved.json()["status"] == "succeeded"
    assert env.ledger.lines() == ["write::", "deploy"]
    [decision] = decisions(rid)
    assert (decision["decision"], decision["comment"], decision["visit"]) == (
        "approved",
        "lgtm",
        1,
    )
    assert decision["decided_by"] and decision["decided_at"]
    assert cli("report", rid, "--json").json()["decisions"] == [decision]


def test_approve_detach_only_records_then_resume_continues(env: Env) -> None:
    rid = start(env, gated(env))

    detached = cli("approve", rid, "--detach", "--json")

    assert detached.exit_code == 0, detached
    assert detached.json()["status"] == "waiting"  # recorded; nothing drove the run yet
    assert env.ledger.lines() == ["write::"]
    assert cli("resume", rid).exit_code == 0
    assert env.ledger.lines() == ["write::", "deploy"]


@pytest.mark.parametrize("command", ["approve", "reject"])
def test_deciding_a_run_not_waiting_exits_2_naming_its_status(env: Env, command: str) -> None:
    rid = cli("run", env.write("p.yml", pipeline(step("a"))), "--json").json()["run_id"]

    result = cli(command, rid, "--comment", "x")

    assert result.exit_code == 2, result
    assert "succeeded" in result.stderr and "not waiting" in result.stderr


def test_reject_needs_a_comment(env: Env) -> None:
    rid = start(env, gated(env))
    result = cli("reject", rid, "--comment", " ")
    assert result.exit_code == 2, result
    assert env.run_status(rid) == "waiting"


# --- rejecting -----------------------------------------------------------------------------


def test_reject_rewinds_with_the_comment_then_a_second_past_max_rejects_fails(env: Env) -> None:
    rid = start(env, gated(env, on_reject="{rewind_to: write, max_rejects: 1}"))

    rejected = cli("reject", rid, "--comment", "use tabs", "--json")

    # The write was undone (its compensation), ran again with the comment and the gate's
    # id in rewind.*, and the run waits at the gate's second visit.
    assert rejected.exit_code == 5, rejected
    assert env.ledger.lines() == ["write::", "undo-write", "write:review:use tabs"]
    assert rejected.json()["gate"]["visit"] == 2

    again = cli("reject", rid, "--comment", "still no")

    assert again.exit_code == 1, again
    assert env.run_status(rid) == "failed"
    assert "max_rejects (1) reached" in again.stderr
    assert env.ledger.lines()[-1] == "write:review:use tabs"  # no third write, no deploy
    assert [(d["decision"], d["comment"]) for d in decisions(rid)] == [
        ("rejected", "use tabs"),
        ("rejected", "still no"),
    ]


def test_reject_with_on_reject_rollback_rolls_the_run_back(env: Env) -> None:
    rid = start(env, gated(env, on_reject="rollback"))

    result = cli("reject", rid, "--comment", "not this week")

    assert result.exit_code == 1, result
    assert env.run_status(rid) == "rolled_back"
    assert env.ledger.lines() == ["write::", "undo-write"]


def test_rollback_of_a_waiting_run(env: Env) -> None:
    rid = start(env, gated(env))

    result = cli("rollback", rid, "--json")

    assert result.exit_code == 0, result
    assert result.json()["status"] == "rolled_back"
    assert env.ledger.lines() == ["write::", "undo-write"]
    assert cli("approve", rid).exit_code == 2


# --- timeouts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on_timeout", "status", "ledger"),
    [
        # timeout 0: the deadline is the arrival; the next process to drive the run is late.
        (
            "reject",
            "waiting",
            ["write::", "undo-write", "write:review:no decision within 0s; on_timeout: reject"],
        ),
        ("rollback", "rolled_back", ["write::", "undo-write"]),
        ("wait", "waiting", ["write::"]),
    ],
)
def test_timeout_policies_apply_when_the_run_is_next_driven(
    env: Env, on_timeout: str, status: str, ledger: list[str]
) -> None:
    rid = start(env, gated(env, extra=f"timeout: 0s\non_timeout: {on_timeout}"))
    assert env.ledger.lines() == ["write::"]

    resumed = cli("resume", rid)

    assert env.run_status(rid) == status, resumed
    assert env.ledger.lines() == ledger
    if on_timeout == "wait":
        assert resumed.exit_code == 5  # waiting still; a person may still decide
        assert cli("approve", rid).exit_code == 0
        return
    assert decisions(rid)[0]["decision"] == "timed_out"
    assert decisions(rid)[0]["decided_by"] == "timeout"


def test_a_decision_after_the_deadline_is_refused_and_resume_applies_the_timeout(
    env: Env,
) -> None:
    rid = start(env, gated(env, extra="timeout: 0s\non_timeout: reject"))

    late = cli("approve", rid)

    assert late.exit_code == 2, late
    assert "time to decide ran out" in late.stderr and "on_timeout: reject" in late.stderr
    assert decisions(rid) == []
    assert cli("resume", rid).exit_code == 5  # rejected by the timeout: waits again
    assert env.ledger.lines()[-1] == "write:review:no decision within 0s; on_timeout: reject"


def test_a_deadline_ahead_is_shown_and_does_not_act(env: Env) -> None:
    rid = start(env, gated(env, extra="timeout: 1h\non_timeout: rollback"))
    data = cli("show", rid, "--json")
    assert data.exit_code == 0
    result = cli("resume", rid, "--json")
    assert result.exit_code == 5
    assert result.json()["gate"]["deadline"] is not None
    assert cli("approve", rid).exit_code == 0


# --- two deciders, and a crash ---------------------------------------------------------------


def test_two_deciders_at_once_one_wins_the_other_is_told(env: Env) -> None:
    rid = start(env, gated(env))
    procs = [
        subprocess.Popen(
            agentsaga_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for args in (
            ("approve", rid, "--detach", "--comment", "ship"),
            ("reject", rid, "--detach", "--comment", "wait"),
        )
    ]
    outcomes = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]

    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 2], outcomes  # the winner recorded its decision, the loser is told
    loser = next(err for code, err in outcomes if code == 2)
    [decision] = decisions(rid)
    assert f"already {decision['decision']} by" in loser
    # The recorded decision is the one applied.
    assert cli("resume", rid).exit_code == (0 if decision["decision"] == "approved" else 5)


@pytest.mark.parametrize("fault", ["gate.after_decision", "comp.before"])
def test_sigkill_after_the_decision_then_resume_applies_it(env: Env, fault: str) -> None:
    """Killed after the rejection is recorded (before the rewind), or in the middle of the
    rewind's compensation: resume applies the recorded rejection exactly once."""
    rid = start(env, gated(env))
    killed = subprocess.run(
        agentsaga_argv("reject", rid, "--comment", "rename it"),
        env={**os.environ, "AGENTSAGA_FAULT": fault},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    assert len(decisions(rid)) == 1
    # A second decision on the same visit is refused: the first stands.
    assert cli("approve", rid).exit_code == 2

    resumed = cli("resume", rid, "--json")

    assert resumed.exit_code == 5, resumed
    assert resumed.json()["gate"]["visit"] == 2
    assert env.ledger.lines() == ["write::", "undo-write", "write:review:rename it"]
    assert cli("approve", rid).exit_code == 0
    assert env.ledger.lines()[-1] == "deploy"


# --- the agent reads the comment -------------------------------------------------------------

FILES = {"calc.py": "def add(a, b):\n    return a - b\n"}
EDIT = "calc.py\n<<<<<<< SEARCH\n{old}\n=======\n{new}\n>>>>>>> REPLACE\n"
LLM_PIPELINE = f"""\
name: gated-write
defaults: {{provider: anthropic, model: {MODELS["anthropic"]}}}
steps:
  - id: write
    kind: write
    prompt: |
      Fix add() in calc.py.
      ${{{{ rewind.from }}}} said: ${{{{ rewind.error }}}}
    compensate: {{git: reset}}
  - id: review
    kind: approve
    on_reject: {{rewind_to: write, max_rejects: 2}}
  - id: deploy
    kind: shell
    run: "cp calc.py DEPLOY_TO"
"""


@pytest.mark.slow
def test_reject_comment_reaches_the_model_and_the_rewound_write_replaces_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeLLMServer
) -> None:
    project = make_project(tmp_path, monkeypatch, server, files=FILES)
    server.reply(EDIT.format(old="    return a - b", new="    return a + b  # fixed"))
    server.reply(EDIT.format(old="    return a - b", new="    return b + a"))
    project.write("p.yml", LLM_PIPELINE.replace("DEPLOY_TO", str(tmp_path / "deployed.py")))
    before = gitstate.capture(project.repo)

    waiting = cli("run", "p.yml", "--json")

    assert waiting.exit_code == 5, waiting
    rid = waiting.json()["run_id"]
    assert "calc.py" in waiting.json()["gate"]["show"]  # the diffstat so far

    rejected = cli("reject", rid, "--comment", "no trailing comments, write b + a")

    assert rejected.exit_code == 5, rejected
    assert server.count == 2
    second = json.dumps(server.requests[1].body)
    assert "review said: no trailing comments, write b + a" in second
    assert "no trailing comments" not in json.dumps(server.requests[0].body)

    approved = project.run_json("approve", rid)

    assert approved["status"] == "succeeded", approved
    assert (tmp_path / "deployed.py").read_text() == "def add(a, b):\n    return b + a\n"
    assert server.count == 2  # the approval asked the model nothing
    assert project.run_json("rollback", rid)["status"] == "rolled_back"
    assert gitstate.capture(project.repo) == before


# --- the pipeline and the store ------------------------------------------------------------


def test_on_reject_to_a_later_step_is_a_load_error(env: Env) -> None:
    path = env.write(
        "p.yml",
        pipeline(gate(on_reject="{rewind_to: write}"), step("write")),
    )
    result = cli("validate", path)
    assert result.exit_code == 2, result
    assert "p.yml:" in result.stderr and "rewind_to: 'write' must be a step before" in result.stderr


def test_gate_rules_are_pure_data() -> None:
    """The core's table for a gate: verdicts, timeouts and limits in, an action out."""
    from agentsaga.pipeline import load_text
    from agentsaga.saga import decide

    text = pipeline(
        step("write"),
        gate(
            extra="timeout: 60s\non_timeout: reject", on_reject="{rewind_to: write, max_rejects: 1}"
        ),
    )
    pipe = load_text(text, "p.yml")
    g = pipe.steps[1]
    at = rules.at_gate
    assert isinstance(at(pipe, g, {}, None, None, 0.0), rules.Arrive)
    assert at(pipe, g, {}, 100.0, None, 159.0) == rules.Wait(160.0)
    assert at(pipe, g, {}, 100.0, None, 160.0) == rules.TimedOut("reject")
    ok = at(pipe, g, {}, 100.0, rules.Verdict("approved", "ann", "fine"), 500.0)
    assert isinstance(ok, rules.Pass) and ok.output["by"] == "ann"
    no = at(pipe, g, {}, 100.0, rules.Verdict("rejected", "bob", "tabs"), 0.0)
    assert isinstance(no, decide.Rewind) and no.to == "write"
    assert no.state["rewind"] == {"count": 1, "from": "review", "error": "tabs"}
    spent = at(pipe, g, {"gate_rejects": {"review": 1}}, 1.0, rules.Verdict("rejected", "b"), 0.0)
    assert isinstance(spent, decide.Fail) and not spent.rollback


def test_gate_decisions_race_in_the_store(backend: Backend) -> None:  # noqa: F811
    """The compare-and-swap, on both backends: one insert wins, the loser reads it."""
    from agentsaga.store import RunRecord, new_run_id

    store = backend.open()
    rid = new_run_id()
    store.create_run(
        RunRecord(
            id=rid,
            pipeline_name="p",
            pipeline_path="p.yml",
            pipeline_text="",
            pipeline_hash="h",
            vars={},
            status="waiting",
        )
    )
    visit = store.start_attempt(
        rid, "review", 0, fingerprint=None, base_commit=None, snapshot=None, status="waiting"
    )
    first, won = store.record_gate_decision(rid, visit.id, "review", "approved", "ann", "ok")
    other = backend.open()
    second, won2 = other.record_gate_decision(rid, visit.id, "review", "rejected", "bob", "no")
    assert (won, won2) == (True, False)
    assert second == first and first.decided_by == "ann"
    assert [d.decision for d in other.gate_decisions(rid)] == ["approved"]


def test_a_store_made_before_gates_is_migrated_to_accept_waiting(tmp_path: Path) -> None:
    """m001 and m002 as shipped, then opened by this version: the CHECKs admit waiting."""
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for name in ("m001_initial", "m002_call_index"):
        for sql in statements(name, "sqlite"):
            conn.execute(sql)
        conn.execute("INSERT INTO migrations VALUES (?, '2026-01-01')", (name,))
    conn.execute(
        "INSERT INTO runs (id, pipeline_name, pipeline_path, pipeline_text, pipeline_hash, "
        "vars_json, status, created_at, updated_at) VALUES ('old', 'p', 'p', '', 'h', '{}', "
        "'failed', 'x', 'x')"
    )
    conn.commit()
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE runs SET status = 'waiting' WHERE id = 'old'")
    conn.close()

    store = open_store(str(db))
    store.update_run("old", status="waiting")
    assert store.get_run("old").status == "waiting"
    with pytest.raises(Exception, match="CHECK"):
        store.update_run("old", status="no such status")
    store.close()
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)


# --- the demo ------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_review_waits_before_the_deploy_then_approve_deploys(tmp_path: Path) -> None:
    plain = cli("demo", "--dir", tmp_path / "plain", "--json")
    assert plain.exit_code == 0 and "review" not in [s["step_id"] for s in plain.json()["steps"]]

    result = cli("demo", "--dir", tmp_path / "demo", "--review", "--json")

    assert result.exit_code == 5, result
    data = result.json()
    assert data["gate"]["step_id"] == "review"
    assert not (tmp_path / "demo" / "deployments").exists()
    approved = run_agentsaga("approve", data["run_id"], "--comment", "ship it")
    assert approved.exit_code == 0, approved
    assert list((tmp_path / "demo" / "deployments").iterdir())


@pytest.mark.parametrize(
    ("status", "command", "code"),
    [
        ("waiting", "decide --detach", 0),
        # On Temporal the waiting workflow takes the decision and goes on at once: the
        # run may be running again before the command reads it back (seen under load).
        ("running", "decide --detach", 0),
        ("succeeded", "decide --detach", 0),
        ("failed", "decide --detach", 1),
        ("waiting", "resume", 5),
        ("running", "resume", 1),
    ],
)
def test_a_detached_decision_exits_0_once_recorded_whatever_the_run_does_next(
    status: str, command: str, code: int
) -> None:
    from agentsaga.cli_errors import exit_code_of

    assert exit_code_of(status, command) == code
