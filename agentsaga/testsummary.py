"""Read a test runner's output: counts, failing test names, and what kind of failure it was.

``summarize`` recognises pytest (quiet and verbose, pytest 9's subtest counts included),
unittest, jest, ``go test`` and the plain closing line ``N passed, N failed`` from their
own output, never from the command line, since the command is often a wrapper
(``make test``, ``npm test``, ``tox``).

The failure class decides what a pipeline does next (``on_failure: {when: assertion}``):

- ``none``: the command exited 0.
- ``infrastructure``: the tests never really ran, so rewinding to the write step would pay
  for a new edit that cannot help: exit 126/127 or a command that was not found, a timeout,
  pytest collection and import errors and its exit codes 2-5 (interrupted, internal error,
  usage error, no tests collected), unittest modules that failed to import, ``go test``
  build and setup failures, jest suites that "failed to run", and a non-zero exit with no
  test runner output recognised at all (an import error at start-up).
- ``assertion``: the runner's output was recognised and some tests did not pass.

Command-level signals (``command not found``, ``No such file or directory``) are only
believed when no runner output was recognised: a test that itself prints them must not
turn a real assertion failure into an infrastructure one.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

# How many failing names the one-line text lists before "+N more".
_TEXT_NAMES = 3


@dataclass
class TestSummary:
    # Not a test class, whatever pytest's collector thinks of the name.
    __test__ = False

    framework: str | None  # 'pytest' | 'unittest' | 'jest' | 'go' | 'plain' | None
    passed: int | None
    failed: int | None
    errors: int | None
    skipped: int | None
    failing: list[str] = field(default_factory=list)
    failure_class: str = "none"  # 'none' | 'assertion' | 'infrastructure'
    text: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Parsed:
    framework: str
    passed: int | None = None
    failed: int | None = None
    errors: int | None = None
    skipped: int | None = None
    failing: list[str] = field(default_factory=list)
    # Why the runner did not really run, when its own output says so.
    infrastructure: str | None = None


def _dedupe(names: list[str]) -> list[str]:
    return list(dict.fromkeys(n for n in names if n))


def _counts(line: str) -> dict[str, int]:
    return {word: int(n) for n, word in re.findall(r"(\d+) ([a-z]+)", line)}


# ----------------------------------------------------------------------------- pytest

# "3 passed, 1 failed in 0.12s" (-q) or "=== 1 failed, 3 passed in 0.12s ===", also
# "no tests ran in 0.01s"; the duration may read "1.23s (0:00:01)". pytest 9 adds
# "2 subtests passed": a count named by two words.
_PYTEST_TOTALS = re.compile(
    r"^=*\s*((?:\d+ \w+(?: \w+)?(?:, )?)+|no tests ran) in \d+(?:\.\d+)?s\b.*$", re.MULTILINE
)
_PYTEST_SIGNS = re.compile(
    r"^(=+ test session starts =+|rootdir: |collected \d+ items?|"
    r"ERROR: (usage:|file or directory not found:|not found:)|"
    r"=+ short test summary info =+)",
    re.MULTILINE,
)


def _parse_pytest(text: str, exit_code: int | None) -> _Parsed | None:
    totals = _PYTEST_TOTALS.findall(text)
    if not totals and not _PYTEST_SIGNS.search(text):
        return None
    parsed = _Parsed("pytest")
    if totals:
        counts = _counts(totals[-1])
        parsed.passed = counts.get("passed", 0)
        parsed.failed = counts.get("failed", 0)
        parsed.errors = counts.get("error", 0) + counts.get("errors", 0)
        parsed.skipped = counts.get("skipped", 0)
    names: list[str] = []
    # Short summary ("FAILED path::test - message") and verbose ("path::test FAILED [50%]").
    names += re.findall(r"^(?:FAILED|ERROR) (\S+::\S+?)(?: - .*)?$", text, re.MULTILINE)
    names += re.findall(r"^(\S+::\S+) (?:FAILED|ERROR)\b", text, re.MULTILINE)
    collecting = re.findall(r"ERROR collecting (\S+)", text)
    if not names:
        # With -rN there is no short summary; the failure section headers still name tests.
        names += re.findall(r"^_{3,} (test\S*) _{3,}$", text, re.MULTILINE)
    parsed.failing = _dedupe(names + collecting)
    if collecting or re.search(r"Interrupted: \d+ errors? during collection", text):
        parsed.infrastructure = "collection error"
    elif exit_code in (2, 3, 4, 5):
        parsed.infrastructure = {
            2: "interrupted",
            3: "internal error",
            4: "usage error",
            5: "no tests collected",
        }[exit_code]
    return parsed


# ----------------------------------------------------------------------------- unittest

_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in ", re.MULTILINE)


def _unittest_name(test: str, where: str) -> str:
    # 3.11+ prints "(module.Class.test)", older versions "(module.Class)".
    if where.endswith("." + test) or where == test:
        return where
    return f"{where}.{test}"


def _parse_unittest(text: str, exit_code: int | None) -> _Parsed | None:
    ran = _UNITTEST_RAN.findall(text)
    if not ran:
        return None
    parsed = _Parsed("unittest")
    total = int(ran[-1])
    status = re.findall(r"^(OK|FAILED|NO TESTS RAN)(?: \((.*)\))?\s*$", text, re.MULTILINE)
    # "FAILED (failures=1, errors=2, skipped=1, expected failures=1)"
    pairs = re.findall(r"([a-z ]+)=(\d+)", status[-1][1] if status else "")
    detail = {key.strip(): int(value) for key, value in pairs}
    parsed.failed = detail.get("failures", 0) + detail.get("unexpected successes", 0)
    parsed.errors = detail.get("errors", 0)
    parsed.skipped = detail.get("skipped", 0)
    parsed.passed = max(
        total - parsed.failed - parsed.errors - parsed.skipped - detail.get("expected failures", 0),
        0,
    )
    names = [
        _unittest_name(test, where)
        for test, where in re.findall(r"^(?:FAIL|ERROR): (\S+) \(([^)]+)\)", text, re.MULTILINE)
    ]
    parsed.failing = _dedupe([n.removeprefix("unittest.loader._FailedTest.") for n in names])
    if "unittest.loader._FailedTest" in text or "Failed to import test module" in text:
        parsed.infrastructure = "import error"
    elif total == 0 and exit_code not in (0, None):
        parsed.infrastructure = "no tests ran"
    return parsed


# ----------------------------------------------------------------------------- jest

_JEST_TESTS = re.compile(r"^Tests:\s+(.*\d+ total)\s*$", re.MULTILINE)
_JEST_SUITES = re.compile(r"^Test Suites:\s+(.*\d+ total)\s*$", re.MULTILINE)


def _parse_jest(text: str) -> _Parsed | None:
    tests = _JEST_TESTS.findall(text)
    suites = _JEST_SUITES.findall(text)
    failed_to_run = "Test suite failed to run" in text
    if not tests and not suites and not failed_to_run:
        return None
    parsed = _Parsed("jest")
    if tests:
        counts = _counts(tests[-1])
        parsed.passed = counts.get("passed", 0)
        parsed.failed = counts.get("failed", 0)
        parsed.skipped = counts.get("skipped", 0) + counts.get("todo", 0)
        parsed.errors = 0
    # "  ● Suite › test name"; the bullet also heads "Test suite failed to run" and console
    # output blocks ("● Console"), which are not tests.
    bullets = re.findall(r"^\s*● (.+?)\s*$", text, re.MULTILINE)
    parsed.failing = _dedupe(
        [b for b in bullets if b not in ("Test suite failed to run", "Console")]
    )
    if failed_to_run:
        parsed.infrastructure = "test suite failed to run"
        broken = re.findall(r"^\s*FAIL\s+(\S+)\s*\n\s*● Test suite failed to run", text, re.M)
        parsed.failing = _dedupe(parsed.failing + broken)
    return parsed


# ----------------------------------------------------------------------------- go test

_GO_SIGNS = re.compile(r"^(--- (FAIL|PASS|SKIP): |=== RUN |ok  \t|FAIL\t|\?   \t)", re.MULTILINE)


def _parse_go(text: str) -> _Parsed | None:
    if not _GO_SIGNS.search(text):
        return None
    parsed = _Parsed("go")
    # Subtests are indented; count only top-level tests, name the failing subtests too.
    results = re.findall(r"^(\s*)--- (FAIL|PASS|SKIP): (\S+)", text, re.MULTILINE)
    top = [(kind, name) for indent, kind, name in results if not indent]
    verbose = re.search(r"^=== RUN ", text, re.MULTILINE) is not None
    parsed.failed = sum(1 for kind, _ in top if kind == "FAIL")
    # Without -v, go prints only failures, so passes and skips are unknown, not zero.
    parsed.passed = sum(1 for kind, _ in top if kind == "PASS") if verbose else None
    parsed.skipped = sum(1 for kind, _ in top if kind == "SKIP") if verbose else None
    broken = re.findall(r"^FAIL\s+(\S+) \[(build|setup) failed\]", text, re.MULTILINE)
    parsed.errors = len(broken)
    parsed.failing = _dedupe([name for _, kind, name in results if kind == "FAIL"])
    if broken:
        parsed.infrastructure = f"{broken[0][1]} failed: " + ", ".join(p for p, _ in broken)
    elif re.search(r"^(go: |no Go files in|.*build constraints exclude all)", text, re.M):
        parsed.infrastructure = "go could not build the packages"
    return parsed


# ----------------------------------------------------------------------------- plain

# "N passed, N failed" alone on a line (", N skipped" may follow, one word with a colon
# may stand before it): the closing line any runner or script can print.
_PLAIN = re.compile(r"^(?:\w+: )?(\d+) passed, (\d+) failed(?:, (\d+) skipped)?\s*$", re.MULTILINE)


def _parse_plain(text: str) -> _Parsed | None:
    found = _PLAIN.findall(text)
    if not found:
        return None
    passed, failed, skipped = found[-1]
    return _Parsed("plain", int(passed), int(failed), 0, int(skipped) if skipped else None, [])


# ----------------------------------------------------------------------------- summary

_NOT_FOUND = re.compile(
    r"command not found|^\S*sh: \d+: \S+: not found$|No such file or directory|"
    r"^\S*python[\d.]*: No module named \S+",
    re.MULTILINE,
)


def _line(parsed: _Parsed, extra: str | None) -> str:
    counts = [
        (parsed.passed, "passed"),
        (parsed.failed, "failed"),
        (parsed.errors, "errors" if parsed.errors != 1 else "error"),
        (parsed.skipped, "skipped"),
    ]
    shown = ", ".join(f"{n} {word}" for n, word in counts if n)
    if not shown:
        # Counts that are all zero are a finding; counts never printed are not.
        known = any(n is not None for n, _ in counts)
        shown = "no tests ran" if known else "no test counts"
    text = f"{parsed.framework}: {shown}"
    if parsed.failing:
        names = ", ".join(parsed.failing[:_TEXT_NAMES])
        more = len(parsed.failing) - _TEXT_NAMES
        text += f": {names}" + (f" (+{more} more)" if more > 0 else "")
    if extra:
        text += f" ({extra})"
    return text


def summarize(
    exit_code: int | None, stdout: str, stderr: str, *, timed_out: bool = False
) -> TestSummary:
    """Summarise one test command's result from its exit code and output."""
    text = stdout + "\n" + stderr
    parsed = (
        _parse_pytest(text, exit_code)
        or _parse_unittest(text, exit_code)
        or _parse_jest(text)
        or _parse_go(text)
        or _parse_plain(text)
    )
    framework = parsed.framework if parsed else None

    infrastructure: str | None = None
    if timed_out:
        infrastructure = "timed out"
    elif exit_code == 0:
        infrastructure = None
    elif exit_code is None:
        # No exit status at all: the command never started or was never waited for.
        infrastructure = "no exit status"
    elif exit_code in (126, 127):
        infrastructure = f"exit {exit_code}: command not found or not executable"
    elif parsed is not None and parsed.infrastructure:
        infrastructure = parsed.infrastructure
    elif parsed is None and (match := _NOT_FOUND.search(text)):
        infrastructure = match.group(0).strip()
    elif parsed is None:
        # A non-zero exit with no test runner output at all: the runner never got as far
        # as running a test (an import error at start-up, a crashed wrapper script). A
        # rewind would pay for an edit judged by tests that did not run.
        infrastructure = "no test runner output recognised"

    if infrastructure is not None:
        failure_class = "infrastructure"
    elif exit_code == 0:
        failure_class = "none"
    else:
        failure_class = "assertion"

    if parsed is not None:
        line = _line(parsed, infrastructure)
    else:
        line = f"exit {exit_code}: " + (infrastructure or "no failure")
        if timed_out:
            line = "timed out: no test runner output recognised"

    return TestSummary(
        framework=framework,
        passed=parsed.passed if parsed else None,
        failed=parsed.failed if parsed else None,
        errors=parsed.errors if parsed else None,
        skipped=parsed.skipped if parsed else None,
        failing=parsed.failing if parsed else [],
        failure_class=failure_class,
        text=line,
    )
