"""The agent step's record in SQL both dialects accept: its turns and its tool calls.

A mixin of ``SqlStore`` (``sql_base.SqlMixin`` declares what it calls), kept
apart so the store's main module stays about runs, attempts and the call log.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from agentsaga.errors import StoreError
from agentsaga.store import AgentTurnRecord, ToolCallRecord, utcnow
from agentsaga.store.sql_base import SqlMixin


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class AgentTurnsSql(SqlMixin):
    # --- the agent step's turns ----------------------------------------------------------

    def start_tool_call(
        self,
        *,
        run_id: str,
        attempt_id: int,
        step_id: str,
        turn: int,
        call_index: int,
        call_id: str,
        tool: str,
        arguments: dict[str, Any],
        idempotency_key: str,
    ) -> int:
        with self.transaction() as cur:
            row = self._exec(
                cur,
                "INSERT INTO agent_tool_calls (run_id, attempt_id, step_id, turn, call_index, "
                "call_id, tool, arguments_json, idempotency_key, status, started_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'started', ?) RETURNING id",
                (
                    run_id,
                    attempt_id,
                    step_id,
                    turn,
                    call_index,
                    call_id,
                    tool,
                    _dumps(arguments),
                    idempotency_key,
                    utcnow(),
                ),
            ).fetchone()
        return int(row[0])

    def finish_tool_call(self, tool_call_id: int, result: dict[str, Any]) -> None:
        now = utcnow()
        with self.transaction() as cur:
            started = self._exec(
                cur, "SELECT started_at FROM agent_tool_calls WHERE id = ?", (tool_call_id,)
            ).fetchone()
            if started is None:
                raise StoreError(f"tool call {tool_call_id} is not in the store")
            duration_ms = (_epoch(now) - _epoch(started[0])) * 1000
            self._exec(
                cur,
                "UPDATE agent_tool_calls SET status = 'done', result_json = ?, finished_at = ?, "
                "duration_ms = ? WHERE id = ?",
                (_dumps(result), now, duration_ms, tool_call_id),
            )

    def record_agent_turn(
        self,
        *,
        run_id: str,
        attempt_id: int,
        step_id: str,
        turn: int,
        reply: dict[str, Any],
        answer: dict[str, Any],
        snapshot: str | None,
    ) -> None:
        with self.transaction() as cur:
            self._exec(
                cur,
                "INSERT INTO agent_turns (run_id, attempt_id, step_id, turn, reply_json, "
                "answer_json, snapshot, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    attempt_id,
                    step_id,
                    turn,
                    _dumps(reply),
                    _dumps(answer),
                    snapshot,
                    utcnow(),
                ),
            )

    def agent_turns(self, run_id: str, step_id: str) -> list[AgentTurnRecord]:
        rows = self._query(
            "SELECT id, run_id, attempt_id, step_id, turn, reply_json, answer_json, snapshot, "
            "created_at FROM agent_turns WHERE run_id = ? AND step_id = ? ORDER BY id",
            (run_id, step_id),
        )
        return [
            AgentTurnRecord(
                id=int(r[0]),
                run_id=r[1],
                attempt_id=int(r[2]),
                step_id=r[3],
                turn=int(r[4]),
                reply=_loads(r[5]),
                answer=_loads(r[6]),
                snapshot=r[7],
                created_at=r[8],
            )
            for r in rows
        ]

    def tool_calls(self, run_id: str, step_id: str) -> list[ToolCallRecord]:
        rows = self._query(
            "SELECT id, run_id, attempt_id, step_id, turn, call_index, call_id, tool, "
            "arguments_json, idempotency_key, status, result_json, started_at, finished_at, "
            "duration_ms FROM agent_tool_calls WHERE run_id = ? AND step_id = ? ORDER BY id",
            (run_id, step_id),
        )
        return [
            ToolCallRecord(
                id=int(r[0]),
                run_id=r[1],
                attempt_id=int(r[2]),
                step_id=r[3],
                turn=int(r[4]),
                call_index=int(r[5]),
                call_id=r[6],
                tool=r[7],
                arguments=_loads(r[8]),
                idempotency_key=r[9],
                status=r[10],
                result=_loads(r[11]),
                started_at=r[12],
                finished_at=r[13],
                duration_ms=r[14],
            )
            for r in rows
        ]
