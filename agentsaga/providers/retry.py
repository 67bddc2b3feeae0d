"""agentsaga's own retry policy for LLM calls (the SDKs' retries are set to 0).

Owning the loop means every HTTP attempt is visible: ``on_attempt`` reports each one, so the
call log can record attempts that failed and what they cost in time. Transient errors (rate
limit, overloaded, 5xx, timeout, connection) are retried with exponential backoff and full
jitter (AWS's "Exponential Backoff And Jitter": spreads clients that failed together), or
after the server's ``retry-after`` when it gave one, capped so a hostile or mistaken header
cannot park a run for an hour. Authentication, bad-request and spend-limit errors are never
retried: asking again cannot fix them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderOverloaded,
    ProviderRateLimited,
    ProviderServerError,
    ProviderTimeout,
)
from .base import LLMRequest, LLMResponse, Provider

RETRYABLE: tuple[type[ProviderError], ...] = (
    ProviderRateLimited,
    ProviderOverloaded,
    ProviderServerError,
    ProviderTimeout,
    ProviderConnectionError,
)

#: on_attempt(attempt_no starting at 1, response or None, error or None, duration_ms)
AttemptHook = Callable[[int, LLMResponse | None, ProviderError | None, float], None]


@dataclass
class RetryPolicy:
    #: Total attempts, the first included.
    attempts: int = 4
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_retry_after_s: float = 60.0
    #: Per-attempt HTTP timeout handed to the provider.
    timeout_s: float = 600.0

    def delay_s(self, retry_no: int, error: ProviderError, rand: Callable[[], float]) -> float:
        """Seconds to wait before retry ``retry_no`` (1 = the first retry)."""
        if error.retry_after_s is not None and error.retry_after_s >= 0:
            return min(error.retry_after_s, self.max_retry_after_s)
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** (retry_no - 1))
        return ceiling * rand()


def is_retryable(error: ProviderError) -> bool:
    return isinstance(error, RETRYABLE)


def call_with_retries(
    provider: Provider,
    request: LLMRequest,
    policy: RetryPolicy | None = None,
    *,
    on_attempt: AttemptHook | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rand: Callable[[], float] = random.random,
) -> LLMResponse:
    """Call ``provider`` until it answers or the policy gives up; raise the last error."""
    policy = policy or RetryPolicy()
    # `< 1` would make the loop never call the provider and leave nothing to raise.
    attempts = max(1, policy.attempts)
    for attempt_no in range(1, attempts + 1):
        started = time.perf_counter()
        try:
            response = provider.complete(request, timeout_s=policy.timeout_s)
        except ProviderError as exc:
            duration_ms = (time.perf_counter() - started) * 1000.0
            if on_attempt is not None:
                on_attempt(attempt_no, None, exc, duration_ms)
            if not is_retryable(exc) or attempt_no == attempts:
                raise
            sleep(policy.delay_s(attempt_no, exc, rand))
            continue
        duration_ms = (time.perf_counter() - started) * 1000.0
        if on_attempt is not None:
            on_attempt(attempt_no, response, None, duration_ms)
        return response
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover
