"""The environment copy that a step reuses (``agentsaga.environ``) and the secrets read
from it: a change to ``os.environ`` between two steps is seen by the next one."""

from __future__ import annotations

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
