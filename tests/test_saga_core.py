"""The pure saga core (agentsaga/saga): facts in, decision out, no repository, no store.

Each table row is one rule of docs/design.md (Semantics) as the core encodes it; the
end-to-end suites (test_engine.py, test_review.py, test_crash_sweep.py) prove the local
runner carries the decisions out. The last tests prove the core imports nothing that performs I/O.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentsaga.pipeline import Pipeline, load_text
from agentsaga.saga import decide, plans
from agentsaga.saga.view import AttemptFact, RunView
from agentsaga.states import RunStatus, StepStatus

PIPELINE = """\
name: t
workspace: {isolation: worktree}
steps:
  - {id: plan, kind: shell, run: "true"}
  - id: write
    kind: shell
    run: "true"
    compensate: {git: reset}
  - id: test
    kind: shell
    run: "true"
    retry: {attempts: 3, backoff: 2, max_backoff: 5}
    on_failure: {rewind_to: write, max_rewinds: 2, when: assertion}
  - {id: deploy, kind: shell, run: "true", irreversible: true, compensate: {run: "undo"}}
  - {id: notify, kind: shell, run: "true"}
"""


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return load_text(PIPELINE, "t.yml")


def fact(id_: int, step: str, status: str = StepStatus.COMPLETED, **kw: Any) -> AttemptFact:
    return AttemptFact(id=id_, step_id=step, attempt=kw.pop("attempt", 1), status=status, **kw)


def view(*facts: AttemptFact, **state: Any) -> RunView:
    return RunView({f.step_id: f for f in facts}, state)


# --- next_action -------------------------------------------------------------------------

DONE = StepStatus.COMPLETED


@pytest.mark.parametrize(
    ("facts", "state", "start", "expected"),
    [
        ([], {}, 0, "run plan"),
        ([("plan", DONE)], {}, 0, "run write"),
        ([("plan", DONE), ("write", StepStatus.SKIPPED)], {}, 0, "run test"),
        ([("plan", DONE), ("write", StepStatus.FAILED)], {}, 0, "run write"),
        # Stopped by Ctrl-C: not done, so the step runs again (after its recovery).
        ([("plan", DONE), ("write", StepStatus.INTERRUPTED)], {}, 0, "run write"),
        # Crashed mid-flight: the step runs again (after its recovery).
        ([("plan", DONE), ("write", StepStatus.RUNNING)], {}, 0, "run write"),
        ([("plan", DONE), ("write", StepStatus.COMPENSATED)], {}, 0, "run write"),
        ([(s, DONE) for s in ("plan", "write", "test", "deploy", "notify")], {}, 0, "finish"),
        # A recorded restart point comes first, whatever is done.
        ([(s, DONE) for s in ("plan", "write")], {"restart_index": 1}, 0, "restart 1"),
        # The position hint skips steps known to be done.
        ([("write", DONE)], {}, 1, "run test"),
    ],
)
def test_next_action(
    pipe: Pipeline, facts: list[tuple[str, str]], state: dict[str, Any], start: int, expected: str
) -> None:
    v = view(*(fact(i, s, st) for i, (s, st) in enumerate(facts, 1)), **state)
    action = decide.next_action(pipe, v, start)
    match action:
        case decide.RunStep(step):
            got = f"run {step.id}"
        case decide.Restart(index):
            got = f"restart {index}"
        case decide.Finish(status):
            assert status == RunStatus.SUCCEEDED
            got = "finish"
    assert got == expected


# --- after_failure -----------------------------------------------------------------------

TESTS_FAIL = decide.Failure("2 failed", kind="assertion", failing_tests=("t_a", "t_b"))


@pytest.mark.parametrize(
    ("failure", "try_no", "state", "expected"),
    [
        # Retryable and tries left: retry, whatever the rewind policy says.
        (TESTS_FAIL, 1, {}, "retry"),
        (TESTS_FAIL, 2, {}, "retry"),
        # Tries spent: rewind under on_failure.
        (TESTS_FAIL, 3, {}, "rewind write"),
        # Not retryable: straight to the rewind decision.
        (decide.Failure("x", kind="assertion", retryable=False), 1, {}, "rewind write"),
        # on_failure.when: test does not cover a timeout.
        (
            decide.Failure("slow", kind="timeout"),
            3,
            {},
            "fail: no rewind: failure is timeout, on_failure wants assertion",
        ),
        # A spent budget never rewinds (it would spend more).
        (decide.Failure("over", kind="budget", retryable=False), 1, {}, "fail"),
        # Not the step's own failure (a bad expression): never rewinds.
        (decide.Failure("bad", kind="assertion", step_failure=False), 3, {}, "fail"),
        # max_rewinds spent.
        (TESTS_FAIL, 3, {"rewinds": {"test": 2}}, "fail: no rewind: max_rewinds (2)"),
        # The same failing tests again: stuck.
        (
            TESTS_FAIL,
            3,
            {"rewinds": {"test": 1}, "signatures": {"test": "tests:t_a,t_b"}},
            "fail: no rewind: the same failure repeated unchanged",
        ),
        # Different failing tests: progress, rewind again.
        (
            TESTS_FAIL,
            3,
            {"rewinds": {"test": 1}, "signatures": {"test": "tests:t_a"}},
            "rewind write",
        ),
    ],
)
def test_after_failure(
    pipe: Pipeline, failure: decide.Failure, try_no: int, state: dict[str, Any], expected: str
) -> None:
    step = pipe.steps[2]
    decision = decide.after_failure(pipe, step, state, failure, try_no, jitter=0.5)
    match decision:
        case decide.Retry():
            got = "retry"
        case decide.Rewind(to):
            got = f"rewind {to}"
        case decide.Fail(notes):
            got = "fail" + (f": {notes[0]}" if notes else "")
    assert got.startswith(expected), got


def test_rewind_state_records_the_restart_and_why(pipe: Pipeline) -> None:
    state = {"rewind": {"count": 1, "from": "test", "error": "old"}, "keep": 1}
    decision = decide.after_failure(pipe, pipe.steps[2], state, TESTS_FAIL, 3, 0.0)
    assert isinstance(decision, decide.Rewind)
    new = decision.state
    assert new["restart_from"] == "write" and new["restart_index"] == 1
    assert new["rewind"] == {"count": 2, "from": "test", "error": "2 failed"}
    # Only the steps the run goes back through see why.
    assert set(new["rewind_by_step"]) == {"write", "test"}
    assert new["rewinds"] == {"test": 1} and new["keep"] == 1
    assert decision.notes == ("rewinding to write (1/2)",)
    assert state == {"rewind": {"count": 1, "from": "test", "error": "old"}, "keep": 1}


@pytest.mark.parametrize(
    ("try_no", "jitter", "delay"),
    [(1, 0.0, 1.0), (1, 1.0, 2.0), (2, 0.5, 3.0), (3, 0.0, 2.5), (9, 1.0, 5.0)],
)
def test_backoff_is_a_function_of_the_jitter(
    pipe: Pipeline, try_no: int, jitter: float, delay: float
) -> None:
    """Ceiling min(max_backoff, backoff * 2^(n-1)); the delay is in [ceiling/2, ceiling]."""
    assert decide.backoff(pipe.steps[2].retry, try_no, jitter) == pytest.approx(delay)


def test_failure_signature_ignores_digits_and_orders_tests() -> None:
    a = decide.failure_signature(decide.Failure("took 12 ms at line 3"))
    b = decide.failure_signature(decide.Failure("took 97 ms at line 8"))
    c = decide.failure_signature(decide.Failure("took ms"))
    assert a == b != c
    t1 = decide.failure_signature(decide.Failure("x", failing_tests=("b", "a")))
    assert t1 == "tests:a,b"


@pytest.mark.parametrize(
    ("state", "override", "comp_failed", "expected"),
    [
        ({"rollback_on_failure": True}, None, False, True),
        ({"rollback_on_failure": False}, None, False, False),
        ({}, True, False, True),
        ({"rollback_on_failure": True}, False, False, False),
        ({"rollback_on_failure": True}, None, True, False),
    ],
)
def test_rollback_after_failure(
    state: dict[str, Any], override: bool | None, comp_failed: bool, expected: bool
) -> None:
    assert decide.rollback_after_failure(state, override, comp_failed) is expected


def test_rollback_halts(pipe: Pipeline) -> None:
    assert decide.rollback_halts({"on_compensation_failure": "halt"}, pipe)
    assert not decide.rollback_halts({"on_compensation_failure": "continue"}, pipe)


# --- plans -------------------------------------------------------------------------------


def _fp(step: Any) -> str:
    return f"fp-{step.id}"


@pytest.mark.parametrize(
    ("facts", "from_step", "changed", "expected"),
    [
        # Plain resume: completed steps reused without fingerprinting; then the rest runs.
        (
            [("plan", DONE, "x"), ("write", StepStatus.FAILED, None)],
            None,
            False,
            ["reuse", "rerun", "run", "run", "run"],
        ),
        # --from: that step and everything after it.
        (
            [(s, DONE, f"fp-{s}") for s in ("plan", "write", "test")],
            "write",
            False,
            ["reuse", "rerun", "rerun", "run", "run"],
        ),
        # A changed pipeline: the first changed fingerprint and all after it re-run.
        (
            [("plan", DONE, "fp-plan"), ("write", DONE, "old"), ("test", DONE, "fp-test")],
            None,
            True,
            ["reuse", "rerun", "rerun", "run", "run"],
        ),
    ],
)
def test_plan_resume(
    pipe: Pipeline,
    facts: list[tuple[str, str, str | None]],
    from_step: str | None,
    changed: bool,
    expected: list[str],
) -> None:
    current = {s: fact(i, s, st, fingerprint=fp) for i, (s, st, fp) in enumerate(facts, 1)}
    items = plans.plan_resume(pipe, current, from_step, changed, _fp)
    assert [i.action for i in items] == expected


def test_restart_index(pipe: Pipeline) -> None:
    done = [fact(i, s) for i, s in enumerate(("plan", "write", "test"), 1)]
    rerun_plan = plans.plan_resume(pipe, {a.step_id: a for a in done}, "write", False, _fp)
    assert plans.restart_index(done, rerun_plan, pipe) == 1
    # A failed last attempt is recovered in place: no restart.
    failed = [*done[:2], fact(3, "test", StepStatus.FAILED)]
    plan = plans.plan_resume(pipe, {a.step_id: a for a in failed}, None, False, _fp)
    assert plans.restart_index(failed, plan, pipe) is None
    # A dropped step with live attempts forces one (at the first step that runs).
    dropped = [*done, fact(4, "gone")]
    plan = plans.plan_resume(pipe, {a.step_id: a for a in done}, None, False, _fp)
    assert plans.restart_index(dropped, plan, pipe) == 3


def test_plan_fork(pipe: Pipeline) -> None:
    parent = {s: fact(i, s, fingerprint=f"fp-{s}") for i, s in enumerate(("plan", "write"), 1)}
    items = plans.plan_fork(pipe, parent, "test", _fp)
    assert [i.action for i in items] == ["reuse", "reuse", "run", "run", "run"]
    parent["write"] = fact(2, "write", fingerprint="other")
    assert plans.plan_fork(pipe, parent, "test", _fp)[1].reason == (
        "write's inputs differ from the parent's"
    )


def test_rollback_order(pipe: Pipeline) -> None:
    steps = {s.id: s for s in pipe.steps}
    attempts = [
        fact(1, "plan"),
        fact(2, "write"),
        fact(3, "test", StepStatus.COMPENSATED),  # undone already
        fact(4, "test", attempt=2),
        fact(5, "deploy"),
        fact(6, "notify"),
    ]
    order = plans.rollback_order(attempts, set(), steps, force=False)
    # Newest first; stops before the irreversible deploy.
    assert [(i.attempt.label, i.action) for i in order] == [
        ("notify#1", "skip"),
        ("deploy#1", "stop"),
    ]
    assert order[-1].left == ("deploy#1", "test#2", "write#1", "plan#1")
    order = plans.rollback_order(attempts, {6}, steps, force=True)
    assert [(i.attempt.label, i.action) for i in order] == [
        ("deploy#1", "compensate"),
        ("test#2", "skip"),
        ("write#1", "compensate"),
        ("plan#1", "skip"),
    ]
    # A fork's copies of its parent's checkpoints are the parent's to undo.
    forked = [fact(1, "plan", reused_from=9), fact(2, "write", reused_from=10)]
    assert plans.rollback_order(forked, set(), steps, force=False) == []


def test_restart_and_recovery_targets() -> None:
    attempts = [
        fact(1, "plan"),
        fact(2, "write"),
        fact(3, "test", StepStatus.COMPENSATED),
        fact(4, "test", StepStatus.FAILED),
        fact(5, "old", superseded=True),
    ]
    undo, affected = plans.restart_targets(attempts, {"plan"}, {2})
    assert [a.id for a in undo] == [4] and affected == ["old", "test", "write"]
    current = {"test": attempts[3], "plan": attempts[0]}
    assert plans.recovery_target(current, "test", set()) == attempts[3]
    assert plans.recovery_target(current, "test", {4}) is None
    assert plans.recovery_target(current, "plan", set()) is None
    # An interrupted attempt's side effects may remain: it is recovered, rolled back and
    # undone at a restart like a failed one.
    stopped = fact(6, "test", StepStatus.INTERRUPTED, attempt=3)
    assert stopped.live and not stopped.done
    assert plans.recovery_target({"test": stopped}, "test", set()) == stopped
    undo, _ = plans.restart_targets([*attempts[:3], stopped], {"plan"}, {2})
    assert [a.id for a in undo] == [6]


def test_believed_tip_replays_commits_and_resets(pipe: Pipeline) -> None:
    steps = {s.id: s for s in pipe.steps}
    attempts = [
        fact(1, "write", started_at="t1", commit="c1", base_commit="c0", snapshot="s"),
        fact(2, "write", started_at="t3", commit="c2", base_commit="c0", snapshot="s", attempt=2),
    ]
    assert plans.believed_tip("c0", attempts, [], steps) == "c2"
    # The first write was reset (at t2) before the second ran.
    assert plans.believed_tip("c0", attempts, [("t2", 1)], steps) == "c2"
    assert plans.believed_tip("c0", attempts, [("t2", 1), ("t4", 2)], steps) == "c0"


def test_facts_are_immutable() -> None:
    f = fact(1, "plan")
    with pytest.raises(AttributeError):
        f.status = "failed"  # type: ignore[misc]
    v = view(f)
    assert v.with_attempt(fact(2, "write")).current.keys() == {"plan", "write"}
    assert v.current.keys() == {"plan"}


# --- the core performs no I/O --------------------------------------------------------------

CORE = Path(__file__).resolve().parents[1] / "agentsaga" / "saga"
FORBIDDEN_MODULES = (
    "agentsaga.store",
    "agentsaga.gitops",
    "agentsaga.providers",
    "agentsaga.process",
    "agentsaga.workspace",
    "agentsaga.llm",
    "agentsaga.lease",
    "agentsaga.engine",
    "git",
    "subprocess",
    "anthropic",
    "openai",
)
#: Sources of non-determinism the core must take as arguments.
FORBIDDEN_IMPORTS = {"os", "random", "time", "datetime", "uuid", "subprocess", "secrets"}


def test_core_imports_nothing_that_performs_io() -> None:
    """In a fresh interpreter: importing the core loads none of the I/O modules."""
    code = (
        "import sys, json; import agentsaga.saga, agentsaga.saga.decide, "
        "agentsaga.saga.plans, agentsaga.saga.view; print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    bad = sorted(
        m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN_MODULES)
    )
    assert bad == []


def test_core_sources_import_no_clock_random_or_environment() -> None:
    for path in sorted(CORE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN_IMPORTS, f"{path.name}: {name}"
                assert not any(name.startswith(f) for f in FORBIDDEN_MODULES), path.name
