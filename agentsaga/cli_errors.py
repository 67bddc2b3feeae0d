"""How a command that fails says so: one rule for every command.

The message always goes to stderr as text (``error: ...``). With ``--json``, stdout also
gets one JSON document, so a script that parses stdout never meets an empty stream::

    {"error": {"type": "PipelineErrors", "message": "...", "exit_code": 2,
               "problems": [{"file": "p.yml", "line": 3, "col": 5, "message": "..."}]}}

``type`` is the error's class (``RunNotFound``, ``PreflightError``, ``UsageError`` for a
bad flag, ``Interrupted``, ``InternalError``), ``exit_code`` the process's, ``problems``
(when there are several, or a location) each problem on its own. A command that printed
its document already (a run that failed prints the run's document, exit 1) prints no
error document after it: stdout holds exactly one document. Described as
``error_document`` in ``agentsaga schema --output``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

#: Whether this process printed a --json document already (set by ``cli._echo_json``).
_printed = False


def mark_printed(printed: bool = True) -> None:
    global _printed
    _printed = printed


def exit_code_of(status: str, command: str) -> int:
    """The exit code of a command that drove or read back a run now ``status``."""
    if status == "succeeded":
        return 0
    if status == "rolled_back":
        return 0 if command == "rollback" else 1
    if status == "rollback_failed":
        return 3
    if status == "interrupted":
        return 130
    if command == "decide --detach" and status in ("waiting", "running"):
        # The decision is recorded, and the run waits for a driver or (on Temporal, where
        # the waiting workflow took it) already goes on: done either way.
        return 0
    if status == "waiting":
        return 5
    return 1


def print_warnings(lines: list[str]) -> None:
    """Each line on stderr, as ``warning: ...`` (a preflight finding says its level
    already: ``warning: ...``, or ``error: ...`` where validate lists an error)."""
    for line in lines:
        said = line.startswith(("warning", "error"))
        print(line if said else f"warning: {line}", file=sys.stderr)


def json_requested(argv: list[str]) -> bool:
    """``--json`` among the options (not after ``--``, where it would be an argument)."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in options


def problems_of(exc: BaseException) -> list[dict[str, Any]] | None:
    """Each problem of a pipeline error (located) or of a preflight refusal."""
    from agentsaga.errors import PipelineError, PipelineErrors, PreflightError

    if isinstance(exc, PipelineError):
        errors = exc.errors if isinstance(exc, PipelineErrors) else [exc]
        return [
            {"file": e.file, "line": e.line, "col": e.col, "message": e.problem} for e in errors
        ]
    if isinstance(exc, PreflightError):
        return [{"message": p} for p in exc.problems]
    return None


def error_document(
    type_: str, message: str, exit_code: int, problems: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type_, "message": message, "exit_code": exit_code}
    if problems:
        error["problems"] = problems
    return {"error": error}


def print_error(message: str) -> None:
    """``error: message`` on stderr (red on a terminal, unless NO_COLOR)."""
    color = sys.stderr.isatty() and "NO_COLOR" not in os.environ
    prefix = "\033[31merror:\033[0m " if color else "error: "
    sys.stderr.write(prefix + message + "\n")


def report(
    message: str,
    exit_code: int,
    type_: str,
    exc: BaseException | None = None,
    text: bool = True,
) -> None:
    """Say that the command failed: ``message`` on stderr (unless ``text=False``: already
    shown, as click shows a usage error), and with --json the error document on stdout."""
    if text:
        print_error(message)
    if json_requested(sys.argv[1:]) and not _printed:
        problems = problems_of(exc) if exc is not None else None
        document = error_document(type_, message, exit_code, problems)
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        mark_printed()
