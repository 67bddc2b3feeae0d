"""The provider seam: one request type, one response type, one small ``Protocol``.

A ``Provider`` makes exactly one HTTP attempt per ``complete()`` and raises the specific
``ProviderError`` subclass when it fails; retries live in ``retry.py`` so that every attempt
can be recorded. Requests and responses are plain frozen dataclasses that round-trip through
JSON, because the call log stores them and the memo matches on ``request_hash()``.

Usage is normalised to Anthropic's convention: ``input`` excludes cache reads and cache
writes, so ``input + cache_read + cache_write`` is the whole prompt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Usage:
    """Token usage of one call, as the API reported it unless ``estimated``."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    #: True when counted locally (tiktoken or a character estimate), not reported by the API.
    estimated: bool = False

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write

    @property
    def prompt(self) -> int:
        """Every prompt token, cached or not."""
        return self.input + self.cache_read + self.cache_write

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            input=self.input + other.input,
            output=self.output + other.output,
            cache_read=self.cache_read + other.cache_read,
            cache_write=self.cache_write + other.cache_write,
            # A sum is only exact if every part was.
            estimated=self.estimated or other.estimated,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "cache_read": self.cache_read,
            "cache_write": self.cache_write,
            "estimated": self.estimated,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Usage:
        return cls(
            input=int(data.get("input", 0)),
            output=int(data.get("output", 0)),
            cache_read=int(data.get("cache_read", 0)),
            cache_write=int(data.get("cache_write", 0)),
            estimated=bool(data.get("estimated", False)),
        )


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: its name, what it does, its arguments as JSON Schema."""

    name: str
    description: str
    parameters: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ToolSpec:
        return cls(str(data["name"]), str(data.get("description", "")), dict(data["parameters"]))


@dataclass(frozen=True)
class ToolCall:
    """One tool call in a model's reply. ``id`` is the API's (Anthropic ``toolu_...``,
    OpenAI ``call_...``): the result is sent back under it."""

    id: str
    name: str
    arguments: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ToolCall:
        return cls(str(data["id"]), str(data["name"]), dict(data.get("arguments") or {}))


@dataclass(frozen=True)
class ToolResult:
    """What a tool call returned, sent back to the model under the call's id."""

    call_id: str
    content: str
    is_error: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "content": self.content, "is_error": self.is_error}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ToolResult:
        return cls(str(data["call_id"]), str(data["content"]), bool(data.get("is_error")))


@dataclass(frozen=True)
class Message:
    role: str  # "user" or "assistant"
    content: str
    #: An assistant message's tool calls (tool use / function calling).
    tool_calls: tuple[ToolCall, ...] = ()
    #: A user message's answers to the previous reply's tool calls, in call order.
    tool_results: tuple[ToolResult, ...] = ()

    def to_json(self) -> dict[str, Any]:
        # The tool keys only when present: a plain message hashes as it always did, so the
        # call log's memo still matches requests recorded before tools existed.
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [c.to_json() for c in self.tool_calls]
        if self.tool_results:
            data["tool_results"] = [r.to_json() for r in self.tool_results]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Message:
        return _as_message(data)


def _as_message(item: Message | Mapping[str, Any]) -> Message:
    if isinstance(item, Message):
        return item
    return Message(
        role=str(item["role"]),
        content=str(item["content"]),
        tool_calls=tuple(ToolCall.from_json(c) for c in item.get("tool_calls") or ()),
        tool_results=tuple(ToolResult.from_json(r) for r in item.get("tool_results") or ()),
    )


@dataclass(frozen=True)
class LLMRequest:
    """Everything that determines a reply. Never holds a key: it is hashed and stored."""

    provider: str
    model: str
    system: str
    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    #: A stable prefix of the first user message (e.g. the read context). Anthropic marks it
    #: with ``cache_control`` so a rewound step pays the cache-read price for it.
    cache_prefix: str | None = None
    #: Tools the model may call; empty for a plain completion.
    tools: tuple[ToolSpec, ...] = ()

    def __post_init__(self) -> None:
        # Accept role/content dicts (as YAML and JSON give them) and lists, so callers need not
        # build Message objects; normalise so hashing and equality see one shape.
        msgs = tuple(_as_message(m) for m in self.messages)
        object.__setattr__(self, "messages", msgs)
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "tools", tuple(self.tools))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "system": self.system,
            "messages": [m.to_json() for m in self.messages],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stop": list(self.stop),
            "cache_prefix": self.cache_prefix,
        }
        if self.tools:
            data["tools"] = [t.to_json() for t in self.tools]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LLMRequest:
        return cls(
            provider=data["provider"],
            model=data["model"],
            system=data.get("system", ""),
            messages=tuple(_as_message(m) for m in data.get("messages", [])),
            max_tokens=int(data["max_tokens"]),
            temperature=data.get("temperature"),
            stop=tuple(data.get("stop", ())),
            cache_prefix=data.get("cache_prefix"),
            tools=tuple(ToolSpec.from_json(t) for t in data.get("tools") or ()),
        )

    def prompt_text(self) -> str:
        """All prompt text in one string, for counting tokens before a call."""
        parts = [self.system, self.cache_prefix or ""]
        parts.extend(m.content for m in self.messages)
        for m in self.messages:
            parts.extend(json.dumps(c.arguments) for c in m.tool_calls)
            parts.extend(r.content for r in m.tool_results)
        parts.extend(json.dumps(t.to_json()) for t in self.tools)
        return "\n".join(p for p in parts if p)

    def request_hash(self) -> str:
        """sha256 of the canonical JSON of every field: equal hashes mean the same question."""
        canonical = json.dumps(
            self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class LLMResponse:
    text: str
    usage: Usage
    model: str
    stop_reason: str | None
    latency_ms: float
    request_id: str | None
    #: The tool calls the model made, in its order (stop reason tool_use / tool_calls).
    tool_calls: tuple[ToolCall, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "text": self.text,
            "usage": self.usage.to_json(),
            "model": self.model,
            "stop_reason": self.stop_reason,
            "latency_ms": self.latency_ms,
            "request_id": self.request_id,
        }
        if self.tool_calls:
            data["tool_calls"] = [c.to_json() for c in self.tool_calls]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LLMResponse:
        return cls(
            text=data["text"],
            usage=Usage.from_json(data.get("usage", {})),
            model=data.get("model", ""),
            stop_reason=data.get("stop_reason"),
            latency_ms=float(data.get("latency_ms", 0.0)),
            request_id=data.get("request_id"),
            tool_calls=tuple(ToolCall.from_json(c) for c in data.get("tool_calls") or ()),
        )


class Provider(Protocol):
    name: str

    def complete(self, request: LLMRequest, *, timeout_s: float) -> LLMResponse:
        """Make ONE attempt; raise the specific ``ProviderError`` subclass on failure."""
        ...


@dataclass
class ProviderConfig:
    """How to reach a provider. Built from the environment and ``.agentsaga.yml``.

    ``api_key`` wins; otherwise the key is read from the variable ``api_key_env`` names (or
    the provider's standard one). The key lives only here and in the SDK client.
    """

    # repr=False: never shown, even in a debugger or a traceback's locals.
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Environment variable holding the key (``providers.<name>.api_key_env``).
    api_key_env: str | None = None


def redact(text: str, secret: str | None) -> str:
    """Remove ``secret`` from ``text``: some APIs echo the key they rejected."""
    if secret and len(secret) >= 4:
        return text.replace(secret, "***")
    return text


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils
    import time

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_BILLING_WORDS = ("credit balance", "billing", "insufficient_quota", "quota", "spend limit")


def mentions_billing(*texts: str | None) -> bool:
    """Whether an error is about money rather than the request (never worth retrying)."""
    joined = " ".join(t for t in texts if t).lower()
    return any(word in joined for word in _BILLING_WORDS)


def find_interrupt(exc: BaseException) -> BaseException | None:
    """Our Ctrl-C (``Interrupted``) if it is what ``exc`` wraps: the SDKs turn any error
    inside a request into a connection error, which would otherwise be retried."""
    from ..errors import Interrupted

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, Interrupted):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
