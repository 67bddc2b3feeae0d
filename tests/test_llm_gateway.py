"""The LLM gateway through whole pipelines: the real anthropic and openai clients against a
loopback server that counts requests, the store, and the report.

The server's count is the proof of "never pays twice": a memo hit sends nothing, a budget
refusal sends nothing, a judged reply is asked for again.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.llm_project import (
    ANTHROPIC_KEY,
    KEY_ENV,
    MODELS,
    OPENAI_KEY,
    Project,
    make_project,
)
from tests.llm_server import FakeLLMServer

APIS = ["anthropic", "openai"]


def plan_pipeline(api: str, *prompts: str, extra: str = "", top: str = "") -> str:
    """One plan step per prompt, on the given provider, no git workspace."""
    text = (
        f"name: gateway\n"
        f"defaults: {{provider: {api}, model: {MODELS[api]}}}\n"
        f"workspace: {{isolation: none}}\n{top}"
        "steps:\n"
    )
    for n, prompt in enumerate(prompts or ("Say hello",), 1):
        text += f"  - id: plan{n}\n    kind: plan\n    prompt: {json.dumps(prompt)}\n{extra}"
    return text


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as s:
        yield s


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeLLMServer) -> Project:
    return make_project(tmp_path, monkeypatch, server)


# --- replies, usage, the report -------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_reply_usage_with_cache_fields_lands_in_the_store_and_the_report(
    project: Project, api: str
) -> None:
    served = [
        {"input": 1200, "output": 80, "cache_read": 3000, "cache_write": 500},
        {"input": 40, "output": 7, "cache_read": 0, "cache_write": 900},
    ]
    for n, usage in enumerate(served):
        project.server.reply(f"plan number {n}", usage=usage)
    project.write("p.yml", plan_pipeline(api, "first question", "second question"))

    result = project.run_json("run", "p.yml")
    assert result["status"] == "succeeded", result
    rid = result["run_id"]
    assert project.server.count == 2

    calls = project.calls(rid)
    assert [c.status for c in calls] == ["ok", "ok"]
    for call, usage in zip(calls, served, strict=True):
        got = call.usage
        # Normalised: for OpenAI the cached tokens come out of prompt_tokens again.
        assert (got.input, got.output, got.cache_read, got.cache_write) == (
            usage["input"],
            usage["output"],
            usage["cache_read"],
            usage["cache_write"],
        )
        assert got.estimated is False
        assert call.provider == api and call.model == MODELS[api]
    assert calls[0].response is not None and calls[0].response["text"] == "plan number 0"

    report = project.report(rid)
    total = sum(sum(u.values()) for u in served)
    assert report["spent_tokens"] == total
    assert report["usage"] == {
        field: sum(u[field] for u in served)
        for field in ("input", "output", "cache_read", "cache_write")
    }
    assert sum(a["usage"]["total"] for s in report["steps"] for a in s["attempts"]) == total
    assert report["cost_usd"] is not None and report["cost_usd"] > 0
    assert report["clean_pass_tokens"] == total
    assert report["tax_saga"] == 0.0


@pytest.mark.parametrize("api", APIS)
def test_429_with_retry_after_then_success_records_both_attempts(
    project: Project, api: str
) -> None:
    project.server.status(429, retry_after=0.1, message="slow down").reply(
        "done", usage={"input": 10, "output": 3}
    )
    project.write("p.yml", plan_pipeline(api))

    result = project.run_json("run", "p.yml")

    assert result["status"] == "succeeded", result
    assert project.server.count == 2
    calls = project.calls(result["run_id"])
    assert [(c.status, c.http_attempt) for c in calls] == [("error", 1), ("ok", 2)]
    assert calls[0].error is not None and "slow down" in calls[0].error["message"]
    assert calls[0].error["type"] == "ProviderRateLimited"
    # The failed attempt cost nothing; the report counts only what was paid for.
    assert project.report(result["run_id"])["spent_tokens"] == 13


def test_retry_after_is_capped_by_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeLLMServer
) -> None:
    """A server asking for an hour waits ``max_retry_after`` (the run would hang otherwise:
    pytest-timeout is the safety net, not an assertion)."""
    project = make_project(
        tmp_path,
        monkeypatch,
        server,
        config="providers:\n  anthropic: {max_retry_after: 0.1, max_retries: 1}\n",
    )
    server.status(429, retry_after=3600).reply("ok")
    project.write("p.yml", plan_pipeline("anthropic"))

    assert project.run_json("run", "p.yml")["status"] == "succeeded"
    assert server.count == 2


@pytest.mark.parametrize("api", APIS)
def test_529_overloaded_is_retried(project: Project, api: str) -> None:
    project.server.status(529, retry_after=0.05, message="Overloaded").reply("fine")
    project.write("p.yml", plan_pipeline(api))

    result = project.run_json("run", "p.yml")

    assert result["status"] == "succeeded", result
    assert project.server.count == 2
    first = project.calls(result["run_id"])[0]
    assert first.error is not None and first.error["type"] == "ProviderOverloaded"


@pytest.mark.parametrize("api", APIS)
def test_persistent_500_fails_the_step_with_the_api_message(project: Project, api: str) -> None:
    for _ in range(2):  # max_retries: 1 -> two attempts
        project.server.status(500, message="upstream database is on fire")
    project.write("p.yml", plan_pipeline(api))

    result = project.run("run", "p.yml")

    assert result.exit_code == 1, result
    assert "upstream database is on fire" in result.output
    assert project.server.count == 2
    rid = project.newest_run_id()
    calls = project.calls(rid)
    assert [(c.status, c.http_attempt) for c in calls] == [("error", 1), ("error", 2)]
    shown = project.run_json("show", rid)
    error = shown["steps"][0]["attempts"][0]["error"]["message"]
    assert "upstream database is on fire" in error
    assert "HTTP 500" in error


@pytest.mark.parametrize("api", APIS)
def test_401_fails_without_retry_and_names_the_variable(project: Project, api: str) -> None:
    project.server.status(401, message="invalid x-api-key")
    project.write("p.yml", plan_pipeline(api, extra="    retry: {attempts: 3, backoff: 0}\n"))

    result = project.run("run", "p.yml")

    assert result.exit_code == 1, result
    assert project.server.count == 1  # neither the provider loop nor the step retried
    assert KEY_ENV[api] in result.output
    assert "invalid x-api-key" in result.output
    assert len(project.attempts(project.newest_run_id())) == 1


@pytest.mark.parametrize("api", APIS)
def test_malformed_body_is_retried_as_a_server_error(project: Project, api: str) -> None:
    project.server.malformed().reply("whole", usage={"input": 5, "output": 1})
    project.write("p.yml", plan_pipeline(api))

    result = project.run_json("run", "p.yml")

    assert result["status"] == "succeeded", result
    assert project.server.count == 2
    first = project.calls(result["run_id"])[0]
    assert first.error is not None and first.error["type"] == "ProviderServerError"
    assert "malformed" in first.error["message"]


@pytest.mark.parametrize("api", APIS)
def test_reply_slower_than_the_timeout_is_abandoned_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeLLMServer, api: str
) -> None:
    project = make_project(
        tmp_path,
        monkeypatch,
        server,
        # 2 s: the prompt reply must arrive in time even on a loaded machine; the slow one
        # comes far later.
        config=f"providers:\n  {api}: {{timeout: 2, max_retries: 1}}\n",
    )
    server.slow(30.0, "too late").reply("in time")
    project.write("p.yml", plan_pipeline(api))

    result = project.run_json("run", "p.yml")

    assert result["status"] == "succeeded", result
    calls = project.calls(result["run_id"])
    assert [c.status for c in calls] == ["error", "ok"]
    assert calls[0].error is not None and calls[0].error["type"] == "ProviderTimeout"
    assert calls[1].response is not None and calls[1].response["text"] == "in time"


# --- the memo: a reply paid for is not paid again ---------------------------------------


WRITE_PIPELINE = f"""\
name: memo
defaults: {{provider: anthropic, model: {MODELS["anthropic"]}}}
steps:
  - id: plan
    kind: plan
    prompt: Plan a greeting module.
  - id: write
    kind: write
    max_reflections: 0
    retry: {{attempts: 2, backoff: 0}}
    prompt: |
      ${{{{ steps.plan.output.text }}}}
      Create hello.py.
    compensate: {{git: reset}}
"""

GOOD_EDIT = """\
hello.py
<<<<<<< SEARCH
=======
print("hello")
>>>>>>> REPLACE
"""

BAD_EDIT = """\
README.md
<<<<<<< SEARCH
this line is not in the file
=======
nothing
>>>>>>> REPLACE
"""


@pytest.mark.slow
def test_a_reply_stored_before_a_crash_is_reused_on_resume(project: Project) -> None:
    project.server.reply("1. create hello.py", usage={"input": 300, "output": 20})
    project.server.reply(GOOD_EDIT, usage={"input": 700, "output": 30, "cache_write": 200})
    project.write("p.yml", WRITE_PIPELINE)

    # The second reply (write's) is in the call log when the process is SIGKILLed.
    crashed = project.subprocess("run", "p.yml", fault="llm.after_reply:2")
    assert crashed.exit_code == -signal.SIGKILL, crashed
    assert project.server.count == 2
    rid = project.newest_run_id()

    resumed = project.run_json("resume", rid)

    assert resumed["status"] == "succeeded", resumed
    assert project.server.count == 2  # neither plan nor write asked again
    write_calls = [c for c in project.calls(rid) if c.step_id == "write"]
    assert [c.status for c in write_calls] == ["ok", "reused"]
    assert write_calls[1].served_from == write_calls[0].id
    report = project.report(rid)
    assert report["reused_from_log_tokens"] == 930
    assert report["spent_tokens"] == 320 + 930  # paid once each
    write_rows = [a for s in report["steps"] if s["step_id"] == "write" for a in s["attempts"]]
    assert write_rows[-1]["reused_tokens"]["call_log"] == 930
    # The reused reply was applied: the file exists on the run branch.
    commit = [a for a in project.attempts(rid) if a.step_id == "write"][-1].output["commit"]
    assert "hello" in _git_show(project.repo, f"{commit}:hello.py")


@pytest.mark.slow
def test_memo_off_asks_again_after_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeLLMServer
) -> None:
    # Quoted here; a bare `off` (YAML 1.1's false) is accepted too, tested below.
    project = make_project(tmp_path, monkeypatch, server, config='memo: "off"\n')
    server.reply("the plan").reply("the plan, again")
    project.write("p.yml", plan_pipeline("openai"))

    crashed = project.subprocess("run", "p.yml", fault="llm.after_reply")
    assert crashed.exit_code == -signal.SIGKILL, crashed
    resumed = project.run_json("resume", project.newest_run_id())

    assert resumed["status"] == "succeeded", resumed
    assert server.count == 2
    assert [c.status for c in project.calls(resumed["run_id"])] == ["ok", "ok"]


def test_memo_off_unquoted_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeLLMServer
) -> None:
    project = make_project(tmp_path, monkeypatch, server, config="memo: off\n")
    server.reply("the plan")
    project.write("p.yml", plan_pipeline("anthropic"))

    result = project.run("run", "p.yml")

    assert result.exit_code == 0, result


@pytest.mark.slow
@pytest.mark.parametrize(("memo", "requests"), [("global", 1), ("run", 2)])
def test_memo_global_reuses_an_unjudged_reply_across_runs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    server: FakeLLMServer,
    memo: str,
    requests: int,
) -> None:
    project = make_project(tmp_path, monkeypatch, server, config=f"memo: {memo}\n")
    server.reply("the plan", usage={"input": 50, "output": 5}).reply("a fresh plan")
    project.write("p.yml", plan_pipeline("openai"))

    crashed = project.subprocess("run", "p.yml", fault="llm.after_reply")
    assert crashed.exit_code == -signal.SIGKILL, crashed
    # Not a resume: a new run of the same pipeline asks the same question.
    second = project.run_json("run", "p.yml")

    assert second["status"] == "succeeded", second
    assert server.count == requests
    statuses = [c.status for c in project.calls(second["run_id"])]
    assert statuses == (["reused"] if memo == "global" else ["ok"])


def test_a_rejected_reply_is_asked_for_again(project: Project) -> None:
    """Edit blocks that do not apply judge the reply: the retry's identical request goes
    to the model, not to the call log."""
    project.server.reply("1. create hello.py").reply(BAD_EDIT).reply(GOOD_EDIT)
    project.write("README.md", "# a project\n")
    project.write("p.yml", WRITE_PIPELINE)

    result = project.run_json("run", "p.yml")

    assert result["status"] == "succeeded", result
    assert project.server.count == 3  # plan, write (rejected), write again
    write_calls = [c for c in project.calls(result["run_id"]) if c.step_id == "write"]
    assert [c.status for c in write_calls] == ["ok", "ok"]
    assert write_calls[0].request_hash == write_calls[1].request_hash
    write_requests = project.requests_with("Create hello.py")
    assert len(write_requests) == 2 and write_requests[0].body == write_requests[1].body


# --- budgets ----------------------------------------------------------------------------


def test_budget_refusal_sends_no_request_and_resume_with_more_budget_goes_on(
    project: Project,
) -> None:
    project.server.reply("the plan", usage={"input": 30, "output": 4})
    project.write(
        "p.yml",
        plan_pipeline(
            "anthropic", extra="    max_tokens: 1000\n", top="budget: {max_tokens: 500}\n"
        ),
    )

    refused = project.run("run", "p.yml")

    assert refused.exit_code == 1, refused
    assert project.server.count == 0
    message = refused.output
    assert "budget exceeded" in message and "no request was sent" in message
    assert "500 max_tokens" in message  # the limit
    assert "1,000 max_tokens" in message  # this call's share of the worst case
    rid = project.newest_run_id()
    assert "--budget max_tokens=N" in message  # and what to do about it

    resumed = project.run_json("resume", rid, "--budget", "max_tokens=5000")

    assert resumed["status"] == "succeeded", resumed
    assert project.server.count == 1


def test_run_budget_counts_what_earlier_steps_spent(project: Project) -> None:
    project.server.reply("0 " * 5, usage={"input": 100, "output": 400})
    project.write(
        "p.yml",
        plan_pipeline(
            "anthropic",
            "one",
            "two",
            extra="    max_tokens: 100\n",
            top="budget: {max_tokens: 650}\n",
        ),
    )

    result = project.run("run", "p.yml")

    # plan1 spent 500; plan2's worst case (a ~90-token prompt + 100) would cross 650.
    assert result.exit_code == 1, result
    assert project.server.count == 1
    assert "500 tokens spent" in result.output


# --- secrets ----------------------------------------------------------------------------


def test_api_keys_never_reach_the_store_the_logs_or_json_output(project: Project) -> None:
    # A server that echoes the key it rejected, as some do.
    project.server.reply("plan", usage={"input": 10, "output": 2})
    for _ in range(2):  # the run, then the resume
        project.server.status(401, message=f"Incorrect API key provided: {OPENAI_KEY}")
    project.write(
        "p.yml",
        f"""\
        name: secrets
        defaults: {{provider: anthropic, model: {MODELS["anthropic"]}}}
        workspace: {{isolation: none}}
        steps:
          - id: plan
            kind: plan
            prompt: A plan, please.
          - id: show-env
            kind: shell
            run: echo "key=$ANTHROPIC_API_KEY"; env | sort
          - id: ask-openai
            kind: plan
            provider: openai
            model: {MODELS["openai"]}
            prompt: And another.
        """,
    )

    first = project.run("run", "p.yml", "--json")
    assert first.exit_code == 1, first
    rid = project.newest_run_id()
    outputs = [first.stdout, first.stderr]
    for args in (("show", rid), ("report", rid), ("runs",), ("resume", rid)):
        shown = project.run(*args, "--json")
        outputs += [shown.stdout, shown.stderr]
    outputs.append(project.run("logs", rid).stdout)
    assert project.server.count == 3  # the plan, the 401, the resume's 401

    secrets = [ANTHROPIC_KEY.encode(), OPENAI_KEY.encode()]
    files = [p for p in project.store_path.parent.glob("state.db*") if p.is_file()]
    files += [p for p in (project.repo / ".agentsaga").rglob("*") if p.is_file()]
    assert any(p.name.startswith("state.db") for p in files)
    assert any("logs" in p.parts for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret not in data, f"{secret!r} found in {path}"
    for text in outputs:
        for secret in secrets:
            assert secret.decode() not in text
    # The step did run and its output was kept, masked.
    assert "key=" in "".join(outputs)


def _git_show(repo: Path, spec: str) -> str:
    import subprocess

    return subprocess.run(
        ["git", "show", spec], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize("api", APIS)
def test_temperature_reaches_the_api_only_when_set(project: Project, api: str) -> None:
    """anthropic>=1.0 took ``temperature`` out of ``create()``'s signature; the API still
    takes it in the body."""
    project.server.always("ok")
    project.write(
        "p.yml",
        plan_pipeline(
            api,
            "cold",
            "default",
            extra="",
        ).replace('prompt: "cold"\n', 'prompt: "cold"\n    temperature: 0\n'),
    )

    result = project.run_json("run", "p.yml")

    assert result["status"] == "succeeded", result
    cold, default = (r.body for r in project.server.requests)
    assert cold["temperature"] == 0
    assert "temperature" not in default
