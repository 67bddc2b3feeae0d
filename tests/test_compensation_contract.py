"""The compensation contract, proved by tests that fail when the engine skips it.

* A crashed attempt is compensated (output null) before its step re-runs: the ledger the
  commands write shows the undo between the two runs.
* Compensations are idempotent by contract: one killed after its effect and before its
  success was recorded runs again on the next rollback, with the same
  ``AGENTSAGA_IDEMPOTENCY_KEY``, so a guarded compensation undoes exactly once.
* A compensation killed before it ran runs on the next rollback; one recorded as
  succeeded never runs again.

Each kill is a real SIGKILL at a named fault point (``AGENTSAGA_FAULT``).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Env, agentsaga_argv, cli
from tests.pipelines_util import pipeline, step

pytestmark = pytest.mark.slow

#: Undo once per key: the way the README asks compensations to be written.
GUARDED = (
    'echo "comp $AGENTSAGA_IDEMPOTENCY_KEY" >> ledger; '
    'if ! grep -qx "$AGENTSAGA_IDEMPOTENCY_KEY" undone 2>/dev/null; then '
    'echo "undo $AGENTSAGA_IDEMPOTENCY_KEY" >> ledger; '
    'echo "$AGENTSAGA_IDEMPOTENCY_KEY" >> undone; fi'
)


def killed(env: Env, fault: str, *args: str | Path) -> None:
    proc = subprocess.run(
        agentsaga_argv(*args),
        env={**os.environ, "AGENTSAGA_FAULT": fault},
        capture_output=True,
        text=True,
        cwd=env.path,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)


def test_a_crashed_attempt_is_compensated_before_its_step_runs_again(env: Env) -> None:
    path = env.write(
        "p.yml",
        pipeline(
            step("a"),
            step("b", 'echo "b-$AGENTSAGA_ATTEMPT" >> ledger', undo=GUARDED),
            step("c"),
        ),
    )
    killed(env, "step.after_effect:2", "run", path)  # b's effect done, no checkpoint
    rid = env.newest_run_id()
    assert env.ledger.lines() == ["a", "b-1"]
    result = cli("resume", rid)
    assert result.exit_code == 0, result
    key = f"{rid}:b:1"
    assert env.ledger.lines() == ["a", "b-1", f"comp {key}", f"undo {key}", "b-2", "c"]


def test_a_compensation_killed_after_its_effect_runs_again_with_the_same_key(env: Env) -> None:
    path = env.write("p.yml", pipeline(step("a", undo=GUARDED), step("b", undo=GUARDED)))
    first = cli("run", path, "--json")
    assert first.exit_code == 0, first
    rid = first.json()["run_id"]
    killed(env, "comp.after_effect", "rollback", rid)  # b undone, not recorded
    assert env.ledger.lines() == ["a", "b", f"comp {rid}:b:1", f"undo {rid}:b:1"]
    again = cli("rollback", rid)
    assert again.exit_code == 0, again
    assert env.ledger.lines() == [
        "a",
        "b",
        f"comp {rid}:b:1",
        f"undo {rid}:b:1",
        f"comp {rid}:b:1",  # ran again: it could not be known to have happened, and,
        f"comp {rid}:a:1",  # guarded by the same key, undid nothing twice
        f"undo {rid}:a:1",
    ]
    assert env.run_status(rid) == "rolled_back"


def test_a_compensation_killed_before_it_ran_runs_and_a_recorded_one_never_again(
    env: Env,
) -> None:
    path = env.write("p.yml", pipeline(step("a"), step("b"), step("c")))
    first = cli("run", path, "--json")
    assert first.exit_code == 0, first
    rid = first.json()["run_id"]
    # c's compensation recorded as succeeded; b's recorded as started, killed before it ran.
    killed(env, "comp.before:2", "rollback", rid)
    assert env.ledger.lines() == ["a", "b", "c", "undo-c"]
    again = cli("rollback", rid)
    assert again.exit_code == 0, again
    assert env.ledger.lines() == ["a", "b", "c", "undo-c", "undo-b", "undo-a"]
