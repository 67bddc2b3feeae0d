"""The engine's LLM gateway: budget check, call log, memo, retries — in that order.

Every LLM call of a step goes through ``LLMGateway.ask``:

1. **Memo.** A request identical (same hash) to one whose reply was never judged — the
   process died between the reply and the step's checkpoint, or the step failed for a
   reason that was not the reply — is answered from the call log, for free, and recorded
   as ``reused``. A judged reply (its step completed, or rejected it) is never served
   again, so a retry or a rewind asks the model anew.
2. **Budget.** The prompt is counted with tiktoken; if what the run (or the step) has
   spent plus this call's worst case (prompt + ``max_tokens``) would cross the budget, the
   step fails with ``BudgetExceeded`` before any request is sent.
3. **Call.** agentsaga owns retries (the SDKs' are off); every HTTP attempt is recorded,
   and a reply is in the store the moment it arrives, before the step goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentsaga import faults
from agentsaga.errors import BudgetExceeded, ConfigError, ProviderError
from agentsaga.redact import redact_json, secret_values
from agentsaga.store import Store, Usage

DEFAULT_MAX_TOKENS = 4096
DEFAULT_MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4o", "scripted": "scripted"}


@dataclass
class CallSettings:
    provider: str
    model: str
    max_tokens: int
    temperature: float | None
    replies: Sequence[Any] | None


class LLMGateway:
    def __init__(
        self,
        store: Store,
        *,
        run_id: str,
        step_id: str,
        attempt_id: int,
        config: dict[str, Any],
        run_budget: dict[str, float],
        step_budget: dict[str, float],
        memo: str = "run",
    ) -> None:
        self.store = store
        self.run_id, self.step_id, self.attempt_id = run_id, step_id, attempt_id
        self.config = config
        self.run_budget, self.step_budget = run_budget, step_budget
        self.memo = memo
        # One SDK client per provider for the attempt: a write's reflections reuse its
        # connection instead of opening a pool per call.
        self._clients: dict[str, Any] = {}

    def settings(self, params: dict[str, Any], defaults: dict[str, Any]) -> CallSettings:
        provider = str(params.get("provider") or defaults.get("provider") or "scripted")
        configured = self.config.get("providers", {}).get(provider, {})
        model = str(
            params.get("model")
            or defaults.get("model")
            or configured.get("model")
            or DEFAULT_MODELS.get(configured.get("type", provider), provider)
        )
        max_tokens = int(
            params.get("max_tokens") or defaults.get("max_tokens") or DEFAULT_MAX_TOKENS
        )
        temperature = params.get("temperature", defaults.get("temperature"))
        return CallSettings(provider, model, max_tokens, temperature, params.get("replies"))

    def ask(
        self,
        settings: CallSettings,
        *,
        system: str,
        prompt: str,
        cache_prefix: str | None = None,
        history: Sequence[dict[str, str]] = (),
    ) -> Any:
        """One model call; returns a ``providers.LLMResponse``."""
        from agentsaga.providers import Message

        messages = [Message(m["role"], m["content"]) for m in history]
        messages.append(Message("user", prompt))
        return self.converse(settings, system=system, messages=messages, cache_prefix=cache_prefix)

    def converse(
        self,
        settings: CallSettings,
        *,
        system: str,
        messages: Sequence[Any],
        tools: Sequence[Any] = (),
        cache_prefix: str | None = None,
    ) -> Any:
        """One model call over a whole conversation (``providers.Message`` values, tool
        calls and results included) with ``tools`` (``providers.ToolSpec``) offered."""
        from agentsaga.providers import LLMRequest, LLMResponse

        request = LLMRequest(
            provider=settings.provider,
            model=settings.model,
            system=system,
            messages=tuple(messages),
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            cache_prefix=cache_prefix,
            tools=tuple(tools),
        )
        request_hash = request.request_hash()
        # The hash is of the real request; what is stored has secrets masked (a prompt may
        # interpolate ${{ env.SOME_TOKEN }}).
        secrets = secret_values()
        stored_request = redact_json(request.to_json(), secrets)
        served = self._served_from_log(settings, request_hash, stored_request)
        if served is not None:
            return LLMResponse.from_json(served)
        self._check_budget(request, settings)
        provider = self._provider(settings)
        policy = self._retry_policy(settings.provider)

        def record(attempt_no: int, response: Any, error: ProviderError | None, ms: float) -> None:
            usage = Usage()
            if response is not None:
                # Paid for and not yet in the log: the reply a crash here loses.
                faults.point("llm.before_record")
                u = response.usage
                usage = Usage(
                    u.input,
                    u.output,
                    u.cache_read,
                    u.cache_write,
                    self._cost(settings, u),
                    u.estimated,
                )
            self._log_call(
                settings,
                request_hash,
                stored_request,
                response=redact_json(response.to_json(), secrets) if response else None,
                error=redact_json(error.to_json(), secrets) if error is not None else None,
                status="ok" if response is not None else "error",
                http_attempt=attempt_no,
                usage=usage,
                latency_ms=ms,
            )
            if response is not None:
                faults.point("llm.after_reply")

        from agentsaga.providers import call_with_retries

        return call_with_retries(provider, request, policy, on_attempt=record)

    def _served_from_log(
        self, settings: CallSettings, request_hash: str, stored_request: Any
    ) -> Any:
        """The reply to this very request already paid for and not yet judged (a crash
        after it arrived), recorded again as reused: ``None`` when there is none."""
        if self.memo == "off":
            return None
        scope = self.run_id if self.memo == "run" else None
        earlier = self.store.find_unjudged_reply(request_hash, scope)
        if earlier is None or earlier.response is None:
            return None
        self._log_call(
            settings,
            request_hash,
            stored_request,
            response=earlier.response,
            error=None,
            status="reused",
            http_attempt=0,
            usage=Usage(),
            latency_ms=0.0,
            served_from=earlier.id,
        )
        return earlier.response

    def _log_call(
        self, settings: CallSettings, request_hash: str, stored_request: Any, **outcome: Any
    ) -> None:
        """One row of the call log for this step's request; ``outcome`` is the reply or
        error, status, HTTP attempt, usage and latency (``Store.record_llm_call``)."""
        self.store.record_llm_call(
            run_id=self.run_id,
            attempt_id=self.attempt_id,
            step_id=self.step_id,
            provider=settings.provider,
            model=settings.model,
            request_hash=request_hash,
            request=stored_request,
            **outcome,
        )

    # --- parts ----------------------------------------------------------------------------

    def _provider(self, settings: CallSettings) -> Any:
        from agentsaga.providers import ProviderConfig, get_provider
        from agentsaga.providers.scripted import ScriptedProvider

        configured = dict(self.config.get("providers", {}).get(settings.provider, {}))
        kind = configured.get("type", settings.provider)
        if kind == "scripted":
            if settings.replies is None:
                raise ConfigError(
                    f"step {self.step_id!r} uses the scripted provider but lists no 'replies:'"
                )
            # Each call of this step in this run takes the next reply: a retry or a rewind
            # gets a new answer, as from a real model.
            used = sum(
                1
                for c in self.store.llm_calls(self.run_id)
                if c.step_id == self.step_id and c.status in ("ok", "error")
            )
            return ScriptedProvider(settings.replies, cursor=used, name=settings.provider)
        if settings.provider in self._clients:
            return self._clients[settings.provider]
        extra = {"type": kind}
        if "timeout" in configured:
            extra["timeout_s"] = configured["timeout"]
        config = ProviderConfig(
            base_url=configured.get("base_url"),
            api_key_env=configured.get("api_key_env"),
            extra=extra,
        )
        provider = get_provider(settings.provider, config)
        self._clients[settings.provider] = provider
        return provider

    def _retry_policy(self, provider: str) -> Any:
        from agentsaga.providers import RetryPolicy

        configured = self.config.get("providers", {}).get(provider, {})
        policy = RetryPolicy()
        if "max_retries" in configured:
            policy.attempts = int(configured["max_retries"]) + 1
        if "max_retry_after" in configured:
            policy.max_retry_after_s = float(configured["max_retry_after"])
        if "timeout" in configured:
            policy.timeout_s = float(configured["timeout"])
        return policy

    def _cost(self, settings: CallSettings, usage: Any) -> float | None:
        from agentsaga.pricing import cost_usd

        return cost_usd(
            self._price_provider(settings), settings.model, usage, self.config.get("prices")
        )

    def _price_provider(self, settings: CallSettings) -> str:
        """Whose price list applies. The scripted provider plays the model it names, so a
        demo or a simulation is priced as that model would be."""
        kind = (
            self.config.get("providers", {})
            .get(settings.provider, {})
            .get("type", settings.provider)
        )
        if kind == "scripted":
            model = settings.model.lower()
            if model.startswith("claude"):
                return "anthropic"
            if model.startswith(("gpt", "o1", "o3", "o4")):
                return "openai"
        return str(kind)

    def _check_budget(self, request: Any, settings: CallSettings) -> None:
        if not self.run_budget and not self.step_budget:
            return
        from agentsaga import tokens
        from agentsaga.providers import Usage as ProviderUsage

        prompt_tokens = tokens.count(request.prompt_text(), settings.model)
        worst_tokens = prompt_tokens + settings.max_tokens
        worst_cost = self._cost(settings, ProviderUsage(prompt_tokens, settings.max_tokens))
        calls = [c for c in self.store.llm_calls(self.run_id) if c.status == "ok"]
        for scope, budget, spent_calls in (
            ("the run", self.run_budget, calls),
            (
                f"step {self.step_id!r}",
                self.step_budget,
                [c for c in calls if c.step_id == self.step_id],
            ),
        ):
            if not budget:
                continue
            spent_tokens = sum(c.usage.total for c in spent_calls)
            limit = budget.get("max_tokens")
            if limit is not None and spent_tokens + worst_tokens > limit:
                raise BudgetExceeded(
                    f"{scope}: {spent_tokens:,} tokens spent + this call's worst case "
                    f"{worst_tokens:,} ({prompt_tokens:,} prompt + {settings.max_tokens:,} "
                    "max_tokens)",
                    spent_tokens + worst_tokens,
                    float(limit),
                    "max_tokens",
                    self.run_id,
                )
            cost_limit = budget.get("max_cost_usd")
            if cost_limit is not None and worst_cost is not None:
                spent_cost = sum(c.usage.cost_usd or 0.0 for c in spent_calls)
                if spent_cost + worst_cost > cost_limit:
                    raise BudgetExceeded(
                        f"{scope}: ${spent_cost:.4f} spent + this call's worst case "
                        f"${worst_cost:.4f}",
                        round(spent_cost + worst_cost, 6),
                        float(cost_limit),
                        "max_cost_usd",
                        self.run_id,
                    )
