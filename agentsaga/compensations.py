"""Undoing one attempt of one step: ``git: reset | delete-branch | revert`` or ``run:``.

A compensation receives the step's output, which is null when the attempt failed or
crashed before its checkpoint; it must cope with that. Git compensations are
compare-and-swap: they refuse when the run branch is not where the run left it, unless
``--force``. Every compensation is retried under its own policy and gets
``AGENTSAGA_IDEMPOTENCY_KEY``, so a compensation interrupted and run again can tell.
"""

from __future__ import annotations

import os
import threading
from collections import ChainMap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentsaga import expressions
from agentsaga.errors import AgentsagaError, StepFailed
from agentsaga.pipeline import Compensation, Step
from agentsaga.process import run_command
from agentsaga.store import AttemptRecord
from agentsaga.workspace import GitWorkspace, RunWorkspace


@dataclass
class CompensationInput:
    run_id: str
    step: Step
    attempt: AttemptRecord
    namespace: dict[str, Any]
    workspace: RunWorkspace
    base_env: dict[str, str]
    log_stem: Path
    cancel: threading.Event
    force: bool
    #: Where the run branch stood after this attempt (its commit), for compare-and-swap.
    expected_head: str | None


def step_output(attempt: AttemptRecord) -> dict[str, Any] | None:
    """The output a compensation sees: null unless the attempt completed."""
    return attempt.output if attempt.error is None and attempt.output is not None else None


def run_once(comp: Compensation, ci: CompensationInput) -> None:
    """One try of a compensation; raises an AgentsagaError when it fails."""
    if comp.git:
        _git(comp.git, ci)
        return
    assert comp.run is not None
    ns = dict(ci.namespace)
    steps = ns.get("steps", {})
    own = dict(steps.get(ci.step.id, {}))
    own["output"] = step_output(ci.attempt)
    own["status"] = ci.attempt.status
    own["attempt"] = ci.attempt.attempt
    # Over the run's steps, not a copy of them: the namespace reads a step's record
    # only when an expression names it.
    ns["steps"] = ChainMap({ci.step.id: own}, steps)
    command, values = render_command(comp.run, ns)
    env = dict(ci.base_env)
    env.update({k: expressions.to_text(render_any(v, ns)) for k, v in comp.env.items()})
    env["AGENTSAGA_IDEMPOTENCY_KEY"] = f"{ci.run_id}:{ci.step.id}:{ci.attempt.attempt}"
    env["AGENTSAGA_COMPENSATING"] = "1"
    env.update(values)
    cwd = ci.workspace.path if ci.workspace.path.is_dir() else Path(os.getcwd())
    result = run_command(
        command,
        cwd=cwd,
        env=env,
        log_stem=ci.log_stem,
        timeout_s=comp.timeout_s,
        cancel=ci.cancel,
    )
    if result.timed_out or result.exit_code != 0:
        tail = result.stderr_tail.strip()[-1000:] or result.stdout_tail.strip()[-1000:]
        what = "timed out" if result.timed_out else f"exited with {result.exit_code}"
        raise StepFailed(f"compensation command {what}" + (f": {tail}" if tail else ""))


def _git(action: str, ci: CompensationInput) -> None:
    attempt = ci.attempt
    if action == "reset":
        if not attempt.snapshot:
            # The attempt was recorded but crashed before its snapshot: it had not begun
            # to change anything, so there is nothing to reset.
            return
        ci.workspace.reset(attempt.snapshot, ci.expected_head, ci.force)
    elif action == "revert":
        output = attempt.output or {}
        base, commit = output.get("base") or attempt.base_commit, output.get("commit")
        if not base or not commit:
            return  # nothing was committed by this attempt
        ci.workspace.revert(base, commit, ci.expected_head, ci.force)
    elif action == "delete-branch":
        if isinstance(ci.workspace, GitWorkspace):
            # Compare-and-swap like the other two: a person's commit on the branch makes
            # the deletion refuse instead of destroying it.
            ci.workspace.expected_head = ci.expected_head
        ci.workspace.teardown(ci.run_id, keep_refs=False, force=ci.force)
    else:  # pragma: no cover - the loader only admits the three above
        raise AgentsagaError(f"unknown git compensation {action!r}")


def render_any(value: Any, ns: dict[str, Any], quote: bool = False) -> Any:
    """Render ``${{ }}`` in a value; strings alone may hold expressions."""
    if isinstance(value, str):
        if not expressions.has_expressions(value):
            return value
        template = expressions.parse_template(value)
        if quote:
            return expressions.render(template, ns, quote=expressions.shell_quote)
        if template.is_single_expression:
            return expressions.render_value(template, ns)
        return expressions.render(template, ns)
    if isinstance(value, list):
        return [render_any(v, ns, quote) for v in value]
    if isinstance(value, dict):
        return {k: render_any(v, ns, quote) for k, v in value.items()}
    return value


def render_command(
    command: str | list[str], ns: dict[str, Any]
) -> tuple[str | list[str], dict[str, str]]:
    """A string command is for bash: every value becomes a variable reference, and the
    values come back for the command's environment (agentsaga.shell). A list is argv:
    every element renders to exactly one argument, whatever it holds."""
    if isinstance(command, str):
        from agentsaga.shell import render_bash

        return render_bash(command, ns)
    out = []
    for part in command:
        if isinstance(part, str) and expressions.has_expressions(part):
            out.append(expressions.render(expressions.parse_template(part), ns))
        else:
            out.append(str(part))
    return out, {}
