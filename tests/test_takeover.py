"""Taking over a killed run (issue 10, item 3): its command may still be running.

Commands run in their own session, so SIGKILLing agentsaga leaves them running. The
attempt's token is recorded in the attempt before anything runs and is in the environment
of every process the step starts; whoever takes the run over (``resume`` or
``rollback``) stops those processes and their groups, and waits for them, before
compensating or re-running: the old command's effect can neither land after its undo nor
stack on the re-run.

Each test holds the old command at a file the test creates only after the takeover has
returned, so "the effect never happened" is a fact, not a race against a sleep.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Env, agentsaga_argv, cli, kill_group_from_pidfile, wait_until

pytestmark = pytest.mark.slow


def live_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def held_pipeline(env: Env) -> Path:
    """Attempt 1 records its group, then waits for ``release``; its effect comes after."""
    work = (
        'if [ "$AGENTSAGA_ATTEMPT" = 1 ]; then echo $$ > pgid; '
        "(sleep 600; echo child >> ledger) & "
        "while [ ! -f release ]; do sleep 0.02; done; fi; "
        'echo "effect-$AGENTSAGA_ATTEMPT" >> ledger'
    )
    return env.write(
        "p.yml",
        f"""
        name: held
        workspace: {{isolation: none}}
        steps:
          - id: work
            kind: deploy
            run: '{work}'
            compensate: {{run: 'echo "undo-$AGENTSAGA_IDEMPOTENCY_KEY" >> ledger'}}
        """,
    )


@pytest.mark.parametrize("takeover", ["rollback", "resume"])
def test_a_command_left_running_is_stopped_before_the_takeover_acts(
    env: Env, takeover: str
) -> None:
    path = held_pipeline(env)
    pgid_file = env.path / "pgid"
    proc = env.spawn("run", path)
    try:
        wait_until(lambda: pgid_file.exists() and pgid_file.read_text().strip() != "")
        pgid = int(pgid_file.read_text())
        wait_until(lambda: len(live_members(pgid)) >= 2, what="the command and its child")
        proc.signal(signal.SIGKILL)
        proc.wait()
        assert live_members(pgid), "the command should outlive agentsaga"
        rid = env.newest_run_id()

        result = cli(takeover, rid)
        assert result.exit_code == 0, result
        assert "stopped attempt 1's command" in result.output, result
        assert live_members(pgid) == [], "the takeover returned with the command still alive"
    finally:
        kill_group_from_pidfile(pgid_file)
    (env.path / "release").touch()
    undo = f"undo-{rid}:work:1"
    expected = [undo] if takeover == "rollback" else [undo, "effect-2"]
    assert env.ledger.lines() == expected


def test_a_kill_the_instant_the_command_started_leaves_it_to_the_takeover(env: Env) -> None:
    """agentsaga killed right after starting the command: the token was recorded before
    the start, so the takeover finds and stops the command, which never writes."""
    work = (
        'if [ "$AGENTSAGA_ATTEMPT" = 1 ]; then echo $$ > pgid; '
        "while [ ! -f release ]; do sleep 0.02; done; fi; "
        'echo "ran-$AGENTSAGA_ATTEMPT" >> ledger'
    )
    path = env.write(
        "p.yml",
        f"""
        name: started
        workspace: {{isolation: none}}
        steps:
          - {{id: work, kind: shell, run: '{work}'}}
        """,
    )
    pgid_file = env.path / "pgid"
    try:
        proc = subprocess.run(
            agentsaga_argv("run", path),
            env={**os.environ, "AGENTSAGA_FAULT": "command.started"},
            capture_output=True,
            check=False,
        )
        assert proc.returncode == -signal.SIGKILL
        rid = env.newest_run_id()
        (attempt,) = env.attempts(rid)
        assert attempt.process is not None and attempt.process["token"]
        wait_until(lambda: pgid_file.exists() and pgid_file.read_text().strip() != "")
        pgid = int(pgid_file.read_text())
        assert live_members(pgid), "the command should outlive agentsaga"
        result = cli("resume", rid)
        assert result.exit_code == 0, result
        assert "stopped attempt 1's command" in result.output, result
        assert live_members(pgid) == []
    finally:
        kill_group_from_pidfile(pgid_file)
    (env.path / "release").touch()
    assert env.ledger.lines() == ["ran-2"]
