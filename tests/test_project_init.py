"""``agentsaga init`` on projects as they are laid out: it finds the layout, the test runner
and its command, the venv and the generated files, and writes a pipeline that runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import cli
from tests.gitstate import git, make_repo

CALC_BUG = "def add(a, b):\n    return a - b\n"


def init(repo: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict]:  # type: ignore[type-arg]
    monkeypatch.chdir(repo)
    result = cli("init")
    assert result.exit_code == 0, result
    pipeline = yaml.safe_load((repo / "pipelines" / "fix.yml").read_text())
    valid = cli("validate", "--offline", str(repo / "pipelines" / "fix.yml"))
    assert valid.exit_code == 0, valid
    return result.stdout, pipeline


def steps(pipeline: dict) -> dict:  # type: ignore[type-arg]
    return {s["id"]: s for s in pipeline["steps"]}


def test_src_layout_with_pytest_a_dot_venv_and_a_generated_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(
        tmp_path,
        {
            ".gitignore": ".venv/\nsrc/mypkg/_version.py\n",
            "pyproject.toml": "[tool.pytest.ini_options]\ntestpaths = ['tests']\n",
            "src/mypkg/__init__.py": "from ._version import version\n",
            "src/mypkg/calc.py": CALC_BUG,
            "tests/test_calc.py": "from mypkg.calc import add\n\n\ndef test_add():\n"
            "    assert add(2, 3) == 5\n",
        },
    )
    (repo / "src" / "mypkg" / "_version.py").write_text("version = '1.0'\n")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(repo / ".venv")], check=True)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    out, pipeline = init(repo, monkeypatch)
    assert "found: python project, src layout (mypkg)" in out
    assert "found: tests: pytest (python -m pytest -q)" in out
    assert "found: venv: .venv (from .venv)" in out
    found = steps(pipeline)
    assert found["read"]["files"] == ["src/**/*.py", "tests/**/*.py"]
    assert found["test"]["run"] == "python -m pytest -q"
    assert "retry" not in found["test"] and "retry" not in pipeline.get("defaults", {})
    assert pipeline["workspace"] == {"include": ["src/mypkg/_version.py"]}


def test_flat_layout_with_unittest_in_a_test_folder_runs_as_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(
        tmp_path,
        {
            "setup.py": "from setuptools import setup\nsetup(name='calc')\n",
            "calc/__init__.py": "",
            "calc/ops.py": CALC_BUG,
            "test/__init__.py": "",
            "test/test_ops.py": "import unittest\n\nfrom calc.ops import add\n\n\n"
            "class T(unittest.TestCase):\n    def test_add(self):\n"
            "        self.assertEqual(add(2, 3), 5)\n",
        },
    )
    out, pipeline = init(repo, monkeypatch)
    assert "flat layout (calc)" in out and "unittest" in out
    found = steps(pipeline)
    assert found["read"]["files"] == ["calc/**/*.py", "test/**/*.py"]
    assert found["test"]["run"] == "python -m unittest discover -s test -t . -v"
    assert "workspace" not in pipeline
    # The pipeline runs on the project as found (the scripted provider plays the model).
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "agentsaga init")
    found["plan"]["replies"] = ["Fix add in calc/ops.py."]
    found["write"]["replies"] = [
        "calc/ops.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n"
        ">>>>>>> REPLACE\n"
    ]
    pipeline["defaults"]["provider"] = "scripted"
    (tmp_path / "p.yml").write_text(yaml.safe_dump(pipeline))
    result = cli("run", str(tmp_path / "p.yml"), "--var", "task=Make test/ pass", "--json")
    try:
        data = json.loads(result.stdout)
    except ValueError:
        raise AssertionError(repr(result)) from None
    assert data["status"] == "succeeded", result


def test_plain_test_functions_without_a_pytest_config_are_run_with_pytest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pytest.ini, no conftest, but `def test_...` with bare asserts: unittest would
    find no test there (refusing a folder without __init__.py, or passing with none run)."""
    repo = make_repo(
        tmp_path,
        {
            "src/calc.py": CALC_BUG,
            "tests/test_calc.py": "from src.calc import add\n\n\ndef test_add():\n"
            "    assert add(1, 2) == 3\n",
        },
    )
    out, pipeline = init(repo, monkeypatch)
    assert "found: tests: pytest (python -m pytest -q)" in out
    assert steps(pipeline)["test"]["run"] == "python -m pytest -q"
    again = cli("init")
    assert again.exit_code == 2
    assert "fix.yml already exist; use --force to overwrite" in again.stderr, again
