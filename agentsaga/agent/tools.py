"""The agent step's tools: their names, their JSON schemas, and what each does.

Every path a tool touches, reads included, goes through ``edits.confine_path``: no
absolute paths, no ``..``, nothing under ``.git`` or agentsaga's own state, no symlink out
of the workspace. ``run_command`` runs only what the step's ``commands:`` allow-list
admits (an exact argv prefix), without a shell, with the step's timeout. A tool never
raises for a mistake of the model's: the mistake is its result (``is_error``), which the
model reads and corrects.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentsaga.allowlist import prefix_of
from agentsaga.errors import EditError, EditPathError, StepFailed
from agentsaga.providers.base import ToolCall, ToolSpec
from agentsaga.steps import AGENT_TOOLS

#: A tool's result longer than this is cut in the middle: the model gets the start and the
#: end (a test run's summary is at its end), and the prompt stays bounded.
MAX_RESULT_CHARS = 16_000
MAX_READ_LINES = 2_000
MAX_SEARCH_HITS = 200
MAX_FILE_BYTES = 1_000_000
#: The whole of one search call; a model's pattern that backtracks without end is cut off.
SEARCH_TIMEOUT_S = 10.0
_WHERE = (
    "by a path relative to the workspace's root, not inside .git or agentsaga's own "
    "state (.agentsaga, .agentsaga.yml), not through '..' or a symlink that leads outside"
)
#: What a refused path's tool may reach, said after the refusal's reason.
_CONFINED = {
    "read_file": f"; readable: any file of the workspace, {_WHERE}",
    "edit_file": f"; editable: any text file of the workspace, {_WHERE}",
    "create_file": f"; creatable: a new file in the workspace, {_WHERE}",
}
DEFAULT_COMMAND_TIMEOUT_S = 600.0

READ_ONLY = frozenset({"read_file", "list_files", "search", "finish"})
ALL_TOOLS = AGENT_TOOLS


def _schema(props: dict[str, Any], required: Iterable[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(required),
        "additionalProperties": False,
    }


_STR = {"type": "string"}
_INT = {"type": "integer", "minimum": 1}

SPECS: dict[str, ToolSpec] = {
    "read_file": ToolSpec(
        "read_file",
        "Read a text file of the workspace, with line numbers. Optionally a line range.",
        _schema({"path": _STR, "start_line": _INT, "end_line": _INT}, ["path"]),
    ),
    "list_files": ToolSpec(
        "list_files",
        "List the workspace's files (not ignored ones) matching a glob such as "
        "'src/**/*.py'; '**' spans directories.",
        _schema({"glob": _STR}, ["glob"]),
    ),
    "search": ToolSpec(
        "search",
        "Search the workspace's files for a regular expression; answers path:line: text. "
        "Optionally only in files matching a glob.",
        _schema({"pattern": _STR, "glob": _STR}, ["pattern"]),
    ),
    "edit_file": ToolSpec(
        "edit_file",
        "Replace old_text with new_text in a file. old_text must occur exactly once: "
        "copy it from the file, whitespace included, with enough lines to be unique.",
        _schema(
            {"path": _STR, "old_text": _STR, "new_text": _STR}, ["path", "old_text", "new_text"]
        ),
    ),
    "create_file": ToolSpec(
        "create_file",
        "Create a file with the given content (or replace a whole existing file).",
        _schema({"path": _STR, "content": _STR}, ["path", "content"]),
    ),
    "run_command": ToolSpec(
        "run_command",
        "Run a command in the workspace, as a list of arguments (no shell). Only the "
        "commands the pipeline allows may run. Answers the exit code and the output's tail.",
        _schema({"argv": {"type": "array", "items": _STR, "minItems": 1}}, ["argv"]),
    ),
    "finish": ToolSpec(
        "finish",
        "Call when the task is done (or cannot be done), with a short summary of what "
        "you changed and why.",
        _schema({"summary": _STR}, ["summary"]),
    ),
}


def specs(names: Iterable[str]) -> list[ToolSpec]:
    return [SPECS[n] for n in names]


@dataclass
class ToolOutcome:
    content: str
    is_error: bool = False
    #: Files an edit or create wrote (relative paths).
    changed: tuple[str, ...] = ()
    #: A command ran: it may have changed files.
    ran_command: bool = False
    #: The summary, when the tool was ``finish``.
    finished: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "is_error": self.is_error,
            "changed": list(self.changed),
            "ran_command": self.ran_command,
            "finished": self.finished,
        }


class ToolArgumentError(Exception):
    pass


def parse_allow_list(entries: list[Any], variables: dict[str, Any]) -> list[list[str]]:
    """The ``commands:`` allow-list as argv prefixes (``allowlist.prefix_of``); an entry
    that comes out empty is dropped: an empty prefix would allow every argv."""
    return [argv for argv in (prefix_of(entry, variables) for entry in entries) if argv]


@dataclass
class Toolbox:
    root: Path
    uses_git: bool
    allowed: list[list[str]]
    env: dict[str, str]
    log_dir: Path
    enabled: frozenset[str] = frozenset(ALL_TOOLS)
    timeout_s: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def run(self, call: ToolCall, idempotency_key: str, log_name: str) -> ToolOutcome:
        """Carry out one tool call. The model's mistakes come back as error results."""
        if call.name not in SPECS or call.name not in self.enabled:
            names = ", ".join(n for n in ALL_TOOLS if n in self.enabled)
            return ToolOutcome(f"unknown tool {call.name!r}; the tools are: {names}", True)
        args = call.arguments
        if "_invalid_arguments" in args:
            return ToolOutcome(
                f"the arguments were not a JSON object: {str(args['_invalid_arguments'])[:300]}",
                True,
            )
        try:
            if call.name == "run_command":
                return self._run_command(args, idempotency_key, log_name)
            outcome: ToolOutcome = getattr(self, "_" + call.name)(args)
            return outcome
        except ToolArgumentError as exc:
            return ToolOutcome(f"{call.name}: {exc}", True)
        except EditPathError as exc:
            allowed = _CONFINED.get(call.name, "")
            return ToolOutcome(f"{call.name}: path refused: {exc.reason}{allowed}", True)

    # --- reading --------------------------------------------------------------------------

    def _path(
        self, args: dict[str, Any], key: str = "path", reading: bool = False
    ) -> tuple[str, Path]:
        from agentsaga.edits import confine_path

        rel = _arg(args, key, str)
        target = confine_path(self.root, rel, reading)
        return target.relative_to(self.root.resolve()).as_posix(), target

    def _read_file(self, args: dict[str, Any]) -> ToolOutcome:
        rel, target = self._path(args, reading=True)
        text = _read_text(target, rel)
        lines = text.splitlines()
        start = _line_number(args, "start_line", 1)
        end = _line_number(args, "end_line", len(lines))
        if start < 1 or end < start - 1:
            raise ToolArgumentError(f"bad line range {start}-{end}")
        end = min(end, len(lines), start + MAX_READ_LINES - 1)
        shown = [f"{n:6d}\t{lines[n - 1]}" for n in range(start, end + 1)]
        more = len(lines) - end
        tail = f"\n... {more} more line(s); read on with start_line={end + 1}" if more > 0 else ""
        header = f"{rel} ({len(lines)} lines)\n"
        return ToolOutcome(header + "\n".join(shown) + tail)

    def _files(self, glob: str | None) -> list[str]:
        from agentsaga.steps.read import _relative, glob_regex, list_files

        paths = list_files(self.root, self.uses_git)
        if glob:
            pattern = glob_regex(_relative(glob))
            paths = [p for p in paths if pattern.match(p)]
        return paths

    def _list_files(self, args: dict[str, Any]) -> ToolOutcome:
        glob = _arg(args, "glob", str)
        paths = self._files(glob)
        if not paths:
            return ToolOutcome(f"no file matches {glob!r}")
        return ToolOutcome("\n".join(paths))

    def _search(self, args: dict[str, Any]) -> ToolOutcome:
        pattern = _arg(args, "pattern", str)
        glob = args.get("glob")
        import regex as regex_module  # the re dialect, with a timeout (tiktoken needs it too)

        try:
            regex = regex_module.compile(pattern)
        except (regex_module.error, ValueError) as exc:
            raise ToolArgumentError(f"not a valid regular expression: {exc}") from None
        # The model writes the pattern: a catastrophic one ("(a+)+$") must not hang the step.
        deadline = time.monotonic() + SEARCH_TIMEOUT_S
        hits: list[str] = []
        total = 0
        from agentsaga.edits import confine_path

        for rel in self._files(str(glob) if glob else None):
            try:
                # A tracked symlink may lead outside the workspace or into .git: search
                # reads through the same confinement as read_file, or not at all.
                path = confine_path(self.root, rel)
                if path.stat().st_size > MAX_FILE_BYTES:
                    continue
                data = path.read_bytes()
            except (OSError, EditPathError):
                continue
            if b"\0" in data[:8192]:
                continue
            for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
                try:
                    found = regex.search(line, timeout=max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    raise ToolArgumentError(
                        f"the pattern took longer than {SEARCH_TIMEOUT_S:g} s (catastrophic "
                        "backtracking?); simplify it"
                    ) from None
                if found:
                    total += 1
                    if len(hits) < MAX_SEARCH_HITS:
                        hits.append(f"{rel}:{n}: {line[:300]}")
        if not hits:
            return ToolOutcome(f"no match for {pattern!r}")
        more = f"\n... {total - len(hits)} more match(es)" if total > len(hits) else ""
        return ToolOutcome("\n".join(hits) + more)

    # --- writing --------------------------------------------------------------------------

    def _edit_file(self, args: dict[str, Any]) -> ToolOutcome:
        from agentsaga.edits import EditBlock, EditPlan, apply_plan, describe_failures, plan_edits

        rel, target = self._path(args)
        old, new = _arg(args, "old_text", str), _arg(args, "new_text", str)
        if not old:
            raise ToolArgumentError("old_text is empty; use create_file to write a new file")
        if not target.is_file():
            raise ToolArgumentError(f"{rel} does not exist; use create_file to make it")
        text = _read_text(target, rel)
        count = text.count(old)
        if count > 1:
            raise ToolArgumentError(
                f"old_text occurs {count} times in {rel}; include more surrounding lines "
                "so that it matches exactly one place"
            )
        if count == 1:
            plan = EditPlan(new_contents={rel: text.replace(old, new, 1)})
        else:
            # Not verbatim: try the edit blocks' line match, which forgives indentation
            # drift and answers with the closest existing lines when nothing matches.
            block = EditBlock(rel, _as_lines(old), _as_lines(new), 0, 1)
            plan = plan_edits(self.root, [block])
            if plan.failures:
                raise ToolArgumentError(_edit_failure(describe_failures(plan)))
        try:
            changed = apply_plan(self.root, plan)
        except EditError as exc:
            raise ToolArgumentError(exc.message) from None
        return ToolOutcome(f"edited {rel}", changed=tuple(changed) or (rel,))

    def _create_file(self, args: dict[str, Any]) -> ToolOutcome:
        from agentsaga.edits import EditPlan, apply_plan

        rel, target = self._path(args)
        content = _arg(args, "content", str)
        if target.is_dir():
            raise ToolArgumentError(f"{rel} is a directory")
        existed = target.exists()
        try:
            apply_plan(self.root, EditPlan(new_contents={rel: content}))
        except EditError as exc:
            raise ToolArgumentError(exc.message) from None
        verb = "replaced" if existed else "created"
        return ToolOutcome(f"{verb} {rel} ({len(content.splitlines())} lines)", changed=(rel,))

    # --- commands -------------------------------------------------------------------------

    def allows(self, argv: list[str]) -> bool:
        # Element by element and exact: no basename, PATH or case folding, so
        # ./python3, /tmp/x/python3 or python3.11 never pass for an entry python3.
        return any(argv[: len(prefix)] == prefix for prefix in self.allowed)

    def _run_command(self, args: dict[str, Any], key: str, log_name: str) -> ToolOutcome:
        from agentsaga.process import run_command

        raw = args.get("argv")
        if isinstance(raw, str):
            try:
                raw = shlex.split(raw)  # lenient: models sometimes send one string
            except ValueError as exc:
                raise ToolArgumentError(f"argv: {exc}; give a list of strings") from None
        if not isinstance(raw, list) or not raw or not all(isinstance(a, str) for a in raw):
            raise ToolArgumentError("argv must be a non-empty list of strings")
        argv = [str(a) for a in raw]
        if not self.allows(argv):
            allowed = "; ".join(shlex.join(p) for p in self.allowed) or "(none)"
            return ToolOutcome(
                f"refused: {shlex.join(argv)} is not allowed here. The pipeline allows "
                f"commands starting with: {allowed}",
                True,
            )
        env = {**self.env, "AGENTSAGA_IDEMPOTENCY_KEY": key}
        try:
            result = run_command(
                argv,
                cwd=self.root,
                env=env,
                log_stem=self.log_dir / log_name,
                timeout_s=self.timeout_s or DEFAULT_COMMAND_TIMEOUT_S,
                cancel=self.cancel,
            )
        except StepFailed as exc:
            # The model's argv cannot be run (a NUL byte, an argument over 128 KiB): the
            # model is told, as for any refusal; the step goes on.
            return ToolOutcome(f"run_command: {exc}", True)
        status = "timed out" if result.timed_out else f"exit code {result.exit_code}"
        body = [f"$ {shlex.join(argv)}", status]
        if result.stdout_tail.strip():
            body.append("stdout:\n" + result.stdout_tail.rstrip())
        if result.stderr_tail.strip():
            body.append("stderr:\n" + result.stderr_tail.rstrip())
        failed = result.timed_out or result.exit_code != 0
        return ToolOutcome("\n".join(body), is_error=failed, ran_command=True)

    def _finish(self, args: dict[str, Any]) -> ToolOutcome:
        summary = _arg(args, "summary", str)
        return ToolOutcome("finished", finished=summary)


def _arg(args: dict[str, Any], name: str, kind: type) -> Any:
    if name not in args:
        raise ToolArgumentError(f"missing argument {name!r}")
    value = args[name]
    if not isinstance(value, kind):
        raise ToolArgumentError(f"argument {name!r} must be a {kind.__name__}")
    return value


def _line_number(args: dict[str, Any], name: str, default: int) -> int:
    """A line number the model gave (an int, or a string of one), else ``default``."""
    value = args.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise ToolArgumentError(f"argument {name!r} must be a line number, not {value!r}") from None


def _read_text(target: Path, rel: str) -> str:
    if not target.is_file():
        raise ToolArgumentError(f"{rel} does not exist (or is not a file)")
    if target.stat().st_size > MAX_FILE_BYTES:
        raise ToolArgumentError(f"{rel} is over {MAX_FILE_BYTES:,} bytes; search it instead")
    data = target.read_bytes()
    if b"\0" in data[:8192]:
        raise ToolArgumentError(f"{rel} is a binary file")
    return data.decode("utf-8", "replace")


def _as_lines(text: str) -> str:
    text = text.replace("\r\n", "\n")
    return text if not text or text.endswith("\n") else text + "\n"


def _edit_failure(described: str) -> str:
    # describe_failures speaks of numbered blocks and SEARCH sections; say it in the tool's
    # own terms. Its first part is the count, its last the "send again" advice.
    parts = described.split("\n\n")
    middle = "\n\n".join(parts[1:-1]) if len(parts) > 2 else described
    middle = re.sub(r"^Block 1 \(([^,]*), reply line \d+\): ", r"\1: ", middle)
    return (
        middle.replace("The SEARCH lines are", "old_text is")
        .replace("The SEARCH lines occur", "old_text occurs")
        .replace("The SEARCH section must", "old_text must")
        .replace("SEARCH", "old_text")
    )


def clip(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    """``text`` cut in the middle to ``limit`` characters, saying how much went."""
    if len(text) <= limit:
        return text
    half = limit // 2
    cut = len(text) - 2 * half
    return f"{text[:half]}\n... [{cut:,} characters cut] ...\n{text[-half:]}"


def canonical(name: str, arguments: dict[str, Any]) -> str:
    return name + json.dumps(arguments, sort_keys=True, ensure_ascii=False)
