"""A command's output with a secret in its environment: carried through the masking
writers by the thread that waits for the command (one poll on the pipes and the process,
no thread of its own), or, without a pidfd, by a pump thread. Either way: every byte
arrives masked, a grandchild holding the pipe open does not hold the step, and a chatty
command cannot keep a Ctrl-C from being seen."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentsaga import process
from agentsaga.errors import Interrupted

SECRET = "sk-test-0123456789abcdef"


@pytest.fixture(params=["pidfd", "thread"])
def waiting(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of waiting: the pidfd poll, and Popen's wait with a pump thread."""
    if request.param == "thread":
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    return str(request.param)


def _run(tmp_path: Path, script: str, **kw: Any) -> process.CommandResult:
    env = {**os.environ, "MY_API_KEY": SECRET}
    return process.run_command(
        ["sh", "-c", script], cwd=tmp_path, env=env, log_stem=tmp_path / "logs" / "x", **kw
    )


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()`` in a thread; a safety net against a hang, not a timing assertion."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "run_command did not return"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_a_megabyte_of_output_arrives_whole_and_masked(tmp_path: Path, waiting: str) -> None:
    script = (
        'i=0; while [ $i -lt 2000 ]; do printf "%0500d $MY_API_KEY\\n" $i; i=$((i+1)); done; '
        'printf "to stderr: %s" "$MY_API_KEY" >&2'
    )
    result = _run(tmp_path, script)
    assert result.exit_code == 0
    out = result.stdout_path.read_bytes()
    assert SECRET.encode() not in out and out.count(b" ***\n") == 2000
    assert len(out) == 2000 * (500 + len(" ***\n"))
    assert result.stderr_path.read_bytes() == b"to stderr: ***"
    assert SECRET not in result.stdout_tail and result.stdout_tail.endswith(" ***\n")


def test_a_background_grandchild_holding_the_pipe_does_not_hold_the_step(
    tmp_path: Path, waiting: str
) -> None:
    pidfile = tmp_path / "bg.pid"
    script = f'sleep 600 & echo $! > {pidfile}; echo "done $MY_API_KEY"'
    try:
        result = _within(60, lambda: _run(tmp_path, script))
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), 9)
    assert result.exit_code == 0 and result.stdout_tail == "done ***\n"


def test_a_chatty_command_is_still_stopped_by_a_cancel(tmp_path: Path, waiting: str) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Interrupted):
        _within(60, lambda: _run(tmp_path, 'exec yes "$MY_API_KEY"', cancel=cancel))
    assert SECRET.encode() not in (tmp_path / "logs" / "x.out").read_bytes()


def test_a_timeout_stops_a_silent_command(tmp_path: Path, waiting: str) -> None:
    result = _within(60, lambda: _run(tmp_path, "exec sleep 600", timeout_s=0.2))
    assert result.timed_out and result.exit_code is None


def test_a_log_file_exists_only_for_a_stream_that_had_output(tmp_path: Path, waiting: str) -> None:
    """Log files are created at their first byte (owner-only); a file an earlier command
    left at the path is removed, not shown as this command's output."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "x.err").write_text("stale output of another command\n")
    result = _run(tmp_path, "echo only-stdout")
    assert result.stdout_path.read_text() == "only-stdout\n"
    assert (result.stdout_path.stat().st_mode & 0o777) == 0o600
    assert not result.stderr_path.exists() and result.stderr_tail == ""
    quiet = _run(tmp_path, "true")
    assert not quiet.stdout_path.exists() and not quiet.stderr_path.exists()
    assert quiet.stdout_tail == quiet.stderr_tail == "" and quiet.stdout_json() is None
