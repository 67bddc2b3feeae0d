"""Secrets are masked wherever a string is written or printed (issue 10, item 8).

Each test puts a secret where it once escaped: a model reply that echoes it (the call log,
the plan step's output), an edit failure whose "closest lines" quote a file holding it
(the error, in ``run --json``, stderr, ``show`` and the store), a failed write's stored
output (the reply), and a command killed while its output streams (the log file). The
proof reads the bytes of the store and the logs, not only what the CLI shows.
"""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentsaga.redact import MaskingWriter
from tests.conftest import Env, kill_group_from_pidfile, wait_until
from tests.gitstate import git
from tests.llm_project import MODELS, Project, make_project
from tests.llm_server import FakeLLMServer

SECRET = "tok-SECRET-5150-zz"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.setenv("MY_TOKEN", SECRET)
    with FakeLLMServer() as server:
        yield make_project(tmp_path, monkeypatch, server)


def stored_bytes(project: Project) -> bytes:
    """The store (database and WAL) and every log file: what must never hold a secret."""
    files = [p for p in project.store_path.parent.glob("state.db*") if p.is_file()]
    files += [p for p in (project.repo / ".agentsaga" / "logs").rglob("*") if p.is_file()]
    return b"".join(p.read_bytes() for p in files)


def test_a_reply_that_echoes_a_secret_is_masked_in_the_call_log_and_the_output(
    project: Project,
) -> None:
    project.server.reply(f"Deploy with {SECRET} and tell nobody.")
    project.write(
        "p.yml",
        f"""
        name: echo
        defaults: {{provider: anthropic, model: {MODELS["anthropic"]}}}
        steps:
          - {{id: plan, kind: plan, prompt: "What is the token?"}}
        """,
    )
    result = project.run("run", "p.yml", "--json")
    assert result.exit_code == 0, result
    rid = result.json()["run_id"]
    assert project.server.count == 1
    calls = project.calls(rid)
    assert calls and SECRET not in str(calls[0].response)
    output = project.attempts(rid)[0].output
    assert output["text"] == "Deploy with *** and tell nobody."
    for shown in (result.output, project.run("show", rid, "--json").output):
        assert SECRET not in shown
    assert project.run("report", rid).exit_code == 0
    assert SECRET.encode() not in stored_bytes(project)


def test_a_step_error_quoting_the_reply_is_masked_on_screen(project: Project) -> None:
    """A plan whose reply breaks its schema fails with the reply in its message, which
    the progress lines print at once, before anything is stored."""
    project.server.reply(f"No JSON here, only {SECRET}.")
    project.write(
        "p.yml",
        f"""
        name: schema
        defaults: {{provider: anthropic, model: {MODELS["anthropic"]}}}
        steps:
          - id: plan
            kind: plan
            prompt: "Plan."
            schema: {{type: object, required: [files]}}
        """,
    )
    result = project.subprocess("run", "p.yml")
    assert result.exit_code == 1, result
    assert "only ***." in result.stderr, result
    assert SECRET not in result.output
    assert SECRET.encode() not in stored_bytes(project)


def test_an_edit_failure_quoting_a_file_that_holds_a_secret_is_masked(
    project: Project,
) -> None:
    """The "closest lines" of a block that did not match quote the file; the failed
    write's output keeps the reply. Neither may carry the secret anywhere."""
    project.write("src/settings.py", f'API_TOKEN = "{SECRET}"\nDEBUG = False\n')
    git(project.repo, "add", "-A")
    git(project.repo, "commit", "-q", "-m", "settings")
    reply = (
        f"src/settings.py\n<<<<<<< SEARCH\nAPI_TOKEN  =  '{SECRET}'\n=======\n"
        'API_TOKEN = ""\n>>>>>>> REPLACE\n'
    )
    project.server.reply(reply)
    project.write(
        "p.yml",
        f"""
        name: leak
        defaults: {{provider: anthropic, model: {MODELS["anthropic"]}}}
        steps:
          - {{id: write, kind: write, prompt: "Remove the token.", max_reflections: 0}}
        """,
    )
    result = project.subprocess("run", "p.yml", "--json")
    assert result.exit_code == 1, result
    rid = result.stdout.split('"run_id": "')[1].split('"')[0]
    assert "closest existing lines" in result.output, result
    attempt = project.attempts(rid)[0]
    assert "API_TOKEN" in attempt.error["message"]
    assert attempt.output["text"] == reply.replace(SECRET, "***")
    shown = [
        result.stdout,
        result.stderr,
        project.subprocess("show", rid).output,
        project.subprocess("show", rid, "--json").output,
        project.subprocess("resume", rid).output,
    ]
    for text in shown:
        assert SECRET not in text, text[:600]
    assert SECRET.encode() not in stored_bytes(project)


def test_a_command_killed_mid_output_leaves_no_secret_in_its_log(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Logs are masked as they are written: agentsaga SIGKILLed while the command still
    runs (the secret already printed) leaves a log with ``***``, not the secret."""
    monkeypatch.setenv("MY_TOKEN", SECRET)
    pidfile = env.path / "pgid"
    command = (
        f'echo $$ > {pidfile}; printf "the token is %s.\\n" "$MY_TOKEN"; '
        'printf "READY%0100d\\n" 0; exec sleep 600'
    )
    path = env.write(
        "p.yml",
        f"""
        name: stream
        workspace: {{isolation: none}}
        steps:
          - {{id: talk, kind: shell, run: '{command}'}}
        """,
    )
    proc = env.spawn("run", path)
    try:
        logs = env.path / ".agentsaga" / "logs"

        def ready() -> bool:
            assert proc.proc.poll() is None, proc.wait()
            return any(b"READY" in p.read_bytes() for p in logs.rglob("*.out"))

        wait_until(ready, what="the command's output in its log")
        proc.signal(signal.SIGKILL)
        proc.wait()
    finally:
        kill_group_from_pidfile(pidfile)
    data = b"".join(p.read_bytes() for p in logs.rglob("*.out"))
    assert b"the token is ***." in data
    assert SECRET.encode() not in data


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_masking_a_stream_cut_anywhere_masks_the_whole_secret(chunk: int) -> None:
    text = f"a {SECRET} b {SECRET}{SECRET} tok-SECRET-51 c".encode()
    sink = io.BytesIO()
    writer = MaskingWriter(sink, [SECRET])
    for start in range(0, len(text), chunk):
        writer.write(text[start : start + chunk])
        assert SECRET.encode() not in sink.getvalue()
    writer.close()
    assert sink.getvalue() == b"a *** b ****** tok-SECRET-51 c"
