"""OpenAI Chat Completions through the official SDK, and any server that speaks it.

Ollama, vLLM, llama.cpp and LiteLLM serve the same wire format: give ``base_url`` (and a name
in ``.agentsaga.yml``) and this provider talks to them. Local servers usually need no key, so
when a ``base_url`` is set and no key is found we send a placeholder instead of refusing; a
server that does want one answers 401, whose message names the variable to set.

Usage is normalised: ``prompt_tokens`` includes ``prompt_tokens_details.cached_tokens`` (and
``cache_write_tokens``), which we subtract so ``Usage.input`` means what it means for
Anthropic. Servers that report no usage get a tiktoken count, marked estimated.

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

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
#: Sent to OpenAI-compatible servers that take no key (the SDK insists on some string).
PLACEHOLDER_KEY = "agentsaga-no-key"
_SPEND_CODES = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"}


def _messages_json(m: Message) -> list[dict[str, Any]]:
    """A message in the Chat Completions shape: tool calls ride on the assistant message
    (``arguments`` as a JSON string), and each result is its own ``role: tool`` message,
    followed by any text of ours as a user message."""
    if not m.tool_calls and not m.tool_results:
        return [{"role": m.role, "content": m.content}]
    if m.tool_calls:
        calls = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in m.tool_calls
        ]
        return [{"role": "assistant", "content": m.content or None, "tool_calls": calls}]
    out: list[dict[str, Any]] = [
        {"role": "tool", "tool_call_id": r.call_id, "content": r.content} for r in m.tool_results
    ]
    if m.content.strip():
        out.append({"role": "user", "content": m.content})
    return out


def build_params(request: LLMRequest, *, max_tokens_field: str) -> dict[str, Any]:
    """The Chat Completions body for ``request`` (no key, no transport options)."""
    messages: list[dict[str, Any]] = [j for m in request.messages for j in _messages_json(m)]
    if request.cache_prefix:
        # OpenAI caches prompt prefixes on its own; the stable part only has to come first.
        if messages and messages[0]["role"] == "user":
            rest = messages[0]["content"]
            joined = request.cache_prefix + ("\n\n" + rest if rest else "")
            messages[0] = {"role": "user", "content": joined}
        else:
            messages.insert(0, {"role": "user", "content": request.cache_prefix})
    if request.system:
        messages.insert(0, {"role": "system", "content": request.system})
    params: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        max_tokens_field: request.max_tokens,
    }
    if request.temperature is not None:
        params["temperature"] = request.temperature
    if request.stop:
        params["stop"] = list(request.stop)
    if request.tools:
        params["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in request.tools
        ]
    return params


class OpenAIProvider:
    def __init__(self, config: ProviderConfig | None = None, *, name: str = "openai") -> None:
        self.name = name
        self._config = config or ProviderConfig()
        self._key_env = self._config.api_key_env or DEFAULT_KEY_ENV
        self._base_url = self._config.base_url or os.environ.get("OPENAI_BASE_URL") or None
        # OpenAI itself wants max_completion_tokens (o-series reject max_tokens); compatible
        # servers have long accepted max_tokens and some know nothing else. Config can choose.
        default_field = "max_tokens" if self._base_url else "max_completion_tokens"
        self._max_tokens_field = str(self._config.extra.get("max_tokens_field", default_field))
        self._client: Any = None

    def _key(self) -> str | None:
        return self._config.api_key or os.environ.get(self._key_env) or None

    def _get_client(self) -> Any:
        if self._client is None:
            key = self._key()
            if key is None:
                if not self._base_url:
                    raise ProviderAuthError(
                        self.name,
                        f"no API key: set {self._key_env} "
                        f"(or providers.{self.name}.api_key_env in .agentsaga.yml)",
                    )
                key = PLACEHOLDER_KEY
            import openai

            self._client = openai.OpenAI(
                api_key=key,
                base_url=self._base_url,
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
        params = build_params(request, max_tokens_field=self._max_tokens_field)
        started = time.perf_counter()
        try:
            completion = client.chat.completions.create(**params, timeout=timeout_s)
            latency_ms = (time.perf_counter() - started) * 1000.0
            return self._response(completion, request, latency_ms)
        except ProviderError:
            raise
        except Exception as exc:  # translated below, most specific first
            interrupted = find_interrupt(exc)
            if interrupted is not None:
                raise interrupted from None  # Ctrl-C, which the SDK wrapped as a network error
            raise self._translate(exc) from exc

    def _response(self, completion: Any, request: LLMRequest, latency_ms: float) -> LLMResponse:
        try:
            choice = completion.choices[0]
            text = choice.message.content or ""
            calls = _tool_calls(choice.message)
            usage = _usage(completion.usage)
        except (AttributeError, TypeError, ValueError, IndexError) as exc:
            raise ProviderServerError(
                self.name, f"malformed response body (missing choices or usage): {exc}"
            ) from exc
        if usage is None:
            from .. import tokens

            usage = Usage(
                input=tokens.count(request.prompt_text(), request.model),
                output=tokens.count(text, request.model),
                estimated=True,
            )
        return LLMResponse(
            text=text,
            usage=usage,
            model=str(getattr(completion, "model", None) or request.model),
            stop_reason=getattr(choice, "finish_reason", None),
            latency_ms=latency_ms,
            request_id=getattr(completion, "_request_id", None),
            tool_calls=calls,
        )

    def _translate(self, exc: Exception) -> ProviderError:
        import openai

        key = self._key()
        name = self.name

        def msg(text: str) -> str:
            return redact(text, key)

        if isinstance(exc, openai.APITimeoutError):
            return ProviderTimeout(name, msg(f"no reply within the timeout ({exc.message})"))
        if isinstance(exc, openai.APIConnectionError):
            where = f" at {self._base_url}" if self._base_url else ""
            return ProviderConnectionError(name, msg(f"cannot reach the API{where}: {exc.message}"))
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            api_message = _api_message(exc.body) or exc.message
            text = msg(api_message)
            code = exc.code or ""
            if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
                return ProviderAuthError(
                    name,
                    f"{text}; check {self._key_env} "
                    f"(or providers.{name}.api_key_env in .agentsaga.yml)",
                    status=status,
                )
            if code in _SPEND_CODES or status == 402:
                return ProviderSpendLimit(
                    name, f"{text}; check your plan and billing", status=status
                )
            if isinstance(exc, openai.RateLimitError):
                return ProviderRateLimited(
                    name, text, status=status, retry_after_s=parse_retry_after(exc.response.headers)
                )
            if status in (503, 529):
                return ProviderOverloaded(
                    name, text, status=status, retry_after_s=parse_retry_after(exc.response.headers)
                )
            if status >= 500:
                return ProviderServerError(name, text, status=status)
            if mentions_billing(api_message):
                return ProviderSpendLimit(
                    name, f"{text}; check your plan and billing", status=status
                )
            if status == 408:
                return ProviderTimeout(name, text, status=status)
            return ProviderBadRequest(name, text, status=status)
        if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError):
            return ProviderServerError(name, msg(f"malformed response body: {exc}"))
        return ProviderError(name, msg(f"{type(exc).__name__}: {exc}"))


def _tool_calls(message: Any) -> tuple[ToolCall, ...]:
    calls = []
    for call in getattr(message, "tool_calls", None) or ():
        function = getattr(call, "function", None)
        if function is None:
            continue  # a "custom" tool call: we declare only function tools
        raw = function.arguments or "{}"
        try:
            arguments = json.loads(raw)
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            # Kept, not dropped: the tool answers that its arguments were not a JSON
            # object, and the model can correct itself.
            arguments = {"_invalid_arguments": raw}
        calls.append(ToolCall(str(call.id), str(function.name), arguments))
    return tuple(calls)


def _usage(raw: Any) -> Usage | None:
    if raw is None:
        return None
    details = getattr(raw, "prompt_tokens_details", None)
    cache_read = int(getattr(details, "cached_tokens", None) or 0)
    cache_write = int(getattr(details, "cache_write_tokens", None) or 0)
    prompt = int(raw.prompt_tokens)
    return Usage(
        # Clamped: a server whose details exceed its total must not yield negative tokens.
        input=max(0, prompt - cache_read - cache_write),
        output=int(raw.completion_tokens or 0),
        cache_read=cache_read,
        cache_write=cache_write,
    )


def _api_message(body: object) -> str | None:
    # The SDK hands us the ``error`` object of the body (or the whole body if it had none).
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return None
