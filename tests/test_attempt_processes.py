"""A step's processes are found by its attempt's token (``process.stop_attempt_processes``).

The token is recorded in the attempt before anything runs and is in the environment of
every process the step starts; a takeover stops those processes and their process
groups. These tests start real process trees, some of which leave the command's group
or clear their environment, and check what is stopped and what is left alone. Also: a
program that comes and goes on the PATH between two commands is found, or reported
missing, as it is at each command's start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentsaga import process
from tests.conftest import process_running, wait_until


def _tool(folder: Path, name: str, marker: Path) -> Path:
    tool = folder / name
    tool.write_text(f"#!/bin/sh\necho ran >> {marker}\n")
    tool.chmod(0o755)
    return tool


def test_a_program_that_comes_and_goes_between_commands(tmp_path: Path) -> None:
    bin_dir, marker = tmp_path / "bin", tmp_path / "ran.txt"
    bin_dir.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def run(stem: str) -> process.CommandResult:
        return process.run_command(
            ["agentsaga-test-tool"], cwd=tmp_path, env=env, log_stem=tmp_path / "logs" / stem
        )

    missing = run("a")
    assert missing.exit_code == 127 and "command not found" in missing.stderr_tail
    tool = _tool(bin_dir, "agentsaga-test-tool", marker)
    assert run("b").exit_code == 0  # installed since: found
    tool.unlink()
    gone = run("d")
    assert gone.exit_code == 127 and "command not found" in gone.stderr_tail
    _tool(bin_dir, "agentsaga-test-tool", marker)
    assert run("e").exit_code == 0
    assert marker.read_text().splitlines() == ["ran", "ran"]


def test_a_command_sees_its_program_name_and_its_token(tmp_path: Path) -> None:
    """The program is started by its path, and still sees the name it was given; the
    token is not masked as a secret (its variable is named like one)."""
    env = process.with_token({**os.environ}, "t0k3n-123456")
    result = process.run_command(
        ["sh", "-c", 'echo "$0 $AGENTSAGA_ATTEMPT_TOKEN"'],
        cwd=tmp_path,
        env=env,
        log_stem=tmp_path / "logs" / "x",
    )
    assert result.exit_code == 0 and result.stdout_tail.strip() == "sh t0k3n-123456"


@pytest.fixture
def trees() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _tree(
    trees: list[subprocess.Popen[bytes]], folder: Path, tokens: str | None, script: str
) -> subprocess.Popen[bytes]:
    """A command as a step starts it: its own session, the tokens in its environment."""
    env = {k: v for k, v in os.environ.items() if k != process.TOKEN_VAR}
    if tokens is not None:
        env[process.TOKEN_VAR] = tokens
    proc = subprocess.Popen(["sh", "-c", script], cwd=folder, env=env, start_new_session=True)
    trees.append(proc)
    return proc


def _pids(folder: Path, *names: str) -> dict[str, int]:
    wait_until(lambda: all((folder / n).exists() and (folder / n).read_text() for n in names))
    return {n: int((folder / n).read_text()) for n in names}


def test_the_takeover_stops_every_process_carrying_the_token(
    tmp_path: Path, trees: list[subprocess.Popen[bytes]]
) -> None:
    """The command; a child that left for a session of its own (setsid); a child that
    cleared its environment but stayed in the command's group. Another attempt's command
    and a process without a token are left alone."""
    token, record = process.attempt_token()
    ours = tmp_path / "ours"
    ours.mkdir()
    _tree(
        trees,
        ours,
        f"outer {token}",
        "setsid sh -c 'echo $$ > escaped; exec sleep 600' & "
        "env -i sh -c 'echo $$ > cleared; exec sleep 600' & "
        "echo $$ > command; wait",
    )
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    _tree(trees, theirs, "someone-else", "echo $$ > command; exec sleep 600")
    _tree(trees, theirs, None, "echo $$ > untagged; exec sleep 600")
    mine = _pids(ours, "escaped", "cleared", "command")
    others = _pids(theirs, "command", "untagged")
    assert os.getpgid(mine["cleared"]) == mine["command"] != os.getpgid(mine["escaped"])

    groups = process.stop_attempt_processes(record)

    assert groups == sorted({mine["command"], mine["escaped"]})
    assert [name for name, pid in mine.items() if process_running(pid)] == []
    assert all(process_running(pid) for pid in others.values())
    assert process.stop_attempt_processes(record) == []  # nothing left the second time


def test_a_nested_run_carries_the_outer_token(tmp_path: Path) -> None:
    """An agentsaga run inside a step: its commands carry both tokens, so stopping the
    outer step stops them too."""
    env = process.with_token({"PATH": "/usr/bin"}, "outer")
    process.with_token(env, "inner")
    assert env[process.TOKEN_VAR] == "outer inner"


def test_a_record_from_another_host_or_without_processes_stops_nothing(
    tmp_path: Path, trees: list[subprocess.Popen[bytes]]
) -> None:
    token, record = process.attempt_token()
    _tree(trees, tmp_path, token, "echo $$ > command; exec sleep 600")
    pid = _pids(tmp_path, "command")["command"]
    assert process.stop_attempt_processes({**record, "host": "elsewhere"}) == []
    assert process_running(pid)
    assert process.stop_attempt_processes(process.attempt_token()[1]) == []
    assert process_running(pid)


def test_a_record_from_before_tokens_stops_its_process_group(
    tmp_path: Path, trees: list[subprocess.Popen[bytes]]
) -> None:
    """A run started by an older agentsaga recorded the command's process group."""
    proc = _tree(trees, tmp_path, None, "sleep 600 & echo $$ > command; wait")
    pid = _pids(tmp_path, "command")["command"]
    start = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    record = {"pgid": pid, "start": start, "host": socket.gethostname()}
    assert process.stop_attempt_processes({**record, "start": start + 1}) == []  # pid reused
    assert process.stop_attempt_processes(record) == [pid]
    assert proc.wait(timeout=30) != 0


def test_a_relative_path_entry_is_a_folder_of_the_commands_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PATH=bin: the program is the workspace's bin/tool, as execvp would find it from
    the command's working directory, whatever agentsaga's own directory holds."""
    workspace, elsewhere = tmp_path / "ws", tmp_path / "elsewhere"
    (workspace / "bin").mkdir(parents=True)
    tool = workspace / "bin" / "agentsaga-rel-tool"
    tool.write_text("#!/bin/sh\necho workspace\n")
    tool.chmod(0o755)
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # agentsaga's own directory: no bin/ there
    env = {**os.environ, "PATH": f"bin{os.pathsep}{os.environ.get('PATH', '')}"}

    def run(stem: str) -> process.CommandResult:
        return process.run_command(
            ["agentsaga-rel-tool"], cwd=workspace, env=env, log_stem=tmp_path / "logs" / stem
        )

    found = run("a")
    assert found.exit_code == 0 and found.stdout_tail == "workspace\n"
    tool.unlink()
    (elsewhere / "bin").mkdir()
    (elsewhere / "bin" / "agentsaga-rel-tool").write_text("#!/bin/sh\necho elsewhere\n")
    (elsewhere / "bin" / "agentsaga-rel-tool").chmod(0o755)
    gone = run("b")
    assert gone.exit_code == 127 and "command not found" in gone.stderr_tail
