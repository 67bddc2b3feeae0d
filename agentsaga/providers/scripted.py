"""An offline provider that answers from a list: for demos, tutorials and tests.

Each ``complete()`` returns the next reply. A reply is a string (usage then counted with
tiktoken and marked estimated), or a mapping:

- ``{text: ..., usage: {input, output, cache_read, cache_write}}`` forces exact usage
  (not estimated), e.g. to test budgets and reports with known numbers;
- ``{error: rate_limit | overloaded | server | timeout | connection | auth | bad_request |
  spend_limit, message: ...}`` raises that error, to exercise retries and failures;
- ``{tool_calls: [{name: read_file, arguments: {path: a.py}}, ...]}`` (or the short form
  ``{tool: read_file, args: {path: a.py}}``), with an optional ``text``, plays a model
  calling tools, for the agent step.

The engine gives the replies listed for the current step and, on resume, the index to start
from (``cursor``). Replies can also come from a YAML or JSON file (``load_replies``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import (
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
from .base import LLMRequest, LLMResponse, ToolCall, Usage

Reply = str | Mapping[str, Any]

_ERRORS: dict[str, tuple[type[ProviderError], int | None]] = {
    "rate_limit": (ProviderRateLimited, 429),
    "overloaded": (ProviderOverloaded, 529),
    "server": (ProviderServerError, 500),
    "timeout": (ProviderTimeout, None),
    "connection": (ProviderConnectionError, None),
    "auth": (ProviderAuthError, 401),
    "bad_request": (ProviderBadRequest, 400),
    "spend_limit": (ProviderSpendLimit, 402),
}


def load_replies(path: str | Path) -> list[Reply] | dict[str, list[Reply]]:
    """Replies from a YAML or JSON file: a list, or a mapping of step id to list."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    data: Any
    if p.suffix == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if isinstance(data, Mapping) and "replies" in data:
        data = data["replies"]
    if isinstance(data, list):
        return data
    if isinstance(data, Mapping) and all(isinstance(v, list) for v in data.values()):
        return {str(k): list(v) for k, v in data.items()}
    raise ConfigError(f"{p}: scripted replies must be a list, or a mapping of step id to list")


class ScriptedProvider:
    def __init__(
        self, replies: Sequence[Reply], *, cursor: int = 0, name: str = "scripted"
    ) -> None:
        self.name = name
        self.replies = list(replies)
        self.cursor = cursor
        #: Every request received, in order (tests and demos inspect them).
        self.requests: list[LLMRequest] = []

    @classmethod
    def from_file(cls, path: str | Path, *, step: str | None = None) -> ScriptedProvider:
        data = load_replies(path)
        if isinstance(data, dict):
            if step is None or step not in data:
                raise ConfigError(f"{path}: no scripted replies for step {step!r}")
            return cls(data[step])
        return cls(data)

    def complete(self, request: LLMRequest, *, timeout_s: float) -> LLMResponse:
        self.requests.append(request)
        if self.cursor >= len(self.replies):
            raise ProviderBadRequest(
                self.name,
                f"no scripted reply left: {len(self.replies)} given, call "
                f"{self.cursor + 1} asked; add replies to the step's 'replies:' list",
            )
        n = self.cursor
        entry = self.replies[n]
        self.cursor += 1
        if isinstance(entry, Mapping) and "error" in entry:
            kind = str(entry["error"])
            if kind not in _ERRORS:
                raise ConfigError(
                    f"scripted reply {n + 1}: unknown error {kind!r}; one of {', '.join(_ERRORS)}"
                )
            cls, status = _ERRORS[kind]
            message = str(entry.get("message", f"scripted {kind} error"))
            retry_after = entry.get("retry_after")
            raise cls(
                self.name,
                message,
                status=status,
                retry_after_s=float(retry_after) if retry_after is not None else None,
            )
        calls: tuple[ToolCall, ...] = ()
        if isinstance(entry, Mapping):
            text = str(entry.get("text", ""))
            forced = entry.get("usage")
            calls = _tool_calls(entry, n)
        else:
            text, forced = str(entry), None
        if forced is not None:
            usage = Usage.from_json({**forced, "estimated": False})
        else:
            from .. import tokens

            usage = Usage(
                input=tokens.count(request.prompt_text(), request.model),
                output=tokens.count(
                    text + "".join(json.dumps(c.arguments) for c in calls), request.model
                ),
                estimated=True,
            )
        return LLMResponse(
            text=text,
            usage=usage,
            model=request.model,
            stop_reason="tool_use" if calls else "end_turn",
            latency_ms=0.0,
            request_id=f"scripted-{n + 1}",
            tool_calls=calls,
        )


def _tool_calls(entry: Mapping[str, Any], n: int) -> tuple[ToolCall, ...]:
    raw = entry.get("tool_calls")
    if raw is None and "tool" in entry:
        raw = [{"name": entry["tool"], "arguments": entry.get("args") or {}}]
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"scripted reply {n + 1}: tool_calls must be a list")
    calls = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or "name" not in item:
            raise ConfigError(f"scripted reply {n + 1}: tool call {i + 1} needs a 'name'")
        arguments = item.get("arguments", item.get("args")) or {}
        if not isinstance(arguments, Mapping):
            raise ConfigError(
                f"scripted reply {n + 1}: tool call {i + 1}: its args must be a mapping "
                f"(name: value), not {type(arguments).__name__} {str(arguments)[:60]!r}"
            )
        call_id = str(item.get("id") or f"call_s{n + 1}_{i + 1}")
        calls.append(ToolCall(call_id, str(item["name"]), dict(arguments)))
    return tuple(calls)
