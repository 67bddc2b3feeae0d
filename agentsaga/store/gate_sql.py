"""Human gates' decisions in SQL both dialects accept (``INSERT ... ON CONFLICT``).

A mixin of ``SqlStore`` (``sql_base.SqlMixin`` declares what it calls), as
``agent_sql.py`` is for the agent step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentsaga.store import GateDecisionRecord, utcnow
from agentsaga.store.sql_base import SqlMixin


class GateDecisionsSql(SqlMixin):
    def record_gate_decision(
        self,
        run_id: str,
        attempt_id: int,
        step_id: str,
        decision: str,
        decided_by: str,
        comment: str,
    ) -> tuple[GateDecisionRecord, bool]:
        with self.transaction() as cur:
            # The unique attempt_id is the compare-and-swap: of two deciders, one inserts.
            inserted = self._exec(
                cur,
                "INSERT INTO gate_decisions (run_id, attempt_id, step_id, decision, "
                "decided_by, comment, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (attempt_id) DO NOTHING",
                (run_id, attempt_id, step_id, decision, decided_by, comment, utcnow()),
            ).rowcount
            row = self._exec(
                cur, f"SELECT {_GATE_COLS} FROM gate_decisions WHERE attempt_id = ?", (attempt_id,)
            ).fetchone()
        return _gate_decision(row), inserted == 1

    def gate_decisions(self, run_id: str) -> list[GateDecisionRecord]:
        rows = self._query(
            f"SELECT {_GATE_COLS} FROM gate_decisions WHERE run_id = ? ORDER BY id", (run_id,)
        )
        return [_gate_decision(r) for r in rows]


_GATE_COLS = "id, run_id, attempt_id, step_id, decision, decided_by, comment, decided_at"


def _gate_decision(r: Sequence[Any]) -> GateDecisionRecord:
    return GateDecisionRecord(
        id=int(r[0]),
        run_id=r[1],
        attempt_id=int(r[2]),
        step_id=r[3],
        decision=r[4],
        decided_by=r[5],
        comment=r[6],
        decided_at=r[7],
    )
