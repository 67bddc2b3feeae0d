"""``agentsaga show RUN STEP``: one step's attempts in full.

For each attempt: its prompt, every model call (the request, the reply, usage, latency and
each HTTP attempt), its output (for ``read``: the files sent and those skipped, with the
reason), its error, the diff it made, its command output, and its compensations.

Each kind of detail is one function in ``DETAILS``, taking the attempt and what was read
from the store once, returning a JSON value (or ``None`` when it does not apply); a new
kind of detail (an agent's transcript) is one more entry here, its schema in
``output_schema``, and one renderer in ``cli_step.RENDERERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentsaga import documents
from agentsaga.store import AttemptRecord, CompensationRecord, LLMCallRecord, Store


@dataclass
class StepFacts:
    """What the details of one step are built from, read from the store once."""

    run_id: str
    step_id: str
    kind: str | None
    calls: dict[int, list[LLMCallRecord]] = field(default_factory=dict)
    compensations: dict[int, list[CompensationRecord]] = field(default_factory=dict)
    workspace: dict[str, Any] = field(default_factory=dict)
    all_attempts: list[AttemptRecord] = field(default_factory=list)
    store: Any = None
    turns: list[dict[str, Any]] | None = None  # an agent's transcript, read once


Detail = Callable[[StepFacts, AttemptRecord], Any]


def _prompt(facts: StepFacts, attempt: AttemptRecord) -> Any:
    """The prompt of the attempt's first model call: system text and the user message
    (a write's reflections are the later calls' messages)."""
    calls = facts.calls.get(attempt.id) or []
    if not calls:
        return None
    request = calls[0].request or {}
    messages = request.get("messages") or []
    user = next((m.get("content") for m in messages if m.get("role") == "user"), None) or ""
    # The cacheable prefix (a write's context before its first ${{ rewind.* }}) is sent
    # ahead of the first user message.
    prefix = request.get("cache_prefix") or ""
    user = prefix + ("\n\n" + user if prefix and user else user)
    return {"system": request.get("system") or "", "user": user}


def _model_calls(facts: StepFacts, attempt: AttemptRecord) -> Any:
    """Every model call: the call-log summary (``documents.model_calls``), and its reply,
    why it stopped, and each HTTP attempt (a retried 429 is one call, two HTTP attempts)."""
    records = facts.calls.get(attempt.id) or []
    calls = documents.model_calls(records)
    index = -1
    for record in records:
        if record.http_attempt <= 1 or index < 0:
            index += 1  # the same rule as documents.model_calls: a new call starts here
        call = calls[index]
        call.setdefault("http", [])
        if record.status != "reused":
            call["http"].append(
                {
                    "http_attempt": record.http_attempt,
                    "status": record.status,
                    "latency_ms": documents.millis(record.latency_ms),
                    "error": documents.error(record.error),
                }
            )
        response = record.response or {}
        call["reply"] = response.get("text")
        call["stop_reason"] = response.get("stop_reason")
        call["request"] = record.request or {}
        call["tool_calls"] = response.get("tool_calls") or []
        call["error"] = documents.error(record.error)
    return calls


def _read(facts: StepFacts, attempt: AttemptRecord) -> Any:
    output = attempt.output if isinstance(attempt.output, dict) else None
    if facts.kind != "read" or output is None:
        return None
    return {
        "sent": list(output.get("paths") or []),
        "tokens": output.get("tokens"),
        "skipped": [
            {"path": s.get("path"), "reason": s.get("reason"), "tokens": s.get("tokens")}
            for s in output.get("skipped") or []
        ],
    }


def _output(facts: StepFacts, attempt: AttemptRecord) -> Any:
    if not isinstance(attempt.output, dict):
        return attempt.output
    if facts.kind == "read":
        # The file contents are in the prompt of the steps that read them; here, the list.
        return {k: v for k, v in attempt.output.items() if k != "files"}
    return attempt.output


def _error(facts: StepFacts, attempt: AttemptRecord) -> Any:
    return documents.error(attempt.error)


def _transcript(facts: StepFacts, attempt: AttemptRecord) -> Any:
    """An agent step's turns and tool calls (agent/transcript.py), this attempt's."""
    if facts.kind != "agent":
        return None
    if facts.turns is None:
        from agentsaga.agent.transcript import agent_transcript

        facts.turns = agent_transcript(facts.store, facts.run_id, facts.step_id)["turns"]
    return [t for t in facts.turns if t["attempt"] == attempt.attempt] or None


def _logs(facts: StepFacts, attempt: AttemptRecord) -> Any:
    """The command's output: the log files, and their last 64 KB."""
    from agentsaga.report import _log_tails

    if not attempt.log_path:
        return None
    tails = _log_tails(attempt.log_path)
    return {
        "stdout_path": attempt.log_path + ".out",
        "stderr_path": attempt.log_path + ".err",
        "stdout": tails.get("stdout", ""),
        "stderr": tails.get("stderr", ""),
    }


def _diff(facts: StepFacts, attempt: AttemptRecord) -> Any:
    """What the attempt changed in the repository, as a patch."""
    from agentsaga.report import _diff_or_none

    if not facts.workspace:
        return None
    return _diff_or_none(facts.workspace, attempt, facts.all_attempts)


#: (key, function) in the order a person reads them; ``cli_render`` renders each key.
DETAILS: list[tuple[str, Detail]] = [
    ("prompt", _prompt),
    ("model_calls", _model_calls),
    ("read", _read),
    ("output", _output),
    ("transcript", _transcript),
    ("error", _error),
    ("diff", _diff),
    ("logs", _logs),
]


def step_document(store: Store, run_id: str, step_id: str) -> dict[str, Any]:
    """``show RUN STEP --json``: the step and every attempt of it, in start order."""
    from agentsaga.report import require_step, step_kinds

    require_step(store, run_id, step_id)
    every = store.attempts(run_id)
    attempts = [a for a in every if a.step_id == step_id]
    facts = StepFacts(run_id, step_id, step_kinds(store, run_id).get(step_id))
    facts.workspace = store.get_run(run_id).workspace or {}
    facts.store = store
    facts.all_attempts = every
    for call in store.llm_calls(run_id):
        if call.step_id == step_id and call.attempt_id is not None:
            facts.calls.setdefault(call.attempt_id, []).append(call)
    for comp in store.compensations(run_id):
        if comp.step_id == step_id:
            facts.compensations.setdefault(comp.attempt_id, []).append(comp)
    rows = []
    for a in attempts:
        row = documents.attempt_brief(a, facts.compensations.get(a.id, []))
        for key, detail in DETAILS:
            row[key] = detail(facts, a)
        rows.append(row)
    status = documents.current_statuses(attempts).get(step_id, "pending")
    return {
        "run_id": run_id,
        "step_id": step_id,
        "kind": facts.kind,
        "status": status,
        "attempts": rows,
    }
