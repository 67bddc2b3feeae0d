"""The call log of model requests and replies, in SQL both dialects accept.

A mixin of ``SqlStore`` (``sql_base.SqlMixin`` declares what it calls). A reply recorded
here before a crash is served again on resume instead of being paid twice, until the
attempt that received it is judged (``_judge``, also run inside ``finish_attempt``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentsaga.store import LLMCallRecord, Usage, utcnow
from agentsaga.store.sql_base import SqlMixin, _dumps, _loads

_CALL_COLUMNS = (
    "id, run_id, attempt_id, step_id, provider, model, request_hash, request_json, "
    "response_json, error_json, status, judged, http_attempt, served_from, tokens_input, "
    "tokens_output, tokens_cache_read, tokens_cache_write, tokens_estimated, cost_usd, "
    "latency_ms, created_at"
)


class LLMCallsSql(SqlMixin):
    def record_llm_call(
        self,
        *,
        run_id: str,
        attempt_id: int | None,
        step_id: str,
        provider: str,
        model: str,
        request_hash: str,
        request: dict[str, Any],
        response: dict[str, Any] | None,
        error: dict[str, Any] | None,
        status: str,
        http_attempt: int,
        usage: Usage,
        latency_ms: float | None,
        served_from: int | None = None,
    ) -> int:
        with self.transaction() as cur:
            row = self._exec(
                cur,
                "INSERT INTO llm_calls (run_id, attempt_id, step_id, provider, model, "
                "request_hash, request_json, response_json, error_json, status, http_attempt, "
                "served_from, tokens_input, tokens_output, tokens_cache_read, "
                "tokens_cache_write, tokens_estimated, cost_usd, latency_ms, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    run_id,
                    attempt_id,
                    step_id,
                    provider,
                    model,
                    request_hash,
                    _dumps(request),
                    _dumps(response),
                    _dumps(error),
                    status,
                    http_attempt,
                    served_from,
                    usage.input,
                    usage.output,
                    usage.cache_read,
                    usage.cache_write,
                    int(usage.estimated),
                    usage.cost_usd,
                    latency_ms,
                    utcnow(),
                ),
            ).fetchone()
        return int(row[0])

    def find_unjudged_reply(self, request_hash: str, run_id: str | None) -> LLMCallRecord | None:
        scope, params = ("AND run_id = ?", [run_id]) if run_id else ("", [])
        rows = self._query(
            f"SELECT {_CALL_COLUMNS} FROM llm_calls WHERE request_hash = ? AND status = 'ok' "
            f"AND judged = 0 {scope} ORDER BY id DESC LIMIT 1",
            (request_hash, *params),
        )
        return _call(rows[0]) if rows else None

    def judge_calls(self, attempt_id: int) -> None:
        """Mark an attempt's replies as judged: never served from the log again."""
        with self.transaction() as cur:
            self._judge(cur, attempt_id)

    def _judge(self, cur: Any, attempt_id: int) -> None:
        self._exec(cur, "UPDATE llm_calls SET judged = 1 WHERE attempt_id = ?", (attempt_id,))
        self._exec(
            cur,
            "UPDATE llm_calls SET judged = 1 WHERE id IN "
            "(SELECT served_from FROM llm_calls "
            "WHERE attempt_id = ? AND served_from IS NOT NULL)",
            (attempt_id,),
        )

    def llm_calls(self, run_id: str) -> list[LLMCallRecord]:
        rows = self._query(
            f"SELECT {_CALL_COLUMNS} FROM llm_calls WHERE run_id = ? ORDER BY id", (run_id,)
        )
        return [_call(r) for r in rows]


def _call(r: Sequence[Any]) -> LLMCallRecord:
    return LLMCallRecord(
        id=int(r[0]),
        run_id=r[1],
        attempt_id=r[2],
        step_id=r[3],
        provider=r[4],
        model=r[5],
        request_hash=r[6],
        request=_loads(r[7]),
        response=_loads(r[8]),
        error=_loads(r[9]),
        status=r[10],
        judged=bool(r[11]),
        http_attempt=int(r[12]),
        served_from=r[13],
        usage=Usage(int(r[14]), int(r[15]), int(r[16]), int(r[17]), r[19], bool(r[18])),
        latency_ms=r[20],
        created_at=r[21],
    )
