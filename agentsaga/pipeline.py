"""Pipeline YAML -> a typed model, with every error located as ``file:line:col``.

Loading happens in three passes over PyYAML's composed node tree (nodes keep their marks,
so every error knows where it is): the schema pass checks keys and types
(``schema.py``), the model pass builds dataclasses, and the reference pass parses every
``${{ }}`` and checks that it names something that will exist when it is evaluated: a
declared var, an earlier step, a field that step's kind outputs. All of it runs before a
single token is spent. The schema declarations and the dataclasses it builds live in
``pipeline_model.py``; they are re-exported here.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from agentsaga import expressions, yaml_nodes
from agentsaga.errors import ConfigError, ExpressionError, PipelineError, combine
from agentsaga.pipeline_model import (
    COMMON_STEP_FIELDS,
    COMPENSATE,
    FAILURE_CLASSES,
    GIT_COMPENSATIONS,
    NAMESPACES,
    ON_FAILURE,
    RETRY,
    REWIND_FIELDS,
    RUN_FIELDS,
    STEP_BUDGET,
    STEP_REF_FIELDS,
    TOP,
    VAR,
    Compensation,
    OnFailure,
    Pipeline,
    RetrySpec,
    Step,
    _step_type,
    json_schema,
)
from agentsaga.schema import (
    BOOL,
    STR,
    MapOf,
    Obj,
    SchemaViolation,
    Type,
    did_you_mean,
)
from agentsaga.step_stream import (
    PLACEHOLDER,
    Restart,
    defaults_after_steps,
    drain,
    for_references,
)
from agentsaga.steps import KINDS
from agentsaga.yaml_nodes import MappingNode, Node, ScalarNode, SequenceNode

#: ``{{ x }}`` not preceded by ``$`` (nor by another ``{``: ``${{{{`` is no concern here).
_BARE_BRACES = re.compile(r"(?<![${])\{\{([^{}]*)\}\}")
#: The ``env`` and ``budget`` of the many steps that set none: one shared empty mapping
#: (never changed: a Step is frozen), not two new dicts a step.
_NOTHING: dict[str, Any] = {}
#: The YAML library's words for a block whose lines do not line up.
_INDENTATION_PROBLEMS = (
    "mapping values are not allowed here",
    "did not find expected key",
    "did not find expected '-' indicator",
    "expected <block end>",
    "could not find expected ':'",
)


def load_file(
    path: str | Path, overrides: dict[str, str] | None = None, require_vars: bool = True
) -> Pipeline:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineError(str(path), 1, 1, f"cannot read the pipeline: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise PipelineError(str(path), 1, 1, "the pipeline is not UTF-8 text") from exc
    return load_text(text, str(path), overrides, require_vars=require_vars)


def load_text(
    text: str,
    path: str = "<pipeline>",
    overrides: dict[str, str] | None = None,
    ignore_undeclared: bool = False,
    checked: bool = False,
    require_vars: bool = True,
) -> Pipeline:
    """Parse and check a pipeline; ``overrides`` are ``--var`` values (must be declared,
    unless ``ignore_undeclared``: a run's stored vars applied to a changed pipeline). A
    required var without a value is an error, or with ``require_vars=False``
    (``validate``) a warning."""
    # A long pipeline's node tree is tens of thousands of new objects and no cycle: the
    # cyclic collector, triggered by the allocations, cost up to a third of the load
    # (more at 10,000 steps: each full pass walks every object). Paused for the parse.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load_text(text, path, overrides, ignore_undeclared, checked, require_vars)
    finally:
        if collecting:
            gc.enable()


def _load_text(
    text: str,
    path: str,
    overrides: dict[str, str] | None,
    ignore_undeclared: bool,
    checked: bool,
    require_vars: bool = True,
) -> Pipeline:
    from agentsaga import yaml_aliases

    yaml_aliases.check(text, path)

    def new_loader() -> _Loader:
        loader = _Loader(path, text)
        loader.ignore_undeclared = ignore_undeclared
        loader.require_vars = require_vars
        # A run's stored text passed every reference check when the run began.
        loader.check_refs = not checked
        return loader

    loader = new_loader()
    try:
        try:
            # Each step is built as it is composed and its node let go: a long pipeline's
            # tree is never whole (its peak memory was the tree's).
            root = yaml_nodes.compose(text, each=loader.stream_step)
            if loader.streamed and defaults_after_steps(root):
                raise Restart
        except Restart:
            loader = new_loader()  # from the whole tree, as the steps need
            root = yaml_nodes.compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context_mark is not None and "end of stream" in problem:
            # An unclosed quote or bracket: the end of the file is not where to look.
            end = exc.problem_mark
            problem = f"{exc.context}: {problem}" + (f" at line {end.line + 1}" if end else "")
            mark = exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        hint = _indentation_hint(text, line, col, problem)
        if hint is not None:
            line, col, problem = hint
            raise PipelineError(path, line, col, problem) from exc
        raise PipelineError(path, line, col, f"YAML syntax error: {problem}") from exc
    except yaml.YAMLError as exc:
        raise PipelineError(path, 1, 1, f"YAML error: {exc}") from exc
    except RecursionError:
        raise PipelineError(path, 1, 1, "the YAML is nested too deeply to be a pipeline") from None
    if root is None:
        raise PipelineError(path, 1, 1, "the pipeline is empty; it needs a name and steps")
    try:
        return loader.load(root, overrides or {})
    except yaml.MarkedYAMLError as exc:
        # A tag such as `!run` is refused by the safe constructor while types are checked.
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise PipelineError(path, line, col, f"YAML error: {problem}") from None
    except RecursionError:
        raise PipelineError(path, 1, 1, "the YAML is nested too deeply to be a pipeline") from None


def _indentation_hint(text: str, line: int, col: int, problem: str) -> tuple[int, int, str] | None:
    """A mis-indented line, said as such: the YAML library reports where its parser gave
    up ("mapping values are not allowed here"), which is rarely where the mistake is. Find
    the nearest line at or above the error whose indentation lines up with no block above
    it. ``None`` when the problem is something else (the library's words then stand)."""
    if not any(problem.startswith(p) for p in _INDENTATION_PROBLEMS):
        return None
    lines = text.splitlines()
    last = min(line, len(lines))
    if last < 1:
        return None
    if problem.startswith("mapping values") and ": " in lines[last - 1].split(": ", 1)[-1]:
        return (
            last,
            col,
            "this value holds ': ', which YAML reads as a nested mapping: quote the value "
            '(key: "a: b") or indent a block under the key',
        )

    def indent(n: int) -> int:
        row = lines[n - 1]
        return len(row) - len(row.lstrip(" "))

    def content(n: int) -> bool:
        row = lines[n - 1].strip()
        return bool(row) and not row.startswith("#")

    candidates = [n for n in range(1, last + 1) if content(n)]
    for n in reversed(candidates):
        above = [m for m in candidates if m < n]
        if not above:
            return None
        prev = above[-1]
        if lines[prev - 1].rstrip().endswith(":") and indent(n) > indent(prev):
            continue  # the first line of a block opened just above
        levels = {indent(m) for m in above}
        levels |= {indent(m) + 2 for m in above if lines[m - 1].lstrip().startswith("- ")}
        if indent(n) in levels:
            continue
        closest = min(levels, key=lambda level: abs(level - indent(n)))
        return (
            n,
            indent(n) + 1,
            f"line {n} is mis-indented: it starts at column {indent(n) + 1}, but the block it "
            f"belongs to starts at column {closest + 1}; YAML nests by indentation, so align it "
            "with the keys it belongs with (spaces, not tabs)",
        )
    return None


class _Loader:
    def __init__(self, path: str, text: str) -> None:
        self.path, self.text = path, text
        self.ignore_undeclared = False
        self.require_vars = True
        self.check_refs = True
        #: False when the ``vars`` section is broken: references to vars are then not
        #: checked (every one would be reported as unknown).
        self.vars_known = True
        self.warnings: list[str] = []
        # The steps as they are loaded (see take_step), and whether the composer handed
        # them over one by one (stream_step).
        self.steps: list[Step] = []
        self.step_nodes: list[Node] = []
        self.step_errors: list[PipelineError] = []
        self.seen: dict[str, int] = {}  # id -> the line that defines it
        self.streamed = False
        self.stream_defaults: dict[str, Any] = {}
        self.stream_retry = RetrySpec()

    @functools.cached_property
    def lines(self) -> list[str]:
        """The text's lines, split when an error or a warning needs them (30,000 strings
        for a 10,000-step pipeline that has neither)."""
        return self.text.splitlines()

    def error(self, node: Node, problem: str) -> PipelineError:
        mark = node.start_mark
        return PipelineError(self.path, mark.line + 1, mark.column + 1, problem)

    def check(self, typ: Type, node: Node) -> Any:
        try:
            return typ.check(node)
        except SchemaViolation as exc:
            raise self.error(exc.node, exc.problem) from None

    def load(self, root: Node, overrides: dict[str, str]) -> Pipeline:
        # Every problem in the file is collected, top-level keys and steps alike, and
        # reported at once in file order: one validate shows them all.
        errors: list[PipelineError] = []
        top = self.check_top(root, errors)
        top_nodes = _children(root)
        defaults = top.get("defaults", {})
        default_retry = RetrySpec.from_raw(defaults.get("retry"))
        steps_node = top_nodes.get("steps")
        step_values = steps_node.value if isinstance(steps_node, SequenceNode) else []
        if "steps" in top and not step_values:
            assert steps_node is not None
            errors.append(self.error(steps_node, "a pipeline needs at least one step"))
        if "steps" in top:
            top["steps"] = []  # the nodes drained below: not kept a second time
        if self.streamed:
            step_values.clear()  # placeholders: the steps were built as they were composed
        for index, node in enumerate(drain(step_values)):
            self.take_step(node, index, default_retry, defaults)
        steps, step_nodes = self.steps, self.step_nodes
        errors += self.step_errors
        steps_ok = not self.step_errors and "steps" in top
        self.vars_known = "vars" in top or "vars" not in top_nodes
        declared = top.get("vars", {})
        try:
            vars_ = self.resolve_vars(declared, overrides, top_nodes.get("vars"))
        except ConfigError:
            if not errors:
                raise
            # The file's own errors come first (fix them, then --var): read on without it.
            self.ignore_undeclared, self.require_vars = True, False
            vars_ = self.resolve_vars(declared, overrides, top_nodes.get("vars"))
        if self.check_refs and not errors:
            self.warn_about_braces()
        pipeline = Pipeline(
            name=top.get("name", ""),
            steps=tuple(steps),
            text=self.text,
            path=self.path,
            description=top.get("description", ""),
            vars=vars_,
            env=top.get("env", {}),
            defaults=defaults,
            budget=top.get("budget", {}),
            workspace=top.get("workspace", {}),
            on_failure=top.get("on_failure", "stop"),
            on_compensation_failure=top.get("on_compensation_failure", "halt"),
        )
        if self.check_refs and steps_ok:
            # References are checked beside top-level errors (they are independent), not
            # beside broken steps (a reference to a step that failed to load would be noise).
            errors += self.check_references(pipeline, root, step_nodes)
        if errors:
            raise combine(errors)
        if self.warnings:
            pipeline = dataclasses.replace(pipeline, warnings=tuple(self.warnings))
        return pipeline

    def check_top(self, root: Node, errors: list[PipelineError]) -> dict[str, Any]:
        """The top-level keys, and the keys of each section (``defaults``, ``vars``,
        ``workspace``...), each checked on its own: a bad key is reported and left out, and
        the others are still checked (``TOP.check`` would stop at the first). A section
        with an error is left out whole."""
        if not isinstance(root, MappingNode):
            return dict(self.check(TOP, root))  # not a mapping: one error says it all
        return self.check_each(TOP, root, errors, depth=2)

    def check_each(
        self, typ: Obj | MapOf, node: MappingNode, errors: list[PipelineError], depth: int
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        seen: set[str] = set()
        for key_node, value_node in node.value:
            before = len(errors)
            try:
                key = STR.check(key_node)
                if key in seen:
                    raise SchemaViolation(key_node, f"duplicate key {key!r}")
                seen.add(key)
                field = typ.fields.get(key) if isinstance(typ, Obj) else typ.value
                if field is None:
                    known = sorted(typ.fields) if isinstance(typ, Obj) else []
                    hint = did_you_mean(key, known) or f"; expected one of {', '.join(known)}"
                    raise SchemaViolation(key_node, f"unknown key {key!r}{hint}")
                if depth > 1 and isinstance(field, Obj | MapOf):
                    if isinstance(value_node, MappingNode):
                        value = self.check_each(field, value_node, errors, depth - 1)
                        if len(errors) == before:
                            result[key] = value
                        continue
                result[key] = field.check(value_node)
            except SchemaViolation as exc:
                errors.append(self.error(exc.node, exc.problem))
        for name in typ.required if isinstance(typ, Obj) else ():
            if name not in seen:
                errors.append(self.error(node, f"missing required key {name!r}"))
        return result

    def resolve_vars(
        self, declared: dict[str, Any], overrides: dict[str, str], node: Node | None
    ) -> dict[str, Any]:
        """Declared values, then ``--var`` values; a required var must get one. ``--var``
        problems are about the command line, so they say ``--var``, not a file position."""
        values: dict[str, Any] = {}
        required: dict[str, str] = {}
        for name, spec in declared.items():
            if isinstance(spec, dict):
                values[name] = spec.get("default", "")
                if spec.get("required") and "default" not in spec:
                    required[name] = str(spec.get("description") or "")
            else:
                values[name] = spec
        for key, value in overrides.items():
            if key not in values and self.ignore_undeclared:
                continue
            if key not in values:
                known = ", ".join(sorted(values)) or "none are declared"
                raise ConfigError(
                    f"command line: --var {key}=...: {self.path} declares no var {key!r} "
                    f"(declared: {known}){did_you_mean(key, list(values))}"
                )
            values[key] = value
            required.pop(key, None)
        if required and not self.check_refs:
            return values  # a stored run's pipeline: its vars were given when it began
        for name, description in required.items():
            what = f" ({description})" if description else ""
            message = f"var {name!r} is required{what}: pass --var {name}=..."
            if self.require_vars:
                raise ConfigError(f"command line: {message}")
            where = _children(node)[name].start_mark if node is not None else None
            line, col = (where.line + 1, where.column + 1) if where else (1, 1)
            self.warnings.append(f"{self.path}:{line}:{col}: {message}")
        return values

    def warn_about_braces(self) -> None:
        """``{{ x }}`` without the ``$`` is text, not an expression: almost always a slip."""
        if "{{" not in self.text:
            return
        for number, line in enumerate(self.lines, start=1):
            if "{{" not in line:
                continue  # most lines: a substring test, not the regex
            for match in _BARE_BRACES.finditer(line):
                if line.lstrip().startswith("#"):
                    break
                inner = match.group(1).strip()
                self.warnings.append(
                    f"{self.path}:{number}:{match.start() + 1}: '{{{{ {inner} }}}}' is plain "
                    f"text, not an expression; write '${{{{ {inner} }}}}' to substitute it"
                )

    def take_step(
        self, node: Node, index: int, default_retry: RetrySpec, defaults: dict[str, Any]
    ) -> None:
        """Load one step; each is checked on its own, so one validate reports every broken
        step. Of its node, only what the reference checks read is kept."""
        try:
            step = self.load_step(node, index, default_retry, defaults)
        except PipelineError as exc:
            self.step_errors.append(exc)
            return
        if step.id in self.seen:
            first = self.seen[step.id]
            self.step_errors.append(
                self.error(
                    _children(node)["id"],
                    f"duplicate step id {step.id!r} (first defined at line {first})",
                )
            )
        self.seen[step.id] = node.start_mark.line + 1
        self.steps.append(step)
        if self.check_refs:
            self.step_nodes.append(for_references(node))

    def stream_step(self, node: Node, index: int, pairs: list[tuple[Node, Node]]) -> Node:
        """``take_step`` for a step the composer hands over (``yaml_nodes.compose``), with
        the ``defaults`` written above ``steps:`` (one written below means loading again
        from the whole tree: ``_defaults_after_steps``). Anything but a PipelineError
        (a refused tag, a too deep value) also starts again there, for its own message."""
        if index == 0:
            if self.streamed:
                raise Restart  # a second `steps:` key: the whole tree reports it
            self.streamed = True
            found = [value for key, value in pairs if key.value == "defaults"]
            try:
                self.stream_defaults = TOP.fields["defaults"].check(found[0]) if found else {}
            except SchemaViolation:
                self.stream_defaults = {}  # the top-level check reports it
            self.stream_retry = RetrySpec.from_raw(self.stream_defaults.get("retry"))
        try:
            self.take_step(node, index, self.stream_retry, self.stream_defaults)
        except (yaml.YAMLError, RecursionError):
            raise Restart from None
        return PLACEHOLDER

    def load_step(
        self, node: Node, index: int, default_retry: RetrySpec, defaults: dict[str, Any]
    ) -> Step:
        if not isinstance(node, MappingNode):
            raise self.error(node, "a step must be a mapping with at least 'id' and 'kind'")
        children = _children(node)
        if "kind" not in children:
            raise self.error(node, "step is missing 'kind' (one of " + ", ".join(KINDS) + ")")
        kind = self.check(COMMON_STEP_FIELDS["kind"], children["kind"])
        raw = self.check(_step_type(kind), node)
        step_id = raw["id"]
        if not step_id or not all(c.isalnum() or c in "-_" for c in step_id):
            raise self.error(
                children["id"], f"step id {step_id!r} may hold only letters, digits, '-' and '_'"
            )
        self.check_ranges(raw, children)
        compensate = None
        if "compensate" in raw:
            comp = raw["compensate"]
            if ("git" in comp) == ("run" in comp):
                raise self.error(
                    children["compensate"], "compensate needs exactly one of 'git' or 'run'"
                )
            compensate = Compensation(
                git=comp.get("git"),
                run=comp.get("run"),
                env=comp.get("env", {}),
                retry=RetrySpec.from_raw(comp.get("retry"), default_retry),
                timeout_s=comp.get("timeout"),
            )
        on_failure = None
        if "on_failure" in raw:
            spec_of = raw["on_failure"]
            on_failure = OnFailure(
                rewind_to=spec_of["rewind_to"],
                max_rewinds=spec_of.get("max_rewinds", 2),
                when=spec_of.get("when", "any"),
            )
        return Step(
            id=step_id,
            kind=kind,
            index=index,
            raw=raw,
            if_=raw.get("if"),
            env=raw.get("env") or _NOTHING,
            retry=RetrySpec.from_raw(raw.get("retry"), default_retry),
            # A gate's timeout is a person's time to decide: a command default is not one.
            timeout_s=raw.get("timeout", None if kind == "approve" else defaults.get("timeout")),
            on_failure=on_failure,
            compensate=compensate,
            irreversible=raw.get("irreversible", False),
            commit=raw.get("commit", False),
            budget=raw.get("budget") or _NOTHING,
        )

    def check_rewind_target(self, target: str, where: Node, ids: list[str], step: Step) -> None:
        if target not in ids:
            raise self.error(where, f"rewind_to: no step {target!r}{did_you_mean(target, ids)}")
        if ids.index(target) >= step.index:
            raise self.error(where, f"rewind_to: {target!r} must be a step before {step.id!r}")

    def check_ranges(self, raw: dict[str, Any], children: dict[str, Node]) -> None:
        """Values the types admit but that make no sense: say so instead of clamping."""
        retry = raw.get("retry") or {}
        if "attempts" in retry and retry["attempts"] < 1:
            node = _children(children["retry"])["attempts"]
            raise self.error(
                node, "retry.attempts counts every try, the first included: at least 1"
            )
        on_failure = raw.get("on_failure") or {}
        if on_failure.get("max_rewinds", 0) < 0:
            node = _children(children["on_failure"])["max_rewinds"]
            raise self.error(node, "max_rewinds must be 0 or more")
        on_reject = raw.get("on_reject")
        if isinstance(on_reject, dict) and on_reject.get("max_rejects", 0) < 0:
            node = _children(children["on_reject"])["max_rejects"]
            raise self.error(node, "max_rejects must be 0 or more")
        for key in ("run",):
            if raw.get(key) == [] or (isinstance(raw.get(key), str) and not raw[key].strip()):
                raise self.error(children[key], f"an empty {key}: give the command to run")
        comp = raw.get("compensate") or {}
        if comp.get("run") == [] or (isinstance(comp.get("run"), str) and not comp["run"].strip()):
            node = _children(children["compensate"])["run"]
            raise self.error(node, "an empty compensate.run: give the command to run")
        for key in ("max_tokens", "max_reflections", "max_file_bytes"):
            if key in raw and raw[key] < 0:
                raise self.error(children[key], f"{key} must be 0 or more")
        if "max_turns" in raw and raw["max_turns"] < 1:
            raise self.error(children["max_turns"], "max_turns must be 1 or more")
        if raw.get("commit") and raw.get("kind") in ("agent", "external"):
            raise self.error(
                children["commit"],
                f"a {raw['kind']} step commits what it changed itself; remove 'commit'",
            )

    # --- references -------------------------------------------------------------------

    def check_references(
        self, pipeline: Pipeline, root: Node, step_nodes: list[Node]
    ) -> list[PipelineError]:
        ids = [s.id for s in pipeline.steps]
        errors: list[PipelineError] = []
        for key in ("env", "workspace"):
            node = _children(root).get(key)
            if node is not None:
                try:
                    self.check_strings(node, pipeline, before=0, own=None, allow_rewind=False)
                except PipelineError as exc:
                    errors.append(exc)
        for step, node in zip(pipeline.steps, step_nodes, strict=True):
            try:
                self.check_step_references(pipeline, ids, step, node)
            except PipelineError as exc:
                errors.append(exc)
        return errors

    def warn_about_commands(self, pipeline: Pipeline, node: Node) -> None:
        """An allow-list entry that lets the agent run anything (an interpreter, a
        shell, ``env``, ``find``...) is a warning at the entry: it is legal, and rarely
        what was meant."""
        from agentsaga.allowlist import permits_anything, prefix_of

        entries = node.value if isinstance(node, SequenceNode) else []
        for item in entries:
            raw = item.value
            if isinstance(raw, list):
                raw = [str(part.value) for part in raw]
            elif isinstance(raw, str) and "${{" in raw:
                continue  # known only when the step runs
            prefix = prefix_of(raw, pipeline.vars)
            how = permits_anything(prefix)
            if how is None:
                continue
            named = isinstance(raw, str) and raw in pipeline.vars
            via = f" (var {raw})" if named else ""
            mark = item.start_mark
            self.warnings.append(
                f"{self.path}:{mark.line + 1}:{mark.column + 1}: commands entry "
                f"{shlex.join(prefix)!r}{via} lets the agent run any command: {how}; "
                "narrow it to what the agent needs (e.g. [python3, -m, pytest], not python3)"
            )

    def check_step_references(
        self, pipeline: Pipeline, ids: list[str], step: Step, node: Node
    ) -> None:
        children = _children(node)
        if step.kind == "agent" and "commands" in children:
            self.warn_about_commands(pipeline, children["commands"])
        if step.on_failure:
            where = _children(children["on_failure"])["rewind_to"]
            self.check_rewind_target(step.on_failure.rewind_to, where, ids, step)
        on_reject = step.fields.get("on_reject") if step.kind == "approve" else None
        if isinstance(on_reject, dict):
            where = _children(children["on_reject"])["rewind_to"]
            self.check_rewind_target(on_reject["rewind_to"], where, ids, step)
        if_node = children.get("if")
        if isinstance(if_node, ScalarNode) and not expressions.has_expressions(str(if_node.value)):
            self.check_bare_expression(if_node, pipeline, step.index, step.id)
        if (
            step.compensate is not None
            and step.compensate.git
            and pipeline.workspace.get("isolation") == "none"
        ):
            comp_node = _children(children["compensate"])["git"]
            raise self.error(
                comp_node,
                f"git: {step.compensate.git} needs a git workspace, but "
                "workspace.isolation is 'none'; use a run: compensation or a git isolation",
            )
        self.check_bash_strings(children)
        for key, child in children.items():
            if key == "compensate":
                # A compensation runs after its step: it may read the step's own output.
                self.check_strings(child, pipeline, step.index + 1, step.id, True)
            elif key not in ("id", "kind", "replies", "schema"):
                self.check_strings(child, pipeline, step.index, step.id, True)

    def check_bash_strings(self, children: dict[str, Node]) -> None:
        """A ``run:`` string is for bash: an expression where bash would not take its
        value as text (arithmetic, a quoted heredoc) is refused."""
        from agentsaga.shell import problem

        nodes = [children.get("run")]
        if "compensate" in children:
            nodes.append(_children(children["compensate"]).get("run"))
        for node in nodes:
            if not isinstance(node, ScalarNode) or not expressions.has_expressions(str(node.value)):
                continue
            try:
                found = problem(str(node.value))
            except ExpressionError:
                continue  # reported with its position by check_strings
            if found is not None:
                raise self.error_at(node, *found)

    def check_bare_expression(
        self, node: ScalarNode, pipeline: Pipeline, before: int, own: str
    ) -> None:
        """``if:`` may be written without ``${{ }}``, as in GitHub Actions."""
        try:
            expr = expressions.parse_expression(str(node.value))
        except ExpressionError as exc:
            raise self.error_at(node, exc.offset, exc.problem) from None
        for ref in expressions.expression_references(expr):
            problem = self.reference_problem(ref.path, pipeline, before, own)
            if problem:
                raise self.error_at(node, ref.offset, problem)

    def check_strings(
        self,
        node: Node,
        pipeline: Pipeline,
        before: int,
        own: str | None,
        allow_rewind: bool,
    ) -> None:
        if isinstance(node, MappingNode):
            for _key, value in node.value:
                self.check_strings(value, pipeline, before, own, allow_rewind)
        elif isinstance(node, SequenceNode):
            for value in node.value:
                self.check_strings(value, pipeline, before, own, allow_rewind)
        elif isinstance(node, ScalarNode) and isinstance(node.value, str):
            if not expressions.has_expressions(node.value):
                return
            try:
                template = expressions.parse_template(node.value)
            except ExpressionError as exc:
                raise self.error_at(node, exc.offset, exc.problem) from None
            for ref in template.references():
                problem = self.reference_problem(ref.path, pipeline, before, own)
                if problem:
                    raise self.error_at(node, ref.offset, problem)

    def reference_problem(
        self, path: tuple[str | int, ...], pipeline: Pipeline, before: int, own: str | None
    ) -> str | None:
        head = path[0]
        rest = path[1:]
        if head not in NAMESPACES:
            return f"unknown name {head!r}: expected one of {', '.join(NAMESPACES)}"
        if not rest:
            return None
        name = rest[0]
        if head == "vars" and name not in pipeline.vars and self.vars_known:
            declared = list(pipeline.vars)
            return (
                f"unknown var {name!r}{did_you_mean(str(name), declared)} (declare it under vars:)"
            )
        if head == "run" and name not in RUN_FIELDS:
            return f"run has no field {name!r}; expected one of {', '.join(RUN_FIELDS)}"
        if head == "rewind" and name not in REWIND_FIELDS:
            return f"rewind has no field {name!r}; expected one of {', '.join(REWIND_FIELDS)}"
        if head != "steps":
            return None
        ids = [s.id for s in pipeline.steps]
        if name not in ids:
            return f"unknown step {name!r}{did_you_mean(str(name), ids)}"
        target = pipeline.step(str(name))
        if target.index >= before:
            if own is None:
                return (
                    f"steps.{name} cannot be used here: this value is set before any step runs"
                    "; to use a step's failure in a later step after a rewind, use "
                    "${{ rewind.error }}"
                )
            when = "this step itself" if target.id == own else f"a step that runs after {own!r}"
            return (
                f"steps.{name} is {when}, so it has no output yet; to use a later step's "
                "failure after a rewind, use ${{ rewind.error }}"
            )
        if len(rest) < 2:
            return None
        attr = rest[1]
        if attr not in STEP_REF_FIELDS:
            return (
                f"steps.{name} has no field {attr!r}; expected one of {', '.join(STEP_REF_FIELDS)}"
            )
        if attr == "output" and len(rest) >= 3:
            out = rest[2]
            outputs = sorted(KINDS[target.kind].outputs)
            if out not in outputs:
                return (
                    f"a {target.kind} step has no output {out!r} (it outputs "
                    f"{', '.join(outputs)}){did_you_mean(str(out), outputs)}"
                )
        return None

    def error_at(self, node: ScalarNode, offset: int, problem: str) -> PipelineError:
        """Locate character ``offset`` of a scalar's value in the file."""
        line, col = _locate(node, offset, self.lines)
        return PipelineError(self.path, line, col, problem)


def _children(node: Node) -> dict[str, Node]:
    if not isinstance(node, MappingNode):
        return {}
    return {str(k.value): v for k, v in node.value}


def _locate(node: ScalarNode, offset: int, lines: list[str]) -> tuple[int, int]:
    start_line, start_col = node.start_mark.line, node.start_mark.column
    value = node.value
    if node.style in ("|", ">"):
        # Block scalars start on the line after the indicator; find the content's indent.
        first = start_line + 1
        text_line = lines[first] if first < len(lines) else ""
        indent = len(text_line) - len(text_line.lstrip(" "))
        before = value[:offset]
        line = first + before.count("\n")
        col = indent + len(before) - (before.rfind("\n") + 1)
        return line + 1, col + 1
    # Plain and quoted single-line scalars: the value starts at the mark (after the quote).
    quote = 1 if node.style in ("'", '"') else 0
    if "\n" not in value[:offset]:
        return start_line + 1, start_col + quote + offset + 1
    return start_line + 1 + value[:offset].count("\n"), 1


__all__ = [
    "BOOL",
    "COMPENSATE",
    "FAILURE_CLASSES",
    "GIT_COMPENSATIONS",
    "ON_FAILURE",
    "RETRY",
    "STEP_BUDGET",
    "TOP",
    "VAR",
    "Compensation",
    "OnFailure",
    "Pipeline",
    "RetrySpec",
    "Step",
    "json_schema",
    "load_file",
    "load_text",
]
