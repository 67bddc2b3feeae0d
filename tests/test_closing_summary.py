"""The closing summary of ``run``/``resume``/``fork`` is built from a lean document
(``documents.closing_document``: attempts read a page at a time, a finished step's
attempts left out) that must say exactly what the full run document says: the same
lines and the same next commands, whatever the run went through."""

from __future__ import annotations

import pytest

from agentsaga.cli_summary import summary_lines
from agentsaga.documents import closing_document, run_document
from agentsaga.report import step_ids, step_kinds, stored_steps
from tests.conftest import Env, cli
from tests.pipelines_util import chain, pipeline, step


def both(env: Env, rid: str, command: str = "run") -> tuple[list[str], list[str]]:
    store = env.store()
    try:
        full = run_document(store, rid, ["a note"])
        lean = closing_document(store, rid, ["a note"])
    finally:
        store.close()
    assert lean["next"] == full["next"]
    assert [s["step_id"] for s in lean["steps"]] == [s["step_id"] for s in full["steps"]]
    return summary_lines(full, command, full["next"]), summary_lines(lean, command, lean["next"])


@pytest.mark.parametrize(
    "text",
    [
        chain(3),  # succeeds
        chain(4, fail_at=3),  # fails, its failed attempt compensated
        pipeline(  # retries, then fails
            step("a"),
            step("b", "echo b >> ledger; false", extra="retry: {attempts: 2, backoff: 0s}"),
        ),
        pipeline(  # a rewind: superseded attempts, then a stop after the rewinds
            step("a"),
            step("t", "false", extra="on_failure: {rewind_to: a, max_rewinds: 1}"),
        ),
    ],
)
def test_the_lean_summary_says_what_the_run_document_says(env: Env, text: str) -> None:
    result = cli("run", env.write("p.yml", text), "--json")
    rid = result.json()["run_id"]
    full, lean = both(env, rid)
    assert lean == full
    assert full[0].startswith(f"run {rid} ")


def test_after_a_resume_with_a_dropped_step(env: Env) -> None:
    """A step only the attempts name (the changed pipeline dropped it) is still listed."""
    first = cli("run", env.write("p.yml", chain(3, fail_at=3)), "--json")
    rid = first.json()["run_id"]
    (env.path / "flag").touch()
    changed = env.write("q.yml", pipeline(step("s1"), step("s3"), name="chain3"))
    assert cli("resume", rid, "--pipeline", changed).exit_code == 0
    full, lean = both(env, rid, "resume")
    assert lean == full
    store = env.store()
    try:
        assert step_ids(store, rid) == ["s1", "s3", "s2"]
        assert step_kinds(store, rid) == {"s1": "shell", "s3": "shell"}
        assert [s["id"] for s in stored_steps(store, rid)] == ["s1", "s3"]
    finally:
        store.close()


def test_a_plain_run_prints_the_lean_summary(env: Env) -> None:
    result = cli("run", env.write("p.yml", chain(2, fail_at=2)))
    assert result.exit_code == 1
    assert "1 of 2 steps done; stopped at s2 (compensated)" in result.output
    assert "why: command exited with 1" in result.output
    assert "agentsaga resume" in result.output
