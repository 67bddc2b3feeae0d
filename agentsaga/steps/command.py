"""The command kinds: ``shell``, ``deploy`` and ``test``. A non-zero exit fails the step."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from agentsaga.context import StepContext
from agentsaga.errors import StepFailed, StepTimeout
from agentsaga.process import CommandResult, read_tail, run_command
from agentsaga.shell import VALUES_FIELD

#: How much of a test run's output is read back to find its failures (the store keeps
#: only a tail; the failure sections of a ``-rA`` run may lie far above it).
_SCAN_CHARS = 2_000_000


def execute(ctx: StepContext) -> dict[str, Any]:
    # The values of the run: string's expressions, which it reads as variables.
    values = ctx.params.get(VALUES_FIELD)
    env = {**ctx.env, **values} if values else ctx.env
    junit: Path | None = None
    if ctx.step.kind == "test":
        junit = ctx.log_stem.with_name(ctx.log_stem.name + ".junit.xml")
        junit.unlink(missing_ok=True)
        env = {**env, "PYTEST_ADDOPTS": _with_junit(env.get("PYTEST_ADDOPTS", ""), junit)}
    result = run_command(
        ctx.params["run"],
        cwd=ctx.cwd,
        env=env,
        log_stem=ctx.log_stem,
        timeout_s=ctx.timeout_s,
        cancel=ctx.cancel,
        redact=bool(ctx.config.get("redact_env", True)),
    )
    output: dict[str, Any] = {
        "exit_code": result.exit_code,
        "stdout": result.stdout_tail,
        "stderr": result.stderr_tail,
        # An empty tail is an empty file: no need to read it again.
        "json": result.stdout_json() if result.stdout_tail else None,
    }
    if ctx.step.kind == "test":
        return _judge_tests(ctx, result, output, junit)
    if result.timed_out:
        assert ctx.timeout_s is not None
        error = StepTimeout(f"command {ctx.step.id!r}", ctx.timeout_s)
        error.output = output
        raise error
    if result.exit_code != 0:
        _check_checkout(ctx, result.stdout_tail + "\n" + result.stderr_tail, output)
        tail = result.stderr_tail.strip()[-1500:] or result.stdout_tail.strip()[-1500:]
        raise StepFailed(
            f"command exited with {result.exit_code}" + (f": {tail}" if tail else ""),
            kind="error",
            output=output,
        )
    return output


def _with_junit(addopts: str, junit: Path) -> str:
    """pytest writes per-test results (failure messages included) where we can read them;
    an explicit ``--junitxml`` in the command comes later on pytest's command line and wins.
    Other runners ignore the variable."""
    return f"{addopts} --junitxml={shlex.quote(str(junit))}".strip()


def _judge_tests(
    ctx: StepContext, result: CommandResult, output: dict[str, Any], junit: Path | None
) -> dict[str, Any]:
    from agentsaga import testfailures
    from agentsaga.testsummary import summarize

    stdout = read_tail(result.stdout_path, _SCAN_CHARS) or result.stdout_tail
    stderr = read_tail(result.stderr_path, _SCAN_CHARS) or result.stderr_tail
    summary = summarize(result.exit_code, stdout, stderr, timed_out=result.timed_out)
    output["passed"] = result.exit_code == 0
    output["summary"] = summary.text
    output["failure_class"] = summary.failure_class
    output["details"] = summary.to_json()
    if result.exit_code == 0:
        return output
    _check_checkout(ctx, stdout + "\n" + stderr, output)
    failures, source = testfailures.extract(stdout + "\n" + stderr, junit)
    output["failures"] = [f.to_json() for f in failures]
    output["failures_from"] = source
    tail = (result.stdout_tail[-3000:] + "\n" + result.stderr_tail[-3000:]).strip()
    context = testfailures.render(failures, tail)
    kind = summary.failure_class if summary.failure_class != "none" else "assertion"
    text = summary.text
    if kind == "infrastructure" and not result.timed_out and result.exit_code not in (126, 127):
        edited = _edited_by_run(ctx, stdout + "\n" + stderr)
        if edited:
            # An import or collection error inside a file this run changed is the edit's
            # doing, not the machinery's: the rewind to the write can fix it.
            kind = "assertion"
            output["failure_class"] = kind
            text += f" (raised in a file this run changed: {', '.join(edited[:3])})"
    raise StepFailed(
        f"tests failed: {text}\n{context}",
        kind=kind,
        output=output,
        # Failing tests fail the same way again: a retry would pay for nothing. Only a
        # failure of the machinery (a timeout, a runner that never started) is retried;
        # an assertion goes straight to the step's on_failure (its rewind).
        retryable=kind == "infrastructure",
    )


def _check_checkout(ctx: StepContext, text: str, output: dict[str, Any]) -> None:
    """A failure whose tracebacks point into the user's checkout, not the run's worktree,
    judged the wrong code: an infrastructure failure, never a reason to rewrite the code."""
    from agentsaga import pyenv, testfailures

    where = ctx.workspace.to_json()
    if where.get("isolation") != "worktree" or not where.get("repo_root"):
        return
    repo_root = Path(where["repo_root"])
    wrong = pyenv.checkout_paths(
        testfailures.traceback_paths(text), repo_root, ctx.cwd, ctx.env.get("VIRTUAL_ENV")
    )
    if not wrong:
        return
    output["failure_class"] = "infrastructure"
    shown = ", ".join(wrong[:3]) + (f" (+{len(wrong) - 3} more)" if len(wrong) > 3 else "")
    raise StepFailed(
        f"the command ran code from your checkout ({repo_root}), not from the run's "
        f"worktree ({ctx.cwd}): its tracebacks point at {shown}. Something on the import "
        "path names the checkout by absolute path and agentsaga could not redirect it (a "
        "sys.path insert in a conftest, a custom import hook, an absolute PYTHONPATH in a "
        "script). Make it relative to the project (e.g. Path(__file__).parent), or set "
        "PYTHONPATH in the step's env: to the worktree's folder (env: {PYTHONPATH: src}); "
        "`agentsaga show RUN` lists the venv and the import roots agentsaga redirected",
        kind="infrastructure",
        output=output,
        retryable=False,
    )


def _edited_by_run(ctx: StepContext, text: str) -> list[str]:
    """Files the output's tracebacks point at that the run changed since it started."""
    from agentsaga import gitops, testfailures

    where = ctx.workspace.to_json()
    base = where.get("base_commit")
    if not ctx.workspace.uses_git or not base:
        return []
    work = ctx.cwd.resolve()
    named = set()
    for raw in testfailures.traceback_paths(text):
        path = Path(raw) if Path(raw).is_absolute() else work / raw
        normal = Path(os.path.normpath(path))
        if normal.is_relative_to(work):
            named.add(normal.relative_to(work).as_posix())
    if not named:
        return []
    changed = set(gitops.changed_files(ctx.cwd, base, "HEAD")) | {
        entry[3:] for entry in gitops.dirty_files(ctx.cwd)
    }
    return sorted(named & changed)
