"""A pipeline's step nodes while it loads (``pipeline.py``): handed over by the composer
one at a time and built at once (``_Loader.stream_step``), or drained from a whole tree
(``drain``), and let go either way; of each, only what the reference checks read is
kept (``for_references``). A long pipeline's node tree is then never whole: its load
peaked at 60 MB for 10,000 steps with PyYAML's tree, at 7 MB now.
"""

from __future__ import annotations

from collections.abc import Iterator

from agentsaga import expressions
from agentsaga.yaml_nodes import MAP_TAG, MappingNode, Node, ScalarNode, SequenceNode


class Restart(Exception):
    """Loading step by step cannot give the answer the whole tree gives: start again."""


#: What a streamed step leaves in the tree's `steps:` list.
PLACEHOLDER = MappingNode(MAP_TAG, [], 0)


def defaults_after_steps(root: Node | None) -> bool:
    keys = [str(k.value) for k, _ in root.value] if isinstance(root, MappingNode) else []
    return "defaults" in keys and "steps" in keys and keys.index("defaults") > keys.index("steps")


def drain(items: list[Node]) -> Iterator[Node]:
    """Each item, let go of by ``items`` as it is handed over: a long pipeline's step
    nodes are freed as its steps are built, not all kept until the end."""
    items.reverse()
    while items:
        yield items.pop()


#: The keys of a step that its reference checks read even without an expression.
_REFERENCE_KEYS = frozenset(("commands", "on_failure", "on_reject", "if", "compensate"))


def for_references(node: Node) -> Node:
    """The part of a step's node that ``check_step_references`` reads: the keys it checks
    by name and every value holding an expression (most steps of a long pipeline keep
    none of their nodes)."""
    if not isinstance(node, MappingNode):
        return node
    kept = [
        (key, value)
        for key, value in node.value
        if str(key.value) in _REFERENCE_KEYS or _has_expression(value)
    ]
    return MappingNode(node.tag, kept, node.pos) if kept else PLACEHOLDER


def _has_expression(node: Node) -> bool:
    if isinstance(node, ScalarNode):
        return expressions.has_expressions(str(node.value))
    if isinstance(node, SequenceNode):
        return any(_has_expression(item) for item in node.value)
    if isinstance(node, MappingNode):
        return any(_has_expression(value) for _, value in node.value)
    return False
