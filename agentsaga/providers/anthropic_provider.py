"""Anthropic's Messages API through the official SDK, one HTTP attempt per call.

Why non-streaming with an explicit timeout: the SDK refuses a non-streaming request whose
``max_tokens`` could take over ten minutes, unless the caller passes its own ``timeout``. We
always pass ``timeout_s`` (the retry policy's per-attempt bound), which lifts that guard. One
attempt then is one JSON body, which the call log stores as-is and the loopback test server
serves; a connection a network drops during a long generation surfaces as
``ProviderConnectionError`` or ``ProviderTimeout``, both retried by ``retry.py``.

Prompt caching: when the request has a ``cache_prefix``, it becomes the first content block
of the first user message, marked ``cache_control: ephemeral``; the system prompt is marked
too. A rewound step re-sends the same prefix and pays the cache-read price for it.

The SDK's own retries are off (``max_retries=0``): agentsaga records every attempt.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ..errors import (
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
from .base import (
    LLMRequest,
    LLMResponse,
    Message,
    ProviderConfig,
    ToolCall,
    Usage,
    find_interrupt,
    mentions_billing,
    parse_retry_after,
    redact,
)

DEFAULT_KEY_ENV = "ANTHROPIC_API_KEY"
_EPHEMERAL = {"type": "ephemeral"}


def _message_json(m: Message) -> dict[str, Any]:
    """A message in the Messages API's shape: tool calls become ``tool_use`` blocks of the
    assistant's content, tool results ``tool_result`` blocks of the user's, results first
    (the API wants them at the start of the message that follows the calls)."""
    if not m.tool_calls and not m.tool_results:
        return {"role": m.role, "content": m.content}
    blocks: list[dict[str, Any]] = []
    for r in m.tool_results:
        blocks.append(
            {
                "type": "tool_result",
                "tool_use_id": r.call_id,
                "content": r.content,
                **({"is_error": True} if r.is_error else {}),
            }
        )
    if m.content.strip():
        blocks.append({"type": "text", "text": m.content})
    for c in m.tool_calls:
        blocks.append({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments})
    return {"role": m.role, "content": blocks}


def build_params(request: LLMRequest) -> dict[str, Any]:
    """The Messages API body for ``request`` (no key, no transport options)."""
    messages: list[dict[str, Any]] = [_message_json(m) for m in request.messages]
    if request.cache_prefix:
        prefix_block = {"type": "text", "text": request.cache_prefix, "cache_control": _EPHEMERAL}
        first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
        if first_user is None:
            messages.insert(0, {"role": "user", "content": [prefix_block]})
        else:
            rest = messages[first_user]["content"]
            blocks: list[dict[str, Any]] = [prefix_block]
            # The API rejects a text block that is empty or only whitespace ("text content
            # blocks must contain non-whitespace text"): a write prompt ending in an empty
            # ${{ rewind.error }} leaves just a newline after the prefix on its first pass.
            if rest and rest.strip():
                blocks.append({"type": "text", "text": rest})
            messages[first_user] = {"role": "user", "content": blocks}
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": messages,
    }
    if request.system:
        params["system"] = [{"type": "text", "text": request.system, "cache_control": _EPHEMERAL}]
    if request.tools:
        params["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
        _mark_conversation(messages)
    if request.temperature is not None:
        # The SDK (1.0 and later) dropped the sampling parameters from create()'s signature
        # while the API still takes them on models that support them: extra_body puts the
        # same field in the same JSON body. Sent only when the pipeline sets it, since the
        # newest models refuse a non-default temperature.
        params["extra_body"] = {"temperature": request.temperature}
    if request.stop:
        params["stop_sequences"] = list(request.stop)
    return params


def _mark_conversation(messages: list[dict[str, Any]]) -> None:
    """Cache a tool-use conversation up to its newest message: each turn of an agent
    re-sends every earlier turn, which then costs the cache-read price (Anthropic's
    incremental caching; with the system prompt and the prompt's prefix that makes three of
    the four breakpoints the API allows). The first turn is marked too: the next turn
    re-sends its whole prompt, which then reads at 0.1x instead of being written at 1.25x
    (measured with the loopback server's cache, tests/test_prompt_cache.py)."""
    if not messages:
        return
    last = messages[-1]
    content = last["content"]
    if isinstance(content, str):
        if not content.strip():
            return
        content = [{"type": "text", "text": content}]
    if not content:
        return
    content = [*content[:-1], {**content[-1], "cache_control": _EPHEMERAL}]
    messages[-1] = {**last, "content": content}


class AnthropicProvider:
    def __init__(self, config: ProviderConfig | None = None, *, name: str = "anthropic") -> None:
        self.name = name
        self._config = config or ProviderConfig()
        self._key_env = self._config.api_key_env or DEFAULT_KEY_ENV
        self._client: Any = None

    def _api_key(self) -> str:
        key = self._config.api_key or os.environ.get(self._key_env)
        if not key:
            raise ProviderAuthError(
                self.name,
                f"no API key: set {self._key_env} "
                f"(or providers.{self.name}.api_key_env in .agentsaga.yml)",
            )
        return key

    def _get_client(self) -> Any:
        if self._client is None:
            key = self._api_key()  # fails before any request when there is no key
            import anthropic

            # api_key passed explicitly so the SDK never falls back to profiles on disk.
            self._client = anthropic.Anthropic(
                api_key=key,
                base_url=self._config.base_url,
                max_retries=0,
                timeout=float(self._config.extra.get("timeout_s", 600.0)),
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def complete(self, request: LLMRequest, *, timeout_s: float) -> LLMResponse:
        client = self._get_client()
        params = build_params(request)
        started = time.perf_counter()
        try:
            message = client.messages.create(**params, timeout=timeout_s)
            latency_ms = (time.perf_counter() - started) * 1000.0
            return self._response(message, request, latency_ms)
        except ProviderError:
            raise
        except Exception as exc:  # translated below, most specific first
            interrupted = find_interrupt(exc)
            if interrupted is not None:
                raise interrupted from None  # Ctrl-C, which the SDK wrapped as a network error
            raise self._translate(exc) from exc

    def _response(self, message: Any, request: LLMRequest, latency_ms: float) -> LLMResponse:
        try:
            text = "".join(
                block.text for block in message.content if getattr(block, "type", "") == "text"
            )
            calls = tuple(
                ToolCall(str(block.id), str(block.name), _tool_input(block.input))
                for block in message.content
                if getattr(block, "type", "") == "tool_use"
            )
            u = message.usage
            usage = Usage(
                input=int(u.input_tokens),
                output=int(u.output_tokens),
                cache_read=int(u.cache_read_input_tokens or 0),
                cache_write=int(u.cache_creation_input_tokens or 0),
            )
        except (AttributeError, TypeError, ValueError) as exc:
            # The SDK does not validate bodies by default: a 200 with the wrong shape
            # reaches us as a half-built object. A broken reply is the server's fault.
            raise ProviderServerError(
                self.name, f"malformed response body (missing content or usage): {exc}"
            ) from exc
        return LLMResponse(
            text=text,
            usage=usage,
            model=str(getattr(message, "model", None) or request.model),
            stop_reason=getattr(message, "stop_reason", None),
            latency_ms=latency_ms,
            request_id=getattr(message, "_request_id", None),
            tool_calls=calls,
        )

    def _translate(self, exc: Exception) -> ProviderError:
        import anthropic

        key = self._config.api_key or os.environ.get(self._key_env)
        name = self.name

        def msg(text: str) -> str:
            return redact(text, key)

        if isinstance(exc, anthropic.APITimeoutError):
            return ProviderTimeout(name, msg(f"no reply within the timeout ({exc.message})"))
        if isinstance(exc, anthropic.APIConnectionError):
            return ProviderConnectionError(name, msg(f"cannot reach the API: {exc.message}"))
        if isinstance(exc, anthropic.APIStatusError):
            status = exc.status_code
            api_message = exc.api_message or str(exc)
            text = msg(api_message)
            err_type = exc.type or ""
            if isinstance(exc, anthropic.AuthenticationError | anthropic.PermissionDeniedError):
                return ProviderAuthError(
                    name,
                    f"{text}; check {self._key_env} "
                    f"(or providers.{name}.api_key_env in .agentsaga.yml)",
                    status=status,
                )
            if isinstance(exc, anthropic.RateLimitError):
                return ProviderRateLimited(
                    name, text, status=status, retry_after_s=parse_retry_after(exc.response.headers)
                )
            if status == 529 or err_type == "overloaded_error":
                return ProviderOverloaded(
                    name, text, status=status, retry_after_s=parse_retry_after(exc.response.headers)
                )
            if status == 402 or err_type == "billing_error" or mentions_billing(api_message):
                return ProviderSpendLimit(
                    name, f"{text}; check your plan and credits", status=status
                )
            if status >= 500:
                return ProviderServerError(name, text, status=status)
            if status == 408:
                return ProviderTimeout(name, text, status=status)
            return ProviderBadRequest(name, text, status=status)
        if isinstance(exc, anthropic.APIResponseValidationError | json.JSONDecodeError):
            return ProviderServerError(name, msg(f"malformed response body: {exc}"))
        if isinstance(exc, anthropic.CredentialsError):
            return ProviderAuthError(name, msg(f"{exc}; set {self._key_env}"))
        return ProviderError(name, msg(f"{type(exc).__name__}: {exc}"))


def _tool_input(raw: Any) -> dict[str, Any]:
    """A tool_use block's input; one that is not a JSON object is kept, as the OpenAI
    provider keeps unparsable arguments, so the tool answers the model instead of the
    reply being taken for a malformed response and asked (and paid) again."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return raw
    return {"_invalid_arguments": json.dumps(raw)}
