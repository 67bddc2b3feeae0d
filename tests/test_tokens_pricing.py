"""Offline token counting and cost from the pinned price table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentsaga import tokens
from agentsaga.pricing import cost_usd
from agentsaga.providers.base import Usage


def _run_fresh(env_overrides: dict[str, str], code: str) -> dict[str, object]:
    """Run ``code`` in a new interpreter (a fresh encoding cache) and parse its JSON output."""
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(env_overrides)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


COUNT = (
    "import json, os; from agentsaga import tokens\n"
    "n = tokens.count('hello world')\n"
    "print(json.dumps({'n': n, 'exact': tokens.is_exact(), 'gpt4': tokens.count('hello world',"
    " 'gpt-4'), 'env': os.environ.get('TIKTOKEN_CACHE_DIR')}))\n"
)


def test_count_works_offline_from_a_fresh_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = _run_fresh({"HOME": str(home)}, COUNT)
    assert result == {"n": 2, "exact": True, "gpt4": 2, "env": None}
    cache = home / ".cache" / "agentsaga" / "tiktoken"
    assert len(list(cache.iterdir())) == 2  # o200k_base and cl100k_base, named sha1(url)
    # Second run reads the verified cache.
    assert _run_fresh({"HOME": str(home)}, COUNT)["n"] == 2


def test_count_respects_xdg_cache_home(tmp_path: Path) -> None:
    result = _run_fresh({"HOME": str(tmp_path / "h"), "XDG_CACHE_HOME": str(tmp_path / "x")}, COUNT)
    assert result["exact"] is True
    assert (tmp_path / "x" / "agentsaga" / "tiktoken").is_dir()
    assert not (tmp_path / "h").exists()


def test_count_falls_back_to_an_estimate_when_nothing_loads(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # the cache folder cannot be created under a file
    # No network is tried: the cache cannot be filled, so tiktoken is never asked to download.
    result = _run_fresh({"HOME": str(tmp_path), "XDG_CACHE_HOME": str(blocker)}, COUNT)
    assert result["exact"] is False
    assert result["n"] == 3  # ceil(11 / 4)


def test_encoding_choice() -> None:
    assert tokens.encoding_name(None) == "o200k_base"
    assert tokens.encoding_name("gpt-4o-mini") == "o200k_base"
    assert tokens.encoding_name("claude-sonnet-4-6") == "o200k_base"
    assert tokens.encoding_name("gpt-4-turbo") == "cl100k_base"
    assert tokens.encoding_name("gpt-3.5-turbo") == "cl100k_base"


def test_count_in_process_is_exact() -> None:
    assert tokens.count("hello world") == 2
    assert tokens.is_exact()
    assert tokens.count("<|endoftext|>") > 0  # special tokens are counted as text


# -- pricing ----------------------------------------------------------------------------

SMALL = Usage(input=1000, output=500)


@pytest.mark.parametrize(
    ("provider", "model"), [("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-4o")]
)
def test_known_models_have_a_positive_cost(provider: str, model: str) -> None:
    cost = cost_usd(provider, model, SMALL)
    assert cost is not None and cost > 0


@pytest.mark.parametrize(
    ("provider", "model"), [("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-4o")]
)
def test_cache_reads_cost_less_than_input(provider: str, model: str) -> None:
    fresh = cost_usd(provider, model, Usage(input=10_000))
    cached = cost_usd(provider, model, Usage(cache_read=10_000))
    assert fresh is not None and cached is not None
    assert 0 < cached < fresh


def test_anthropic_cache_writes_cost_more_than_input() -> None:
    fresh = cost_usd("anthropic", "claude-sonnet-4-5", Usage(input=10_000))
    written = cost_usd("anthropic", "claude-sonnet-4-5", Usage(cache_write=10_000))
    assert fresh is not None and written is not None and written > fresh


def test_sonnet_price_matches_the_published_rate() -> None:
    # $3 / MTok input, $15 / MTok output below the long-context tier.
    assert cost_usd("anthropic", "claude-sonnet-4-5", SMALL) == pytest.approx(0.003 + 0.0075)


def test_unknown_model_or_provider_has_no_price() -> None:
    assert cost_usd("anthropic", "claude-imaginary-9", SMALL) is None
    assert cost_usd("openai", "no-such-model", SMALL) is None
    # A local server's model is not priced at some cloud's rate.
    assert cost_usd("ollama", "gpt-4o", SMALL) is None
    assert cost_usd("scripted", "claude-sonnet-4-5", SMALL) is None


def test_override_wins() -> None:
    overrides = {
        "gpt-4o": {"input": 1.0, "output": 2.0, "cache_read": 0.5},
        "llama3": {"input": 0.0, "output": 0.0},
    }
    usage = Usage(input=1_000_000, output=1_000_000, cache_read=2_000_000, cache_write=1_000_000)
    # cache_write falls back to the input rate when the table names none.
    assert cost_usd("openai", "gpt-4o", usage, overrides) == pytest.approx(1 + 2 + 1 + 1)
    assert cost_usd("ollama", "llama3", SMALL, overrides) == 0.0


def test_an_anthropic_override_without_a_write_rate_charges_writes_at_125_percent() -> None:
    overrides = {"my-claude": {"input": 4.0, "output": 20.0}}
    write = Usage(cache_write=1_000_000)
    assert cost_usd("anthropic", "my-claude", write, overrides) == pytest.approx(5.0)
    assert cost_usd("openai", "my-claude", write, overrides) == pytest.approx(4.0)
    named = {"my-claude": {"input": 4.0, "cache_write": 4.5}}
    assert cost_usd("anthropic", "my-claude", write, named) == pytest.approx(4.5)
