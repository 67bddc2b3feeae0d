"""External agent CLIs as steps (``kind: external``): small scripts that print Claude Code's
``--output-format json`` result and Codex's ``exec --json`` lines stand in for the real
CLIs (neither is installed here). What they change is committed; what they report goes
into the ledger; a failure is undone by the default ``git: reset``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import gitstate
from tests.llm_project import Project, make_project
from tests.llm_server import FakeLLMServer

PY = sys.executable
FILES = {"calc.py": "def add(a, b):\n    return a - b\n"}

FAKE_CLAUDE = """\
import json, pathlib, sys
prompt = sys.argv[sys.argv.index("-p") + 1]
path = pathlib.Path("calc.py")
path.write_text(path.read_text().replace("a - b", "a + b"))
fail = "GIVE UP" in prompt
print(json.dumps({
    "type": "result", "subtype": "error_during_execution" if fail else "success",
    "is_error": fail, "result": "gave up" if fail else "Fixed add().", "num_turns": 7,
    "session_id": "sess-123", "total_cost_usd": 0.0421,
    "usage": {"input_tokens": 1200, "output_tokens": 340,
              "cache_creation_input_tokens": 5000, "cache_read_input_tokens": 20000},
}))
"""

FAKE_CODEX = """\
import json, pathlib
def emit(**event): print(json.dumps(event))
emit(type="thread.started", thread_id="thr-9")
emit(type="turn.started")
emit(type="item.completed", item={"id": "i1", "type": "agent_message", "text": "Looking."})
emit(type="turn.completed", usage={"input_tokens": 3000, "cached_input_tokens": 2000,
                                   "output_tokens": 150})
path = pathlib.Path("calc.py")
path.write_text(path.read_text().replace("a - b", "a + b"))
emit(type="turn.started")
emit(type="item.completed", item={"id": "i2", "type": "agent_message", "text": "Done: add."})
emit(type="turn.completed", usage={"input_tokens": 4000, "cached_input_tokens": 3500,
                                   "output_tokens": 80})
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    with FakeLLMServer() as server:
        yield make_project(tmp_path, monkeypatch, server, files=FILES)


def write_tool(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run(project: Project, step: str) -> tuple[int, str]:
    project.write("pipeline.yml", f"name: ext\nsteps:\n{step}")
    result = project.run("run", "pipeline.yml")
    return result.exit_code, project.newest_run_id()


def output(project: Project, run_id: str) -> dict[str, Any]:
    return dict(project.attempts(run_id)[-1].output or {})


def test_claude_code_result_goes_into_the_ledger_and_its_edit_is_committed(
    project: Project, tmp_path: Path
) -> None:
    tool = write_tool(tmp_path, "fake_claude.py", FAKE_CLAUDE)
    code, run_id = run(
        project,
        f"""\
  - id: claude
    kind: external
    run: [{PY}, {tool}, -p, "fix add", --output-format, json]
""",
    )
    assert code == 0, project.run("show", run_id)
    out = output(project, run_id)
    assert out["summary"] == "Fixed add()." and out["turns"] == 7
    assert out["session_id"] == "sess-123"
    assert out["changed"] == ["calc.py"]
    shown = gitstate.git(project.repo, "show", f"{out['commit']}:calc.py")
    assert "a + b" in shown
    calls = project.calls(run_id)
    assert len(calls) == 1 and calls[0].provider == "claude-code"
    usage = calls[0].usage
    assert (usage.input, usage.output, usage.cache_write, usage.cache_read) == (
        1200,
        340,
        5000,
        20000,
    )
    assert usage.cost_usd == pytest.approx(0.0421)
    report = project.report(run_id)
    assert report["usage"]["cache_read"] == 20000


def test_codex_turns_are_ledger_rows_with_cached_tokens_split_out(
    project: Project, tmp_path: Path
) -> None:
    tool = write_tool(tmp_path, "fake_codex.py", FAKE_CODEX)
    code, run_id = run(
        project,
        f"""\
  - id: codex
    kind: external
    format: codex
    model: gpt-4o
    run: [{PY}, {tool}, exec, --json, "fix add"]
""",
    )
    assert code == 0
    out = output(project, run_id)
    assert out["summary"] == "Done: add." and out["turns"] == 2
    assert out["session_id"] == "thr-9" and out["changed"] == ["calc.py"]
    calls = project.calls(run_id)
    assert [(c.usage.input, c.usage.cache_read, c.usage.output) for c in calls] == [
        (1000, 2000, 150),
        (500, 3500, 80),
    ]
    assert all(c.usage.cost_usd is not None and c.usage.cost_usd > 0 for c in calls)


def test_a_failed_cli_run_is_reset_and_its_usage_still_counted(
    project: Project, tmp_path: Path
) -> None:
    tool = write_tool(tmp_path, "fake_claude.py", FAKE_CLAUDE)
    code, run_id = run(
        project,
        f"""\
  - id: claude
    kind: external
    run: [{PY}, {tool}, -p, "GIVE UP", --output-format, json]
""",
    )
    assert code == 1
    attempt = project.attempts(run_id)[-1]
    assert attempt.error is not None and "gave up" in attempt.error["message"]
    assert attempt.status == "compensated"
    # Paid for, even though it failed.
    assert attempt.usage.total == 1200 + 340 + 5000 + 20000
    # The default git: reset undid its edit in the run's workspace.
    shown = json.loads(project.run("show", run_id, "--json").stdout)
    workspace = Path(shown["workspace"])
    assert workspace != project.repo and (workspace / "calc.py").is_file()
    assert (workspace / "calc.py").read_text() == FILES["calc.py"]


def test_an_unknown_cli_needs_a_format(project: Project, tmp_path: Path) -> None:
    code, run_id = run(
        project,
        """\
  - id: other
    kind: external
    run: [echo, hi]
""",
    )
    assert code == 1
    attempt = project.attempts(run_id)[-1]
    assert attempt.error is not None and "format: claude-code" in attempt.error["message"]


@pytest.mark.parametrize(
    ("example", "tool"),
    [("claude-code.yml", FAKE_CLAUDE), ("codex.yml", FAKE_CODEX)],
    ids=["claude-code", "codex"],
)
def test_the_example_pipelines_run_the_cli_found_on_path(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, example: str, tool: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    name = "claude" if example.startswith("claude") else "codex"
    fake = bin_dir / name
    fake.write_text(f"#!{PY}\n" + tool)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    examples = Path(__file__).resolve().parent.parent / "pipelines"
    project.write(
        "tests/test_calc.py",
        "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    )
    project.write("tests/__init__.py", "")
    gitstate.git(project.repo, "add", "-A")
    gitstate.git(project.repo, "commit", "-qm", "tests")
    result = project.run_json(
        "run", examples / example, "--var", f"test_command={PY} -m pytest -q -p no:cacheprovider"
    )
    assert result["status"] == "succeeded", result
    calls = project.calls(result["run_id"])
    assert calls and all(c.provider == name.replace("claude", "claude-code") for c in calls)


def test_a_spent_budget_keeps_the_next_cli_from_starting(project: Project, tmp_path: Path) -> None:
    tool = write_tool(tmp_path, "fake_claude.py", FAKE_CLAUDE)
    step = f"""\
  - id: STEP
    kind: external
    run: [{PY}, {tool}, -p, "fix add", --output-format, json]
"""
    project.write(
        "pipeline.yml",
        "name: ext\nbudget: {max_tokens: 20000}\nsteps:\n"
        + step.replace("STEP", "first")
        + step.replace("STEP", "second"),
    )
    result = project.run("run", "pipeline.yml")
    assert result.exit_code == 1, result
    run_id = project.newest_run_id()
    second = [a for a in project.attempts(run_id) if a.step_id == "second"][-1]
    assert second.error is not None and second.error["kind"] == "budget"
    assert "already spent" in second.error["message"]
    # The first ran (its usage, 26,540 tokens, crossed the budget); the second never did.
    assert [c.step_id for c in project.calls(run_id)] == ["first"]
