"""A compact YAML node tree: what a pipeline's checks need, and nothing more.

PyYAML's composer gives every node two ``Mark`` objects (start and end, six attributes
each, the end never read here): a 10,000-step pipeline composed to ~50 MB of nodes and
marks, the largest part of a long run's peak memory. This composer reads the same
parser events (libyaml's when PyYAML was built with it) and keeps, per node, its tag,
value, style and start position packed in one int (``line << 32 | column``); a ``Mark``
with ``line`` and ``column`` is made only when an error asks for one. Mapping keys and
short scalars are interned, so the values a loaded pipeline keeps share one copy of
``kind``, ``run``, ``shell`` and the like.

Tags are resolved with PyYAML's own resolver (the one ``SafeLoader`` uses), so a value
means here what it means to PyYAML; :func:`to_yaml` rebuilds PyYAML nodes for the few
values that go through its constructor (numbers, booleans, ``replies:``, ``schema:``).
A document PyYAML refuses raises the same ``yaml.YAMLError``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.resolver import BaseResolver, Resolver

#: libyaml's parser when PyYAML was built with it: the same events, ~3x faster.
_PARSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
STR_TAG = BaseResolver.DEFAULT_SCALAR_TAG
SEQ_TAG = BaseResolver.DEFAULT_SEQUENCE_TAG
MAP_TAG = BaseResolver.DEFAULT_MAPPING_TAG
_IMPLICIT = Resolver.yaml_implicit_resolvers
_WILDCARD = _IMPLICIT.get(None, [])
#: Scalars up to this length are interned (ids, kinds, keys, short commands).
_INTERN_MAX = 40
_SHIFT = 32
_COLUMN = (1 << _SHIFT) - 1


class Mark:
    """A position as PyYAML's marks give it: ``line`` and ``column`` from 0."""

    __slots__ = ("line", "column")

    def __init__(self, line: int, column: int) -> None:
        self.line, self.column = line, column

    def __repr__(self) -> str:
        return f"Mark(line={self.line}, column={self.column})"


class Node:
    __slots__ = ("tag", "value", "pos")
    tag: str
    value: Any
    pos: int

    @property
    def start_mark(self) -> Mark:
        return Mark(self.pos >> _SHIFT, self.pos & _COLUMN)


class ScalarNode(Node):
    __slots__ = ("style",)
    value: str
    style: str | None

    def __init__(self, tag: str, value: str, pos: int, style: str | None) -> None:
        self.tag, self.value, self.pos, self.style = tag, value, pos, style


class SequenceNode(Node):
    __slots__ = ()
    value: list[Node]

    def __init__(self, tag: str, value: list[Node], pos: int) -> None:
        self.tag, self.value, self.pos = tag, value, pos


class MappingNode(Node):
    __slots__ = ()
    value: list[tuple[Node, Node]]

    def __init__(self, tag: str, value: list[tuple[Node, Node]], pos: int) -> None:
        self.tag, self.value, self.pos = tag, value, pos


def _pos(mark: Any) -> int:
    return int(mark.line) << _SHIFT | int(mark.column)


def resolve_scalar(value: str, implicit: tuple[bool, bool]) -> str:
    """The tag PyYAML's resolver gives an untagged scalar (``Resolver.resolve``)."""
    if implicit[0]:
        for tag, regexp in _IMPLICIT.get(value[:1], ()):
            if regexp.match(value):
                return str(tag)
        for tag, regexp in _WILDCARD:
            if regexp.match(value):
                return str(tag)
    return STR_TAG


#: Called with each item of the root mapping's list ``key`` as it is composed, its index
#: and the root's pairs so far; what it returns is kept in the list instead.
Each = Callable[[Node, int, list[tuple[Node, Node]]], Node]


class _Composer:
    def __init__(self, text: str, each: Each | None = None, key: str = "") -> None:
        self.parser = _PARSER(text)
        self.get = self.parser.get_event
        self.anchors: dict[str, Node] = {}
        self.each, self.key = each, key

    def document(self) -> Node | None:
        get = self.get
        get()  # stream start
        event = get()
        if isinstance(event, yaml.StreamEndEvent):
            return None
        event = get()
        root: Node = self._compose(event) if self.each is None else self._root(event)
        get()  # document end
        event = get()
        if not isinstance(event, yaml.StreamEndEvent):
            raise ComposerError(
                "expected a single document in the stream",
                _mark(root),
                "but found another document",
                event.start_mark,
            )
        return root

    def _root(self, event: Any) -> Node:
        """The root, its list ``key``'s items handed to ``each`` as they are composed."""
        if type(event) is not MappingStartEvent:
            return self._compose(event)  # type: ignore[no-any-return]
        pairs: list[tuple[Node, Node]] = []
        root = self._collection(event, MappingNode(MAP_TAG, pairs, 0))
        get, each = self.get, self.each
        assert each is not None
        while type(event := get()) is not MappingEndEvent:
            name = self._compose(event)
            event = get()
            if not (
                type(event) is SequenceStartEvent
                and isinstance(name, ScalarNode)
                and name.value == self.key
            ):
                pairs.append((name, self._compose(event)))
                continue
            items: list[Node] = []
            pairs.append((name, self._collection(event, SequenceNode(SEQ_TAG, items, 0))))
            while type(event := get()) is not SequenceEndEvent:
                item = self._scalar(event) if type(event) is ScalarEvent else self._compose(event)
                items.append(each(item, len(items), pairs))
        return root

    def list_items(self, key: str) -> Iterator[Node]:
        get = self.get
        get()  # stream start
        if type(get()) is not DocumentStartEvent:
            return
        event = get()
        if type(event) is not MappingStartEvent:
            return
        while type(event := get()) is not MappingEndEvent:
            name = self._compose(event)
            event = get()
            if not (isinstance(name, ScalarNode) and name.value == key):
                self._compose(event)
            elif type(event) is SequenceStartEvent:
                self._collection(event, SequenceNode(SEQ_TAG, [], 0))  # its anchor, if any
                while type(event := get()) is not SequenceEndEvent:
                    yield (
                        self._scalar(event) if type(event) is ScalarEvent else self._compose(event)
                    )
            else:
                self._compose(event)

    def _scalar(self, event: Any) -> ScalarNode:
        value = event.value
        tag = event.tag
        if tag is None or tag == "!":
            tag = resolve_scalar(value, event.implicit)
        if len(value) <= _INTERN_MAX:
            value = sys.intern(value)
        mark = event.start_mark
        node = ScalarNode(tag, value, mark.line << _SHIFT | mark.column, event.style)
        if event.anchor is not None:
            self._anchor(event, node)
        return node

    def _compose(self, event: Any) -> Any:
        """The node that starts with ``event`` (``_END`` for a collection's end). Scalars,
        most of the events, are made without a recursive call."""
        kind = type(event)
        if kind is ScalarEvent:
            return self._scalar(event)
        get, compose, scalar = self.get, self._compose, self._scalar
        if kind is MappingStartEvent:
            pairs: list[tuple[Node, Node]] = []
            node = self._collection(event, MappingNode(MAP_TAG, pairs, 0))
            while True:
                event = get()
                kind = type(event)
                if kind is MappingEndEvent:
                    return node
                key = scalar(event) if kind is ScalarEvent else compose(event)
                event = get()
                pairs.append((key, scalar(event) if type(event) is ScalarEvent else compose(event)))
        if kind is SequenceStartEvent:
            items: list[Node] = []
            node = self._collection(event, SequenceNode(SEQ_TAG, items, 0))
            while True:
                event = get()
                kind = type(event)
                if kind is SequenceEndEvent:
                    return node
                items.append(scalar(event) if kind is ScalarEvent else compose(event))
        if kind is AliasEvent:
            found = self.anchors.get(event.anchor)
            if found is None:
                raise ComposerError(
                    None, None, f"found undefined alias {event.anchor!r}", event.start_mark
                )
            return found
        raise ComposerError(None, None, f"unexpected {kind.__name__}", event.start_mark)

    def _collection(self, event: Any, node: Node) -> Node:
        """An empty mapping or sequence given its start event's tag, position and anchor."""
        if event.tag is not None and event.tag != "!":
            node.tag = event.tag
        node.pos = _pos(event.start_mark)
        if event.anchor is not None:
            self._anchor(event, node)
        return node

    def _anchor(self, event: Any, node: Node) -> None:
        first = self.anchors.get(event.anchor)
        if first is not None:
            raise ComposerError(
                f"found duplicate anchor {event.anchor!r}; first occurrence",
                _mark(first),
                "second occurrence",
                event.start_mark,
            )
        self.anchors[event.anchor] = node


def _mark(node: Node | None) -> yaml.Mark | None:
    if node is None:
        return None
    where = node.start_mark
    return yaml.Mark("<pipeline>", 0, where.line, where.column, None, None)  # type: ignore[arg-type]


def iter_list(text: str, key: str) -> Iterator[Node]:
    """The items of the root mapping's list ``key`` (a pipeline's ``steps``), composed
    and handed over one at a time: the rest of the document is composed and dropped,
    and no item outlives the caller's use of it (a long pipeline's tree is never whole).
    Nothing for a document without that list; a document PyYAML refuses raises."""
    composer = _Composer(text)
    try:
        yield from composer.list_items(key)
    finally:
        composer.parser.dispose()


def compose(text: str, each: Each | None = None, key: str = "steps") -> Node | None:
    """The document's root node (``None`` for an empty document). A document PyYAML
    refuses raises the error of PyYAML's pure-Python parser: its messages are the
    documented ones (libyaml words some differently). ``each``: see :data:`Each` (a
    pipeline's steps are built as they are composed, and their nodes let go)."""
    composer = _Composer(text, each, key)
    try:
        return composer.document()
    except yaml.YAMLError:
        yaml.compose(text, Loader=yaml.SafeLoader)
        raise
    finally:
        composer.parser.dispose()


def to_yaml(node: Node, memo: dict[int, yaml.Node] | None = None) -> yaml.Node:
    """PyYAML's nodes for ``node`` (for its constructor); shared and recursive nodes
    (YAML aliases) stay shared."""
    memo = {} if memo is None else memo
    done = memo.get(id(node))
    if done is not None:
        return done
    mark = _mark(node)
    if isinstance(node, ScalarNode):
        made: yaml.Node = yaml.ScalarNode(node.tag, node.value, mark, mark, style=node.style)
        memo[id(node)] = made
        return made
    if isinstance(node, SequenceNode):
        seq = yaml.SequenceNode(node.tag, [], mark, mark)
        memo[id(node)] = seq
        seq.value.extend(to_yaml(item, memo) for item in node.value)
        return seq
    mapping = yaml.MappingNode(node.tag, [], mark, mark)
    memo[id(node)] = mapping
    mapping.value.extend((to_yaml(k, memo), to_yaml(v, memo)) for k, v in node.value)
    return mapping
