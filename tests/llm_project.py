"""A git repository wired to the loopback LLM server, for tests that run whole pipelines
with the real SDK clients.

``Project`` puts the keys and base URLs in the environment (the SDKs read
``ANTHROPIC_BASE_URL`` / ``OPENAI_BASE_URL``), writes ``.agentsaga.yml``, and runs the CLI
in-process from the repository, as a user would. Its helpers read what the server saw and
what the store recorded, so a test can compare the two.
"""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentsaga.store import LLMCallRecord, open_store
from tests import zygote
from tests.conftest import Result, cli
from tests.gitstate import make_repo
from tests.llm_server import FakeLLMServer, RecordedRequest

ANTHROPIC_KEY = "sk-ant-api03-SECRET-gateway-0123456789abcdef"
OPENAI_KEY = "sk-proj-SECRET-gateway-fedcba9876543210"
# Not a deprecated name: anthropic warns on those, and pytest turns warnings into errors.
MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4o"}
KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}

#: Retries fast enough for a test: a capped retry-after, one retry unless a test wants more.
FAST_CONFIG = """\
providers:
  anthropic: {max_retry_after: 0.5, max_retries: 1}
  openai: {max_retry_after: 0.5, max_retries: 1}
"""


@dataclass
class Project:
    repo: Path
    server: FakeLLMServer
    store_path: Path

    def write(self, name: str, text: str) -> Path:
        target = self.repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip("\n"))
        return target

    def run(self, *args: str | Path) -> Result:
        return cli(*args)

    def run_json(self, *args: str | Path) -> dict[str, Any]:
        result = cli(*args, "--json")
        try:
            data: dict[str, Any] = result.json()
        except ValueError:
            raise AssertionError(f"not JSON:\n{result!r}") from None
        return data

    def subprocess(self, *args: str | Path, fault: str | None = None) -> Result:
        """The installed command in a child process (inherits the keys and base URLs)."""
        env = dict(os.environ)
        if fault:
            env["AGENTSAGA_FAULT"] = fault
        # Forked from a pre-imported server where the test module starts one (tests/zygote.py).
        proc = zygote.launch([str(a) for a in args], self.repo, env, timeout=60)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def report(self, run_id: str) -> dict[str, Any]:
        return self.run_json("report", run_id)

    def calls(self, run_id: str) -> list[LLMCallRecord]:
        store = open_store(str(self.store_path))
        try:
            return store.llm_calls(run_id)
        finally:
            store.close()

    def attempts(self, run_id: str) -> list[Any]:
        store = open_store(str(self.store_path))
        try:
            return list(store.attempts(run_id))
        finally:
            store.close()

    def newest_run_id(self) -> str:
        store = open_store(str(self.store_path))
        try:
            return str(store.list_runs()[0].id)
        finally:
            store.close()

    def requests_with(self, needle: str) -> list[RecordedRequest]:
        """The requests whose body mentions ``needle`` (a step's system prompt or prompt)."""
        return [r for r in self.server.requests if needle in json.dumps(r.body)]


def make_project(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    server: FakeLLMServer,
    *,
    config: str = FAST_CONFIG,
    files: dict[str, str] | None = None,
) -> Project:
    repo = make_repo(tmp_path, {".agentsaga.yml": config, **(files or {})})
    monkeypatch.chdir(repo)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.anthropic_base_url)
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
    for var in ("ANTHROPIC_AUTH_TOKEN", "AGENTSAGA_FAULT"):
        monkeypatch.delenv(var, raising=False)
    return Project(repo, server, tmp_path / "state.db")
