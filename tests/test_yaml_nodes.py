"""The compact YAML composer (``agentsaga/yaml_nodes.py``): the same tree as PyYAML's
composer (tags, values, styles, start positions, shared aliases), the same refusals, and
the positions it packs still exact in ``file:line:col`` errors deep into a long file."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from agentsaga import yaml_nodes
from agentsaga.errors import PipelineError
from agentsaga.pipeline import load_text

DOCUMENTS = {
    "tags and implicit types": (
        "a: 1\nb: 1.5e+3\nc: yes\nd: ~\ne:\nf: 2024-01-01\ng: 0x1F\nh: .inf\ni: =\nj: <<\n"
        "k: !!str 12\nl: ! 12\nm: !run foo\nn: ''\no: \"1\"\n"
    ),
    "styles": "plain: a b\nsingle: 'x'\ndouble: \"y\"\nliteral: |\n  one\n  two\nfolded: >-\n  f\n",
    "flow and nesting": "- {a: [1, {b: [2, [3]]}]}\n- - x\n  - y\n- []\n- {}\n",
    "complex keys": "? [a, b]\n: c\n? {d: e}\n: f\n",
    "anchors": "base: &b {retry: {attempts: 2}}\nuse: *b\nlist: &l [1, 2]\nagain: [*l, *l]\n",
    "merge key": "base: &b {x: 1}\nstep: {<<: *b, y: 2}\n",
    "unicode": 'ünï: côdé\n"\\u00e9": x\nemoji: "\U0001f600"\n',
    "document markers": "---\na: b\n...\n",
    "multi-line scalars": 'key: "multi\n  line"\nplain: multi\n  line\n',
    # Columns past 65,536: the packed position keeps 32 bits for the column.
    "long line": "k: " + "x" * 5000 + "\nwide: [" + ", ".join(map(str, range(20000))) + "]\n",
}


def shape(node: Any, seen: dict[int, int] | None = None) -> Any:
    """A node tree as plain values, PyYAML's or ours alike; an alias is the index of the
    node it repeats, so sharing (and recursion) is part of the comparison."""
    seen = {} if seen is None else seen
    if id(node) in seen:
        return ("alias", seen[id(node)])
    seen[id(node)] = len(seen)
    mark = node.start_mark
    head = (type(node).__name__, node.tag, mark.line, mark.column)
    if isinstance(node, yaml.ScalarNode | yaml_nodes.ScalarNode):
        return (*head, node.value, node.style or None)  # libyaml says "" for plain
    if isinstance(node, yaml.SequenceNode | yaml_nodes.SequenceNode):
        return (*head, [shape(item, seen) for item in node.value])
    return (*head, [(shape(k, seen), shape(v, seen)) for k, v in node.value])


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_the_same_tree_as_pyyaml(name: str) -> None:
    text = DOCUMENTS[name]
    ours = yaml_nodes.compose(text)
    theirs = yaml.compose(text, Loader=yaml.SafeLoader)
    assert ours is not None and theirs is not None
    assert shape(ours) == shape(theirs)


def test_aliases_share_one_node_and_may_recurse() -> None:
    root = yaml_nodes.compose("a: &x [1]\nb: *x\nc: &r {self: *r}\n")
    assert isinstance(root, yaml_nodes.MappingNode)
    (_, a), (_, b), (_, c) = root.value
    assert a is b
    assert isinstance(c, yaml_nodes.MappingNode) and c.value[0][1] is c
    # What goes through PyYAML's constructor keeps the sharing and the cycle.
    built = yaml.SafeLoader("").construct_document(yaml_nodes.to_yaml(root))
    assert built["a"] is built["b"] and built["c"]["self"] is built["c"]


def test_an_empty_document_is_none() -> None:
    assert yaml_nodes.compose("") is None
    assert yaml_nodes.compose("# only a comment\n") is None


@pytest.mark.parametrize(
    "text",
    [
        "a: *nope\n",  # undefined alias
        "a: &x 1\nb: &x 2\n",  # duplicate anchor
        "a: 1\n---\nb: 2\n",  # two documents
        'a: "unclosed\n',
        "a:\n  b: 1\n c: 2\n",
        "name: t\nsteps:\n\t- id: a\n",
    ],
)
def test_refused_with_pyyaml_s_own_error(text: str) -> None:
    with pytest.raises(yaml.YAMLError) as theirs:
        yaml.compose(text, Loader=yaml.SafeLoader)
    with pytest.raises(yaml.YAMLError) as ours:
        yaml_nodes.compose(text)
    assert str(ours.value) == str(theirs.value)


def long_pipeline(n: int, broken: dict[int, str]) -> str:
    lines = ["name: long", "workspace: {isolation: none}", "steps:"]
    for i in range(n):
        lines += [f"  - id: s{i:05d}", "    kind: shell"]
        lines.append(broken.get(i, '    run: ["true"]'))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("step", "bad", "col", "message"),
    [
        (2999, "    run: echo ${{ steps.nope.output.stdout }}", 19, "unknown step 'nope'"),
        (3400, '    timeout: [1]\n    run: ["true"]', 14, "expected a duration"),
        (4998, '    run: ["true", {a: b}]', 19, "expected a string"),
        (4000, "    if: steps.s04001.status == 'ok'\n    run: [\"true\"]", 9, "steps.s04001 is"),
    ],
)
def test_positions_stay_exact_deep_into_a_long_file(
    step: int, bad: str, col: int, message: str
) -> None:
    """Lines past 65,536 columns' worth of packing, and past the small-int cache: the
    packed position still gives the line and column an editor shows."""
    text = long_pipeline(5000, {step: bad})
    line = 4 + step * 3 + 2  # three header lines, three lines a step, its third line
    with pytest.raises(PipelineError) as raised:
        load_text(text, "long.yml")
    error = raised.value
    assert (error.file, error.line, error.col) == ("long.yml", line, col), str(error)
    assert message in str(error)


def test_a_position_in_a_block_scalar_deep_in_the_file() -> None:
    script = "    run: |\n      echo ok\n      echo ${{ vars.missing }}"
    text = long_pipeline(400, {399: script})
    with pytest.raises(PipelineError) as raised:
        load_text(text, "long.yml")
    # The block's second content line: after 3 header lines and 399 steps of 3 lines,
    # the step's id, kind and `run: |` lines, then `echo ok`.
    assert (raised.value.line, raised.value.col) == (3 + 399 * 3 + 5, 16)
    assert "unknown var 'missing'" in str(raised.value)


STREAM_CASES = {
    "defaults after steps": (
        "name: t\nworkspace: {isolation: none}\nsteps:\n"
        '  - {id: a, kind: shell, run: ["true"]}\n'
        '  - {id: b, kind: shell, run: ["true"], retry: {backoff: 2s}}\n'
        "defaults: {retry: {attempts: 3}, timeout: 5s}\n"
    ),
    "defaults before steps": (
        "name: t\ndefaults: {retry: {attempts: 3}, timeout: 5s}\nworkspace: {isolation: none}\n"
        'steps:\n  - {id: a, kind: shell, run: ["true"]}\n'
    ),
    "broken defaults": (
        "name: t\ndefaults: {retry: {attempts: x}}\n"
        'steps:\n  - {id: a, kind: shell, run: ["true"]}\n'
    ),
    "two steps keys": (
        'name: t\nsteps:\n  - {id: a, kind: shell, run: ["true"]}\n'
        'steps:\n  - {id: b, kind: shell, run: ["true"]}\n'
    ),
    "a refused tag": "name: t\nsteps:\n  - {id: a, kind: shell, run: !run foo}\n",
    "duplicate ids": (
        'name: t\nsteps:\n  - {id: a, kind: shell, run: ["true"]}\n'
        '  - {id: a, kind: shell, run: ["true"]}\n'
    ),
    "references": (
        "name: t\nvars: {x: 1}\nsteps:\n"
        '  - {id: a, kind: shell, run: "echo ${{ vars.y }}"}\n'
        '  - {id: b, kind: shell, run: "echo ${{ steps.c.output }}", on_failure: {rewind_to: a}}\n'
        '  - {id: c, kind: shell, run: "true"}\n'
    ),
    "vars after steps": (
        'name: t\nsteps:\n  - {id: a, kind: shell, run: "echo ${{ vars.x }}"}\nvars: {x: 1}\n'
    ),
    "an aliased step": (
        "name: t\nworkspace: {isolation: none}\nsteps:\n"
        '  - &s {id: a, kind: shell, run: ["true"]}\n'
        '  - {id: b, kind: shell, run: ["echo ${{ steps.a.output.stdout }}"]}\n'
    ),
    "braces": (
        "name: t\nworkspace: {isolation: none}\n"
        'steps:\n  - {id: a, kind: shell, run: "echo {{ x }}"}\n'
    ),
}


def _outcome(text: str) -> object:
    try:
        return load_text(text, "p.yml")
    except PipelineError as exc:
        return str(exc)


@pytest.mark.parametrize("name", sorted(STREAM_CASES))
def test_steps_built_as_composed_equal_those_of_the_whole_tree(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading builds each step as the composer hands it over; the whole-tree load
    (forced here) must give the same pipeline, or the same errors."""
    from agentsaga import pipeline, step_stream

    text = STREAM_CASES[name]
    streamed = _outcome(text)

    def whole_tree(self: object, node: object, index: int, pairs: object) -> object:
        raise step_stream.Restart

    monkeypatch.setattr(pipeline._Loader, "stream_step", whole_tree)
    assert streamed == _outcome(text)
    if name == "defaults after steps":
        assert not isinstance(streamed, str)
        assert [(s.retry.attempts, s.retry.backoff_s, s.timeout_s) for s in streamed.steps] == [
            (3, 1.0, 5.0),
            (3, 2.0, 5.0),
        ]
