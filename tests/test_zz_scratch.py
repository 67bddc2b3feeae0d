import os
from pathlib import Path
import pytest
from tests.conftest import cli, Env
from tests.gitstate import make_repo
from tests.llm_server import FakeLLMServer, llm_server  # noqa

KEY = "sk-ant-SECRET-abcdef123456"

def test_x(env: Env, llm_server: FakeLLMServer, monkeypatch, tmp_path):
    repo = make_repo(tmp_path, {".agentsaga.yml": "providers:\n  anthropic:\n    max_retry_after: 0.2\n"})
    monkeypatch.chdir(repo)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", llm_server.anthropic_base_url)
    (repo / "p.yml").write_text("""
name: g
defaults: {provider: anthropic, model: claude-sonnet-4-6}
workspace: {isolation: none}
steps:
  - id: plan
    kind: plan
    prompt: hello
""")
    llm_server.status(429, retry_after=0.1).reply("the plan", usage={"input": 100, "output": 20, "cache_read": 7, "cache_write": 3})
    r = cli("run", "p.yml", "--json")
    print(r)
    rid = r.json()["run_id"]
    print(cli("report", rid, "--json"))
    print(llm_server.count)
    assert 0
