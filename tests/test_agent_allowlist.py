"""The agent step's ``commands:`` allow-list: what it lets a model run.

A hostile model (replies served by the loopback server to the real anthropic client)
tries every spelling of an allowed program that is not the entry itself; none runs. An
entry that lets the model run anything (an interpreter, a shell, ``env``, ``find``...)
is legal, and ``validate`` warns at its file:line:col; ``--explain`` says it plainly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentsaga.allowlist import permits_anything, prefix_of
from agentsaga.store import open_store
from tests.conftest import Env, cli
from tests.llm_project import MODELS, Project, make_project
from tests.llm_server import FakeLLMServer

PY = sys.executable
PWNED = "import pathlib; pathlib.Path('pwned').write_text('x')"


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as s:
        yield s


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeLLMServer) -> Project:
    return make_project(tmp_path, monkeypatch, server, files={"a.txt": "a\n"})


def agent(commands: str, vars_: str = "") -> str:
    return f"""\
name: allow
{vars_}defaults: {{provider: anthropic, model: {MODELS["anthropic"]}}}
steps:
  - id: fix
    kind: agent
    prompt: "Do it."
    commands: {commands}
"""


def tool_results(project: Project, run_id: str) -> list[str]:
    """What each run_command call of the agent step answered, in order."""
    store = open_store(str(project.store_path))
    try:
        rows = [c for c in store.tool_calls(run_id, "fix") if c.tool == "run_command"]
        return [str((c.result or {}).get("content", c.result)) for c in rows]
    finally:
        store.close()


# --- matching: exact, element by element ---------------------------------------------------


def test_a_hostile_model_cannot_pass_for_an_allowed_program(
    project: Project, server: FakeLLMServer, tmp_path: Path
) -> None:
    """The entry is [PY, -m, pytest]. The model tries the same interpreter under other
    names and paths (a copy in the workspace, a symlink elsewhere, a versioned name, a
    case change, a shorter prefix, code instead of the module): each is refused, and the
    file the code would write never appears."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / os.path.basename(PY)).symlink_to(PY)
    attempts: list[list[str]] = [
        [PY, "-c", PWNED],  # the interpreter itself, with code instead of -m pytest
        [PY, "-m"],  # shorter than the entry
        [PY, "-m", "pytestx"],  # a longer word is not the same word
        [str(elsewhere / os.path.basename(PY)), "-m", "pytest", "-p", "x"],
        ["./" + os.path.basename(PY), "-m", "pytest"],
        [os.path.basename(PY), "-m", "pytest"],  # the bare name (found on PATH)
        [PY + "3.11", "-m", "pytest"],
        [PY.upper(), "-m", "pytest"],
        [" " + PY, "-m", "pytest"],
        ["env", PY, "-c", PWNED],
    ]
    for argv in attempts:
        server.tool_call("run_command", argv=argv)
    server.tool_call("run_command", argv=[PY, "-m", "pytest", "--version"])  # allowed
    server.tool_call("finish", summary="done")
    project.write("pipeline.yml", agent(f"[[{PY}, -m, pytest]]"))

    result = project.run("run", "pipeline.yml")

    assert result.exit_code == 0, result
    answers = tool_results(project, project.newest_run_id())
    assert len(answers) == len(attempts) + 1
    for argv, answer in zip(attempts, answers, strict=False):
        assert answer.startswith("refused:"), (argv, answer)
    assert "exit code 0" in answers[-1] and "pytest" in answers[-1]
    assert not (project.repo / "pwned").exists()
    assert not list(project.repo.glob(".agentsaga/worktrees/*/pwned"))


@pytest.mark.parametrize("commands", ['[""]', "[[]]", "[nothing]"])
def test_an_empty_entry_allows_nothing(
    project: Project, server: FakeLLMServer, commands: str
) -> None:
    """An empty prefix would be a prefix of every argv: it must allow nothing."""
    server.tool_call("run_command", argv=[PY, "-c", PWNED])
    server.tool_call("finish", summary="done")
    project.write("pipeline.yml", agent(commands, vars_='vars: {nothing: ""}\n'))

    result = project.run("run", "pipeline.yml")

    assert result.exit_code == 0, result
    [answer] = tool_results(project, project.newest_run_id())
    assert answer.startswith("refused:") and "(none)" in answer
    assert not list(project.repo.rglob("pwned"))


def test_a_var_entry_allows_its_value_split_as_a_shell_would() -> None:
    assert prefix_of("tests", {"tests": "python3 -m pytest -q 'a b'"}) == [
        "python3", "-m", "pytest", "-q", "a b"
    ]  # fmt: skip
    assert prefix_of(["git", "diff"], {}) == ["git", "diff"]
    assert prefix_of("tests", {}) == ["tests"]  # not a var: the command itself


# --- entries that allow anything -----------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        ["python"],
        ["python3"],
        ["/usr/bin/python3.11"],
        ["python3", "-u"],
        ["python", "-W", "ignore"],
        ["bash"],
        ["sh", "-e"],
        ["node"],
        ["perl"],
        ["ruby"],
        ["env"],
        ["env", "FOO=1"],
        ["env", "python3"],
        ["xargs"],
        ["find", "."],
        ["git"],
        ["git", "-c", "core.pager=cat"],
        ["git", "config"],
        ["make"],
        ["make", "test"],
        ["npx"],
        ["uv"],
        ["uv", "run"],
        ["uv", "run", "python"],
        ["npm"],
        ["npm", "exec"],
        ["timeout", "60"],
        ["timeout", "60", "bash"],
        ["docker", "run", "img"],
        ["awk"],
        ["sed"],
        ["go", "test"],
        ["cargo", "test"],
    ],
)
def test_entries_that_allow_any_command_are_named(entry: list[str]) -> None:
    assert permits_anything(entry) is not None, entry


@pytest.mark.parametrize(
    "entry",
    [
        ["python3", "-m", "pytest"],
        ["python", "-m", "pytest", "-q"],
        ["pytest"],
        ["git", "diff"],
        ["git", "status"],
        ["bash", "scripts/test.sh"],
        ["node", "test.js"],
        ["env", "FOO=1", "pytest"],
        ["uv", "run", "pytest"],
        ["npx", "jest"],
        ["npm", "test"],
        ["timeout", "60", "pytest"],
        ["ls"],
    ],
)
def test_entries_that_pin_the_program_are_not_flagged(entry: list[str]) -> None:
    assert permits_anything(entry) is None, entry


def test_validate_warns_at_each_entry_that_allows_anything(env: Env) -> None:
    path = env.write(
        "p.yml",
        """\
name: allow
vars:
  tests: python3 -m pytest -q
  shell: bash
steps:
  - id: fix
    kind: agent
    provider: scripted
    prompt: x
    commands:
      - tests
      - shell
      - [git, diff]
      - python3
      - [find, .]
""",
    )

    result = cli("validate", path, "--offline", "--json")

    assert result.exit_code == 0, result
    warnings = [w for w in result.json()["warnings"] if "commands entry" in w]
    assert len(warnings) == 3, warnings
    assert warnings[0].startswith(f"warning: {path}:12:9: commands entry 'bash' (var shell)")
    assert "bash -c SCRIPT runs any shell script" in warnings[0]
    assert warnings[1].startswith(f"warning: {path}:14:9: commands entry 'python3'")
    assert "python3 -c CODE runs any code" in warnings[1]
    assert warnings[2].startswith(f"warning: {path}:15:9: commands entry 'find .'")
    assert "-exec" in warnings[2]

    explained = cli("validate", "--explain", "--offline", path, "--json")
    assert explained.exit_code == 0, explained
    [step] = explained.json()["steps"]
    allows: list[Any] = step["allows"]
    assert allows[0] == "python3 -m pytest -q ...: only argv starting exactly with these words"
    assert allows[1].startswith("bash ...: ANY command (bash -c SCRIPT")
    assert allows[3].startswith("python3 ...: ANY command")
    assert "runs what the agent wrote" in allows[-1]
    text = cli("validate", "--explain", "--offline", path)
    assert "python3 ...: ANY command (python3 -c CODE runs any code)" in text.stdout
    assert "p.yml:14:9: commands entry 'python3'" in text.stderr
