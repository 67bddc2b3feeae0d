"""What a call cost, in USD, from a maintained price table, never from a guess.

Prices come from ``genai-prices`` (pinned in pyproject, its bundled snapshot only: no price
updates are fetched at run time, so a report prints the same numbers tomorrow). The config's
override table wins over it, for negotiated rates, new models and self-hosted ones. A model
neither knows costs ``None``, shown as unknown: inventing a price would make the failed-run
tax look precise when it is not.

Our ``Usage.input`` excludes cache reads and writes; genai-prices counts them inside
``input_tokens`` and prices the cached part at its own rate, so we hand it the whole prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: validate imports this module without the providers
    from .providers.base import Usage

#: Providers whose names genai-prices knows. Any other provider (scripted, a local Ollama)
#: is priced only through overrides: matching its model name against some hosted provider's
#: price list would charge a free local model at a cloud rate.
PRICED_PROVIDERS = frozenset({"anthropic", "openai"})

_PER_MILLION = 1_000_000


#: Anthropic charges a (5-minute) cache write at 1.25x the model's input price.
ANTHROPIC_CACHE_WRITE = 1.25


def _from_overrides(entry: Mapping[str, Any], usage: Usage, provider: str) -> float:
    input_rate = float(entry.get("input", 0.0))
    # A table that names no cache rate gets the input rate for reads (never cheaper than
    # the truth) and for writes on providers without a surcharge; Anthropic's writes cost
    # 1.25x its input rate, its documented multiplier, not the input rate.
    write_factor = ANTHROPIC_CACHE_WRITE if provider == "anthropic" else 1.0
    cache_read_rate = float(entry.get("cache_read", input_rate))
    cache_write_rate = float(entry.get("cache_write", input_rate * write_factor))
    dollars = (
        usage.input * input_rate
        + usage.output * float(entry.get("output", 0.0))
        + usage.cache_read * cache_read_rate
        + usage.cache_write * cache_write_rate
    )
    return dollars / _PER_MILLION


def cost_usd(
    provider: str,
    model: str,
    usage: Usage,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> float | None:
    """USD for ``usage`` of ``model``; ``None`` when no price is known.

    ``overrides`` maps a model name to ``{input, output, cache_read, cache_write}`` in USD
    per million tokens and wins over genai-prices.
    """
    if overrides and model in overrides:
        return _from_overrides(overrides[model], usage, provider)
    if provider not in PRICED_PROVIDERS:
        return None
    import genai_prices

    priced_usage = genai_prices.Usage(
        input_tokens=usage.prompt,
        output_tokens=usage.output,
        cache_read_tokens=usage.cache_read,
        cache_write_tokens=usage.cache_write,
    )
    try:
        calc = genai_prices.calc_price(priced_usage, model, provider_id=provider)
    except (LookupError, ValueError):
        # LookupError: the model is not in the table. ValueError: a usage shape the table
        # cannot price. Either way the honest answer is "unknown".
        return None
    return float(calc.total_price)
