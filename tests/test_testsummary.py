"""summarize() on real pytest and unittest output, and verbatim jest and go test output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agentsaga.testsummary import TestSummary, summarize

CALC_BUGGY = "def add(a, b):\n    return a - b\n"
CALC_FIXED = "def add(a, b):\n    return a + b\n"

PYTEST_TESTS = """\
import pytest

from calc import add


def test_add():
    assert add(1, 2) == 3


def test_add_zero():
    assert add(0, 0) == 0


@pytest.mark.skip(reason="not yet")
def test_later():
    pass
"""

UNITTEST_TESTS = """\
import unittest

from calc import add


class CalcTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(add(1, 2), 3)

    def test_zero(self):
        self.assertEqual(add(0, 0), 0)

    def test_crash(self):
        raise RuntimeError("boom")

    @unittest.skip("not yet")
    def test_later(self):
        pass
"""


def project(root: Path, calc: str, tests: dict[str, str]) -> Path:
    (root / "calc.py").write_text(calc)
    for rel, text in tests.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def run(root: Path, *args: str) -> TestSummary:
    """Run ``python <args>`` in ``root`` for real and summarise what it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(root)
    done = subprocess.run(
        [sys.executable, *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return summarize(done.returncode, done.stdout, done.stderr)


# --------------------------------------------------------------------- real pytest


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["-q"], [], ["-v"]], ids=["quiet", "default", "verbose"])
def test_pytest_assertion_failure(tmp_path: Path, flags: list[str]) -> None:
    root = project(tmp_path, CALC_BUGGY, {"tests/test_calc.py": PYTEST_TESTS})
    summary = run(root, "-m", "pytest", "-p", "no:cacheprovider", *flags)
    assert summary.framework == "pytest"
    assert (summary.passed, summary.failed, summary.errors, summary.skipped) == (1, 1, 0, 1)
    assert summary.failing == ["tests/test_calc.py::test_add"]
    assert summary.failure_class == "assertion"
    assert summary.text == "pytest: 1 passed, 1 failed, 1 skipped: tests/test_calc.py::test_add"


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["-q"], []], ids=["quiet", "default"])
def test_pytest_passing(tmp_path: Path, flags: list[str]) -> None:
    root = project(tmp_path, CALC_FIXED, {"tests/test_calc.py": PYTEST_TESTS})
    summary = run(root, "-m", "pytest", "-p", "no:cacheprovider", *flags)
    assert summary.to_json() == {
        "framework": "pytest",
        "passed": 2,
        "failed": 0,
        "errors": 0,
        "skipped": 1,
        "failing": [],
        "failure_class": "none",
        "text": "pytest: 2 passed, 1 skipped",
    }


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["-q"], []], ids=["quiet", "default"])
def test_pytest_collection_import_error_is_infrastructure(tmp_path: Path, flags: list[str]) -> None:
    tests = {
        "tests/test_calc.py": PYTEST_TESTS,
        "tests/test_broken.py": "import no_such_module_xyz\n\n\ndef test_x():\n    pass\n",
    }
    root = project(tmp_path, CALC_FIXED, tests)
    summary = run(root, "-m", "pytest", "-p", "no:cacheprovider", *flags)
    assert summary.framework == "pytest"
    assert summary.errors == 1
    assert summary.failing == ["tests/test_broken.py"]
    assert summary.failure_class == "infrastructure"
    assert "collection error" in summary.text


@pytest.mark.slow
def test_pytest_error_in_fixture_setup_is_assertion(tmp_path: Path) -> None:
    tests = {
        "tests/test_fix.py": (
            "import pytest\n\n\n@pytest.fixture\ndef db():\n    raise RuntimeError('down')\n\n\n"
            "def test_uses_db(db):\n    pass\n\n\ndef test_fine():\n    pass\n"
        )
    }
    summary = run(project(tmp_path, CALC_FIXED, tests), "-m", "pytest", "-q")
    assert (summary.passed, summary.failed, summary.errors) == (1, 0, 1)
    assert summary.failing == ["tests/test_fix.py::test_uses_db"]
    assert summary.failure_class == "assertion"


@pytest.mark.slow
def test_pytest_no_tests_collected_is_infrastructure(tmp_path: Path) -> None:
    root = project(tmp_path, CALC_FIXED, {"tests/helpers.py": "X = 1\n"})
    summary = run(root, "-m", "pytest", "-q", "-p", "no:cacheprovider")
    assert summary.framework == "pytest"
    assert summary.failure_class == "infrastructure"
    assert summary.text == "pytest: no tests ran (no tests collected)"


@pytest.mark.slow
def test_pytest_usage_error_is_infrastructure(tmp_path: Path) -> None:
    summary = run(project(tmp_path, CALC_FIXED, {}), "-m", "pytest", "tests/missing_dir")
    assert summary.framework == "pytest"
    assert summary.failure_class == "infrastructure"
    assert "usage error" in summary.text


@pytest.mark.slow
def test_pytest_module_not_installed_is_infrastructure(tmp_path: Path) -> None:
    summary = run(tmp_path, "-m", "no_such_runner_xyz")
    assert summary.framework is None
    assert summary.failure_class == "infrastructure"
    assert "No module named no_such_runner_xyz" in summary.text


# --------------------------------------------------------------------- real unittest


@pytest.mark.slow
def test_unittest_failures_and_errors(tmp_path: Path) -> None:
    root = project(tmp_path, CALC_BUGGY, {"test_calc.py": UNITTEST_TESTS})
    summary = run(root, "-m", "unittest", "test_calc")
    assert summary.framework == "unittest"
    assert (summary.passed, summary.failed, summary.errors, summary.skipped) == (1, 1, 1, 1)
    assert summary.failing == ["test_calc.CalcTest.test_crash", "test_calc.CalcTest.test_add"]
    assert summary.failure_class == "assertion"


@pytest.mark.slow
def test_unittest_passing_verbose(tmp_path: Path) -> None:
    tests = {"test_calc.py": UNITTEST_TESTS.replace('raise RuntimeError("boom")', "pass")}
    summary = run(project(tmp_path, CALC_FIXED, tests), "-m", "unittest", "-v", "test_calc")
    assert (summary.framework, summary.passed, summary.skipped) == ("unittest", 3, 1)
    assert summary.failure_class == "none"
    assert summary.text == "unittest: 3 passed, 1 skipped"


@pytest.mark.slow
def test_unittest_import_error_is_infrastructure(tmp_path: Path) -> None:
    tests = {"test_calc.py": "import no_such_module_xyz\n"}
    summary = run(project(tmp_path, CALC_FIXED, tests), "-m", "unittest", "test_calc")
    assert summary.framework == "unittest"
    assert summary.failing == ["test_calc"]
    assert summary.failure_class == "infrastructure"


# --------------------------------------------------------------------- real shell failures


@pytest.mark.slow
def test_command_not_found_is_infrastructure() -> None:
    done = subprocess.run(
        ["bash", "-c", "no-such-test-runner-xyz --all"], capture_output=True, text=True
    )
    summary = summarize(done.returncode, done.stdout, done.stderr)
    assert done.returncode == 127
    assert (summary.framework, summary.failure_class) == (None, "infrastructure")


@pytest.mark.slow
def test_missing_script_is_infrastructure(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "run_tests.py"], cwd=tmp_path, capture_output=True, text=True
    )
    summary = summarize(done.returncode, done.stdout, done.stderr)
    assert done.returncode == 2
    assert summary.failure_class == "infrastructure"
    assert "No such file or directory" in summary.text


def test_timeout_is_infrastructure() -> None:
    summary = summarize(None, "tests/test_calc.py ..", "", timed_out=True)
    assert summary.failure_class == "infrastructure"
    assert summary.text == "timed out: no test runner output recognised"


def test_unrecognised_failure_is_infrastructure() -> None:
    # No runner output at all: the tests never ran (an import error at start-up, a broken
    # wrapper), so a rewind would pay for an edit judged by nothing.
    summary = summarize(1, "checking...\nmismatch in output.txt\n", "")
    assert (summary.framework, summary.failure_class) == (None, "infrastructure")
    assert summary.text == "exit 1: no test runner output recognised"


def test_plain_closing_line_is_a_runner() -> None:
    summary = summarize(1, "checking...\nresult: 3 passed, 1 failed\n", "")
    assert (summary.framework, summary.failure_class) == ("plain", "assertion")
    assert (summary.passed, summary.failed) == (3, 1)


def test_pytest_import_error_at_startup_is_infrastructure(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text("import no_such_module_here\n")
    (tmp_path / "test_x.py").write_text("def test_x():\n    assert True\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    summary = summarize(proc.returncode, proc.stdout, proc.stderr)
    assert summary.failure_class == "infrastructure", (summary, proc.stdout, proc.stderr)


def test_pytest9_subtests_closing_line_parses(tmp_path: Path) -> None:
    (tmp_path / "test_s.py").write_text(
        "def test_a(subtests):\n"
        "    for i in range(3):\n"
        "        with subtests.test(i=i):\n"
        "            assert i >= 0\n"
        "def test_b():\n"
        "    assert 1 == 2, 'boom'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert "subtests passed" in proc.stdout  # pytest 9's own line, not a hand-made one
    summary = summarize(proc.returncode, proc.stdout, proc.stderr)
    assert (summary.passed, summary.failed) == (1, 1)
    assert summary.failure_class == "assertion"
    verbatim = "1 failed, 1 passed, 3 subtests passed in 1.72s\n"
    assert summarize(1, "FAILED test_s.py::test_b - x\n" + verbatim, "").passed == 1


def test_runner_output_wins_over_command_level_noise() -> None:
    # A test that itself reads a missing file is an assertion failure, not a missing runner.
    stdout = (
        "F\nE   FileNotFoundError: [Errno 2] No such file or directory: 'data.csv'\n"
        "FAILED tests/test_io.py::test_load - FileNotFoundError: [Errno 2] No such file\n"
        "1 failed in 0.02s\n"
    )
    summary = summarize(1, stdout, "")
    assert (summary.framework, summary.failure_class) == ("pytest", "assertion")


def test_exit_zero_is_none_even_with_noise() -> None:
    assert summarize(0, "", "warning: command not found: foo").failure_class == "none"


def test_many_failing_names_are_shortened_in_text() -> None:
    stdout = "".join(f"FAILED t.py::test_{n} - assert 0\n" for n in range(5)) + "5 failed in 1s\n"
    summary = summarize(1, stdout, "")
    assert len(summary.failing) == 5
    assert summary.text.endswith("t.py::test_0, t.py::test_1, t.py::test_2 (+2 more)")


# --------------------------------------------------------------------- jest (verbatim)

JEST_ASSERTION = """\
 FAIL  src/sum.test.js
  ● sum › adds 1 + 2 to equal 3

    expect(received).toBe(expected) // Object.is equality

    Expected: 3
    Received: -1

       5 | describe('sum', () => {
       6 |   test('adds 1 + 2 to equal 3', () => {
    >  7 |     expect(sum(1, 2)).toBe(3);
         |                       ^
       8 |   });
       9 | });

      at Object.toBe (src/sum.test.js:7:23)

 PASS  src/format.test.js

Test Suites: 1 failed, 1 passed, 2 total
Tests:       1 failed, 1 skipped, 3 passed, 5 total
Snapshots:   0 total
Time:        0.512 s, estimated 1 s
Ran all test suites.
"""

JEST_SUITE_FAILED = """\
 FAIL  src/broken.test.js
  ● Test suite failed to run

    Cannot find module './missing' from 'src/broken.test.js'

    > 1 | const missing = require('./missing');
        |                 ^
      2 |

      at Resolver._throwModNotFoundError (node_modules/jest-resolve/build/resolver.js:427:11)
      at Object.<anonymous> (src/broken.test.js:1:1)

Test Suites: 1 failed, 1 total
Tests:       0 total
Snapshots:   0 total
Time:        0.3 s
Ran all test suites.
"""

JEST_PASS = """\
 PASS  src/sum.test.js
  sum
    ✓ adds 1 + 2 to equal 3 (2 ms)

Test Suites: 1 passed, 1 total
Tests:       1 passed, 1 total
Snapshots:   0 total
Time:        0.4 s
"""


def test_jest_assertion() -> None:
    # jest writes its report to stderr.
    summary = summarize(1, "", JEST_ASSERTION)
    assert summary.framework == "jest"
    assert (summary.passed, summary.failed, summary.skipped) == (3, 1, 1)
    assert summary.failing == ["sum › adds 1 + 2 to equal 3"]
    assert summary.failure_class == "assertion"


def test_jest_suite_failed_to_run_is_infrastructure() -> None:
    summary = summarize(1, "", JEST_SUITE_FAILED)
    assert summary.framework == "jest"
    assert summary.failing == ["src/broken.test.js"]
    assert summary.failure_class == "infrastructure"


def test_jest_pass() -> None:
    summary = summarize(0, "", JEST_PASS)
    assert (summary.framework, summary.passed, summary.failure_class) == ("jest", 1, "none")
    assert summary.text == "jest: 1 passed"


# --------------------------------------------------------------------- go test (verbatim)

GO_VERBOSE_FAIL = """\
=== RUN   TestAdd
    calc_test.go:8: Add(1, 2) = -1; want 3
--- FAIL: TestAdd (0.00s)
=== RUN   TestSub
--- PASS: TestSub (0.00s)
=== RUN   TestTable
=== RUN   TestTable/zero
=== RUN   TestTable/negative
    calc_test.go:21: Add(-1, -1) = 0; want -2
--- FAIL: TestTable (0.00s)
    --- PASS: TestTable/zero (0.00s)
    --- FAIL: TestTable/negative (0.00s)
=== RUN   TestSlow
    calc_test.go:30: skipping in short mode
--- SKIP: TestSlow (0.00s)
FAIL
exit status 1
FAIL\texample.com/calc\t0.002s
ok  \texample.com/calc/format\t0.003s
FAIL
"""

GO_QUIET_FAIL = """\
--- FAIL: TestAdd (0.00s)
    calc_test.go:8: Add(1, 2) = -1; want 3
FAIL
FAIL\texample.com/calc\t0.002s
FAIL
"""

GO_BUILD_FAILED = """\
# example.com/calc [example.com/calc.test]
./calc.go:4:9: undefined: sbu
FAIL\texample.com/calc [build failed]
FAIL
"""

GO_SETUP_FAILED = """\
# example.com/calc
calc.go:3:8: package example.com/missing is not in std (/usr/local/go/src/example.com/missing)
FAIL\texample.com/calc [setup failed]
FAIL
"""

GO_OK = "ok  \texample.com/calc\t0.002s\nok  \texample.com/calc/format\t(cached)\n"


def test_go_verbose_failure() -> None:
    summary = summarize(1, GO_VERBOSE_FAIL, "")
    assert summary.framework == "go"
    assert (summary.passed, summary.failed, summary.skipped) == (1, 2, 1)
    assert summary.failing == ["TestAdd", "TestTable", "TestTable/negative"]
    assert summary.failure_class == "assertion"


def test_go_quiet_failure_leaves_unknown_counts_unknown() -> None:
    summary = summarize(1, GO_QUIET_FAIL, "")
    assert (summary.passed, summary.failed, summary.skipped) == (None, 1, None)
    assert summary.text == "go: 1 failed: TestAdd"


@pytest.mark.parametrize("output", [GO_BUILD_FAILED, GO_SETUP_FAILED], ids=["build", "setup"])
def test_go_build_and_setup_failures_are_infrastructure(output: str) -> None:
    summary = summarize(1, output, "")
    assert (summary.framework, summary.failure_class) == ("go", "infrastructure")
    assert "example.com/calc" in summary.text


def test_go_ok() -> None:
    summary = summarize(0, GO_OK, "")
    assert (summary.framework, summary.failure_class) == ("go", "none")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed")
def test_go_for_real(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text("module example.com/calc\n\ngo 1.20\n")
    (tmp_path / "calc.go").write_text("package calc\n\nfunc Add(a, b int) int { return a - b }\n")
    (tmp_path / "calc_test.go").write_text(
        'package calc\n\nimport "testing"\n\nfunc TestAdd(t *testing.T) {\n'
        '\tif Add(1, 2) != 3 {\n\t\tt.Fatal("wrong")\n\t}\n}\n'
    )
    done = subprocess.run(["go", "test", "./..."], cwd=tmp_path, capture_output=True, text=True)
    summary = summarize(done.returncode, done.stdout, done.stderr)
    assert (summary.framework, summary.failing, summary.failure_class) == (
        "go",
        ["TestAdd"],
        "assertion",
    )
