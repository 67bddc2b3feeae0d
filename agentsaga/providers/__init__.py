"""LLM providers behind one small ``Protocol``; see ``base.py`` for the types.

``get_provider()`` is the only place an SDK gets imported, and only when a provider is
actually built and called: ``import anthropic`` alone costs about a second, which the CLI
must not pay on ``--help``. Names beyond the built-in ones come from ``.agentsaga.yml``
(``providers.<name>.type: openai`` with a ``base_url``, e.g. a local Ollama).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ConfigError
from .base import (
    LLMRequest,
    LLMResponse,
    Message,
    Provider,
    ProviderConfig,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)
from .retry import RetryPolicy, call_with_retries
from .scripted import Reply, ScriptedProvider

__all__ = [
    "LLMRequest",
    "LLMResponse",
    "Message",
    "Provider",
    "ProviderConfig",
    "RetryPolicy",
    "ScriptedProvider",
    "ToolCall",
    "ToolResult",
    "ToolSpec",
    "Usage",
    "call_with_retries",
    "get_provider",
    "BUILTIN_PROVIDERS",
]

BUILTIN_PROVIDERS = ("anthropic", "openai", "scripted")


def get_provider(
    name: str,
    config: ProviderConfig | None = None,
    scripted_replies: Sequence[Reply] | None = None,
) -> Provider:
    """The provider called ``name``. Its SDK is imported on its first call, not here.

    A name that is not built in needs ``config.extra["type"]`` naming a built-in kind
    (``openai`` for any OpenAI-compatible server), and keeps its own name for logs and keys.
    """
    kind = name if name in BUILTIN_PROVIDERS else (config.extra.get("type") if config else None)
    if kind == "anthropic":
        from .anthropic_provider import AnthropicProvider

        return AnthropicProvider(config, name=name)
    if kind == "openai":
        from .openai_provider import OpenAIProvider

        return OpenAIProvider(config, name=name)
    if kind == "scripted":
        return ScriptedProvider(scripted_replies or [], name=name)
    raise ConfigError(
        f"unknown provider {name!r}: use one of {', '.join(BUILTIN_PROVIDERS)}, or declare it "
        f"in .agentsaga.yml under providers.{name} with type: openai and a base_url"
    )
