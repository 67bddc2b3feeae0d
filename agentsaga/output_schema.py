"""The JSON Schema of the documents the commands print with ``--json``
(``agentsaga schema --output``); the web view serves the same documents under ``/api/``.

One definition per document under ``$defs``, and the shared parts (usage, an error, an
attempt, a model call) defined once. ``tests/test_newcomer.py`` validates every command's
output against the definition named here, so a field added to a document without its
schema fails a test. The vocabulary is described in :mod:`agentsaga.documents`.
"""

from __future__ import annotations

from typing import Any

from agentsaga.states import RunStatus, StepStatus

#: Which definition each command's ``--json`` output follows.
COMMANDS = {
    "run": "run",
    "resume": "run",
    "rollback": "run",
    "fork": "run",
    "show": "run",
    "show RUN STEP": "step_detail",
    "runs": "runs",
    "report": "report",
    "resume --plan": "plan",
    "rollback --plan": "plan",
    "fork --plan": "plan",
    "diff": "diff",
    "logs": "logs",
    "validate": "validate",
    "validate --explain": "explain",
    "demo": "demo",
    "release": "release",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/$defs/{name}"}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object with exactly these properties (``additionalProperties: false``: a field
    not in the schema is a failing test, not a silent drift)."""
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": list(required),
        "additionalProperties": False,
    }


def _list(item: Any) -> dict[str, Any]:
    return {"type": "array", "items": item}


def _null(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


STR = {"type": "string"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
TIME = {"type": "string", "format": "date-time", "description": "ISO-8601, UTC"}
MS = {"type": "integer", "minimum": 0, "description": "milliseconds"}
COST = {"type": "number", "minimum": 0, "description": "US dollars, 6 decimals at most"}
ATTEMPT_NO = {"type": "integer", "minimum": 1, "description": "the attempt's number in its step"}
# One definition of the statuses (states.py), as for the database CHECKs.
RUN_STATUS = {"enum": [str(s) for s in RunStatus]}
STEP_STATUS = {"enum": [str(s) for s in StepStatus]}


def _defs() -> dict[str, Any]:
    usage = _obj(
        {
            "input": INT,
            "output": INT,
            "cache_read": INT,
            "cache_write": INT,
            "total": INT,
            "cost_usd": _null(COST),
            "estimated": BOOL,
        }
    )
    error = _null(_obj({"type": STR, "message": STR}))
    model_call = _obj(
        {
            "call": INT,
            "provider": STR,
            "model": STR,
            "status": {"enum": ["ok", "error", "reused"]},
            "served_from_call_log": BOOL,
            "http_attempts": INT,
            "latency_ms": MS,
            "usage": _ref("usage"),
        },
        {
            "http": _list(
                _obj(
                    {
                        "http_attempt": INT,
                        "status": STR,
                        "latency_ms": _null(MS),
                        "error": _ref("error"),
                    }
                )
            ),
            "reply": _null(STR),
            "stop_reason": _null(STR),
            "request": {"type": "object", "description": "the request as sent, secrets masked"},
            "tool_calls": _list({"type": "object"}),
            "error": _ref("error"),
        },
    )
    compensation = _obj(
        {
            "step_id": STR,
            "status": {"enum": ["running", "succeeded", "failed", "skipped"]},
            "reason": STR,
            "tries": INT,
            "started_at": _null(TIME),
            "finished_at": _null(TIME),
            "error": _ref("error"),
        },
        {"attempt": _null(ATTEMPT_NO)},
    )
    attempt_fields = {
        "attempt": ATTEMPT_NO,
        "seq": INT,
        "status": STEP_STATUS,
        "superseded": BOOL,
        "reused": BOOL,
        "started_at": _null(TIME),
        "finished_at": _null(TIME),
        "duration_ms": _null(MS),
        "usage": _ref("usage"),
        "model_calls": _list(_ref("model_call")),
        "commit": _null(STR),
        "base": _null(STR),
        "snapshot": _null(STR),
        "compensations": _list(_ref("compensation")),
        "error": _ref("error"),
    }
    attempt = _obj(attempt_fields, {"merged_into": STR})
    step = _obj({"step_id": STR, "status": STEP_STATUS, "attempts": _list(_ref("attempt"))})
    next_command = _obj({"command": STR, "does": STR})
    decision = _obj(
        {
            "step_id": STR,
            "visit": _null(INT),
            "decision": STR,
            "decided_by": _null(STR),
            "comment": _null(STR),
            "decided_at": _null(TIME),
        }
    )
    run = _obj(
        {
            "run_id": STR,
            "pipeline": STR,
            "status": RUN_STATUS,
            "parent_run_id": _null(STR),
            "parent_step_id": _null(STR),
            "branch": _null(STR),
            "workspace": _null(STR),
            "created_at": TIME,
            "updated_at": _null(TIME),
            "finished_at": _null(TIME),
            "vars": {"type": "object"},
            "error": _ref("error"),
            "usage": _ref("usage"),
            "notes": _list(STR),
            "steps": _list(_ref("step")),
            "python": _null({"type": "object", "description": "the venv the run found"}),
            "setup": _null({"type": "object", "description": "include/setup/submodules"}),
            "decisions": _list(decision),
            "gate": _null({"type": "object", "description": "what a waiting run waits on"}),
            "compensations": _list(_ref("compensation")),
            "next": _list(next_command),
        }
    )
    detail_attempt = _obj(
        attempt_fields,
        {
            "prompt": _null(_obj({"system": STR, "user": STR})),
            "read": _null(
                _obj(
                    {
                        "sent": _list(STR),
                        "tokens": _null(INT),
                        "skipped": _list(_obj({"path": STR, "reason": STR, "tokens": _null(INT)})),
                    }
                )
            ),
            "output": {},
            "transcript": _null(_list({"type": "object", "description": "an agent's turn"})),
            "diff": _null(STR),
            "logs": _null(
                _obj({"stdout_path": STR, "stderr_path": STR, "stdout": STR, "stderr": STR})
            ),
        },
    )
    step_detail = _obj(
        {
            "run_id": STR,
            "step_id": STR,
            "kind": _null(STR),
            "status": STEP_STATUS,
            "attempts": _list(detail_attempt),
        }
    )
    report_attempt = _obj(
        {
            "attempt": ATTEMPT_NO,
            "seq": INT,
            "status": STEP_STATUS,
            "superseded": BOOL,
            "failed": BOOL,
            "usage": _ref("usage"),
            "reused_tokens": _obj({"checkpoint": INT, "call_log": INT}),
            "saved_tokens": INT,
            "model_calls": _list(_ref("model_call")),
        }
    )
    report = _obj(
        {
            "run_id": STR,
            "steps": _list(
                _obj(
                    {
                        "step_id": STR,
                        "status": STEP_STATUS,
                        "attempts": _list(report_attempt),
                        "spent_tokens": INT,
                        "cost_usd": _null(COST),
                        "reused_checkpoint_tokens": INT,
                        "reused_from_log_tokens": INT,
                        "saved_tokens": INT,
                        "restart_counterfactual_tokens": INT,
                    }
                )
            ),
            "spent_tokens": INT,
            "usage": _obj({"input": INT, "output": INT, "cache_read": INT, "cache_write": INT}),
            "cost_usd": _null(COST),
            "reused_tokens": INT,
            "reused_checkpoint_tokens": INT,
            "reused_from_log_tokens": INT,
            "saved_tokens": INT,
            "clean_pass_tokens": INT,
            "restart_counterfactual_tokens": INT,
            "decisions": _list(decision),
            "tax_saga": {"type": "number"},
            "tax_restart": {"type": "number"},
        }
    )
    runs = _obj(
        {
            "runs": _list(
                _obj(
                    {
                        "run_id": STR,
                        "pipeline": STR,
                        "status": RUN_STATUS,
                        "created_at": TIME,
                        "updated_at": _null(TIME),
                        "parent_run_id": _null(STR),
                        "step_count": INT,
                        "usage": _ref("usage"),
                    }
                )
            )
        }
    )
    plan = _obj(
        {
            "run_id": STR,
            "command": {"enum": ["resume", "rollback", "fork"]},
            "plan": _list(
                _obj(
                    {
                        "step_id": _null(STR),
                        "attempt": _null(ATTEMPT_NO),
                        "action": {"enum": ["reuse", "run", "rerun", "compensate", "skip", "stop"]},
                        "reason": STR,
                    }
                )
            ),
        }
    )
    diff = _obj({"run_id": STR, "step_id": _null(STR), "stat": BOOL, "patch": STR})
    logs = _obj(
        {
            "run_id": STR,
            "step_id": _null(STR),
            "logs": _list(
                _obj(
                    {
                        "step_id": STR,
                        "attempt": ATTEMPT_NO,
                        "stream": {"enum": ["stdout", "stderr"]},
                        "path": STR,
                        "text": STR,
                    }
                )
            ),
        }
    )
    validate = _obj(
        {
            "valid": BOOL,
            "pipeline": STR,
            "file": STR,
            "steps": _list(_obj({"step_id": STR, "kind": STR})),
        },
        {"warnings": _list(STR)},
    )
    explain = _obj(
        {
            "pipeline": STR,
            "steps": _list(
                {
                    "type": "object",
                    "required": ["step_id", "kind"],
                    "properties": {"step_id": STR, "kind": STR},
                }
            ),
        }
    )
    # The demo's run document, with its token report and where its repository is.
    demo = _obj({**run["properties"], "report": _ref("report"), "repo": STR})
    problem = _obj({"message": STR}, {"file": STR, "line": INT, "col": INT})
    error_document = _obj(
        {
            "error": _obj(
                {"type": STR, "message": STR, "exit_code": INT}, {"problems": _list(problem)}
            )
        }
    )
    release = _obj(
        {
            "released": _list(
                _obj(
                    {
                        "run_id": STR,
                        "outcome": {"enum": ["pooled", "deleted", "none"]},
                        "path": STR,
                        "branch": STR,
                    }
                )
            )
        }
    )
    return {
        "usage": usage,
        "error": error,
        "model_call": model_call,
        "compensation": compensation,
        "attempt": attempt,
        "step": step,
        "run": run,
        "step_detail": step_detail,
        "report": report,
        "runs": runs,
        "plan": plan,
        "diff": diff,
        "logs": logs,
        "validate": validate,
        "explain": explain,
        "demo": demo,
        "release": release,
        "error_document": error_document,
    }


def output_schema() -> dict[str, Any]:
    defs = _defs()
    documents = sorted(set(COMMANDS.values()))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://agentsaga.invalid/output.schema.json",
        "title": "agentsaga --json documents",
        "description": "What each command prints with --json; x-commands maps a command to "
        "its document under $defs. A command that fails prints error_document instead "
        "(x-on-error), its message also on stderr.",
        "x-commands": COMMANDS,
        # Any command that fails before its document prints this one instead
        # (cli_errors.py): the message on stderr, this on stdout.
        "x-on-error": "error_document",
        "oneOf": [_ref(name) for name in [*documents, "error_document"]],
        "$defs": defs,
    }
