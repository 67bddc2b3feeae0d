"""LLM providers behind one small ``Protocol``; see ``base.py`` for the types.

``get_provider()`` is the only place an SDK gets imported, and only when a provider is
actually built and called: ``import anthropic`` alone costs about a second, which the CLI
must not pay on ``--help``. Names beyond the built-in ones come from ``.agentsaga.yml``
(``providers.<name>.type: openai`` with a ``base_url``, e.g. a local Ollama).
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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
    "warm_up",
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


#: The SDK each provider kind imports on its first call.
_SDKS = {"anthropic": "anthropic", "openai": "openai"}
_warming: dict[str, threading.Thread] = {}


def warm_up(names: Iterable[str], config: Mapping[str, Any] | None = None) -> list[str]:
    """Start importing, in a background thread, the SDK of each provider in ``names``
    (``import anthropic`` costs a second or more, ``openai`` half of that): a run whose
    pipeline calls a model starts this before its workspace and first steps, so the
    import overlaps them instead of delaying the first request. The first call imports
    the module as before; if the thread is still at it, Python's import lock makes the
    call wait for that import rather than start another. Returns the modules started."""
    providers = (config or {}).get("providers") or {}
    started = []
    for name in names:
        kind = name if name in BUILTIN_PROVIDERS else (providers.get(name) or {}).get("type")
        module = _SDKS.get(str(kind))
        if module is None or module in sys.modules or module in _warming:
            continue
        thread = threading.Thread(
            target=_import_quietly, args=(module,), name=f"agentsaga-import-{module}", daemon=True
        )
        _warming[module] = thread
        thread.start()
        started.append(module)
    return started


def _import_quietly(module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - the step's own import reports a broken SDK
        pass
