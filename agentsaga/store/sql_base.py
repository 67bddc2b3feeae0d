"""What the mixins of ``SqlStore`` may call, declared once.

``SqlStore`` (sql.py) is assembled from mixins so that its main module stays about runs and
attempts: ``agent_sql.AgentTurnsSql`` (the agent step's turns),
``gate_sql.GateDecisionsSql`` (human gates), ``llm_sql.LLMCallsSql`` (the call log) and
``lease_sql.LeaseSql`` (the run's lease). Each mixin runs SQL through the store's
``transaction``, ``_exec`` and ``_query``; ``SqlMixin`` declares them for mypy, and
``SqlStore`` (with its dialect subclasses) supplies them. The JSON helpers below are
shared by all of them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any


class SqlMixin:
    def transaction(self) -> AbstractContextManager[Any]:
        """A cursor in a write transaction (the dialect's)."""
        raise NotImplementedError

    def _exec(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, ensure_ascii=False)


def _masked(value: Any) -> str | None:
    """JSON of a value that may quote a secret (an output, an error, a run's state)."""
    from agentsaga.redact import redact_for_store

    return _dumps(redact_for_store(value))


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
