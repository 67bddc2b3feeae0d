"""The coding pipeline on repositories as users have them: a signing git config, test
output the model must understand, retries that must not pay for a deterministic failure.

Each fixture reproduces offline a case met on real public projects: real git, real pytest
in a subprocess, the scripted provider playing the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentsaga import testfailures
from agentsaga.store import open_store
from tests.conftest import Result, cli
from tests.gitstate import git, make_repo

FIX_CALC = """\
src/calc.py
<<<<<<< SEARCH
    return a - b
=======
    return a + b
>>>>>>> REPLACE
"""


def run_pipeline(repo: Path, text: str, *args: str) -> tuple[Result, dict[str, Any]]:
    (repo / "p.yml").write_text(text)
    result = cli("run", "p.yml", "--json", *args)
    try:
        data: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        raise AssertionError(repr(result)) from None
    return result, data


def store_path() -> str:
    return os.environ["AGENTSAGA_STORE"]  # conftest points it at the test's tmp_path


def attempts(repo: Path, run_id: str, step: str | None = None) -> list[Any]:
    store = open_store(store_path())
    try:
        return [a for a in store.attempts(run_id) if step is None or a.step_id == step]
    finally:
        store.close()


def newest_run() -> Any:
    store = open_store(store_path())
    try:
        return store.list_runs()[0]
    finally:
        store.close()


def show_doc(run_id: str) -> dict[str, Any]:
    result = cli("show", run_id, "--json")
    assert result.exit_code == 0, result
    doc: dict[str, Any] = result.json()
    return doc


def shown_text(run_id: str) -> str:
    """``show RUN`` as a person reads it, line wrapping undone."""
    return " ".join(cli("show", run_id).stdout.split())


def write_step(*replies: str) -> str:
    body = "".join(f"      - {json.dumps(r)}\n" for r in replies)
    return (
        "  - id: write\n    kind: write\n"
        '    prompt: "fix it ${{ rewind.error }}"\n'
        "    replies:\n" + body
    )


# --- commit signing ----------------------------------------------------------------------


def test_run_commits_need_no_signing_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path, {"src/calc.py": "def add(a, b):\n    return a - b\n"})
    # The user signs every commit; the signing program is absent here (it fails), as on a
    # machine where the key lives on a hardware token that is not plugged in.
    git(repo, "config", "commit.gpgsign", "true")
    git(repo, "config", "gpg.program", str(tmp_path / "no-such-gpg"))
    with pytest.raises(AssertionError, match="gpg failed to sign"):
        git(repo, "commit", "--allow-empty", "-m", "proves the config bites")
    monkeypatch.chdir(repo)
    text = (
        "name: sign\ndefaults: {provider: scripted, model: m}\nsteps:\n"
        + write_step(FIX_CALC)
        + "  - id: note\n    kind: shell\n    run: echo done > note.txt\n    commit: true\n"
    )
    result, data = run_pipeline(repo, text)
    assert data["status"] == "succeeded", result
    branch = f"agentsaga/{data['run_id']}"
    assert "return a + b" in git(repo, "show", f"{branch}:src/calc.py")
    assert git(repo, "show", f"{branch}:note.txt").strip() == "done"
    rolled = cli("rollback", data["run_id"], "--json")
    assert rolled.exit_code == 0, rolled
    assert git(repo, "branch", "--list", branch).strip() == ""


# --- failure context ---------------------------------------------------------------------

MANY_PASSING = "".join(f"def test_ok_{i}():\n    assert {i} == {i}\n\n" for i in range(150))
ONE_FAILING = """\
from calc import add


def test_add():
    total = add(2, 3)
    assert total == 5, f"add(2, 3) gave {total}"
"""


def calc_repo(tmp_path: Path) -> Path:
    return make_repo(
        tmp_path,
        {
            "src/calc.py": "def add(a, b):\n    return a - b\n",
            "tests/test_many.py": MANY_PASSING,
            "tests/test_calc.py": ONE_FAILING,
            "tests/conftest.py": "import sys\nsys.path.insert(0, 'src')\n",
        },
    )


def pytest_output(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["python", "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=repo,
        capture_output=True,
        text=True,
    )


def test_rA_output_with_150_passes_reaches_the_model_as_the_one_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = calc_repo(tmp_path)
    monkeypatch.chdir(repo)
    text = (
        "name: fix\ndefaults: {provider: scripted, model: m}\nsteps:\n"
        + write_step("no edit needed?\n", FIX_CALC)
        + "  - id: test\n    kind: test\n    run: python -m pytest -rA -p no:cacheprovider\n"
        "    on_failure: {rewind_to: write, max_rewinds: 1}\n"
    )
    # The first write leaves the bug (it only edits a comment); the second fixes it.
    (repo / "src" / "calc.py").write_text("# calc\ndef add(a, b):\n    return a - b\n")
    git(repo, "commit", "-qam", "comment")
    first = "src/calc.py\n<<<<<<< SEARCH\n# calc\n=======\n# calc module\n>>>>>>> REPLACE\n"
    text = text.replace(json.dumps("no edit needed?\n"), json.dumps(first))
    result, data = run_pipeline(repo, text)
    assert data["status"] == "succeeded", result

    failed = [a for a in attempts(repo, data["run_id"], "test") if a.error]
    assert len(failed) == 1
    message = failed[0].error["message"]
    # Name, location, the failing line and the assertion's message, and none of the 150
    # PASSED lines that fill the output's tail.
    # Named as pytest names it (JUnit's dotted spelling translated), with where it failed.
    assert "FAILED tests/test_calc.py::test_add at tests/test_calc.py:6" in message
    assert "assert total == 5" in message
    assert "add(2, 3) gave -1" in message
    assert "PASSED" not in message and "test_ok_" not in message
    assert failed[0].output["failures_from"] == "junit"
    # The rewound write saw it in ${{ rewind.error }}.
    store = open_store(store_path())
    try:
        prompts = [c.request for c in store.llm_calls(data["run_id"])]
    finally:
        store.close()
    assert len(prompts) == 2
    assert "add(2, 3) gave -1" in json.dumps(prompts[1])


def test_failures_from_pytest_output_alone_without_junit(tmp_path: Path) -> None:
    repo = calc_repo(tmp_path)
    proc = pytest_output(repo, "-rA", "-p", "no:junitxml")
    assert "PASSED tests/test_many.py::test_ok_149" in proc.stdout  # the tail is passes
    # The old 1,500-character tail has the summary line, but not the failing line or where.
    assert "assert total == 5" not in proc.stdout[-1500:]
    assert "tests/test_calc.py:6" not in proc.stdout[-1500:]
    failures, source = testfailures.extract(proc.stdout)
    assert source == "pytest"
    assert [f.name for f in failures] == ["tests/test_calc.py::test_add"]
    (failure,) = failures
    assert failure.location == "tests/test_calc.py:6"
    assert failure.assertion == 'assert total == 5, f"add(2, 3) gave {total}"'
    assert failure.message is not None and "add(2, 3) gave -1" in failure.message


def test_failure_context_stays_within_its_token_budget(tmp_path: Path) -> None:
    failing = "".join(
        f"def test_bad_{i}():\n    assert {i} == -1, 'x' * 400\n\n" for i in range(40)
    )
    repo = make_repo(tmp_path, {"tests/test_bad.py": failing})
    proc = pytest_output(repo, "-q")
    failures, _ = testfailures.extract(proc.stdout)
    assert len(failures) == 40
    text = testfailures.render(failures, proc.stdout, budget_tokens=600)
    from agentsaga import tokens

    assert tokens.count(text) <= 700
    assert "more failing tests not shown" in text
    assert "tests/test_bad.py::test_bad_0" in text


def test_unittest_failures_are_named_with_their_location(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path,
        {
            "test_u.py": "import unittest\n\n\nclass T(unittest.TestCase):\n"
            "    def test_eq(self):\n        self.assertEqual(1 + 1, 3, 'sum is off')\n"
        },
    )
    proc = subprocess.run(
        ["python", "-m", "unittest", "-v"], cwd=repo, capture_output=True, text=True
    )
    failures, source = testfailures.extract(proc.stdout + proc.stderr)
    assert source == "unittest"
    (failure,) = failures
    assert failure.name == "test_u.T.test_eq"
    assert failure.location is not None and failure.location.endswith("test_u.py:6")
    assert failure.message is not None and "sum is off" in failure.message


# --- retries -------------------------------------------------------------------------------


def test_retry_on_a_test_step_skips_assertion_failures_and_retries_infrastructure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = calc_repo(tmp_path)
    monkeypatch.chdir(repo)
    text = (
        "name: retry\nworkspace: {isolation: none}\nsteps:\n"
        "  - id: test\n    kind: test\n    run: python -m pytest -q -p no:cacheprovider\n"
        "    retry: {attempts: 3, backoff: 0s}\n"
    )
    _, data = run_pipeline(repo, text)
    assert data["status"] == "failed"
    assert len(attempts(repo, data["run_id"], "test")) == 1  # deterministic: not retried

    # A runner that never starts (no test output at all) is infrastructure: retried.
    text = text.replace("python -m pytest -q -p no:cacheprovider", "exit 3")
    _, data = run_pipeline(repo, text)
    assert data["status"] == "failed"
    tries = attempts(repo, data["run_id"], "test")
    assert len(tries) == 3
    assert tries[-1].output["failure_class"] == "infrastructure"


# --- the user's venv and editable installs ------------------------------------------------

CALC_BUG = "def add(a, b):\n    return a - b\n"
FIX_PKG = FIX_CALC.replace("src/calc.py", "src/mypkg/calc.py")
TEST_PKG = "from mypkg.calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"


def make_venv(where: Path) -> Path:
    """A real venv (the system's site-packages visible, for pytest) with no pip in it."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(where)],
        check=True,
    )
    return where


def site_packages(venv: Path) -> Path:
    (found,) = venv.glob("lib/python*/site-packages")
    return found


def activate(monkeypatch: pytest.MonkeyPatch, venv: Path) -> None:
    monkeypatch.setenv("VIRTUAL_ENV", str(venv))
    monkeypatch.setenv("PATH", f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("PYTHONPATH", raising=False)


def fix_pipeline(test: str) -> str:
    return (
        "name: fix\ndefaults: {provider: scripted, model: m}\nsteps:\n"
        + write_step(FIX_PKG)
        + f"  - id: test\n    kind: test\n    run: {json.dumps(test)}\n"
    )


def test_src_layout_installed_editable_tests_the_worktree_not_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(
        tmp_path,
        {"src/mypkg/__init__.py": "", "src/mypkg/calc.py": CALC_BUG, "tests/test_c.py": TEST_PKG},
    )
    venv = make_venv(tmp_path / "venv")
    # What `pip install -e .` of a src layout leaves (setuptools >= 64): a path entry
    # naming the user's checkout.
    (site_packages(venv) / "__editable__.mypkg-0.1.pth").write_text(f"{repo / 'src'}\n")
    activate(monkeypatch, venv)
    monkeypatch.chdir(repo)
    # Without the redirection the worktree's tests import the checkout, still buggy.
    result, data = run_pipeline(repo, fix_pipeline("python -m pytest -q -p no:cacheprovider"))
    assert data["status"] == "succeeded", result
    assert (repo / "src" / "mypkg" / "calc.py").read_text() == CALC_BUG  # checkout untouched
    python = show_doc(data["run_id"])["python"]
    assert (python["venv"], python["venv_from"]) == (str(venv), "VIRTUAL_ENV")
    worktree = repo / ".agentsaga" / "worktrees" / data["run_id"]
    roots = [{"checkout": str(repo.resolve() / "src"), "worktree": str(worktree / "src")}]
    assert python["import_roots"] == roots
    assert "(from VIRTUAL_ENV)" in shown_text(data["run_id"])


FINDER = """\
import importlib.util
import sys

MAPPING = {"mypkg": MAPPED}


class _Finder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name in MAPPING:
            init = MAPPING[name] + "/__init__.py"
            return importlib.util.spec_from_file_location(
                name, init, submodule_search_locations=[MAPPING[name]]
            )
        return None


def install():
    sys.meta_path.append(_Finder)
"""


def test_flat_layout_with_an_editable_finder_and_a_dot_venv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(
        tmp_path,
        {
            ".gitignore": ".venv/\n",
            "src/mypkg/__init__.py": "",
            "src/mypkg/calc.py": CALC_BUG,
            # Run as a script: its own folder goes on sys.path, the project root does not.
            "tests/check.py": TEST_PKG + "\ntest_add()\nprint('1 passed, 0 failed')\n",
        },
    )
    # The venv lives in the project (.venv/, as uv and poetry make it) and is not active.
    venv = make_venv(repo / ".venv")
    site = site_packages(venv)
    # What setuptools leaves for layouts it cannot express as a path: a meta-path finder.
    (site / "__editable___mypkg_0_1_finder.py").write_text(
        FINDER.replace("MAPPED", repr(str(repo / "src" / "mypkg")))
    )
    (site / "__editable__.mypkg-0.1.pth").write_text(
        "import __editable___mypkg_0_1_finder; __editable___mypkg_0_1_finder.install()\n"
    )
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.chdir(repo)
    result, data = run_pipeline(repo, fix_pipeline("python tests/check.py"))
    assert data["status"] == "succeeded", result
    python = show_doc(data["run_id"])["python"]
    assert (python["venv"], python["venv_from"]) == (str(venv), ".venv")
    assert python["python"] == f"{venv}/bin/python"
    assert "(from .venv)" in shown_text(data["run_id"])


def test_tests_that_import_the_checkout_fail_as_infrastructure_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = "def add(a, b):\n    raise ValueError('not written yet')\n"
    repo = make_repo(
        tmp_path,
        {"src/mypkg/__init__.py": "", "src/mypkg/calc.py": broken, "tests/test_c.py": TEST_PKG},
    )
    # A conftest that names the checkout by absolute path: nothing agentsaga can redirect.
    (repo / "tests" / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(repo / 'src')!r})\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "conftest")
    monkeypatch.chdir(repo)
    fix = "src/mypkg/calc.py\n<<<<<<< SEARCH\n    raise ValueError('not written yet')\n"
    fix += "=======\n    return a + b\n>>>>>>> REPLACE\n"
    text = fix_pipeline("python -m pytest -q -p no:cacheprovider").replace(
        json.dumps(FIX_PKG), json.dumps(fix)
    )
    text += "    on_failure: {rewind_to: write, max_rewinds: 2, when: assertion}\n"
    result, data = run_pipeline(repo, text)
    assert data["status"] == "failed"
    (attempt,) = attempts(repo, data["run_id"], "test")
    assert attempt.error["kind"] == "infrastructure"
    message = attempt.error["message"]
    assert f"ran code from your checkout ({repo})" in message
    assert str(repo / "src" / "mypkg" / "calc.py") in message, message
    assert "PYTHONPATH" in message
    # No rewind was paid for: one write.
    assert len(attempts(repo, data["run_id"], "write")) == 1


# --- what a worktree lacks: ignored files, uncommitted changes, submodules -----------------

VERSIONED = {
    ".gitignore": "src/mypkg/_version.py\n.env\n",
    "src/mypkg/__init__.py": "from ._version import version\n",
    "src/mypkg/calc.py": CALC_BUG,
    "tests/conftest.py": "import sys\nsys.path.insert(0, 'src')\n",
    "tests/test_c.py": TEST_PKG + "\n\ndef test_version():\n    import mypkg\n\n"
    "    assert mypkg.version == '1.2.3'\n",
}
GENERATED = "version = '1.2.3'\n"


def versioned_repo(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path, VERSIONED)
    # Generated at install time (setuptools_scm, hatch-vcs), ignored by git: a fresh
    # worktree lacks it.
    (repo / "src" / "mypkg" / "_version.py").write_text(GENERATED)
    return repo


def test_gitignored_generated_module_is_copied_by_workspace_include(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = versioned_repo(tmp_path)
    (repo / "notes.txt").write_text("not ignored\n")
    monkeypatch.chdir(repo)
    test = "python -m pytest -q -p no:cacheprovider"
    _, bare = run_pipeline(repo, fix_pipeline(test))
    assert bare["status"] == "failed"  # the worktree has no _version.py
    (attempt,) = attempts(repo, bare["run_id"], "test")
    assert "_version" in attempt.error["message"]

    text = fix_pipeline(test).replace(
        "steps:\n", 'workspace: {include: ["src/**/_version.py", "notes.txt", "*.cfg"]}\nsteps:\n'
    )
    (repo / "p.yml").write_text(text)
    result = cli("run", "p.yml")
    assert result.exit_code == 0, result
    run_id = result.stdout.split()[1] if result.stdout.startswith("run ") else ""
    run_id = run_id or newest_run().id
    # Said, not silent: the glob that matched nothing, the file git would have committed.
    assert "'*.cfg' matched no file" in result.stderr
    assert "notes.txt is not ignored by git" in result.stderr
    assert show_doc(run_id)["setup"]["included"] == ["src/mypkg/_version.py"]
    assert "included: ['src/mypkg/_version.py']" in shown_text(run_id)
    worktree = repo / ".agentsaga" / "worktrees" / run_id
    assert (worktree / "src" / "mypkg" / "_version.py").read_text() == GENERATED
    assert not (worktree / "notes.txt").exists()
    # The run branch never carries the ignored file.
    assert "_version.py" not in git(repo, "ls-tree", "-r", "--name-only", f"agentsaga/{run_id}")
    assert cli("rollback", run_id).exit_code == 0
    assert not worktree.exists()


def test_workspace_setup_runs_once_in_the_new_worktree_and_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path, VERSIONED)  # no _version.py at all: setup generates it
    monkeypatch.chdir(repo)
    setup = "echo \"version = '1.2.3'\" > src/mypkg/_version.py && echo ran >> ../setup-count"
    text = fix_pipeline("python -m pytest -q -p no:cacheprovider").replace(
        "steps:\n", f"workspace: {{setup: {json.dumps(setup)}}}\nsteps:\n"
    )
    result, data = run_pipeline(repo, text)
    assert data["status"] == "succeeded", result
    worktrees = repo / ".agentsaga" / "worktrees"
    assert (worktrees / "setup-count").read_text() == "ran\n"
    assert show_doc(data["run_id"])["setup"]["setup"].startswith("exit 0 (log: ")
    assert "setup: exit 0" in shown_text(data["run_id"])

    failing = text.replace(json.dumps(setup), json.dumps("echo broken >&2; exit 3"))
    (repo / "p.yml").write_text(failing)
    result = cli("run", "p.yml")
    assert result.exit_code == 1 and "workspace.setup exited 3" in result.stderr, result
    newest = newest_run()
    assert newest.status == "failed"
    assert cli("rollback", newest.id).exit_code == 0
    assert not (worktrees / newest.id).exists()


def dirty_repo(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path, {"src/calc.py": CALC_BUG, "README.md": "hi\n"})
    # The user fixed the bug by hand and has not committed, and started a new file.
    (repo / "src" / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (repo / "src" / "new.py").write_text("X = 1\n")
    return repo


SHOW_FILES = "name: look\nsteps:\n  - id: look\n    kind: shell\n    run: cat src/calc.py; ls src\n"


def test_a_dirty_checkout_is_never_silent_and_the_run_starts_from_head_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = dirty_repo(tmp_path)
    monkeypatch.chdir(repo)
    (tmp_path / "p.yml").write_text(SHOW_FILES)
    result = cli("run", str(tmp_path / "p.yml"))
    assert result.exit_code == 0, result
    assert "uncommitted changes that this run does NOT see" in result.stderr
    assert " M src/calc.py" in result.stderr and "?? src/new.py" in result.stderr
    assert "--from-worktree" in result.stderr
    run_id = newest_run().id
    (look,) = attempts(repo, run_id, "look")
    assert "return a - b" in look.output["stdout"] and "new.py" not in look.output["stdout"]
    assert show_doc(run_id)["setup"]["start"] == {
        "from": "HEAD",
        "uncommitted": ["src/calc.py", "src/new.py"],
    }
    shown = cli("show", run_id).stdout
    assert "start: HEAD (uncommitted, left out: src/calc.py, src/new.py)" in shown, shown
    quiet = cli("run", str(tmp_path / "p.yml"), "--from-head")
    assert quiet.exit_code == 0 and "uncommitted" not in quiet.stderr


def test_from_worktree_starts_from_a_snapshot_of_the_uncommitted_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = dirty_repo(tmp_path)
    monkeypatch.chdir(repo)
    before = (git(repo, "status", "--porcelain"), git(repo, "stash", "list"))
    before_index = (repo / ".git" / "index").read_bytes()
    (tmp_path / "p.yml").write_text(SHOW_FILES)
    result = cli("run", str(tmp_path / "p.yml"), "--from-worktree", "--json")
    data = json.loads(result.stdout)
    assert data["status"] == "succeeded", result
    (look,) = attempts(repo, data["run_id"], "look")
    assert "return a + b" in look.output["stdout"] and "new.py" in look.output["stdout"]
    # The user's checkout, index and stash are as they were.
    assert (git(repo, "status", "--porcelain"), git(repo, "stash", "list")) == before
    assert (repo / ".git" / "index").read_bytes() == before_index
    start_ref = f"refs/agentsaga/{data['run_id']}/start"
    assert git(repo, "rev-parse", "--verify", "-q", start_ref, check=False).strip()
    assert cli("rollback", data["run_id"]).exit_code == 0
    assert not git(repo, "rev-parse", "--verify", "-q", start_ref, check=False).strip()
    both = cli("run", str(tmp_path / "p.yml"), "--from-worktree", "--from-head")
    assert both.exit_code == 2


def test_submodules_are_checked_out_in_the_worktree_without_touching_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = make_repo(tmp_path, {"data.txt": "from the submodule\n"}, name="sub")
    repo = make_repo(tmp_path, {"README.md": "hi\n"})
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "libs/sub")
    git(repo, "commit", "-qm", "submodule")
    config_before = (repo / ".git" / "config").read_text()
    monkeypatch.chdir(repo)
    (tmp_path / "p.yml").write_text(
        "name: sub\nsteps:\n  - id: look\n    kind: shell\n    run: cat libs/sub/data.txt\n"
    )
    result = cli("run", str(tmp_path / "p.yml"), "--json")
    data = json.loads(result.stdout)
    assert data["status"] == "succeeded", result
    (look,) = attempts(repo, data["run_id"], "look")
    assert look.output["stdout"] == "from the submodule\n"
    assert show_doc(data["run_id"])["setup"]["submodules"] == "initialised libs/sub"
    assert cli("rollback", data["run_id"]).exit_code == 0
    assert (repo / ".git" / "config").read_text() == config_before


def test_import_roots_skip_path_hook_markers_the_venv_and_agentsaga_state(tmp_path: Path) -> None:
    from agentsaga import pyenv

    repo, worktree = tmp_path / "repo", tmp_path / "repo" / ".agentsaga" / "worktrees" / "r"
    for folder in (repo / "src", repo / ".venv" / "lib", worktree):
        folder.mkdir(parents=True)
    probe = {
        "path": [
            "__editable__.mypkg-0.1.finder.__path_hook__",  # a marker, not a folder
            str(repo / "src"),
            str(repo / ".venv" / "lib"),
            str(worktree),
            str(repo / "missing"),
            "/usr/lib/python3.11",
        ],
        "mapped": [str(repo / "flatpkg")],
    }
    (repo / "flatpkg").mkdir()
    roots = pyenv.translate_roots(probe, repo, worktree, repo / ".venv")
    assert roots == [
        {"checkout": str(repo / "src"), "worktree": str(worktree / "src")},
        {"checkout": str(repo), "worktree": str(worktree)},
    ]


def test_an_import_error_in_a_file_the_run_edited_rewinds_like_an_assertion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = calc_repo(tmp_path)
    monkeypatch.chdir(repo)
    broken = "src/calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a +\n"
    broken += ">>>>>>> REPLACE\n"
    text = (
        "name: fix\ndefaults: {provider: scripted, model: m}\nsteps:\n"
        + write_step(broken, FIX_CALC)  # the rewind reset the broken edit first
        + "  - id: test\n    kind: test\n    run: python -m pytest -q -p no:cacheprovider\n"
        "    on_failure: {rewind_to: write, max_rewinds: 1, when: assertion}\n"
    )
    result, data = run_pipeline(repo, text)
    assert data["status"] == "succeeded", result
    (first, _) = attempts(repo, data["run_id"], "test")
    # pytest calls it a collection error (the machinery's, usually); but it is raised in
    # src/calc.py, which this run's write changed: the edit's fault, so the run rewinds.
    assert first.error["kind"] == "assertion"
    assert "raised in a file this run changed: src/calc.py" in first.error["message"]


def test_validate_explain_lists_the_workspace_setup_and_include(tmp_path: Path) -> None:
    p = tmp_path / "p.yml"
    p.write_text(
        "name: e\nworkspace: {include: ['.env'], setup: make generated}\n"
        "steps:\n  - id: s\n    kind: shell\n    run: 'true'\n"
    )
    result = cli("validate", "--offline", "--explain", str(p), "--json")
    assert result.exit_code == 0, result
    first = result.json()["steps"][0]
    assert first["step_id"] == "(workspace)" and first["runs"] == "make generated"
    assert "gitignored files matching .env" in first["writes"][0]
    # The text says the same (it raised KeyError: the entry named its step differently).
    text = cli("validate", "--offline", "--explain", str(p))
    assert text.exit_code == 0, text
    assert "- (workspace) (workspace)\n    runs: make generated\n" in text.stdout
