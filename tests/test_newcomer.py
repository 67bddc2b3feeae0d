"""Issue 12: what a newcomer meets in the first hour. Each test is one of the issue's
items, driven through the real CLI against real repositories and stores."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Env, Result, cli
from tests.gitstate import git, make_repo

FILES = {"calc.py": "def add(a, b):\n    return a - b\n", "notes.txt": "one\ntwo\n"}


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository; the store is its default one (``.agentsaga/state.db`` inside it)."""
    monkeypatch.delenv("AGENTSAGA_STORE", raising=False)
    root = make_repo(tmp_path, FILES)
    monkeypatch.chdir(root)
    return root


def write_pipeline(where: Path, body: str, name: str = "p") -> Path:
    path = where / f"{name}.yml"
    path.write_text(body)
    return path


EDITING = """\
name: editing
workspace: {isolation: worktree}
steps:
  - id: fix
    kind: shell
    run: "sed -i 's/a - b/a + b/' calc.py && printf 'three' >> notes.txt"
    commit: true
  - id: more
    kind: shell
    run: "echo new > added.txt"
    commit: true
"""


def run_json(*args: str | Path) -> tuple[Result, dict[str, object]]:
    result = cli(*args, "--json")
    return result, json.loads(result.stdout)


# --- 1. a diff is a patch ----------------------------------------------------------------------


def test_the_run_diff_applies_with_git_apply(repo: Path, tmp_path: Path) -> None:
    result, doc = run_json("run", write_pipeline(tmp_path, EDITING))
    assert result.exit_code == 0, result
    rid = str(doc["run_id"])
    for args in ((rid,), (rid, "fix"), (rid, "more")):
        patch = cli("diff", *args)
        assert patch.exit_code == 0, patch
        assert patch.stdout.endswith("\n")
        # The patch applies to a checkout of where the step (or the run) started.
        clone = tmp_path / f"clone-{len(args)}-{args[-1]}"
        git(tmp_path, "clone", "-q", str(repo), str(clone))
        if args[1:] == ("more",):
            git(clone, "fetch", "-q", str(repo), f"agentsaga/{rid}")
            git(clone, "checkout", "-q", "FETCH_HEAD~1")
        (tmp_path / "x.patch").write_text(patch.stdout)
        applied = subprocess.run(
            ["git", "apply", "--check", str(tmp_path / "x.patch")],
            cwd=clone,
            capture_output=True,
            text=True,
            check=False,
        )
        assert applied.returncode == 0, applied.stderr


# --- 4. an unknown step is bad input -----------------------------------------------------------


@pytest.mark.parametrize("command", ["diff", "logs"])
def test_an_unknown_step_exits_2_with_a_did_you_mean(
    repo: Path, tmp_path: Path, command: str
) -> None:
    result, doc = run_json("run", write_pipeline(tmp_path, EDITING))
    rid = str(doc["run_id"])
    typo = cli(command, rid, "mroe")
    assert typo.exit_code == 2, typo
    assert "did you mean 'more'" in typo.stderr
    assert "Traceback" not in typo.output
    assert cli(command, rid, "more").exit_code == 0


# --- 6. the demo twice in one folder ------------------------------------------------------------


def test_demo_twice_in_one_folder_says_why_and_exits_2(tmp_path: Path) -> None:
    target = tmp_path / "d"
    (target / "repo").mkdir(parents=True)
    (target / "repo" / "mine.txt").write_text("keep me")
    again = cli("demo", "--dir", target)
    assert again.exit_code == 2, again
    assert "already exists" in again.stderr and "--dir" in again.stderr
    assert (target / "repo" / "mine.txt").read_text() == "keep me"
    assert not (target / "repo" / ".git").exists()


# --- 5. reading never writes ----------------------------------------------------------------------


def test_read_only_commands_create_no_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTSAGA_STORE", raising=False)
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.chdir(outside)
    listing = cli("runs")
    assert listing.exit_code == 0, listing
    assert "no runs yet" in listing.stdout
    assert cli("runs", "--json").json() == {"runs": []}
    for args in (("show", "abcd"), ("report", "abcd"), ("diff", "abcd"), ("logs", "abcd")):
        result = cli(*args)
        assert result.exit_code == 2, result
        assert "no agentsaga store" in result.stderr
    for args in (("resume", "abcd"), ("rollback", "abcd"), ("fork", "abcd", "--from", "x")):
        assert cli(*args).exit_code == 2
    typo = tmp_path / "typo" / "x.db"
    result = cli("--store", typo, "runs")
    assert result.exit_code == 0 and str(typo) in result.stdout
    assert cli("--store", typo, "show", "abcd").exit_code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]
    assert list(outside.iterdir()) == []


def test_inside_a_runs_worktree_commands_find_the_repositorys_store(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, doc = run_json("run", write_pipeline(tmp_path, EDITING))
    rid = str(doc["run_id"])
    worktree = repo / ".agentsaga" / "worktrees" / rid
    assert worktree.is_dir()
    monkeypatch.chdir(worktree)
    assert [r["run_id"] for r in cli("runs", "--json").json()["runs"]] == [rid]
    assert cli("show", rid).exit_code == 0
    assert not (worktree / ".agentsaga").exists()


# --- 13. short prefixes --------------------------------------------------------------------------


def test_four_characters_name_a_run(repo: Path, tmp_path: Path) -> None:
    path = write_pipeline(
        tmp_path,
        "name: q\nworkspace: {isolation: none}\nsteps:\n  - {id: a, kind: shell, run: 'true'}\n",
    )
    ids = [run_json("run", path)[1]["run_id"] for _ in range(6)]
    # Started within the same second, they still differ in their first characters.
    assert len({str(i)[:4] for i in ids}) == 6
    for rid in ids:
        shown = cli("show", str(rid)[:4], "--json")
        assert shown.exit_code == 0, shown
        assert shown.json()["run_id"] == rid


# --- 12. one --json vocabulary, and its schema ------------------------------------------------


def _validator(definition: str) -> object:
    from datetime import datetime

    import jsonschema

    from agentsaga.output_schema import output_schema

    checker = jsonschema.FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def _iso(value: object) -> bool:
        return not isinstance(value, str) or datetime.fromisoformat(value) is not None

    schema = output_schema()
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{definition}", "$defs": schema["$defs"]}, format_checker=checker
    )


def _valid(result: Result, command: str) -> dict[str, object]:
    """The command's output, validated against the definition ``schema --output`` says
    it follows; plus the vocabulary's rules the schema cannot say."""
    from agentsaga.output_schema import COMMANDS

    assert result.exit_code in (0, 1), result
    doc = json.loads(result.stdout)
    errors = sorted(_validator(COMMANDS[command]).iter_errors(doc), key=str)  # type: ignore[attr-defined]
    assert not errors, f"{command}: {errors[0]}"
    _vocabulary(doc)
    return doc  # type: ignore[no-any-return]


def _vocabulary(value: object, key: str = "") -> None:
    if isinstance(value, dict):
        assert "id" not in value and "step" not in value, value  # run_id, step_id
        for k, v in value.items():
            _vocabulary(v, k)
    elif isinstance(value, list):
        for v in value:
            _vocabulary(v, key)
    elif key.endswith("_ms") and value is not None:
        assert isinstance(value, int), (key, value)
    elif key == "cost_usd" and value is not None:
        assert round(float(value), 6) == value, (key, value)  # type: ignore[arg-type]


def test_every_commands_json_follows_the_output_schema(tmp_path: Path) -> None:
    demo = cli("demo", "--dir", tmp_path / "d", "--json")
    doc = _valid(demo, "demo")
    repo = tmp_path / "d" / "repo"
    rid = str(doc["run_id"])
    schema = cli("schema", "--output")
    assert schema.exit_code == 0 and json.loads(schema.stdout)["$defs"]["run"]
    _valid(cli("runs", "--json"), "runs")
    shown = _valid(cli("show", rid, "--json"), "show")
    assert [s["step_id"] for s in shown["steps"]] == ["plan", "read", "write", "test", "deploy"]  # type: ignore[index]
    for step in ("plan", "read", "write", "test", "deploy"):
        _valid(cli("show", rid, step, "--json"), "show RUN STEP")
    report = _valid(cli("report", rid, "--json"), "report")
    assert report["cost_usd"] is not None
    _valid(cli("diff", rid, "--json"), "diff")
    _valid(cli("diff", rid, "write", "--stat", "--json"), "diff")
    _valid(cli("logs", rid, "--json"), "logs")
    _valid(cli("logs", rid, "test", "--json"), "logs")
    plan = _valid(cli("rollback", rid, "--plan", "--json"), "rollback --plan")
    assert {"step_id": "write", "attempt": 2} in [
        {k: i[k] for k in ("step_id", "attempt")}
        for i in plan["plan"]  # type: ignore[attr-defined]
    ]
    _valid(cli("resume", rid, "--plan", "--json"), "resume --plan")
    _valid(cli("fork", rid, "--from", "write", "--plan", "--json"), "fork --plan")
    _valid(cli("validate", repo / "pipeline.yml", "--json"), "validate")
    _valid(cli("validate", repo / "pipeline.yml", "--explain", "--json"), "validate --explain")
    forked = _valid(cli("fork", rid, "--from", "test", "--json"), "fork")
    assert forked["parent_run_id"] == rid
    _valid(cli("rollback", str(forked["run_id"]), "--json"), "rollback")
    _valid(cli("resume", rid, "--json"), "resume")
    _valid(cli("rollback", rid, "--json"), "rollback")
    failing = write_pipeline(
        tmp_path,
        "name: f\nworkspace: {isolation: none}\nsteps:\n  - {id: a, kind: shell, run: 'exit 3'}\n",
    )
    _valid(cli("run", failing, "--json"), "run")


def test_with_json_a_failure_is_an_error_document_on_stdout_and_text_on_stderr(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One rule for every command: the message on stderr, and with --json one document on
    stdout, ``{"error": {type, message, exit_code[, problems]}}`` (``schema --output``:
    ``error_document``); a command that printed its own document prints no second one."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    check = _validator("error_document")
    assert json.loads(cli("schema", "--output").stdout)["x-on-error"] == "error_document"
    broken = write_pipeline(tmp_path, "name: x\nnmae: 1\nsteps: []\n", "broken")
    keyless = write_pipeline(
        tmp_path, "name: k\nsteps:\n  - {id: p, kind: plan, prompt: hi, provider: anthropic}\n"
    )
    rid = cli("run", write_pipeline(tmp_path, EDITING, "editing"), "--json").json()["run_id"]
    cases = {
        ("validate", broken): ("PipelineErrors", 2),
        ("run", keyless): ("PreflightError", 2),
        ("show", "nosuchrun"): ("RunNotFound", 2),
        ("diff", rid, "wirte"): ("UserInputError", 2),
        ("runs", "--bogus"): ("UsageError", 2),
    }
    for args, (kind, code) in cases.items():
        text = cli(*args)
        assert text.exit_code == code and text.stdout == "", text  # no --json: text only
        result = cli(*args, "--json")
        assert result.exit_code == code, result
        doc = json.loads(result.stdout)
        assert not list(check.iter_errors(doc)), (args, doc)  # type: ignore[attr-defined]
        assert doc["error"]["type"] == kind and doc["error"]["exit_code"] == code, doc
        assert doc["error"]["message"].splitlines()[0] in result.stderr, result
    doc = json.loads(cli("validate", broken, "--json").stdout)
    assert doc["error"]["problems"] == [
        {
            "file": str(broken),
            "line": 2,
            "col": 1,
            "message": "unknown key 'nmae'; did you mean 'name'?",
        },
        {"file": str(broken), "line": 3, "col": 8, "message": "a pipeline needs at least one step"},
    ]
    doc = json.loads(cli("run", keyless, "--json").stdout)
    assert [p["message"] for p in doc["error"]["problems"]] == [
        "error: step p: provider 'anthropic' needs an API key: set ANTHROPIC_API_KEY (or name "
        "another variable in .agentsaga.yml: providers.anthropic.api_key_env)"
    ]
    # A run that fails prints its run document (exit 1), and nothing after it.
    failing = write_pipeline(
        tmp_path,
        "name: f\nworkspace: {isolation: none}\nsteps:\n  - {id: a, kind: shell, run: 'exit 3'}\n",
        "failing",
    )
    result = cli("run", failing, "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["status"] == "failed", result


# --- 2. init pins no model: the provider's own is used, with its price -------------------------


def test_init_pins_no_model_and_a_declared_providers_model_and_price_apply(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.llm_server import FakeLLMServer

    init = cli("init")
    assert init.exit_code == 0, init
    starter = (repo / "pipelines" / "fix.yml").read_text()
    assert "\n  model:" not in starter.split("steps:")[0]
    example = cli("init", "--example")
    assert "providers:" in example.stdout and "ollama" in example.stdout
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with FakeLLMServer() as server:
        server.reply("a plan", usage={"input": 1000, "output": 500})
        (repo / ".agentsaga.yml").write_text(
            "providers:\n"
            f"  local: {{type: openai, base_url: '{server.openai_base_url}', model: qwen-local}}\n"
            "prices:\n  qwen-local: {input: 2.0, output: 4.0}\n"
        )
        pipeline = write_pipeline(
            tmp_path,
            "name: p\nworkspace: {isolation: none}\ndefaults: {provider: local}\n"
            "steps:\n  - {id: plan, kind: plan, prompt: hello}\n",
        )
        result, doc = run_json("run", pipeline)
        assert result.exit_code == 0, result
        assert [r.body["model"] for r in server.requests] == ["qwen-local"]
    call = doc["steps"][0]["attempts"][0]["model_calls"][0]  # type: ignore[index]
    assert call["model"] == "qwen-local"
    # 1,000 in at $2/M + 500 out at $4/M, from the override.
    assert call["usage"]["cost_usd"] == 0.004


# --- 3. what a run needs is checked before it creates anything --------------------------------


def test_a_run_that_cannot_start_exits_2_and_creates_nothing(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    pipeline = write_pipeline(
        tmp_path,
        "name: p\nsteps:\n"
        "  - {id: plan, kind: plan, prompt: hi, provider: anthropic}\n"
        "  - {id: other, kind: plan, prompt: hi, provider: antrhopic}\n",
    )
    refs_before = git(repo, "for-each-ref")
    result = cli("run", pipeline)
    assert result.exit_code == 2, result
    assert "ANTHROPIC_API_KEY" in result.stderr  # both problems at once
    assert "unknown provider 'antrhopic'" in result.stderr
    assert "nothing was created" in result.stderr
    assert not (repo / ".agentsaga").exists()
    assert git(repo, "for-each-ref") == refs_before
    # validate: the same errors as run, all listed; --offline checks the file alone.
    checked = cli("validate", pipeline)
    assert checked.exit_code == 2, checked
    assert "error: step plan: provider 'anthropic' needs an API key" in checked.stderr
    assert "error: step other: unknown provider 'antrhopic'" in checked.stderr
    assert "validate --offline checks the file alone" in checked.stderr
    offline = cli("validate", "--offline", pipeline)
    assert offline.exit_code == 2, offline
    assert "antrhopic" in offline.stderr and "ANTHROPIC_API_KEY" not in offline.stderr
    pipeline.write_text(pipeline.read_text().replace("antrhopic", "anthropic"))
    checked = cli("validate", pipeline)
    assert checked.exit_code == 2 and "ANTHROPIC_API_KEY" in checked.stderr, checked
    checked = cli("validate", "--offline", pipeline)
    assert checked.exit_code == 0 and checked.stderr == "", checked


def test_a_fork_that_cannot_start_exits_2_and_creates_nothing(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    text = (
        "name: f\nsteps:\n"
        "  - {id: plan, kind: plan, prompt: hi, provider: scripted, replies: [ok]}\n"
        "  - {id: more, kind: shell, run: 'true'}\n"
    )
    first = cli("run", write_pipeline(tmp_path, text), "--json")
    assert first.exit_code == 0, first
    rid = first.json()["run_id"]
    changed = write_pipeline(
        tmp_path,
        text.replace("kind: shell, run: 'true'", "kind: plan, prompt: hi, provider: anthropic"),
        "changed",
    )
    refs_before = git(repo, "for-each-ref")
    result = cli("fork", rid, "--from", "more", "--pipeline", changed)
    assert result.exit_code == 2, result
    assert "the fork cannot start; nothing was created" in result.stderr
    assert "step more: provider 'anthropic' needs an API key" in result.stderr
    assert [r["run_id"] for r in cli("runs", "--json").json()["runs"]] == [rid]
    assert git(repo, "for-each-ref") == refs_before


def test_a_resume_that_cannot_start_exits_2_and_runs_nothing(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume checks the steps it will run, as run does before it creates anything: a
    key that went missing refuses it (exit 2) before a step runs again; a step that
    finished is not run again, so its provider's key is not asked for."""
    from tests.llm_server import FakeLLMServer

    text = (
        "name: r\nworkspace: {isolation: none}\nsteps:\n"
        "  - {id: early, kind: plan, prompt: hi, provider: anthropic}\n"
        "  - {id: gate, kind: shell, run: 'test -f ok'}\n"
        "  - {id: late, kind: plan, prompt: hi, provider: openai}\n"
    )
    pipeline = write_pipeline(tmp_path, text)
    with FakeLLMServer() as server:
        server.reply("a plan").reply("a plan").reply("another plan")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.anthropic_base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        first = cli("run", pipeline, "--json")
        assert first.exit_code == 1, first  # `gate` failed; `late` never ran
        rid = first.json()["run_id"]
        (repo / "ok").write_text("")
        monkeypatch.delenv("OPENAI_API_KEY")  # a new shell, say

        def attempts() -> list[tuple[str, str, int]]:
            doc = cli("show", rid, "--json").json()
            return [(s["step_id"], s["status"], len(s["attempts"])) for s in doc["steps"]]

        before = attempts()
        assert before == [("early", "completed", 1), ("gate", "failed", 1), ("late", "pending", 0)]
        refused = cli("resume", rid)
        assert refused.exit_code == 2, refused
        assert "the resume cannot start; nothing was created" in refused.stderr
        assert "step late: provider 'openai' needs an API key" in refused.stderr
        assert "anthropic" not in refused.stderr  # `early` finished: not run again
        assert attempts() == before  # `gate` did not run again
        # Re-running `early` would need its key: asked for with --from.
        monkeypatch.delenv("ANTHROPIC_API_KEY")
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
        refused = cli("resume", rid, "--from", "early")
        assert refused.exit_code == 2 and "ANTHROPIC_API_KEY" in refused.stderr, refused
        assert attempts() == before
        # A local OpenAI-compatible server needs no key; `early` is reused.
        resumed = cli("resume", rid)
        assert resumed.exit_code == 0, resumed
    assert [r.path for r in server.requests].count("/v1/messages") == 1


def test_a_deprecated_model_is_warned_about_and_the_default_is_not_one(tmp_path: Path) -> None:
    """The anthropic SDK lists the models it warns about at each call, with the day they
    stop answering; validate (and run) say so before any call, and agentsaga's own
    default is never one of them."""
    from agentsaga.llm import DEFAULT_MODELS
    from agentsaga.preflight import _anthropic_retirements

    retiring = _anthropic_retirements()
    assert retiring, "the installed anthropic SDK lists its deprecated models"
    assert DEFAULT_MODELS["anthropic"] not in retiring
    old = sorted(retiring)[0]
    pipeline = write_pipeline(
        tmp_path,
        "name: p\nsteps:\n"
        f"  - {{id: pinned, kind: plan, prompt: hi, provider: anthropic, model: {old}}}\n"
        "  - {id: default, kind: plan, prompt: hi, provider: anthropic}\n",
    )
    checked = cli("validate", "--offline", pipeline)
    assert checked.exit_code == 0, checked
    warned = [line for line in checked.stderr.splitlines() if "is deprecated" in line]
    assert warned == [
        f"warning: step pinned: model {old} is deprecated: it reaches end of life on "
        f"{retiring[old]} (the anthropic SDK's list); name a newer one (the step's model:, "
        "the pipeline's defaults, or the provider's model in .agentsaga.yml)"
    ]


def test_validate_checks_this_machine_and_offline_the_file_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No repository here; a key is set; one model has no known price."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    pipeline = write_pipeline(
        tmp_path,
        "name: p\nsteps:\n"
        "  - {id: plan, kind: plan, prompt: hi, provider: anthropic, model: no-such-model-9}\n",
    )
    checked = cli("validate", pipeline)
    assert checked.exit_code == 2, checked
    assert "error: not inside a git repository" in checked.stderr
    assert "API key" not in checked.stderr  # the key is set
    refused = cli("run", pipeline)
    assert refused.exit_code == 2 and "error: not inside a git repository" in refused.stderr
    assert not (tmp_path / ".agentsaga").exists()
    # The file alone: fine; an unknown price is a warning in both modes, never an error.
    for args in (("--offline",), ("--offline", "--explain")):
        offline = cli("validate", *args, pipeline)
        assert offline.exit_code == 0, offline
    assert "no price known for anthropic/no-such-model-9" in offline.stderr
    monkeypatch.chdir(make_repo(tmp_path, FILES))
    checked = cli("validate", "--explain", pipeline)
    assert checked.exit_code == 0, checked
    assert "warning: step plan: no price known for anthropic/no-such-model-9" in checked.stderr


# --- 16. pipeline errors that help --------------------------------------------------------------


def test_pipeline_errors_are_all_reported_with_hints(tmp_path: Path) -> None:
    misindented = write_pipeline(
        tmp_path,
        "name: x\nsteps:\n  - id: a\n    kind: shell\n     run: echo hi\n",
        "indent",
    )
    result = cli("validate", misindented)
    assert result.exit_code == 2
    assert "indent.yml:5:6: line 5 is mis-indented" in result.stderr
    assert "mapping values are not allowed" not in result.stderr
    several = write_pipeline(
        tmp_path,
        "name: x\nvars:\n  task: {required: true, description: what to do}\nsteps:\n"
        "  - {id: a, kind: shel, run: 'true'}\n"
        "  - {id: b, kind: shell, runn: 'true'}\n"
        "  - {id: c, kind: shell, run: 'echo {{ vars.task }}'}\n",
        "several",
    )
    result = cli("validate", several)
    assert result.exit_code == 2
    assert "several.yml:5:" in result.stderr and "did you mean 'shell'" in result.stderr
    assert "several.yml:6:" in result.stderr and "did you mean 'run'" in result.stderr
    fixed = several.read_text().replace("shel,", "shell,").replace("runn", "run")
    several.write_text(fixed)
    result = cli("validate", "--offline", several)
    assert result.exit_code == 0, result
    assert "several.yml:7:" in result.stderr and "'${{ vars.task }}'" in result.stderr
    assert "var 'task' is required" in result.stderr  # validate: a warning
    # run: a required var is mandatory, and --var problems name the command line.
    result = cli("run", several)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: command line: var 'task' is required")
    result = cli("run", several, "--var", "tsk=x")
    assert result.exit_code == 2
    assert "command line: --var tsk=" in result.stderr and "did you mean 'task'" in result.stderr


def test_every_top_level_error_is_reported_with_the_step_errors_in_file_order(
    tmp_path: Path,
) -> None:
    broken = write_pipeline(
        tmp_path,
        "name: x\n"
        "nmae: y\n"
        "vars:\n  task: [1, 2]\n"
        "defaults:\n  modle: x\n  retry: {attempts: two}\n"
        "budget: {max_tokens: lots}\n"
        "workspace: {isolation: sideways}\n"
        "on_failure: explode\n"
        "steps:\n"
        "  - {id: a, kind: shel, run: 'true'}\n"
        "  - {id: b, kind: shell, runn: 'true'}\n"
        "extra: 1\n",
        "top",
    )
    result = cli("validate", broken)
    assert result.exit_code == 2, result
    expected = [
        "top.yml:2:1: unknown key 'nmae'; did you mean 'name'?",
        "top.yml:4:9: expected a value, or {required, default, description}, got a list",
        "top.yml:6:3: unknown key 'modle'; did you mean 'model'?",
        "top.yml:7:21: expected an integer, got the string 'two'",
        "top.yml:8:22: expected an integer, got the string 'lots'",
        "top.yml:9:24: 'sideways' is not one of worktree, branch, none",
        "top.yml:10:13: 'explode' is not one of stop, rollback",
        "top.yml:12:19: 'shel' is not one of",
        "top.yml:13:26: unknown key 'runn'; did you mean 'run'?",
        "top.yml:14:1: unknown key 'extra'",
    ]
    lines = [line.removeprefix("error: ") for line in result.stderr.splitlines()]
    located = [line.split(str(tmp_path) + "/", 1)[-1] for line in lines if ".yml:" in line]
    assert len(located) == len(expected), result.stderr
    for line, start in zip(located, expected, strict=True):
        assert line.startswith(start), (line, start)
    assert "(10 problems)" in result.stderr
    # With the steps sound, their reference errors join the top-level ones; run refuses
    # alike, before a --var is looked at (the file's errors come first).
    referencing = write_pipeline(
        tmp_path,
        "name: x\nbudget: {max_tokens: lots}\n"
        "workspace: {repo: '${{ vars.nope }}'}\n"
        "steps:\n"
        "  - {id: a, kind: shell, run: 'echo ${{ steps.b.output.stdout }}'}\n"
        "  - {id: b, kind: shell, run: 'true'}\n",
        "refs",
    )
    for args in (("validate", referencing), ("run", referencing, "--var", "no=1")):
        result = cli(*args)
        assert result.exit_code == 2, result
        assert "refs.yml:2:22: expected an integer" in result.stderr
        assert "refs.yml:3:24: unknown var 'nope'" in result.stderr
        assert "refs.yml:5:41: steps.b is a step that runs after 'a'" in result.stderr
        assert "(3 problems)" in result.stderr


# --- 9, 14. the demo tells its story; text fits 80 columns; one summary ------------------------


def test_text_output_fits_80_columns_with_one_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    demo = cli("demo", "--dir", tmp_path / "d")
    assert demo.exit_code == 0, demo
    rid = demo.stdout.split("agentsaga show ", 1)[1].split()[0]
    outputs = {
        "demo": demo.output,
        "show": cli("show", rid).output,
        "report": cli("report", rid).output,
        "runs": cli("runs").output,
        "plan": cli("rollback", rid, "--plan").output,
    }
    rolled = cli("rollback", rid)
    outputs["rollback"] = rolled.output
    for name, text in outputs.items():
        for line in text.splitlines():
            # Longer only where one word (a path) cannot be broken.
            assert len(line) <= 80 or max(map(len, line.split())) > 40, f"{name}: {line!r}"
    # The demo tells its story: what the first write changed, why the test failed, the
    # rewind and what it kept, the fix.
    story = demo.stdout.split("What happened:", 1)[1].split("tokens of run", 1)[0]
    assert "write #1 asked the model for edits" in story
    assert "-    return a + b" in story and "+    return a * b" in story
    assert "test #1 failed: tests failed" in story
    assert "went back to write" in story and "plan, read kept their checkpoints" in story
    assert "test #2 ran the tests: they pass" in story
    # One closing summary per run, not a progress line and a summary both.
    assert demo.output.count(f"run {rid} succeeded") == 1, demo
    assert f"run {rid}: succeeded" not in demo.output
    # After a rollback the summary says what was undone, not "completed".
    assert rolled.exit_code == 0, rolled
    assert "undone: " in rolled.stdout and "deploy #1" in rolled.stdout
    assert "write #2" in rolled.stdout
    assert "nothing to undo (no side effect): plan, read, test" in rolled.stdout
    assert f"removed: branch agentsaga/{rid}" in rolled.stdout


# --- 11. after a stuck failure: what would help, and resume --from carries the failure -------


def test_a_stuck_failure_suggests_resume_from_which_carries_the_failure(env: Env) -> None:
    text = (
        "name: s\nworkspace: {isolation: none}\nsteps:\n"
        "  - id: write\n    kind: shell\n"
        '    run: echo "[$WHY]" | tr "\\n" " " >> seen; echo >> seen\n'
        '    env: {WHY: "${{ rewind.error }}"}\n'
        "  - id: test\n    kind: test\n"
        "    run: \"test -f fixed || { echo 'AssertionError: 2 != 3'; exit 1; }\"\n"
        "    on_failure: {rewind_to: write, max_rewinds: 3}\n"
    )
    failed = cli("run", env.write("p.yml", text))
    assert failed.exit_code == 1, failed
    rid = env.newest_run_id()
    # The same failure twice: the loop stopped (stuck); a plain resume would fail alike.
    said = " ".join(failed.stdout.split())  # wrapped to 80 columns
    assert f"agentsaga resume {rid} --from write" in said, failed
    assert "a plain resume would run test again on the same code" in said
    advice = json.loads(cli("show", rid, "--json").stdout)["next"]
    assert advice[0]["command"] == f"agentsaga resume {rid} --from write"
    seen_before = (env.path / "seen").read_text().splitlines()
    assert seen_before[0].strip() == "[]" and "tests failed" in seen_before[1]
    (env.path / "fixed").touch()
    resumed = cli("resume", rid, "--from", "write")
    assert resumed.exit_code == 0, resumed
    seen = (env.path / "seen").read_text().splitlines()
    assert len(seen) == len(seen_before) + 1
    assert "tests failed" in seen[-1], seen  # the failure reached ${{ rewind.error }}


# --- 7. a second Ctrl-C leaves at once, saying so, and the run is not left running -----------


@pytest.mark.slow
def test_a_second_ctrl_c_says_so_and_leaves_the_run_interrupted(env: Env) -> None:
    import signal

    from tests.conftest import kill_group_from_pidfile, process_running, wait_until

    # The command ignores the first Ctrl-C's SIGTERM (and notes it), so the run is still
    # stopping it when the second Ctrl-C comes.
    body = (
        "trap 'echo term >> got' TERM; trap '' INT; echo $$ > b.pid; "
        "for i in $(seq 600); do sleep 0.05; done"
    )
    path = env.write(
        "p.yml",
        "name: c\nworkspace: {isolation: none}\nsteps:\n"
        f"  - id: b\n    kind: shell\n    run: {json.dumps(body)}\n",
    )
    proc = env.spawn("run", path)
    try:
        wait_until(lambda: (env.path / "b.pid").exists(), what="the step to start")
        proc.signal(signal.SIGINT)
        wait_until(lambda: (env.path / "got").exists(), what="the first Ctrl-C to reach it")
        proc.signal(signal.SIGINT)
        result = proc.wait()
    finally:
        kill_group_from_pidfile(env.path / "b.pid")
    assert result.exit_code == 130, result
    rid = env.newest_run_id()
    assert "interrupted again: exiting now" in result.stderr
    assert f"agentsaga resume {rid}" in result.stderr
    assert env.run_status(rid) == "interrupted"
    pid = int((env.path / "b.pid").read_text())
    wait_until(lambda: not process_running(pid), what="the command to be stopped too")
    shown = json.loads(cli("show", rid, "--json").stdout)
    assert shown["status"] == "interrupted"
    # The attempt too, not left running for a resume to find as a crash.
    assert [a["status"] for a in shown["steps"][0]["attempts"]] == ["interrupted"]


INTERRUPTIBLE = """\
name: i
workspace: {isolation: none}
steps:
  - {id: a, kind: shell, run: "echo a >> ledger"}
  - id: b
    kind: shell
    retry: {attempts: 2, backoff: 0s}
    run: |
      if [ ! -f stopped_once ]; then
        touch stopped_once; echo $$ > b.pid
        for i in $(seq 1200); do sleep 0.05; done
      fi
      if [ ! -f failed_once ]; then touch failed_once; echo b-fails >> ledger; exit 1; fi
      echo b-done >> ledger
    compensate: {run: 'echo "undo $AGENTSAGA_IDEMPOTENCY_KEY" >> ledger'}
"""


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_an_attempt_stopped_by_a_signal_is_stored_interrupted_and_resumes(
    env: Env, signame: str
) -> None:
    """A real run, stopped during a long command: the attempt is stored ``interrupted``
    (not ``failed``), shown so everywhere, undone on resume, and not counted toward the
    step's retries: after it, the step still gets its two tries (the first fails)."""
    import signal

    from tests.conftest import kill_group_from_pidfile, wait_until

    proc = env.spawn("run", env.write("p.yml", INTERRUPTIBLE))
    try:
        wait_until(lambda: (env.path / "b.pid").exists(), what="step b to start")
        proc.signal(getattr(signal, signame))
        stopped = proc.wait()
    finally:
        kill_group_from_pidfile(env.path / "b.pid")
    assert stopped.exit_code == 130, stopped
    rid = env.newest_run_id()
    store = env.store()
    try:
        (a, b) = store.attempts(rid)
    finally:
        store.close()
    assert (a.status, b.status) == ("completed", "interrupted")
    assert b.error is not None and b.error["type"] == "Interrupted"
    shown = _valid(cli("show", rid, "--json"), "show")
    assert shown["status"] == "interrupted"
    steps = shown["steps"]
    assert isinstance(steps, list)
    assert steps[1]["status"] == "interrupted"
    assert [x["status"] for x in steps[1]["attempts"]] == ["interrupted"]
    rows = [line.split()[:3] for line in cli("show", rid).stdout.splitlines()]
    assert ["b", "1", "interrupted"] in rows
    assert "stopped at b (interrupted)" in stopped.stdout
    listed = cli("runs", "--json").json()["runs"]
    assert [r["status"] for r in listed if r["run_id"] == rid] == ["interrupted"]

    resumed = cli("resume", rid, "--json")
    assert resumed.exit_code == 0, resumed
    assert resumed.json()["status"] == "succeeded"
    assert env.ledger.lines() == [
        "a",
        f"undo {rid}:b:1",  # the interrupted attempt undone before b runs again
        "b-fails",
        f"undo {rid}:b:2",  # the retry's own compensation
        "b-done",
    ]
    store = env.store()
    try:
        history = [(x.attempt, x.status) for x in store.attempts(rid) if x.step_id == "b"]
    finally:
        store.close()
    assert history == [(1, "compensated"), (2, "compensated"), (3, "completed")]


# --- 8. a step in full; several model calls are several rows -----------------------------------


def _edit(search: str) -> str:
    block = f"calc.py\\n<<<<<<< SEARCH\\n{search}\\n=======\\n    return a + b\\n>>>>>>> REPLACE\\n"
    return f'"{block}"'


REFLECTING = f"""\
name: reflect
defaults: {{provider: scripted, model: claude-sonnet-4-5}}
workspace: {{isolation: worktree}}
steps:
  - id: read
    kind: read
    files: ["*.py", "*.txt"]
    max_tokens: 12
  - id: write
    kind: write
    prompt: "Fix add in calc.py"
    replies:
      - text: {_edit("    return a * b")}
        usage: {{input: 1000, output: 100}}
      - text: {_edit("    return a - b")}
        usage: {{input: 1200, output: 90}}
"""


def test_show_step_has_every_model_call_and_the_files_read(repo: Path, tmp_path: Path) -> None:
    result, doc = run_json("run", write_pipeline(tmp_path, REFLECTING))
    assert result.exit_code == 0, result
    rid = str(doc["run_id"])
    write = cli("show", rid, "write", "--json").json()
    (attempt,) = write["attempts"]
    calls = attempt["model_calls"]
    assert [c["call"] for c in calls] == [1, 2]  # the reflection is its own call
    assert "return a * b" in calls[0]["reply"] and "return a - b" in calls[1]["reply"]
    assert calls[1]["usage"]["input"] == 1200 and calls[0]["http"][0]["http_attempt"] == 1
    assert "Fix add in calc.py" in attempt["prompt"]["user"]
    assert attempt["diff"].startswith("diff --git a/calc.py")
    text = cli("show", rid, "write").stdout
    assert "model call 1:" in text and "model call 2:" in text and "reply:" in text
    read = cli("show", rid, "read", "--json").json()["attempts"][0]["read"]
    assert read["sent"] and read["skipped"]  # max_tokens leaves a file out, and says why
    assert all(s["reason"] for s in read["skipped"])
    # show and report list the two calls as two rows under the attempt.
    for command in ("show", "report"):
        lines = cli(command, rid).stdout.splitlines()
        rows = [ln for ln in lines if ln.startswith("  call ") and ln.split()[1].isdigit()]
        assert len(rows) == 2, (command, rows)


# --- 10. token accounting that adds up ----------------------------------------------------------


def test_a_forks_report_adds_up_and_counts_the_parents_plan_once(tmp_path: Path) -> None:
    demo = cli("demo", "--dir", tmp_path / "d", "--json")
    parent = str(demo.json()["run_id"])
    # The parent rewound once: a checkpoint kept at the rewind is saved, not "reused"
    # (reused is what a run holds without having paid for it): never more than spent.
    own = cli("report", parent, "--json").json()
    assert own["reused_tokens"] == 0 and own["saved_tokens"] == 5000
    assert own["reused_tokens"] <= own["spent_tokens"]
    forked = cli("fork", parent, "--from", "write", "--json")
    assert forked.exit_code == 0, forked
    report = cli("report", str(forked.json()["run_id"]), "--json").json()
    rows = [a for s in report["steps"] for a in s["attempts"]]
    reused = sum(a["reused_tokens"]["checkpoint"] + a["reused_tokens"]["call_log"] for a in rows)
    assert reused == report["reused_tokens"]  # the column adds up to the footer
    assert sum(a["saved_tokens"] for a in rows) == report["saved_tokens"]
    assert sum(a["usage"]["total"] for a in rows) == report["spent_tokens"]
    # The parent's plan (5,000 tokens) is reused once, never saved again at the rewind.
    assert report["reused_checkpoint_tokens"] == 5000
    assert report["saved_tokens"] == 0
    assert report["restart_counterfactual_tokens"] == (
        report["spent_tokens"] + report["reused_tokens"] + report["saved_tokens"]
    )
    text = cli("report", str(forked.json()["run_id"])).stdout
    plan_row = next(ln for ln in text.splitlines() if ln.startswith("plan "))
    assert plan_row.rstrip().endswith("5,000")  # the reused column is not blank


# --- 17, 18. the docs a newcomer reads stand alone ------------------------------------------------


def test_the_docs_stand_alone_and_show_what_a_newcomer_needs() -> None:
    import re

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    for needed in ("<<<<<<< SEARCH", ">>>>>>> REPLACE", "Ollama", "vLLM", "base_url"):
        assert needed in readme, needed
    assert "apt-get" in readme and "postgresql" in readme  # the suite may install it
    assert (root / "agentsaga" / "templates" / "agentsaga.example.yml").is_file()
    # Every document named is in the repository (relative to the root, or to the file
    # naming it); none of the project's private notes is named.
    texts = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    texts += sorted((root / "agentsaga").rglob("*.py"))
    missing = []
    for path in texts:
        text = path.read_text()
        for private in ("DESIGN.md", "STYLE.md", "FACTS.md", "/work/"):
            assert private not in text, f"{path.relative_to(root)} names {private}"
        for name in set(re.findall(r"[A-Za-z0-9_./-]+\.md\b", text)):
            if not ((root / name).exists() or (path.parent / name).exists()):
                missing.append(f"{path.relative_to(root)}: {name}")
    assert not missing, missing


# --- 15. step commits; a rollback after a merge ---------------------------------------------------


def test_step_commits_have_trailers_and_rollback_names_merged_commits(
    repo: Path, tmp_path: Path
) -> None:
    result, doc = run_json("run", write_pipeline(tmp_path, EDITING))
    rid = str(doc["run_id"])
    message = git(repo, "log", "-1", "--format=%B", f"agentsaga/{rid}")
    assert message.startswith(f"agentsaga {rid}: step more: added.txt")
    trailers = git(repo, "log", "-1", "--format=%(trailers:only)", f"agentsaga/{rid}")
    assert f"Agentsaga-Run: {rid}" in trailers and "Agentsaga-Step: more" in trailers
    git(repo, "merge", "-q", "--no-edit", f"agentsaga/{rid}")
    rolled = cli("rollback", rid)
    assert rolled.exit_code == 0, rolled
    said = " ".join(rolled.stdout.split())
    assert "already merged, so they stay" in said and "is in main" in said
    assert (repo / "added.txt").exists()  # the merge is the user's: it stays
    shown = cli("show", rid).stdout
    assert f"branch agentsaga/{rid} (removed by the rollback)" in shown


# --- 3. prices are checked by validate, from a cache of earlier answers --------------------------


def test_validate_checks_prices_through_a_cache_keyed_by_the_price_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentsaga import price_index

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(make_repo(tmp_path, FILES))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    pipeline = write_pipeline(
        tmp_path,
        "name: p\nsteps:\n"
        "  - {id: plan, kind: plan, prompt: hi, provider: anthropic, model: no-such-model-9}\n"
        "  - {id: more, kind: plan, prompt: hi, provider: anthropic, model: claude-sonnet-4-6}\n",
    )
    first = cli("validate", pipeline)
    assert first.exit_code == 0, first
    assert "warning: step plan: no price known for anthropic/no-such-model-9" in first.stderr
    assert "claude-sonnet-4-6" not in first.stderr
    index = price_index.cache_path()
    document = json.loads(index.read_text())
    assert document["known"] == {
        "anthropic/claude-sonnet-4-6": True,
        "anthropic/no-such-model-9": False,
    }
    # The second validate answers from the file: a planted answer is believed...
    document["known"]["anthropic/no-such-model-9"] = True
    index.write_text(json.dumps(document))
    assert "no price known" not in cli("validate", pipeline).stderr
    # ...but only for the price table it was written against,
    document["table"] = "another-version"
    index.write_text(json.dumps(document))
    assert "no price known for anthropic/no-such-model-9" in cli("validate", pipeline).stderr
    # and a damaged file is ignored and rewritten.
    index.write_text("{not json")
    assert "no price known for anthropic/no-such-model-9" in cli("validate", pipeline).stderr
    assert json.loads(index.read_text())["known"]["anthropic/no-such-model-9"] is False
