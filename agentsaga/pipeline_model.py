"""The pipeline format: its schema declarations (checked by ``schema.py``'s types) and the
typed model a loaded pipeline becomes (:class:`Pipeline`, :class:`Step` and their parts),
plus the format as JSON Schema for editors. Loading and validating a file is
``pipeline.py``'s job; this module only says what a valid pipeline is and holds one.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from agentsaga.schema import (
    BOOL,
    INT,
    NUM,
    SCALAR,
    STR,
    Deferred,
    Duration,
    Enum,
    ListOf,
    MapOf,
    Obj,
    OneOf,
    Type,
)
from agentsaga.steps import COMMAND, KINDS

RETRY = Obj(
    {"attempts": INT, "backoff": Duration(), "max_backoff": Duration()},
    docs={"attempts": "total tries, the first included", "backoff": "first delay; doubles"},
)
STEP_BUDGET = Obj({"max_tokens": INT, "max_cost_usd": NUM})
FAILURE_CLASSES = ("any", "assertion", "infrastructure", "error", "timeout", "edit")
ON_FAILURE = Obj(
    {
        "rewind_to": STR,
        "max_rewinds": INT,
        "when": Enum(*FAILURE_CLASSES),
    },
    required=("rewind_to",),
)
GIT_COMPENSATIONS = ("reset", "delete-branch", "revert")
COMPENSATE = Obj(
    {
        "git": Enum(*GIT_COMPENSATIONS),
        "run": COMMAND,
        "env": MapOf(SCALAR),
        "retry": RETRY,
        "timeout": Duration(),
    },
    description="how to undo this step: a git action or a command",
)
COMMON_STEP_FIELDS: dict[str, Type] = {
    "id": STR,
    "kind": Enum(*KINDS),
    "name": STR,
    "description": STR,
    "if": STR,
    "env": MapOf(SCALAR),
    "retry": RETRY,
    "timeout": Duration(),
    "on_failure": ON_FAILURE,
    "compensate": COMPENSATE,
    "irreversible": BOOL,
    "commit": BOOL,
    "budget": STEP_BUDGET,
}
#: A var's value, or its declaration: ``task: {required: true, description: ...}`` makes
#: ``--var task=...`` mandatory; ``default`` gives the value when none is passed.
VAR = OneOf(
    SCALAR,
    Obj({"required": BOOL, "default": SCALAR, "description": STR}),
    label="a value, or {required, default, description}",
)
TOP = Obj(
    {
        "name": STR,
        "description": STR,
        "vars": MapOf(VAR),
        "env": MapOf(SCALAR),
        "defaults": Obj(
            {
                "provider": STR,
                "model": STR,
                "retry": RETRY,
                "timeout": Duration(),
                "max_tokens": INT,
                "temperature": NUM,
            }
        ),
        "budget": Obj({"max_tokens": INT, "max_cost_usd": NUM}),
        "workspace": Obj(
            {
                "repo": STR,
                "branch": STR,
                "isolation": Enum("worktree", "branch", "none"),
                # A git URL shared by workers on many hosts (runners/temporal_git.py).
                "remote": STR,
                # Gitignored files copied into a new worktree, and a command run once there
                # (checkout.py).
                "include": ListOf(STR),
                "setup": OneOf(STR, ListOf(STR), label="a command: a string or a list (argv)"),
                # Where a run over a checkout with uncommitted changes starts from.
                "start": Enum("head", "worktree"),
                # Recycle rolled-back worktrees for later runs (gitops/pool.py).
                "pool": BOOL,
            }
        ),
        "on_failure": Enum("stop", "rollback"),
        "on_compensation_failure": Enum("halt", "continue"),
        "steps": ListOf(Deferred()),  # each step is checked against its kind below
    },
    required=("name", "steps"),
)
NAMESPACES = ("vars", "run", "env", "steps", "rewind")
RUN_FIELDS = ("id", "branch", "base", "workspace", "name", "parent")
STEP_REF_FIELDS = ("output", "error", "status", "usage", "attempt")
REWIND_FIELDS = ("count", "from", "error")


@dataclass(frozen=True)
class RetrySpec:
    attempts: int = 1
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0

    @classmethod
    def from_raw(cls, raw: dict[str, Any] | None, default: RetrySpec | None = None) -> RetrySpec:
        base = default or cls()
        if not raw:
            return base
        return cls(
            attempts=max(1, int(raw.get("attempts", base.attempts))),
            backoff_s=float(raw.get("backoff", base.backoff_s)),
            max_backoff_s=float(raw.get("max_backoff", base.max_backoff_s)),
        )


@dataclass(frozen=True)
class OnFailure:
    rewind_to: str
    max_rewinds: int = 2
    when: str = "any"


@dataclass(frozen=True)
class Compensation:
    git: str | None = None
    run: str | list[str] | None = None
    env: dict[str, Any] = field(default_factory=dict)
    retry: RetrySpec = RetrySpec()
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class Step:
    id: str
    kind: str
    index: int
    raw: dict[str, Any]  # the whole step as written: its fingerprint's definition part
    if_: str | None = None
    env: dict[str, Any] = field(default_factory=dict)
    retry: RetrySpec = RetrySpec()
    timeout_s: float | None = None
    on_failure: OnFailure | None = None
    compensate: Compensation | None = None
    irreversible: bool = False
    commit: bool = False
    budget: dict[str, Any] = field(default_factory=dict)

    @property
    def fields(self) -> dict[str, Any]:
        """The kind's own fields, unrendered: taken from ``raw`` when asked (a second
        dict per step was a fifth of a long pipeline's memory)."""
        own = KINDS[self.kind].fields
        return {k: v for k, v in self.raw.items() if k in own}

    @property
    def definition_hash(self) -> str:
        return self.definition()[0]

    def definition(self) -> tuple[str, bool]:
        """The hash of what the step is, and whether any of it holds an expression."""
        blob = json.dumps(self.raw, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16], "${{" in blob

    @property
    def changes_workspace(self) -> bool:
        return KINDS[self.kind].changes_workspace or self.compensate is not None


@dataclass(frozen=True)
class Pipeline:
    name: str
    steps: tuple[Step, ...]
    text: str
    path: str
    description: str = ""
    vars: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    workspace: dict[str, Any] = field(default_factory=dict)
    on_failure: str = "stop"
    on_compensation_failure: str = "halt"
    #: Not errors, but probably not what was meant (``{{ x }}`` without ``$``; a required
    #: var left unset by ``validate``), as ``file:line:col: message``.
    warnings: tuple[str, ...] = ()

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def index_of(self, step_id: str) -> int:
        return self.step(step_id).index


#: libyaml's composer when PyYAML was built with it: the same nodes and marks, ~3x faster


@functools.cache
def _step_type(kind: str) -> Obj:
    """The schema of a step of ``kind``: built once, not once per step."""
    spec = KINDS[kind]
    return Obj({**COMMON_STEP_FIELDS, **spec.fields}, required=("id", "kind", *spec.required))


def json_schema() -> dict[str, Any]:
    """The pipeline format as JSON Schema (for yaml-language-server and other editors)."""
    schema = TOP.json_schema()
    variants = []
    for name, spec in KINDS.items():
        variant = _step_type(name).json_schema()
        variant["properties"]["kind"] = {"const": name, "description": spec.description}
        variants.append({"if": {"properties": {"kind": {"const": name}}}, "then": variant})
    schema["properties"]["steps"] = {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "required": ["id", "kind"],
            "properties": {"kind": {"enum": list(KINDS)}},
            "allOf": variants,
        },
    }
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "agentsaga pipeline"
    return schema
