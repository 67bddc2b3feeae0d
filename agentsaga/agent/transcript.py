"""An agent step's transcript, turn by turn: what ``show RUN STEP`` prints for it.

Read from the store only (the turns, their tool calls, the call log), so it works for a
step that is running, crashed or done. A turn that was in flight when a process died has
tool calls but no turn record: it is shown as such, and so is the attempt that redid it.
"""

from __future__ import annotations

import json
from typing import Any

from agentsaga.store import Store


def agent_transcript(store: Store, run_id: str, step_id: str) -> dict[str, Any]:
    """Every turn of every attempt of ``step_id``: its tokens, and per tool call the tool,
    its arguments (shortened), the result's size and whether it was an error."""
    attempts = {a.id: a.attempt for a in store.attempts(run_id) if a.step_id == step_id}
    turns = store.agent_turns(run_id, step_id)
    calls = store.tool_calls(run_id, step_id)
    done = {(t.attempt_id, t.turn): t for t in turns}
    keys = sorted(
        {(t.attempt_id, t.turn) for t in turns} | {(c.attempt_id, c.turn) for c in calls},
        key=lambda k: (k[1], k[0]),
    )
    rows = []
    for attempt_id, turn in keys:
        record = done.get((attempt_id, turn))
        reply = record.reply if record else {}
        usage = reply.get("usage") or {}
        rows.append(
            {
                "turn": turn,
                "attempt": attempts.get(attempt_id),
                "complete": record is not None,
                "snapshot": record.snapshot if record else None,
                "text": str(reply.get("text") or "")[:200],
                "tokens": {k: usage.get(k, 0) for k in ("input", "output", "cache_read")},
                "calls": [
                    {
                        "tool": c.tool,
                        "arguments": _short(c.arguments),
                        "status": c.status,
                        "result_chars": (c.result or {}).get("chars"),
                        "is_error": bool((c.result or {}).get("is_error")),
                        "idempotency_key": c.idempotency_key,
                    }
                    for c in calls
                    if c.attempt_id == attempt_id and c.turn == turn
                ],
            }
        )
    return {"run_id": run_id, "step": step_id, "turns": rows}


def _short(arguments: dict[str, Any], limit: int = 80) -> str:
    parts = []
    for key, value in arguments.items():
        text = value if isinstance(value, str) else json.dumps(value)
        text = text.replace("\n", "\\n")
        if len(text) > limit:
            text = text[: limit - 3] + "..."
        parts.append(f"{key}={text}")
    return ", ".join(parts)


def format_transcript(data: dict[str, Any]) -> list[str]:
    """The transcript as plain lines, one per turn and one per tool call."""
    done = {row["turn"] for row in data["turns"] if row["complete"]}
    redone = sum(1 for row in data["turns"] if not row["complete"])
    again = f", {redone} redone after a crash" if redone else ""
    lines = [f"agent step {data['step']} of run {data['run_id']}: {len(done)} turn(s){again}"]
    for row in data["turns"]:
        t = row["tokens"]
        state = "" if row["complete"] else "  (in flight when its process died)"
        lines.append(
            f"turn {row['turn']:>3} (attempt {row['attempt']}): {t['input']:,} in, "
            f"{t['output']:,} out, {t['cache_read']:,} cache read{state}"
        )
        if row["text"]:
            lines.append(f"      says: {row['text'].splitlines()[0][:100]}")
        for call in row["calls"]:
            size = "?" if call["result_chars"] is None else f"{call['result_chars']:,} chars"
            flag = " error" if call["is_error"] else ""
            if call["status"] != "done":
                size, flag = "no result", " (in flight)"
            lines.append(f"      {call['tool']}({call['arguments']}) -> {size}{flag}")
        if row["snapshot"]:
            lines.append(f"      files snapshotted: {row['snapshot'][:12]}")
    return lines
