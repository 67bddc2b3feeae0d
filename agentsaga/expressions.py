"""``${{ ... }}`` templates: parsing, reference listing, evaluation, rendering, shell quoting.

The syntax is GitHub Actions' (a plain ``{{ }}`` is not valid YAML at the start of a value),
evaluated by this module's own small recursive-descent evaluator, never ``eval``: a pipeline
file is input we do not trust, and LLM output flows through these values.

Grammar inside ``${{ }}``, loosest binding first (``not`` binds tighter than ``==``, as
GitHub's ``!`` does)::

    or_expr  := and_expr ("or" and_expr)*
    and_expr := compare ("and" compare)*
    compare  := not_expr (("==" | "!=") not_expr)?      # no chaining: a == b == c is an error
    not_expr := "not" not_expr | primary
    primary  := literal | path | "(" or_expr ")"
    path     := NAME ("." NAME | "[" (INT | STRING) "]")*

Parsing keeps absolute character offsets into the template so the pipeline loader can turn
every reference and every error into file:line:column before any token is spent. Evaluation
follows GitHub: a missing key, attribute or index deeper than the first name is ``null``
(``None``), because a compensation reading the output of a step that failed must be able to
cope with it; only an unknown first name is an error.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentsaga.errors import ExpressionError

__all__ = [
    "BoolOp", "Compare", "Constant", "Expr", "Not", "Path", "Reference", "Template",
    "evaluate", "expression_references", "has_expressions", "parse_expression",
    "parse_template", "render", "render_value", "shell_quote", "to_text",
]  # fmt: skip

OPEN, CLOSE = "${{", "}}"
#: Parentheses and ``not`` recurse; capping them keeps hostile input far from Python's
#: recursion limit, so it fails with an ExpressionError instead of a RecursionError.
MAX_NESTING = 64

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# [0-9], not \d: \d also matches other scripts' digits, which int() would then accept.
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "'": "'", '"': '"'}
_KEYWORDS = {"true": True, "false": False, "null": None}
_SPACE = " \t\r\n"
_HINTS = {"&&": "and", "||": "or", "!": "not"}


@dataclass(frozen=True)
class Constant:
    value: str | int | float | bool | None
    offset: int


@dataclass(frozen=True)
class Path:
    segments: tuple[str | int, ...]
    offset: int
    # Kept so evaluate() can point at the name in its error; not part of the node's identity.
    source: str = field(default="", repr=False, compare=False)


@dataclass(frozen=True)
class Not:
    operand: Expr
    offset: int


@dataclass(frozen=True)
class Compare:
    op: str  # "==" or "!="
    left: Expr
    right: Expr
    offset: int


@dataclass(frozen=True)
class BoolOp:
    # n-ary rather than nested pairs, so "a or b or ... " a thousand times stays flat.
    op: str  # "and" or "or"
    operands: tuple[Expr, ...]
    offset: int


Expr = Constant | Path | Not | Compare | BoolOp


@dataclass(frozen=True)
class Reference:
    path: tuple[str | int, ...]
    offset: int  # of the path's first character within the template source


@dataclass(frozen=True)
class Template:
    source: str
    parts: tuple[str | Expr, ...]

    def references(self) -> list[Reference]:
        refs: list[Reference] = []
        for part in self.parts:
            if not isinstance(part, str):
                refs.extend(expression_references(part))
        return refs

    @property
    def is_single_expression(self) -> bool:
        exprs = [p for p in self.parts if not isinstance(p, str)]
        texts = [p for p in self.parts if isinstance(p, str)]
        return len(exprs) == 1 and all(not t.strip() for t in texts)


@dataclass(frozen=True)
class _Token:
    kind: str  # "name", "number", "string", "op", "end"
    text: str
    value: Any
    offset: int


def _tokenize(source: str, pos: int, open_at: int | None) -> tuple[list[_Token], int]:
    """Tokens from ``pos`` up to ``}}`` (inside a template) or the end of ``source``.

    ``open_at`` is the offset of the ``${{`` being read, or None for a bare expression. The
    closing ``}}`` is found by the tokenizer, not by ``str.find``, so a string such as
    ``'}}'`` inside the expression does not end it. Returns the tokens and the offset just
    past the expression.
    """
    tokens: list[_Token] = []
    n = len(source)
    while True:
        while pos < n and source[pos] in _SPACE:
            pos += 1
        if pos >= n:
            if open_at is not None:
                raise ExpressionError(source, open_at, "unclosed '${{': add '}}' after it")
            tokens.append(_Token("end", "end of expression", None, pos))
            return tokens, pos
        ch = source[pos]
        if open_at is not None and source.startswith(CLOSE, pos):
            tokens.append(_Token("end", CLOSE, None, pos))
            return tokens, pos + len(CLOSE)
        if ch in "'\"":
            text, end = _read_string(source, pos)
            tokens.append(_Token("string", source[pos:end], text, pos))
            pos = end
            continue
        if m := _NUMBER.match(source, pos):
            try:
                num: int | float = float(m[0]) if m[1] or m[2] else int(m[0])
            except ValueError:  # Python refuses int() of more than 4300 digits
                raise ExpressionError(source, pos, "number too long") from None
            tokens.append(_Token("number", m[0], num, pos))
            pos = m.end()
            continue
        if m := _NAME.match(source, pos):
            tokens.append(_Token("name", m[0], m[0], pos))
            pos = m.end()
            continue
        two = source[pos : pos + 2]
        if two in ("==", "!="):
            tokens.append(_Token("op", two, two, pos))
            pos += 2
            continue
        if ch in ".[]()":
            tokens.append(_Token("op", ch, ch, pos))
            pos += 1
            continue
        if source.startswith(OPEN, pos):
            raise ExpressionError(source, pos, "'${{' inside an expression: '${{ }}' do not nest")
        for bad, good in _HINTS.items():
            if source.startswith(bad, pos):
                raise ExpressionError(source, pos, f"unexpected '{bad}': write '{good}'")
        raise ExpressionError(source, pos, f"unexpected character {ch!r}")


def _read_string(source: str, start: int) -> tuple[str, int]:
    quote, pos = source[start], start + 1
    out: list[str] = []
    while pos < len(source):
        ch = source[pos]
        if ch == quote:
            return "".join(out), pos + 1
        if ch == "\\":
            esc = source[pos + 1 : pos + 2]
            if not esc:
                break  # a backslash as the last character: the string is unterminated
            if esc not in _ESCAPES:
                raise ExpressionError(
                    source, pos, f"unknown escape '\\{esc}' in string: write '\\\\' for a backslash"
                )
            out.append(_ESCAPES[esc])
            pos += 2
            continue
        out.append(ch)
        pos += 1
    raise ExpressionError(source, start, f"unterminated string: add the closing {quote}")


class _Parser:
    def __init__(self, source: str, tokens: list[_Token]) -> None:
        self.source, self.tokens, self.i, self.depth = source, tokens, 0, 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        if tok.kind != "end":  # the end token stays put, so peek() is always valid
            self.i += 1
        return tok

    def error(self, tok: _Token, problem: str) -> ExpressionError:
        return ExpressionError(self.source, tok.offset, problem)

    def is_word(self, word: str) -> bool:
        tok = self.peek()
        return tok.kind == "name" and tok.text == word

    def parse(self) -> Expr:
        expr = self.or_expr()
        if self.peek().kind != "end":
            raise self.error(self.peek(), f"unexpected token {self.peek().text!r}")
        return expr

    def enter(self, tok: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(tok, f"expression nested more than {MAX_NESTING} levels deep")

    def bool_op(self, word: str, operand: Callable[[], Expr]) -> Expr:
        start = self.peek().offset
        operands = [operand()]
        while self.is_word(word):
            self.take()
            operands.append(operand())
        return operands[0] if len(operands) == 1 else BoolOp(word, tuple(operands), start)

    def or_expr(self) -> Expr:
        return self.bool_op("or", self.and_expr)

    def and_expr(self) -> Expr:
        return self.bool_op("and", self.compare)

    def compare(self) -> Expr:
        left = self.not_expr()
        tok = self.peek()
        if tok.kind != "op" or tok.text not in ("==", "!="):
            return left
        self.take()
        expr = Compare(tok.text, left, self.not_expr(), tok.offset)
        nxt = self.peek()
        if nxt.kind == "op" and nxt.text in ("==", "!="):
            raise self.error(nxt, "comparisons do not chain: add parentheses")
        return expr

    def not_expr(self) -> Expr:
        if not self.is_word("not"):
            return self.primary()
        tok = self.take()
        self.enter(tok)
        operand = self.not_expr()
        self.depth -= 1
        return Not(operand, tok.offset)

    def primary(self) -> Expr:
        tok = self.take()
        if tok.kind in ("number", "string"):
            return Constant(tok.value, tok.offset)
        if tok.kind == "op" and tok.text == "(":
            self.enter(tok)
            expr = self.or_expr()
            self.depth -= 1
            if self.peek().kind != "op" or self.peek().text != ")":
                raise self.error(
                    self.peek(), f"expected ')' to close the '(' at character {tok.offset + 1}"
                )
            self.take()
            return expr
        if tok.kind == "name" and tok.text in _KEYWORDS:
            return Constant(_KEYWORDS[tok.text], tok.offset)
        if tok.kind == "name" and tok.text not in ("and", "or", "not"):
            return self.path(tok)
        if tok.kind == "end":
            raise self.error(tok, f"expected a value, found {tok.text!r}")
        raise self.error(tok, f"unexpected token {tok.text!r}")

    def path(self, first: _Token) -> Path:
        segments: list[str | int] = [first.text]
        while self.peek().kind == "op" and self.peek().text in (".", "["):
            if self.take().text == ".":
                # Any name after a dot, keywords too: `vars.null` is a variable called null.
                if self.peek().kind != "name":
                    raise self.error(self.peek(), "expected a name after '.'")
                segments.append(self.take().text)
                continue
            key = self.take()
            if key.kind not in ("number", "string") or isinstance(key.value, float):
                raise self.error(key, "expected an integer or a quoted string inside '[ ]'")
            segments.append(key.value)
            if self.peek().kind != "op" or self.peek().text != "]":
                raise self.error(self.peek(), "expected ']'")
            self.take()
        return Path(tuple(segments), first.offset, self.source)


def _parse_tokens(source: str, tokens: list[_Token], empty_at: int) -> Expr:
    if tokens[0].kind == "end":
        raise ExpressionError(source, empty_at, "empty expression")
    return _Parser(source, tokens).parse()


def has_expressions(source: str) -> bool:
    return OPEN in source


def parse_template(source: str) -> Template:
    parts: list[str | Expr] = []
    pos = 0
    while (start := source.find(OPEN, pos)) != -1:
        if start > pos:
            parts.append(source[pos:start])
        tokens, pos = _tokenize(source, start + len(OPEN), start)
        parts.append(_parse_tokens(source, tokens, start))
    if pos < len(source):
        parts.append(source[pos:])
    return Template(source, tuple(parts))


def parse_expression(source: str) -> Expr:
    """A bare expression, as ``if:`` takes; one enclosing ``${{ }}`` is accepted too."""
    if source.lstrip(_SPACE).startswith(OPEN):
        template = parse_template(source)
        if not template.is_single_expression:
            # GitHub treats `${{ a }} == b` as a non-empty string, so always true; refuse it.
            raise ExpressionError(
                source, 0, "text outside '${{ }}': put the whole condition inside one '${{ }}'"
            )
        return next(p for p in template.parts if not isinstance(p, str))
    tokens, _ = _tokenize(source, 0, None)
    return _parse_tokens(source, tokens, 0)


def expression_references(expr: Expr) -> list[Reference]:
    if isinstance(expr, Path):
        return [Reference(expr.segments, expr.offset)]
    if isinstance(expr, Not):
        return expression_references(expr.operand)
    if isinstance(expr, Compare):
        return expression_references(expr.left) + expression_references(expr.right)
    if isinstance(expr, BoolOp):
        return [ref for op in expr.operands for ref in expression_references(op)]
    return []


def _lookup(expr: Path, namespace: Mapping[str, Any]) -> Any:
    first = str(expr.segments[0])  # the parser only starts a path with a name
    if first not in namespace:
        known = ", ".join(str(k) for k in namespace) or "nothing (no names are defined here)"
        raise ExpressionError(
            expr.source, expr.offset, f"unknown name {first!r}: expected one of {known}"
        )
    value = namespace[first]
    for seg in expr.segments[1:]:
        if isinstance(value, Mapping):
            value = value.get(seg)
        elif isinstance(value, list | tuple) and isinstance(seg, int):
            # Negative indexes are out of range, as on GitHub, not Python's count from the end.
            value = value[seg] if 0 <= seg < len(value) else None
        else:
            return None
    return value


def _equal(left: Any, right: Any) -> bool:
    # true == 1 is True in Python; in a pipeline condition it is almost surely a mistake.
    if isinstance(left, bool) != isinstance(right, bool):
        return False
    return bool(left == right)


def evaluate(expr: Expr, namespace: Mapping[str, Any]) -> Any:
    if isinstance(expr, Constant):
        return expr.value
    if isinstance(expr, Path):
        return _lookup(expr, namespace)
    if isinstance(expr, Not):
        return not evaluate(expr.operand, namespace)
    if isinstance(expr, Compare):
        same = _equal(evaluate(expr.left, namespace), evaluate(expr.right, namespace))
        return same if expr.op == "==" else not same
    # and/or short-circuit like Python's but yield true/false, never one of their operands.
    stop_on = expr.op == "or"
    for operand in expr.operands:
        if bool(evaluate(operand, namespace)) == stop_on:
            return stop_on
    return not stop_on


def to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Mapping | list | tuple):
        # default=str: a stray non-JSON value (a date, a Path) is shown, not a crash.
        data = dict(value) if isinstance(value, Mapping) else value
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
    return str(value)


def shell_quote(value: Any) -> str:
    # shlex.quote("") is "''", so an empty value stays one (empty) argument.
    return shlex.quote(to_text(value))


def render(
    template: Template,
    namespace: Mapping[str, Any],
    *,
    quote: Callable[[Any], str] | None = None,
) -> str:
    out: list[str] = []
    for part in template.parts:
        if isinstance(part, str):
            out.append(part)
            continue
        text = to_text(evaluate(part, namespace))
        out.append(quote(text) if quote is not None else text)
    return "".join(out)


def render_value(template: Template, namespace: Mapping[str, Any]) -> Any:
    """The raw value of a lone ``${{ }}`` (so a dict stays a dict), else the rendered text."""
    if template.is_single_expression:
        expr = next(p for p in template.parts if not isinstance(p, str))
        return evaluate(expr, namespace)
    return render(template, namespace)
