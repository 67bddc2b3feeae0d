"""The offline demo as the README runs it, and the shipped pipelines: each one valid, and
the two real ones run against the loopback server playing their provider."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, agentsaga_argv, cli
from tests.llm_project import make_project
from tests.llm_server import FakeLLMServer

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as s:
        yield s


def readme_run(*args: str | Path, cwd: Path) -> Result:
    """The installed command in a child process, with the store where a user's would be
    (in the demo repository's .agentsaga/), not the test's."""
    env = {k: v for k, v in os.environ.items() if k != "AGENTSAGA_STORE"}
    proc = subprocess.run(
        agentsaga_argv(*args),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def attempts_by_step(report: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for step in report["steps"]:
        counts[step["step_id"]] = len(step["attempts"])
    return counts


def paid_attempts(report: dict[str, Any], step: str) -> int:
    rows = [a for s in report["steps"] if s["step_id"] == step for a in s["attempts"]]
    return sum(1 for row in rows if row["usage"]["total"])


@pytest.mark.slow
def test_demo_runs_as_the_readme_runs_it(tmp_path: Path) -> None:
    demo = readme_run("demo", "--dir", tmp_path / "demo", cwd=tmp_path)

    assert demo.exit_code == 0, demo
    repo = tmp_path / "demo" / "repo"
    assert f"demo repository: {repo}" in demo.stdout
    assert "succeeded" in demo.stdout
    tax = [line for line in demo.stdout.splitlines() if line.startswith("failed-run tax:")]
    assert len(tax) == 1 and "saga" in tax[0] and "from scratch" in tax[0], demo
    assert "agentsaga rollback " in demo.stdout
    (repo / ".agentsaga" / "state.db").stat()  # the store is where the README says

    run_id = demo.stdout.split("agentsaga show ", 1)[1].split()[0]
    shown = readme_run("report", run_id, "--json", cwd=repo)
    assert shown.exit_code == 0, shown
    report = shown.json()
    assert attempts_by_step(report) == {"plan": 1, "read": 1, "write": 2, "test": 2, "deploy": 1}
    # Plan paid once (the rewind reused its checkpoint), write paid twice.
    assert paid_attempts(report, "plan") == 1
    assert paid_attempts(report, "write") == 2
    assert report["saved_tokens"] > 0
    assert 0 < report["tax_saga"] < report["tax_restart"]
    # The deploy ran, with the fixed code.
    deployments = list((tmp_path / "demo" / "deployments").iterdir())
    assert deployments, "the deploy step left nothing behind"


def test_demo_json(tmp_path: Path) -> None:
    result = cli("demo", "--dir", tmp_path / "demo", "--json")

    assert result.exit_code == 0, result
    data = result.json()
    assert data["status"] == "succeeded"
    assert data["repo"] == str(tmp_path / "demo" / "repo")
    report = data["report"]
    assert attempts_by_step(report) == {"plan": 1, "read": 1, "write": 2, "test": 2, "deploy": 1}
    assert paid_attempts(report, "plan") == 1 and paid_attempts(report, "write") == 2
    assert report["spent_tokens"] == sum(
        a["usage"]["total"] for s in report["steps"] for a in s["attempts"]
    )
    assert report["tax_saga"] < report["tax_restart"]


@pytest.mark.parametrize("path", sorted(PIPELINES.glob("*.yml")), ids=lambda p: p.name)
def test_every_shipped_pipeline_is_valid(path: Path) -> None:
    result = cli("validate", "--offline", path)  # as CI does: no keys here

    assert result.exit_code == 0, result
    assert result.stdout.startswith(f"{path}: ok")


def test_the_real_pipelines_are_there() -> None:
    names = {p.name for p in PIPELINES.glob("*.yml")}
    assert {"demo.yml", "fix-failing-test.yml", "add-feature.yml"} <= names


# --- the real pipelines, with the loopback server playing the model ----------------------

CALC = "def multiply(a, b):\n    return a + b\n"
TESTS = "from src.calc import multiply\n\n\ndef test_multiply():\n    assert multiply(2, 3) == 6\n"
FIX = """\
src/calc.py
<<<<<<< SEARCH
def multiply(a, b):
    return a + b
=======
def multiply(a, b):
    return a * b
>>>>>>> REPLACE
"""
PLANS = {
    "anthropic": "1. Fix multiply() in src/calc.py.",
    "openai": json.dumps(
        {
            "summary": "fix multiply",
            "files": ["src/calc.py"],
            "tests": [],
            "steps": ["make multiply multiply"],
        }
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("pipeline", "api"), [("fix-failing-test.yml", "anthropic"), ("add-feature.yml", "openai")]
)
def test_real_pipeline_runs_against_the_loopback_server(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    server: FakeLLMServer,
    pipeline: str,
    api: str,
) -> None:
    project = make_project(
        tmp_path,
        monkeypatch,
        server,
        config="",
        files={
            "src/__init__.py": "",
            "src/calc.py": CALC,
            "tests/__init__.py": "",
            "tests/test_calc.py": TESTS,
            ".gitignore": "__pycache__/\n",
        },
    )
    server.reply(PLANS[api]).reply(FIX)
    task = "task=Make tests/test_calc.py pass" if api == "anthropic" else "feature=multiply"

    result = project.run_json(
        "run",
        PIPELINES / pipeline,
        "--var",
        task,
        "--var",
        "test_command=python -m pytest -q -p no:cacheprovider",
    )

    assert result["status"] == "succeeded", result
    assert [r.api for r in server.requests] == [api, api]
    assert "src/calc.py" in json.dumps(server.requests[1].body)
