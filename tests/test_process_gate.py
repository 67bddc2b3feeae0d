"""A gated command (``process.run_command`` with ``on_spawn``): its process group is
recorded before the program runs, and a program that comes and goes on the PATH between
two commands is found, or reported missing, as it is at each command's start."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from agentsaga import process


def _tool(folder: Path, name: str, marker: Path) -> Path:
    tool = folder / name
    tool.write_text(f"#!/bin/sh\necho ran >> {marker}\n")
    tool.chmod(0o755)
    return tool


def test_a_program_that_comes_and_goes_between_commands(tmp_path: Path) -> None:
    bin_dir, marker = tmp_path / "bin", tmp_path / "ran.txt"
    bin_dir.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    recorded: list[dict[str, Any]] = []

    def run(stem: str) -> process.CommandResult:
        return process.run_command(
            ["agentsaga-test-tool"],
            cwd=tmp_path,
            env=env,
            log_stem=tmp_path / "logs" / stem,
            on_spawn=recorded.append,
        )

    missing = run("a")
    assert missing.exit_code == 127 and "command not found" in missing.stderr_tail
    tool = _tool(bin_dir, "agentsaga-test-tool", marker)
    assert run("b").exit_code == 0  # installed since: found
    tool.unlink()
    gone = run("c")
    assert gone.exit_code == 127 and "command not found" in gone.stderr_tail
    _tool(bin_dir, "agentsaga-test-tool", marker)
    assert run("d").exit_code == 0
    assert marker.read_text().splitlines() == ["ran", "ran"]
    assert len(recorded) == 2  # a group is recorded only for a command that started


def test_the_group_is_recorded_before_the_program_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    seen: list[bool] = []

    def on_spawn(record: dict[str, Any]) -> None:
        # The program has not run yet: the gate holds it until this returns. Half a
        # second to show it otherwise (a gate that let it through would be seen here).
        deadline = time.monotonic() + 0.5
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        seen.append(marker.exists())
        assert record["pgid"] > 1 and record["start"] is not None

    result = process.run_command(
        ["sh", "-c", f"echo ran > {marker}"],
        cwd=tmp_path,
        env=dict(os.environ),
        log_stem=tmp_path / "logs" / "x",
        on_spawn=on_spawn,
    )
    assert result.exit_code == 0 and marker.exists() and seen == [False]
