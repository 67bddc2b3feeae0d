"""What ``${{ }}`` sees when a step runs, and what a step's fingerprint covers.

The namespace has ``vars``, ``run``, ``env``, ``steps`` (each step's current attempt:
output, error, status, usage, attempt) and ``rewind`` (why the run came back to *this*
step; empty on its first pass). A fingerprint hashes what a step is and every input it
reads, so that ``resume --pipeline`` re-runs exactly the steps whose inputs changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from agentsaga import compensations, environ, expressions
from agentsaga.errors import AgentsagaError
from agentsaga.pipeline import Pipeline, Step
from agentsaga.states import StepStatus
from agentsaga.steps import COMMAND_FIELDS
from agentsaga.store import AttemptRecord, RunRecord

EMPTY_REWIND = {"count": 0, "from": "", "error": ""}
#: ``run.*`` as a fingerprint sees it: the same in every resume, and in a fork (whose
#: id and branch differ) that rightly reuses its parent's checkpoints.
_FINGERPRINT_RUN = {k: f"<{k}>" for k in ("id", "branch", "base", "workspace", "name", "parent")}
_LLM_DEFAULTS = ("provider", "model", "max_tokens", "temperature")


def build(
    run: RunRecord,
    pipeline: Pipeline,
    steps: Mapping[str, dict[str, Any]],
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``env``: the environment and the pipeline's ``env:`` merged, when the caller has
    it (the runtime keeps it between steps)."""
    return {
        "vars": run.vars,
        "run": run_namespace(run),
        "env": {**environ.snapshot(), **pipeline_env(run, pipeline)} if env is None else env,
        "steps": steps,
        "rewind": dict(EMPTY_REWIND),
    }


def step_namespace(a: AttemptRecord) -> dict[str, Any]:
    return {
        "output": a.output if a.status == StepStatus.COMPLETED else None,
        "error": (a.error or {}).get("message"),
        "status": a.status,
        "usage": a.usage.to_json(),
        "attempt": a.attempt,
    }


def run_namespace(run: RunRecord) -> dict[str, Any]:
    ws = run.workspace or {}
    return {
        "id": run.id,
        "branch": ws.get("branch"),
        "base": ws.get("base_commit"),
        "workspace": ws.get("path"),
        "name": run.pipeline_name,
        "parent": run.parent_run_id,
    }


def rewind_for(run: RunRecord, step: Step) -> dict[str, Any]:
    """``rewind.*`` for a step: why the run came back to it, empty on its first pass
    and for steps no rewind went through."""
    by_step: dict[str, Any] = run.state.get("rewind_by_step") or {}
    return by_step.get(step.id) or dict(EMPTY_REWIND)


def pipeline_env(run: RunRecord, pipeline: Pipeline) -> dict[str, str]:
    """The pipeline's top-level ``env:``, rendered (it may read vars, run and env)."""
    if not pipeline.env:
        return {}
    ns = {
        "vars": run.vars,
        "run": run_namespace(run),
        "env": environ.copy(),
        "steps": {},
        "rewind": dict(EMPTY_REWIND),
    }
    return {
        k: expressions.to_text(compensations.render_any(v, ns)) for k, v in pipeline.env.items()
    }


def render_fields(step: Step, ns: dict[str, Any]) -> dict[str, Any]:
    """The step's own fields with every expression rendered. A bash string's values come
    apart from its script, in ``shell.VALUES_FIELD`` (they are part of the fingerprint)."""
    from agentsaga.shell import VALUES_FIELD

    rendered: dict[str, Any] = {}
    for key, value in step.fields.items():
        if key in COMMAND_FIELDS:
            rendered[key], values = compensations.render_command(value, ns)
            if values:
                rendered[VALUES_FIELD] = values
        elif key in ("replies", "schema"):
            rendered[key] = value
        else:
            rendered[key] = compensations.render_any(value, ns)
    return rendered


def step_env(step: Step, ns: dict[str, Any]) -> dict[str, str]:
    """The step's own ``env:``, rendered (part of its fingerprint)."""
    return {
        key: expressions.to_text(compensations.render_any(value, ns))
        for key, value in step.env.items()
    }


def fingerprint(
    step: Step,
    pipeline: Pipeline,
    ns: dict[str, Any],
    run: RunRecord,
    rendered: tuple[dict[str, Any], dict[str, str]] | None = None,
) -> str | None:
    """What the step is and every input it reads: its definition, its fields and env
    rendered, the pipeline's env and the LLM defaults it inherits. ``rendered``: the
    step's fields and env as just rendered for the run, used as they are when the step
    holds no expression (they render the same whatever the namespace)."""
    definition_hash, reads = step.definition()
    probe = {**ns, "run": _FINGERPRINT_RUN, "rewind": rewind_for(run, step)}
    try:
        if rendered is not None and not reads:
            params, env = rendered
        else:
            params = render_fields(step, probe)
            env = step_env(step, probe)
        top_env = {
            k: expressions.to_text(compensations.render_any(v, probe))
            for k, v in pipeline.env.items()
        }
    except AgentsagaError:
        return None
    inherited = (
        {k: pipeline.defaults.get(k) for k in _LLM_DEFAULTS}
        if step.kind in ("plan", "write", "agent")
        else {}
    )
    return short_hash([definition_hash, params, env, top_env, inherited])


def truthy(condition: str, ns: dict[str, Any]) -> bool:
    """An ``if:``, written with or without ``${{ }}``."""
    if expressions.has_expressions(condition):
        value = expressions.render_value(expressions.parse_template(condition), ns)
    else:
        value = expressions.evaluate(expressions.parse_expression(condition), ns)
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "null")
    return bool(value)


def short_hash(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
