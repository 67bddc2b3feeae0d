"""The command kinds: ``shell``, ``deploy`` and ``test``. A non-zero exit fails the step."""

from __future__ import annotations

from typing import Any

from agentsaga.context import StepContext
from agentsaga.errors import StepFailed, StepTimeout
from agentsaga.process import run_command
from agentsaga.shell import VALUES_FIELD


def execute(ctx: StepContext) -> dict[str, Any]:
    result = run_command(
        ctx.params["run"],
        cwd=ctx.cwd,
        # The values of the run: string's expressions, which it reads as variables.
        env={**ctx.env, **ctx.params.get(VALUES_FIELD, {})},
        log_stem=ctx.log_stem,
        timeout_s=ctx.timeout_s,
        cancel=ctx.cancel,
        redact=bool(ctx.config.get("redact_env", True)),
    )
    output: dict[str, Any] = {
        "exit_code": result.exit_code,
        "stdout": result.stdout_tail,
        "stderr": result.stderr_tail,
        "json": result.stdout_json(),
    }
    if ctx.step.kind == "test":
        from agentsaga.testsummary import summarize

        summary = summarize(
            result.exit_code, result.stdout_tail, result.stderr_tail, timed_out=result.timed_out
        )
        output["passed"] = result.exit_code == 0
        output["summary"] = summary.text
        output["failure_class"] = summary.failure_class
        output["details"] = summary.to_json()
        if result.exit_code != 0:
            tail = (result.stdout_tail[-1500:] + "\n" + result.stderr_tail[-1500:]).strip()
            raise StepFailed(
                f"tests failed: {summary.text}\n{tail}",
                kind=summary.failure_class if summary.failure_class != "none" else "assertion",
                output=output,
            )
        return output
    if result.timed_out:
        assert ctx.timeout_s is not None
        error = StepTimeout(f"command {ctx.step.id!r}", ctx.timeout_s)
        error.output = output
        raise error
    if result.exit_code != 0:
        tail = result.stderr_tail.strip()[-1500:] or result.stdout_tail.strip()[-1500:]
        raise StepFailed(
            f"command exited with {result.exit_code}" + (f": {tail}" if tail else ""),
            kind="error",
            output=output,
        )
    return output
