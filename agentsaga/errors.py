"""One exception hierarchy for agentsaga.

Every error a user can see is an ``AgentsagaError``. Each takes structured fields and
builds its message in ``__init__`` so it can be stored (as JSON) and shown again, and each
carries the process exit code the CLI uses for it. Foreign errors (SDK, git, sqlite) are
translated where they enter, most specific first, chained with ``raise ... from exc``.

    AgentsagaError                      exit 1
    ├── UserInputError                  exit 2
    │   ├── PipelineError               file:line:col: message
    │   │   └── PipelineErrors          several, one per line
    │   ├── ExpressionError             bad ${{ }} syntax or evaluation
    │   ├── ConfigError                 .agentsaga.yml, flags
    │   ├── PreflightError              a run that cannot start (no key, unknown provider)
    │   ├── NoStore                     a read-only command found no store
    │   ├── RunNotFound                 unknown or ambiguous run id
    │   ├── NotWaiting                  approve/reject of a run not at a gate
    │   ├── GateDecided                 a decision came second (or after the deadline)
    │   └── EditsInWorktree             a waiting run's worktree holds a person's edits
    ├── StepFailed                      a step failed (exit 1, run resumable)
    │   ├── BudgetExceeded              a call would cross the budget; never retried
    │   ├── EditError                   edit blocks that do not parse or apply
    │   │   └── EditPathError           an edit path outside the workspace
    │   └── StepTimeout
    ├── CompensationFailed              exit 3
    ├── ProviderError                   an LLM call failed
    │   ├── ProviderAuthError           401/403, missing key: never retried
    │   ├── ProviderBadRequest          400/404/422: never retried
    │   ├── ProviderSpendLimit          billing / quota: never retried
    │   ├── ProviderRateLimited         429: retried, honours retry-after
    │   ├── ProviderOverloaded          529: retried
    │   ├── ProviderServerError         5xx: retried
    │   ├── ProviderTimeout             retried
    │   └── ProviderConnectionError     retried
    ├── GitError                        a git operation failed
    │   └── GitUnsafe                   the repository is in a state we refuse to touch
    ├── StoreError                      the state database failed
    ├── RunLocked                       exit 4: another live process owns the run
    └── Interrupted                     exit 130: Ctrl-C
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class AgentsagaError(Exception):
    """Root of every error agentsaga raises on purpose."""

    exit_code = 1
    #: Whether the engine may retry a step that failed with this error.
    retryable = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "message": self.message}


class UserInputError(AgentsagaError):
    exit_code = 2
    retryable = False


class PipelineError(UserInputError):
    """A pipeline that cannot be loaded; the message starts with ``file:line:col``."""

    def __init__(self, file: str, line: int, col: int, problem: str) -> None:
        self.file, self.line, self.col, self.problem = file, line, col, problem
        super().__init__(f"{file}:{line}:{col}: {problem}")


class PipelineErrors(PipelineError):
    """Every problem found in one pipeline, in file order (the first gives the location
    fields), so one ``validate`` shows them all."""

    def __init__(self, errors: list[PipelineError]) -> None:
        first = errors[0]
        super().__init__(first.file, first.line, first.col, first.problem)
        self.errors = errors
        self.message = "\n".join(e.message for e in errors) + f"\n({len(errors)} problems)"
        self.args = (self.message,)


def combine(errors: list[PipelineError]) -> PipelineError:
    ordered = sorted(errors, key=lambda e: (e.line, e.col))
    return ordered[0] if len(ordered) == 1 else PipelineErrors(ordered)


class ExpressionError(UserInputError):
    """A ``${{ }}`` expression that does not parse or cannot be evaluated.

    ``offset`` is the character offset of the problem inside ``source``.
    """

    def __init__(self, source: str, offset: int, problem: str) -> None:
        self.source, self.offset, self.problem = source, offset, problem
        super().__init__(f"{problem} (in {source!r} at character {offset + 1})")


class ConfigError(UserInputError):
    pass


class NotWaiting(UserInputError):
    """``approve``/``reject`` of a run that is not stopped at a gate."""

    def __init__(self, run_id: str, status: str) -> None:
        self.run_id, self.status = run_id, status
        super().__init__(
            f"run {run_id} is {status}, not waiting at a gate: there is nothing to decide"
        )


class GateDecided(UserInputError):
    """A decision that cannot be recorded: another was first, or the deadline passed."""

    def __init__(self, run_id: str, step_id: str, detail: str) -> None:
        self.run_id, self.step_id = run_id, step_id
        super().__init__(f"run {run_id}, gate {step_id}: {detail}")


class EditsInWorktree(UserInputError):
    """A reject, rollback or ``resume --from`` that would reset a waiting run's worktree
    where a person changed files while it waited. The changes are saved at ``saved``
    before this is raised."""

    def __init__(
        self, run_id: str, path: str, files: list[str], saved: str, pinned: str, doing: str
    ) -> None:
        self.run_id, self.path, self.files, self.saved = run_id, path, files, saved
        shown = ", ".join(files[:8]) + (f" and {len(files) - 8} more" if len(files) > 8 else "")
        super().__init__(
            f"run {run_id}: files were changed in its worktree {path} while it waited at "
            f"the gate ({shown}); {doing} would discard them. They are saved as {saved} "
            f"(see them: git diff {pinned} {saved}; keep them: git branch NAME {saved}). "
            f"Rerun with --discard-edits to {'roll back' if doing == 'rollback' else doing} "
            "anyway"
        )


class PreflightError(UserInputError):
    """What a run would meet and cannot get past (an unknown provider, a missing key, no
    repository), found before anything was created."""

    def __init__(self, what: str, problems: list[str], hint: str = "") -> None:
        self.problems = problems
        listed = "\n".join(f"  {p}" for p in [*problems, *([hint] if hint else [])])
        super().__init__(f"{what} cannot start; nothing was created:\n{listed}")


class NoStore(UserInputError):
    """A command that only reads found no store where it looked (and made none)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        where = f"at {path}" if path else "here (not inside a git repository)"
        super().__init__(
            f"no agentsaga store {where}: no run was started from this repository; cd into "
            "the repository a run was started from, or give --store PATH|postgresql://..."
        )


class RunNotFound(UserInputError):
    def __init__(self, run_ref: str, candidates: list[str] | None = None) -> None:
        self.run_ref = run_ref
        self.candidates = candidates or []
        if self.candidates:
            shown = ", ".join(self.candidates[:5])
            msg = f"run id prefix {run_ref!r} is ambiguous: {shown}; give more characters"
        else:
            msg = f"no run {run_ref!r} in this store; 'agentsaga runs' lists them"
        super().__init__(msg)


class StepFailed(AgentsagaError):
    """A step did not succeed. ``kind`` classifies the failure for ``on_failure: when``."""

    def __init__(
        self,
        message: str,
        *,
        kind: str = "error",
        output: dict[str, Any] | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.output = output
        self.retryable = retryable

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["kind"] = self.kind
        return data


class BudgetExceeded(StepFailed):
    def __init__(
        self, what: str, would_be: float, limit: float, unit: str, run_id: str = "<run-id>"
    ) -> None:
        self.what, self.would_be, self.limit, self.unit = what, would_be, limit, unit
        super().__init__(
            f"budget exceeded: {what} would reach {would_be:,.6g} {unit}, over the limit of "
            f"{limit:,.6g} {unit}; no request was sent. Raise it with "
            f"'agentsaga resume {run_id} --budget {unit}=N'",
            kind="budget",
            retryable=False,
        )


class EditError(StepFailed):
    def __init__(self, message: str, *, output: dict[str, Any] | None = None) -> None:
        super().__init__(message, kind="edit", output=output, retryable=True)


class EditPathError(EditError):
    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"refusing to edit {path!r}: {reason}")


class StepTimeout(StepFailed):
    def __init__(self, what: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(f"{what} timed out after {timeout_s:g}s", kind="timeout")


class CompensationFailed(AgentsagaError):
    exit_code = 3

    def __init__(self, step_id: str, reason: str) -> None:
        self.step_id, self.reason = step_id, reason
        super().__init__(f"compensation of step {step_id!r} failed: {reason}")


class ProviderError(AgentsagaError):
    """An LLM call failed. ``status`` is the HTTP status when there was one."""

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.provider, self.status, self.retry_after_s = provider, status, retry_after_s
        prefix = f"{provider}: " + (f"HTTP {status}: " if status else "")
        super().__init__(prefix + message)


class ProviderAuthError(ProviderError):
    retryable = False


class ProviderBadRequest(ProviderError):
    retryable = False


class ProviderSpendLimit(ProviderError):
    retryable = False


class ProviderRateLimited(ProviderError):
    pass


class ProviderOverloaded(ProviderError):
    pass


class ProviderServerError(ProviderError):
    pass


class ProviderTimeout(ProviderError):
    pass


class ProviderConnectionError(ProviderError):
    pass


class GitError(AgentsagaError):
    pass


class GitUnsafe(GitError):
    """The repository is somewhere agentsaga will not act (mid-merge, bare, moved branch).

    Exit 2 when it stops a run from starting: the user must fix the repository first."""

    exit_code = 2
    retryable = False


class StoreError(AgentsagaError):
    pass


class RunLocked(AgentsagaError):
    exit_code = 4
    retryable = False

    def __init__(self, run_id: str, owner: str, host: str, pid: int, expires_at: str) -> None:
        self.run_id, self.owner, self.host, self.pid = run_id, owner, host, pid
        super().__init__(
            f"run {run_id} is owned by another live process (pid {pid} on {host}, "
            f"lease until {expires_at}); wait for it to finish, or stop that process"
        )


class Interrupted(AgentsagaError):
    exit_code = 130
    retryable = False

    def __init__(self, message: str = "interrupted; the run is resumable") -> None:
        super().__init__(message)
        #: Set by the engine on its way out, so the CLI can still report the run.
        self.run_id: str | None = None
