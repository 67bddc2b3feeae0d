"""Providers against the real SDK clients and a loopback server: nothing of ours is mocked."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentsaga.errors import (
    ConfigError,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloaded,
    ProviderRateLimited,
    ProviderServerError,
    ProviderSpendLimit,
    ProviderTimeout,
)
from agentsaga.providers import (
    LLMRequest,
    LLMResponse,
    Message,
    Provider,
    ProviderConfig,
    RetryPolicy,
    ScriptedProvider,
    Usage,
    call_with_retries,
    get_provider,
)
from agentsaga.providers.scripted import load_replies
from tests.llm_server import FakeLLMServer

ANTHROPIC_KEY = "sk-ant-test-SECRET-0123456789"
OPENAI_KEY = "sk-test-SECRET-9876543210"
# Not a deprecated name: the SDK warns on those, and pytest turns warnings into errors.
ANTHROPIC_MODEL = "claude-sonnet-4-6"
OPENAI_MODEL = "gpt-4o"
KEY_VARS = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "MY_KEY",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as s:
        yield s


MakeProvider = Callable[[FakeLLMServer], Provider]


def _anthropic(s: FakeLLMServer) -> Provider:
    return get_provider(
        "anthropic", ProviderConfig(api_key=ANTHROPIC_KEY, base_url=s.anthropic_base_url)
    )


def _openai(s: FakeLLMServer) -> Provider:
    return get_provider("openai", ProviderConfig(api_key=OPENAI_KEY, base_url=s.openai_base_url))


BOTH = pytest.mark.parametrize(
    ("make", "key_var"),
    [(_anthropic, "ANTHROPIC_API_KEY"), (_openai, "OPENAI_API_KEY")],
    ids=["anthropic", "openai"],
)


def request_for(provider: Provider, **kw: Any) -> LLMRequest:
    model = ANTHROPIC_MODEL if provider.name == "anthropic" else OPENAI_MODEL
    fields: dict[str, Any] = {
        "provider": provider.name,
        "model": model,
        "system": "You are terse.",
        "messages": (Message("user", "Say hi"),),
        "max_tokens": 64,
    }
    fields.update(kw)
    return LLMRequest(**fields)


class Recorder:
    """Collects on_attempt reports and sleeps, so retry tests run instantly."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.attempts: list[tuple[int, LLMResponse | None, ProviderError | None, float]] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def on_attempt(
        self, n: int, resp: LLMResponse | None, err: ProviderError | None, ms: float
    ) -> None:
        self.attempts.append((n, resp, err, ms))

    def call(self, provider: Provider, request: LLMRequest, policy: RetryPolicy) -> LLMResponse:
        return call_with_retries(
            provider,
            request,
            policy,
            on_attempt=self.on_attempt,
            sleep=self.sleep,
            rand=lambda: 1.0,
        )


FAST = RetryPolicy(attempts=4, base_delay_s=1.0, max_delay_s=30.0, timeout_s=10.0)


# -- normal replies ---------------------------------------------------------------------


def test_anthropic_reply_reports_usage_with_cache_fields(server: FakeLLMServer) -> None:
    provider = _anthropic(server)
    server.reply("hi there", {"input": 12, "output": 3, "cache_read": 900, "cache_write": 40})
    response = provider.complete(request_for(provider), timeout_s=10)
    assert response.text == "hi there"
    assert response.usage == Usage(input=12, output=3, cache_read=900, cache_write=40)
    assert response.model == ANTHROPIC_MODEL
    assert response.stop_reason == "end_turn"
    assert response.request_id == "req_fake_1"
    assert response.latency_ms > 0
    assert server.requests[0].path == "/v1/messages"


def test_openai_reply_normalises_cached_tokens_out_of_input(server: FakeLLMServer) -> None:
    provider = _openai(server)
    # The server reports prompt_tokens=912 of which cached_tokens=900 (OpenAI's convention).
    server.reply("hi", {"input": 12, "output": 3, "cache_read": 900})
    response = provider.complete(request_for(provider), timeout_s=10)
    assert response.usage == Usage(input=12, output=3, cache_read=900, cache_write=0)
    assert response.usage.prompt == 912
    assert response.request_id == "req_fake_1"
    body = server.requests[0].body
    assert server.requests[0].path == "/v1/chat/completions"
    assert body["messages"][0] == {"role": "system", "content": "You are terse."}
    # A custom base_url means an OpenAI-compatible server: the widely understood field.
    assert body["max_tokens"] == 64


def test_openai_server_without_usage_gets_an_estimate(server: FakeLLMServer) -> None:
    provider = _openai(server)
    server.reply("hello world", omit_usage=True)
    response = provider.complete(request_for(provider), timeout_s=10)
    assert response.usage.estimated
    assert response.usage.output == 2


def test_anthropic_marks_cache_prefix_and_system_with_cache_control(
    server: FakeLLMServer,
) -> None:
    provider = _anthropic(server)
    server.reply().reply()
    provider.complete(request_for(provider, cache_prefix="FILE CONTENTS"), timeout_s=10)
    provider.complete(request_for(provider), timeout_s=10)
    cached, plain = (r.body for r in server.requests)
    ephemeral = {"type": "ephemeral"}
    assert cached["system"] == [
        {"type": "text", "text": "You are terse.", "cache_control": ephemeral}
    ]
    first = cached["messages"][0]
    assert first["role"] == "user"
    assert first["content"][0] == {
        "type": "text",
        "text": "FILE CONTENTS",
        "cache_control": ephemeral,
    }
    assert first["content"][1] == {"type": "text", "text": "Say hi"}
    assert plain["messages"][0] == {"role": "user", "content": "Say hi"}


def test_anthropic_large_max_tokens_passes_the_sdk_nonstreaming_guard(
    server: FakeLLMServer,
) -> None:
    # Without an explicit timeout the SDK refuses max_tokens this large unless streaming.
    provider = _anthropic(server)
    server.reply("long")
    assert provider.complete(request_for(provider, max_tokens=128_000), timeout_s=10).text == "long"


# -- retries ----------------------------------------------------------------------------


@BOTH
def test_429_with_retry_after_then_success(
    server: FakeLLMServer, make: MakeProvider, key_var: str
) -> None:
    provider = make(server)
    server.status(429, retry_after=2).reply("finally")
    rec = Recorder()
    response = rec.call(provider, request_for(provider), FAST)
    assert response.text == "finally"
    assert rec.sleeps == [2.0]
    assert server.count == 2
    (n1, r1, e1, _), (n2, r2, e2, _) = rec.attempts
    assert (n1, r1, n2, e2) == (1, None, 2, None)
    assert isinstance(e1, ProviderRateLimited) and e1.retry_after_s == 2.0
    assert r2 is response


def test_retry_after_is_capped(server: FakeLLMServer) -> None:
    provider = _anthropic(server)
    server.status(429, retry_after=3600).reply("ok")
    rec = Recorder()
    policy = RetryPolicy(attempts=3, max_retry_after_s=7.5, timeout_s=10)
    assert rec.call(provider, request_for(provider), policy).text == "ok"
    assert rec.sleeps == [7.5]


def test_529_overloaded_is_retried(server: FakeLLMServer) -> None:
    provider = _anthropic(server)
    server.status(529).reply("ok")
    rec = Recorder()
    assert rec.call(provider, request_for(provider), FAST).text == "ok"
    assert isinstance(rec.attempts[0][2], ProviderOverloaded)
    assert rec.sleeps == [1.0]  # base delay * 2**0, full jitter at its top (rand=1.0)


@BOTH
def test_persistent_500_fails_with_the_api_message_after_all_attempts(
    server: FakeLLMServer, make: MakeProvider, key_var: str
) -> None:
    provider = make(server)
    for _ in range(FAST.attempts):
        server.status(500, message="upstream exploded")
    rec = Recorder()
    with pytest.raises(ProviderServerError, match="upstream exploded") as info:
        rec.call(provider, request_for(provider), FAST)
    assert info.value.status == 500
    assert server.count == FAST.attempts
    assert [a[0] for a in rec.attempts] == [1, 2, 3, 4]
    assert rec.sleeps == [1.0, 2.0, 4.0]  # exponential ceilings


def test_backoff_jitter_stays_under_the_ceiling() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=3.0)
    err = ProviderServerError("x", "boom", status=500)
    for retry_no, ceiling in [(1, 1.0), (2, 2.0), (3, 3.0), (9, 3.0)]:
        assert policy.delay_s(retry_no, err, lambda: 1.0) == ceiling
        assert policy.delay_s(retry_no, err, lambda: 0.25) == ceiling * 0.25


@BOTH
def test_401_is_not_retried_and_names_the_variable(
    server: FakeLLMServer, make: MakeProvider, key_var: str
) -> None:
    provider = make(server)
    server.status(401, message="invalid x-api-key").reply("never")
    rec = Recorder()
    with pytest.raises(ProviderAuthError, match=key_var) as info:
        rec.call(provider, request_for(provider), FAST)
    assert info.value.status == 401
    assert server.count == 1 and rec.sleeps == []


@BOTH
def test_bad_request_is_not_retried(
    server: FakeLLMServer, make: MakeProvider, key_var: str
) -> None:
    provider = make(server)
    server.status(400, message="max_tokens: too large").reply("never")
    with pytest.raises(ProviderBadRequest, match="max_tokens: too large"):
        Recorder().call(provider, request_for(provider), FAST)
    assert server.count == 1


def test_anthropic_credit_balance_is_a_spend_limit(server: FakeLLMServer) -> None:
    provider = _anthropic(server)
    server.status(400, message="Your credit balance is too low to access the Anthropic API.")
    with pytest.raises(ProviderSpendLimit, match="credit balance"):
        Recorder().call(provider, request_for(provider), FAST)
    assert server.count == 1


def test_openai_insufficient_quota_is_a_spend_limit_not_a_rate_limit(
    server: FakeLLMServer,
) -> None:
    provider = _openai(server)
    server.status(429, code="insufficient_quota", message="You exceeded your current quota")
    with pytest.raises(ProviderSpendLimit, match="quota"):
        Recorder().call(provider, request_for(provider), FAST)
    assert server.count == 1


# -- keys -------------------------------------------------------------------------------


def test_missing_anthropic_key_fails_before_any_request(server: FakeLLMServer) -> None:
    provider = get_provider("anthropic", ProviderConfig(base_url=server.anthropic_base_url))
    with pytest.raises(ProviderAuthError) as info:
        Recorder().call(provider, request_for(provider), FAST)
    assert "set ANTHROPIC_API_KEY (or providers.anthropic.api_key_env in .agentsaga.yml)" in str(
        info.value
    )
    assert server.count == 0


def test_missing_openai_key_names_the_variable() -> None:
    provider = get_provider("openai", ProviderConfig())
    with pytest.raises(ProviderAuthError, match="set OPENAI_API_KEY"):
        provider.complete(request_for(provider), timeout_s=1)


def test_key_from_configured_variable(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = ProviderConfig(base_url=server.anthropic_base_url, api_key_env="MY_KEY")
    provider = get_provider("anthropic", config)
    with pytest.raises(ProviderAuthError, match="set MY_KEY"):
        provider.complete(request_for(provider), timeout_s=1)
    monkeypatch.setenv("MY_KEY", ANTHROPIC_KEY)
    server.reply("ok")
    assert get_provider("anthropic", config).complete(request_for(provider), timeout_s=5).text
    assert ANTHROPIC_KEY in json.dumps(server.requests[0].headers)


def test_openai_compatible_local_server_needs_no_key(server: FakeLLMServer) -> None:
    config = ProviderConfig(base_url=server.openai_base_url, extra={"type": "openai"})
    provider = get_provider("ollama", config)
    assert provider.name == "ollama"
    server.reply("local")
    assert provider.complete(request_for(provider, model="llama3.2"), timeout_s=5).text == "local"


@BOTH
def test_api_key_never_appears_in_errors_or_requests(
    server: FakeLLMServer, make: MakeProvider, key_var: str
) -> None:
    provider = make(server)
    key = ANTHROPIC_KEY if provider.name == "anthropic" else OPENAI_KEY
    # Real APIs echo (parts of) a rejected key; our messages must not carry it on.
    server.status(401, message=f"Incorrect API key provided: {key}")
    server.status(500, message=f"error for {key}")
    request = request_for(provider)
    for _ in range(2):
        with pytest.raises(ProviderError) as info:
            provider.complete(request, timeout_s=5)
        assert key not in str(info.value)
        assert key not in json.dumps(info.value.to_json())
    assert key not in json.dumps(request.to_json()) and key not in request.request_hash()
    assert key not in repr(ProviderConfig(api_key=key))


# -- broken transports ------------------------------------------------------------------


@BOTH
def test_malformed_body_is_a_retryable_server_error(
    server: FakeLLMServer, make: MakeProvider, key_var: str
) -> None:
    provider = make(server)
    server.malformed()
    with pytest.raises(ProviderServerError, match="malformed response body"):
        provider.complete(request_for(provider), timeout_s=5)
    server.malformed().reply("recovered")
    assert Recorder().call(provider, request_for(provider), FAST).text == "recovered"


@BOTH
def test_reply_slower_than_the_timeout(
    server: FakeLLMServer, make: MakeProvider, key_var: str
) -> None:
    provider = make(server)
    server.slow(600)  # never within the test: the server drops it when it stops
    with pytest.raises(ProviderTimeout):
        provider.complete(request_for(provider), timeout_s=0.3)


def test_unreachable_server_is_a_connection_error() -> None:
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = get_provider(
        "anthropic", ProviderConfig(api_key=ANTHROPIC_KEY, base_url=f"http://127.0.0.1:{port}")
    )
    with pytest.raises(ProviderConnectionError):
        provider.complete(request_for(provider), timeout_s=5)


def test_empty_queue_answers_500(server: FakeLLMServer) -> None:
    provider = _anthropic(server)
    with pytest.raises(ProviderServerError, match="no scripted behaviour left"):
        provider.complete(request_for(provider), timeout_s=5)


# -- request / response types -----------------------------------------------------------


def test_request_hash_is_canonical_and_covers_every_field() -> None:
    # Dicts (as JSON and YAML give them) are normalised to Message.
    base = LLMRequest("anthropic", "m", "s", ({"role": "user", "content": "x"},), 10)  # type: ignore[arg-type]
    same = LLMRequest("anthropic", "m", "s", (Message("user", "x"),), 10)
    assert base == same and base.request_hash() == same.request_hash()
    variants = [
        LLMRequest("openai", "m", "s", base.messages, 10),
        LLMRequest("anthropic", "m2", "s", base.messages, 10),
        LLMRequest("anthropic", "m", "s2", base.messages, 10),
        LLMRequest("anthropic", "m", "s", (Message("user", "y"),), 10),
        LLMRequest("anthropic", "m", "s", base.messages, 11),
        LLMRequest("anthropic", "m", "s", base.messages, 10, temperature=0.0),
        LLMRequest("anthropic", "m", "s", base.messages, 10, stop=("END",)),
        LLMRequest("anthropic", "m", "s", base.messages, 10, cache_prefix="ctx"),
    ]
    hashes = {v.request_hash() for v in variants} | {base.request_hash()}
    assert len(hashes) == len(variants) + 1
    assert LLMRequest.from_json(json.loads(json.dumps(base.to_json()))) == base


def test_usage_and_response_round_trip() -> None:
    a = Usage(input=1, output=2, cache_read=3, cache_write=4)
    b = Usage(input=10, estimated=True)
    assert (a + b) == Usage(input=11, output=2, cache_read=3, cache_write=4, estimated=True)
    assert a.total == 10 and a.prompt == 8
    assert Usage.from_json(a.to_json()) == a
    resp = LLMResponse("t", a, "m", "end_turn", 1.5, "req_1")
    assert LLMResponse.from_json(json.loads(json.dumps(resp.to_json()))) == resp


def test_unknown_provider_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown provider 'nope'"):
        get_provider("nope")


# -- scripted ---------------------------------------------------------------------------


def test_scripted_replies_in_order_with_estimated_and_forced_usage() -> None:
    provider = ScriptedProvider(
        ["hello world", {"text": "exact", "usage": {"input": 100, "output": 7}}]
    )
    req = LLMRequest("scripted", "gpt-4o", "", (Message("user", "hello world"),), 5)
    first = provider.complete(req, timeout_s=1)
    assert first.text == "hello world"
    assert first.usage == Usage(input=2, output=2, estimated=True)
    second = provider.complete(req, timeout_s=1)
    assert second.usage == Usage(input=100, output=7)
    assert provider.cursor == 2 and len(provider.requests) == 2
    with pytest.raises(ProviderBadRequest, match="no scripted reply left"):
        provider.complete(req, timeout_s=1)


def test_scripted_errors_drive_the_retry_loop() -> None:
    provider = get_provider(
        "scripted",
        scripted_replies=[{"error": "rate_limit", "retry_after": 3}, {"error": "server"}, "ok"],
    )
    req = LLMRequest("scripted", "m", "", (Message("user", "q"),), 5)
    rec = Recorder()
    assert rec.call(provider, req, FAST).text == "ok"
    assert rec.sleeps == [3.0, 2.0]
    auth = ScriptedProvider([{"error": "auth"}, "never"])
    with pytest.raises(ProviderAuthError):
        rec.call(auth, req, FAST)
    assert auth.cursor == 1


def test_scripted_cursor_and_files(tmp_path: Path) -> None:
    assert (
        ScriptedProvider(["a", "b"], cursor=1)
        .complete(LLMRequest("scripted", "m", "", (), 5), timeout_s=1)
        .text
        == "b"
    )
    (tmp_path / "r.yml").write_text("plan: [one, two]\nwrite:\n  - {text: three}\n")
    (tmp_path / "r.json").write_text(json.dumps(["x"]))
    assert load_replies(tmp_path / "r.yml") == {
        "plan": ["one", "two"],
        "write": [{"text": "three"}],
    }
    provider = ScriptedProvider.from_file(tmp_path / "r.yml", step="write")
    assert provider.complete(LLMRequest("scripted", "m", "", (), 5), timeout_s=1).text == "three"
    assert ScriptedProvider.from_file(tmp_path / "r.json").replies == ["x"]


def test_importing_agentsaga_providers_does_not_import_the_sdks() -> None:
    code = (
        "import sys, agentsaga.providers, agentsaga.tokens, agentsaga.pricing\n"
        "import agentsaga.providers.anthropic_provider, agentsaga.providers.openai_provider\n"
        "from agentsaga.providers import get_provider, ProviderConfig\n"
        "get_provider('anthropic', ProviderConfig(api_key='k'))\n"
        "heavy = {'anthropic', 'openai', 'tiktoken', 'genai_prices'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- importing the SDKs ahead of the first call ----------------------------------------


def test_warm_up_imports_each_needed_sdk_once_in_a_background_thread() -> None:
    """A fresh interpreter: the SDKs are not imported until warm_up starts a thread per
    SDK (a configured name resolves to its type; scripted needs none)."""
    code = """
import sys
from agentsaga import providers
assert "anthropic" not in sys.modules and "openai" not in sys.modules
started = providers.warm_up(
    ["anthropic", "scripted", "local"], {"providers": {"local": {"type": "openai"}}}
)
threads = dict(providers._warming)
for thread in threads.values():
    thread.join(60)
print(sorted(started), sorted(t.name for t in threads.values()))
print("anthropic" in sys.modules, "openai" in sys.modules)
print(providers.warm_up(["anthropic", "openai"]))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout.splitlines()
    assert out == [
        "['anthropic', 'openai'] ['agentsaga-import-anthropic', 'agentsaga-import-openai']",
        "True True",
        "[]",
    ]


def test_a_run_warms_up_the_providers_its_model_steps_name() -> None:
    from agentsaga.engine import model_providers
    from agentsaga.pipeline import load_text

    text = """name: t
workspace: {isolation: none}
defaults: {provider: openai}
steps:
  - id: build
    kind: shell
    run: ["true"]
  - id: plan
    kind: plan
    provider: anthropic
    prompt: Plan it
  - id: plan2
    kind: plan
    prompt: Plan again
  - id: plan3
    kind: plan
    provider: ${{ vars.p }}
    prompt: Plan late
vars: {p: scripted}
"""
    assert model_providers(load_text(text)) == {"anthropic", "openai"}
    shell_only = text.split("  - id: plan\n")[0].replace("defaults: {provider: openai}\n", "")
    assert model_providers(load_text(shell_only)) == set()


def test_scripted_tool_args_that_are_not_a_mapping_say_what_is_wrong() -> None:
    """Found in review: the message read "tool call 1: arguments: a mapping"."""
    from agentsaga.errors import ConfigError
    from agentsaga.providers.scripted import _tool_calls

    with pytest.raises(ConfigError) as caught:
        _tool_calls({"tool": "create_file", "args": "{not json"}, 6)
    assert str(caught.value) == (
        "scripted reply 7: tool call 1: its args must be a mapping (name: value), "
        "not str '{not json'"
    )
