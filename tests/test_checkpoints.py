"""The runner keeps each step's fact in memory and reads a checkpoint's record back from
the store when an expression, a compensation or a gate asks for it
(``agentsaga/checkpoints.py``): what a step reads is still what the step it names wrote,
however far back (past the few records kept at hand), after a resume in a new process,
and after a compensation changed an attempt."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentsaga.checkpoints import RECENT, CurrentAttempts, StepsNamespace
from agentsaga.saga.view import AttemptFact
from agentsaga.states import StepStatus
from agentsaga.store.sqlite import SqliteStore
from tests.conftest import Env, cli
from tests.pipelines_util import pipeline, step

FAR = RECENT + 6  # steps between the one written and the one reading it


def far_pipeline(fail_flag: str | None = None) -> str:
    """``first`` prints a word; ``FAR`` steps later, ``last`` writes what it read, and a
    compensation of ``last`` reads it too."""
    steps = [step("first", "echo hello-from-first", undo=False)]
    steps += [step(f"mid{i:02d}", "true", undo=False) for i in range(FAR)]
    check = f"test -f {fail_flag} && " if fail_flag else ""
    steps.append(
        step(
            "last",
            check + "echo got=${{ steps.first.output.stdout }} >> seen.txt",
            undo="echo undo=${{ steps.first.output.stdout }} >> seen.txt",
        )
    )
    return pipeline(*steps)


def test_a_step_reads_an_output_written_far_back(env: Env) -> None:
    result = cli("run", env.write("p.yml", far_pipeline()), "--json")
    assert result.exit_code == 0, result
    assert (env.path / "seen.txt").read_text().split() == ["got=hello-from-first"]


def test_a_step_reads_the_output_just_written_as_stored(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step right before is read as the store keeps it once it ended (not as it was
    when it started): its output, with a secret it echoed masked."""
    monkeypatch.setenv("DEMO_API_TOKEN", "s3cret-value-42")
    text = pipeline(
        step("first", "echo hello $DEMO_API_TOKEN", undo=False),
        step("second", "echo got=${{ steps.first.output.stdout }} >> seen.txt", undo=False),
    )
    result = cli("run", env.write("p.yml", text), "--json")
    assert result.exit_code == 0, result
    assert (env.path / "seen.txt").read_text().split() == ["got=hello", "***"]


def test_a_resume_and_a_rollback_read_it_from_the_store(env: Env) -> None:
    first = cli("run", env.write("p.yml", far_pipeline(fail_flag="flag")), "--json")
    assert first.exit_code == 1, first
    rid = first.json()["run_id"]
    (env.path / "flag").touch()
    # A new engine each time: no record of the first run is in its memory.
    assert cli("resume", rid).exit_code == 0
    assert cli("rollback", rid).exit_code == 0
    assert (env.path / "seen.txt").read_text().split() == [
        "undo=hello-from-first",  # the failed attempt, compensated at once
        "got=hello-from-first",
        "undo=hello-from-first",
    ]


def test_the_view_reads_records_back_and_follows_changes(tmp_path: Path) -> None:
    """The mapping itself: a record not at hand comes from the store; one the store
    changed is read again once dropped; the namespace builds only the steps named."""
    store = SqliteStore(tmp_path / "s.db")
    from agentsaga.store import RunRecord, new_run_id

    rid = new_run_id()
    store.create_run(
        RunRecord(
            id=rid,
            pipeline_name="t",
            pipeline_path="p.yml",
            pipeline_text="",
            pipeline_hash="h",
            vars={},
            status="running",
            state={},
        )
    )
    facts: dict[str, AttemptFact] = {}
    current = CurrentAttempts(store, facts)
    for i in range(RECENT * 2):
        a = store.start_attempt(rid, f"s{i}", i, fingerprint=None, base_commit=None, snapshot=None)
        store.finish_attempt(a.id, status=StepStatus.COMPLETED, output={"n": i})
        record = store.get_attempt(a.id)
        facts[record.step_id] = AttemptFact.of(record)
        current.keep(record)
    assert len(current) == RECENT * 2 and list(current)[0] == "s0"
    assert current["s0"].output == {"n": 0}  # long gone from the records at hand
    assert "s0" in current and "nope" not in current and current.get("nope") is None

    assert current["s1"].superseded is False  # read back, and now at hand
    store.supersede(rid, ["s1"])
    assert current["s1"].superseded is False  # at hand: the store is not asked again
    current.drop(current["s1"].id)
    assert current["s1"].superseded is True

    steps = StepsNamespace(current)
    assert steps["s3"]["output"] == {"n": 3} and steps["s3"] is steps["s3"]
    assert steps.get("nope") is None and len(steps) == RECENT * 2
    store.close()
