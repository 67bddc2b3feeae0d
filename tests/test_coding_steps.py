"""The coding steps — plan, read, write, test — through whole pipelines, with the real
anthropic client playing against a loopback server, real git and real pytest.

The end-to-end test at the bottom is the product's story: plan, a write that breaks a
test, the rewind with the failure in the prompt, a write that fixes it; plan is paid once,
the rewound write reads its context from the cache; rollback leaves no trace.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentsaga import tokens
from agentsaga.steps.read import render_file
from tests import gitstate
from tests.llm_project import MODELS, Project, make_project
from tests.llm_server import FakeLLMServer

HEAD = f"defaults: {{provider: anthropic, model: {MODELS['anthropic']}}}\n"


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as s:
        yield s


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeLLMServer) -> Project:
    return make_project(tmp_path, monkeypatch, server)


def output_of(project: Project, run_id: str, step: str) -> dict[str, Any]:
    attempts = [a for a in project.attempts(run_id) if a.step_id == step and not a.superseded]
    assert attempts, f"step {step} has no attempt"
    output: dict[str, Any] = attempts[-1].output or {}
    return output


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


def user_text(request_body: dict[str, Any], index: int = 0) -> str:
    """The text of the request's ``index``-th message (Anthropic: a string or blocks)."""
    content = request_body["messages"][index]["content"]
    if isinstance(content, str):
        return content
    return "".join(block["text"] for block in content)


# --- plan -------------------------------------------------------------------------------


def test_plan_output_json_from_a_bare_document_or_a_fenced_block(project: Project) -> None:
    project.server.reply('{"files": ["src/a.py"], "steps": 2}')
    project.server.reply('Here is the plan:\n```json\n{"files": ["b.py"]}\n```\nThat is all.')
    project.server.reply('Sloppy fence:\r\n```JSON\r\n{"files": []}```')
    project.server.reply("Just prose: change src/a.py.")
    steps = "".join(
        f"  - id: {name}\n    kind: plan\n    prompt: Plan {name}\n"
        for name in ("bare", "fenced", "sloppy", "prose")
    )
    text = "name: plans\n" + HEAD + "workspace: {isolation: none}\nsteps:\n" + steps
    project.write("p.yml", text)

    result = project.run_json("run", "p.yml")

    assert result["status"] == "succeeded", result
    rid = result["run_id"]
    assert output_of(project, rid, "bare")["json"] == {"files": ["src/a.py"], "steps": 2}
    fenced = output_of(project, rid, "fenced")
    assert fenced["json"] == {"files": ["b.py"]}
    assert fenced["text"].startswith("Here is the plan:")
    assert output_of(project, rid, "sloppy")["json"] == {"files": []}
    assert output_of(project, rid, "prose")["json"] is None
    # The packaged system prompt went with each call.
    assert all("planning step" in json.dumps(r.body["system"]) for r in project.server.requests)


def test_plan_schema_failure_names_the_failing_path_and_a_retry_asks_again(
    project: Project,
) -> None:
    project.server.reply('{"files": ["src/a.py", 3]}').reply('{"files": ["src/a.py"]}')
    project.write(
        "p.yml",
        "name: schema\n"
        + HEAD
        + """\
workspace: {isolation: none}
steps:
  - id: plan
    kind: plan
    prompt: List the files as JSON.
    retry: {attempts: 2, backoff: 0}
    schema:
      type: object
      required: [files]
      properties:
        files: {type: array, items: {type: string}}
""",
    )

    result = project.run_json("run", "p.yml")

    assert result["status"] == "succeeded", result
    attempts = [a for a in project.attempts(result["run_id"]) if a.step_id == "plan"]
    assert len(attempts) == 2
    message = attempts[0].error["message"]
    assert "files/1" in message and "is not of type 'string'" in message
    # The rejected reply was judged: the retry's identical request went to the model.
    assert project.server.count == 2
    assert attempts[1].output["json"] == {"files": ["src/a.py"]}


def test_plan_schema_failure_without_json_says_so(project: Project) -> None:
    project.server.reply("I would rather not use JSON.")
    project.write(
        "p.yml",
        "name: schema\n"
        + HEAD
        + (
            "workspace: {isolation: none}\nsteps:\n  - id: plan\n    kind: plan\n"
            "    prompt: JSON please\n    schema: {type: object}\n"
        ),
    )

    result = project.run("run", "p.yml")

    assert result.exit_code == 1, result
    assert "holds no JSON" in result.output


# --- read -------------------------------------------------------------------------------


def _body(name: str, lines: int) -> str:
    return "".join(f"def {name}_{i}(x):\n    return x + {i}\n\n" for i in range(lines))


READ_FILES = {
    ".gitignore": "ignored/\nsrc/secret.py\n",
    "src/a.py": _body("a", 12),
    "src/b.py": _body("b", 12),
    "src/zeta.py": _body("zeta", 12),
    "src/skip_me.py": _body("skip", 2),
    "tests/test_a.py": _body("test_a", 12),
    "README.md": "# not matched by the globs\n",
}


@pytest.mark.parametrize("isolation", ["none", "branch"])
def test_read_globs_exclude_gitignore_binary_oversized_and_the_token_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeLLMServer, isolation: str
) -> None:
    project = make_project(tmp_path, monkeypatch, server, files=READ_FILES)
    repo = project.repo
    (repo / "src" / "blob.py").write_bytes(b"\x00\x01binary\x00" * 10)
    (repo / "src" / "big.py").write_text("# big\n" * 1000)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "more files")
    # Ignored (and untracked): present in the folder, never read.
    (repo / "ignored").mkdir()
    (repo / "ignored" / "secret.py").write_text("TOKEN = 'do not read me'\n")
    (repo / "src" / "secret.py").write_text("TOKEN = 'do not read me'\n")

    cost = {p: tokens.count(render_file(p, READ_FILES[p])) for p in ("src/zeta.py", "src/a.py")}
    budget = cost["src/zeta.py"] + cost["src/a.py"] + 5  # two files fit, not three
    server.reply("1. Change src/zeta.py only.")
    server.reply("understood")
    # The pipeline lives outside the repository: `isolation: branch` wants a clean tree.
    pipeline = tmp_path / "p.yml"
    pipeline.write_text(
        "name: reader\n"
        + HEAD
        + f"""\
workspace: {{isolation: {isolation}}}
steps:
  - id: plan
    kind: plan
    prompt: Plan it.
  - id: read
    kind: read
    files: ["./src/**/*.py", "tests/**/*.py"]
    exclude: ["src/skip_*.py"]
    max_tokens: {budget}
    max_file_bytes: 2000
  - id: look
    kind: plan
    prompt: |
      Files:
      ${{{{ steps.read.output.files }}}}
"""
    )

    result = project.run_json("run", pipeline)

    assert result["status"] == "succeeded", result
    out = output_of(project, result["run_id"], "read")
    # The plan names zeta: it comes first; then path order until the budget runs out.
    assert out["paths"] == ["src/zeta.py", "src/a.py"]
    assert out["tokens"] == cost["src/zeta.py"] + cost["src/a.py"]
    skipped = {s["path"]: s for s in out["skipped"]}
    assert set(skipped) == {"src/b.py", "tests/test_a.py", "src/blob.py", "src/big.py"}
    assert skipped["src/b.py"]["reason"] == "over max_tokens"
    # Its size alone says it cannot fit: skipped unread, its tokens an estimate.
    b_tokens = tokens.count(render_file("src/b.py", READ_FILES["src/b.py"]))
    assert skipped["src/b.py"]["estimated"] is True
    assert b_tokens // 2 < skipped["src/b.py"]["tokens"] < b_tokens * 2
    assert skipped["tests/test_a.py"]["reason"] == "over max_tokens"
    assert skipped["src/blob.py"]["reason"] == "binary"
    assert skipped["src/big.py"]["reason"] == "over 2000 bytes"
    # output.files renders in a prompt as each path followed by its fenced content.
    expected = (
        render_file("src/zeta.py", READ_FILES["src/zeta.py"])
        + "\n"
        + render_file("src/a.py", READ_FILES["src/a.py"])
    )
    assert out["files"] == expected
    assert expected.startswith("src/zeta.py\n```python\ndef zeta_0(x):\n")
    look = project.requests_with("Files:")
    assert len(look) == 1 and expected in user_text(look[0].body)
    assert "do not read me" not in json.dumps([r.body for r in server.requests])


# --- write ------------------------------------------------------------------------------

CALC = "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n"

WRITE = (
    "name: writer\n"
    + HEAD
    + """\
steps:
  - id: write
    kind: write
    prompt: Fix add() and document it.
    max_reflections: REFLECTIONS
    compensate: {git: reset}
"""
)

FIX_ADD = """\
I will fix add and add a note.

src/calc.py
<<<<<<< SEARCH
def add(a, b):
    return a - b
=======
def add(a, b):
    return a + b
>>>>>>> REPLACE

docs/NOTES.md
<<<<<<< SEARCH
=======
add() adds.
>>>>>>> REPLACE
"""


def test_write_applies_the_blocks_and_commits_them_on_the_run_branch(project: Project) -> None:
    project.write("src/calc.py", CALC)
    git(project.repo, "add", "-A")
    git(project.repo, "commit", "-q", "-m", "calc")
    main_before = git(project.repo, "rev-parse", "main").strip()
    project.server.reply(FIX_ADD)
    project.write("p.yml", WRITE.replace("REFLECTIONS", "2"))

    result = project.run_json("run", "p.yml")

    assert result["status"] == "succeeded", result
    out = output_of(project, result["run_id"], "write")
    assert out["base"] == main_before
    assert out["commit"] != out["base"]
    assert out["changed"] == ["docs/NOTES.md", "src/calc.py"]
    assert out["blocks_applied"] == 2
    assert out["reflections"] == 0
    assert out["diffstat"] == {"files": 2, "insertions": 2, "deletions": 1}
    assert git(project.repo, "show", f"{out['commit']}:src/calc.py") == CALC.replace(
        "return a - b", "return a + b", 1
    )
    assert git(project.repo, "rev-parse", f"{out['commit']}^").strip() == out["base"]
    branch = f"agentsaga/{result['run_id']}"
    assert git(project.repo, "rev-parse", branch).strip() == out["commit"]
    # The user's checkout is untouched (the run worked in its own worktree).
    assert git(project.repo, "rev-parse", "main").strip() == main_before
    assert (project.repo / "src" / "calc.py").read_text() == CALC


def test_write_reflects_a_failing_block_back_to_the_model(project: Project) -> None:
    project.write("src/calc.py", CALC)
    git(project.repo, "add", "-A")
    git(project.repo, "commit", "-q", "-m", "calc")
    wrong = FIX_ADD.replace("    return a - b\n=======", "    return a  -  b  # nope\n=======")
    project.server.reply(wrong).reply(FIX_ADD)
    project.write("p.yml", WRITE.replace("REFLECTIONS", "2"))

    result = project.run_json("run", "p.yml")

    assert result["status"] == "succeeded", result
    assert project.server.count == 2
    second = project.server.requests[1].body
    roles = [m["role"] for m in second["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert "Fix add() and document it." in user_text(second, 0)
    assert user_text(second, 1) == wrong
    feedback = user_text(second, 2)
    assert "1 of 2 edit blocks failed" in feedback
    assert "src/calc.py" in feedback
    assert "def add(a, b):" in feedback  # the closest existing lines
    assert "NOT applied" in feedback and "docs/NOTES.md" in feedback
    out = output_of(project, result["run_id"], "write")
    assert out["reflections"] == 1 and out["blocks_applied"] == 2


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../outside.txt", ".."),
        ("/tmp/agentsaga-absolute.txt", "absolute"),
        (".git/hooks/pre-commit", ".git"),
    ],
)
def test_write_refuses_a_path_outside_the_workspace(project: Project, path: str, why: str) -> None:
    project.server.reply(f"{path}\n<<<<<<< SEARCH\n=======\nowned\n>>>>>>> REPLACE\n")
    project.write("p.yml", WRITE.replace("REFLECTIONS", "0"))
    before = gitstate.capture(project.repo)

    result = project.run("run", "p.yml")

    assert result.exit_code == 1, result
    assert path in result.output
    assert why in result.output.split(path, 1)[1]
    assert not (project.repo.parent / "outside.txt").exists()
    assert not Path("/tmp/agentsaga-absolute.txt").exists()
    rid = project.newest_run_id()
    worktree = project.repo / ".agentsaga" / "worktrees" / rid
    assert not (worktree.parent / "outside.txt").exists()
    assert not (project.repo / ".git" / "hooks" / "pre-commit").exists()
    after = gitstate.capture(project.repo)
    assert after["files"] == before["files"]


# --- end to end -------------------------------------------------------------------------

E2E_FILES = {
    "calc.py": "def add(a, b):\n    return a + b\n\n\ndef multiply(a, b):\n    return a + b\n",
    "tests/test_calc.py": (
        "from calc import add, multiply\n\n\n"
        "def test_add():\n    assert add(2, 3) == 5\n\n\n"
        "def test_multiply():\n    assert multiply(2, 3) == 6\n"
    ),
    ".gitignore": "__pycache__/\n",
}

E2E_PIPELINE = (
    "name: e2e\n"
    + HEAD
    + """\
vars:
  task: Make tests/test_calc.py pass
steps:
  - id: plan
    kind: plan
    prompt: "Plan the smallest change that achieves: ${{ vars.task }}"
  - id: read
    kind: read
    files: ["*.py", "tests/**/*.py"]
    max_tokens: 20000
  - id: write
    kind: write
    prompt: |
      ${{ steps.plan.output.text }}
      ${{ steps.read.output.files }}
      ${{ rewind.error }}
    compensate: {git: reset}
  - id: test
    kind: test
    run: python -m pytest -q -p no:cacheprovider tests
    env: {PYTHONDONTWRITEBYTECODE: "1", PYTHONPATH: "."}
    on_failure: {rewind_to: write, max_rewinds: 2}
"""
)

BREAK_ADD = """\
calc.py
<<<<<<< SEARCH
def add(a, b):
    return a + b
=======
def add(a, b):
    return a * b
>>>>>>> REPLACE
"""

FIX_MULTIPLY = """\
calc.py
<<<<<<< SEARCH
def multiply(a, b):
    return a + b
=======
def multiply(a, b):
    return a * b
>>>>>>> REPLACE
"""

PLAN_TEXT = "1. In calc.py, multiply() adds: make it multiply. Touch nothing else."


@pytest.mark.slow
def test_end_to_end_plan_break_rewind_fix_then_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeLLMServer
) -> None:
    project = make_project(tmp_path, monkeypatch, server, config="", files=E2E_FILES)
    before = gitstate.capture(project.repo)
    server.reply(PLAN_TEXT, usage={"input": 900, "output": 60})
    server.reply(BREAK_ADD, usage={"input": 120, "output": 80, "cache_write": 1500})
    server.reply(FIX_MULTIPLY, usage={"input": 260, "output": 80, "cache_read": 1500})
    pipeline = tmp_path / "pipeline.yml"
    pipeline.write_text(E2E_PIPELINE)

    result = project.run_json("run", pipeline)

    assert result["status"] == "succeeded", result
    rid = result["run_id"]
    plans = project.requests_with("planning step")
    writes = project.requests_with("editing step")
    assert (len(plans), len(writes), server.count) == (1, 2, 3)
    first, second = writes[0].body, writes[1].body
    # The rewound write was told which test failed (rewind.error); the first pass had
    # nothing after the prefix, and sent no whitespace-only block (the API rejects those).
    assert len(first["messages"][0]["content"]) == 1
    told = second["messages"][0]["content"][1]["text"]
    assert "tests/test_calc.py::test_multiply" in told and "tests failed" in told
    # The stable prefix (plan + files) is marked for caching, and is the same both times.
    for body in (first, second):
        prefix = body["messages"][0]["content"][0]
        assert prefix["cache_control"] == {"type": "ephemeral"}
        assert prefix["text"].startswith(PLAN_TEXT)
        assert "multiply" in prefix["text"] and "tests/test_calc.py" in prefix["text"]
    assert first["messages"][0]["content"][0] == second["messages"][0]["content"][0]
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}

    statuses = [(a.step_id, a.status) for a in project.attempts(rid)]
    assert statuses == [
        ("plan", "completed"),
        ("read", "completed"),
        ("write", "compensated"),
        ("test", "failed"),
        ("write", "completed"),
        ("test", "completed"),
    ]
    out = output_of(project, rid, "write")
    assert "return a * b" in git(project.repo, "show", f"{out['commit']}:calc.py")
    assert git(project.repo, "show", f"{out['commit']}:calc.py").count("a * b") == 1

    report = project.report(rid)
    served = 960 + 1700 + 1840
    assert report["spent_tokens"] == served
    assert report["usage"] == {
        "input": 1280,
        "output": 220,
        "cache_read": 1500,
        "cache_write": 1500,
    }
    assert report["clean_pass_tokens"] == 960 + 1840
    assert report["saved_tokens"] == 960  # the plan, not paid again
    assert report["tax_saga"] < report["tax_restart"]
    print("E2E token report:", json.dumps({k: v for k, v in report.items() if k != "steps"}))

    rolled = project.run_json("rollback", rid)

    assert rolled["status"] == "rolled_back", rolled
    assert gitstate.capture(project.repo) == before
