"""The agent step: a tool-use loop checkpointed turn by turn, with the real anthropic and
openai clients against the loopback server (both tool-call wire formats), real git, real
commands, real SIGKILLs.

The durability proof is the dbos way: a process killed inside every turn of a six-turn
run, resumed each time; the server counts what was paid for, git shows what the files
became, and both are compared with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentsaga.agent.transcript import agent_transcript, format_transcript
from agentsaga.store import open_store
from tests import gitstate, zygote
from tests.conftest import Result, cli
from tests.llm_project import MODELS, Project, make_project
from tests.llm_server import Behaviour, FakeLLMServer, RecordedRequest

PY = sys.executable
CALC_BUGGY = "def add(a, b):\n    return a - b\n"
TEST_CALC = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
FILES = {"calc.py": CALC_BUGGY, "tests/test_calc.py": TEST_CALC, "tests/__init__.py": ""}


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as s:
        yield s


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeLLMServer) -> Project:
    return make_project(tmp_path, monkeypatch, server, files=FILES)


def pipeline(provider: str, extra: str = "", *, commands: str = "[pytest_cmd]") -> str:
    return f"""\
name: agent-fix
vars:
  pytest_cmd: {PY} -m pytest -q
defaults: {{provider: {provider}, model: {MODELS.get(provider, "scripted")}}}
steps:
  - id: fix
    kind: agent
    prompt: "Make tests/test_calc.py pass."
    commands: {commands}
{extra}"""


def run_pipeline(project: Project, text: str, *args: str) -> tuple[int, str]:
    project.write("pipeline.yml", text)
    result = project.run("run", "pipeline.yml", *args)
    run_id = project.newest_run_id()
    return result.exit_code, run_id


def output_of(project: Project, run_id: str, step: str = "fix") -> dict[str, Any]:
    attempts = [a for a in project.attempts(run_id) if a.step_id == step]
    return dict(attempts[-1].output or {})


def file_at(project: Project, commit: str, path: str) -> str:
    return gitstate.git(project.repo, "show", f"{commit}:{path}")


def tool_messages(api: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool results a request carries, in a common shape: call id, content, error."""
    found = []
    for message in body["messages"]:
        if api == "openai" and message["role"] == "tool":
            found.append({"id": message["tool_call_id"], "content": message["content"]})
        if api == "anthropic" and isinstance(message["content"], list):
            for block in message["content"]:
                if block["type"] == "tool_result":
                    found.append(
                        {
                            "id": block["tool_use_id"],
                            "content": block["content"],
                            "is_error": block.get("is_error", False),
                        }
                    )
    return found


def turn_of(request: RecordedRequest) -> int:
    """Which turn a request asks for: one more than the assistant messages it holds."""
    return 1 + sum(1 for m in request.body["messages"] if m["role"] == "assistant")


# --- the bug fixed in four turns, both wire formats -------------------------------------


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_bug_fixed_in_four_turns(project: Project, server: FakeLLMServer, provider: str) -> None:
    server.tool_call("read_file", usage={"input": 100, "output": 10}, path="calc.py")
    server.tool_call(
        "edit_file",
        usage={"input": 150, "output": 20},
        path="calc.py",
        old_text="return a - b",
        new_text="return a + b",
    )
    server.tool_call(
        "run_command", usage={"input": 200, "output": 10}, argv=[PY, "-m", "pytest", "-q"]
    )
    server.tool_call("finish", usage={"input": 300, "output": 10}, summary="add() added")
    code, run_id = run_pipeline(project, pipeline(provider))
    assert code == 0, project.run("show", run_id)
    assert server.count == 4
    out = output_of(project, run_id)
    assert out["summary"] == "add() added"
    assert out["turns"] == 4
    assert out["changed"] == ["calc.py"]
    assert out["diffstat"] == {"files": 1, "insertions": 1, "deletions": 1}
    assert file_at(project, out["commit"], "calc.py") == "def add(a, b):\n    return a + b\n"
    assert gitstate.git(project.repo, "rev-parse", f"{out['commit']}^").strip() == out["base"]

    bodies = [r.body for r in server.requests]
    # The tools are offered in the API's own shape.
    if provider == "anthropic":
        names = [t["name"] for t in bodies[0]["tools"]]
        assert "input_schema" in bodies[0]["tools"][0]
    else:
        names = [t["function"]["name"] for t in bodies[0]["tools"]]
        assert bodies[0]["tools"][0]["type"] == "function"
    assert names == [
        "read_file", "list_files", "search", "edit_file", "create_file", "run_command", "finish"
    ]  # fmt: skip
    # Each turn's request carries every earlier result, under the id of its call.
    results = tool_messages(provider, bodies[3])
    assert [r["id"] for r in results] == ["call_1_1", "call_2_1", "call_3_1"]
    assert "return a - b" in results[0]["content"]
    assert results[1]["content"] == "edited calc.py"
    assert "exit code 0" in results[2]["content"] and "1 passed" in results[2]["content"]
    # The ledger has every turn's usage, as the API reported it.
    report = project.report(run_id)
    assert report["usage"]["input"] == 750


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_disallowed_command_and_outside_edit_are_refused_and_reported(
    project: Project, server: FakeLLMServer, provider: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched\n")
    server.tool_call("run_command", argv=["rm", "-rf", "calc.py"])
    server.tool_call("run_command", argv=[PY, "-c", "print(1)"])
    server.tool_call("edit_file", path="../outside.txt", old_text="untouched", new_text="owned")
    server.tool_call("create_file", path=str(outside), content="owned")
    server.tool_call("read_file", path="../outside.txt")
    server.tool_call("read_file", path=".git/config")
    server.tool_call("finish", summary="gave up")
    code, run_id = run_pipeline(project, pipeline(provider))
    assert code == 0
    results = tool_messages(provider, server.requests[6].body)
    assert results[0]["content"].startswith("refused: rm -rf calc.py is not allowed here")
    assert shlex.join([PY, "-m", "pytest", "-q"]) in results[0]["content"]
    assert results[1]["content"].startswith("refused:")  # a prefix of python, not pytest
    assert "path refused: '..' is not allowed" in results[2]["content"]
    assert "path refused: absolute paths are not allowed" in results[3]["content"]
    assert "editable: any text file of the workspace" in results[2]["content"]
    # A read is refused in a read's words, and told what it may read.
    read = results[4]["content"]
    assert read.startswith("read_file: path refused: '..' is not allowed in paths to read")
    assert "readable: any file of the workspace, by a path relative to" in read
    assert "edit" not in read
    assert results[5]["content"].startswith(
        "read_file: path refused: files inside .git are not read; readable:"
    )
    if provider == "anthropic":
        assert all(r["is_error"] for r in results)
    assert outside.read_text() == "untouched\n"
    out = output_of(project, run_id)
    assert out["changed"] == []
    assert (project.repo / "calc.py").read_text() == CALC_BUGGY


def test_edit_that_does_not_match_gets_the_closest_lines(
    project: Project, server: FakeLLMServer
) -> None:
    old = "def add(a, b):\n    return a -  b"  # one space too many
    server.tool_call("edit_file", path="calc.py", old_text=old, new_text="z")
    server.tool_call("finish", summary="no")
    code, _ = run_pipeline(project, pipeline("anthropic"))
    assert code == 0
    result = tool_messages("anthropic", server.requests[1].body)[0]
    assert result["is_error"]
    assert "old_text is not in calc.py" in result["content"]
    assert "closest existing lines, from line 1" in result["content"]
    assert "    return a - b\n" in result["content"]


# --- stops: budget, max_turns, stuck -------------------------------------------------------


def test_budget_stops_the_loop_before_the_call_that_would_cross_it(
    project: Project, server: FakeLLMServer
) -> None:
    # Each reply reports 1,000 tokens; the worst case of the next call is its prompt plus
    # max_tokens (200). With 2,600 allowed, calls 1 and 2 fit (2,000 spent); the third
    # would reach 2,000 + prompt + 200 > 2,600 once its prompt passes 400 tokens.
    server.script(
        lambda r: Behaviour("reply", tool_calls=[_list_call()], usage={"input": 990, "output": 10})
    )
    extra = "    max_tokens: 200\n    budget: {max_tokens: 2600}\n"
    text = pipeline("anthropic", extra).replace(
        'prompt: "Make tests/test_calc.py pass."', f'prompt: "{"pad " * 150}"'
    )
    code, run_id = run_pipeline(project, text)
    assert code == 1
    assert server.count == 2  # the third call was never sent
    attempt = project.attempts(run_id)[-1]
    assert attempt.error is not None and attempt.error["kind"] == "budget"


def _list_call() -> dict[str, Any]:
    return {"name": "list_files", "arguments": {"glob": "*.py"}}


def test_max_turns_fails_with_kind_turns(project: Project, server: FakeLLMServer) -> None:
    counter = iter(range(1000))
    server.script(
        lambda r: Behaviour(
            "reply", tool_calls=[{"name": "search", "arguments": {"pattern": f"x{next(counter)}"}}]
        )
    )
    code, run_id = run_pipeline(project, pipeline("openai", "    max_turns: 3\n"))
    assert code == 1
    assert server.count == 3
    attempt = project.attempts(run_id)[-1]
    assert attempt.error is not None and attempt.error["kind"] == "turns"


def test_the_same_call_and_result_three_times_is_stuck(
    project: Project, server: FakeLLMServer
) -> None:
    server.script(lambda r: Behaviour("reply", tool_calls=[_list_call()]))
    code, run_id = run_pipeline(project, pipeline("anthropic"))
    assert code == 1
    assert server.count == 3
    attempt = project.attempts(run_id)[-1]
    assert attempt.error is not None and attempt.error["kind"] == "stuck"


# --- the scripted provider (offline) ------------------------------------------------------


def test_scripted_agent_runs_offline(project: Project) -> None:
    extra = """\
    replies:
      - {tool: read_file, args: {path: calc.py}}
      - tool_calls:
          - {name: edit_file, arguments: {path: calc.py, old_text: "a - b", new_text: "a + b"}}
          - {name: run_command, arguments: {argv: [PYTHON, -m, pytest, -q]}}
      - {tool: finish, args: {summary: fixed}}
""".replace("PYTHON", PY)
    code, run_id = run_pipeline(project, pipeline("scripted", extra))
    assert code == 0
    out = output_of(project, run_id)
    assert out["turns"] == 3 and out["changed"] == ["calc.py"]
    store = open_store(str(project.store_path))
    try:
        calls = store.tool_calls(run_id, "fix")
        turns = store.agent_turns(run_id, "fix")
    finally:
        store.close()
    assert [(c.turn, c.tool, c.status) for c in calls] == [
        (1, "read_file", "done"),
        (2, "edit_file", "done"),
        (2, "run_command", "done"),
        (3, "finish", "done"),
    ]
    assert calls[2].result is not None and "1 passed" in calls[2].result["content"]
    # Turn 2 changed files: it ends with a snapshot; the read-only turns do not.
    assert [t.snapshot is not None for t in turns] == [False, True, False]
    # The transcript, turn by turn: tool, arguments, result size, tokens.
    store = open_store(str(project.store_path))
    try:
        lines = format_transcript(agent_transcript(store, run_id, "fix"))
    finally:
        store.close()
    assert lines[0] == f"agent step fix of run {run_id}: 3 turn(s)"
    assert lines[1].startswith("turn   1 (attempt 1): ") and " in, " in lines[1]
    assert lines[2].startswith("      read_file(path=calc.py) -> ")
    assert lines[2].endswith(" chars")
    assert "edit_file(path=calc.py, old_text=a - b, new_text=a + b) -> 14 chars" in lines[4]
    assert lines[5].startswith(f'      run_command(argv=["{PY}"')
    assert lines[6].startswith("      files snapshotted: ")


# --- killed inside every turn, resumed -----------------------------------------------------

SIX_TURNS: list[dict[str, Any]] = [
    {"name": "read_file", "arguments": {"path": "calc.py"}},
    {
        "name": "edit_file",
        "arguments": {
            "path": "calc.py",
            "old_text": "return a - b",
            "new_text": "return a - b  # fixed below\n    return a + b",
        },
    },
    {"name": "run_command", "arguments": {"argv": [PY, "-m", "pytest", "-q"]}},
    {"name": "create_file", "arguments": {"path": "NOTES.md", "content": "add fixed\n"}},
    {"name": "search", "arguments": {"pattern": "return"}},
    {"name": "finish", "arguments": {"summary": "fixed"}},
]


def six_turn_model(request: RecordedRequest) -> Behaviour:
    call = SIX_TURNS[turn_of(request) - 1]
    return Behaviour("reply", tool_calls=[call], usage={"input": 100, "output": 10})


#: Whether a resumed process passes the point again for the turn it died in (then the next
#: kill must be its second passage, in the next turn).
POINTS = {
    "agent.after_reply": True,
    "agent.in_tool": True,
    "agent.after_tool": True,
    "agent.before_turn": True,
    "agent.after_turn": False,
    "llm.before_record": True,
}


def _final_tree(project: Project, run_id: str) -> tuple[str, str]:
    out = output_of(project, run_id)
    tree = gitstate.git(project.repo, "rev-parse", f"{out['commit']}^{{tree}}").strip()
    return tree, file_at(project, out["commit"], "calc.py")


# Each point with one wire format (seven processes a case: both for the one in a tool).
CASES = [
    ("agent.after_reply", "anthropic"),
    ("agent.in_tool", "openai"),
    ("agent.after_tool", "anthropic"),
    ("agent.after_tool", "openai"),
    ("agent.before_turn", "anthropic"),
    ("agent.after_turn", "openai"),
    ("llm.before_record", "anthropic"),
]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.usefixtures("fork_server")  # the seven processes of a case fork, pre-imported
@pytest.mark.parametrize(("point", "provider"), CASES)
def test_killed_in_every_turn_then_resumed(
    project: Project, server: FakeLLMServer, provider: str, point: str
) -> None:
    server.script(six_turn_model)
    project.write("pipeline.yml", pipeline(provider))
    first = project.subprocess("run", "pipeline.yml", fault=f"{point}:1")
    assert first.exit_code == -9, first
    run_id = project.newest_run_id()
    kills = 1
    again = f"{point}:2" if POINTS[point] else f"{point}:1"
    while True:
        result = project.subprocess("resume", run_id, fault=again)
        if result.exit_code == 0:
            break
        assert result.exit_code == -9, result
        kills += 1
        assert kills <= 6, "killed more often than there are turns"
    assert kills == 6
    in_flight = 6 if point == "llm.before_record" else 0
    assert server.count == 6 + in_flight
    assert sorted(turn_of(r) for r in server.requests) == sorted(
        list(range(1, 7)) + (list(range(1, 7)) if in_flight else [])
    )
    # The report counts the continued turns as one clean pass, and what a restart of the
    # step would have paid again as reused. (A reply lost in flight was billed, but never
    # reached the ledger: only the server counted it.)
    report = project.report(run_id)
    assert report["spent_tokens"] == 660
    assert report["clean_pass_tokens"] == 660
    assert report["restart_counterfactual_tokens"] > report["spent_tokens"]
    # The transcript shows every turn once, and the turns a kill interrupted as such.
    store = open_store(str(project.store_path))
    try:
        transcript = agent_transcript(store, run_id, "fix")
    finally:
        store.close()
    rows = transcript["turns"]
    assert sorted(r["turn"] for r in rows if r["complete"]) == [1, 2, 3, 4, 5, 6]
    cut_short = [r for r in rows if not r["complete"]]
    assert len(cut_short) == (
        6 if point in ("agent.in_tool", "agent.after_tool", "agent.before_turn") else 0
    )
    text = "\n".join(format_transcript(transcript))
    assert text.startswith(f"agent step fix of run {run_id}: 6 turn(s)")
    assert ("(in flight when its process died)" in text) == bool(cut_short)
    interrupted_tree = _final_tree(project, run_id)
    out = output_of(project, run_id)
    assert out["turns"] == 6 and out["resumed_at_turn"] == 6 + (point == "agent.after_turn")
    # A command whose turn was in flight ran again, and the model was told so, with the key.
    notes = [r for r in server.requests if "AGENTSAGA_IDEMPOTENCY_KEY=" in json.dumps(r.body)]
    rerun = point in ("agent.in_tool", "agent.after_tool", "agent.before_turn")
    assert bool(notes) == rerun
    if rerun:
        assert f"{run_id}:fix:1:3.1" in json.dumps(notes[0].body)

    # The same run, never interrupted.
    server.requests.clear()
    code, clean_id = run_pipeline(project, pipeline(provider))
    assert code == 0 and server.count == 6
    assert _final_tree(project, clean_id) == interrupted_tree
    # The edit was applied once: its line is there once, not twice.
    assert interrupted_tree[1].count("return a + b") == 1


# --- rewind: a later test's failure reaches the agent's prompt ------------------------------


def test_rewind_brings_the_failure_to_a_fresh_conversation_with_a_cached_prefix(
    project: Project, server: FakeLLMServer
) -> None:
    server.tool_call("finish", summary="looks fine to me")  # pass 1: changes nothing
    server.tool_call("edit_file", path="calc.py", old_text="a - b", new_text="a + b")
    server.tool_call("finish", summary="fixed")
    text = f"""\
name: agent-rewind
defaults: {{provider: anthropic, model: {MODELS["anthropic"]}}}
steps:
  - id: fix
    kind: agent
    prompt: |
      Make the tests pass.
      ${{{{ rewind.error }}}}
  - id: test
    kind: test
    run: [{PY}, -m, pytest, -q]
    on_failure: {{rewind_to: fix, max_rewinds: 1}}
"""
    code, run_id = run_pipeline(project, text)
    assert code == 0, project.run("show", run_id)
    assert server.count == 3
    first, second = server.requests[0].body, server.requests[1].body
    # The second pass is a new conversation (the rewound attempt is not continued)...
    assert [m["role"] for m in second["messages"]] == ["user"]
    # ...whose stable start is the same cacheable prefix as the first pass's...
    prefix = first["messages"][0]["content"][0]
    assert prefix["cache_control"] == {"type": "ephemeral"}
    assert prefix["text"] == "Make the tests pass.\n"
    assert second["messages"][0]["content"][0] == prefix
    # ...followed by the failure of the test step.
    rest = second["messages"][0]["content"][1]["text"]
    assert "tests failed" in rest and "assert" in rest
    out = output_of(project, run_id)
    assert out["summary"] == "fixed" and out["turns"] == 2


# --- the example pipeline, with the loopback server playing the model ---------------------


def test_the_example_agent_pipeline_runs(project: Project, server: FakeLLMServer) -> None:
    examples = Path(__file__).resolve().parent.parent / "pipelines"
    test_command = f"{PY} -m pytest -q -p no:cacheprovider"
    server.tool_call("edit_file", path="calc.py", old_text="a - b", new_text="a + b")
    server.tool_call("run_command", argv=shlex.split(test_command))
    server.tool_call("finish", summary="fixed")
    result = project.run_json(
        "run",
        examples / "agent-fix.yml",
        "--var",
        "task=Make tests/test_calc.py pass",
        "--var",
        f"test_command={test_command}",
    )
    assert result["status"] == "succeeded", result
    assert server.count == 3
    ran = tool_messages("anthropic", server.requests[2].body)[1]["content"]
    assert "exit code 0" in ran and "1 passed" in ran


# --- the offline demo's agent variant, as its comment tells it -----------------------------


def _agentsaga(cwd: Path, *args: str | Path, fault: str | None = None) -> Result:
    env = {k: v for k, v in os.environ.items() if k != "AGENTSAGA_FAULT"}
    if fault:
        env["AGENTSAGA_FAULT"] = fault
    proc = zygote.launch([str(a) for a in args], cwd, env, timeout=120)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.usefixtures("fork_server")
def test_demo_agent_killed_mid_run_resumes_at_its_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed = _agentsaga(
        tmp_path, "demo", "--agent", "--dir", tmp_path / "demo", fault="agent.after_tool:3"
    )
    assert killed.exit_code == -9, killed
    repo = tmp_path / "demo" / "repo"
    store = open_store(None, repo)  # where the demo's store is (the test's AGENTSAGA_STORE)
    try:
        run_id = store.list_runs()[0].id
    finally:
        store.close()
    resumed = _agentsaga(repo, "resume", run_id)
    assert resumed.exit_code == 0, resumed
    monkeypatch.chdir(repo)
    report = cli("report", run_id, "--json").json()
    # Five replies, each paid once: turn 3's came from the call log.
    assert report["spent_tokens"] == report["clean_pass_tokens"] == 2160 + 2440 + 2740 + 2820 + 3010
    assert report["reused_from_log_tokens"] == 2740


def test_search_does_not_read_through_a_symlink_out_of_the_workspace_or_into_git(
    tmp_path: Path,
) -> None:
    """read_file refuses a tracked symlink that leads outside; search must too, or a model
    reads any file of the machine by searching for '.' (found in review)."""
    from agentsaga.agent.tools import Toolbox
    from agentsaga.providers.base import ToolCall

    outside = tmp_path / "outside.txt"
    outside.write_text("OUTSIDE-SECRET-LINE\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "a.txt").write_text("inside line\n")
    (repo / "out").symlink_to(outside)
    (repo / "cfg").symlink_to(".git/config")
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    box = Toolbox(root=repo, uses_git=True, allowed=[], env={}, log_dir=tmp_path / "logs")
    for pattern in ("OUTSIDE-SECRET", r"\[core\]", "line"):
        outcome = box.run(ToolCall("c1", "search", {"pattern": pattern}), "k", "log")
        assert "OUTSIDE-SECRET-LINE" not in outcome.content
        assert "[core]" not in outcome.content
    found = box.run(ToolCall("c2", "search", {"pattern": "inside"}), "k", "log")
    assert found.content == "a.txt:1: inside line"


def test_a_catastrophic_search_pattern_is_cut_off_not_a_hung_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model writes search's regular expression: "(a|aa)+$" against a line of 40 a's
    backtracks for hours; the call answers with an error instead (found in review)."""
    import agentsaga.agent.tools as tools
    from agentsaga.agent.tools import Toolbox
    from agentsaga.providers.base import ToolCall

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.txt").write_text("a" * 40 + "!\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "-A"], check=True)
    box = Toolbox(root=tmp_path, uses_git=True, allowed=[], env={}, log_dir=tmp_path / "logs")
    monkeypatch.setattr(tools, "SEARCH_TIMEOUT_S", 0.5)
    outcome = box.run(ToolCall("c1", "search", {"pattern": "(a|aa)+$"}), "k", "log")
    assert outcome.is_error
    assert "simplify it" in outcome.content
    fine = box.run(ToolCall("c2", "search", {"pattern": "a+!"}), "k", "log")
    assert fine.content.startswith("a.txt:1: aaaa")


def test_an_argv_no_command_can_take_is_reported_to_the_model_not_a_failed_step(
    tmp_path: Path,
) -> None:
    """run_command with a NUL byte or a 200 KB argument: execve refuses; the model is told
    and may go on (found in review: the whole agent step failed)."""
    from agentsaga.agent.tools import Toolbox
    from agentsaga.providers.base import ToolCall

    box = Toolbox(
        root=tmp_path, uses_git=False, allowed=[["echo"]], env={}, log_dir=tmp_path / "logs"
    )
    for bad in ("a\0b", "A" * 200_000):
        outcome = box.run(ToolCall("c1", "run_command", {"argv": ["echo", bad]}), "k", "log")
        assert outcome.is_error
        assert outcome.content.startswith("run_command: cannot run the command")
    ok = box.run(ToolCall("c2", "run_command", {"argv": ["echo", "fine"]}), "k", "log")
    assert not ok.is_error and "fine" in ok.content


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_tool_arguments_that_are_not_an_object_go_back_to_the_model(
    project: Project, server: FakeLLMServer, provider: str
) -> None:
    """A tool call whose arguments are a string, not an object: the model is told and the
    loop goes on; the reply is not taken for a malformed response and asked again (found
    in review: the Anthropic provider retried it, paying for it unrecorded)."""
    server.reply("", tool_calls=[{"name": "read_file", "arguments": "calc.py"}])
    server.tool_call("finish", summary="gave up")
    code, run_id = run_pipeline(project, pipeline(provider))
    assert code == 0
    assert server.count == 2
    second = server.requests[1].body
    assert "not a JSON object" in json.dumps(second)


def test_malformed_tool_arguments_are_answered_never_raised(tmp_path: Path) -> None:
    """Arguments of the wrong shape go back to the model as errors (found in review:
    read_file with start_line "ten" or NaN, run_command with an unclosed quote raised)."""
    from agentsaga.agent.tools import Toolbox
    from agentsaga.providers.base import ToolCall

    (tmp_path / "a.txt").write_text("one\ntwo\n")
    box = Toolbox(
        root=tmp_path, uses_git=False, allowed=[["echo"]], env={}, log_dir=tmp_path / "logs"
    )
    for name, args in [
        ("read_file", {"path": "a.txt", "start_line": "ten"}),
        ("read_file", {"path": "a.txt", "start_line": [1]}),
        ("read_file", {"path": "a.txt", "end_line": float("nan")}),
        ("read_file", {"path": "a.txt", "end_line": float("inf")}),
        ("run_command", {"argv": 'echo "unclosed'}),
    ]:
        outcome = box.run(ToolCall("c1", name, args), "k", "log")
        assert outcome.is_error, (name, args)
    fine = box.run(ToolCall("c2", "read_file", {"path": "a.txt", "start_line": "2"}), "k", "l")
    assert "two" in fine.content and "one" not in fine.content
