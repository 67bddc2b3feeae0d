"""Prompt caching for real: the providers send cacheable prefixes through the real SDK
clients, the loopback server caches them as each API does (tests/prompt_cache.py), and
the usage and dollars agentsaga records follow from what was actually sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentsaga.pricing import cost_usd
from agentsaga.providers import LLMRequest, Message, Provider, ProviderConfig, get_provider
from agentsaga.providers.base import Usage
from tests.llm_project import make_project
from tests.llm_server import FakeLLMServer
from tests.prompt_cache import CHARS_PER_TOKEN

MODEL = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4o"}
# USD per million tokens, from the providers' price pages (what genai-prices must say).
RATES = {
    "anthropic": {"input": 3.0, "output": 15.0, "cache_read": 0.30, "cache_write": 3.75},
    "openai": {"input": 2.5, "output": 10.0, "cache_read": 1.25, "cache_write": 2.5},
}
CONTEXT = "".join(f"line {i}: some file content that stays the same\n" for i in range(200))
PREFIX_TOKENS = len(CONTEXT) // CHARS_PER_TOKEN  # ~2,300: above both minimums


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock: Clock) -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as s:
        s.prompt_cache(ttl_s=300, clock=clock).always("ok", {"output": 7})
        yield s


def provider(server: FakeLLMServer, name: str) -> Provider:
    url = server.anthropic_base_url if name == "anthropic" else server.openai_base_url
    return get_provider(name, ProviderConfig(api_key="sk-test-key", base_url=url))


def ask(p: Provider, question: str, prefix: str | None = CONTEXT) -> Usage:
    request = LLMRequest(
        provider=p.name,
        model=MODEL[p.name],
        system="You edit code.",
        messages=(Message("user", question),),
        max_tokens=64,
        cache_prefix=prefix,
    )
    return p.complete(request, timeout_s=30).usage


def dollars(name: str, usage: Usage) -> float:
    rates = RATES[name]
    return (
        usage.input * rates["input"]
        + usage.output * rates["output"]
        + usage.cache_read * rates["cache_read"]
        + usage.cache_write * rates["cache_write"]
    ) / 1_000_000


# --- Anthropic: explicit breakpoints ---------------------------------------------------------


def test_anthropic_writes_the_marked_prefix_then_reads_it_and_charges_each_rate(
    server: FakeLLMServer,
) -> None:
    p = provider(server, "anthropic")
    first, second = ask(p, "Question one?"), ask(p, "Question two?")
    body = server.requests[0].body
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][0]["content"][0] == {
        "type": "text",
        "text": CONTEXT,
        "cache_control": {"type": "ephemeral"},
    }
    # The first request writes system + prefix; the question after the breakpoint is input.
    assert first.cache_read == 0 and PREFIX_TOKENS <= first.cache_write <= PREFIX_TOKENS + 80
    assert 0 < first.input < 30
    # The second reads exactly what the first wrote and writes nothing.
    assert second.cache_read == first.cache_write and second.cache_write == 0
    assert second.input == first.input and second.output == first.output == 7
    for usage in (first, second):
        assert cost_usd("anthropic", MODEL["anthropic"], usage) == pytest.approx(
            dollars("anthropic", usage)
        )
    assert cost_usd("anthropic", MODEL["anthropic"], second) < cost_usd(
        "anthropic", MODEL["anthropic"], first
    )


def test_anthropic_does_not_cache_a_prefix_below_the_minimum(server: FakeLLMServer) -> None:
    p = provider(server, "anthropic")
    short = CONTEXT[: 900 * CHARS_PER_TOKEN]  # with the system prompt still < 1,024
    for usage in (ask(p, "One?", short), ask(p, "One?", short)):
        assert (usage.cache_read, usage.cache_write) == (0, 0)
        assert usage.input >= 900


def test_anthropic_entries_expire_after_the_ttl_and_a_hit_refreshes_them(
    server: FakeLLMServer, clock: Clock
) -> None:
    p = provider(server, "anthropic")
    written = ask(p, "a?").cache_write
    assert written >= PREFIX_TOKENS
    clock.now += 200
    assert ask(p, "b?").cache_read == written  # a hit: the entry lives 300 s from now
    clock.now += 200
    assert ask(p, "c?").cache_read == written
    clock.now += 301
    expired = ask(p, "d?")
    assert (expired.cache_read, expired.cache_write) == (0, written)


def test_anthropic_reads_the_longest_cached_prefix_of_a_longer_conversation(
    server: FakeLLMServer,
) -> None:
    """A changed tail after the prefix: the prefix is read, the new part written."""
    p = provider(server, "anthropic")
    first = ask(p, "Q?")
    longer = ask(p, "Q?", CONTEXT + CONTEXT)
    assert longer.cache_read == 0  # the prefix block itself changed: no boundary matches
    assert longer.cache_write >= 2 * PREFIX_TOKENS
    again = ask(p, "Q?")
    assert again.cache_read == first.cache_write


# --- OpenAI: automatic prefix caching -------------------------------------------------------


def test_openai_caches_shared_prefixes_automatically_in_128_token_steps(
    server: FakeLLMServer,
) -> None:
    p = provider(server, "openai")
    first, second = ask(p, "Question one?"), ask(p, "Question two?")
    body = json.dumps(server.requests[0].body)
    assert "cache_control" not in body  # nothing to mark: OpenAI caches on its own
    assert server.requests[0].body["messages"][1]["content"].startswith(CONTEXT)
    assert first.cache_read == 0 and first.cache_write == 0
    assert second.cache_read >= 1024 and (second.cache_read - 1024) % 128 == 0
    shared = server.requests[1].usage
    assert shared is not None
    assert PREFIX_TOKENS - 128 < second.cache_read <= PREFIX_TOKENS + 80
    # prompt_tokens includes the cached part; agentsaga's input excludes it.
    assert second.prompt == first.prompt and second.input == second.prompt - second.cache_read
    assert cost_usd("openai", MODEL["openai"], second) == pytest.approx(dollars("openai", second))


def test_openai_caches_nothing_for_a_prompt_under_1024_tokens(server: FakeLLMServer) -> None:
    p = provider(server, "openai")
    short = CONTEXT[: 900 * CHARS_PER_TOKEN]
    assert [ask(p, "x?", short).cache_read for _ in range(2)] == [0, 0]


# --- a rewound write step reads its context from the cache ----------------------------------


EDIT = "calc.py\n<<<<<<< SEARCH\nX = 1\n=======\nX = 2\n>>>>>>> REPLACE\n"


@pytest.mark.parametrize("name", ["anthropic", "openai"])
def test_a_rewound_write_step_hits_the_cache_for_its_shared_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    with FakeLLMServer() as server:
        server.prompt_cache().always(EDIT)
        project = make_project(
            tmp_path, monkeypatch, server, config="", files={"calc.py": "X = 1\n"}
        )
        flag = tmp_path / "failed-once"
        pipeline = tmp_path / "p.yml"
        pipeline.write_text(
            f"name: cached\ndefaults: {{provider: {name}, model: {MODEL[name]}}}\n"
            f"vars: {{context: {json.dumps(CONTEXT)}}}\n"
            "steps:\n"
            "  - id: write\n    kind: write\n"
            '    prompt: "${{ vars.context }}\\n${{ rewind.error }}"\n'
            "    compensate: {git: reset}\n"
            "  - id: test\n    kind: test\n"
            f"    run: {json.dumps(f'test -f {flag} || {{ touch {flag}; exit 1; }}')}\n"
            "    on_failure: {rewind_to: write, max_rewinds: 1}\n"
        )
        result = project.run_json("run", pipeline)
        assert result["status"] == "succeeded", result
        calls = [c for c in project.calls(result["run_id"]) if c.step_id == "write"]
        assert len(calls) == 2 and len(server.requests) == 2
        first, second = (c.usage for c in calls)
        assert [r.usage for r in server.requests] == [
            {
                "input": u.input,
                "output": u.output,
                "cache_read": u.cache_read,
                "cache_write": u.cache_write,
            }
            for u in (first, second)
        ]
        if name == "anthropic":
            prefix = server.requests[1].body["messages"][0]["content"][0]
            assert prefix["cache_control"] == {"type": "ephemeral"}
            assert prefix["text"].startswith(CONTEXT)
            assert first.cache_write >= PREFIX_TOKENS and first.cache_read == 0
            assert second.cache_read == first.cache_write
        else:
            assert first.cache_read == 0 and second.cache_read >= PREFIX_TOKENS - 128
        for usage in (first, second):
            priced = Usage(usage.input, usage.output, usage.cache_read, usage.cache_write)
            assert usage.cost_usd == pytest.approx(dollars(name, priced))
        assert second.cost_usd is not None and first.cost_usd is not None
        assert second.cost_usd < first.cost_usd


def test_an_agent_conversation_reads_its_history_and_writes_only_the_new_turn(
    server: FakeLLMServer,
) -> None:
    """Tool-use turns mark the newest message (incremental caching): each turn reads the
    previous turn's whole prompt from the cache and writes only what it added."""
    from agentsaga.providers import ToolCall, ToolResult, ToolSpec

    p = provider(server, "anthropic")
    tool = ToolSpec("read_file", "Read a file", {"type": "object", "properties": {}})
    messages: list[Message] = [Message("user", CONTEXT)]
    seen: list[Usage] = []
    for turn in range(3):
        request = LLMRequest(
            provider="anthropic",
            model=MODEL["anthropic"],
            system="You edit code.",
            messages=tuple(messages),
            max_tokens=64,
            tools=(tool,),
        )
        seen.append(p.complete(request, timeout_s=30).usage)
        call = ToolCall(f"toolu_{turn}", "read_file", {})
        result = "\n".join(f"result {turn} line {i}" for i in range(100))
        messages += [
            Message("assistant", "", tool_calls=(call,)),
            Message("user", "", tool_results=(ToolResult(call.id, result),)),
        ]
    first, second, third = seen
    assert first.cache_read == 0 and first.cache_write >= PREFIX_TOKENS
    # Each later turn reads exactly what the turn before it wrote and had read.
    assert second.cache_read == first.cache_read + first.cache_write
    assert third.cache_read == second.cache_read + second.cache_write
    assert 0 < second.cache_write < PREFIX_TOKENS  # only the new turn
    body = server.requests[-1].body
    assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
