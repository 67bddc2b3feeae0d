"""``agentsaga show RUN STEP`` as text: each attempt, then each of its details.

One renderer per detail key of ``step_detail.DETAILS``; a detail without a renderer here
is shown as indented JSON, so a new kind of detail is visible before it is pretty.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

#: Lines of a prompt shown before "... N more lines" (replies are shown whole).
PROMPT_LINES = 12


def _indent(text: str, prefix: str = "    ") -> list[str]:
    return [prefix + line if line else "" for line in text.splitlines()] or [prefix]


def _clip(text: str, lines: int) -> list[str]:
    rows = text.splitlines()
    shown = _indent("\n".join(rows[:lines]))
    if len(rows) > lines:
        shown.append(f"    ... {len(rows) - lines} more lines (--json shows all)")
    return shown


def _prompt(value: Any) -> list[str]:
    lines = ["  prompt:"]
    if value.get("system"):
        lines += ["   system:", *_clip(value["system"], 4)]
    lines += ["   user:", *_clip(value.get("user") or "", PROMPT_LINES)]
    return lines


def _usage_text(u: dict[str, Any]) -> str:
    parts = [f"in {u['input']:,}", f"out {u['output']:,}"]
    if u["cache_read"] or u["cache_write"]:
        parts.append(f"cache read {u['cache_read']:,} write {u['cache_write']:,}")
    cost = "" if u["cost_usd"] is None else f", ${u['cost_usd']:.4f}"
    return f"{u['total']:,} tokens ({', '.join(parts)}{cost})"


def _model_calls(value: Any) -> list[str]:
    lines: list[str] = []
    for call in value:
        head = f"  model call {call['call']}: {call['provider']}/{call['model']} {call['status']}"
        if call["served_from_call_log"]:
            head += ", served from the call log (not paid again)"
        else:
            head += f", {_usage_text(call['usage'])}, {call['latency_ms']:,} ms"
        lines.append(head)
        for http in call.get("http") or []:  # retries, and what each HTTP attempt met
            if len(call["http"]) > 1 or http["error"]:
                err = f": {http['error']['message']}" if http["error"] else ""
                lines.append(f"    HTTP attempt {http['http_attempt']}: {http['status']}{err}")
        if call.get("reply") is not None:
            lines += ["   reply:", *_indent(call["reply"])]
    return lines


def _read(value: Any) -> list[str]:
    lines = [f"  files sent ({value['tokens'] or 0:,} tokens):"]
    lines += [f"    {path}" for path in value["sent"]] or ["    none"]
    if value["skipped"]:
        lines.append("  files skipped:")
        for s in value["skipped"]:
            tokens = f", {s['tokens']:,} tokens" if s.get("tokens") else ""
            lines.append(f"    {s['path']}: {s['reason']}{tokens}")
    return lines


def _output(value: Any) -> list[str]:
    if value is None:
        return []
    return ["  output:", *_indent(json.dumps(value, indent=2, default=str))]


def _error(value: Any) -> list[str]:
    return ["  error:", *_indent(f"{value['type']}: {value['message']}")]


def _compensations(value: Any) -> list[str]:
    lines = []
    for comp in value:
        err = f": {comp['error']['message']}" if comp.get("error") else ""
        lines.append(f"  compensation ({comp['reason']}): {comp['status']}{err}")
    return lines


def _diff(value: Any) -> list[str]:
    return ["  diff:", *_indent(value)]


def _logs(value: Any) -> list[str]:
    lines = []
    for stream in ("stdout", "stderr"):
        if value.get(stream):
            lines += [f"  {stream} ({value[stream + '_path']}):", *_clip(value[stream], 20)]
    return lines


def _transcript(value: Any) -> list[str]:
    from agentsaga.agent.transcript import format_transcript

    lines = format_transcript({"step": "", "run_id": "", "turns": value})[1:]
    return ["  agent transcript:", *[f"  {line}" for line in lines]]


RENDERERS: dict[str, Callable[[Any], list[str]]] = {
    "transcript": _transcript,
    "prompt": _prompt,
    "model_calls": _model_calls,
    "read": _read,
    "output": _output,
    "error": _error,
    "diff": _diff,
    "logs": _logs,
    "compensations": _compensations,
}


def step_lines(doc: dict[str, Any]) -> list[str]:
    from agentsaga.step_detail import DETAILS

    count = len(doc["attempts"])
    lines = [
        f"step {doc['step_id']} ({doc['kind']}) of run {doc['run_id']}: {doc['status']}, "
        f"{count} attempt{'s' if count != 1 else ''}"
    ]
    for a in doc["attempts"]:
        duration = f", {a['duration_ms'] / 1000:.2f}s" if a["duration_ms"] is not None else ""
        flags = " (superseded by a later attempt)" if a["superseded"] else ""
        flags += " (reused from the parent run)" if a["reused"] else ""
        lines += ["", f"attempt {a['attempt']}: {a['status']}{duration}{flags}"]
        for key in [k for k, _ in DETAILS] + ["compensations"]:
            value = a.get(key)
            if value in (None, [], {}):
                continue
            render = RENDERERS.get(key)
            lines += render(value) if render else [f"  {key}:", *_indent(json.dumps(value))]
    return lines
