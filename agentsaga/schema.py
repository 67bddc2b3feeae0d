"""A tiny schema language: one definition validates YAML nodes and emits JSON Schema.

The pipeline format is described once, here, with these types; ``pipeline.py`` walks the
composed YAML node tree with them (so every error knows its line and column) and
``agentsaga schema`` prints the same definition as JSON Schema for editors. Two
definitions would drift, as dbos's twice-defined statuses did.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from agentsaga.yaml_nodes import STR_TAG, MappingNode, Node, ScalarNode, SequenceNode, to_yaml

_DURATION = re.compile(r"(\d{1,12}(?:\.\d{1,12})?) ?(ms|s|m|h)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class SchemaViolation(Exception):
    """Raised while validating; carries the offending node so the caller can locate it."""

    def __init__(self, node: Node, problem: str) -> None:
        super().__init__(problem)
        self.node = node
        self.problem = problem


def parse_duration(text: str) -> float | None:
    """'2s', '500ms', '1.5m', '1h' or a bare number of seconds -> seconds."""
    # Stripped first and matched whole: no leading or trailing \s* for the regex to
    # backtrack over (a long run of spaces made that quadratic).
    match = _DURATION.fullmatch(text.strip())
    if not match:
        return None
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _construct(node: Node) -> Any:
    """Turn a node into a Python value with YAML's safe rules (ints, bools, null...)."""
    try:
        return _LOADER.construct_object(to_yaml(node), deep=True)
    except yaml.constructor.ConstructorError as exc:
        # An unknown tag (`!run`, `!!python/...`): the safe loader refuses it.
        raise SchemaViolation(node, exc.problem or "this YAML tag is not allowed") from None
    except ValueError as exc:
        raise SchemaViolation(node, f"not a usable value: {str(exc)[:80]}") from None
    finally:
        # The loader memoises by node; clearing keeps it from growing across loads.
        _LOADER.constructed_objects.clear()


def _scalar_value(node: Node) -> Any:
    """A scalar's Python value. Most scalars of a pipeline are strings, whose value is the
    node's text: taken directly, not through the constructor (a third of a long
    pipeline's load time went there)."""
    if node.tag == STR_TAG and isinstance(node, ScalarNode):
        return node.value
    return _construct(node)


# A constructor instance used only to turn nodes into Python values.
_LOADER = yaml.SafeLoader("")


class Type:
    description: str = ""
    #: The node class this type can accept (``None``: any): ``OneOf`` skips an
    #: alternative of another shape without raising (an exception per value, each with
    #: its traceback, was most of a long pipeline's load).
    shape: type[Node] | None = None

    def check(self, node: Node) -> Any:
        raise NotImplementedError

    def json_schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def name(self) -> str:
        return type(self).__name__.lower()


class Scalar(Type):
    shape = ScalarNode

    def __init__(self, py_types: tuple[type, ...], json_type: str | list[str], label: str):
        self.py_types, self.json_type, self.label = py_types, json_type, label

    def check(self, node: Node) -> Any:
        if not isinstance(node, ScalarNode):
            raise SchemaViolation(node, f"expected {self.label}, got {_kind(node)}")
        value = _scalar_value(node)
        if isinstance(value, bool) and bool not in self.py_types:
            raise SchemaViolation(node, f"expected {self.label}, got a boolean")
        if not isinstance(value, self.py_types):
            if str in self.py_types and value is not None:
                return str(node.value)  # e.g. `version: 1.0` where a string is wanted
            raise SchemaViolation(node, f"expected {self.label}, got {_describe(value)}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": self.json_type}

    def name(self) -> str:
        return self.label


STR = Scalar((str,), "string", "a string")
INT = Scalar((int,), "integer", "an integer")
NUM = Scalar((int, float), "number", "a number")
BOOL = Scalar((bool,), "boolean", "true or false")
SCALAR = Scalar((str, int, float, bool), ["string", "number", "boolean"], "a string or number")


class Duration(Type):
    shape = ScalarNode

    def check(self, node: Node) -> float:
        if isinstance(node, ScalarNode):
            value = _scalar_value(node)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                return float(value)
            if isinstance(value, str):
                seconds = parse_duration(value)
                if seconds is not None:
                    return seconds
        raise SchemaViolation(node, "expected a duration such as 30s, 500ms, 2m or 1h")

    def json_schema(self) -> dict[str, Any]:
        return {
            "oneOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": rf"^\s*{_DURATION.pattern}\s*$"},
            ]
        }


class Enum(Type):
    shape = ScalarNode

    def __init__(self, *choices: str):
        self.choices = list(choices)

    def check(self, node: Node) -> str:
        value = STR.check(node)
        if value not in self.choices:
            expected = ", ".join(self.choices)
            raise SchemaViolation(
                node, f"{value!r} is not one of {expected}{did_you_mean(value, self.choices)}"
            )
        return str(value)

    def json_schema(self) -> dict[str, Any]:
        return {"enum": self.choices}


class ListOf(Type):
    shape = SequenceNode

    def __init__(self, item: Type):
        self.item = item

    def check(self, node: Node) -> list[Any]:
        if not isinstance(node, SequenceNode):
            raise SchemaViolation(node, f"expected a list, got {_kind(node)}")
        return [self.item.check(child) for child in node.value]

    def json_schema(self) -> dict[str, Any]:
        return {"type": "array", "items": self.item.json_schema()}


class MapOf(Type):
    shape = MappingNode

    def __init__(self, value: Type):
        self.value = value

    def check(self, node: Node) -> dict[str, Any]:
        if not isinstance(node, MappingNode):
            raise SchemaViolation(node, f"expected a mapping, got {_kind(node)}")
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = STR.check(key_node)
            if key in result:
                raise SchemaViolation(key_node, f"duplicate key {key!r}")
            result[key] = self.value.check(value_node)
        return result

    def json_schema(self) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": self.value.json_schema()}


class AnyValue(Type):
    def check(self, node: Node) -> Any:
        return _construct(node)

    def json_schema(self) -> dict[str, Any]:
        return {}


class Deferred(AnyValue):
    """A value checked later by its own rules (a step, against its kind's fields): the
    node is passed through as it is, not constructed twice."""

    def check(self, node: Node) -> Any:
        return node


class OneOf(Type):
    """The first alternative whose shape (scalar, list, mapping) matches the node wins."""

    def __init__(self, *alternatives: Type, label: str):
        self.alternatives, self.label = alternatives, label

    def check(self, node: Node) -> Any:
        for alternative in self.alternatives:
            if alternative.shape is not None and not isinstance(node, alternative.shape):
                continue  # it would say "expected <its shape>" about this very node
            try:
                return alternative.check(node)
            except SchemaViolation as exc:
                # An error deeper inside the node is more useful than "expected X".
                if exc.node is not node:
                    raise
        raise SchemaViolation(node, f"expected {self.label}, got {_kind(node)}")

    def json_schema(self) -> dict[str, Any]:
        return {"oneOf": [a.json_schema() for a in self.alternatives]}


@dataclass
class Obj(Type):
    fields: dict[str, Type]
    required: tuple[str, ...] = ()
    description: str = ""
    docs: dict[str, str] = field(default_factory=dict)
    shape = MappingNode

    def check(self, node: Node) -> dict[str, Any]:
        if not isinstance(node, MappingNode):
            raise SchemaViolation(node, f"expected a mapping, got {_kind(node)}")
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = STR.check(key_node)
            if key in result:
                raise SchemaViolation(key_node, f"duplicate key {key!r}")
            if key not in self.fields:
                known = sorted(self.fields)
                hint = did_you_mean(key, known) or f"; expected one of {', '.join(known)}"
                raise SchemaViolation(key_node, f"unknown key {key!r}{hint}")
            result[key] = self.fields[key].check(value_node)
        for name in self.required:
            if name not in result:
                raise SchemaViolation(node, f"missing required key {name!r}")
        return result

    def json_schema(self) -> dict[str, Any]:
        props = {}
        for name, typ in self.fields.items():
            prop = typ.json_schema()
            if name in self.docs:
                prop = {**prop, "description": self.docs[name]}
            props[name] = prop
        schema: dict[str, Any] = {
            "type": "object",
            "properties": props,
            "additionalProperties": False,
        }
        if self.required:
            schema["required"] = list(self.required)
        if self.description:
            schema["description"] = self.description
        return schema


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return _describe(_scalar_value(node))


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    return f"the string {value!r}"
