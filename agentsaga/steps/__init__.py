"""The registry of step kinds, keyed by ``kind:``.

A kind declares its fields (validated when the pipeline loads), its output fields (so a
reference to ``steps.x.output.nope`` is a load error) and where its implementation lives.
The implementation module is imported only when a step of that kind runs, so loading a
pipeline never imports an SDK, tiktoken or git.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentsaga.schema import BOOL, INT, NUM, STR, AnyValue, Enum, ListOf, Obj, OneOf, Type

if TYPE_CHECKING:
    from agentsaga.context import StepContext

#: The agent step's tools (``agentsaga.agent.tools`` implements them; named here so that
#: loading a pipeline does not import them).
AGENT_TOOLS = (
    "read_file",
    "list_files",
    "search",
    "edit_file",
    "create_file",
    "run_command",
    "finish",
)
COMMAND = OneOf(STR, ListOf(STR), label="a command: a string (run by bash) or a list (argv)")
REPLIES = ListOf(AnyValue())

LLM_FIELDS: dict[str, Type] = {
    "prompt": STR,
    "system": STR,
    "provider": STR,
    "model": STR,
    "max_tokens": INT,
    "temperature": NUM,
    "replies": REPLIES,  # scripted provider: canned replies for this step, in order
    "cache": BOOL,
}

#: Fields whose strings are commands: rendered with shell quoting (string) or one
#: argument per element (list).
COMMAND_FIELDS = frozenset({"run"})


@dataclass(frozen=True)
class KindSpec:
    name: str
    fields: dict[str, Type]
    required: tuple[str, ...]
    outputs: frozenset[str]
    module: str
    #: Whether the step may change the workspace: the engine snapshots before it.
    changes_workspace: bool
    description: str

    def executor(self) -> Callable[[StepContext], dict[str, Any]]:
        # Imported on first use; then found in sys.modules without the import machinery.
        module = sys.modules.get(self.module) or importlib.import_module(self.module)
        execute: Callable[[StepContext], dict[str, Any]] = module.execute
        return execute


#: A gate's fields; its ``timeout`` is the common step field (the time to decide).
APPROVE_FIELDS: dict[str, Type] = {
    "message": STR,
    "show": STR,
    "on_reject": OneOf(
        Enum("rollback"),
        Obj({"rewind_to": STR, "max_rejects": INT}, required=("rewind_to",)),
        label="rollback, or {rewind_to: STEP, max_rejects: N}",
    ),
    "on_timeout": Enum("reject", "rollback", "wait"),
}

_COMMAND_OUTPUTS = frozenset({"exit_code", "stdout", "stderr", "json", "commit", "base"})

KINDS: dict[str, KindSpec] = {
    "plan": KindSpec(
        "plan",
        {**LLM_FIELDS, "schema": AnyValue()},
        ("prompt",),
        frozenset({"text", "json"}),
        "agentsaga.steps.plan",
        False,
        "one LLM call; output text, and json when the reply is JSON",
    ),
    "read": KindSpec(
        "read",
        {
            "files": ListOf(STR),
            "exclude": ListOf(STR),
            "max_tokens": INT,
            "max_file_bytes": INT,
        },
        ("files",),
        frozenset({"files", "paths", "tokens", "skipped", "cut"}),
        "agentsaga.steps.read",
        False,
        "gathers files by glob into context, counted with tiktoken",
    ),
    "write": KindSpec(
        "write",
        {**LLM_FIELDS, "max_reflections": INT},
        ("prompt",),
        frozenset({"commit", "base", "changed", "diffstat", "blocks_applied", "text"}),
        "agentsaga.steps.write",
        True,
        "LLM edit blocks applied in the repo and committed on the run branch",
    ),
    "agent": KindSpec(
        "agent",
        {
            **LLM_FIELDS,
            "max_turns": INT,
            "tools": ListOf(Enum(*AGENT_TOOLS)),
            "commands": ListOf(COMMAND),
        },
        ("prompt",),
        frozenset({"summary", "turns", "changed", "commit", "base", "diffstat"}),
        "agentsaga.agent.loop",
        True,
        "a tool-use loop (read, search, edit, run allowed commands, finish), checkpointed "
        "turn by turn and committed on the run branch",
    ),
    "external": KindSpec(
        "external",
        {"run": COMMAND, "format": Enum("claude-code", "codex"), "model": STR},
        ("run",),
        frozenset(
            {"summary", "turns", "session_id", "exit_code", "changed", "commit", "base", "diffstat"}
        ),
        "agentsaga.agent.external",
        True,
        "an agent CLI (Claude Code, Codex) run non-interactively in the workspace; its "
        "token usage goes into the ledger, its changes are committed",
    ),
    "test": KindSpec(
        "test",
        {"run": COMMAND},
        ("run",),
        frozenset(
            {
                "exit_code",
                "passed",
                "stdout",
                "stderr",
                "summary",
                "failure_class",
                "failures",
                "json",
            }
        ),
        "agentsaga.steps.command",
        True,
        "runs a test command; non-zero exit fails the step",
    ),
    "shell": KindSpec(
        "shell",
        {"run": COMMAND},
        ("run",),
        _COMMAND_OUTPUTS,
        "agentsaga.steps.command",
        True,
        "runs a command",
    ),
    "deploy": KindSpec(
        "deploy",
        {"run": COMMAND},
        ("run",),
        _COMMAND_OUTPUTS,
        "agentsaga.steps.command",
        True,
        "runs a deploy command (give it a compensate: run: revert)",
    ),
    "approve": KindSpec(
        "approve",
        APPROVE_FIELDS,
        (),
        frozenset({"message", "show", "decision", "by", "comment", "at"}),
        "agentsaga.steps.approve",
        False,
        "a human gate: the run waits for 'agentsaga approve' or 'agentsaga reject'",
    ),
}
