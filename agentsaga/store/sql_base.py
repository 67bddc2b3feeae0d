"""What the mixins of ``SqlStore`` may call, declared once.

``SqlStore`` (sql.py) is assembled from mixins so that its main module stays about runs,
attempts and the call log: ``agent_sql.AgentTurnsSql`` (the agent step's turns) and
``gate_sql.GateDecisionsSql`` (human gates). Each mixin runs SQL through the store's
``transaction``, ``_exec`` and ``_query``; ``SqlMixin`` declares them for mypy, and
``SqlStore`` (with its dialect subclasses) supplies them.
"""

from __future__ import annotations

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
