"""The environment copy that a step reuses (``agentsaga.environ``) and the secrets read
from it: a change to ``os.environ`` between two steps is seen by the next one."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentsaga import environ
from agentsaga.redact import secret_values


def test_a_copy_follows_every_change_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSAGA_T_ONE", "1")
    first = environ.snapshot()
    assert first["AGENTSAGA_T_ONE"] == "1"
    assert environ.snapshot() is first  # nothing changed: no new copy
    monkeypatch.setenv("AGENTSAGA_T_ONE", "2")
    assert environ.snapshot()["AGENTSAGA_T_ONE"] == "2"
    monkeypatch.delenv("AGENTSAGA_T_ONE")
    assert "AGENTSAGA_T_ONE" not in environ.snapshot()


def test_copy_is_the_callers_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSAGA_T_TWO", "x")
    mine = environ.copy()
    mine["AGENTSAGA_T_TWO"] = "changed"
    assert environ.snapshot()["AGENTSAGA_T_TWO"] == "x"


def test_secrets_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTSAGA_T_API_KEY", raising=False)
    assert "sk-first-secret" not in secret_values()
    monkeypatch.setenv("AGENTSAGA_T_API_KEY", "sk-first-secret")
    assert "sk-first-secret" in secret_values()
    monkeypatch.setenv("AGENTSAGA_T_API_KEY", "sk-second-secret")
    found = secret_values()
    assert "sk-second-secret" in found and "sk-first-secret" not in found
    found.clear()  # a caller's list is its own
    assert "sk-second-secret" in secret_values()
    monkeypatch.delenv("AGENTSAGA_T_API_KEY")
    assert "sk-second-secret" not in secret_values()


def test_names_that_look_secret_and_one_that_does_not() -> None:
    env = {
        "GITHUB_TOKEN": "ghp-123456",
        "db_password": "hunter22",
        "AGENTSAGA_IDEMPOTENCY_KEY": "run:step:1",
        "PATH": "/usr/bin:/bin",
        "SHORT_KEY": "abc",
    }
    assert secret_values(env) == ["ghp-123456", "hunter22"]


def test_a_commands_environment_follows_the_environment_and_the_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``Runtime.base_env`` and ``env`` in the namespace are kept between steps, and
    built again when the environment, the run's workspace (its venv) or its vars change;
    each caller gets its own dict."""
    import threading

    from agentsaga.pipeline import load_text
    from agentsaga.runtime import EngineOptions, Runtime
    from agentsaga.store import RunRecord
    from agentsaga.store.sqlite import SqliteStore

    text = "name: t\nenv: {GREETING: 'hi ${{ vars.who }}'}\nvars: {who: a}\n"
    text += 'steps:\n  - {id: s, kind: shell, run: ["true"]}\n'
    pipeline = load_text(text, "p.yml", {})
    run = RunRecord(
        id="r1",
        pipeline_name="t",
        pipeline_path="p.yml",
        pipeline_text=text,
        pipeline_hash="h",
        vars={"who": "a"},
        status="running",
        state={},
        workspace={"python": {"venv": str(tmp_path / "venv1")}},
    )
    store = SqliteStore(tmp_path / "s.db")
    rt = Runtime(store, tmp_path, EngineOptions(), threading.Event(), print)
    monkeypatch.setenv("AGENTSAGA_T_THREE", "1")
    first = rt.base_env(run, pipeline)
    assert first["AGENTSAGA_T_THREE"] == "1" and first["GREETING"] == "hi a"
    assert first["VIRTUAL_ENV"] == str(tmp_path / "venv1")
    first["AGENTSAGA_T_THREE"] = "changed by a caller"
    assert rt.base_env(run, pipeline)["AGENTSAGA_T_THREE"] == "1"
    monkeypatch.setenv("AGENTSAGA_T_THREE", "2")
    assert rt.base_env(run, pipeline)["AGENTSAGA_T_THREE"] == "2"
    run.workspace["python"]["venv"] = str(tmp_path / "venv2")  # changed in place
    assert rt.base_env(run, pipeline)["VIRTUAL_ENV"] == str(tmp_path / "venv2")
    run.vars = {"who": "b"}
    assert rt.base_env(run, pipeline)["GREETING"] == "hi b"
    seen = rt.namespace(run, pipeline, {})["env"]  # what ${{ env.* }} reads
    assert seen["GREETING"] == "hi b" and seen["AGENTSAGA_T_THREE"] == "2"
    monkeypatch.setenv("AGENTSAGA_T_THREE", "3")
    assert rt.namespace(run, pipeline, {})["env"]["AGENTSAGA_T_THREE"] == "3"
