"""Where a step's command runs: its own process group always; its own session only when
agentsaga has a controlling terminal.

Each case runs ``process.run_command`` in a fresh Python process whose terminal state the
test sets: none (a session of its own, as under CI), or a pseudo-terminal it acquired as
its controlling terminal (as at a shell prompt). The command reports its session and
process group; at a terminal it also tries to read the terminal, which must fail at once
rather than stop the command (SIGTTIN) until its timeout.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from agentsaga import process

REPO = Path(__file__).resolve().parents[1]

#: The command: its pid, session and process group, then (at a terminal) a read of the
#: terminal, whose outcome is the exit code.
PROBE = textwrap.dedent(
    """
    import json, os, sys
    print(json.dumps({"pid": os.getpid(), "sid": os.getsid(0), "pgid": os.getpgid(0)}))
    sys.stdout.flush()
    if sys.argv[1:] == ["read-tty"]:
        with open("/dev/tty") as tty:
            tty.readline()
    """
)

#: The agentsaga side: acquire the terminal on fd 0 if asked, run the probe, report.
DRIVER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    if sys.argv[1] == "terminal":
        os.close(os.open(os.ttyname(0), os.O_RDWR))  # a session leader acquires it
    from agentsaga import process
    work = Path(sys.argv[2])
    argv = [sys.executable, str(work / "probe.py")]
    if sys.argv[1] == "terminal":
        argv.append("read-tty")
    result = process.run_command(
        argv, cwd=work, env=dict(os.environ), log_stem=work / "logs" / "probe", timeout_s=20
    )
    print(json.dumps({
        "own_session": process._own_session(),
        "sid": os.getsid(0),
        "exit_code": result.exit_code,
        "timed_out": result.timed_out,
        "probe": json.loads(result.stdout_path.read_text().splitlines()[0]),
    }))
    """
)


def _drive(tmp_path: Path, mode: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The driver's report, and the command's own (its pid, session and group)."""
    (tmp_path / "probe.py").write_text(PROBE)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    main, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-c", DRIVER, mode, str(tmp_path)],
            stdin=follower if mode == "terminal" else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            # A session of its own: no controlling terminal unless it acquires one.
            start_new_session=True,
            timeout=120,
        )
    finally:
        os.close(main)
        os.close(follower)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    # A timeout or Ctrl-C stops the whole group, either way.
    assert report["probe"]["pgid"] == report["probe"]["pid"]
    return report, report["probe"]


def test_without_a_terminal_a_command_has_its_own_process_group_in_our_session(
    tmp_path: Path,
) -> None:
    report, probe = _drive(tmp_path, "none")
    assert report["own_session"] is False
    assert probe["sid"] == report["sid"]  # no scheduler autogroup of its own
    assert report["exit_code"] == 0


def test_at_a_terminal_a_command_cannot_be_stopped_by_reading_the_terminal(
    tmp_path: Path,
) -> None:
    report, probe = _drive(tmp_path, "terminal")
    assert report["own_session"] is True
    assert probe["sid"] == probe["pid"]  # its own session: no controlling terminal
    # Opening /dev/tty failed at once (ENXIO). In the terminal's session the read would
    # stop the command (SIGTTIN) until the timeout.
    assert report["timed_out"] is False
    assert report["exit_code"] not in (0, None)


def test_the_answer_is_asked_once_per_process() -> None:
    process._own_session.cache_clear()
    first = process._own_session()
    assert process._own_session.cache_info().hits == 0
    assert process._own_session() is first
    assert process._own_session.cache_info().hits == 1
