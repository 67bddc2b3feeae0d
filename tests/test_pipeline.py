"""The pipeline format: every load error is ``file:line:col: message`` with exit 2, found
by ``agentsaga validate`` before anything runs; ``agentsaga schema`` describes the same
format as JSON Schema."""

from __future__ import annotations

import json
import textwrap

import jsonschema
import pytest
import yaml

from tests.conftest import Env, cli

# Each case: the pipeline text, then (line, column, a piece of the message). Lines and
# columns are 1-based, as editors show them; each was counted by hand from the text.
MALFORMED: dict[str, tuple[str, tuple[int, int, str]]] = {
    "yaml-syntax": (
        """
        name: t
        steps:
          - id: a
            kind: shell
            run: echo: oops
        """,
        (5, 14, "this value holds ': ', which YAML reads as a nested mapping: quote the value"),
    ),
    "yaml-tab": (
        "name: t\nsteps:\n\t- id: a\n",
        (3, 1, "YAML syntax error"),
    ),
    "unknown-top-key": (
        """
        name: t
        worksapce: {isolation: none}
        steps:
          - {id: a, kind: shell, run: echo}
        """,
        (2, 1, "unknown key 'worksapce'; did you mean 'workspace'?"),
    ),
    "unknown-step-key": (
        """
        name: t
        steps:
          - id: a
            kind: shell
            run: echo
            retyr: {attempts: 2}
        """,
        (6, 5, "unknown key 'retyr'; did you mean 'retry'?"),
    ),
    "wrong-type": (
        """
        name: t
        steps:
          - id: a
            kind: shell
            run: echo
            retry: {attempts: many}
        """,
        (6, 23, "expected an integer"),
    ),
    "duplicate-id": (
        """
        name: t
        steps:
          - id: a
            kind: shell
            run: echo
          - id: a
            kind: shell
            run: echo
        """,
        (6, 9, "duplicate step id 'a' (first defined at line 3)"),
    ),
    "missing-kind": (
        """
        name: t
        steps:
          - id: a
            run: echo
        """,
        (3, 5, "missing 'kind'"),
    ),
    "unknown-kind": (
        """
        name: t
        steps:
          - id: a
            kind: shel
            run: echo
        """,
        (4, 11, "did you mean 'shell'?"),
    ),
    "missing-kind-field": (
        """
        name: t
        steps:
          - id: a
            kind: shell
        """,
        (3, 5, "missing required key 'run'"),
    ),
    "unknown-step-reference": (
        """
        name: t
        steps:
          - id: a
            kind: shell
            run: echo ${{ steps.nope.output.stdout }}
        """,
        (5, 19, "unknown step 'nope'"),
    ),
    "later-step-reference": (
        """
        name: t
        steps:
          - id: a
            kind: shell
            run: echo ${{ steps.b.output.stdout }}
          - id: b
            kind: test
            run: echo
        """,
        (5, 19, "rewind.error"),
    ),
    "own-output-reference": (
        """
        name: t
        steps:
          - id: a
            kind: shell
            run: echo ${{ steps.a.output.stdout }}
        """,
        (5, 19, "rewind.error"),
    ),
    "later-step-in-if": (
        """
        name: t
        steps:
          - id: a
            kind: shell
            run: echo
            if: ${{ steps.b.status == 'completed' }}
          - {id: b, kind: shell, run: echo}
        """,
        (6, 13, "steps.b"),
    ),
    "unknown-output-field": (
        """
        name: t
        steps:
          - id: a
            kind: shell
            run: echo
          - id: b
            kind: shell
            run: echo ${{ steps.a.output.passed }}
        """,
        (8, 19, "a shell step has no output 'passed'"),
    ),
    "unknown-step-field": (
        """
        name: t
        steps:
          - {id: a, kind: shell, run: echo}
          - {id: b, kind: shell, run: "echo ${{ steps.a.outptu }}"}
        """,
        (4, 41, "steps.a has no field 'outptu'"),
    ),
    "rewind-to-itself": (
        """
        name: t
        steps:
          - id: a
            kind: shell
            run: echo
          - id: b
            kind: shell
            run: echo
            on_failure: {rewind_to: b}
        """,
        (9, 29, "rewind_to: 'b' must be a step before 'b'"),
    ),
    "rewind-to-unknown": (
        """
        name: t
        steps:
          - id: a
            kind: shell
            run: echo
            on_failure: {rewind_to: zz}
        """,
        (6, 29, "rewind_to: no step 'zz'"),
    ),
    "unknown-var": (
        """
        name: t
        vars: {task: x}
        steps:
          - id: a
            kind: shell
            run: echo ${{ vars.tsak }}
        """,
        (6, 19, "unknown var 'tsak'; did you mean 'task'?"),
    ),
    "unknown-var-in-block-scalar": (
        """
        name: t
        vars: {task: x}
        steps:
          - id: a
            kind: shell
            run: |
              echo one
              echo ${{ vars.task }} ${{ vars.nope }}
        """,
        (8, 33, "unknown var 'nope'"),
    ),
    "unknown-var-in-quoted-scalar": (
        """
        name: t
        vars: {task: x}
        steps:
          - id: a
            kind: shell
            run: "echo ${{ vars.nope }}"
        """,
        (6, 20, "unknown var 'nope'"),
    ),
    "unknown-namespace": (
        """
        name: t
        steps:
          - id: a
            kind: shell
            run: echo ${{ foo.bar }}
        """,
        (5, 19, "unknown name 'foo'"),
    ),
    "unknown-rewind-field": (
        """
        name: t
        steps:
          - {id: a, kind: shell, run: "echo ${{ rewind.errror }}"}
        """,
        (3, 41, "rewind has no field 'errror'"),
    ),
    "expression-syntax": (
        """
        name: t
        steps:
          - id: a
            kind: shell
            run: echo ${{ vars. }}
        """,
        (5, 25, "expected a name after '.'"),
    ),
    "bad-duration": (
        """
        name: t
        steps:
          - id: a
            kind: shell
            run: echo
            timeout: 5 minutes
        """,
        (6, 14, "expected a duration"),
    ),
    "compensate-git-and-run": (
        """
        name: t
        steps:
          - id: a
            kind: shell
            run: echo
            compensate: {git: reset, run: echo}
        """,
        (6, 17, "compensate needs exactly one of 'git' or 'run'"),
    ),
    "unknown-compensate-key": (
        """
        name: t
        steps:
          - id: a
            kind: shell
            run: echo
            compensate:
              run: echo
              envv: {A: b}
        """,
        (8, 7, "unknown key 'envv'; did you mean 'env'?"),
    ),
    "bad-enum": (
        """
        name: t
        on_failure: rolback
        steps:
          - {id: a, kind: shell, run: echo}
        """,
        (2, 13, "did you mean 'rollback'?"),
    ),
    "no-steps": (
        """
        name: t
        steps: []
        """,
        (2, 8, "at least one step"),
    ),
    "missing-name": (
        """
        steps:
          - {id: a, kind: shell, run: echo}
        """,
        (1, 1, "missing required key 'name'"),
    ),
    "step-not-a-mapping": (
        """
        name: t
        steps:
          - just a string
        """,
        (3, 5, "a step must be a mapping"),
    ),
    "bad-step-id": (
        """
        name: t
        steps:
          - id: "a b"
            kind: shell
            run: echo
        """,
        (3, 9, "may hold only letters, digits"),
    ),
    "duplicate-key": (
        """
        name: t
        name: u
        steps:
          - {id: a, kind: shell, run: echo}
        """,
        (2, 1, "duplicate key 'name'"),
    ),
    "empty-file": ("", (1, 1, "empty")),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_pipeline_is_located_and_exits_2(env: Env, case: str) -> None:
    text, (line, col, problem) = MALFORMED[case]
    env.path.joinpath("p.yml").write_text(textwrap.dedent(text).lstrip("\n"))
    result = cli("validate", "p.yml")
    assert result.exit_code == 2, result
    message = result.stderr.strip().removeprefix("error: ")
    assert message.startswith(f"p.yml:{line}:{col}: "), message
    assert problem in message
    assert "Traceback" not in result.output


def test_malformed_pipeline_is_refused_by_run_before_anything_runs(env: Env) -> None:
    env.write(
        "p.yml",
        """
        name: t
        workspace: {isolation: none}
        steps:
          - {id: a, kind: shell, run: echo a >> ledger}
          - {id: b, kind: shell, run: "echo ${{ steps.c.output.stdout }}"}
          - {id: c, kind: shell, run: echo c >> ledger}
        """,
    )
    result = cli("run", "p.yml")
    assert result.exit_code == 2, result
    assert result.stderr.removeprefix("error: ").startswith("p.yml:5:")
    assert not env.ledger.path.exists()
    assert cli("runs", "--json").json() == {"runs": []}


def test_unterminated_string_points_at_where_it_starts(env: Env) -> None:
    """PyYAML reports an unterminated quote at the end of the file; the useful place is
    the opening quote (the error's context mark), or at least its line."""
    env.write(
        "p.yml",
        """
        name: t
        steps:
          - id: a
            kind: shell
            run: "echo
          - id: b
            kind: shell
            run: echo
        """,
    )
    result = cli("validate", "p.yml")
    assert result.exit_code == 2, result
    assert "p.yml:5:" in result.stderr or "line 5" in result.stderr, result


def test_var_override_of_an_undeclared_var_exits_2(env: Env) -> None:
    env.write(
        "p.yml",
        """
        name: t
        vars: {task: x}
        steps:
          - {id: a, kind: shell, run: echo}
        """,
    )
    result = cli("validate", "p.yml", "--var", "tsak=y")
    assert result.exit_code == 2, result
    assert "tsak" in result.stderr and "did you mean 'task'?" in result.stderr
    assert cli("validate", "--offline", "p.yml", "--var", "task=y").exit_code == 0
    bad = cli("validate", "p.yml", "--var", "no-equals-sign")
    assert bad.exit_code == 2, bad


def test_git_compensation_without_git_is_a_load_error(env: Env) -> None:
    """workspace.py: with ``isolation: none`` "git compensations are refused at load";
    otherwise the mistake surfaces only when a rollback fails."""
    env.write(
        "p.yml",
        """
        name: t
        workspace: {isolation: none}
        steps:
          - id: a
            kind: shell
            run: echo
            compensate: {git: reset}
        """,
    )
    result = cli("validate", "p.yml")
    assert result.exit_code == 2, result
    assert result.stderr.removeprefix("error: ").startswith("p.yml:7:"), result


def test_bare_if_expression_is_checked_at_load(env: Env) -> None:
    """``if:`` is an expression with or without ``${{ }}`` (GitHub Actions' rule; the
    engine evaluates both). An unknown var in it must fail the load, not silently
    evaluate to null and skip the step."""
    env.write(
        "p.yml",
        """
        name: t
        vars: {mode: x}
        steps:
          - id: a
            kind: shell
            run: echo
            if: vars.mdoe == 'x'
        """,
    )
    result = cli("validate", "p.yml")
    assert result.exit_code == 2, result
    assert result.stderr.removeprefix("error: ").startswith("p.yml:7:9:"), result
    assert "mdoe" in result.stderr


def test_top_level_env_cannot_reference_steps(env: Env) -> None:
    env.write(
        "p.yml",
        """
        name: t
        env: {X: "${{ steps.a.output.stdout }}"}
        steps:
          - {id: a, kind: shell, run: echo}
        """,
    )
    result = cli("validate", "p.yml")
    assert result.exit_code == 2, result
    assert result.stderr.removeprefix("error: ").startswith("p.yml:2:15: ")
    # The message must make sense for a top-level value (not "runs after None").
    assert "None" not in result.stderr


def test_valid_pipeline_validates(env: Env) -> None:
    env.write("p.yml", DEMO_LIKE)
    result = cli("validate", "--offline", "p.yml")
    assert result.exit_code == 0, result
    assert "plan" in result.stdout and "deploy" in result.stdout
    as_json = cli("validate", "--offline", "p.yml", "--json")
    assert as_json.exit_code == 0, as_json
    assert [s["step_id"] for s in as_json.json()["steps"]] == [
        "plan",
        "read",
        "write",
        "test",
        "deploy",
    ]


def test_validate_of_a_missing_file_exits_2(env: Env) -> None:
    result = cli("validate", "nope.yml")
    assert result.exit_code == 2, result
    assert "nope.yml" in result.stderr
    assert "Traceback" not in result.output


# --- JSON Schema -------------------------------------------------------------------------

DEMO_LIKE = """
name: fix-failing-test
vars:
  task: Make tests/test_calc.py pass
defaults:
  provider: scripted
  model: claude-sonnet-4-5
  retry: {attempts: 2, backoff: 2s}
budget: {max_tokens: 300000, max_cost_usd: 3}
workspace:
  repo: .
  branch: agentsaga/${{ run.id }}
steps:
  - id: plan
    kind: plan
    prompt: "Plan the smallest change that achieves: ${{ vars.task }}"
  - id: read
    kind: read
    files: ["src/**/*.py", "tests/**/*.py"]
    max_tokens: 40000
  - id: write
    kind: write
    prompt: |
      ${{ steps.plan.output.text }}
      ${{ steps.read.output.files }}
      ${{ rewind.error }}
    compensate: {git: reset}
  - id: test
    kind: test
    run: python -m pytest -q
    on_failure: {rewind_to: write, max_rewinds: 2}
  - id: deploy
    kind: deploy
    run: ./scripts/deploy.sh
    irreversible: false
    timeout: 10m
    retry: {attempts: 3, backoff: 500ms, max_backoff: 5s}
    compensate:
      run: ./scripts/deploy.sh --revert "$DEPLOYED_VERSION"
      env: {DEPLOYED_VERSION: "${{ steps.deploy.output.json.version }}"}
"""

COMMANDS_ONLY = """
name: commands
description: shell steps only
on_failure: rollback
on_compensation_failure: continue
env: {A: "1"}
workspace: {isolation: none}
steps:
  - id: build
    kind: shell
    run: [make, build]
    env: {B: two}
    if: ${{ vars.go == 'yes' }}
    compensate: {run: [make, clean], retry: {attempts: 2}, timeout: 30s}
vars: {go: 'yes'}
"""


@pytest.fixture
def schema() -> dict[str, object]:
    result = cli("schema")
    assert result.exit_code == 0, result
    data = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(data)
    return dict(data)


@pytest.mark.parametrize("text", [DEMO_LIKE, COMMANDS_ONLY], ids=["demo", "commands"])
def test_schema_accepts_valid_pipelines(env: Env, schema: dict[str, object], text: str) -> None:
    env.write("p.yml", text)
    assert cli("validate", "--offline", "p.yml").exit_code == 0
    validator = jsonschema.Draft202012Validator(schema)
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(text))]
    assert errors == []


@pytest.mark.parametrize(
    "case", ["unknown-top-key", "unknown-step-key", "unknown-kind", "missing-kind-field"]
)
def test_schema_rejects_what_the_loader_rejects(schema: dict[str, object], case: str) -> None:
    text = textwrap.dedent(MALFORMED[case][0])
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(yaml.safe_load(text)))
