from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agentsaga.errors import ExpressionError
from agentsaga.expressions import (
    MAX_NESTING,
    Reference,
    evaluate,
    expression_references,
    has_expressions,
    parse_expression,
    parse_template,
    render,
    render_value,
    shell_quote,
    to_text,
)

NS: dict[str, Any] = {
    "vars": {"name": "demo", "n": 3, "flag": True, "empty": "", "none": None},
    "run": {"id": "r1", "branch": "saga/r1", "base": "main"},
    "env": {"HOME": "/home/x"},
    "steps": {
        "plan": {
            "status": "completed",
            "output": {"text": "hi", "files": ["a.py", "b.py"], "json": {"k": [1, {"z": 2}]}},
        },
        "fix-tests": {"status": "failed", "output": None, "error": "boom"},
    },
    "rewind": {"count": 0},
}


def ev(source: str, namespace: dict[str, Any] | None = None) -> Any:
    return evaluate(parse_expression(source), NS if namespace is None else namespace)


# --- literals, paths, indexes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("'single'", "single"),
        ('"double"', "double"),
        (r"'it\'s'", "it's"),
        (r'"a\"b"', 'a"b'),
        (r"'tab\there\nnew\\slash'", "tab\there\nnew\\slash"),
        ("'}}'", "}}"),
        ("''", ""),
        ("42", 42),
        ("-7", -7),
        ("1.5", 1.5),
        ("2e3", 2000.0),
        ("true", True),
        ("false", False),
        ("null", None),
    ],
)
def test_literals(source: str, value: Any) -> None:
    result = ev(source)
    assert result == value
    assert type(result) is type(value)


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("vars.name", "demo"),
        ("run.branch", "saga/r1"),
        ("steps.plan.output.text", "hi"),
        ("steps.plan.output.files[1]", "b.py"),
        ("steps['plan'].output[\"files\"][0]", "a.py"),
        ("steps.plan.output.json.k[1].z", 2),
        ("steps.fix-tests.error", "boom"),  # hyphens in identifiers: step ids use them
        ("steps['fix-tests'].status", "failed"),
        ("steps.plan.output", NS["steps"]["plan"]["output"]),
    ],
)
def test_paths_and_indexes(source: str, value: Any) -> None:
    assert ev(source) == value


@pytest.mark.parametrize(
    "source",
    [
        "steps.plan.output.json.missing",
        "steps.plan.output.json.missing.deeper[3]",
        "steps.fix-tests.output.text",  # output is None: a compensation must cope with null
        "steps.nope.output",
        "steps.plan.output.files[2]",  # out of range
        "steps.plan.output.files[-1]",  # negative is out of range, as on GitHub
        "steps.plan.output.files['x']",  # a string key on a list
        "steps.plan.output.text[0]",  # strings are not containers here
        "vars.n.x",  # an int has no attributes
        "vars.none.x",
    ],
)
def test_missing_is_none(source: str) -> None:
    assert ev(source) is None


def test_keywords_after_a_dot_are_names() -> None:
    assert ev("vars.null", {"vars": {"null": 1}}) == 1


# --- operators ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("vars.name == 'demo'", True),
        ("vars.name != 'demo'", False),
        ("steps.fix-tests.output == null", True),
        ("steps.plan.output.nothing == null", True),
        ("vars.n == 3", True),
        ("vars.n == 3.0", True),
        ("vars.flag == 1", False),  # booleans are not numbers in a condition
        ("vars.flag == true", True),
        ("steps.plan.output.files == steps.plan.output.files", True),
        ("true and false", False),
        ("true or false", True),
        ("vars.name and vars.n", True),  # Python truthiness, boolean result
        ("vars.empty or 0", False),
        ("not vars.empty", True),
        ("not not vars.name", True),
        # not binds tighter than ==: (not 'x') == false
        ("not 'x' == false", True),
        ("not ('x' == false)", True),
        ("not 1 == 1", False),
        # == binds tighter than and
        ("1 == 1 and 2 == 2", True),
        ("false == false and false", False),
        # and binds tighter than or
        ("true or false and false", True),
        ("(true or false) and false", False),
        ("false and false or true", True),
        ("false and (false or true)", False),
        ("((((vars.n))))", 3),
    ],
)
def test_operators_and_precedence(source: str, value: Any) -> None:
    result = ev(source)
    assert result == value
    assert type(result) is type(value)


def test_and_or_short_circuit() -> None:
    # The right side would be an unknown-name error if it were evaluated.
    assert ev("false and nope.x") is False
    assert ev("true or nope.x") is True
    with pytest.raises(ExpressionError):
        ev("true and nope.x")


# --- templates, references ---------------------------------------------------------------


def test_template_parts_and_references_with_offsets() -> None:
    source = "echo ${{ steps.plan.output.text }} to ${{ steps['plan'].output.files[0] }}!"
    template = parse_template(source)
    assert [p for p in template.parts if isinstance(p, str)] == ["echo ", " to ", "!"]
    refs = template.references()
    assert refs == [
        Reference(("steps", "plan", "output", "text"), source.index("steps.plan")),
        Reference(("steps", "plan", "output", "files", 0), source.index("steps['plan']")),
    ]
    for ref in refs:
        assert source[ref.offset :].startswith("steps")


def test_references_of_compound_expression() -> None:
    source = "${{ not vars.a == 'x' or (env.B and run.id != rewind.count) }}"
    names = [(r.path, source[r.offset : r.offset + 3]) for r in parse_template(source).references()]
    assert names == [
        (("vars", "a"), "var"),
        (("env", "B"), "env"),
        (("run", "id"), "run"),
        (("rewind", "count"), "rew"),
    ]
    assert expression_references(parse_expression("'lit' == 1")) == []


def test_is_single_expression() -> None:
    assert parse_template("${{ vars.n }}").is_single_expression
    assert parse_template("  ${{ vars.n }}\n").is_single_expression
    assert not parse_template("x ${{ vars.n }}").is_single_expression
    assert not parse_template("${{ vars.n }}${{ vars.n }}").is_single_expression
    assert not parse_template("no expressions").is_single_expression
    assert parse_template("plain").parts == ("plain",)
    assert parse_template("").parts == ()


def test_has_expressions() -> None:
    assert has_expressions("a ${{ b }}")
    assert not has_expressions("a { b } $ {{")


def test_parse_expression_accepts_one_wrapper() -> None:
    assert ev("${{ vars.n == 3 }}") is True
    assert ev("  ${{ vars.n }}  ") == 3
    assert ev("vars.name == '${{'") is False  # '${{' inside a string of a bare expression


# --- rendering -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        ("s", "s"),
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (1.5, "1.5"),
        ({"a": [1, "é"], "b": None}, '{"a":[1,"é"],"b":null}'),
        ([{"z": 1, "a": 2}], '[{"z":1,"a":2}]'),  # keys keep their order
    ],
)
def test_to_text(value: Any, text: str) -> None:
    assert to_text(value) == text


def test_render_and_render_value() -> None:
    template = parse_template("${{ vars.name }}-${{ vars.n }}-${{ vars.none }}-${{ vars.flag }}")
    assert render(template, NS) == "demo-3--true"
    assert render_value(template, NS) == "demo-3--true"
    output = NS["steps"]["plan"]["output"]
    assert render_value(parse_template(" ${{ steps.plan.output }} "), NS) == output
    assert render_value(parse_template("${{ steps.plan.output.files }}"), NS) == ["a.py", "b.py"]
    assert render_value(parse_template("${{ steps.fix-tests.output }}"), NS) is None
    assert render_value(parse_template("plain"), NS) == "plain"
    assert render(parse_template("j=${{ steps.plan.output.json }}"), NS) == 'j={"k":[1,{"z":2}]}'


def test_render_quote_applies_only_to_expressions() -> None:
    template = parse_template("a b ${{ vars.name }} ${{ vars.empty }}")
    assert render(template, NS, quote=lambda s: f"<{s}>") == "a b <demo> <>"


HOSTILE = [
    "$(rm -rf /)",
    "`rm -rf /`",
    "a; rm -rf /",
    "line1\nline2\n",
    'it\'s "quoted"',
    "'",
    "\\",
    "$HOME ${HOME} !! * ? [a] ~",
    "&& || | > < 2>&1",
    "-n",
    "",
    " leading and trailing ",
    "tab\there",
    "ünïcødé ☃",
]


def _bash(script: str) -> str:
    # Bytes, not text=True: universal newlines would turn a "\r" in the value into "\n".
    done = subprocess.run(["bash", "-c", script], capture_output=True, check=True)
    return done.stdout.decode()


@pytest.mark.parametrize("value", HOSTILE)
def test_shell_quote_survives_bash(value: str) -> None:
    template = parse_template("printf '%s' ${{ vars.v }}")
    script = render(template, {"vars": {"v": value}}, quote=shell_quote)
    assert _bash(script) == value


def test_shell_quote_keeps_one_argument_per_expression() -> None:
    template = parse_template("printf '<%s>' ${{ vars.a }} ${{ vars.b }} ${{ vars.c }}")
    namespace = {"vars": {"a": "", "b": "two words", "c": {"k": "$(x)"}}}
    script = render(template, namespace, quote=shell_quote)
    assert _bash(script) == '<><two words><{"k":"$(x)"}>'
    assert shell_quote("") == "''"
    assert shell_quote(None) == "''"


@settings(max_examples=40, deadline=None, database=None)
@given(st.text(st.characters(codec="utf-8", exclude_characters="\x00")))
def test_shell_quote_survives_bash_fuzzed(value: str) -> None:
    script = render(
        parse_template("printf '%s' ${{ vars.v }}"), {"vars": {"v": value}}, quote=shell_quote
    )
    assert _bash(script) == value


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "offset", "problem"),
    [
        ("echo ${{ vars.n", 5, "unclosed '${{'"),
        ("${{ vars.n ) }}", 11, "unexpected token ')'"),
        ("${{ vars. }}", 10, "expected a name after '.'"),
        ("${{ vars.[0] }}", 9, "expected a name after '.'"),
        ("a ${{ }}", 2, "empty expression"),
        ("${{}}", 0, "empty expression"),
        ("${{ vars.n == }}", 14, "expected a value, found '}}'"),
        ("${{ (vars.n }}", 12, "expected ')' to close the '(' at character 5"),
        ("${{ vars[x] }}", 9, "expected an integer or a quoted string inside '[ ]'"),
        ("${{ vars[1.5] }}", 9, "expected an integer or a quoted string inside '[ ]'"),
        ("${{ vars[0 }}", 11, "expected ']'"),
        ("${{ 'abc }}", 4, "unterminated string"),
        ("${{ 'a\\q' }}", 6, "unknown escape '\\q' in string: write '\\\\' for a backslash"),
        ("'ab\\", 0, "unterminated string: add the closing '"),
        ("${{ a && b }}", 6, "unexpected '&&': write 'and'"),
        ("${{ a || b }}", 6, "unexpected '||': write 'or'"),
        ("${{ !a }}", 4, "unexpected '!': write 'not'"),
        ("${{ a = b }}", 6, "unexpected character '='"),
        ("${{ a == b == c }}", 11, "comparisons do not chain"),
        ("${{ a ${{ b }} }}", 6, "'${{' inside an expression"),
        ("${{ and }}", 4, "unexpected token 'and'"),
        ("${{ a b }}", 6, "unexpected token 'b'"),
        ("${{ " + "9" * 5000 + " }}", 4, "number too long"),
    ],
)
def test_parse_errors(source: str, offset: int, problem: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_template(source) if has_expressions(source) else parse_expression(source)
    assert info.value.problem.startswith(problem)
    assert info.value.offset == offset
    assert info.value.source == source


def test_parse_expression_errors() -> None:
    with pytest.raises(ExpressionError, match="empty expression"):
        parse_expression("   ")
    with pytest.raises(ExpressionError, match="unexpected token 'end of expression'|found"):
        parse_expression("a ==")
    with pytest.raises(ExpressionError, match="text outside"):
        parse_expression("${{ a }} == b")


def test_nesting_is_capped() -> None:
    ok = "(" * MAX_NESTING + "1" + ")" * MAX_NESTING
    assert ev(ok) == 1
    with pytest.raises(ExpressionError, match="nested more than"):
        parse_expression("(" * (MAX_NESTING + 1) + "1" + ")" * (MAX_NESTING + 1))
    with pytest.raises(ExpressionError, match="nested more than"):
        parse_expression("not " * 10_000 + "true")
    # Long flat chains are not nesting: and/or are n-ary.
    assert ev(" or ".join(["false"] * 10_000) + " or true") is True


def test_unknown_name_lists_the_namespace() -> None:
    source = "x ${{ foo.bar }}"
    with pytest.raises(ExpressionError) as info:
        render(parse_template(source), NS)
    assert info.value.problem == (
        "unknown name 'foo': expected one of vars, run, env, steps, rewind"
    )
    assert info.value.offset == source.index("foo")
    assert info.value.source == source
    with pytest.raises(ExpressionError, match="no names are defined"):
        ev("a", {})


# --- fuzz: only ExpressionError ever escapes ---------------------------------------------

GRAMMAR_BITS = [
    "${{", "}}", "{", "}", "$", " ", "\n", ".", "[", "]", "(", ")", "'", '"', "\\", "==", "!=",
    "!", "=", "&&", "and", "or", "not", "true", "false", "null", "-", "0", "12", "1.5", "e9",
    "vars", "steps", "plan", "output", "a", "b-c", "_x", "é", "\x00",
]  # fmt: skip
# Raw text alone almost never gets past the tokenizer; grammar fragments reach the parser.
grammar_soup = st.lists(st.sampled_from(GRAMMAR_BITS), max_size=30).map("".join)
fuzz_text = st.text() | grammar_soup | grammar_soup.map(lambda s: "a ${{ " + s + " }} b")
KEYS = ["a", "b-c", "null", "x y", "0"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)
# Generating a fresh nested namespace per example costs more than the parse itself; the
# parse fuzz draws from a few fixed ones, the evaluation fuzz below generates them.
FIXED_NAMESPACES = [NS, {}, {"vars": None, "steps": [1, "x"], "plan": {"output": {"a": [{}]}}}]
fast = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@settings(fast, max_examples=2000)
@given(fuzz_text, st.sampled_from(FIXED_NAMESPACES))
def test_fuzz_parse_and_evaluate_raise_only_expression_error(
    source: str, namespace: dict[str, Any]
) -> None:
    try:
        template = parse_template(source)
    except ExpressionError as exc:
        assert 0 <= exc.offset <= len(source)
        event("template: parse error")
    else:
        event(f"template: parsed, {len(template.parts)} parts")
        for ref in template.references():
            assert source[ref.offset :].startswith(str(ref.path[0]))
        try:
            render(template, namespace, quote=shell_quote)
            render_value(template, namespace)
        except ExpressionError as exc:
            assert exc.problem.startswith("unknown name")
    try:
        expr = parse_expression(source)
    except ExpressionError as exc:
        assert 0 <= exc.offset <= len(source)
        event("expression: parse error")
        return
    try:
        evaluate(expr, namespace)
        event("expression: evaluated")
    except ExpressionError as exc:
        assert exc.problem.startswith("unknown name")
        event("expression: unknown name")


def _path(root: str) -> st.SearchStrategy[str]:
    step = st.sampled_from([".a", ".b-c", ".null", "[0]", "[1]", "['x y']", '["0"]', "[-1]"])
    return st.lists(step, max_size=4).map(lambda steps: root + "".join(steps))


# (source, whether its value must be a boolean)
leaves = st.tuples(
    st.sampled_from(["true", "false", "null", "0", "-3", "2.5", "''", "'a'", r'"\n"'])
    | _path("vars")
    | _path("steps"),
    st.just(False),
)
valid_exprs = st.recursive(
    leaves,
    lambda inner: st.one_of(
        inner.map(lambda e: (f"({e[0]})", e[1])),
        inner.map(lambda e: (f"not {e[0]}", True)),
        st.tuples(inner, st.sampled_from(["==", "!=", "and", "or"]), inner).map(
            lambda t: (f"({t[0][0]} {t[1]} {t[2][0]})", True)
        ),
    ),
    max_leaves=10,
)


@settings(fast, max_examples=700)
@given(valid_exprs, json_values, json_values)
def test_fuzz_valid_expressions_evaluate(
    generated: tuple[str, bool], vars_: Any, steps: Any
) -> None:
    source, is_bool = generated
    namespace = {"vars": vars_, "steps": steps}
    value = evaluate(parse_expression(source), namespace)
    if is_bool:
        assert isinstance(value, bool)
    template = parse_template("x ${{ " + source + " }} y")
    assert render(template, namespace) == f"x {to_text(value)} y"
    roots = [ref.path[0] for ref in template.references()]
    assert roots == re.findall(r"\b(vars|steps)\b", source)
