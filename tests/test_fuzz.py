"""Fuzzing the pipeline loader, the schema types and ``agentsaga validate`` (issue 6, part 4).

The expression evaluator and the edit-block parser are fuzzed in test_expressions.py and
test_edits.py; this file covers what reads a pipeline file. The rule for every input: a
``Pipeline`` (or the schema's value) or our own error — ``PipelineError`` /
``SchemaViolation`` — never another exception, never a hang. A hang is caught per
example by a timer on the process's own CPU time (``ITIMER_VIRTUAL``), so one slow input
fails with its text instead of stalling the suite, and a machine loaded by other
processes (which slows the wall clock, not our CPU time) cannot make it fail.

Inputs come three ways: arbitrary text, valid pipelines mutated line- and character-wise,
and structured documents that use the format's real keys (so the fuzzer gets past the
first "unknown key" into the deeper checks). The counts are printed with ``-s``.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from agentsaga import schema, yaml_nodes
from agentsaga.errors import PipelineError
from agentsaga.pipeline import COMPENSATE, ON_FAILURE, RETRY, TOP, Pipeline, load_text
from agentsaga.steps import COMMAND
from tests.conftest import cli

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
SEEDS = sorted([*(ROOT / "pipelines").glob("*.yml"), ROOT / "agentsaga/templates/demo.yml"])
SEED_TEXTS = [p.read_text() for p in SEEDS]
#: Examples per fuzz test are scaled by AGENTSAGA_FUZZ_SCALE (default 0.5: the whole suite
#: stays inside its budget on a loaded 2-core machine). Every run draws new inputs
#: (database=None), so runs add up; for one deeper run: AGENTSAGA_FUZZ_SCALE=8 pytest
#: --timeout=0 tests/test_fuzz.py.
FUZZ_SCALE = float(os.environ.get("AGENTSAGA_FUZZ_SCALE", "0.5"))


def examples(n: int) -> int:
    return max(10, round(n * FUZZ_SCALE))


#: CPU seconds one example may use: the slowest real input takes milliseconds.
PER_EXAMPLE_CPU_S = 10.0

fuzz = settings(
    deadline=None,  # the interval timer below bounds each example instead
    database=None,
    # Every input runs to the end (a finding is collected, not raised), so there is
    # nothing to shrink or explain; the explain phase also trips filterwarnings=error.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
    ],
)

#: What each fuzz test tried and what came out: printed at the end with -s.
COUNTS: dict[str, Counter[str]] = {}


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    if COUNTS:
        print("\nfuzz counts (inputs tried -> outcome):")
        for name, counter in COUNTS.items():
            total = sum(counter.values())
            parts = ", ".join(f"{k} {v}" for k, v in counter.most_common())
            print(f"  {name}: {total} inputs ({parts})")


class Hang(Exception):
    pass


def bounded(fn: Callable[[], T], seconds: float = PER_EXAMPLE_CPU_S) -> T:
    """Run ``fn``; raise Hang if it uses more than ``seconds`` of this process's CPU time
    (SIGVTALRM, main thread). CPU time, not the wall clock: other processes' load does
    not count."""

    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"used over {seconds} s of CPU")

    previous = signal.signal(signal.SIGVTALRM, alarm)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


#: name -> exception type -> the shortest input that raised it.
FINDINGS: dict[str, dict[str, str]] = {}


def count(name: str, outcome: str) -> None:
    COUNTS.setdefault(name, Counter())[outcome] += 1


def finding(name: str, exc: BaseException, text: str) -> str:
    kind = "hang" if isinstance(exc, Hang) else type(exc).__name__
    found = FINDINGS.setdefault(name, {})
    if kind not in found or len(text) < len(found[kind]):
        found[kind] = text
    return "FINDING " + kind


def assert_no_findings(name: str) -> None:
    found = FINDINGS.get(name, {})
    assert not found, f"{name}: " + "; ".join(
        f"{kind} on {text[:200]!r}" for kind, text in found.items()
    )


def load_outcome(text: str, name: str = "load_text") -> str:
    """'pipeline', 'PipelineError', or 'FINDING <type>' (collected: the test fails at the
    end with the shortest input of each kind, after every input was tried)."""
    try:
        result = bounded(lambda: load_text(text, "fuzz.yml"))
    except PipelineError as exc:
        assert exc.message.startswith("fuzz.yml:"), exc.message  # located: file:line:col
        return "PipelineError"
    except Exception as exc:
        return finding(name, exc, text)
    assert isinstance(result, Pipeline)
    return "pipeline"


# --- strategies ---------------------------------------------------------------------------

yamlish_alphabet = st.sampled_from(
    list("abcdefghijklmnopqrstuvwxyz0123456789 -:_[]{}\"',&*!|>#%@`?\\$.\n\t")
    + ["${{", "}}", "steps", "kind", "id", "run", "name", "\u00e9", "\ufeff", "\x00"]
)
yamlish_text = st.lists(yamlish_alphabet, max_size=200).map("".join)

KEYS = [
    "name",
    "description",
    "vars",
    "env",
    "defaults",
    "budget",
    "workspace",
    "steps",
    "on_failure",
    "on_compensation_failure",
    "id",
    "kind",
    "run",
    "prompt",
    "files",
    "compensate",
    "git",
    "retry",
    "attempts",
    "backoff",
    "max_backoff",
    "timeout",
    "if",
    "irreversible",
    "commit",
    "rewind_to",
    "max_rewinds",
    "when",
    "provider",
    "model",
    "max_tokens",
    "replies",
    "schema",
    "isolation",
    "repo",
    "branch",
    "exclude",
    "max_tokens",
    "max_cost_usd",
    "system",
    "temperature",
    "cache",
    "max_reflections",
]
KIND_WORDS = [
    "plan",
    "read",
    "write",
    "test",
    "shell",
    "deploy",
    "reset",
    "revert",
    "delete-branch",
    "rollback",
    "halt",
    "continue",
    "worktree",
    "branch",
    "none",
    "2s",
    "500ms",
    "1h",
    "-1",
    "0",
    "1e400",
    ".inf",
    ".nan",
    "yes",
    "null",
]
EXPRESSIONS = [
    "${{ vars.task }}",
    "${{ steps.a.output.text }}",
    "${{ steps.b.status }}",
    "${{ run.id }}",
    "${{ rewind.error }}",
    "${{ env.HOME }}",
    "${{ }}",
    "${{ steps.a.output.json[0] }}",
    "${{ vars.x == 'y' and not run.id }}",
    "${{ steps['a'].output }}",
    "${{",
    "}}",
]
leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(KIND_WORDS + EXPRESSIONS)
    | st.text(max_size=12)
)
key = st.sampled_from(KEYS) | st.text(min_size=1, max_size=6)
values = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(key, inner, max_size=5),
    max_leaves=25,
)
small_values = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(key, inner, max_size=3),
    max_leaves=6,
)
text_fields = st.sampled_from(EXPRESSIONS + ["echo hi", "make test"]) | st.text(max_size=10)


@st.composite
def step_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-formed steps (the right required field for the kind), with a few
    random extra fields: the loader's deeper checks get exercised, not only its first."""
    kind = draw(st.sampled_from(["plan", "read", "write", "test", "shell", "deploy"]) | leaf)
    step: dict[str, Any] = {"id": draw(st.sampled_from(["a", "b", "c", "a b", ""])), "kind": kind}
    required = {"plan": "prompt", "write": "prompt", "read": "files"}.get(str(kind), "run")
    step[required] = draw(text_fields | st.lists(text_fields, max_size=3))
    if draw(st.booleans()):
        step.update(draw(st.dictionaries(st.sampled_from(KEYS[9:]), small_values, max_size=2)))
    return step


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    steps = draw(st.lists(step_dicts(), max_size=4))
    if draw(st.booleans()):  # usually distinct ids, so later checks are reached
        for i, step in enumerate(steps):
            step["id"] = f"s{i}"
    doc: dict[str, Any] = {"name": draw(st.sampled_from(["p", "x y"]) | leaf), "steps": steps}
    if draw(st.booleans()):
        doc.update(draw(st.dictionaries(st.sampled_from(KEYS[1:7]), small_values, max_size=2)))
    return doc


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SEED_TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        lines = text.splitlines(keepends=True) or [""]
        op = draw(
            st.sampled_from(
                ["delete", "duplicate", "swap", "indent", "insert", "replace", "truncate"]
            )
        )
        i = draw(st.integers(0, len(lines) - 1))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "indent":
            lines[i] = " " * draw(st.integers(1, 6)) + lines[i]
        text = "".join(lines)
        if op in ("insert", "replace", "truncate"):
            at = draw(st.integers(0, len(text)))
            if op == "truncate":
                text = text[:at]
            else:
                piece = draw(yamlish_text.filter(bool) | st.sampled_from(EXPRESSIONS + KIND_WORDS))
                end = at + (draw(st.integers(0, 10)) if op == "replace" else 0)
                text = text[:at] + piece + text[end:]
    return text


# --- the loader -----------------------------------------------------------------------------


def test_loader_on_arbitrary_text() -> None:
    name = "load_text(arbitrary text)"

    @settings(fuzz, max_examples=examples(2000))
    @given(st.text(max_size=300) | yamlish_text)
    def one(text: str) -> None:
        count(name, load_outcome(text, name))

    one()
    assert_no_findings(name)


def test_loader_on_mutated_valid_pipelines() -> None:
    name = "load_text(mutated valid pipelines)"

    @settings(fuzz, max_examples=examples(2000))
    @given(mutated())
    def one(text: str) -> None:
        count(name, load_outcome(text, name))

    one()
    assert_no_findings(name)


def test_loader_on_structured_documents() -> None:
    name = "load_text(structured documents)"

    @settings(fuzz, max_examples=examples(1000))
    @given(documents())
    def one(doc: dict[str, Any]) -> None:
        count(name, load_outcome(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), name))

    one()
    assert_no_findings(name)


def test_the_seeds_are_valid() -> None:
    for text in SEED_TEXTS:
        assert load_outcome(text) == "pipeline"


# --- the schema types ---------------------------------------------------------------------

SCHEMA_TYPES: list[tuple[str, schema.Type]] = [
    ("STR", schema.STR),
    ("INT", schema.INT),
    ("NUM", schema.NUM),
    ("BOOL", schema.BOOL),
    ("SCALAR", schema.SCALAR),
    ("Duration", schema.Duration()),
    ("COMMAND", COMMAND),
    ("RETRY", RETRY),
    ("COMPENSATE", COMPENSATE),
    ("ON_FAILURE", ON_FAILURE),
    ("TOP", TOP),
]


def test_schema_types_return_a_value_or_a_violation() -> None:
    name = "schema types .check()"

    @settings(fuzz, max_examples=examples(2000))
    @given(st.sampled_from(SCHEMA_TYPES), values | yamlish_text)
    def one(named: tuple[str, schema.Type], value: Any) -> None:
        text = value if isinstance(value, str) else yaml.safe_dump(value, allow_unicode=True)
        try:
            node = yaml_nodes.compose(text)
        except yaml.YAMLError:
            count(name, "not YAML")
            return
        if node is None:
            count(name, "empty")
            return
        try:
            bounded(lambda: named[1].check(node))
        except schema.SchemaViolation as exc:
            assert exc.node is not None and exc.problem
            count(name, "SchemaViolation")
            return
        except Exception as exc:
            count(name, finding(name, exc, f"{named[0]}: {text}"))
            return
        count(name, "value")

    one()
    assert_no_findings(name)


@settings(fuzz, max_examples=examples(1000))
@given(st.text(max_size=60))
def test_parse_duration_and_did_you_mean_never_raise(text: str) -> None:
    value = schema.parse_duration(text)
    assert value is None or value >= 0
    assert isinstance(schema.did_you_mean(text, ["steps", "name", "kind"]), str)
    count("parse_duration + did_you_mean", "ok")


# --- the command line ---------------------------------------------------------------------


def test_validate_command_on_random_files(tmp_path: Path) -> None:
    name = "agentsaga validate FILE"

    @settings(fuzz, max_examples=examples(400))
    @given(
        mutated()
        | yamlish_text
        | documents().map(lambda d: yaml.safe_dump(d, allow_unicode=True, sort_keys=False))
    )
    def one(text: str) -> None:
        path = tmp_path / "fuzz.yml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        result = bounded(lambda: cli("validate", path), 5.0)
        if (
            "Traceback" in result.output
            or "internal error" in result.output
            or (result.exit_code not in (0, 2))
        ):
            problem = (result.stderr.strip().splitlines() or [f"exit {result.exit_code}"])[-1]
            count(name, finding(name, RuntimeError(problem[:80]), text))
            return
        if result.exit_code == 2:
            assert result.stderr.startswith("error: "), result
        count(name, f"exit {result.exit_code}")

    one()
    assert_no_findings(name)


# --- what the fuzzers found, pinned ------------------------------------------------------------

DEEP_FLOW = "name: x\nsteps: " + "[" * 3000 + "]" * 3000 + "\n"
DEEP_BLOCK = "name: x\nsteps:\n" + "".join("  " * i + f"- k{i}:\n" for i in range(1, 400))
FOUND = {
    # Python's recursion limit inside PyYAML's composer / our node walk.
    "deeply nested flow lists": DEEP_FLOW,
    "deeply nested block mappings": DEEP_BLOCK,
    # yaml.constructor.ConstructorError raised by schema._construct, outside load_text's
    # try (which covers only yaml.compose).
    "an unknown tag": "name: !!python/object:os.system x\nsteps: []\n",
    "an unhashable key": "name: x\nsteps:\n  - {id: s, kind: shell, run: echo, ? [a]: b}\n",
    # int() refuses more than 4300 digits (CVE-2020-10735 limit): ValueError.
    "an integer of 5000 digits": "name: x\nsteps:\n  - {id: s, kind: shell, run: echo, "
    "timeout: 1" + "0" * 5000 + "}\n",
}


@pytest.mark.parametrize("text", FOUND.values(), ids=list(FOUND))
def test_found_inputs_give_a_pipeline_error(text: str) -> None:
    assert load_outcome(text) == "PipelineError"


@pytest.mark.parametrize("text", FOUND.values(), ids=list(FOUND))
def test_found_inputs_through_validate_exit_2_without_internal_error(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "p.yml"
    path.write_text(text)
    result = cli("validate", path)
    assert result.exit_code == 2, result
    assert "internal error" not in result.stderr, result


def test_parse_duration_is_linear_on_long_whitespace() -> None:
    """``^\\s*(\\d+(?:\\.\\d+)?)\\s*(ms|s|m|h)?\\s*$`` backtracks quadratically between its
    two trailing ``\\s*`` when the text does not end well: 20,000 spaces take ~2 s, a
    200 kB line minutes — a hang of `validate` on a hostile file."""
    # 200,000 spaces: quadratic backtracking would take minutes; linear takes milliseconds.
    # The bound is a hang detector (two orders of magnitude of slack), not a benchmark.
    # CPU time of this process, not the wall clock: a loaded machine does not count.
    text = "1" + " " * 200_000 + "x"
    assert bounded(lambda: schema.parse_duration(text)) is None


ATHERIS_HARNESS = """
import json, sys
import atheris
with atheris.instrument_imports():
    import yaml
    from agentsaga.errors import PipelineError
    from agentsaga.pipeline import load_text

findings = {}
runs = [0]

def one(data):
    runs[0] += 1
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(4096)
    try:
        load_text(text, "fuzz.yml")
    except PipelineError:
        pass
    except Exception as exc:
        kind = type(exc).__name__
        if kind not in findings or len(text) < len(findings[kind]):
            findings[kind] = text
    if runs[0] % 500 == 0:
        with open(sys.argv[1], "w") as out:
            json.dump({"runs": runs[0], "findings": findings}, out)

atheris.Setup([sys.argv[0], *sys.argv[2:]], one)
atheris.Fuzz()
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_atheris_on_the_loader(tmp_path: Path) -> None:
    """Coverage-guided (libFuzzer) fuzzing of load_text, seeded with the valid pipelines.
    atheris is in the test extra (its wheels cover Linux x86-64 and arm64); the test
    skips only where it cannot be installed."""
    pytest.importorskip("atheris")
    import json
    import subprocess
    import sys

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, text in enumerate(SEED_TEXTS):
        (corpus / f"seed{i}").write_text(text)
    harness, report = tmp_path / "harness.py", tmp_path / "report.json"
    harness.write_text(ATHERIS_HARNESS)
    subprocess.run(
        [
            sys.executable,
            str(harness),
            str(report),
            "-runs=20000",
            "-max_total_time=20",
            "-timeout=60",  # libFuzzer counts wall time: generous for a loaded machine
            "-rss_limit_mb=2048",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    data = json.loads(report.read_text())
    COUNTS.setdefault("atheris load_text", Counter())["executions"] += data["runs"]
    for kind in data["findings"]:
        count("atheris load_text", f"FINDING {kind}")
    assert not data["findings"], {k: v[:200] for k, v in data["findings"].items()}
